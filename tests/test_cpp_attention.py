"""The C++ attention (minigrad._C, cpp/attention.cpp) against the NumPy reference.

One table of cases drives the value tests, each run in float32 and float64 and with every version of the
kernels this CPU runs (AVX-512, AVX2, portable): forward (out, lse) and backward (dq, dk, dv) against
numpy_ref.attention_forward / attention_backward, on sequence lengths around the tile sizes (1, 7, 63, 65,
130, 257), Tq != Tk both ways, odd head dims (1, 3, 33), causal or not, biases of every broadcast shape
(with fully masked rows), large scores, and q, k, v as the non-contiguous views multi-head attention
passes. Then: fully masked rows exactly 0, errors, gradient checks through the autograd with the C++
backend forced, the thread-count test and the default selection. Parity with torch runs through these
kernels in tests/test_nn_attention.py (the default CPU backend).

Tolerance: atol + 8 * eps * sqrt(n) * scale, with the scales of tests/attention_support.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import backend
from minigrad.backend import numpy_ref
from minigrad.nn import functional as F
from minigrad.testing import gradcheck
from attention_support import attention_error_scales  # tests/ is on sys.path under pytest

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import assert_cpp_is_default, simd_kernel as kernel  # noqa: E402,F401  (a fixture)

DTYPES = [np.float32, np.float64]
ATOL = {np.float32: 1e-5, np.float64: 1e-10}
PRIMITIVES = ("attention_forward", "attention_backward")


# ---- inputs -------------------------------------------------------------------------------------------

def heads_view(x):
    """x (B, H, T, D) as multi-head attention's view of a (B, T, H, D) projection."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


def fused_qkv_views(q, k, v):
    """q, k, v (B, H, T, D), one T, as the views of one fused (B, T, 3, H, D) qkv projection."""
    qkv = np.ascontiguousarray(np.stack([q, k, v], axis=2).transpose(0, 3, 2, 1, 4))  # (B, T, 3, H, D)
    return tuple(qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def strided(x):
    """A view equal to x whose last dim has stride 2 (every other element of a twice-as-long dim)."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


def make_bias(kind, b, h, tq, tk, dtype, rng):
    """None, or an additive bias: "tq_tk" (Tq, Tk) with row 1 all -inf; "padding" (B, 1, 1, Tk), -inf on the
    last half of the keys and on all of the last batch element's; "full" (B, H, Tq, Tk); "rows" (Tq, 1),
    -inf on some query rows (stride 0 along the keys); "heads" (H, 1, Tk)."""
    if kind is None:
        return None
    if kind == "tq_tk":
        bias = rng.uniform(-2, 2, (tq, tk))
        bias[min(1, tq - 1)] = -np.inf
    elif kind == "padding":
        bias = np.zeros((b, 1, 1, tk))
        bias[..., (tk + 1) // 2:] = -np.inf
        bias[-1] = -np.inf
    elif kind == "full":
        bias = rng.uniform(-3, 3, (b, h, tq, tk))
    elif kind == "rows":
        bias = np.where(np.arange(tq)[:, None] % 3 == 1, -np.inf, 0.5)
    else:
        bias = rng.uniform(-1, 1, (h, 1, tk))
    return bias.astype(dtype)


# (B, H, Tq, Tk, D, Dv, is_causal, bias, largest |q|, layout)
CASES = [
    (1, 1, 1, 1, 1, 1, False, None, 1.0, "contiguous"),
    (1, 1, 1, 1, 4, 3, True, None, 1.0, "contiguous"),
    (2, 3, 7, 7, 3, 4, True, None, 1.0, "contiguous"),
    (2, 3, 7, 7, 5, 4, False, "tq_tk", 1.0, "contiguous"),
    (1, 2, 63, 63, 33, 33, True, None, 1.0, "contiguous"),
    (1, 2, 65, 65, 32, 32, False, None, 1.0, "heads"),
    (2, 2, 65, 65, 16, 16, True, None, 1.0, "fused_qkv"),
    (1, 2, 33, 65, 8, 3, True, None, 1.0, "contiguous"),  # Tq < Tk causal: query i sees keys 0..i
    (2, 1, 65, 33, 4, 6, True, None, 1.0, "contiguous"),  # Tq > Tk causal: the last queries see every key
    (1, 2, 7, 130, 3, 5, False, "padding", 1.0, "contiguous"),
    (2, 2, 130, 130, 33, 1, True, None, 1.0, "strided"),
    (2, 2, 130, 65, 16, 16, False, "full", 1.0, "strided"),
    (1, 3, 63, 130, 32, 32, False, "heads", 1.0, "heads"),
    (2, 1, 65, 65, 32, 32, False, "rows", 1.0, "contiguous"),
    (1, 1, 257, 257, 64, 64, True, None, 1.0, "contiguous"),  # several key blocks of both tile sizes
    (1, 1, 40, 300, 8, 8, False, "full", 30.0, "contiguous"),  # the running max grows, sums are rescaled
    (1, 2, 65, 65, 16, 16, True, "tq_tk", 100.0, "heads"),  # scores in the thousands: no overflow
]


def case_arrays(case, dtype):
    nb, nh, tq, tk, d, dv, causal, bias_kind, qmax, layout = case
    rng = np.random.default_rng(tq * 1000 + tk * 10 + d)
    q = rng.uniform(-qmax, qmax, (nb, nh, tq, d)).astype(dtype)
    k = rng.uniform(-1, 1, (nb, nh, tk, d)).astype(dtype)
    v = rng.uniform(-1, 1, (nb, nh, tk, dv)).astype(dtype)
    dout = rng.uniform(-1, 1, (nb, nh, tq, dv)).astype(dtype)
    if layout == "heads":
        q, k, v = heads_view(q), heads_view(k), heads_view(v)
    elif layout == "fused_qkv":
        q, k, v = fused_qkv_views(q, k, v)
    elif layout == "strided":
        q, k, v = strided(q), strided(k), strided(v)
    return q, k, v, make_bias(bias_kind, nb, nh, tq, tk, dtype, rng), causal, dout


def assert_close(what, got, ref, scale, n):
    """got == ref within atol + 8 eps sqrt(n) scale, same shape and dtype; infinities in the same places."""
    assert got.shape == ref.shape and got.dtype == ref.dtype, (what, got.shape, got.dtype, ref.shape, ref.dtype)
    dtype = ref.dtype.type
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=f"{what}: infinities differ")
    assert not np.any(np.isnan(got)), f"{what}: nan"
    finite = np.isfinite(ref)
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(n) * scale
    excess = np.where(finite, np.abs(got.astype(np.float64) - np.where(finite, ref, 0)) - tol, 0)
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert np.all(excess <= 0), (f"{what} {ref.shape}: element {worst} is {got[worst]!r}, reference "
                                 f"{ref[worst]!r}, tolerance {tol[worst]:.3g}")


def check_against_reference(q, k, v, bias, causal, dout, scale):
    out, lse = cpp.attention_forward(q, k, v, bias, causal, scale)
    dq, dk, dv = cpp.attention_backward(dout, q, k, v, out, lse, bias, causal, scale)
    with np.errstate(all="ignore"):  # the reference's inf - inf on fully masked rows
        ref_out, ref_lse = numpy_ref.attention_forward(q, k, v, bias, causal, scale)
        refs = numpy_ref.attention_backward(dout, q, k, v, ref_out, ref_lse, bias, causal, scale)
        scales = attention_error_scales(q, k, v, bias, causal, scale, dout, ref_out, ref_lse)
    n = max(q.shape[2], k.shape[2], q.shape[3], v.shape[3])
    for what, got, ref, s in zip(("out", "lse", "dq", "dk", "dv"), (out, lse, dq, dk, dv), (ref_out, ref_lse) + refs,
                                 scales):
        assert_close(what, got, ref, s, n)
    return out, lse, dq, dk, dv


# ---- values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_matches_reference(kernel, dtype, case):
    q, k, v, bias, causal, dout = case_arrays(case, dtype)
    out, lse, dq, dk, dv = check_against_reference(q, k, v, bias, causal, dout, 1 / math.sqrt(q.shape[-1]))
    if case[7] == "tq_tk":  # the fully masked row: out 0, lse -inf, no gradient
        assert np.all(out[:, :, 1] == 0) and np.all(lse[:, :, 1] == -np.inf) and np.all(dq[:, :, 1] == 0)
    assert all(np.all(np.isfinite(x)) for x in (out, dq, dk, dv))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["padding", "rows", "tq_tk"])
def test_fully_masked_rows_are_exactly_zero(dtype, kind):
    """A query row whose keys are all masked attends to nothing: output 0, lse -inf, gradients 0, and no
    nan reaches the other rows or the key gradients."""
    rng = np.random.default_rng(3)
    b, h, tq, tk, d = 2, 3, 19, 70, 5
    q, k, v, dout = (rng.standard_normal(s).astype(dtype) for s in ((b, h, tq, d), (b, h, tk, d), (b, h, tk, d),
                                                                      (b, h, tq, d)))
    bias = make_bias(kind, b, h, tq, tk, dtype, rng)
    out, lse = cpp.attention_forward(q, k, v, bias, False, 0.5)
    empty = np.all(np.broadcast_to(bias, (b, h, tq, tk)) == -np.inf, axis=-1)
    assert empty.any() and not empty.all()
    assert np.all(out[empty] == 0) and np.all(lse[empty] == -np.inf) and np.all(np.isfinite(out))
    dq, dk, dv = cpp.attention_backward(dout, q, k, v, out, lse, bias, False, 0.5)
    assert np.all(dq[empty] == 0) and all(np.all(np.isfinite(g)) for g in (dq, dk, dv))


def test_other_dtypes_use_the_reference():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 2, 5, 3)).astype(np.float16) for _ in range(3))
    out, lse = cpp.attention_forward(q, k, v, None, True, 0.5)
    ref_out, ref_lse = numpy_ref.attention_forward(q, k, v, None, True, 0.5)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(lse, ref_lse)


def test_bias_of_another_float_dtype_is_converted():
    """A float64 bias with float32 q, k, v is used as float32 (as numpy_ref's in-place add casts it)."""
    rng = np.random.default_rng(5)
    q, k, v, dout = (rng.standard_normal((2, 2, 9, 4)).astype(np.float32) for _ in range(4))
    bias = rng.standard_normal((9, 9))
    check_against_reference(q, k, v, bias, False, dout, 0.5)


def test_bad_inputs_raise():
    x = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"4-D.*\(2, 3, 4\)"):
        _C.attention_forward(x[0], x[0], x[0], None, False, 1.0)
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\), \(1, 2, 3, 5\)"):
        _C.attention_forward(x, np.zeros((1, 2, 3, 5), np.float32), x, None, False, 1.0)
    with pytest.raises(TypeError, match="one dtype.*float32 and float64"):
        _C.attention_forward(x, x.astype(np.float64), x, None, False, 1.0)
    with pytest.raises(TypeError, match="float32 or float64.*int32"):
        _C.attention_forward(*(x.astype(np.int32),) * 3, None, False, 1.0)
    with pytest.raises(ValueError, match=r"bias of shape \(4, 3\) does not match \(1, 2, 3, 3\)"):
        _C.attention_forward(x, x, x, np.zeros((4, 3), np.float32), False, 1.0)
    out, lse = _C.attention_forward(x, x, x, None, False, 1.0)
    with pytest.raises(ValueError, match=r"lse must have shape \(B, H, Tq\), got \(1, 2, 4\)"):
        _C.attention_backward(out, x, x, x, out, np.zeros((1, 2, 4), np.float32), None, False, 1.0)
    with pytest.raises(ValueError, match=r"dout and out must have shape .*\(1, 2, 3, 4\), got \(1, 2, 3, 5\)"):
        _C.attention_backward(np.zeros((1, 2, 3, 5), np.float32), x, x, x, out, lse, None, False, 1.0)


# ---- gradients through the autograd, with the C++ backend forced --------------------------------------

def _grad_cases():
    import test_gradcheck  # the table of gradient-check rows
    names = ["attention_fused", "attention_leading_dims", "multihead_attention_forward"]
    by_name = {c.name: c for c in test_gradcheck.CASES}
    return [by_name[name] for name in names]


@pytest.mark.parametrize("case", _grad_cases(), ids=lambda c: c.name)
@settings(max_examples=8)  # tests/test_gradcheck.py runs these cases too, on the default selection
@given(data=st.data())
def test_gradcheck_with_cpp_backend(case, data):
    args = data.draw(case.strategy(), label="args")
    with backend.use("cpp"):
        assert {backend.selected(p) for p in PRIMITIVES} == {"cpp"}
        assert gradcheck(case.fn, *args)


@pytest.mark.parametrize("is_causal, mask", [(True, None), (False, "float"), (False, "bool")])
def test_gradcheck_sdpa_past_one_tile(is_causal, mask):
    """float64 through F.scaled_dot_product_attention with more queries and keys than one tile, odd sizes."""
    rng = np.random.default_rng(6)
    q, k, v = (mg.tensor(rng.standard_normal(s), requires_grad=True) for s in ((1, 2, 37, 3), (1, 2, 70, 3),
                                                                                (1, 2, 70, 5)))
    attn_mask = None
    if mask == "float":
        attn_mask = mg.tensor(rng.standard_normal((37, 70)))
    elif mask == "bool":
        attn_mask = mg.tensor(rng.random((2, 1, 70)) < 0.7)
    with backend.use("cpp"):
        assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=attn_mask,
                                                                        is_causal=is_causal), q, k, v)


# ---- threads and selection ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("causal, bias_kind", [(True, None), (False, "full")])
def test_same_result_with_one_and_two_threads(restore_threads, dtype, causal, bias_kind):
    """Bitwise equal: each task ((batch, head, query block) forward, (batch, head) backward) is computed
    by one thread in a fixed order, whatever the number of threads (sizes above the threading threshold)."""
    q, k, v, bias, _, dout = case_arrays((3, 2, 130, 65, 16, 16, causal, bias_kind, 1.0, "heads"), dtype)
    results = []
    for n in (1, 2):
        mg.set_num_threads(n)
        out, lse = cpp.attention_forward(q, k, v, bias, causal, 0.25)
        results.append((out, lse) + cpp.attention_backward(dout, q, k, v, out, lse, bias, causal, 0.25))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_cpp_is_the_default_cpu_attention(monkeypatch):
    assert_cpp_is_default(monkeypatch, PRIMITIVES)


def test_equal_dtypes_that_are_other_objects_are_taken():
    """An unpickled array's dtype equals float32 without being NumPy's float32 object: still the kernels."""
    import pickle
    q = pickle.loads(pickle.dumps(np.random.default_rng(0).standard_normal((1, 2, 5, 8)).astype(np.float32)))
    assert q.dtype == np.float32
    out, lse = cpp.attention_forward(q, q, q, None, True, 0.5)
    ref_out, ref_lse = numpy_ref.attention_forward(q, q, q, None, True, 0.5)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-6)


def test_strides_that_are_not_whole_elements_use_the_reference():
    rec = np.zeros((1, 1, 4, 8), dtype=[("q", "<f4"), ("pad", "i1")])
    rec["q"] = np.random.default_rng(1).standard_normal((1, 1, 4, 8))
    q = rec["q"]
    assert q.strides[-1] % q.itemsize
    out, lse = cpp.attention_forward(q, q, q, None, False, 1.0)
    ref_out, ref_lse = numpy_ref.attention_forward(q, q, q, None, False, 1.0)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(lse, ref_lse)
