"""The C++ LSTM / GRU scans (minigrad._C, cpp/rnn.cpp) against the NumPy reference.

The four primitives (lstm_scan_forward / _backward, gru_scan_forward / _backward) are compared with
numpy_ref in float32 and float64, for every version of the step kernels this CPU runs (AVX-512, AVX2,
portable), both directions, with and without the input-side bias, on odd sizes (T, B, H = 1, and H
around the vector widths), non-contiguous inputs and saturating gate values. Then the accuracy of the
kernels' vector sigmoid and tanh in ulps, gradient checks of nn.LSTM / nn.GRU through the autograd with
the C++ backend forced, float32 parity with torch at the benchmark's sizes, argument errors, and the
thread-count test.

Tolerance: the C++ GEMM sums its dot products in another order than NumPy's BLAS, so results differ by
rounding, which the recurrence carries from step to step; elements are compared with rtol and an atol
relative to the largest magnitude of the reference array.
"""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend, nn
from minigrad.backend import numpy_ref
from minigrad.testing import gradcheck

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import assert_cpp_is_default, simd_kernel as kernel  # noqa: E402,F401  (a fixture)

TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
SCANS = ["lstm", "gru"]
GATES = {"lstm": 4, "gru": 3}


def scan_args(kind, T, B, H, dtype, seed, bias=True, scale=1.0):
    """Random forward arguments of `<kind>_scan_forward` (without `reverse`): gate pre-activations of
    magnitude ~scale, recurrent weights U(-1/sqrt(H), 1/sqrt(H)) as nn.LSTM / nn.GRU initialize them."""
    rng = np.random.default_rng(seed)
    G = GATES[kind] * H
    normal = lambda *shape: (rng.standard_normal(shape) * scale).astype(dtype)  # noqa: E731
    w_hh = (rng.uniform(-1, 1, (G, H)) / np.sqrt(H)).astype(dtype)
    gx, b, h0 = normal(T, B, G), normal(G) if bias else None, normal(B, H)
    if kind == "lstm":
        return [gx, b, h0, normal(B, H), w_hh]
    return [gx, b, h0, w_hh, normal(G)]


def backward_args(kind, args, out, cache, seed):
    """The arguments of `<kind>_scan_backward` after a forward with `args` gave (out, cache)."""
    grad = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(out.dtype)
    if kind == "lstm":
        gx, b, h0, c0, w_hh = args
        return [grad, cache, out, h0, c0, w_hh]
    gx, b, h0, w_hh, b_hh = args
    return [grad, cache, out, h0, w_hh]


def assert_all_close(got, ref, dtype, what):
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape and g.dtype == r.dtype, (what, i, g.shape, g.dtype, r.shape, r.dtype)
        assert np.all(np.isfinite(g)), f"{what}[{i}]: not finite"
        tol = TOL[dtype]
        np.testing.assert_allclose(g, r, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, np.abs(r).max()),
                                   err_msg=f"{what}, result {i}")


def run_both(kind, args, reverse, seed=0):
    """Forward and backward in C++ (the cpp wrappers) and in numpy_ref; returns (cpp, ref) pairs of
    the forward results and of the backward results, each backend on its own forward's cache."""
    results = []
    for module in (cpp, numpy_ref):
        out, cache = getattr(module, f"{kind}_scan_forward")(*args, reverse)
        bargs = backward_args(kind, args, out, cache, seed)
        results.append(((out, cache), getattr(module, f"{kind}_scan_backward")(*bargs, reverse)))
    return results


# ---- values ------------------------------------------------------------------------------------------

# (T, B, H): single step, single row, single unit, H below / at / above the vector widths (4, 8, 16 lanes);
# inner dims of the step GEMMs (H forward, G*H backward) above the GEMM's K block of 256 (H = 130, 260)
SHAPES = [(1, 1, 1), (1, 3, 7), (13, 1, 7), (13, 4, 1), (5, 2, 16), (4, 3, 33), (3, 32, 64), (2, 3, 130),
          (2, 2, 260)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", SCANS)
def test_matches_reference(kernel, kind, shape, bias, reverse, dtype):
    args = scan_args(kind, *shape, dtype, seed=sum(shape), bias=bias)
    (fwd, bwd), (ref_fwd, ref_bwd) = run_both(kind, args, reverse)
    assert_all_close(fwd, ref_fwd, dtype, f"{kind} forward")
    assert_all_close(bwd, ref_bwd, dtype, f"{kind} backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", SCANS)
def test_backward_takes_the_reference_cache(kind, dtype):
    """One cache layout for every backend (base.PRIMITIVES): C++ backward on numpy_ref's forward."""
    args = scan_args(kind, 6, 3, 5, dtype, seed=3)
    out, cache = getattr(numpy_ref, f"{kind}_scan_forward")(*args, True)
    bargs = backward_args(kind, args, out, cache, seed=3)
    assert_all_close(getattr(cpp, f"{kind}_scan_backward")(*bargs, True),
                     getattr(numpy_ref, f"{kind}_scan_backward")(*bargs, True), dtype, f"{kind} backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", SCANS)
def test_non_contiguous_inputs(kernel, kind, dtype):
    """A transposed w_hh (read in place with its strides), gates_x sliced out of a wider array, a
    column-major h0, a strided bias and upstream gradient (copied by the wrapper)."""
    T, B, H = 5, 3, 7
    args = scan_args(kind, T, B, H, dtype, seed=4)
    wide = np.zeros((T, B, 2 * args[0].shape[2]), dtype)
    wide[:, :, ::2] = args[0]
    views = list(args)
    views[0] = wide[:, :, ::2]
    views[1] = np.repeat(args[1], 2)[::2]
    views[2] = np.asfortranarray(args[2])
    w_index = 4 if kind == "lstm" else 3
    views[w_index] = np.ascontiguousarray(args[w_index].T).T
    assert not views[0].flags.c_contiguous and not views[w_index].flags.c_contiguous
    (fwd, bwd), _ = run_both(kind, views, reverse=False)
    (ref_fwd, ref_bwd), _ = run_both(kind, args, reverse=False)
    assert_all_close(fwd, ref_fwd, dtype, f"{kind} forward")
    out, cache = fwd
    bargs = backward_args(kind, views, out, cache, seed=0)
    bargs[0] = np.asfortranarray(bargs[0])
    assert_all_close(getattr(cpp, f"{kind}_scan_backward")(*bargs, False), ref_bwd, dtype, f"{kind} backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", SCANS)
def test_saturating_gates(kernel, kind, dtype):
    """Pre-activations up to +-1e4 (sigmoid and tanh at 0 or +-1, exp(-x) far past overflow): finite
    results that match the reference."""
    args = scan_args(kind, 7, 4, 9, dtype, seed=5, scale=3e3)
    (fwd, bwd), (ref_fwd, ref_bwd) = run_both(kind, args, reverse=False)
    assert_all_close(fwd, ref_fwd, dtype, f"{kind} forward")
    assert_all_close(bwd, ref_bwd, dtype, f"{kind} backward")


@pytest.mark.parametrize("kind", SCANS)
def test_other_dtypes_fall_back_to_numpy(kind):
    args = [None if a is None else a.astype(np.float16) for a in scan_args(kind, 3, 2, 4, np.float32, seed=6)]
    (fwd, bwd), (ref_fwd, ref_bwd) = run_both(kind, args, reverse=False)
    for got, ref in zip(fwd + bwd, ref_fwd + ref_bwd):
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, ref)


# ---- the activations ---------------------------------------------------------------------------------

# Largest error in ulps of float32 against float64 NumPy on the grid below, measured: sigmoid 2.29 (all
# three versions), tanh 1.50 (1.53 portable, where each step of the exp polynomial rounds twice).
MAX_ULP = {"sigmoid": 2.5, "tanh": 2.0}


def ulps(got, exact, dtype):
    """|got - exact| in units of the last place of exact rounded to dtype (exact in float64)."""
    rounded = exact.astype(dtype)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(rounded)).astype(np.float64)


def activation_grid():
    """A dense grid over [-20, 20], tiny values down to the subnormals, and both signs."""
    rng = np.random.default_rng(7)
    pos = np.concatenate([np.linspace(0, 20, 2_000_001), np.geomspace(1e-44, 1, 200_001),
                          rng.uniform(0, 1, 1_000_000), np.geomspace(1, 1e4, 10_001)])
    return np.concatenate([pos, -pos]).astype(np.float32)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activation_error_in_ulp(kernel, name):
    x = activation_grid()
    got = np.empty_like(x)
    getattr(_C, f"rnn_{name}")(got, x)
    x64 = x.astype(np.float64)
    exact = np.tanh(x64) if name == "tanh" else np.exp(-np.logaddexp(0, -x64))
    err = ulps(got, exact, np.float32)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[name], f"{name}({x[worst]!r}) = {got[worst]!r} is off by {err[worst]:.2f} ulp"
    if name == "tanh":  # odd, and exact where tanh(x) rounds to x
        np.testing.assert_array_equal(got[x.size // 2:], -got[:x.size // 2])
        tiny = np.abs(x) < 1e-4
        np.testing.assert_array_equal(got[tiny], x[tiny])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activation_special_values(kernel, name, dtype):
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1e30, -1e30, 88.0, -88.0, 105.0, -105.0], dtype)
    got = np.empty_like(x)
    getattr(_C, f"rnn_{name}")(got, x)
    ref = np.tanh(x) if name == "tanh" else numpy_ref.sigmoid(x)
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], ref[1:], rtol=4 * np.finfo(dtype).eps, atol=0)
    if name == "tanh":
        assert np.signbit(got[4]) and got[3] == 0


def test_float64_activations_are_accurate():
    """float64 takes vexp (sigmoid) and the C library's tanh: within 2 ulp of NumPy."""
    x = np.concatenate([np.linspace(-40, 40, 200_001), np.geomspace(1e-300, 1, 10_001)])
    for name, ref in (("sigmoid", numpy_ref.sigmoid(x)), ("tanh", np.tanh(x))):
        got = np.empty_like(x)
        getattr(_C, f"rnn_{name}")(got, x)
        np.testing.assert_allclose(got, ref, rtol=2 * np.finfo(np.float64).eps, atol=0, err_msg=name)


# ---- through the autograd ----------------------------------------------------------------------------

PRIMS = ["lstm_scan_forward", "lstm_scan_backward", "gru_scan_forward", "gru_scan_backward"]


def test_cpp_is_the_default_cpu_scan(monkeypatch):
    """So nn.LSTM / nn.GRU (and their torch-parity tests in tests/test_nn_rnn.py) run these kernels."""
    assert_cpp_is_default(monkeypatch, PRIMS)


@pytest.mark.parametrize("options", [dict(), dict(bias=False), dict(bidirectional=True, num_layers=2)],
                         ids=["default", "no_bias", "bidirectional_2_layers"])
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gradcheck_layers_with_cpp_backend(name, options):
    """The gradients of the input and the initial states through whole layers (the parameters: below)."""
    rng = np.random.default_rng(8)
    layer = getattr(nn, name)(3, 4, dtype=mg.float64, **options)
    states = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    leaf = lambda *shape: mg.tensor(rng.standard_normal(shape) * 0.5, requires_grad=True)  # noqa: E731
    x, h0, c0 = leaf(5, 2, 3), leaf(states, 2, 4), leaf(states, 2, 4)
    with backend.use("cpp"):
        assert {backend.selected(p) for p in PRIMS} == {"cpp"}
        assert gradcheck(lambda x, h0, c0: layer(x, (h0, c0) if name == "LSTM" else h0), x, h0, c0)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gradcheck_parameters_with_cpp_backend(name):
    """The weight and bias gradients (dW_hh, the folded biases) through the functional scans of
    nn.layers.rnn, each parameter a float64 leaf."""
    from minigrad.nn.layers import rnn as layers
    rng = np.random.default_rng(9)
    H, G = 3, 4 if name == "LSTM" else 3
    leaf = lambda *shape: mg.tensor(rng.standard_normal(shape) * 0.5, requires_grad=True)  # noqa: E731
    x, h0, c0 = leaf(4, 2, 2), leaf(2, H), leaf(2, H)
    w_ih, w_hh, b_ih, b_hh = leaf(G * H, 2), leaf(G * H, H), leaf(G * H), leaf(G * H)
    scan = layers._lstm_scan if name == "LSTM" else layers._gru_scan
    state = (h0, c0) if name == "LSTM" else (h0,)
    with backend.use("cpp"):
        for reverse in (False, True):
            assert gradcheck(lambda *w: scan(x, state, *w, reverse)[0], w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_float32_matches_torch_at_benchmark_sizes(name):
    """bench lstm_step's sizes (T=64, B=32, 64 -> 128): outputs, final states and every gradient."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    theirs = getattr(torch.nn, name)(64, 128)
    ours = getattr(nn, name)(64, 128)
    ours.load_state_dict(theirs.state_dict())
    x = rng.standard_normal((64, 32, 64)).astype(np.float32)
    X, Xt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, outt = ours(X)[0], theirs(Xt)[0]
    (out * out).mean().backward()
    (outt * outt).mean().backward()
    np.testing.assert_allclose(out.detach().numpy(), outt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(X.grad.numpy(), Xt.grad.numpy(), rtol=1e-3, atol=1e-6)
    for (key, p), pt in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-3, atol=1e-6, err_msg=key)


# ---- errors and threads --------------------------------------------------------------------------------

def test_kernels_check_their_arguments():
    gx, b, h0, c0, w = scan_args("lstm", 3, 2, 4, np.float32, seed=11)
    with pytest.raises(ValueError, match=r"gates_x \(T, B, 4H\).*\(3, 2, 16\) and \(2, 5\)"):
        _C.lstm_scan_forward(gx, b, np.zeros((2, 5), np.float32), c0, w, False)
    with pytest.raises(ValueError, match=r"c0 of shape \(2, 4\), got \(4, 2\)"):
        _C.lstm_scan_forward(gx, b, h0, np.zeros((4, 2), np.float32), w, False)
    with pytest.raises(ValueError, match=r"w_hh of shape \(16, 4\), got \(4, 16\)"):
        _C.lstm_scan_forward(gx, b, h0, c0, w.T, False)
    with pytest.raises(ValueError, match=r"bias of shape \(16,\), got \(12,\)"):
        _C.lstm_scan_forward(gx, b[:12], h0, c0, w, False)
    with pytest.raises(TypeError, match="h0 is float64 but gates_x is float32"):
        _C.lstm_scan_forward(gx, b, h0.astype(np.float64), c0, w, False)
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        _C.gru_scan_forward(gx.astype(np.int64), None, h0, w, b, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.lstm_scan_forward(gx[:, :, ::-1], b, h0, c0, w, False)
    with pytest.raises(ValueError, match=r"T >= 1"):
        _C.lstm_scan_forward(gx[:0], b, h0, c0, w, False)
    out, cache = _C.lstm_scan_forward(gx, b, h0, c0, w, False)
    with pytest.raises(ValueError, match=r"grad of shape \(4, 2, 4\), got \(3, 2, 4\)"):
        _C.lstm_scan_backward(out[:3], cache, out, h0, c0, w, False)
    with pytest.raises(ValueError, match=r"cache \(T, B, 4H\)"):
        _C.gru_scan_backward(out, cache[..., :5], out, h0, w, False)
    with pytest.raises(TypeError, match="cache is float64 but grad is float32"):
        _C.lstm_scan_backward(out, cache.astype(np.float64), out, h0, c0, w, False)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_empty_batch_gives_zero_gradients(name):
    """B = 0: zero bias and weight gradients (no rows to sum), as numpy_ref; no read past the empty arrays."""
    grads = {}
    for which in ("cpp", "numpy"):
        mg.manual_seed(0)
        layer = getattr(nn, name)(4, 8)
        x = mg.tensor(np.zeros((3, 0, 4), np.float32), requires_grad=True)
        with backend.use(which):
            layer(x)[0].sum().backward()
        grads[which] = {n: p.grad.numpy() for n, p in layer.named_parameters()}
    for n, ref in grads["numpy"].items():
        np.testing.assert_array_equal(grads["cpp"][n], ref, err_msg=n)
        assert not np.any(ref), n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", SCANS)
def test_same_result_with_one_and_two_threads(restore_threads, kind, dtype):
    """Bitwise equal: gemm() sums each element of its product in one order however the threads split the
    columns, and the cell math runs on one thread (B = 32, H = 64: above the size where the GEMMs of a
    step start threads)."""
    args = scan_args(kind, 6, 32, 64, dtype, seed=12)
    results = []
    for n in (1, 2):
        mg.set_num_threads(n)
        out, cache = getattr(cpp, f"{kind}_scan_forward")(*args, False)
        bargs = backward_args(kind, args, out, cache, seed=12)
        results.append([out, cache, *getattr(cpp, f"{kind}_scan_backward")(*bargs, False)])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kind", SCANS)
def test_numba_scan_is_the_reference_loop_around_its_cells(kind):
    """Without the extension the scans run on numba_rnn: numpy_ref's step loop around the Numba cells."""
    numba_rnn = pytest.importorskip("minigrad.backend.numba_rnn")
    for dtype in (np.float32, np.float64):
        args = scan_args(kind, 5, 3, 7, dtype, seed=13)
        results = []
        for module in (numba_rnn, numpy_ref):
            out, cache = getattr(module, f"{kind}_scan_forward")(*args, True)
            bargs = backward_args(kind, args, out, cache, seed=13)
            results.append((out, cache, *getattr(module, f"{kind}_scan_backward")(*bargs, True)))
        assert_all_close(*results, dtype, f"numba {kind}")


@pytest.mark.parametrize("kind", SCANS)
def test_pooled_outputs_stay_independent(kind):
    """The large outputs reuse freed blocks (cpp/rnn.cpp's buffer pool): results kept alive are never
    handed out again, and a reused block is fully overwritten."""
    first = scan_args(kind, 4, 3, 5, np.float32, seed=14)
    second = scan_args(kind, 4, 3, 5, np.float32, seed=15)
    kept = getattr(cpp, f"{kind}_scan_forward")(*first, False)
    expected = [a.copy() for a in kept]
    for _ in range(3):  # allocate and free blocks of the same sizes while `kept` is alive
        out, cache = getattr(cpp, f"{kind}_scan_forward")(*second, False)
        assert not np.shares_memory(out, kept[0]) and not np.shares_memory(cache, kept[1])
        del out, cache
    for got, want in zip(kept, expected):
        np.testing.assert_array_equal(got, want)
    del kept
    again = getattr(cpp, f"{kind}_scan_forward")(*first, False)  # on the blocks just freed
    for got, want in zip(again, expected):
        np.testing.assert_array_equal(got, want)
