"""The CUDA kernels of kernels/*.cu, run on the CPU by the emulator tests/cuda_emu/cuda_emu.h, against
minigrad.backend.numpy_ref. No GPU needed: this runs in CI.

How (tests/cuda_emu_support.py; the `emu` fixture is in conftest.py): the .cu sources are compiled by g++
(C++20) after the emulation header, which gives them CUDA's
execution model on the CPU (one fiber per CUDA thread, blocks one at a time, real barriers and warp
shuffles), each file inside its own namespace with its own copy of the shared helpers of
kernels/common.cuh (which it includes), and exposed through a C ABI (tests/cuda_emu/driver.cpp) loaded with ctypes. Kernels are
launched as CuPy's RawKernel would launch them: by name, with a grid, a block and typed arguments
(numpy arrays for pointers, numpy scalars for values); the argument types are checked against the
kernel's C signature.

Every launch is checked four ways besides the comparison with the reference:
  * it runs twice, under two thread schedules (warps, and lanes within a warp, in descending and then
    ascending order, each warp running ahead up to the next __syncthreads); the results must be bitwise
    identical. A missing barrier shows up as a difference, and since the kernels are deterministic by
    design, any difference is a bug;
  * every array lives in a buffer with guard bytes on both sides, which must be intact afterwards (no
    out-of-bounds write); they are finite in the first run (so that an out-of-bounds `+=` changes them) and
    0xff in the second (nan for floats, -1 for ints), so an out-of-bounds read makes the runs differ;
  * the library is built with UndefinedBehaviorSanitizer where g++ has it: an out-of-bounds index into
    a __shared__ array (a static array in the emulation), a signed overflow, ... fails the launch;
  * the emulator itself rejects deadlocks, shuffles with exited lanes, oversized blocks and grids
    (test_emulator_* check that it does, and that its shuffles follow CUDA's definitions).

Tolerances (float32, DESIGN.md): atol + 8 eps sqrt(n) |scale|, scale the magnitude of what the element
is computed from (n the length of the reduction, 1 for elementwise kernels); nan and inf positions must
match the reference exactly.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from minigrad.backend import numpy_ref
from attention_support import attention_error_scales  # tests/ is on sys.path under pytest
from softmax_support import softmax_error_scale
ATOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
SUFFIX = {np.float32: "f32", np.float64: "f64"}
REDUCTION_SIZES = [1, 33, 1600, 4099]


# ---- comparing with the reference -----------------------------------------------------------------------


def assert_close(what, got, ref, scale=None, n=1):
    """got == ref up to atol + 8 eps sqrt(n) scale (scale defaults to |ref|); nan and inf exactly."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    dtype = ref.dtype.type
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: nan positions differ")
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf], err_msg=f"{what}: infinities differ")
    if ref.size == 0:
        return
    scale = np.abs(ref.astype(np.float64)) if scale is None else np.asarray(scale, dtype=np.float64)
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(n) * scale
    finite = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        excess = np.where(finite, np.abs(got.astype(np.float64) - ref) - tol, 0)
    assert not np.any(np.isnan(excess)), f"{what}: nan where the reference is finite"
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    assert np.all(excess <= 0), (f"{what} {ref.shape}: element {worst} is {got[worst]!r}, reference "
                                 f"{ref[worst]!r}, tolerance {np.broadcast_to(tol, ref.shape)[worst]:.3g}")


def uniform(shape, dtype, seed, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, shape).astype(dtype)


def i32(v):
    return np.int32(v)


def i64(v):
    return np.int64(v)


# ---- softmax.cu -----------------------------------------------------------------------------------------

SOFTMAX_OPS = ["softmax_forward", "log_softmax_forward", "softmax_backward", "log_softmax_backward"]


def softmax_launch(variant, rows):
    """Launch shapes as a wrapper would pick them, kept small (and grids short of the rows, so that the
    grid-stride loops run): warp: 2 warps per block; block: 128 threads per row."""
    if variant == "warp":
        return max(1, min(2, (rows + 1) // 2)), 64
    return max(1, min(2, rows)), 128


def run_softmax(emu, op, variant, x, dout=None):
    rows, n = x.shape
    dtype = x.dtype.type
    grid, block = softmax_launch(variant, rows)
    name = f"{op.replace('_forward', '_forward_' + variant).replace('_backward', '_backward_' + variant)}" \
           f"_{SUFFIX[dtype]}"
    if op.endswith("forward"):
        args = (x,)
        out = emu.empty(x.shape, dtype)
        emu.launch(name, grid, block, out, emu.array(x), i64(rows), i32(n))
    else:
        y = getattr(numpy_ref, op.replace("backward", "forward"))(x, 1)
        args = (dout, y)
        out = emu.empty(x.shape, dtype)
        emu.launch(name, grid, block, out, emu.array(dout), emu.array(y), i64(rows), i32(n))
    ref = getattr(numpy_ref, op)(*args, 1)
    assert_close(name, out, ref, softmax_error_scale(op, args, ref, 1), n)
    return out


@pytest.mark.parametrize("n", REDUCTION_SIZES)
@pytest.mark.parametrize("variant", ["warp", "block"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", SOFTMAX_OPS)
def test_softmax_matches_reference(emu, op, dtype, variant, n):
    rows = 3 if n > 1000 else 5
    x = uniform((rows, n), dtype, seed=n, scale=10)
    run_softmax(emu, op, variant, x, uniform((rows, n), dtype, seed=n + 1))


@pytest.mark.parametrize("variant", ["warp", "block"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["softmax_forward", "log_softmax_forward"])
def test_softmax_large_values_and_ties(emu, op, dtype, variant):
    """Values up to +-1e4 (exp overflows past 88 in float32): only the max shift keeps this finite."""
    x = uniform((4, 1600), dtype, seed=7, scale=1e4)
    x[:, 3] = x[:, 1500] = 1e4
    x[2, :] = -1e4
    out = run_softmax(emu, op, variant, x)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("n", [1, 33, 1600])
@pytest.mark.parametrize("variant", ["warp", "block"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["softmax_forward", "log_softmax_forward"])
def test_softmax_infinities_and_nans(emu, op, dtype, variant, n):
    """-inf gets probability 0; an all -inf row gives nan (as numpy_ref and PyTorch); +inf or nan anywhere
    in a row makes it all nan."""
    x = uniform((6, n), dtype, seed=3, scale=5)
    x[0, n // 2] = -np.inf
    x[1, :] = -np.inf
    x[2, -1] = np.inf
    x[3, 0] = np.nan
    x[4, ::2] = -np.inf
    out = run_softmax(emu, op, variant, x)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all() and np.isnan(out[3]).all()
    if op == "softmax_forward" and n > 1:
        assert out[0, n // 2] == 0 and np.isfinite(out[5]).all()


# ---- layernorm.cu ---------------------------------------------------------------------------------------


def layernorm_forward(emu, x, weight, bias, eps, warps=2, grid=2):
    rows, d = x.shape
    dtype = x.dtype.type
    out, mean, rstd = emu.empty(x.shape, dtype), emu.empty((rows,), dtype), emu.empty((rows,), dtype)
    emu.launch(f"layernorm_forward_{SUFFIX[dtype]}", grid, 32 * warps, out, mean, rstd, emu.array(x),
               None if weight is None else emu.array(weight), None if bias is None else emu.array(bias),
               i64(rows), i32(d), dtype(eps))
    return out, mean, rstd


def layernorm_backward(emu, dout, x, weight, mean, rstd, rows_per_chunk, block_y=4, grid_y=2):
    """dx, then dweight/dbias in the two deterministic passes (partial sums per chunk of rows, then over
    the chunks), as a wrapper would chain them."""
    rows, d = x.shape
    dtype = x.dtype.type
    sfx = SUFFIX[dtype]
    dev = {name: emu.array(a) for name, a in (("dout", dout), ("x", x), ("mean", mean), ("rstd", rstd))}
    w = None if weight is None else emu.array(weight)
    dx = emu.empty(x.shape, dtype)
    emu.launch(f"layernorm_backward_dx_{sfx}", 2, 64, dx, dev["dout"], dev["x"], w, dev["mean"], dev["rstd"],
               i64(rows), i32(d))
    nchunks = -(-rows // rows_per_chunk)
    part_dw, part_db = emu.empty((nchunks, d), dtype), emu.empty((nchunks, d), dtype)
    emu.launch(f"layernorm_backward_dparams_partial_{sfx}", (min(2, -(-d // 32)), min(grid_y, nchunks)),
               (32, block_y), part_dw, part_db, dev["dout"], dev["x"], dev["mean"], dev["rstd"], i64(rows),
               i32(d), i64(rows_per_chunk))
    dweight = None if weight is None else emu.empty((d,), dtype)
    dbias = emu.empty((d,), dtype)
    emu.launch(f"layernorm_backward_dparams_finalize_{sfx}", 2, 64, dweight, dbias, part_dw, part_db,
               i64(nchunks), i32(d))
    return dx, dweight, dbias


@pytest.mark.parametrize("d", REDUCTION_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_layernorm_matches_reference(emu, affine, dtype, d):
    rows = 3 if d > 1000 else 7
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((rows, d)) * 3 + 5).astype(dtype)  # an offset: centering matters
    weight = (1 + 0.5 * rng.standard_normal(d)).astype(dtype) if affine != "none" else None
    bias = (0.5 * rng.standard_normal(d)).astype(dtype) if affine == "weight+bias" else None
    eps = 1e-5
    out, mean, rstd = layernorm_forward(emu, x, weight, bias, eps)
    ref_out, ref_mean, ref_rstd = numpy_ref.layer_norm_forward(x, weight, bias, eps)
    xhat_scale = np.abs(x - ref_mean[:, None]) * ref_rstd[:, None]
    w_abs = 1 if weight is None else np.abs(weight)
    assert_close("layernorm mean", mean, ref_mean, np.mean(np.abs(x), axis=1), d)
    assert_close("layernorm rstd", rstd, ref_rstd, ref_rstd, d)
    assert_close("layernorm out", out, ref_out, (xhat_scale + 1) * w_abs + (0 if bias is None else np.abs(bias)), d)

    dout = rng.standard_normal((rows, d)).astype(dtype)
    dx, dweight, dbias = layernorm_backward(emu, dout, x, weight, ref_mean, ref_rstd, rows_per_chunk=2)
    ref_dx, ref_dw, ref_db = numpy_ref.layer_norm_backward(dout, x, weight, ref_mean, ref_rstd)
    g_abs = np.abs(dout) * w_abs
    dx_scale = ref_rstd[:, None] * (g_abs + np.mean(g_abs, axis=1, keepdims=True) * (1 + xhat_scale * (1 + xhat_scale)))
    assert_close("layernorm dx", dx, ref_dx, dx_scale, d)
    assert_close("layernorm dbias", dbias, ref_db, np.sum(np.abs(dout), axis=0), rows)
    if weight is None:
        assert dweight is None
    else:
        assert_close("layernorm dweight", dweight, ref_dw, np.sum(np.abs(dout) * xhat_scale, axis=0), rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_dparams_do_not_depend_on_the_launch(emu, dtype):
    """The chunked two-pass sums are deterministic, and chunking changes only the rounding."""
    rng = np.random.default_rng(5)
    rows, d = 37, 70
    x, dout = rng.standard_normal((rows, d)).astype(dtype), rng.standard_normal((rows, d)).astype(dtype)
    weight = rng.standard_normal(d).astype(dtype)
    _, mean, rstd = numpy_ref.layer_norm_forward(x, weight, None, 1e-5)
    runs = [layernorm_backward(emu, dout, x, weight, mean, rstd, rpc, by, gy)
            for rpc, by, gy in [(37, 32, 1), (5, 1, 8), (8, 8, 3), (1, 4, 2)]]
    _, ref_dw, ref_db = numpy_ref.layer_norm_backward(dout, x, weight, mean, rstd)
    for _, dw, db in runs:
        assert_close("dweight", dw, ref_dw, np.sum(np.abs(dout * x), axis=0) * rstd.max(), rows)
        assert_close("dbias", db, ref_db, np.sum(np.abs(dout), axis=0), rows)
    again = layernorm_backward(emu, dout, x, weight, mean, rstd, 5, 1, 8)
    assert again[1].tobytes() == runs[1][1].tobytes() and again[2].tobytes() == runs[1][2].tobytes()


# ---- reduce.cu -----------------------------------------------------------------------------------------


def reduce_dim(emu, op, x, axis, chunk=None, block=128, block_y=4):
    """op(x, axis) with the reduce kernels: the (outer, n, inner) view; with `chunk`, two launches
    (partials per chunk, then their reduction)."""
    dtype = x.dtype.type
    shape = x.shape
    outer, n, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    chunk = n if chunk is None else chunk
    nchunks = -(-n // chunk)
    xd = emu.array(np.ascontiguousarray(x))
    part = emu.empty((outer, nchunks, inner), dtype)
    if inner == 1:
        emu.launch(f"reduce_{op}_lastdim_{SUFFIX[dtype]}", (min(outer, 3), min(nchunks, 2)), block, part, xd,
                   i64(outer), i64(n), i64(chunk))
    else:
        emu.launch(f"reduce_{op}_strided_{SUFFIX[dtype]}", (min(2, -(-inner // 32)), min(outer, 3), min(nchunks, 2)),
                   (32, block_y), part, xd, i64(outer), i64(n), i64(inner), i64(chunk))
    if nchunks > 1:
        return reduce_dim(emu, op, part, 1, block=block, block_y=block_y).reshape(shape[:axis] + shape[axis + 1:])
    return part.reshape(shape[:axis] + shape[axis + 1:])


@pytest.mark.parametrize("n", REDUCTION_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("layout", ["lastdim", "middle", "first"])
def test_reduce_matches_reference(emu, layout, op, dtype, n):
    shape, axis = {"lastdim": ((3, n), 1), "middle": ((2, n, 35), 1), "first": ((n, 33), 0)}[layout]
    if n > 1000 and layout != "lastdim":
        shape = (1, n, 5) if layout == "middle" else (n, 3)
    x = uniform(shape, dtype, seed=n, scale=10)
    ref = getattr(numpy_ref, op)(x, axis, False)
    for chunk in (None, 500):  # one pass, and two (partials per chunk of 500)
        got = reduce_dim(emu, op, x, axis, chunk)
        if op == "sum":
            assert_close(f"{op} {layout} chunk {chunk}", got, ref, np.sum(np.abs(x), axis=axis), n)
        else:
            assert got.tobytes() == ref.tobytes(), f"{op} {layout}: {got} != {ref}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["max", "min", "sum"])
@pytest.mark.parametrize("layout", ["lastdim", "first"])
def test_reduce_special_values(emu, layout, op, dtype):
    """nan wins in max/min (as numpy); inf and -inf rows; single elements."""
    x = uniform((6, 40), dtype, seed=9, scale=3)
    x[0, 5] = np.nan
    x[1, :] = -np.inf
    x[2, 7] = np.inf
    x[3, 39] = np.nan
    x[4, ::3] = -np.inf
    if layout == "first":
        x = np.ascontiguousarray(x.T)
    axis = 1 if layout == "lastdim" else 0
    got = reduce_dim(emu, op, x, axis)
    ref = getattr(numpy_ref, op)(x, axis, False)
    assert_close(f"{op} {layout}", got, ref, np.nansum(np.abs(np.where(np.isinf(x), 0, x)), axis=axis), 40)


# ---- elementwise.cu -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 33), (5, 160)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gelu_matches_reference(emu, dtype, approximate, with_bias, shape):
    rows, d = shape
    rng = np.random.default_rng(rows * d)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.flat[0] = 0.0
    if x.size > 4:
        x.flat[1:5] = [-12.0, 12.0, -4.0, 40.0]  # the tails: erf/tanh saturate
    bias = (rng.standard_normal(d)).astype(dtype) if with_bias else None
    dout = rng.standard_normal(shape).astype(dtype)
    sfx, appr = SUFFIX[dtype], i32(approximate == "tanh")
    b = None if bias is None else emu.array(bias)
    grid = (min(2, -(-d // 32)), min(rows, 2))
    out = emu.empty(shape, dtype)
    emu.launch(f"bias_gelu_forward_{sfx}", grid, 32, out, emu.array(x), b, i64(rows), i32(d), appr)
    ref = numpy_ref.bias_gelu_forward(x, bias, approximate)
    v = np.abs(x if bias is None else x + bias).astype(np.float64)
    assert_close("bias_gelu_forward", out, ref, 4 * v)
    dx = emu.empty(shape, dtype)
    emu.launch(f"bias_gelu_backward_{sfx}", grid, 32, dx, emu.array(dout), emu.array(x), b, i64(rows), i32(d), appr)
    ref_dx, ref_db = numpy_ref.bias_gelu_backward(dout, x, bias, approximate)
    assert_close("bias_gelu_backward dx", dx, ref_dx, 4 * np.abs(dout) * (1 + v * v))
    if bias is not None:  # dbias: reduce_sum_strided of reduce.cu over the rows of dx
        db = reduce_dim(emu, "sum", np.array(dx), 0)
        assert_close("bias_gelu_backward dbias", db, ref_db, np.sum(np.abs(dx), axis=0), rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_residual_matches_reference(emu, dtype):
    rows, d = 5, 33
    x, res, bias = uniform((rows, d), dtype, 1), uniform((rows, d), dtype, 2), uniform((d,), dtype, 3)
    out = emu.empty((rows, d), dtype)
    emu.launch(f"bias_residual_forward_{SUFFIX[dtype]}", (1, 2), 64, out, emu.array(x), emu.array(bias),
               emu.array(res), i64(rows), i32(d))
    assert out.tobytes() == numpy_ref.bias_residual_forward(x, bias, res).tobytes()


# Philox4x32-10 known-answer vectors (Random123's kat_vectors: counter, key -> output)
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, expected", PHILOX_KAT)
def test_philox_known_answers(emu, ctr, key, expected):
    out = (ctypes.c_uint * 4)()
    emu.lib.emu_philox4x32_10((ctypes.c_uint * 4)(*ctr), (ctypes.c_uint * 2)(*key), out)
    assert tuple(out) == expected, [hex(v) for v in out]


def philox_uniforms(numel, seed, offset):
    """The dropout kernel's uniforms, from the known-answer-tested emu_philox4x32_10 (see elementwise.cu)."""
    words = []
    for g in range(-(-numel // 4)):
        out = (ctypes.c_uint * 4)()
        ctr = (ctypes.c_uint * 4)(g & 0xFFFFFFFF, g >> 32, offset & 0xFFFFFFFF, offset >> 32)
        key = (ctypes.c_uint * 2)(seed & 0xFFFFFFFF, seed >> 32)
        _EMU_LIB[0].emu_philox4x32_10(ctr, key, out)
        words += list(out)
    return (np.array(words[:numel], dtype=np.uint64) >> 8).astype(np.float32) * np.float32(2.0 ** -24)


_EMU_LIB = []


def dropout(emu, x, p, seed, offset, grid=3, block=32):
    dtype = x.dtype.type
    scale = 0.0 if p == 1 else 1 / (1 - p)  # numpy_ref._dropout_scale
    out, mask = emu.empty(x.shape, dtype), emu.empty(x.shape, np.uint8)
    emu.launch(f"dropout_forward_{SUFFIX[dtype]}", grid, block, out, mask, emu.array(x), i64(x.size),
               np.float32(p), dtype(scale), np.uint64(seed), np.uint64(offset))
    return np.array(out), np.array(mask).astype(bool)


@pytest.mark.parametrize("numel", [1, 33, 1601])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_forward_backward(emu, dtype, p, numel):
    _EMU_LIB[:] = [emu.lib]
    x = uniform((numel,), dtype, seed=numel, scale=3)
    x[0] = np.inf  # inf * 0 = nan where dropped, as numpy_ref
    seed, offset = 0x1234_5678_9ABC_DEF0, 7
    out, mask = dropout(emu, x, p, seed, offset)
    # the mask is Philox's: u >= p, element by element
    np.testing.assert_array_equal(mask, philox_uniforms(numel, seed, offset) >= np.float32(p))
    scale = 0.0 if p == 1 else 1 / (1 - p)
    with np.errstate(invalid="ignore"):
        ref = x * mask * dtype(scale)  # numpy_ref.dropout_forward's expression, with this mask
    assert_close("dropout_forward", out, ref)
    if p == 0:
        assert mask.all()
    if p == 1:
        assert not mask.any()
    dout = uniform((numel,), dtype, seed=numel + 1)
    dx = emu.empty((numel,), dtype)
    emu.launch(f"dropout_backward_{SUFFIX[dtype]}", 2, 64, dx, emu.array(dout), emu.array(mask, np.uint8),
               i64(numel), dtype(scale))
    assert dx.tobytes() == numpy_ref.dropout_backward(dout, mask, p).astype(dtype).tobytes()


@pytest.mark.parametrize("k", [0, 5, 32])
def test_dropout_keeps_u_equal_to_p(emu, k):
    """keep = u >= p, as numpy_ref (rand >= p): p set to the k-th uniform of the stream keeps that element."""
    _EMU_LIB[:] = [emu.lib]
    u = philox_uniforms(33, 99, 3)
    p = float(u[k])
    mask = dropout(emu, np.ones(33, np.float32), p, 99, 3)[1]
    assert mask[k]
    np.testing.assert_array_equal(mask, u >= np.float32(p))


def test_dropout_mask_is_reproducible_and_independent_of_the_launch(emu):
    _EMU_LIB[:] = [emu.lib]
    x = np.ones(4099, dtype=np.float32)
    a = dropout(emu, x, 0.3, 42, 0, grid=1, block=32)[1]
    b = dropout(emu, x, 0.3, 42, 0, grid=5, block=96)[1]
    c = dropout(emu, x, 0.3, 42, 1)[1]  # another offset: another stream
    d = dropout(emu, x, 0.3, 43, 0)[1]  # another seed
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3 and (a != d).mean() > 0.3  # independent masks differ in ~42% of places
    assert abs(a.mean() - 0.7) < 0.03  # keep rate 1 - p (4099 draws: sd 0.007)
    e = dropout(emu, np.ones(4099, dtype=np.float64), 0.3, 42, 0)[1]
    np.testing.assert_array_equal(a, e)  # the mask does not depend on the dtype


# ---- cross_entropy.cu ---------------------------------------------------------------------------------


def cross_entropy(emu, logits, targets, ignore_index, ls, block=64, grid=2):
    n, c = logits.shape
    dtype = logits.dtype.type
    sfx = SUFFIX[dtype]
    losses, logprobs = emu.empty((n,), dtype), emu.empty((n, c), dtype)
    t = emu.array(targets, np.int64)
    emu.launch(f"cross_entropy_forward_{sfx}", grid, block, losses, logprobs, emu.array(logits), t, i64(n), i32(c),
               i64(ignore_index), dtype(ls))
    return losses, logprobs


@pytest.mark.parametrize("c", REDUCTION_SIZES)
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_reference(emu, dtype, ls, c):
    n = 4 if c > 1000 else 6
    rng = np.random.default_rng(c)
    logits = (rng.standard_normal((n, c)) * 5).astype(dtype)
    logits[1] *= 2000  # values up to ~+-1e4
    targets = rng.integers(0, c, n)
    targets[2] = -100  # ignore_index
    losses, logprobs = cross_entropy(emu, logits, targets, -100, ls)
    ref_losses, ref_logprobs = numpy_ref.cross_entropy_forward(logits, targets, -100, ls)
    scale_lp = np.abs(logits) + np.abs(ref_logprobs)
    assert_close("cross_entropy logprobs", logprobs, ref_logprobs, scale_lp, c)
    assert_close("cross_entropy losses", losses, ref_losses, np.max(scale_lp, axis=1), c)
    assert losses[2] == 0

    dlosses = rng.standard_normal(n).astype(dtype)
    dlosses[2] = np.nan  # must not leak into the ignored row
    dlogits = emu.empty((n, c), dtype)
    emu.launch(f"cross_entropy_backward_{SUFFIX[dtype]}", 3, 64, dlogits, emu.array(dlosses), emu.array(ref_logprobs),
               emu.array(targets, np.int64), i64(n), i32(c), i64(-100), dtype(ls))
    ref_dlogits = numpy_ref.cross_entropy_backward(dlosses, ref_logprobs, targets, -100, ls)
    scale = 2 * np.abs(np.nan_to_num(dlosses))[:, None] * np.ones(c)
    assert_close("cross_entropy dlogits", dlogits, ref_dlogits, scale)
    assert np.all(dlogits[2] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_special_rows(emu, dtype):
    """An all -inf row gives nan (0 when ignored), every target ignored, a single class, and an ignore_index
    that is a valid class."""
    logits = uniform((5, 33), dtype, seed=1, scale=4)
    logits[0] = -np.inf
    logits[1] = -np.inf
    logits[3, 7] = -np.inf
    targets = np.array([3, 5, 5, 7, 0])
    for ignore_index in (5, -1):
        for ls in (0.0, 0.2):
            losses, logprobs = cross_entropy(emu, logits, targets, ignore_index, ls, block=32, grid=1)
            ref_losses, ref_logprobs = numpy_ref.cross_entropy_forward(logits, targets, ignore_index, ls)
            assert_close("logprobs", logprobs, ref_logprobs, np.abs(logits) + np.abs(ref_logprobs), 33)
            assert_close("losses", losses, ref_losses, 40 + np.abs(ref_losses), 33)
    one = uniform((3, 1), dtype, seed=2)
    losses, logprobs = cross_entropy(emu, one, np.array([0, 0, 0]), -100, 0.1, block=32)
    ref_losses, ref_logprobs = numpy_ref.cross_entropy_forward(one, np.array([0, 0, 0]), -100, 0.1)
    assert_close("one class", losses, ref_losses, np.ones(3))


# ---- embedding.cu -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v, d, n", [(1, 1, 1), (50, 33, 77), (70, 160, 300)])
@pytest.mark.parametrize("padding", [False, True])
def test_embedding_matches_reference(emu, padding, v, d, n, dtype):
    padding_idx = min(3, v - 1) if padding else None
    rng = np.random.default_rng(n)
    weight = rng.standard_normal((v, d)).astype(dtype)
    indices = rng.integers(0, v, n)
    indices[: n // 3] = indices[0]  # many repeats of one row
    if v > 3:
        indices[-5:] = 3  # and of the padding row
    sfx = SUFFIX[dtype]
    out = emu.empty((n, d), dtype)
    emu.launch(f"embedding_forward_{sfx}", (2, 3), 32, out, emu.array(weight), emu.array(indices, np.int64), i64(n),
               i32(d))
    assert out.tobytes() == numpy_ref.embedding_forward(weight, indices).tobytes()

    dout = rng.standard_normal((n, d)).astype(dtype)
    ref = numpy_ref.embedding_backward(dout, indices, v, padding_idx)
    results = []
    for grid, block in [((2, 1), 32), ((1, 2), 128), ((3, 3), 64)]:
        dweight = emu.empty((v, d), dtype)
        emu.launch(f"embedding_backward_{sfx}", grid, block, dweight, emu.array(dout), emu.array(indices, np.int64),
                   i64(n), i32(v), i32(d), i64(-1 if padding_idx is None else padding_idx), i32(0))
        results.append(np.array(dweight))
    # a sum in increasing index order, as np.add.at: the same bits, whatever the launch
    for r in results:
        assert r.tobytes() == ref.tobytes(), np.max(np.abs(r - ref))
    if padding_idx is None:  # accumulate: onto the table's own values, np.add.at(table, indices, dout) exactly
        table = rng.standard_normal((v, d)).astype(dtype) * 100
        expected = table.copy()
        np.add.at(expected, indices, dout)
        onto = emu.array(table)
        emu.launch(f"embedding_backward_{sfx}", (2, 2), 64, onto, emu.array(dout), emu.array(indices, np.int64),
                   i64(n), i32(v), i32(d), i64(-1), i32(1))
        assert np.array(onto).tobytes() == expected.tobytes()


# ---- scatter.cu -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, n", [(1, 1), (1, 33), (40, 33), (700, 1600), (5000, 4099)])
def test_scatter_add_sorted_is_np_add_at_to_the_bit(emu, size, n, dtype):
    """out[t] += v for repeated targets, in increasing original position: np.add.at's sums, whatever the launch."""
    rng = np.random.default_rng(size + n)
    targets = rng.integers(0, size, n)
    targets[: n // 4] = targets[0]  # one long segment, spread through the array once sorted
    targets[-3:] = size - 1  # and the last element
    values = (rng.standard_normal(n) * np.where(rng.random(n) < 0.1, 1e4, 1)).astype(dtype)
    out0 = rng.standard_normal(size).astype(dtype)
    ref = out0.copy()
    np.add.at(ref, targets, values)
    order = np.argsort(targets, kind="stable")
    for grid, block in [(1, 32), (3, 64), (64, 256)]:
        out = emu.array(out0)
        emu.launch(f"scatter_add_sorted_{SUFFIX[dtype]}", grid, block, out, emu.array(targets[order], np.int64),
                   emu.array(order, np.int64), emu.array(values), i64(n))
        assert np.array(out).tobytes() == ref.tobytes(), np.max(np.abs(np.array(out) - ref))


# ---- pool.cu ------------------------------------------------------------------------------------------------

POOL_CASES = [  # (x shape, kernel, stride, padding, dilation, ceil_mode)
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), False),
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1), False),  # overlapping windows
    ((1, 2, 8, 33), (2, 3), (2, 3), (1, 1), (1, 1), True),  # ceil_mode: a last window past the input
    ((1, 1, 11, 10), (3, 2), (2, 1), (1, 0), (2, 3), False),  # dilation (max only)
]


def _pool_args(x_shape, out_hw, kernel, stride, padding):
    n, c, h, w = x_shape
    return (i64(n * c), i32(h), i32(w), i32(out_hw[0]), i32(out_hw[1]), *map(i32, kernel), *map(i32, stride),
            *map(i32, padding))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", POOL_CASES)
def test_max_pool2d_forward_matches_reference(emu, shape, kernel, stride, padding, dilation, ceil_mode, dtype):
    """Window max and argmax: ties go to the first element, nan wins, an all -inf window points at its
    first real element: numpy_ref's values and indices exactly."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-3, 4, shape).astype(dtype)  # small integers: many ties
    if x.size > 20:
        x.reshape(-1)[[-5, -17]] = np.nan  # (in the last plane)
        x[0, 0, :2] = -np.inf  # whole windows of -inf at the top
    ref_out, ref_arg = numpy_ref.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    out, arg = emu.empty(ref_out.shape, dtype), emu.empty(ref_out.shape, np.int64)
    emu.launch(f"max_pool2d_forward_{SUFFIX[dtype]}", 3, 64, out, arg, emu.array(x),
               *_pool_args(shape, ref_out.shape[2:], kernel, stride, padding), *map(i32, dilation))
    np.testing.assert_array_equal(np.array(out), ref_out)  # (nan positions included)
    np.testing.assert_array_equal(np.array(arg), ref_arg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode",
                         [case for case in POOL_CASES if case[4] == (1, 1)])  # (average pooling has no dilation)
def test_avg_pool2d_matches_reference(emu, shape, kernel, stride, padding, dilation, ceil_mode, count_include_pad,
                                      dtype):
    x = uniform(shape, dtype, 1, scale=1e4)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    ref = numpy_ref.avg_pool2d_forward(x, *args)
    divisor = numpy_ref.avg_pool_divisor(shape[2:], kernel, stride, padding, ceil_mode, count_include_pad, x)
    geometry = _pool_args(shape, ref.shape[2:], kernel, stride, padding)
    out = emu.empty(ref.shape, dtype)
    emu.launch(f"avg_pool2d_forward_{SUFFIX[dtype]}", 2, 32, out, emu.array(x), emu.array(divisor), *geometry)
    window = kernel[0] * kernel[1]
    assert_close("avg_pool2d_forward", out, ref, scale=1e4, n=window)
    dout = uniform(ref.shape, dtype, 2, scale=1e4)
    ref_dx = numpy_ref.avg_pool2d_backward(dout, shape, *args)
    dx = emu.empty(shape, dtype)
    emu.launch(f"avg_pool2d_backward_{SUFFIX[dtype]}", 3, 64, dx, emu.array(dout), emu.array(divisor), *geometry)
    assert_close("avg_pool2d_backward", dx, ref_dx, scale=1e4, n=window)


# ---- adamw.cu ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled, weight_decay, amsgrad, maximize",
                         [(True, 0.01, False, False), (False, 0.1, False, False), (True, 0.0, True, False),
                          (True, 0.05, True, True)])
def test_adamw_matches_reference(emu, dtype, decoupled, weight_decay, amsgrad, maximize):
    n = 1601
    rng = np.random.default_rng(n)
    param = rng.standard_normal(n).astype(dtype)
    state = [np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype) if amsgrad else None]
    ref_param, ref_state = param.copy(), [None if s is None else s.copy() for s in state]
    dev = [emu.array(param)] + [None if s is None else emu.array(s) for s in state]
    lr, beta1, beta2, eps = 1e-3, 0.9, 0.999, 1e-8
    for step in range(1, 4):
        grad = rng.standard_normal(n).astype(dtype)
        grad[:3] = [0.0, 1e-30, -1e4]
        numpy_ref.adam_step_(ref_param, grad, *ref_state, step, lr, beta1, beta2, eps, weight_decay, decoupled,
                             amsgrad, maximize)
        bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
        emu.launch(f"adamw_step_{SUFFIX[dtype]}", 3, 128, dev[0], emu.array(grad), dev[1], dev[2], dev[3], i64(n),
                   dtype(beta1), dtype(1 - beta1), dtype(beta2), dtype(1 - beta2), dtype(weight_decay),
                   dtype(1 - lr * weight_decay), dtype(math.sqrt(bc2)), dtype(lr / bc1), dtype(eps), i32(decoupled),
                   i32(amsgrad), i32(maximize))
        assert_close(f"param after step {step}", dev[0], ref_param, np.abs(ref_param) + lr)
        assert_close(f"exp_avg after step {step}", dev[1], ref_state[0])
        assert_close(f"exp_avg_sq after step {step}", dev[2], ref_state[1])
        if amsgrad:
            assert_close(f"max_exp_avg_sq after step {step}", dev[3], ref_state[2])


# ---- gemm.cu -------------------------------------------------------------------------------------------


def strided(store, shape, strides):
    """The view of the contiguous `store` with this shape and these element strides (what a kernel given
    the strides reads)."""
    return np.lib.stride_tricks.as_strided(store, shape, [s * store.itemsize for s in strides], writeable=False)


def gemm_launch(emu, c, a, b, shape, a_strides, b_strides, c_strides, alpha=1.0, beta=0.0, grid=None, tile=64):
    """gemm_T (tile 64) or gemm128_T (tile 128) <<<grid, 256>>> on device arrays; shape (batch, M, N, K),
    strides (batch, row, column)."""
    batch, m, n, k = shape
    dtype = c.dtype.type
    if grid is None:
        grid = (max(1, -(-n // tile)), max(1, -(-m // tile)), max(1, batch))
    name = f"gemm{'128' if tile == 128 else ''}_{SUFFIX[dtype]}"
    emu.launch(name, grid, 256, c, a, b, i32(m), i32(n), i32(k), i32(batch), i64(a_strides[1]),
               i64(a_strides[2]), i64(b_strides[1]), i64(b_strides[2]), i64(c_strides[1]), i64(c_strides[2]),
               i64(a_strides[0]), i64(b_strides[0]), i64(c_strides[0]), dtype(alpha), dtype(beta))


def gemm(emu, a_store, a_strides, b_store, b_strides, shape, c_strides=None, c_init=None, alpha=1.0, beta=0.0,
         grid=None, tile=64, misalign=(0, 0, 0)):
    """C = alpha A·B + beta C on the emulator, A (batch, M, K) and B (batch, K, N) the views of their stores
    with element strides (batch, row, column); C (batch, M, N), contiguous unless c_strides (then its store
    is returned as it is laid out). misalign: the bytes past a 16-byte boundary where the device copies of
    A, B and C start. Returns (C as a (batch, M, N) view, the reference)."""
    batch, m, n, k = shape
    dtype = a_store.dtype.type
    c_strides = c_strides or (m * n, n, 1)
    c_size = max(1, (batch - 1) * c_strides[0] + (m - 1) * c_strides[1] + (n - 1) * c_strides[2] + 1) \
        if batch and m and n else 1
    c_host = np.full(c_size, np.nan, dtype) if c_init is None else c_init.astype(dtype)
    c = emu.array(c_host, misalign=misalign[2])
    c_before = np.array(c)
    gemm_launch(emu, c, emu.array(a_store, misalign=misalign[0]), emu.array(b_store, misalign=misalign[1]), shape,
                a_strides, b_strides, c_strides, alpha, beta, grid, tile)
    a = strided(a_store, (batch, m, k), a_strides)
    b = strided(b_store, (batch, k, n), b_strides)
    got = strided(np.asarray(c), (batch, m, n), c_strides)
    ref = numpy_ref.matmul(a, b)
    scale = np.abs(alpha) * numpy_ref.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    if beta != 0:
        c0 = strided(c_before, (batch, m, n), c_strides)
        ref = (dtype(alpha) * ref + dtype(beta) * c0).astype(dtype)
        scale = scale + np.abs(beta * c0)
    elif alpha != 1:
        ref = (dtype(alpha) * ref).astype(dtype)
    assert_close(f"gemm {shape}", got, ref, scale, max(k, 1))
    outside = np.ones(c.size, bool)  # the elements of C's store that are not in the view: never written
    outside[strided(np.arange(c.size), (batch, m, n), c_strides).ravel()] = False
    assert np.array(c)[outside].tobytes() == c_before[outside].tobytes(), f"gemm {shape} wrote outside C's view"
    return got, ref


GEMM_SHAPES = [(1, 1, 1), (7, 33, 5), (33, 17, 65), (64, 64, 64), (70, 1, 3), (1, 130, 17), (3, 4, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", GEMM_SHAPES)
def test_gemm_matches_reference(emu, dtype, m, n, k):
    """Row-major operands, one batch element; every tile boundary case (partial tiles in M, N and K)."""
    a, b = uniform((m, k), dtype, seed=m * 100 + k), uniform((k, n), dtype, seed=n * 100 + k + 1)
    gemm(emu, a, (0, k, 1), b, (0, n, 1), (1, m, n, k))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, n, k", [(7, 33, 5), (33, 17, 65), (70, 66, 18)])
def test_gemm_transposed_operands(emu, dtype, ta, tb, m, n, k):
    """Aᵀ·B and A·Bᵀ of a backward pass, read through the strides of the stored (K, M) / (N, K) arrays
    without a copy; C written transposed too (column-major) when both are."""
    a_store = uniform((k, m) if ta else (m, k), dtype, seed=1)
    b_store = uniform((n, k) if tb else (k, n), dtype, seed=2)
    a_strides = (0, 1, m) if ta else (0, k, 1)
    b_strides = (0, 1, k) if tb else (0, n, 1)
    c_strides = (0, 1, m) if ta and tb else None
    gemm(emu, a_store, a_strides, b_store, b_strides, (1, m, n, k), c_strides)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("broadcast", ["a", "b"])
@pytest.mark.parametrize("tile, m, n, k, pad", [(64, 33, 70, 17, 0), (128, 130, 36, 20, 0), (128, 130, 36, 20, 1)])
def test_gemm_batched_with_a_broadcast_operand(emu, dtype, broadcast, tile, m, n, k, pad):
    """A batch of 3 over gridDim.z, one operand shared (batch stride 0); also a grid short of the tiles and
    of the batch (the grid-stride loops), which must give the same bits. (130, 36, 20): batch strides that
    keep every batch element 16-byte aligned, so the 128-bit loads apply; pad 1: the batched operand's
    batch stride one element longer, which misaligns every other batch element: scalar loads."""
    batch = 3
    a_store = uniform(m * k if broadcast == "a" else batch * (m * k + pad), dtype, seed=3)
    b_store = uniform(k * n if broadcast == "b" else batch * (k * n + pad), dtype, seed=4)
    a_strides = (0 if broadcast == "a" else m * k + pad, k, 1)
    b_strides = (0 if broadcast == "b" else k * n + pad, n, 1)
    full, _ = gemm(emu, a_store, a_strides, b_store, b_strides, (batch, m, n, k), tile=tile)
    short, _ = gemm(emu, a_store, a_strides, b_store, b_strides, (batch, m, n, k), grid=(1, 1, 2), tile=tile)
    assert np.array(full).tobytes() == np.array(short).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, beta", [(2.0, 0.5), (-1.0, 1.0)])
@pytest.mark.parametrize("tile", [64, 128])
def test_gemm_alpha_beta(emu, dtype, alpha, beta, tile):
    """C = alpha A·B + beta C (accumulating into a gradient); with K == 0 too; (130, 132, 12): C read and
    written with 128-bit accesses (row stride a multiple of 4), except in the ragged last columns."""
    for m, n, k in [(9, 70, 20), (5, 6, 0), (130, 134, 12)]:
        a, b = uniform((m, k), dtype, seed=5), uniform((k, n), dtype, seed=6)
        c0 = uniform((m * n,), dtype, seed=7, scale=3)
        gemm(emu, a, (0, k, 1), b, (0, n, 1), (1, m, n, k), c_init=c0, alpha=alpha, beta=beta, tile=tile)


# ---- gemm.cu: the 128 x 128 kernel, and the vector and scalar paths of both sizes ----------------------------
# gemm128_T on M, N around multiples of 128 and K around multiples of its slab depth (8); then both sizes
# on layouts whose strides allow 128-bit loads and stores (every stride a multiple of 4 elements, the base
# 16-byte aligned), layouts that force the scalar loader (odd leading dimensions, a base one element past
# a 16-byte boundary, as a view x[1:] has), and padded leading dimensions, where the chunks of 4 that
# straddle M, N or K fall back to scalar loads next to vector loads. A vector access on a misaligned
# address is reported by UBSan, and then crashes the test process (g++ compiles the 16-byte-aligned copies
# to x86's aligned 128-bit moves, which fault), as the GPU's misaligned-address error would end the
# program; a vector load of a chunk that straddles the end reads the guard bytes or the next row (a wrong
# result).

GEMM128_SHAPES = [(128, 128, 8), (127, 129, 33), (129, 70, 17), (130, 128, 9), (256, 1, 3), (1, 1, 1), (3, 4, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", GEMM128_SHAPES)
def test_gemm128_matches_reference(emu, dtype, m, n, k):
    """Row-major operands, one batch element, partial 128 x 128 tiles and partial slabs."""
    a, b = uniform((m, k), dtype, seed=m * 100 + k), uniform((k, n), dtype, seed=n * 100 + k + 1)
    gemm(emu, a, (0, k, 1), b, (0, n, 1), (1, m, n, k), tile=128)


@pytest.mark.parametrize("tile", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, n, k, pad", [(132, 136, 24, 0), (130, 129, 21, 0), (66, 70, 22, 2)])
def test_gemm_vector_and_scalar_loads(emu, tile, dtype, ta, tb, m, n, k, pad):
    """All four transpose combinations (C column-major when both are), leading dimensions padded by `pad`:
    (132, 136, 24) all vector loads and stores; (130, 129, 21) all scalar (odd leading dimensions);
    (66, 70, 22) + 2 vector loads (leading dimensions 24, 68, 72) but the chunks at k = 20, row 64 and
    column 68 straddle K, M and N (float64's 2-element vectors also take the leading dimension 70)."""
    a_store = uniform((k, m + pad) if ta else (m, k + pad), dtype, seed=8)
    b_store = uniform((n, k + pad) if tb else (k, n + pad), dtype, seed=9)
    a_strides = (0, 1, m + pad) if ta else (0, k + pad, 1)
    b_strides = (0, 1, k + pad) if tb else (0, n + pad, 1)
    c_strides = (0, 1, m + pad) if ta and tb else (0, n + pad, 1)
    gemm(emu, a_store, a_strides, b_store, b_strides, (1, m, n, k), c_strides, tile=tile)


@pytest.mark.parametrize("tile", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("operand", ["a", "b", "c"])
def test_gemm_misaligned_base_pointers(emu, tile, dtype, operand):
    """Strides that allow 128-bit accesses, but one operand starts one element past a 16-byte boundary: its
    loads (or C's loads and stores, beta != 0) must take the scalar path."""
    m, n, k = 132, 136, 24
    misalign = tuple(np.dtype(dtype).itemsize if name == operand else 0 for name in "abc")
    a, b = uniform((m, k), dtype, seed=10), uniform((k, n), dtype, seed=11)
    c0 = uniform((m * n,), dtype, seed=12)
    gemm(emu, a, (0, k, 1), b, (0, n, 1), (1, m, n, k), c_init=c0, beta=0.5, tile=tile, misalign=misalign)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (True, True)])
def test_gemm_tile_sizes_give_the_same_bits(emu, dtype, ta, tb):
    """gemm_T and gemm128_T sum every output in the same order (k increasing from 0 in one thread), so the
    wrapper's choice between them never changes a result."""
    m, n, k = 130, 129, 37
    a_store = uniform((k, m) if ta else (m, k), dtype, seed=13)
    b_store = uniform((n, k) if tb else (k, n), dtype, seed=14)
    a_strides = (0, 1, m) if ta else (0, k, 1)
    b_strides = (0, 1, k) if tb else (0, n, 1)
    small, _ = gemm(emu, a_store, a_strides, b_store, b_strides, (1, m, n, k), tile=64)
    large, _ = gemm(emu, a_store, a_strides, b_store, b_strides, (1, m, n, k), tile=128)
    assert np.array(small).tobytes() == np.array(large).tobytes()


# ---- gemm_tc.cu ----------------------------------------------------------------------------------------
# 16-bit arrays are uint16 arrays of raw bits: numpy's float16 viewed as uint16, or bfloat16 bits (the
# upper half of a float32). The oracle: numpy_ref.matmul of the inputs converted to float32 (exact), in
# float32, rounded to the 16-bit type. The kernel accumulates in float32 in another order, so the two
# float32 results differ by at most 8 eps32 sqrt(K) sum|a||b| (DESIGN.md's bound), and their roundings by
# that plus one ulp of the 16-bit type.

HALF_FORMATS = ["f16", "bf16"]
HALF_PRECISION = {"f16": (11, -14), "bf16": (8, -126)}  # significant bits, exponent of the smallest normal


def to_half(x, fmt):
    """float32 -> 16-bit bits, rounded to nearest even: numpy's astype(float16), or for bfloat16 the
    float32 bits rounded to their upper half (nan: sign and upper payload kept, quiet bit set)."""
    x = np.asarray(x, np.float32)
    if fmt == "f16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).view(np.uint16)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), ((u >> 16) | 0x40).astype(np.uint16), rounded)


def from_half(bits, fmt):
    """16-bit bits -> float32 (exact)."""
    bits = np.asarray(bits, np.uint16)
    if fmt == "f16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def half_ulp(v, fmt):
    """The spacing of the 16-bit format at magnitude v (float64)."""
    bits, min_exp = HALF_PRECISION[fmt]
    v = np.abs(np.asarray(v, np.float64))
    with np.errstate(divide="ignore"):
        e = np.maximum(np.floor(np.log2(np.where(np.isfinite(v), v, 1.0))), min_exp)
    return np.ldexp(1.0, (e - (bits - 1)).astype(np.int64))


def assert_half_close(what, got_bits, ref32, scale, k, fmt):
    """got (16-bit) == round(ref32) up to one ulp plus the float32 accumulation bound; nan and inf exactly."""
    got, ref = from_half(got_bits, fmt), from_half(to_half(ref32, fmt), fmt)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: nan positions differ")
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf], err_msg=f"{what}: infinities differ")
    if ref.size == 0:
        return
    finite = np.isfinite(ref)
    tol = half_ulp(np.maximum(np.abs(got), np.abs(ref)), fmt) + \
        8 * np.finfo(np.float32).eps * math.sqrt(max(k, 1)) * np.asarray(scale, np.float64)
    with np.errstate(invalid="ignore"):
        excess = np.where(finite, np.abs(got.astype(np.float64) - ref) - tol, 0)
    assert not np.any(np.isnan(excess)), f"{what}: nan or inf where the reference is finite"
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert np.all(excess <= 0), (f"{what} {ref.shape}: element {worst} is {got[worst]!r}, reference "
                                 f"{ref[worst]!r}, tolerance {np.broadcast_to(tol, ref.shape)[worst]:.3g}")


def half_operand(rng, rows, cols, layout, batch=1, scale=1.0):
    """A (batch, rows, cols) float32 matrix of 16-bit values, in a flat store with its element strides
    (batch, row, column). layout: "fast": contiguous rows, padded to a multiple of 8 elements (the
    kernel's cp.async path); "generic": rows padded to 8 k + 3 elements (not 16-byte aligned: the element
    loader); "T" / "T-generic": the same for the transposed storage (columns contiguous); "strided":
    neither stride is 1. Padding holds nan, so that a read past the matrix shows."""
    transposed = layout.startswith("T")
    srows, scols = (cols, rows) if transposed else (rows, cols)
    step = 2 if layout == "strided" else 1
    ld = max(8, -(-scols * step // 8) * 8) + (0 if layout in ("fast", "T") else 3)
    store = np.full((batch, srows, ld), np.nan, np.float32)
    store[:, :, :scols * step:step] = rng.uniform(-scale, scale, (batch, srows, scols))
    strides = (srows * ld, 1, ld) if transposed else (srows * ld, ld, step)
    return store.reshape(-1), strides


def gemm_tc(emu, fmt, a_store, a_strides, b_store, b_strides, shape, c_strides=None, c_init=None, alpha=1.0,
            beta=0.0, grid=None):
    """gemm_tc_<fmt> on the emulator, as gemm() above: float32 stores (rounded to the format here), element
    strides (batch, row, column), C contiguous unless c_strides; checked against the reference. Returns C's
    bits as a (batch, M, N) view."""
    batch, m, n, k = shape
    a_bits, b_bits = to_half(a_store, fmt), to_half(b_store, fmt)
    c_strides = c_strides or (m * n, n, 1)
    c_size = max(1, (batch - 1) * c_strides[0] + (m - 1) * c_strides[1] + (n - 1) * c_strides[2] + 1) \
        if batch and m and n else 1
    c = emu.empty((c_size,), np.uint16) if c_init is None else emu.array(to_half(c_init, fmt))
    c_before = from_half(np.array(c), fmt)
    if grid is None:
        grid = (max(1, -(-n // 128)), max(1, -(-m // 128)), max(1, batch))
    emu.launch(f"gemm_tc_{fmt}", grid, 256, c, emu.array(a_bits), emu.array(b_bits), i32(m), i32(n), i32(k),
               i32(batch), i64(a_strides[1]), i64(a_strides[2]), i64(b_strides[1]), i64(b_strides[2]),
               i64(c_strides[1]), i64(c_strides[2]), i64(a_strides[0]), i64(b_strides[0]), i64(c_strides[0]),
               np.float32(alpha), np.float32(beta))
    a = strided(from_half(a_bits, fmt), (batch, m, k), a_strides)
    b = strided(from_half(b_bits, fmt), (batch, k, n), b_strides)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = np.float32(alpha) * numpy_ref.matmul(a, b)
        scale = abs(alpha) * numpy_ref.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
        if beta != 0:
            c0 = strided(c_before, (batch, m, n), c_strides)
            ref = ref + np.float32(beta) * c0
            scale = scale + np.abs(beta * c0.astype(np.float64))
    got = strided(np.asarray(c), (batch, m, n), c_strides)
    assert_half_close(f"gemm_tc_{fmt} {shape}", got, ref, scale, k, fmt)
    return got


def bf16_reference(x):
    """float32 -> bfloat16 bits by comparing distances in float64 with the two neighbours (ties to the even
    one), independent of the kernel's bit trick; nan as the kernel documents it."""
    u = x.view(np.uint32)
    down = u & np.uint32(0xFFFF0000)  # toward zero; the next one away from zero, as if the exponent went on:
    up = down.astype(np.uint64) + 0x10000
    mag = np.abs(np.where(np.isfinite(x), x, 0).astype(np.float64))  # (inf and nan: replaced below)
    down_mag = np.abs(np.where(np.isfinite(x), down, 0).view(np.float32).astype(np.float64))
    up_bits = (up & 0xFFFFFFFF).astype(np.uint32)
    up_mag = np.where((up & 0x7F800000) == 0x7F800000, 2.0 ** 128,
                      np.abs(np.where(np.isfinite(x), up_bits, 0).view(np.float32).astype(np.float64)))
    d_down, d_up = mag - down_mag, up_mag - mag
    even_down = ((down >> 16) & 1) == 0
    pick_up = (d_up < d_down) | ((d_up == d_down) & ~even_down)
    bits = np.where(pick_up, (up >> 16).astype(np.uint64) & 0xFFFF, down >> 16).astype(np.uint16)
    inf_or_finite = np.where(np.isinf(x), (u >> 16).astype(np.uint16), bits)
    return np.where(np.isnan(x), ((u >> 16) | 0x40).astype(np.uint16), inf_or_finite)


def conversion_sweep():
    """float32 inputs where conversions go wrong: every float16 value and every bfloat16 value, the
    midpoints between neighbours of both (ties), one float32 ulp either side of those, the edges of
    float16's range (65504, 65520, 2^-14, 2^-24, 2^-25, ...), float32 subnormals, infinities, nans with
    payloads, and random bit patterns."""
    h16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    values = [from_half(h16, "f16"), from_half(h16, "bf16")]
    for v in values[:2]:
        v = np.sort(v[np.isfinite(v)].astype(np.float64))
        mid = ((v[1:] + v[:-1]) / 2).astype(np.float32)  # exact: one bit more than the format
        values += [mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))]
    edges = np.array([65504, 65519.996, 65520, 65536, 2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25,
                      2.0 ** -26, 3.4028235e38, 1e-45, 1e-40, 0.0, np.inf], np.float32)
    with np.errstate(over="ignore"):
        edges = np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(0))])
    nans = np.array([0x7F800001, 0x7FA00000, 0x7FC00000, 0x7FFFFFFF, 0x7F801FFF, 0x7F802000], np.uint32)
    rand = np.random.default_rng(0).integers(0, 2 ** 32, 50000, dtype=np.uint64).astype(np.uint32)
    values += [edges, nans.view(np.float32), rand.view(np.float32)]
    x = np.concatenate(values).astype(np.float32)
    return np.concatenate([x, -x])


@pytest.mark.parametrize("fmt", HALF_FORMATS)
def test_gemm_tc_conversions_bit_exact(emu, fmt):
    """f32 -> 16 bits (round to nearest even) and 16 bits -> f32, bit for bit: float16 against numpy's
    astype (its nan rule included), bfloat16 against bf16_reference; every 16-bit pattern back to f32."""
    f_in = conversion_sweep()
    n = f_in.size
    h_in = np.arange(n, dtype=np.uint32).astype(np.uint16)  # every pattern, several times
    h_out, f_out = emu.empty((n,), np.uint16), emu.empty((n,), np.float32)
    emu.launch(f"gemm_tc_convert_{fmt}", 16, 256, h_out, f_out, emu.array(f_in), emu.array(h_in), i64(n))
    if fmt == "f16":
        with np.errstate(over="ignore"):
            want_h = f_in.astype(np.float16).view(np.uint16)
        want_f = h_in.view(np.float16).astype(np.float32)
    else:
        want_h, want_f = bf16_reference(f_in), from_half(h_in, "bf16")
    bad = np.flatnonzero(np.asarray(h_out) != want_h)
    assert bad.size == 0, [f"{f_in[i].view(np.uint32):#010x} -> {h_out[i]:#06x}, want {want_h[i]:#06x}"
                           for i in bad[:8]]
    bad = np.flatnonzero(np.asarray(f_out).view(np.uint32) != want_f.view(np.uint32))
    assert bad.size == 0, [f"{h_in[i]:#06x} -> {f_out[i].view(np.uint32):#010x}, want "
                           f"{want_f[i].view(np.uint32):#010x}" for i in bad[:8]]


TC_SHAPES = [(1, 1, 1), (7, 33, 5), (33, 17, 65), (130, 70, 40), (40, 136, 130), (260, 20, 48), (3, 4, 0)]


@pytest.mark.parametrize("layout", ["fast", "generic"])
@pytest.mark.parametrize("fmt", HALF_FORMATS)
@pytest.mark.parametrize("m, n, k", TC_SHAPES)
def test_gemm_tc_matches_reference(emu, m, n, k, fmt, layout):
    """Row-major operands, one batch element: partial tiles in M, N and K (130 = a full and a 2-row tile
    of 128; K = 5, 65: chunks of 8 cut by the end of K; K = 130: 5 slabs, so the 3 stages are reused),
    on the cp.async path and the element loader."""
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, sa = half_operand(rng, m, k, layout)
    b, sb = half_operand(rng, k, n, layout)
    gemm_tc(emu, fmt, a, sa, b, sb, (1, m, n, k))


@pytest.mark.parametrize("fmt", HALF_FORMATS)
@pytest.mark.parametrize("a_layout, b_layout", [("T", "fast"), ("fast", "T"), ("T", "T"), ("T-generic", "T-generic"),
                                                ("strided", "strided")])
def test_gemm_tc_transposed_operands(emu, fmt, a_layout, b_layout):
    """Aᵀ·B, A·Bᵀ and Aᵀ·Bᵀ through the strides of the stored (K, M) / (N, K) matrices (the other slab
    layout, ldmatrix .trans for A, without for B), on both paths; C column-major for Aᵀ·Bᵀ; and
    operands with no unit stride at all."""
    m, n, k = 37, 50, 44
    rng = np.random.default_rng(17)
    a, sa = half_operand(rng, m, k, a_layout)
    b, sb = half_operand(rng, k, n, b_layout)
    c_strides = (m * n, 1, m) if (a_layout, b_layout) == ("T", "T") else None
    gemm_tc(emu, fmt, a, sa, b, sb, (1, m, n, k), c_strides)


@pytest.mark.parametrize("fmt", HALF_FORMATS)
@pytest.mark.parametrize("broadcast", ["a", "b"])
def test_gemm_tc_batched_with_a_broadcast_operand(emu, fmt, broadcast):
    """A batch of 3 over gridDim.z with one operand shared (batch stride 0); a grid short of the batch
    (the grid-stride loop) gives the same bits."""
    batch, m, n, k = 3, 20, 24, 40
    rng = np.random.default_rng(5)
    a, sa = half_operand(rng, m, k, "fast", batch=1 if broadcast == "a" else batch)
    b, sb = half_operand(rng, k, n, "T", batch=1 if broadcast == "b" else batch)
    sa, sb = ((0,) + sa[1:], sb) if broadcast == "a" else (sa, (0,) + sb[1:])
    full = gemm_tc(emu, fmt, a, sa, b, sb, (batch, m, n, k))
    short = gemm_tc(emu, fmt, a, sa, b, sb, (batch, m, n, k), grid=(1, 1, 2))
    assert np.array(full).tobytes() == np.array(short).tobytes()


@pytest.mark.parametrize("fmt", HALF_FORMATS)
def test_gemm_tc_batch_elements_on_both_paths(emu, fmt):
    """A batch stride of 8 j + 4 elements: every other batch element of A starts 8 bytes off a 16-byte
    boundary, where cp.async would fault (the emulated one traps too), so the kernel must load those with
    the element loader and the others with cp.async."""
    batch, m, n, k = 4, 10, 16, 24
    rng = np.random.default_rng(8)
    a = np.full((batch, m * k + 4), np.nan, np.float32)
    a[:, :m * k] = rng.uniform(-1, 1, (batch, m * k))
    b, sb = half_operand(rng, k, n, "fast", batch=batch)
    gemm_tc(emu, fmt, a.reshape(-1), (m * k + 4, k, 1), b, sb, (batch, m, n, k))


@pytest.mark.parametrize("fmt", HALF_FORMATS)
def test_gemm_tc_alpha_beta(emu, fmt):
    """C = alpha A·B + beta C, with one rounding at the end; K == 0 (alpha * 0 + beta * C); a strided C;
    and a grid short of the tiles in both directions."""
    rng = np.random.default_rng(9)
    for (m, n, k), alpha, beta in [((9, 70, 20), 2.0, 0.5), ((5, 6, 0), -1.0, 1.0)]:
        a, sa = half_operand(rng, m, k, "fast")
        b, sb = half_operand(rng, k, n, "fast")
        c0 = rng.uniform(-3, 3, m * n * 2).astype(np.float32)
        gemm_tc(emu, fmt, a, sa, b, sb, (1, m, n, k), c_strides=(m * n * 2, 2 * n, 2), c_init=c0, alpha=alpha,
                beta=beta)
    a, sa = half_operand(rng, 140, 16, "fast")
    b, sb = half_operand(rng, 16, 130, "fast")
    gemm_tc(emu, fmt, a, sa, b, sb, (1, 140, 130, 16), c_init=rng.uniform(-1, 1, 140 * 130).astype(np.float32),
            alpha=0.5, beta=-2.0, grid=(1, 1, 1))


@pytest.mark.parametrize("fmt", HALF_FORMATS)
def test_gemm_tc_infinities_and_nans(emu, fmt):
    """inf and nan in the inputs propagate as in float32 (inf·0 = nan, inf - inf = nan, inf + finite =
    inf); a finite sum past float16's range (65504) rounds to inf in float16, not in bfloat16."""
    m, n, k = 6, 9, 20
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    a[0, 3] = np.inf                 # row 0: inf, or nan where B[3, :] is 0 or has the other inf
    b[3, 1] = 0.0
    a[1, 5] = np.nan                 # row 1: all nan
    a[2, 7], b[7, 4] = -np.inf, np.inf
    a[3, :], b[:, 6] = 300.0, 300.0  # (3, 6): 20 * 90000 = 1.8e6, past float16, in bfloat16
    gemm_tc(emu, fmt, a.reshape(-1), (0, k, 1), b.reshape(-1), (0, n, 1), (1, m, n, k))


@pytest.mark.parametrize("fmt", HALF_FORMATS)
def test_gemm_tc_products_past_the_16_bit_range(emu, fmt):
    """Products of 256 x 256 = 65536 and more, past float16's largest value (65504), and partial sums up to
    2^26, which the float32 accumulator holds exactly (multiples of 2^16 with < 24 significant bits):
    A = [256 X, 256 X, E], B = [256 Y; -256 Y; F] (small integers) gives exactly E·F, which a 16-bit
    accumulator (inf - inf) would not."""
    m, n, k2, ke = 12, 16, 16, 8
    rng = np.random.default_rng(21)
    x = rng.integers(-8, 9, (m, k2)).astype(np.float32)
    y = rng.integers(-8, 9, (k2, n)).astype(np.float32)
    e = rng.integers(-4, 5, (m, ke)).astype(np.float32)
    f = rng.integers(-4, 5, (ke, n)).astype(np.float32)
    a = np.concatenate([256 * x, 256 * x, e], axis=1)
    b = np.concatenate([256 * y, -256 * y, f], axis=0)
    k = 2 * k2 + ke
    got = gemm_tc(emu, fmt, a.reshape(-1), (0, k, 1), b.reshape(-1), (0, n, 1), (1, m, n, k))
    np.testing.assert_array_equal(from_half(got[0], fmt), e @ f)


# ---- rnn.cu --------------------------------------------------------------------------------------------

RNN_CASES = [(b, h, dtype, large) for b, h in [(1, 1), (3, 33), (4, 7)] for dtype in DTYPES
             for large in (False, True)]


def rnn_gates(b, h, gates, dtype, large):
    """gates_x, gates_h (B, gates * H): uniform in +-3, or (large) a mix of +-30, +-100 and uniform +-40
    values, where a naive sigmoid (exp(x) / (1 + exp(x)), or exp(-x) for x < 0) overflows in float32
    (past 88)."""
    out = []
    for seed in (b * 10 + h, b * 10 + h + 1):
        x = uniform((b, gates * h), dtype, seed, scale=40 if large else 3)
        if large:
            flat = x.reshape(-1)
            flat[0::5], flat[1::5], flat[2::7] = 30, -30, -100
            flat[3::11] = 100
        out.append(x)
    return out


def rnn_launch(b, h):
    """A 1-D launch short of the elements (two blocks of 64), so that the grid-stride loop runs."""
    return max(1, min(2, -(-b * h // 64))), 64


@pytest.mark.parametrize("b, h, dtype, large", RNN_CASES)
def test_lstm_cell_matches_reference(emu, b, h, dtype, large):
    sfx, (grid, block) = SUFFIX[dtype], rnn_launch(b, h)
    gx, gh = rnn_gates(b, h, 4, dtype, large)
    c = uniform((b, h), dtype, seed=3, scale=2)
    hc, cache = emu.empty((2, b, h), dtype), emu.empty((b, 5 * h), dtype)
    emu.launch(f"lstm_cell_forward_{sfx}", grid, block, hc, cache, emu.array(gx), emu.array(gh), emu.array(c),
               i64(b), i32(h))
    ref_hc, ref_cache = numpy_ref.lstm_cell_forward(gx, gh, c)
    assert np.all(np.isfinite(hc)) and np.all(np.isfinite(cache))
    assert_close("lstm cache", cache, ref_cache, np.ones_like(ref_cache))
    assert_close("lstm h', c'", hc, ref_hc, np.stack([np.ones_like(c), 1 + np.abs(c)]))

    dh, dc_new = uniform((b, h), dtype, seed=4), uniform((b, h), dtype, seed=5)
    for with_dc in (True, False):  # dc_new null: a zero gradient
        dgates, dc = emu.empty((b, 4 * h), dtype), emu.empty((b, h), dtype)
        emu.launch(f"lstm_cell_backward_{sfx}", grid, block, dgates, dc, emu.array(dh),
                   emu.array(dc_new) if with_dc else None, emu.array(ref_cache), emu.array(c), i64(b), i32(h))
        ref_dgates, ref_dc = numpy_ref.lstm_cell_backward(dh, dc_new if with_dc else np.zeros_like(dh), ref_cache, c)
        s = np.abs(dh) + (np.abs(dc_new) if with_dc else 0)
        assert_close("lstm dgates", dgates, ref_dgates, np.tile(s * (1 + np.abs(c)), 4))
        assert_close("lstm dc", dc, ref_dc, s)


@pytest.mark.parametrize("b, h, dtype, large", RNN_CASES)
def test_gru_cell_matches_reference(emu, b, h, dtype, large):
    sfx, (grid, block) = SUFFIX[dtype], rnn_launch(b, h)
    gx, gh = rnn_gates(b, h, 3, dtype, large)
    hprev = uniform((b, h), dtype, seed=3)
    h_new, cache = emu.empty((b, h), dtype), emu.empty((b, 4 * h), dtype)
    emu.launch(f"gru_cell_forward_{sfx}", grid, block, h_new, cache, emu.array(gx), emu.array(gh), emu.array(hprev),
               i64(b), i32(h))
    ref_h, ref_cache = numpy_ref.gru_cell_forward(gx, gh, hprev)
    assert np.all(np.isfinite(h_new)) and np.all(np.isfinite(cache))
    hn_abs = np.abs(gh[:, 2 * h:])
    assert_close("gru cache", cache, ref_cache, np.concatenate([np.ones((b, 3 * h)), hn_abs], axis=1))
    assert_close("gru h'", h_new, ref_h, 1 + np.abs(hprev))

    dh_new = uniform((b, h), dtype, seed=4)
    dgx, dgh, dh = emu.empty((b, 3 * h), dtype), emu.empty((b, 3 * h), dtype), emu.empty((b, h), dtype)
    emu.launch(f"gru_cell_backward_{sfx}", grid, block, dgx, dgh, dh, emu.array(dh_new), emu.array(ref_cache),
               emu.array(hprev), i64(b), i32(h))
    ref_dgx, ref_dgh, ref_dh = numpy_ref.gru_cell_backward(dh_new, ref_cache, hprev)
    scale = np.tile(np.abs(dh_new) * (1 + np.abs(hprev)) * (1 + hn_abs), 3)
    assert_close("gru dgates_x", dgx, ref_dgx, scale)
    assert_close("gru dgates_h", dgh, ref_dgh, scale)
    assert_close("gru dh", dh, ref_dh, np.abs(dh_new))


# ---- conv.cu -------------------------------------------------------------------------------------------

# (N, C, H, W), (kh, kw), stride, padding ((top, bottom), (left, right)), dilation
CONV_CASES = [
    ((1, 1, 1, 1), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((1, 2, 5, 5), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((2, 3, 7, 6), (3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2)),
    ((2, 1, 8, 9), (2, 3), (3, 2), ((0, 2), (1, 1)), (2, 1)),
    ((1, 2, 7, 7), (2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1)),  # stride > kernel: some inputs read by no window
]


def conv_out_size(hw, kernel, stride, padding, dilation):
    return tuple((size + before + after - d * (k - 1) - 1) // s + 1
                 for size, k, s, (before, after), d in zip(hw, kernel, stride, padding, dilation))


def im2col_numpy(x, kernel, stride, padding, dilation):
    """cols (N, C*kh*kw, Ho*Wo) by slicing the zero-padded input, one kernel offset at a time."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    n, c = x.shape[:2]
    ho, wo = conv_out_size(x.shape[2:], kernel, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), *padding))
    cols = np.empty((n, c, kh, kw, ho, wo), x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, a, b] = xp[:, :, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im_numpy(dcols, x_shape, kernel, stride, padding, dilation):
    """The adjoint of im2col_numpy: each kernel offset (a, then b) added onto zeros, the padding cropped."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    n, c, h, w = x_shape
    ho, wo = conv_out_size((h, w), kernel, stride, padding, dilation)
    (top, bottom), (left, right) = padding
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)
    dxp = np.zeros((n, c, h + top + bottom, w + left + right), dcols.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw] += dcols[:, :, a, b]
    return dxp[:, :, top:top + h, left:left + w]


def conv_geometry(x_shape, kernel, stride, padding, dilation):
    """The int32 geometry arguments of im2col_T / col2im_T after the two array pointers."""
    ho, wo = conv_out_size(x_shape[2:], kernel, stride, padding, dilation)
    return [i32(v) for v in (*x_shape, *kernel, *stride, padding[0][0], padding[1][0], *dilation, ho, wo)]


def conv_launch(total):
    """1-D, two blocks of 64 at most: grid-stride loops."""
    return max(1, min(2, -(-total // 64))), 64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", CONV_CASES)
def test_im2col_col2im_match_numpy(emu, dtype, x_shape, kernel, stride, padding, dilation):
    """Bitwise: im2col is a copy, col2im sums in the reference's order (kernel offsets increasing)."""
    sfx = SUFFIX[dtype]
    geo = conv_geometry(x_shape, kernel, stride, padding, dilation)
    x = uniform(x_shape, dtype, seed=sum(x_shape))
    ref_cols = im2col_numpy(x, kernel, stride, padding, dilation)
    cols = emu.empty(ref_cols.shape, dtype)
    emu.launch(f"im2col_{sfx}", *conv_launch(cols.size), cols, emu.array(x), *geo)
    assert cols.tobytes() == ref_cols.tobytes()

    dcols = uniform(ref_cols.shape, dtype, seed=1)
    ref_dx = col2im_numpy(dcols, x_shape, kernel, stride, padding, dilation)
    dx = emu.empty(x_shape, dtype)
    emu.launch(f"col2im_{sfx}", *conv_launch(dx.size), dx, emu.array(dcols), *geo)
    assert dx.tobytes() == ref_dx.tobytes(), np.max(np.abs(dx - ref_dx))
    # the two NumPy references are adjoint (in float64): <im2col(x), dcols> == <x, col2im(dcols)>
    x64, dcols64 = x.astype(np.float64), dcols.astype(np.float64)
    lhs = np.sum(im2col_numpy(x64, kernel, stride, padding, dilation) * dcols64)
    rhs = np.sum(x64 * col2im_numpy(dcols64, x_shape, kernel, stride, padding, dilation))
    assert_close("adjoint", np.float64(rhs), np.float64(lhs), np.sum(np.abs(ref_cols * dcols)), dcols.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [2, 3])
def test_conv2d_through_im2col_and_gemm(emu, dtype, case):
    """conv2d forward and backward as a wrapper would chain the kernels (im2col, gemm batched over the images
    with the weight broadcast, weightᵀ·dout through strides, col2im, dweight accumulated with beta = 1
    over dout[n]·cols[n]ᵀ), against numpy_ref.conv2d_forward / conv2d_backward."""
    x_shape, kernel, stride, padding, dilation = CONV_CASES[case]
    sfx = SUFFIX[dtype]
    n, c = x_shape[:2]
    o, k = 4, c * kernel[0] * kernel[1]
    ho, wo = conv_out_size(x_shape[2:], kernel, stride, padding, dilation)
    p = ho * wo
    geo = conv_geometry(x_shape, kernel, stride, padding, dilation)
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((o, c, *kernel)).astype(dtype)
    dout = rng.standard_normal((n, o, ho, wo)).astype(dtype)
    ref_out = numpy_ref.conv2d_forward(x, weight, stride, padding, dilation, 1)
    ref_dx, ref_dw = numpy_ref.conv2d_backward(dout, x, weight, stride, padding, dilation, 1)

    cols = emu.empty((n, k, p), dtype)
    emu.launch(f"im2col_{sfx}", *conv_launch(cols.size), cols, emu.array(x), *geo)
    out = emu.empty((n, o, ho, wo), dtype)  # out[n] (O, P) = weight (O, K) · cols[n] (K, P)
    gemm_launch(emu, out, emu.array(weight), cols, (n, o, p, k), (0, k, 1), (k * p, p, 1), (o * p, p, 1))
    scale = np.abs(weight).reshape(o, k) @ np.abs(im2col_numpy(x, kernel, stride, padding, dilation))
    assert_close("conv2d out", out, ref_out, scale.reshape(ref_out.shape), k)

    dcols = emu.empty((n, k, p), dtype)  # dcols[n] (K, P) = weightᵀ (K, O) · dout[n] (O, P)
    gemm_launch(emu, dcols, emu.array(weight), emu.array(dout), (n, k, p, o), (0, 1, k), (o * p, p, 1),
                (k * p, p, 1))
    dx = emu.empty(x_shape, dtype)
    emu.launch(f"col2im_{sfx}", *conv_launch(dx.size), dx, dcols, *geo)
    dx_scale = col2im_numpy(np.abs(weight).reshape(o, k).T @ np.abs(dout).reshape(n, o, p), x_shape, kernel, stride,
                            padding, dilation)
    assert_close("conv2d dx", dx, ref_dx, dx_scale, o * kernel[0] * kernel[1])

    dweight = emu.empty((o, k), dtype)  # sum_n dout[n] (O, P) · cols[n]ᵀ (P, K): accumulated with beta = 1
    host_cols = np.array(cols)
    for i in range(n):
        gemm_launch(emu, dweight, emu.array(dout[i]), emu.array(host_cols[i]), (1, o, k, p), (0, p, 1), (0, 1, p),
                    (0, k, 1), beta=0.0 if i == 0 else 1.0)
    dw_scale = np.sum(np.abs(dout).reshape(n, o, p) @ np.abs(host_cols).transpose(0, 2, 1), axis=0)
    assert_close("conv2d dweight", dweight.reshape(ref_dw.shape), ref_dw, dw_scale.reshape(ref_dw.shape), n * p)


# ---- attention.cu ---------------------------------------------------------------------------------------

ATT_TILE = {np.float32: (32, 8), np.float64: (16, 4)}  # (L, O) of AttTile<T> in attention.cu
# (B, H, Tq, Tk, D, Dv, is_causal, bias, largest |q|); bias: None, "tq_tk" (a (Tq, Tk) bias with row 1 all
# -inf: a row fully masked), "padding" (a (B, 1, 1, Tk) padding mask: -inf on the last keys of batch 1),
# "full" (B, H, Tq, Tk)
ATT_CASES = [
    (1, 1, 1, 1, 1, 1, False, None, 1.0),
    (1, 1, 1, 1, 1, 1, True, None, 1.0),
    (1, 2, 5, 7, 3, 4, False, None, 1.0),
    (1, 2, 5, 7, 3, 4, True, None, 1.0),
    (2, 1, 33, 33, 8, 8, False, None, 1.0),
    (2, 1, 33, 33, 8, 8, True, None, 1.0),
    (1, 1, 5, 40, 4, 3, True, None, 1.0),  # Tq < Tk causal: query i sees keys 0..i (top-left aligned)
    (1, 1, 19, 6, 4, 4, True, None, 1.0),  # Tq > Tk causal
    (1, 2, 6, 9, 4, 4, False, "tq_tk", 1.0),
    (1, 1, 17, 19, 8, 8, True, "tq_tk", 30.0),  # q up to +-30, causal, a row fully masked by the bias
    (2, 2, 4, 37, 5, 3, False, "padding", 30.0),
    (2, 1, 9, 21, 3, 2, True, "padding", 1.0),
    (1, 2, 3, 70, 8, 8, False, "full", 30.0),  # several key tiles: the running max grows, the sums are rescaled
    (1, 1, 3, 5, 128, 128, False, None, 1.0),  # the largest D, Dv
    (1, 1, 9, 10, 40, 70, True, None, 1.0),  # D, Dv past one lane each (d = lane + 32 c)
]


def attention_bias(kind, b, tq, tk, dtype, rng):
    if kind is None:
        return None
    if kind == "tq_tk":
        bias = rng.uniform(-2, 2, (tq, tk)).astype(dtype)
        bias[min(1, tq - 1), :] = -np.inf
        return bias
    if kind == "full":
        return rng.uniform(-3, 3, (b, 2, tq, tk)).astype(dtype)  # (the "full" cases have H = 2)
    bias = np.zeros((b, 1, 1, tk), dtype)
    bias[min(1, b - 1), ..., tk // 2:] = -np.inf
    return bias


def run_attention(emu, q, k, v, bias, causal, dout):
    """The forward kernel, then the three backward kernels as a wrapper chains them (delta, dkv, dq), with
    grids shorter than the work (the grid-stride loops run), against numpy_ref.attention_forward/backward."""
    dtype = q.dtype.type
    sfx = SUFFIX[dtype]
    nb, nh, tq, d = q.shape
    tk, dv_ = k.shape[2], v.shape[3]
    tile_l, tile_o = ATT_TILE[dtype]
    scale = dtype(1 / math.sqrt(d))
    if bias is None:
        bias_arg, strides = None, (0, 0, 0, 0)
    else:
        full = np.broadcast_to(bias, (nb, nh, tq, tk))
        bias_arg, strides = emu.array(bias), tuple(st // bias.itemsize for st in full.strides)
    tail = (bias_arg, *map(i64, strides), i32(nb), i32(nh), i32(tq), i32(tk), i32(d), i32(dv_), i32(causal), scale)
    gq, gk = emu.array(q), emu.array(k)
    gv, gdout = emu.array(v), emu.array(dout)
    cdiv = lambda a, b: (a + b - 1) // b  # noqa: E731
    out, lse = emu.empty((nb, nh, tq, dv_), dtype), emu.empty((nb, nh, tq), dtype)
    emu.launch(f"attention_forward_{sfx}", (min(cdiv(tq, tile_l), 2), min(nb * nh, 2)), 128, out, lse, gq, gk, gv,
               *tail)
    delta = emu.empty((nb, nh, tq), dtype)
    emu.launch(f"attention_backward_delta_{sfx}", 2, 64, delta, gdout, out, i64(nb * nh * tq), i32(dv_))
    dk, dv = emu.empty(k.shape, dtype), emu.empty(v.shape, dtype)
    emu.launch(f"attention_backward_dkv_{sfx}", (min(cdiv(tk, tile_o), 3), min(nb * nh, 2)), 128, dk, dv, gdout,
               gq, gk, gv, lse, delta, *tail)
    dq = emu.empty(q.shape, dtype)
    emu.launch(f"attention_backward_dq_{sfx}", (min(cdiv(tq, tile_o), 3), min(nb * nh, 2)), 128, dq, gdout, gq,
               gk, gv, lse, delta, *tail)

    ref_out, ref_lse = numpy_ref.attention_forward(q, k, v, bias, causal, scale)
    ref_dq, ref_dk, ref_dv = numpy_ref.attention_backward(dout, q, k, v, ref_out, ref_lse, bias, causal, scale)
    s_out, s_lse, s_dq, s_dk, s_dv = attention_error_scales(q, k, v, bias, causal, scale, dout, ref_out, ref_lse)
    n = max(tq, tk, d, dv_)
    assert_close("attention out", out, ref_out, s_out, n)
    assert_close("attention lse", lse, ref_lse, s_lse, n)
    assert_close("attention delta", delta, np.sum(dout * ref_out, axis=-1), np.sum(np.abs(dout) * s_out, -1), dv_)
    assert_close("attention dq", dq, ref_dq, s_dq, n)
    assert_close("attention dk", dk, ref_dk, s_dk, n)
    assert_close("attention dv", dv, ref_dv, s_dv, n)
    return out, lse, dq, dk, dv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ATT_CASES, ids=lambda c: "-".join(map(str, c)))
def test_attention_matches_reference(emu, dtype, case):
    nb, nh, tq, tk, d, dv, causal, bias_kind, qmax = case
    rng = np.random.default_rng(tq * 100 + tk)
    q = rng.uniform(-qmax, qmax, (nb, nh, tq, d)).astype(dtype)
    k = rng.uniform(-1, 1, (nb, nh, tk, d)).astype(dtype)
    v = rng.uniform(-1, 1, (nb, nh, tk, dv)).astype(dtype)
    dout = rng.uniform(-1, 1, (nb, nh, tq, dv)).astype(dtype)
    bias = attention_bias(bias_kind, nb, tq, tk, dtype, rng)
    out, lse, dq, dk, dv_ = run_attention(emu, q, k, v, bias, causal, dout)
    if bias_kind == "tq_tk":  # the fully masked row: out 0, lse -inf, no gradient
        r = min(1, tq - 1)
        assert np.all(out[:, :, r] == 0) and np.all(lse[:, :, r] == -np.inf) and np.all(dq[:, :, r] == 0)
    if qmax > 1:  # large scores: only the running max keeps this finite
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(dk))


# ---- block sizes at the limit ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_1024_thread_blocks(emu, dtype):
    """32 warps: the per-warp slots of the block reductions are all used."""
    x = uniform((2, 4099), dtype, seed=11, scale=10)
    sfx = SUFFIX[dtype]
    out = emu.empty(x.shape, dtype)
    emu.launch(f"log_softmax_forward_block_{sfx}", 1, 1024, out, emu.array(x), i64(2), i32(4099))
    ref = numpy_ref.log_softmax_forward(x, 1)
    assert_close("log_softmax 1024 threads", out, ref, np.abs(x) + np.abs(ref), 4099)
    s = emu.empty((2, 1), dtype)
    emu.launch(f"reduce_sum_lastdim_{sfx}", 2, 1024, s, emu.array(x), i64(2), i64(4099), i64(4099))
    assert_close("sum 1024 threads", s[:, 0], numpy_ref.sum(x, 1, False), np.sum(np.abs(x), axis=1), 4099)


# ---- the emulator itself ------------------------------------------------------------------------------


def test_emulator_shuffle_and_vote_semantics(emu):
    """CUDA's definitions, two warps of 32 (see selftest.cu)."""
    n = 64
    out = emu.empty((9, n), np.int32)
    emu.launch("selftest_shuffles", 1, n, out)
    t = np.arange(n)
    lane, base = t % 32, t - t % 32
    expected = [
        (base + (lane ^ 5)) * 10,
        np.where(lane + 3 < 32, t + 3, t) * 10,
        np.where(lane >= 2, t - 2, t) * 10,
        (base + 7) * 10,
        np.where(lane % 8 + 1 < 8, t + 1, t) * 10,
        np.where(lane >= 16, t - 16, t) * 10,  # xor 16 within width 16: earlier segment ok, later one: own
        np.full(n, 0x49249249),
        np.where(t >= 32, 3, 2),
        1 + 2 * (t ^ 1),
    ]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(out[k], e, err_msg=f"shuffle/vote row {k}")


def test_emulator_atomics(emu):
    counter = emu.array(np.zeros(2, np.int32))
    emu.launch("selftest_atomics", 3, 96, counter)
    assert counter.tolist() == [3 * 96, sum(range(288))]  # (the first of the two runs works on a copy)


def test_emulator_catches_a_missing_barrier(emu):
    x = np.arange(256, dtype=np.float32)
    out = emu.empty(256, np.float32)
    emu.launch("selftest_reverse", 2, 128, out, emu.array(x), i32(1))
    np.testing.assert_array_equal(out, np.concatenate([x[127::-1], x[:127:-1]]))
    with pytest.raises(AssertionError, match="differs between two thread orders"):
        emu.launch("selftest_reverse", 2, 128, emu.empty(256, np.float32), emu.array(x), i32(0))


def test_emulator_catches_out_of_bounds_additions_and_reads(emu):
    """An `out[n] += v` past the end changes the (finite) guard bytes of the first run; a read past the end
    gets a finite value in the first run and nan in the second, so the two runs' results differ."""
    with pytest.raises(AssertionError, match="wrote outside an array"):
        emu.launch("selftest_add_past_the_end", 1, 32, emu.array(np.zeros(4, np.float32)), i32(4))
    with pytest.raises(AssertionError, match="differs between two thread orders"):
        emu.launch("selftest_read_past_the_end", 1, 32, emu.array(np.zeros(1, np.float32)),
                   emu.array(np.zeros(4, np.float32)), i32(4))


@pytest.mark.parametrize("kernel, block, message", [
    ("selftest_divergent_barrier", 64, "deadlock"),
    ("selftest_shuffle_after_exit", 32, "has exited but is named in the mask"),
    ("selftest_shuffle_missing_lane", 48, "not in the mask or not a thread of the block"),
    ("selftest_divergent_barrier", 2048, "block too large"),
])
def test_emulator_reports_broken_kernels(emu, kernel, block, message):
    with pytest.raises(AssertionError, match=message):
        emu.launch(kernel, 1, block, emu.empty(block, np.int32))


def test_emulator_checks_argument_types(emu):
    x = emu.array(np.zeros((2, 3)))  # float64
    with pytest.raises(AssertionError, match="float64 array for f32"):
        emu.launch("softmax_forward_warp_f32", 1, 32, x, x, i64(2), i32(3))
    with pytest.raises(AssertionError, match="i32 needs a numpy scalar"):
        emu.launch("softmax_forward_warp_f64", 1, 32, x, x, i64(2), 3)


def test_every_kernel_is_tested(emu, request):
    """Every entry point of kernels/*.cu was launched by the tests above (run the whole module)."""
    opts = request.config.option
    if getattr(opts, "keyword", "") or getattr(opts, "markexpr", "") or any("::" in a for a in request.config.args):
        pytest.skip("only meaningful when the whole module runs")
    untested = sorted(set(emu.index) - emu.launched)
    assert not untested, f"kernels no test launched: {untested}"
