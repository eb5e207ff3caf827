"""The CUDA backend (minigrad/backend/cuda.py) against the NumPy reference, on a GPU and on the CPU emulator.

Every test here takes the `cuda_runtime` fixture, which runs it twice:
  * "gpu": on a real GPU through CuPy; skipped, with the reason, where there is none (CI never has one);
  * "emulated": the same backend code on tests/cuda_emu_support.EmulatedRuntime, whose device memory is NumPy
    arrays and whose kernels run in the CPU emulator of CUDA: the wrappers' launch shapes, argument types,
    strides and contiguity, the fallbacks to numpy_ref and the device API all run in CI. (The emulator
    checks every launch for races, out-of-bounds writes and undefined behaviour; see test_cuda_emulated.py.)

What is checked: each kernel primitive against numpy_ref on odd sizes, size-1 and broadcast dims,
non-contiguous inputs and large magnitudes, and that the kernel (not a fallback) ran; the whole gradient-check
table of test_gradcheck.py with every tensor on 'cuda' (float64 kernels); the device API (moves, gradients
across devices, modules, optimizers, seeds, errors naming both devices); a small transformer trained on both
devices giving the same losses.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import backend, nn
from minigrad.backend import cuda, numpy_ref
from minigrad.dtypes import HALF_NP_DTYPES
from minigrad.models import GPT, GPTConfig
from minigrad.testing import gradcheck
from attention_support import attention_error_scales  # tests/ is on sys.path under pytest
from test_gradcheck import CASES

ATOL = {np.float32: 1e-5, np.float64: 1e-12}  # the atol of DESIGN.md's tolerance (see assert_matches)


def device(rt, a):
    return rt.from_host(np.asarray(a))


def host(rt, x):
    return None if x is None else rt.to_host(x)


def check_launched(rt, *prefixes):
    """On the emulated runtime: the kernels named by `prefixes` ran (the primitive did not fall back)."""
    if hasattr(rt, "launched"):
        for prefix in prefixes:
            assert any(name.startswith(prefix) for name in rt.launched), \
                f"no {prefix}* kernel ran (launched: {rt.launched[-6:]})"
        rt.launched.clear()


def assert_matches(got, ref, dtype, n=1, scale=None):
    """got == ref within the DESIGN.md tolerance atol + 8 eps sqrt(n) scale, scale = |ref| by default;
    nan and inf exactly where the reference has them."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)])
    scale = np.abs(ref) if scale is None else scale
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(n) * np.broadcast_to(scale, ref.shape)
    diff = np.where(finite, np.abs(got.astype(np.float64) - ref), 0)
    assert np.all(diff <= tol), f"max excess {np.max(diff - tol):.3g} at {np.unravel_index(np.argmax(diff - tol), diff.shape)}"


def rand(shape, dtype, seed=0, scale=1.0):
    return (np.random.default_rng(seed).uniform(-scale, scale, shape)).astype(dtype)


DTYPES = [np.float32, np.float64]


# ---- kernels against the reference ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a_shape, b_shape, layout", [
    ((1, 1), (1, 1), "plain"), ((7, 5), (5, 33), "plain"), ((33, 65), (65, 17), "plain"),
    ((70, 18), (18, 66), "a_transposed"), ((70, 18), (18, 66), "b_transposed"), ((5,), (5, 3), "plain"),
    ((4, 5), (5,), "plain"), ((2, 3, 7, 5), (5, 9), "plain"), ((2, 1, 7, 5), (3, 5, 9), "plain"),
    ((3, 4, 0), (0, 2), "plain"), ((2, 5, 4), (2, 4, 6), "sliced"),
    ((130, 20), (20, 132), "plain"), ((2, 130, 20), (20, 132), "offset"), ((132, 20), (20, 130), "b_transposed"),
])
def test_matmul(cuda_runtime, dtype, a_shape, b_shape, layout):
    """gemm.cu through every layout the ops produce: transposed views read through strides, batch broadcast
    (a 2-D operand against a batch, size-1 batch dims), 1-D operands, K = 0, non-contiguous slices, a view
    one element into its allocation (misaligned for 128-bit loads); M, N >= 128 (the 128 x 128 kernel where
    there are enough tiles: on the emulated runtime's 2 SMs)."""
    rt = cuda_runtime
    a, b = rand(a_shape, dtype, 1, 3.0), rand(b_shape, dtype, 2, 3.0)
    if layout == "offset":
        a_dev = device(rt, np.concatenate([np.zeros(1, dtype), a.ravel()]))[1:].reshape(a_shape)
    elif layout == "a_transposed":
        a_dev = device(rt, np.ascontiguousarray(a.T)).T
    elif layout == "sliced":
        a = rand((2, 5, 8), dtype, 1)[:, :, ::2]
        a_dev = device(rt, rand((2, 5, 8), dtype, 1))[:, :, ::2]
    else:
        a_dev = device(rt, a)
    b_dev = device(rt, np.ascontiguousarray(b.T)).T if layout == "b_transposed" else device(rt, b)
    got = host(rt, cuda.matmul(a_dev, b_dev))
    scale = numpy_ref.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    assert_matches(got, numpy_ref.matmul(a, b), dtype, n=a_shape[-1], scale=scale)
    if 0 not in a_shape:
        m, n = (a_shape[-2] if len(a_shape) > 1 else 1), (b_shape[-1] if len(b_shape) > 1 else 1)
        check_launched(rt, "gemm128_" if min(m, n) >= 128 else "gemm_")


HALF_DTYPES = [np.dtype(np.float16)] + (
    [d for d in HALF_NP_DTYPES if d != np.float16] or  # bfloat16, from ml_dtypes (in the test extra)
    [pytest.param(None, marks=pytest.mark.skip(reason="needs the ml_dtypes package for bfloat16"))])


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: "bfloat16" if d is None else np.dtype(d).name)
@pytest.mark.parametrize("a_shape, b_shape, layout", [
    ((1, 1), (1, 1), "plain"), ((7, 5), (5, 33), "plain"), ((130, 40), (40, 70), "plain"),
    ((70, 24), (24, 66), "a_transposed"), ((33, 17), (17, 20), "b_transposed"), ((2, 3, 9, 16), (16, 8), "plain"),
])
def test_matmul_16_bit_on_tensor_cores(cuda_runtime, dtype, a_shape, b_shape, layout):
    """gemm_tc.cu: float16 / bfloat16 operands, float32 accumulation, one rounding (numpy_ref's contract):
    within one ulp of the 16-bit result plus the float32 accumulation bound."""
    rt = cuda_runtime
    a, b = rand(a_shape, np.float32, 1, 2.0).astype(dtype), rand(b_shape, np.float32, 2, 2.0).astype(dtype)
    a_dev = device(rt, np.ascontiguousarray(a.T)).T if layout == "a_transposed" else device(rt, a)
    b_dev = device(rt, np.ascontiguousarray(b.T)).T if layout == "b_transposed" else device(rt, b)
    got = host(rt, cuda.matmul(a_dev, b_dev))
    ref = numpy_ref.matmul(a, b)
    assert got.dtype == ref.dtype == dtype
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    bound = np.abs(ref.astype(np.float64) - exact) + np.spacing(np.abs(ref).astype(dtype)).astype(np.float64) + \
        8 * np.finfo(np.float32).eps * math.sqrt(a_shape[-1]) * np.matmul(np.abs(a).astype(np.float64),
                                                                          np.abs(b).astype(np.float64))
    assert np.all(np.abs(got.astype(np.float64) - exact) <= bound * 1.01)
    check_launched(rt, "gemm_tc_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 33, 1600, 4099])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_rows(cuda_runtime, op, n, dtype):
    """Warp-per-row (n <= 1024) and block-per-row kernels, forward and backward, values up to +-1e4."""
    rt = cuda_runtime
    x, dout = rand((3, n), dtype, n, 1e4), rand((3, n), dtype, n + 1)
    out = getattr(cuda, f"{op}_forward")(device(rt, x), 1)
    ref = getattr(numpy_ref, f"{op}_forward")(x, 1)
    assert_matches(host(rt, out), ref, dtype, n=n, scale=1.0 if op == "softmax" else np.abs(ref) + 1)
    assert np.all(np.isfinite(host(rt, out)))
    dx = getattr(cuda, f"{op}_backward")(device(rt, dout), out, 1)
    ref_dx = getattr(numpy_ref, f"{op}_backward")(dout, ref, 1)
    assert_matches(host(rt, dx), ref_dx, dtype, n=n, scale=np.abs(ref_dx) + 1)
    check_launched(rt, f"{op}_forward_", f"{op}_backward_")


REDUCTION_CASES = [((4, 33), 0), ((2, 3, 5), 1), ((2, 3, 5), -1), ((3, 4), None), ((1, 5000), 1), ((5000, 2), 0),
                   ((2, 1, 3), 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, shape, axis", [(op, shape, axis) for op in ("sum", "max", "min", "softmax_forward")
                                             for shape, axis in REDUCTION_CASES
                                             if axis is not None or op != "softmax_forward"])
def test_reductions_along_any_axis(cuda_runtime, op, shape, axis, dtype):
    """reduce.cu's lastdim and strided kernels, with the chunked two-pass form for long reductions; the
    softmax of a middle axis (moved last); keepdims both ways; a transposed (non-contiguous) input."""
    rt = cuda_runtime
    x = rand(shape, dtype, 3, 100.0)
    x_dev = device(rt, np.ascontiguousarray(x.T)).T  # the same values, transposed strides
    for keepdims in (False, True):
        if op == "softmax_forward":
            got, ref = cuda.softmax_forward(x_dev, axis), numpy_ref.softmax_forward(x, axis)
        else:
            got, ref = getattr(cuda, op)(x_dev, axis, keepdims), getattr(numpy_ref, op)(x, axis, keepdims)
        n = x.size if axis is None else x.shape[axis]
        assert_matches(host(rt, got), ref, dtype, n=n, scale=np.max(np.abs(x)))
    check_launched(rt, "softmax_" if op == "softmax_forward" else f"reduce_{op}_")


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_propagate_nan(cuda_runtime, dtype):
    rt = cuda_runtime
    x = rand((3, 40), dtype, 4)
    x[1, 7] = np.nan
    for op in ("max", "min", "sum"):
        got = host(rt, getattr(cuda, op)(device(rt, x), 1, False))
        np.testing.assert_array_equal(np.isnan(got), [False, True, False])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, d", [(1, 1), (5, 33), (3, 1600), (300, 16)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(cuda_runtime, rows, d, affine, dtype):
    rt = cuda_runtime
    x, dout = rand((rows, d), dtype, d, 5.0) + 3, rand((rows, d), dtype, d + 1)
    w, b = (rand(d, dtype, 7), rand(d, dtype, 8)) if affine else (None, None)
    dev = [None if a is None else device(rt, a) for a in (x, w, b, dout)]
    out, mean, rstd = cuda.layer_norm_forward(dev[0], dev[1], dev[2], 1e-5)
    ref = numpy_ref.layer_norm_forward(x, w, b, 1e-5)
    for got, want in zip((out, mean, rstd), ref):
        assert_matches(host(rt, got), want, dtype, n=d, scale=np.abs(want) + 1)
    grads = cuda.layer_norm_backward(dev[3], dev[0], dev[1], mean, rstd)
    ref_grads = numpy_ref.layer_norm_backward(dout, x, w, ref[1], ref[2])
    for got, want in zip(grads, ref_grads):
        assert (got is None) == (want is None)
        if want is not None:
            assert_matches(host(rt, got), want, dtype, n=max(d, rows), scale=np.abs(want) + 10)
    check_launched(rt, "layernorm_forward_", "layernorm_backward_dx_", "layernorm_backward_dparams_")



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_gelu_and_bias_residual(cuda_runtime, with_bias, approximate, dtype):
    rt = cuda_runtime
    x, dout, res = rand((5, 33), dtype, 1, 4.0), rand((5, 33), dtype, 2), rand((5, 33), dtype, 3)
    bias = rand(33, dtype, 4) if with_bias else None
    bias_dev = None if bias is None else device(rt, bias)
    got = cuda.bias_gelu_forward(device(rt, x), bias_dev, approximate)
    assert_matches(host(rt, got), numpy_ref.bias_gelu_forward(x, bias, approximate), dtype, scale=np.abs(x) + 1)
    dx, dbias = cuda.bias_gelu_backward(device(rt, dout), device(rt, x), bias_dev, approximate)
    ref_dx, ref_dbias = numpy_ref.bias_gelu_backward(dout, x, bias, approximate)
    assert_matches(host(rt, dx), ref_dx, dtype, scale=np.abs(ref_dx) + 1)
    assert (dbias is None) == (ref_dbias is None)
    if bias is not None:
        assert_matches(host(rt, dbias), ref_dbias, dtype, n=5, scale=np.abs(ref_dbias) + 1)
        got = cuda.bias_residual_forward(device(rt, x), bias_dev, device(rt, res))
        assert_matches(host(rt, got), numpy_ref.bias_residual_forward(x, bias, res), dtype, scale=np.abs(x) + 2)
    gelu = cuda.gelu_forward(device(rt, x.T), approximate)  # a transposed input: made contiguous
    assert_matches(host(rt, gelu), numpy_ref.gelu_forward(x.T, approximate), dtype, scale=np.abs(x.T) + 1)
    check_launched(rt, "bias_gelu_forward_", "bias_gelu_backward_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout(cuda_runtime, p, dtype):
    """The mask comes from the kernel's Philox stream: masks differ from numpy_ref's, so the test checks
    what must hold: out = x * mask / (1 - p), the keep rate, a new mask per call, the same masks per seed."""
    rt = cuda_runtime
    x = rand((7, 151), dtype, 5) + 2
    gen = cuda.make_generator(1234)
    out, mask = cuda.dropout_forward(gen, device(rt, x), p)
    out, mask = host(rt, out), host(rt, mask)
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    scale = 0.0 if p == 1 else 1 / (1 - p)
    assert_matches(out, (x * mask * scale).astype(dtype), dtype, scale=np.abs(x) * scale)
    if p == 0:
        assert mask.all()
    elif p == 1:
        assert not mask.any()
    else:
        assert abs(mask.mean() - (1 - p)) < 0.05
        second = host(rt, cuda.dropout_forward(gen, device(rt, x), p)[1])
        assert not np.array_equal(second, mask)  # the next offset: a new mask
        again = host(rt, cuda.dropout_forward(cuda.make_generator(1234), device(rt, x), p)[1])
        np.testing.assert_array_equal(again, mask)
    dout = rand(x.shape, dtype, 6)
    dx = cuda.dropout_backward(device(rt, dout), device(rt, mask), p)
    assert_matches(host(rt, dx), numpy_ref.dropout_backward(dout, mask, p), dtype, scale=np.abs(dout) * scale)
    check_launched(rt, "dropout_forward_", "dropout_backward_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 33, 1600])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy(cuda_runtime, c, label_smoothing, dtype):
    """Logits up to +-1e4 (exp overflows float32 past 88) and an ignored row."""
    rt = cuda_runtime
    logits = rand((5, c), dtype, c, 1e4)
    targets = np.random.default_rng(c).integers(0, c, 5)
    targets[2] = -100
    losses, logprobs = cuda.cross_entropy_forward(device(rt, logits), device(rt, targets), -100, label_smoothing)
    ref_losses, ref_logprobs = numpy_ref.cross_entropy_forward(logits, targets, -100, label_smoothing)
    assert np.all(np.isfinite(host(rt, losses)))
    assert_matches(host(rt, losses), ref_losses, dtype, n=c, scale=np.abs(ref_losses) + 1e4)
    assert_matches(host(rt, logprobs), ref_logprobs, dtype, n=c, scale=np.abs(ref_logprobs) + 1e4)
    dlosses = rand(5, dtype, 9)
    got = cuda.cross_entropy_backward(device(rt, dlosses), logprobs, device(rt, targets), -100, label_smoothing)
    ref = numpy_ref.cross_entropy_backward(dlosses, ref_logprobs, targets, -100, label_smoothing)
    assert_matches(host(rt, got), ref, dtype, n=c, scale=1.0)
    check_launched(rt, "cross_entropy_forward_", "cross_entropy_backward_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding(cuda_runtime, padding_idx, dtype):
    rt = cuda_runtime
    weight = rand((50, 33), dtype, 1)
    indices = np.random.default_rng(2).integers(0, 50, (4, 9))
    indices[0, :3] = 3  # repeated rows accumulate
    out = cuda.embedding_forward(device(rt, weight), device(rt, indices))
    np.testing.assert_array_equal(host(rt, out), numpy_ref.embedding_forward(weight, indices))
    dout = rand((4, 9, 33), dtype, 3)
    got = cuda.embedding_backward(device(rt, dout), device(rt, indices), 50, padding_idx)
    ref = numpy_ref.embedding_backward(dout, indices, 50, padding_idx)
    assert_matches(host(rt, got), ref, dtype, n=36, scale=np.abs(ref) + 1)
    check_launched(rt, "embedding_forward_", "embedding_backward_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, h, tq, tk, d, dv, causal, bias", [
    (1, 1, 1, 1, 1, 1, False, None), (2, 3, 17, 17, 8, 8, True, None), (1, 2, 5, 33, 16, 4, False, "key_mask"),
    (2, 1, 33, 9, 4, 8, True, "full"),
])
def test_attention(cuda_runtime, b, h, tq, tk, d, dv, causal, bias, dtype):
    """attention.cu forward and backward: causal, a padding mask broadcast over heads and queries (stride-0
    dims), a full additive bias, Tq != Tk, D != Dv."""
    rt = cuda_runtime
    q, k, v = rand((b, h, tq, d), dtype, 1, 2.0), rand((b, h, tk, d), dtype, 2, 2.0), rand((b, h, tk, dv), dtype, 3)
    if bias == "key_mask":
        bias_arr = np.where(np.arange(tk) % 4 == 3, -np.inf, 0.0).astype(dtype).reshape(1, 1, 1, tk)
    elif bias == "full":
        bias_arr = rand((b, h, tq, tk), dtype, 4)
    else:
        bias_arr = None
    dev = [None if a is None else device(rt, a) for a in (q, k, v, bias_arr)]
    out, lse = cuda.attention_forward(*dev, causal, 0.5)
    ref_out, ref_lse = numpy_ref.attention_forward(q, k, v, bias_arr, causal, 0.5)
    dout = rand(ref_out.shape, dtype, 5)
    scales = attention_error_scales(q, k, v, bias_arr, causal, 0.5, dout, ref_out, ref_lse)
    assert_matches(host(rt, out), ref_out, dtype, n=tk, scale=scales[0])
    assert_matches(host(rt, lse), ref_lse, dtype, n=tk, scale=scales[1])
    grads = cuda.attention_backward(device(rt, dout), *dev[:3], out, lse, dev[3], causal, 0.5)
    ref_grads = numpy_ref.attention_backward(dout, q, k, v, ref_out, ref_lse, bias_arr, causal, 0.5)
    for got, want, scale in zip(grads, ref_grads, scales[2:]):
        assert_matches(host(rt, got), want, dtype, n=max(tq, tk), scale=scale)
    check_launched(rt, "attention_forward_", "attention_backward_delta_", "attention_backward_dkv_",
                   "attention_backward_dq_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad, decoupled", [(False, True), (True, False)])
def test_adam_step(cuda_runtime, amsgrad, decoupled, dtype):
    rt = cuda_runtime
    arrays = [rand(37, dtype, s) for s in range(4)] + [np.abs(rand(37, dtype, 9))]
    arrays[3] = np.abs(arrays[3])
    ref = [a.copy() for a in arrays]
    dev = [device(rt, a) for a in arrays]
    args = (3, 1e-2, 0.9, 0.999, 1e-8, 0.1, decoupled, amsgrad, False)
    cuda.adam_step_(dev[0], dev[1], dev[2], dev[3], dev[4] if amsgrad else None, *args)
    numpy_ref.adam_step_(ref[0], ref[1], ref[2], ref[3], ref[4] if amsgrad else None, *args)
    for got, want in zip(dev, ref):
        assert_matches(host(rt, got), want, dtype, scale=np.abs(want) + 1)
    check_launched(rt, "adamw_step_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", [
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), ((2, 0), (1, 1)), (1, 2), 2),
])
def test_conv2d(cuda_runtime, x_shape, w_shape, stride, padding, dilation, groups, dtype):
    """im2col + gemm (weight broadcast over the images, a GEMM per group), the weight gradient as one GEMM
    over images and positions, col2im for the input gradient; strides, asymmetric padding, dilation, groups."""
    rt = cuda_runtime
    x, w, bias = rand(x_shape, dtype, 1), rand(w_shape, dtype, 2), rand(w_shape[0], dtype, 3)
    geometry = (stride, padding, dilation, groups)
    out = cuda.conv2d_forward(device(rt, x), device(rt, w), *geometry, bias=device(rt, bias))
    ref = numpy_ref.conv2d_forward(x, w, *geometry, bias=bias)
    k = math.prod(w_shape[1:])
    assert_matches(host(rt, out), ref, dtype, n=k, scale=k)
    dout = rand(ref.shape, dtype, 4)
    dx, dw = cuda.conv2d_backward(device(rt, dout), device(rt, x), device(rt, w), *geometry)
    ref_dx, ref_dw = numpy_ref.conv2d_backward(dout, x, w, *geometry)
    assert_matches(host(rt, dx), ref_dx, dtype, n=k, scale=k)
    assert_matches(host(rt, dw), ref_dw, dtype, n=dout.size, scale=dout.size)
    check_launched(rt, "im2col_", "gemm_", "col2im_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_cells(cuda_runtime, cell, dtype):
    """rnn.cu's cells, pre-activations up to +-30 (saturated gates), and the sequence loops around them."""
    rt = cuda_runtime
    batch, hidden, gates = 3, 5, 4 if cell == "lstm" else 3
    gx, gh = rand((batch, gates * hidden), dtype, 1, 30.0), rand((batch, gates * hidden), dtype, 2)
    state = rand((batch, hidden), dtype, 3)
    got = getattr(cuda, f"{cell}_cell_forward")(device(rt, gx), device(rt, gh), device(rt, state))
    ref = getattr(numpy_ref, f"{cell}_cell_forward")(gx, gh, state)
    for g, r in zip(got, ref):
        assert_matches(host(rt, g), r, dtype, scale=np.abs(r) + 1)
    dh = rand((batch, hidden), dtype, 4)
    if cell == "lstm":
        dc = rand((batch, hidden), dtype, 5)
        got_b = cuda.lstm_cell_backward(device(rt, dh), device(rt, dc), got[1], device(rt, state))
        ref_b = numpy_ref.lstm_cell_backward(dh, dc, ref[1], state)
    else:
        got_b = cuda.gru_cell_backward(device(rt, dh), got[1], device(rt, state))
        ref_b = numpy_ref.gru_cell_backward(dh, ref[1], state)
    for g, r in zip(got_b, ref_b):
        assert_matches(host(rt, g), r, dtype, scale=np.abs(r) + 1)
    check_launched(rt, f"{cell}_cell_forward_", f"{cell}_cell_backward_")


@pytest.mark.parametrize("primitive, args", [
    ("matmul", lambda: (np.arange(6).reshape(2, 3), np.arange(3))),            # int64: no kernel
    ("softmax_forward", lambda: (np.ones((2, 0), np.float32), 1)),              # empty rows
    ("sum", lambda: (np.ones((2, 3, 4), np.float32), (0, 2), False)),          # two axes at once
    ("attention_forward", lambda: (*(np.ones((1, 1, 2, 129), np.float32),) * 3, None, False, 1.0)),  # D > 128
])
def test_what_no_kernel_takes_falls_back_to_the_reference(cuda_runtime, primitive, args):
    rt = cuda_runtime
    values = args()
    dev = [device(rt, a) if isinstance(a, np.ndarray) else a for a in values]
    if hasattr(rt, "launched"):
        rt.launched.clear()
    got, ref = getattr(cuda, primitive)(*dev), getattr(numpy_ref, primitive)(*values)
    assert not getattr(rt, "launched", []), f"a kernel ran: {rt.launched}"
    for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
        np.testing.assert_allclose(host(rt, g), r, rtol=1e-6)


# ---- every differentiable op, its gradient checked on 'cuda' ----------------------------------------------


def _on_cuda(args):
    """The case's arguments on 'cuda': modules moved in place (their parameters, passed too, stay theirs),
    other tensors (also inside tuples) copied as new leaves that require grad as the originals do."""
    for a in args:
        if isinstance(a, nn.Module):
            a.to("cuda")

    def move(a):
        if isinstance(a, (tuple, list)):  # e.g. a recurrent state (h, c)
            return type(a)(move(b) for b in a)
        if isinstance(a, mg.Tensor) and a.device != "cuda":
            return a.detach().to("cuda").requires_grad_(a.requires_grad)
        return a
    return [move(a) for a in args]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gradcheck_on_cuda(cuda_runtime, case, data):
    """Each row of the gradient-check table (test_gradcheck.py) with its tensors on 'cuda', in float64: the
    float64 kernels, the fallbacks and the autograd across them, against central differences. Two examples
    per row (each finite difference is a forward pass: slow on the emulator)."""
    args = _on_cuda(data.draw(case.strategy(), label="args"))
    assert gradcheck(case.fn, *args)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gradcheck_on_cuda_with_the_reference_backend(cuda_runtime, case, data):
    """The same rows under use("numpy"): numpy_ref's code for every primitive on the device arrays (what the
    CUDA backend falls back to for what its kernels do not take), which must run on CuPy's arrays as they are
    (the emulated ones refuse what CuPy refuses) and give correct gradients."""
    args = _on_cuda(data.draw(case.strategy(), label="args"))
    with backend.use("numpy"):
        assert gradcheck(case.fn, *args)


# ---- the device API -----------------------------------------------------------------------------------------


def test_tensors_move_between_devices_and_gradients_follow(cuda_runtime):
    x = mg.randn(3, 4, requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and y.is_cuda and not y.is_leaf and isinstance(y.data, type(cuda_runtime.xp.empty(0)))
    assert y.cuda() is y and y.to("cuda:0") is y  # nothing to do: the same tensor
    ((y * y).sum().cpu() + y.cpu().sum()).backward()  # two paths back to x, through the GPU and back
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.cpu().numpy(), 2 * x.detach().cpu().numpy() + 1, rtol=1e-6)
    np.testing.assert_array_equal(y.detach().cpu().numpy(), x.detach().cpu().numpy())
    with pytest.raises(TypeError, match="cpu"):  # as torch: a GPU tensor's values reach NumPy through .cpu()
        y.detach().numpy()
    assert mg.tensor(y).device == "cuda" and mg.tensor(y, device="cpu").device == "cpu"  # (torch's rule)
    assert y.to("cpu", non_blocking=True).device == "cpu"
    assert "device='cuda'" in repr(y)


def test_creation_functions_take_a_device(cuda_runtime):
    array_type = type(cuda_runtime.xp.empty(0))
    made = [mg.zeros(2, 3, device="cuda"), mg.ones(2, device="cuda"), mg.full((2,), 3.0, device="cuda"),
            mg.arange(5, device="cuda"), mg.linspace(0, 1, 4, device="cuda"), mg.eye(3, device="cuda"),
            mg.randn(2, 2, device="cuda"), mg.rand(3, device="cuda"), mg.randint(0, 5, (4,), device="cuda"),
            mg.tensor([[1.0, 2.0]], device="cuda"), mg.tensor(np.arange(3), device=mg.device("cuda")),
            mg.empty(2, device="cuda")]
    made.append(mg.zeros_like(made[0]))
    for t in made:
        assert t.device == "cuda" and isinstance(t.data, array_type), (t.device, type(t.data))
    np.testing.assert_array_equal(made[9].cpu().numpy(), [[1.0, 2.0]])
    assert made[8].dtype is mg.int64 and 0 <= made[8].min().item() and made[8].max().item() < 5


def test_mixing_devices_raises_naming_both(cuda_runtime):
    a, b = mg.ones(2, 2), mg.ones(2, 2, device="cuda")
    for op in (lambda: a + b, lambda: a @ b, lambda: mg.cat([a, b]), lambda: mg.where(a > 0, a, b)):
        with pytest.raises(RuntimeError, match=r"cpu.*cuda|cuda.*cpu"):
            op()
    with pytest.raises(RuntimeError, match="cuda:1"):
        mg.ones(2, device="cuda:1")
    scalar = mg.tensor(2.0)  # a 0-d CPU tensor is a scalar to an op on the GPU, as in PyTorch
    assert (b * scalar).device == "cuda" and (scalar - b).device == "cuda"
    np.testing.assert_array_equal((scalar - b).cpu().numpy(), np.ones((2, 2)))


def test_copy_between_devices_and_loading_into_a_model_on_cuda(cuda_runtime, tmp_path):
    gpu = mg.zeros(2, 3, device="cuda")
    gpu.copy_(mg.arange(6).reshape(2, 3))  # (CPU int64 values into a float32 GPU tensor)
    np.testing.assert_array_equal(gpu.cpu().numpy(), np.arange(6).reshape(2, 3))
    cpu = mg.zeros(3)
    cpu.copy_(mg.ones(3, device="cuda"))
    np.testing.assert_array_equal(cpu.numpy(), np.ones(3))
    source = nn.Linear(3, 2)
    mg.save(source.state_dict(), tmp_path / "w.safetensors")
    model = nn.Linear(3, 2).to("cuda")
    model.load_state_dict(mg.load(tmp_path / "w.safetensors"))
    assert model.weight.device == "cuda"
    np.testing.assert_array_equal(model.weight.detach().cpu().numpy(), source.weight.detach().numpy())


def test_indexing_on_cuda_takes_cpu_indices(cuda_runtime):
    x = mg.arange(12, device="cuda").reshape(3, 4)
    assert x[mg.tensor([2, 0])].device == "cuda"
    np.testing.assert_array_equal(x[[2, 0], 1:3].cpu().numpy(), [[9, 10], [1, 2]])
    with pytest.raises(RuntimeError, match="index on cuda"):
        mg.arange(3)[mg.tensor([0], device="cuda")]


def test_cuda_seeds_and_api(cuda_runtime):
    mg.cuda.manual_seed(3)
    a, drop_a = mg.randn(5, device="cuda"), nn.functional.dropout(mg.ones(64, device="cuda"), 0.5, training=True)
    mg.cuda.manual_seed(3)
    b, drop_b = mg.randn(5, device="cuda"), nn.functional.dropout(mg.ones(64, device="cuda"), 0.5, training=True)
    np.testing.assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
    np.testing.assert_array_equal(drop_a.cpu().numpy(), drop_b.cpu().numpy())
    assert 0 < (drop_a.cpu().numpy() == 0).sum() < 64
    assert mg.cuda.is_available() and mg.cuda.why_unavailable() is None and mg.cuda.device_count() == 1
    assert mg.cuda.current_device() == 0 and mg.cuda.get_device_name() == cuda_runtime.device_name
    mg.cuda.synchronize()


def _train_tiny_gpt(device, steps=3):
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    model.to(device)
    optimizer = mg.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    data = np.random.default_rng(1).integers(0, 11, (steps, 3, 9))
    losses = []
    for batch in data:
        x, y = mg.tensor(batch[:, :-1], device=device), mg.tensor(batch[:, 1:], device=device)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        mg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def test_a_small_gpt_trains_on_cuda_as_on_the_cpu(cuda_runtime, tmp_path):
    """Embedding, attention, LayerNorm, GELU MLP, cross-entropy, AdamW and gradient clipping, three steps on
    each device from the same seed: the same losses and parameters up to float32 rounding."""
    cpu_losses, cpu_params = _train_tiny_gpt("cpu")
    cuda_losses, cuda_params = _train_tiny_gpt("cuda")
    np.testing.assert_allclose(cuda_losses, cpu_losses, rtol=1e-4)
    assert cuda_losses[-1] < cuda_losses[0]
    for name, value in cpu_params.items():
        np.testing.assert_allclose(cuda_params[name], value, rtol=1e-3, atol=1e-4, err_msg=name)


def test_the_reference_backend_runs_on_gpu_arrays(cuda_runtime):
    """use("numpy") on 'cuda': numpy_ref's code on the device arrays for every primitive but the creation ones
    (base.DEVICE_BOUND stay the device's): a tiny GPT trains as it does on the kernels, and what has no
    kernel at all (exact GELU's erf, logsumexp, tril) gives device arrays too."""
    kernel_losses, kernel_params = _train_tiny_gpt("cuda")
    with backend.use("numpy"):
        assert backend.selected("matmul", "cuda") == "numpy" and backend.selected("zeros", "cuda") == "cuda"
        losses, params = _train_tiny_gpt("cuda")
        x = mg.randn(3, 5, device="cuda", requires_grad=True)
        (nn.functional.gelu(x) + x.logsumexp(-1, keepdim=True) + x.tril()).sum().backward()
        device_array = type(cuda_runtime.xp.zeros(1))
        assert isinstance(x.grad.data, device_array) and isinstance(mg.zeros(2, device="cuda").data, device_array)
    np.testing.assert_allclose(losses, kernel_losses, rtol=1e-4)
    for name, value in kernel_params.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-3, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: "bfloat16" if d is None else np.dtype(d).name)
def test_16_bit_tensors_keep_their_dtype_on_cuda(cuda_runtime, dtype):
    """CuPy's where (and so its tril / triu) has no bfloat16 version and computes in float32: minigrad's
    results and gradients stay bfloat16 all the same."""
    half = {np.dtype(np.float16): mg.float16}.get(np.dtype(dtype), getattr(mg, "bfloat16", None))
    x = mg.randn(4, 4, device="cuda").to(half).requires_grad_()
    outs = [mg.where(x > 0, x, mg.zeros_like(x)), x.tril(), x.triu(1), x.masked_fill(x > 0, 0.0), x.relu()]
    assert [o.dtype for o in outs] == [half] * len(outs)
    sum(o.float().sum() for o in outs).backward()
    assert x.grad.dtype is half and x.grad.device == "cuda"
    gathered = x.gather(1, mg.tensor([[0, 0], [1, 3], [2, 2], [3, 3]], device="cuda"))
    (gathered.float().sum() + x[[0, 0, 2]].float().sum()).backward()
    assert x.grad.dtype is half


def test_emulated_device_arrays_refuse_what_cupy_refuses(cuda_runtime):
    """The emulated runtime's arrays fail where CuPy's would, so CI catches what only a GPU run would."""
    if cuda_runtime.name != "emulated":
        pytest.skip("checks the emulator (CuPy itself runs on a GPU)")
    from cuda_emu_support import DeviceArray, _cupy
    a = np.arange(6.0).reshape(2, 3).view(DeviceArray)
    with pytest.raises(TypeError, match="host"):
        a + np.ones(3)
    if _cupy is None:
        pytest.skip("needs the cupy package (in the test extra) to read CuPy's signatures")
    for call in (lambda: np.max(a, axis=1, initial=0.0), lambda: cuda_runtime.xp.max(a, axis=1, initial=0.0)):
        with pytest.raises(TypeError, match="initial"):
            call()
    with pytest.raises(TypeError, match="CuPy has no"):
        np.frompyfunc(math.erf, 1, 1)(a)
    assert np.max(a, axis=1, keepdims=True).shape == (2, 1)
    for bfloat16 in HALF_NP_DTYPES - {np.dtype(np.float16)}:  # (from ml_dtypes, when it is installed)
        b = a.astype(bfloat16)
        with pytest.raises(TypeError, match="ufunc.at"):
            np.add.at(b, np.array([0, 0]), b[0, :1])
        assert np.where(a > 0, b, b).dtype == np.float32  # CuPy's where, without a bfloat16 loop


def _gradients_of_one_step(device):
    """The gradients of one seeded step through every scatter-add and random kernel: a GPT with dropout
    (embedding, attention, LayerNorm, cross-entropy), a CNN with overlapping max and average pooling, an
    LSTM, gather and integer indexing with repeats."""
    mg.manual_seed(0)
    mg.cuda.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1)).to(device)
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(3, stride=1), nn.AvgPool2d(2, stride=1)).to(device)
    lstm = nn.LSTM(4, 5, batch_first=True).to(device)
    tokens = mg.tensor(np.random.default_rng(1).integers(0, 11, (3, 9)), device=device)
    _, loss = gpt(tokens[:, :-1], tokens[:, 1:])
    images = mg.randn(2, 2, 7, 7, device=device)
    features = cnn(images).reshape(2, -1)
    picked = features.gather(1, mg.tensor([[0, 0, 5, 5, 5]] * 2, device=device)) + features[:, [1, 1, 2]].sum()
    sequence, _ = lstm(features[:, :24].reshape(2, 6, 4))
    (loss + picked.sum() + (sequence * sequence).sum()).backward()
    return {name: p.grad.cpu().numpy() for module in (gpt, cnn, lstm) for name, p in module.named_parameters()}


def test_gradients_are_the_same_bits_on_every_run(cuda_runtime):
    """Deterministic backward (no float atomics in any gradient reduction): two runs, identical bits."""
    first, second = _gradients_of_one_step("cuda"), _gradients_of_one_step("cuda")
    assert first.keys() == second.keys()
    for name, grad in first.items():
        assert grad.tobytes() == second[name].tobytes(), name


def test_a_model_on_cuda_saves_and_loads(cuda_runtime, tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).to("cuda")
    assert all(p.device == "cuda" for p in model.parameters())
    mg.save(model.state_dict(), tmp_path / "m.safetensors")
    twin = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    twin.load_state_dict(mg.load(tmp_path / "m.safetensors"))
    x = mg.randn(2, 3)
    np.testing.assert_allclose(model(x.cuda()).detach().cpu().numpy(), twin(x).detach().cpu().numpy(), rtol=1e-5)


def test_without_a_gpu_cuda_is_unavailable_and_says_why(monkeypatch):
    """CuPy missing or broken: is_available() is False, never an exception, and using 'cuda' names the reason."""
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # `import cupy` raises ImportError
    monkeypatch.setattr(backend, "_cuda_error", None)
    monkeypatch.setattr(backend, "_registry", {k: v for k, v in backend._registry.items() if k != "cuda"})
    backend._tables.clear()
    try:
        assert mg.cuda.is_available() is False
        assert "CuPy does not import" in mg.cuda.why_unavailable()
        with pytest.raises(RuntimeError, match="CuPy does not import"):
            mg.ones(2).to("cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            mg.cuda.synchronize()
    finally:
        backend._tables.clear()


def test_autocast_and_grad_scaler_on_cuda(cuda_runtime):
    """Mixed precision on the device: float16 linear layers, float32 softmax / loss, float32 master weights
    and their gradients, a GradScaler step; the same outputs as under autocast on the CPU (float16 there too)."""
    def run(device):
        mg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 5)).to(device)
        optimizer = mg.optim.AdamW(model.parameters(), lr=1e-2)
        scaler = mg.amp.GradScaler(device, init_scale=2.0 ** 10)
        x, y = mg.randn(4, 8).to(device), mg.tensor([0, 3, 1, 4], device=device)
        with mg.autocast(device, dtype=mg.float16):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
        assert logits.dtype is mg.float16 and loss.dtype is mg.float32
        scaler.scale(loss).backward()
        assert all(p.grad.dtype is mg.float32 and p.grad.device == device for p in model.parameters())
        scaler.step(optimizer)
        scaler.update()
        return logits.detach().float().cpu().numpy(), [p.detach().cpu().numpy() for p in model.parameters()]
    cpu_logits, cpu_params = run("cpu")
    cuda_logits, cuda_params = run("cuda")
    np.testing.assert_allclose(cuda_logits, cpu_logits, rtol=2e-3, atol=2e-3)
    for got, want in zip(cuda_params, cpu_params):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---- the GPU benchmark command, where there is no GPU --------------------------------------------------------


def test_gpu_benchmarks_list_their_cases_and_refuse_to_run_without_a_gpu(capsys):
    from bench import gpu
    assert gpu.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("gemm_fp32", "gemm_bf16", "softmax", "layernorm", "bias_gelu", "attention", "gpt_step"):
        assert name in listed
    if gpu.missing_requirements() is not None:  # (on a GPU machine with a CUDA torch, nothing to check here)
        assert gpu.main(["--quick", "softmax"]) == 2
        assert "cannot run" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_add_of_a_row_gather_is_deterministic_and_matches(cuda_runtime, dtype):
    """The backward of x[idx] with repeated and negative indices: embedding.cu's scatter-add (no atomics)."""
    rt = cuda_runtime
    out0, values = rand((6, 3, 4), dtype, 1), rand((5, 2, 3, 4), dtype, 2)
    idx = np.array([[0, 5], [-1, 2], [0, 0], [3, -6], [2, 1]])
    out, ref = device(rt, out0), out0.copy()
    cuda.index_add_(out, (device(rt, idx),), device(rt, values))
    numpy_ref.index_add_(ref, (idx,), values)
    assert host(rt, out).tobytes() == ref.tobytes()  # onto out's values, in index order: np.add.at's bits
    check_launched(rt, "embedding_backward_")
    scalar = device(rt, np.array(1.5, dtype))  # a 0-d array and a bool index (NumPy's scalar mask)
    cuda.index_add_(scalar, (device(rt, np.array(True)),), device(rt, np.array([2.5], dtype)))
    assert host(rt, scalar) == 4.0
    empty_rows = mg.zeros(3, 0, device="cuda", requires_grad=True)  # rows of no elements
    empty_rows[mg.tensor([0, 1, 0])].sum().backward()
    assert empty_rows.grad.shape == (3, 0) and empty_rows.grad.device == "cuda"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", [
    (slice(None), np.array([1, 1, -1])),                        # along dim 1, repeated and negative
    (np.array([[0], [5], [0]]), slice(1, 3), np.array([3, 3])),  # two arrays broadcast, a slice between
    (Ellipsis, np.array([2, 0, 2, 2])),                          # along the last dim
    (np.array([4, 4]), 1),                                       # an array and an int
    (np.array([0, 5, 0]), np.array([1, 2, 1])),                  # two arrays: x[i, j], a 2-d bool mask's
], ids=["dim1", "broadcast", "last", "with_int", "two_arrays"])
@pytest.mark.parametrize("contiguous", [True, False])
def test_index_add_of_any_index_is_deterministic_np_add_at(cuda_runtime, index, contiguous, dtype):
    """The backward of x[index] for integer indices other than a row gather: scatter.cu's sorted
    scatter-add, np.add.at's sums to the bit (no atomics), into contiguous and strided arrays."""
    rt = cuda_runtime
    base = rand((6, 3, 4), dtype, 1)
    out0 = base if contiguous else np.ascontiguousarray(base.transpose(0, 2, 1)).transpose(0, 2, 1)
    values = rand(out0[index].shape, dtype, 2, scale=100)
    expected = out0.copy()
    np.add.at(expected, index, values)
    dev_index = tuple(device(rt, i) if isinstance(i, np.ndarray) else i for i in index)
    out = device(rt, out0)
    if not contiguous:
        out = out.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    cuda.index_add_(out, dev_index, device(rt, values))
    assert host(rt, out).tobytes() == expected.tobytes()  # (tobytes: the values in C order, whatever the layout)
    check_launched(rt, "scatter_add_sorted_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_backward_is_a_deterministic_scatter(cuda_runtime, axis, dtype):
    """scatter_add_along_axis (the backward of gather) with repeated and negative indices: scatter.cu,
    numpy_ref's bits."""
    rt = cuda_runtime
    shape = (5, 4, 33)
    index_shape = list(shape)
    index_shape[axis] = 7
    rng = np.random.default_rng(axis + 7)
    index = rng.integers(-shape[axis], shape[axis], index_shape)
    index.reshape(-1)[: index.size // 3] = 1  # many repeats of one position per line
    values = rand(index_shape, dtype, 3, scale=10)
    ref = numpy_ref.scatter_add_along_axis(shape, index, values, axis, dtype)
    got = cuda.scatter_add_along_axis(shape, device(rt, index), device(rt, values), axis, dtype)
    assert host(rt, got).dtype == ref.dtype and host(rt, got).tobytes() == ref.tobytes()
    check_launched(rt, "scatter_add_sorted_")
    small = np.array([[0, 1, -1]])  # size 1 off the axis: the index covers part of the output only
    got = cuda.scatter_add_along_axis((5, 4), device(rt, small), device(rt, values.reshape(-1)[:3].reshape(1, 3)), 1,
                                      dtype)
    ref = numpy_ref.scatter_add_along_axis((5, 4), small, values.reshape(-1)[:3].reshape(1, 3), 1, dtype)
    assert host(rt, got).tobytes() == ref.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (0, 1)),
                                                    ((1, 1), (1, 1), (0, 0))])
def test_max_pool2d_backward_is_deterministic(cuda_runtime, kernel, stride, padding, dtype):
    """Overlapping windows send several gradients to one input: scatter.cu sums them without atomics."""
    rt = cuda_runtime
    x = rand((2, 3, 7, 9), dtype, 4)
    x[0, 0] = 1.0  # ties: the first element of each window wins, and collects every window's gradient
    out, argmax = numpy_ref.max_pool2d_forward(x, kernel, stride, padding, (1, 1), False)
    dout = rand(out.shape, dtype, 5, scale=1e4)
    ref = numpy_ref.max_pool2d_backward(dout, argmax, x.shape)
    runs = [host(rt, cuda.max_pool2d_backward(device(rt, dout), device(rt, argmax), x.shape)) for _ in range(2)]
    check_launched(rt, "scatter_add_sorted_")
    assert runs[0].tobytes() == runs[1].tobytes()
    window = kernel[0] * kernel[1]
    assert_matches(runs[0], ref, dtype, n=window, scale=window * 1e4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [((3, 3), (2, 2), (1, 1), (1, 1), True),
                                                                          ((2, 3), (1, 2), (0, 1), (2, 1), False)])
def test_pooling_runs_pool_cu(cuda_runtime, kernel, stride, padding, dilation, ceil_mode, dtype):
    """max_pool2d / avg_pool2d forward and backward on kernels/pool.cu (a strided input made contiguous)
    against the reference; max pooling's values and argmax exactly."""
    rt = cuda_runtime
    x = rand((2, 3, 9, 8), dtype, 6, scale=100)
    x_dev = device(rt, x.transpose(0, 1, 3, 2).copy()).transpose(0, 1, 3, 2)  # (non-contiguous)
    out, argmax = cuda.max_pool2d_forward(x_dev, kernel, stride, padding, dilation, ceil_mode)
    ref_out, ref_argmax = numpy_ref.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(host(rt, out), ref_out)
    np.testing.assert_array_equal(host(rt, argmax), ref_argmax)
    check_launched(rt, "max_pool2d_forward_")
    args = (kernel, stride, padding, ceil_mode, True)
    avg = cuda.avg_pool2d_forward(x_dev, *args)
    assert_matches(host(rt, avg), numpy_ref.avg_pool2d_forward(x, *args), dtype, n=6, scale=100)
    dout = rand(avg.shape, dtype, 7, scale=100)
    dx = cuda.avg_pool2d_backward(device(rt, dout), x.shape, *args)
    assert_matches(host(rt, dx), numpy_ref.avg_pool2d_backward(dout, x.shape, *args), dtype, n=9, scale=100)
    check_launched(rt, "avg_pool2d_forward_", "avg_pool2d_backward_")


def test_out_of_range_indices_on_cuda_raise_like_on_the_cpu(cuda_runtime):
    """CuPy wraps out-of-range integer indices around; minigrad checks them on the GPU so that they raise."""
    x = mg.arange(12.0, device="cuda").reshape(3, 4)
    for bad in ([0, 3], [-4], mg.tensor([5])):
        with pytest.raises(IndexError, match="out of bounds for dim 0 with size 3"):
            x[bad]
    with pytest.raises(IndexError, match="out of bounds for dim 1 with size 4"):
        x[:, mg.tensor([1, 4], device="cuda")]
    with pytest.raises(IndexError, match="out of bounds for dim 1 with size 4"):
        x[0, [4]]
    with pytest.raises(IndexError, match="out of bounds for dim 0 with size 3"):
        x[[3]] = 1.0
    with pytest.raises(IndexError, match="gather: .* out of bounds for dim 1 with size 4"):
        x.gather(1, mg.tensor([[0], [4], [1]], device="cuda"))
    with pytest.raises(RuntimeError, match="gather: input on cuda, index on cpu"):
        x.gather(1, mg.tensor([[0], [1], [1]]))
    np.testing.assert_array_equal(x[[-3, 2]].cpu().numpy(), [[0, 1, 2, 3], [8, 9, 10, 11]])
    np.testing.assert_array_equal(x.gather(1, mg.tensor([[-1], [0], [3]], device="cuda")).cpu().numpy(),
                                  [[3], [4], [11]])


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: "bfloat16" if d is None else np.dtype(d).name)
def test_16_bit_inputs_run_the_float32_kernels(cuda_runtime, dtype):
    """float16 / bfloat16 arrays on the float32 kernels (numpy_ref.in_float32: computed in float32, outputs
    rounded once, layer_norm's mean / rstd and attention's lse kept float32): the reference's results."""
    rt = cuda_runtime
    x = rand((4, 40), np.float32, 1, 4.0).astype(dtype)
    q = rand((1, 2, 5, 8), np.float32, 2).astype(dtype)
    cases = [("softmax_forward", (x, 1)), ("log_softmax_forward", (x, 1)), ("layer_norm_forward", (x, None, None, 1e-5)),
             ("attention_forward", (q, q, q, None, True, 0.5)), ("gelu_forward", (x, "tanh")), ("sum", (x, 1, False)),
             ("max_pool2d_forward", (x.reshape(1, 4, 5, 8), (2, 2), (2, 2), (0, 0), (1, 1), False)),
             ("avg_pool2d_forward", (x.reshape(1, 4, 5, 8), (2, 2), (1, 1), (1, 1), False, True))]
    for name, args in cases:
        got = getattr(cuda, name)(*[device(rt, a) if isinstance(a, np.ndarray) else a for a in args])
        ref = getattr(numpy_ref, name)(*args)
        for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
            g = host(rt, g)
            assert g.dtype == r.dtype, (name, g.dtype, r.dtype)
            np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=1e-2, atol=1e-2, err_msg=name)
    check_launched(rt, "softmax_forward_", "log_softmax_forward_", "layernorm_forward_", "attention_forward_",
                   "bias_gelu_forward_", "reduce_sum_", "max_pool2d_forward_f32", "avg_pool2d_forward_f32")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: "bfloat16" if d is None else np.dtype(d).name)
def test_16_bit_index_gradients(cuda_runtime, dtype):
    """index_add_ / scatter_add_along_axis of 16-bit arrays: each element's value and its additions in
    float32, in index order, rounded once (base.py), on the float32 kernels: the reference's bits (with
    additions that round differently in another order); max_pool2d's backward sums in float32 too."""
    rt = cuda_runtime
    out0, values = rand((5, 3), np.float32, 1).astype(dtype), rand((4, 3), np.float32, 2).astype(dtype)
    # 1 + half an ulp + two tiny values rounds down when added in index order (a tie at each step), up when
    # the values are summed first: np.add.at's order is visible in the 16-bit result
    half_ulp = 2.0**-11 if np.dtype(dtype) == np.float16 else 2.0**-8
    out0[0], values[[0, 2, 3]] = 1, np.array([half_ulp, 2.0**-24, 2.0**-24])[:, None]
    for index in [(np.array([0, 4, 0, 0]),), (np.array([0, 4, 0, 0]), slice(None, None, -1))]:  # row; general
        out, ref = device(rt, out0), out0.copy()
        cuda.index_add_(out, tuple(device(rt, i) if isinstance(i, np.ndarray) else i for i in index),
                        device(rt, values))
        numpy_ref.index_add_(ref, index, values)
        assert host(rt, out).dtype == ref.dtype and host(rt, out).tobytes() == ref.tobytes()
    check_launched(rt, "embedding_backward_f32", "scatter_add_sorted_f32")
    gathered, grad = np.array([[2, 2], [0, 2], [1, 1], [2, 0], [0, 0]]), rand((5, 2), np.float32, 4).astype(dtype)
    got = cuda.scatter_add_along_axis((5, 3), device(rt, gathered), device(rt, grad), 1, grad.dtype)
    ref = numpy_ref.scatter_add_along_axis((5, 3), gathered, grad, 1, grad.dtype)
    assert host(rt, got).dtype == ref.dtype and host(rt, got).tobytes() == ref.tobytes()
    x = rand((1, 2, 5, 5), np.float32, 3).astype(dtype)
    pooled, argmax = numpy_ref.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1), (1, 1), False)
    got = host(rt, cuda.max_pool2d_backward(device(rt, pooled), device(rt, argmax), x.shape))
    ref = numpy_ref.max_pool2d_backward(pooled, argmax, x.shape)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-2, atol=1e-2)
    check_launched(rt, "scatter_add_sorted_f32")


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_the_gpt_example_trains_and_samples_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch, amp):
    """examples/train_gpt.py --device cuda, as a user runs it, on a tiny configuration: training, evaluation,
    the checkpoint (from GPU tensors) and a sample; with --amp fp16, linear layers on the tensor-core GEMM and
    a GradScaler."""
    from example_support import load_example, run_info
    monkeypatch.chdir(tmp_path)
    train_gpt = load_example("train_gpt")
    train_gpt.main(["--preset", "demo", "--device", "cuda", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                    "--block-size", "16", "--batch-size", "4", "--max-iters", "3", "--warmup-iters", "1",
                    "--lr-decay-iters", "3", "--eval-interval", "3", "--eval-iters", "1", "--sample-tokens", "10",
                    "--amp", amp, "--out-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "iter 3: train loss" in out
    info = run_info(tmp_path / "run")
    assert info["settings"]["device"] == "cuda" and info["settings"]["amp"] == amp and len(info["history"]["loss"]) == 3
    assert np.all(np.isfinite(info["history"]["loss"]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_scans_run_the_cells_and_the_gemm(cuda_runtime, cell, dtype):
    """A whole layer over a sequence (both directions): numpy_ref's loop around rnn.cu's cells and gemm.cu."""
    rt = cuda_runtime
    steps, batch, hidden, gates = 4, 3, 5, 4 if cell == "lstm" else 3
    gx, h0 = rand((steps, batch, gates * hidden), dtype, 1, 3.0), rand((batch, hidden), dtype, 2)
    w_hh, bias = rand((gates * hidden, hidden), dtype, 3), rand(gates * hidden, dtype, 4)
    for reverse in (False, True):
        if cell == "lstm":
            c0 = rand((batch, hidden), dtype, 5)
            args = (gx, bias, h0, c0, w_hh, reverse)
        else:
            args = (gx, bias, h0, w_hh, rand(gates * hidden, dtype, 6), reverse)
        dev = [device(rt, a) if isinstance(a, np.ndarray) else a for a in args]
        out, cache = getattr(cuda, f"{cell}_scan_forward")(*dev)
        ref_out, ref_cache = getattr(numpy_ref, f"{cell}_scan_forward")(*args)
        assert_matches(host(rt, out), ref_out, dtype, n=hidden * steps, scale=np.abs(ref_out) + 1)
        grad = rand(ref_out.shape, dtype, 7)
        back = (grad, ref_cache, ref_out, h0) + ((c0,) if cell == "lstm" else ()) + (w_hh, reverse)
        got = getattr(cuda, f"{cell}_scan_backward")(*[device(rt, a) if isinstance(a, np.ndarray) else a for a in back])
        ref = getattr(numpy_ref, f"{cell}_scan_backward")(*back)
        for g, r in zip(got, ref):
            assert_matches(host(rt, g), r, dtype, n=hidden * steps * batch, scale=np.abs(r) + 10)
    check_launched(rt, f"{cell}_cell_forward_", f"{cell}_cell_backward_", "gemm_")


def test_the_gpu_benchmarks_run_their_cases_at_tiny_sizes(cuda_runtime):
    """bench/gpu.py's cases end to end at tiny sizes: minigrad on this runtime's 'cuda' (the emulator in CI),
    torch on its GPU where it has one, else on the CPU; every case validates against its reference."""
    from bench import gpu
    import torch
    torch_device = "cuda" if torch.cuda.is_available() and getattr(cuda_runtime, "name", "") == "cupy" else "cpu"
    env = gpu.Env(gpu.TINY, cp=cuda_runtime.xp, torch_device=torch_device)
    rows = gpu.run(env, list(gpu.CASES))
    assert {r["case"] for r in rows} == set(gpu.CASES)
    bad = [(r["case"], r.get("size"), r["status"]) for r in rows if r["status"] != "ok"]
    assert not bad, bad
    assert all(r["minigrad"] > 0 and all(v > 0 for v in r["refs"].values()) for r in rows)


def test_tensor_core_instructions_agree_with_their_emulated_forms(cuda_runtime):
    """On a GPU: gemm_tc.cu built with mma.cuh's portable forms (-DMG_MMA_PORTABLE: the plain CUDA C that the
    emulator runs in CI) and with the PTX instructions (mma.sync, ldmatrix, cp.async) are both within one
    float16 ulp plus the float32 accumulation bound of the exact product, so the emulated tests of the
    fragment layouts speak for the real instructions."""
    rt = cuda_runtime
    if not hasattr(rt, "function"):
        pytest.skip("needs a GPU (CuPy): on the emulator only the portable forms of the instructions exist")
    from pathlib import Path
    from minigrad.backend.cuda_runtime import kernels_dir
    source = (Path(kernels_dir()) / "gemm_tc.cu").read_text()
    module = rt.xp.RawModule(code=source, options=(f"--include-path={kernels_dir()}", "-DMG_MMA_PORTABLE"))
    m, n, k = 130, 70, 40
    a, b = rand((m, k), np.float32, 1, 2.0).astype(np.float16), rand((k, n), np.float32, 2, 2.0).astype(np.float16)
    a_dev, b_dev = device(rt, a), device(rt, b)
    instructions = host(rt, cuda.matmul(a_dev, b_dev))
    c = rt.xp.empty((m, n), dtype=np.float16)
    module.get_function("gemm_tc_f16")(
        (-(-n // 128), -(-m // 128), 1), (256,),
        (c.view(np.uint16), a_dev.view(np.uint16), b_dev.view(np.uint16), np.int32(m), np.int32(n), np.int32(k),
         np.int32(1), np.int64(k), np.int64(1), np.int64(n), np.int64(1), np.int64(n), np.int64(1), np.int64(0),
         np.int64(0), np.int64(0), np.float32(1.0), np.float32(0.0)))
    portable = host(rt, c)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64) + \
        8 * np.finfo(np.float32).eps * math.sqrt(k) * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    for got in (instructions, portable):
        assert np.all(np.abs(got.astype(np.float64) - exact) <= bound)
