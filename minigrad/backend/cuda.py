"""The CUDA backend: primitives on device arrays, the hot ones running minigrad's own kernels/*.cu.

Every function here has the contract of its name in `base.PRIMITIVES` and numpy_ref's semantics. A
primitive with a kernel makes its inputs contiguous where the kernel reads raw rows, allocates its
outputs, and launches the kernel with the launch shape documented in the kernel's header comment. The
primitives without a kernel here, and the kernel primitives on a dtype without a kernel (int64, ...), run
numpy_ref on the device arrays (the device's fallback backend, see minigrad.backend; NumPy hands
numpy_ref's calls on CuPy arrays to CuPy). float16 / bfloat16: matmul runs the tensor-core GEMM
(gemm_tc.cu); the other kernels are float32 / float64, and `@in_float32` (numpy_ref's, the contract of
base.PRIMITIVES) runs them on float32 copies of 16-bit inputs and rounds the outputs once.

The GPU is reached through one object, the runtime `rt` (cuda_runtime.py: the array module `rt.xp` and
`rt.launch`); tests swap in an emulated runtime whose arrays are NumPy arrays and whose kernels run on the
CPU emulator (tests/cuda_emu), so the code below (launch shapes, argument types, contiguity, strides) is
exercised in CI, without a GPU.
"""
from __future__ import annotations

import builtins
import math

import numpy as np

from minigrad.backend import numpy_ref
from minigrad.backend.numpy_ref import in_float32
from minigrad.dtypes import HALF_NP_DTYPES

rt = None  # the runtime, set by use_runtime() (minigrad.backend does it when a GPU is found)


def use_runtime(runtime):
    """Run this backend on `runtime`; returns the previous one."""
    global rt
    previous, rt = rt, runtime
    return previous


# ---- launch helpers ---------------------------------------------------------------------------------

# (sum, max and min are primitives of this module: the builtins are spelled builtins.max, builtins.min)
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_MAX_GRID_YZ = 65535


def _suffix(*arrays) -> str | None:
    """The kernel name suffix for the arrays' common dtype, or None when no kernel takes it."""
    dtype = arrays[0].dtype
    if any(a.dtype != dtype for a in arrays[1:]):
        return None
    return _SUFFIX.get(np.dtype(dtype))


def _contiguous(x):
    return x if x.flags.c_contiguous else x.copy()


def _blocks(work: int, per_block: int) -> int:
    """Blocks for a grid-stride launch over `work` items: enough to fill the GPU, never more than needed."""
    return builtins.max(1, builtins.min(-(-work // per_block), 32 * rt.multiprocessors))


def _i32(v):
    return np.int32(v)


def _i64(v):
    return np.int64(v)


def _launch(family, name, grid, block, *args):
    rt.launch(family, name, grid, block, args)


# ---- creation, conversion, random numbers --------------------------------------------------------------


def asarray(data, dtype):
    if isinstance(data, np.ndarray):
        return rt.from_host(np.array(data, dtype=dtype))
    return rt.xp.array(data, dtype=dtype)


def from_host(array):
    return rt.from_host(array)


def to_host(x):
    return rt.to_host(x)


def empty(shape, dtype):
    return rt.xp.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return rt.xp.zeros(shape, dtype=dtype)


def ones(shape, dtype):
    return rt.xp.ones(shape, dtype=dtype)


def full(shape, value, dtype):
    return rt.xp.full(shape, value, dtype=dtype)


def arange(start, stop, step, dtype):
    return rt.xp.arange(start, stop, step, dtype=dtype)


def linspace(start, stop, steps, dtype):
    return rt.xp.linspace(start, stop, steps, dtype=dtype)


def eye(n, m, dtype):
    return rt.xp.eye(n, m, dtype=dtype)


class Generator:
    """The GPU's random generator: the array module's generator for rand / randn / randint (its methods
    are those of numpy.random.Generator, which numpy_ref calls), and a Philox stream for dropout: the
    kernel's random words are a function of (seed, offset, element), and every dropout call takes the
    next offset, so a seed replays the same masks."""

    def __init__(self, seed: int):
        self.seed = seed & 0xFFFFFFFFFFFFFFFF
        self.offset = 0
        self._draws = rt.xp.random.default_rng(seed)

    def random(self, *args, **kwargs):
        return self._draws.random(*args, **kwargs)

    def standard_normal(self, *args, **kwargs):
        return self._draws.standard_normal(*args, **kwargs)

    def integers(self, *args, **kwargs):
        return self._draws.integers(*args, **kwargs)

    def next_offset(self) -> int:
        self.offset += 1
        return self.offset - 1


def make_generator(seed):
    return Generator(seed)


# ---- matmul: kernels/gemm.cu ------------------------------------------------------------------------------


def _batched(x, batch_shape):
    """x (..., R, C) broadcast to batch_shape + (R, C), as (array, (batch stride, row stride, col stride)) in
    elements, the array's first element being the view's: the batch dims collapse to one stride (0 for a
    broadcast operand) when the layout allows, else x is copied to a contiguous array, which always does."""
    view = rt.xp.broadcast_to(x, tuple(batch_shape) + x.shape[-2:])
    strides = _collapsed_strides(view)
    if strides is None:
        view = rt.xp.ascontiguousarray(view)
        strides = _collapsed_strides(view)
    return view, strides


def _collapsed_strides(view):
    """(batch, row, col) element strides of `view` (..., R, C) with its batch dims read as one, or None when
    they are not one arithmetic progression (or a stride is negative or not a whole number of elements)."""
    itemsize = view.dtype.itemsize
    if any(s < 0 or s % itemsize for s in view.strides):
        return None
    elems = [s // itemsize for s in view.strides]
    batch_dims = [(n, s) for n, s in zip(view.shape[:-2], elems[:-2]) if n != 1]
    inner = batch_dims[-1][1] if batch_dims else 0  # the innermost batch stride; outer ones step by its multiples
    size = 1
    for n, s in reversed(batch_dims):
        if s != inner * size:
            return None
        size *= n
    return inner, elems[-2], elems[-1]


def _half_format(*arrays) -> str | None:
    """'f16' / 'bf16' when the arrays are all float16 / all bfloat16 (gemm_tc.cu's formats) and the GPU has
    the tensor-core instructions it uses (sm_80+), else None."""
    dtype = arrays[0].dtype
    if dtype not in HALF_NP_DTYPES or any(x.dtype != dtype for x in arrays[1:]) or rt.compute_capability < 80:
        return None
    return "f16" if dtype == np.float16 else "bf16"


def _gemm_tile(m, n, batch):
    """The tile size of the gemm.cu kernel to launch: 128 (gemm128_T) or 64 (gemm_T).

    The 128 x 128 tile does twice the FMAs per shared-memory read and per byte loaded (see gemm.cu's
    GEMM_TUNING), but a block holds 2 (float32) or 1 (float64) per SM: it pays only when the problem has
    a 128 x 128 tile for every SM and M, N >= 128 (a thinner problem would compute mostly padding). The
    smaller ones (on an H100, a single 1024 x 1024 has 64 such tiles for 132 SMs) run 4 times as many
    64 x 64 blocks, which keep every SM busy. Both kernels give the same bits, so the choice is only about
    speed (a guess from the sizes: unmeasured)."""
    tiles = -(-m // 128) * -(-n // 128) * batch
    return 128 if m >= 128 and n >= 128 and tiles >= rt.multiprocessors else 64


def _gemm(c, c_strides, a, a_strides, b, b_strides, batch, m, n, k, alpha=1.0, beta=0.0):
    """C = alpha * A·B + beta * C over `batch` matrices, operands given as (array, element strides
    (batch, row, col)) as gemm_T reads them: float32 / float64 on kernels/gemm.cu (a block per tile of
    _gemm_tile's size); float16 / bfloat16 on kernels/gemm_tc.cu (tensor cores, float32 accumulation, 128 x
    128 tiles, the 16-bit arrays passed as their raw bits). 256 threads per block either way."""
    if batch == 0 or m == 0 or n == 0:
        return
    half = _half_format(c)
    if half is None:
        tile, scalar = _gemm_tile(m, n, batch), c.dtype.type
        family, name = "gemm", f"gemm{'128' if tile == 128 else ''}_{_SUFFIX[c.dtype]}"
    else:
        tile, scalar = 128, np.float32
        family, name = "gemm_tc", f"gemm_tc_{half}"
        c, a, b = (x.view(np.uint16) for x in (c, a, b))
    grid = (-(-n // tile), builtins.min(-(-m // tile), _MAX_GRID_YZ), builtins.min(batch, _MAX_GRID_YZ))
    _launch(family, name, grid, (256,), c, a, b, _i32(m), _i32(n), _i32(k), _i32(batch),
            _i64(a_strides[1]), _i64(a_strides[2]), _i64(b_strides[1]), _i64(b_strides[2]),
            _i64(c_strides[1]), _i64(c_strides[2]), _i64(a_strides[0]), _i64(b_strides[0]), _i64(c_strides[0]),
            scalar(alpha), scalar(beta))


def matmul(a, b):
    if (_suffix(a, b) is None and _half_format(a, b) is None) or a.ndim == 0 or b.ndim == 0:
        return numpy_ref.matmul(a, b)
    a2 = a[None, :] if a.ndim == 1 else a  # numpy's 1-D rules: a vector is a row on the left, a column
    b2 = b[:, None] if b.ndim == 1 else b  # on the right, and that dim is dropped from the result
    batch_shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    (m, k), n = a2.shape[-2:], b2.shape[-1]
    out = rt.xp.empty(batch_shape + (m, n), dtype=a.dtype)
    batch = math.prod(batch_shape)
    a_arr, a_strides = _batched(a2, batch_shape)
    b_arr, b_strides = _batched(b2, batch_shape)
    _gemm(out, (m * n, n, 1), a_arr, a_strides, b_arr, b_strides, batch, m, n, k)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


# ---- rows: softmax.cu, reduce.cu --------------------------------------------------------------------------

_WARP_ROWS_UP_TO = 1024  # rows this long or shorter take a warp each, longer ones a block (softmax.cu)


def _last_axis_rows(arrays, axis):
    """The arrays with `axis` moved last, contiguous, as (rows, n) views; and the function that puts a
    (rows, n) result back into the original layout."""
    shape = arrays[0].shape
    moved = [_contiguous(rt.xp.moveaxis(x, axis, -1)) for x in arrays]
    n = shape[axis]
    rows = [x.reshape(-1, n) for x in moved]

    def restore(out):
        return rt.xp.moveaxis(out.reshape(moved[0].shape), -1, axis)
    return rows, restore


def _softmax_family(op, axis, *arrays):
    """op in softmax_forward, log_softmax_forward, softmax_backward, log_softmax_backward; arrays are its
    inputs in kernel order (x, or dout and out)."""
    (first, *rest), restore = _last_axis_rows(arrays, axis)
    rows, n = first.shape
    out = rt.xp.empty_like(first)
    if rows:
        variant = "warp" if n <= _WARP_ROWS_UP_TO else "block"
        direction = "forward" if op.endswith("forward") else "backward"
        name = f"{op.rsplit('_', 1)[0]}_{direction}_{variant}_{_SUFFIX[first.dtype]}"
        if variant == "warp":  # 4 warps per block, a row per warp
            grid, block = _blocks(rows, 4), 128
        else:
            grid, block = builtins.min(rows, 65535), (256 if n <= 8192 else 1024)
        _launch("softmax", name, (grid,), (block,), out, first, *rest, _i64(rows), _i32(n))
    return restore(out)


def _row_kernel_applies(x, axis):
    return _suffix(x) is not None and x.ndim > 0 and x.shape[axis] > 0


@in_float32
def softmax_forward(x, axis):
    if not _row_kernel_applies(x, axis):
        return numpy_ref.softmax_forward(x, axis)
    return _softmax_family("softmax_forward", axis, x)


@in_float32
def log_softmax_forward(x, axis):
    if not _row_kernel_applies(x, axis):
        return numpy_ref.log_softmax_forward(x, axis)
    return _softmax_family("log_softmax_forward", axis, x)


@in_float32
def softmax_backward(dout, out, axis):
    if not _row_kernel_applies(dout, axis) or _suffix(dout, out) is None:
        return numpy_ref.softmax_backward(dout, out, axis)
    return _softmax_family("softmax_backward", axis, dout, out)


@in_float32
def log_softmax_backward(dout, out, axis):
    if not _row_kernel_applies(dout, axis) or _suffix(dout, out) is None:
        return numpy_ref.log_softmax_backward(dout, out, axis)
    return _softmax_family("log_softmax_backward", axis, dout, out)


_CHUNKS_WANTED = 256  # split a long reduction into about this many partial results (a second launch adds them)


def _reduce(op, x, axis, keepdims):
    """sum / max / min of x along one axis (or all of x for axis None) with reduce.cu: x seen as a contiguous
    (outer, n, inner) array. Few outputs with long reductions first reduce chunks of n in parallel, then the
    chunk results with a second launch of the same kernel: deterministic, no atomics."""
    x = _contiguous(x)
    if axis is None:
        shape, (outer, n, inner) = (1,) * x.ndim if keepdims else (), (1, x.size, 1)
    else:
        outer, n, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:])
        shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1:]
    out = rt.xp.empty((outer, inner), dtype=x.dtype)
    chunk = n if outer * inner >= rt.multiprocessors * 4 else builtins.max(1024, -(-n // _CHUNKS_WANTED))
    if chunk < n:
        partial = rt.xp.empty((outer, -(-n // chunk), inner), dtype=x.dtype)
        _reduce_launch(op, partial, x, outer, n, inner, chunk)
        x, n = partial, partial.shape[1]
    _reduce_launch(op, out, x, outer, n, inner, n)
    return out.reshape(shape)


def _reduce_launch(op, out, x, outer, n, inner, chunk):
    nchunks = -(-n // chunk)
    suffix = _SUFFIX[x.dtype]
    if inner == 1:
        grid = (builtins.min(outer, 2 ** 31 - 1), builtins.min(nchunks, _MAX_GRID_YZ))
        _launch("reduce", f"reduce_{op}_lastdim_{suffix}", grid, (256,), out, x, _i64(outer), _i64(n), _i64(chunk))
    else:
        grid = (-(-inner // 32), builtins.min(outer, _MAX_GRID_YZ), builtins.min(nchunks, _MAX_GRID_YZ))
        _launch("reduce", f"reduce_{op}_strided_{suffix}", grid, (32, 8), out, x, _i64(outer), _i64(n),
                _i64(inner), _i64(chunk))


def _one_axis(x, axis):
    """The single axis a reduce.cu kernel can take (an int, or None for all), or False when it cannot."""
    if _suffix(x) is None or x.size == 0:
        return False
    if isinstance(axis, tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis if axis is None else axis % x.ndim


@in_float32
def sum(x, axis, keepdims):
    one = _one_axis(x, axis)
    return numpy_ref.sum(x, axis, keepdims) if one is False else _reduce("sum", x, one, keepdims)


def max(x, axis, keepdims):
    one = _one_axis(x, axis)
    return numpy_ref.max(x, axis, keepdims) if one is False else _reduce("max", x, one, keepdims)


def min(x, axis, keepdims):
    one = _one_axis(x, axis)
    return numpy_ref.min(x, axis, keepdims) if one is False else _reduce("min", x, one, keepdims)


# ---- layernorm.cu -------------------------------------------------------------------------------------------

_LN_WARPS = 4  # rows per block of the forward and dx kernels (a warp per row)
_LN_BY = 8     # row groups per block of the dparams kernel


@in_float32(keep_float32=(1, 2))
def layer_norm_forward(x, weight, bias, eps):
    if _suffix(x) is None or x.shape[1] == 0 or any(p is not None and p.dtype != x.dtype for p in (weight, bias)):
        return numpy_ref.layer_norm_forward(x, weight, bias, eps)
    x = _contiguous(x)
    rows, d = x.shape
    out = rt.xp.empty_like(x)
    mean, rstd = rt.xp.empty(rows, dtype=x.dtype), rt.xp.empty(rows, dtype=x.dtype)
    if rows:
        _launch("layernorm", f"layernorm_forward_{_SUFFIX[x.dtype]}", (_blocks(rows, _LN_WARPS),),
                (32 * _LN_WARPS,), out, mean, rstd, x, _opt(weight), _opt(bias), _i64(rows), _i32(d),
                x.dtype.type(eps))
    return out, mean, rstd


def _opt(x):
    return None if x is None else _contiguous(x)


@in_float32
def layer_norm_backward(dout, x, weight, mean, rstd):
    if _suffix(dout, x, mean, rstd) is None or x.shape[0] == 0 or x.shape[1] == 0 or \
            (weight is not None and weight.dtype != x.dtype):
        return numpy_ref.layer_norm_backward(dout, x, weight, mean, rstd)
    dout, x, mean, rstd = (_contiguous(a) for a in (dout, x, mean, rstd))
    rows, d = x.shape
    suffix = _SUFFIX[x.dtype]
    dx = rt.xp.empty_like(x)
    _launch("layernorm", f"layernorm_backward_dx_{suffix}", (_blocks(rows, _LN_WARPS),), (32 * _LN_WARPS,), dx,
            dout, x, _opt(weight), mean, rstd, _i64(rows), _i32(d))
    rows_per_chunk = builtins.max(_LN_BY, -(-rows // 256))
    nchunks = -(-rows // rows_per_chunk)
    part_dw = rt.xp.empty((nchunks, d), dtype=x.dtype)
    part_db = rt.xp.empty((nchunks, d), dtype=x.dtype)
    _launch("layernorm", f"layernorm_backward_dparams_partial_{suffix}", (-(-d // 32), nchunks), (32, _LN_BY),
            part_dw, part_db, dout, x, mean, rstd, _i64(rows), _i32(d), _i64(rows_per_chunk))
    dweight = None if weight is None else rt.xp.empty(d, dtype=x.dtype)
    dbias = rt.xp.empty(d, dtype=x.dtype)
    _launch("layernorm", f"layernorm_backward_dparams_finalize_{suffix}", (_blocks(d, 256),), (256,), dweight,
            dbias, part_dw, part_db, _i64(nchunks), _i32(d))
    return dx, dweight, dbias


# ---- elementwise.cu: gelu with a fused bias, bias + residual, dropout -----------------------------------------

_APPROXIMATE = {"none": 0, "tanh": 1}


def _rows_2d(x):
    """x as contiguous (rows, D) for the row-and-column kernels: D the last dim (1 for a 0-d x)."""
    x = _contiguous(x)
    return x.reshape(-1, x.shape[-1] if x.ndim else 1)


def _bias_grid(rows, d):
    return (-(-d // 256), builtins.max(1, builtins.min(rows, _MAX_GRID_YZ))), (256,)


def _bias_gelu(x, bias, approximate):
    x2 = _rows_2d(x)
    out = rt.xp.empty_like(x2)
    if x2.size:
        grid, block = _bias_grid(*x2.shape)
        _launch("elementwise", f"bias_gelu_forward_{_SUFFIX[x.dtype]}", grid, block, out, x2, _opt(bias),
                _i64(x2.shape[0]), _i32(x2.shape[1]), _i32(_APPROXIMATE[approximate]))
    return out.reshape(x.shape)


def _bias_gelu_dx(dout, x, bias, approximate):
    x2, dout2 = _rows_2d(x), _rows_2d(dout)
    dx = rt.xp.empty_like(x2)
    if x2.size:
        grid, block = _bias_grid(*x2.shape)
        _launch("elementwise", f"bias_gelu_backward_{_SUFFIX[x.dtype]}", grid, block, dx, dout2, x2, _opt(bias),
                _i64(x2.shape[0]), _i32(x2.shape[1]), _i32(_APPROXIMATE[approximate]))
    return dx.reshape(x.shape)


@in_float32
def gelu_forward(x, approximate):
    if _suffix(x) is None:
        return numpy_ref.gelu_forward(x, approximate)
    return _bias_gelu(x, None, approximate)


@in_float32
def gelu_backward(dout, x, approximate):
    if _suffix(dout, x) is None or dout.shape != x.shape:
        return numpy_ref.gelu_backward(dout, x, approximate)
    return _bias_gelu_dx(dout, x, None, approximate)


@in_float32
def bias_gelu_forward(x, bias, approximate):
    if _suffix(x, *([] if bias is None else [bias])) is None:
        return numpy_ref.bias_gelu_forward(x, bias, approximate)
    return _bias_gelu(x, bias, approximate)


@in_float32
def bias_gelu_backward(dout, x, bias, approximate):
    if _suffix(dout, x, *([] if bias is None else [bias])) is None:
        return numpy_ref.bias_gelu_backward(dout, x, bias, approximate)
    dx = _bias_gelu_dx(dout, x, bias, approximate)
    return dx, None if bias is None else sum(dx, 0, False)  # the column sums, with reduce.cu


@in_float32
def bias_residual_forward(x, bias, residual):
    if _suffix(x, bias, residual) is None or x.shape != residual.shape:
        return numpy_ref.bias_residual_forward(x, bias, residual)
    x2, r2 = _rows_2d(x), _rows_2d(residual)
    out = rt.xp.empty_like(x2)
    if x2.size:
        grid, block = _bias_grid(*x2.shape)
        _launch("elementwise", f"bias_residual_forward_{_SUFFIX[x.dtype]}", grid, block, out, x2,
                _contiguous(bias), r2, _i64(x2.shape[0]), _i32(x2.shape[1]))
    return out.reshape(x.shape)


@in_float32
def dropout_forward(gen, x, p):
    if _suffix(x) is None:
        return numpy_ref.dropout_forward(gen, x, p)
    x = _contiguous(x)
    out, mask = rt.xp.empty_like(x), rt.xp.empty(x.shape, dtype=np.bool_)
    if x.size:  # 4 elements per thread (one Philox call)
        _launch("elementwise", f"dropout_forward_{_SUFFIX[x.dtype]}", (_blocks(-(-x.size // 4), 256),), (256,),
                out, mask, x, _i64(x.size), np.float32(p), x.dtype.type(numpy_ref._dropout_scale(p)),
                np.uint64(gen.seed), np.uint64(gen.next_offset()))
    return out, mask


@in_float32
def dropout_backward(dout, mask, p):
    if _suffix(dout) is None:
        return numpy_ref.dropout_backward(dout, mask, p)
    dout, mask = _contiguous(dout), _contiguous(mask)
    dx = rt.xp.empty_like(dout)
    if dout.size:
        _launch("elementwise", f"dropout_backward_{_SUFFIX[dout.dtype]}", (_blocks(dout.size, 256),), (256,), dx,
                dout, mask, _i64(dout.size), dout.dtype.type(numpy_ref._dropout_scale(p)))
    return dx


# ---- cross_entropy.cu, embedding.cu --------------------------------------------------------------------------


@in_float32
def cross_entropy_forward(logits, targets, ignore_index, label_smoothing):
    if _suffix(logits) is None or logits.shape[1] == 0:
        return numpy_ref.cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
    logits, targets = _contiguous(logits), _contiguous(targets)
    n, c = logits.shape
    losses, logprobs = rt.xp.empty(n, dtype=logits.dtype), rt.xp.empty_like(logits)
    if n:  # a block per row, as wide as the row needs (a multiple of 32, at most 1024)
        block = builtins.min(1024, 32 * -(-builtins.min(c, 256) // 32))
        _launch("cross_entropy", f"cross_entropy_forward_{_SUFFIX[logits.dtype]}", (builtins.min(n, 2 ** 31 - 1),),
                (block,), losses, logprobs, logits, targets, _i64(n), _i32(c), _i64(ignore_index),
                logits.dtype.type(label_smoothing))
    return losses, logprobs


@in_float32
def cross_entropy_backward(dlosses, logprobs, targets, ignore_index, label_smoothing):
    if _suffix(dlosses, logprobs) is None or logprobs.shape[1] == 0:
        return numpy_ref.cross_entropy_backward(dlosses, logprobs, targets, ignore_index, label_smoothing)
    dlosses, logprobs, targets = _contiguous(dlosses), _contiguous(logprobs), _contiguous(targets)
    n, c = logprobs.shape
    dlogits = rt.xp.empty_like(logprobs)
    if n:
        _launch("cross_entropy", f"cross_entropy_backward_{_SUFFIX[logprobs.dtype]}", (_blocks(n * c, 256),), (256,),
                dlogits, dlosses, logprobs, targets, _i64(n), _i32(c), _i64(ignore_index),
                logprobs.dtype.type(label_smoothing))
    return dlogits


def embedding_forward(weight, indices):
    if _suffix(weight) is None or weight.shape[1] == 0:
        return numpy_ref.embedding_forward(weight, indices)
    weight, flat = _contiguous(weight), _contiguous(indices).reshape(-1)
    d = weight.shape[1]
    out = rt.xp.empty((flat.size, d), dtype=weight.dtype)
    if flat.size:
        grid = (-(-d // 128), builtins.min(flat.size, _MAX_GRID_YZ))
        _launch("embedding", f"embedding_forward_{_SUFFIX[weight.dtype]}", grid, (128,), out, weight, flat,
                _i64(flat.size), _i32(d))
    return out.reshape(indices.shape + (d,))


@in_float32
def embedding_backward(dout, indices, num_embeddings, padding_idx):
    if _suffix(dout) is None or dout.shape[-1] == 0 or num_embeddings == 0:
        return numpy_ref.embedding_backward(dout, indices, num_embeddings, padding_idx)
    dweight = rt.xp.empty((num_embeddings, dout.shape[-1]), dtype=dout.dtype)  # every element is written
    _row_scatter(dweight, dout.reshape(-1, dout.shape[-1]), indices.reshape(-1), padding_idx, accumulate=False)
    return dweight


def _row_scatter(dweight, dout, rows, padding_idx, accumulate):
    """embedding.cu's deterministic scatter-add of rows: dweight (V, D) row rows[i] (int64 in [0, V)) gets
    dout[i] (n, D), each row's contributions summed in increasing i, from dweight's own values (accumulate:
    np.add.at's order) or from zero; dweight contiguous."""
    v, d = dweight.shape
    # 32 vocabulary rows x 128 columns per block, grid-stride beyond the grid's limits
    grid = (builtins.min(-(-v // 32), 2**31 - 1), builtins.min(-(-d // 128), _MAX_GRID_YZ))
    _launch("embedding", f"embedding_backward_{_SUFFIX[dweight.dtype]}", grid, (128,), dweight, _contiguous(dout),
            _contiguous(rows), _i64(rows.size), _i32(v), _i32(d), _i64(-1 if padding_idx is None else padding_idx),
            _i32(int(accumulate)))


def _rows_index(index):
    """The integer array of an index that selects along the first dim only (idx, or (idx, :, ...)), else None."""
    items = index if isinstance(index, tuple) else (index,)
    first, rest = items[0] if items else None, items[1:]
    if getattr(first, "dtype", None) is None or first.dtype.kind not in "iu":
        return None
    if any(item is not Ellipsis and not (isinstance(item, slice) and item == slice(None)) for item in rest):
        return None
    return first


def _element_offsets(a, index):
    """The offsets, in elements from a's first one along a's strides, of the elements a[index] selects, in
    a[index]'s shape and order: the sum over the dims of a broadcast (stride-0) view of that dim's offsets,
    indexed, so only the selected elements are materialized (not an array of a's size)."""
    offsets = rt.xp.zeros((), dtype=np.int64)[index] if a.ndim == 0 else 0  # (a 0-d a: a bool index)
    for dim, (size, stride) in enumerate(zip(a.shape, a.strides)):
        along = rt.xp.arange(size, dtype=np.int64).reshape((1,) * dim + (size,) + (1,) * (a.ndim - dim - 1))
        offsets = offsets + rt.xp.broadcast_to(along * (stride // a.itemsize), a.shape)[index]
    return offsets


@numpy_ref.accumulate_in_float32
def index_add_(out, index, values):
    """out[index] += values, repeated indices accumulating (the backward of x[index]), deterministically and
    in np.add.at's order (each element's additions one after another, in index order, starting from its value):
    an integer array along the first dim (a row gather) runs embedding.cu's row scatter-add, any other integer
    index scatter.cu's; neither uses atomics, so the gradient is the same bits on every run. A basic index
    (no arrays) touches each element once: numpy_ref's `out[index] += values`. 16-bit arrays: the same in
    float32, rounded once (base.py)."""
    if not numpy_ref._has_index_array(index) or _suffix(out, values) is None:
        return numpy_ref.index_add_(out, index, values)
    rows = _rows_index(index)
    if rows is not None and out.ndim and out.flags.c_contiguous and out.size and \
            values.shape == rows.shape + out.shape[1:]:
        n, d = out.shape[0], out.size // out.shape[0]
        flat = _contiguous(rows).reshape(-1).astype(np.int64)
        flat = rt.xp.where(flat < 0, flat + n, flat)  # numpy's negative indices
        if flat.size:
            _row_scatter(out.reshape(n, d), values.reshape(flat.size, d), flat, None, accumulate=True)
        return None
    target = out if all(s >= 0 for s in out.strides) else out.copy()  # (offsets from the first element)
    offsets = _element_offsets(target, index)
    _scatter_add_flat(target, offsets, rt.xp.broadcast_to(values, offsets.shape))
    if target is not out:
        out[...] = target
    return None


# ---- scatter.cu: deterministic scatter-adds ------------------------------------------------------------------


def _scatter_add_flat(out, positions, values):
    """The element at offset positions[i] from out's first element += values[i] for every i (positions int64,
    from out's strides: _element_offsets; values of positions' shape and out's dtype), repeats accumulating
    in increasing i: np.add.at's additions in its order, without atomics. A stable sort groups the repeats;
    scatter.cu sums each group in order."""
    if positions.shape != values.shape:
        raise ValueError(f"scatter-add: positions of shape {positions.shape}, values of shape {values.shape}")
    n = positions.size
    if n == 0:
        return
    positions = _contiguous(positions).reshape(-1)
    order = rt.xp.argsort(positions, kind="stable")
    _launch("scatter", f"scatter_add_sorted_{_SUFFIX[out.dtype]}", (_blocks(n, 256),), (256,), out,
            positions[order], order, _contiguous(values).reshape(-1), _i64(n))


def scatter_add_along_axis(shape, index, values, axis, dtype):
    """The backward of gather: index_add_ (above: deterministic) into zeros at take_along_axis's positions."""
    out = rt.xp.zeros(shape, dtype=dtype)
    index_add_(out, numpy_ref.along_axis_index(index, axis), values)
    return out


# ---- pool.cu, and scatter.cu for max pooling's backward ---------------------------------------------------


def _pool_args(x_shape, out_hw, kernel, stride, padding):
    n, c, h, w = x_shape
    return (_i64(n * c), _i32(h), _i32(w), _i32(out_hw[0]), _i32(out_hw[1]), *map(_i32, kernel), *map(_i32, stride),
            *map(_i32, padding))


@in_float32  # (16 bits: the max of float32 copies is one of the 16-bit values, rounded back exactly)
def max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode):
    if _suffix(x) is None or x.ndim != 4 or x.size == 0:
        return numpy_ref.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    x = _contiguous(x)
    out_hw, _ = numpy_ref.pool_geometry(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    out = rt.xp.empty(x.shape[:2] + out_hw, dtype=x.dtype)
    argmax = rt.xp.empty(out.shape, dtype=np.int64)
    if out.size:
        _launch("pool", f"max_pool2d_forward_{_SUFFIX[x.dtype]}", (_blocks(out.size, 256),), (256,), out, argmax, x,
                *_pool_args(x.shape, out_hw, kernel, stride, padding), *map(_i32, dilation))
    return out, argmax


@in_float32
def max_pool2d_backward(dout, argmax, input_shape):
    if _suffix(dout) is None:
        return numpy_ref.max_pool2d_backward(dout, argmax, input_shape)
    n, c, h, w = input_shape
    dx = rt.xp.zeros(input_shape, dtype=dout.dtype)
    # argmax is a flat index into each (h, w) plane: add the plane's offset
    positions = argmax + rt.xp.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
    _scatter_add_flat(dx, positions, dout)
    return dx


@in_float32
def avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
    if _suffix(x) is None or x.ndim != 4 or x.size == 0:
        return numpy_ref.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
    x = _contiguous(x)
    divisor = _contiguous(numpy_ref.avg_pool_divisor(x.shape[2:], kernel, stride, padding, ceil_mode,
                                                     count_include_pad, x))
    out = rt.xp.empty(x.shape[:2] + divisor.shape, dtype=x.dtype)
    if out.size:
        _launch("pool", f"avg_pool2d_forward_{_SUFFIX[x.dtype]}", (_blocks(out.size, 256),), (256,), out, x, divisor,
                *_pool_args(x.shape, divisor.shape, kernel, stride, padding))
    return out


@in_float32
def avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, count_include_pad):
    if _suffix(dout) is None or math.prod(input_shape) == 0:
        return numpy_ref.avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, count_include_pad)
    dout = _contiguous(dout)
    divisor = _contiguous(numpy_ref.avg_pool_divisor(input_shape[2:], kernel, stride, padding, ceil_mode,
                                                     count_include_pad, dout))
    dx = rt.xp.empty(input_shape, dtype=dout.dtype)  # every element is written
    _launch("pool", f"avg_pool2d_backward_{_SUFFIX[dout.dtype]}", (_blocks(dx.size, 256),), (256,), dx, dout, divisor,
            *_pool_args(input_shape, divisor.shape, kernel, stride, padding))
    return dx


# ---- attention.cu ----------------------------------------------------------------------------------------

_ATT_MAX_D = 128
_ATT_QUERY_TILE = {"f32": 32, "f64": 16}  # L of attention.cu: queries per block of the forward
_ATT_OWNED = {"f32": 8, "f64": 4}         # O: keys (queries) per block of the dkv (dq) kernel


def _attention_applies(q, k, v, bias):
    return (_suffix(q, k, v, *([] if bias is None else [bias])) is not None and q.ndim == 4
            and 1 <= q.shape[-1] <= _ATT_MAX_D and 1 <= v.shape[-1] <= _ATT_MAX_D
            and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] > 0)


def _bias_args(bias, shape):
    """The bias pointer and its element strides broadcast to (B, H, Tq, Tk) (0 along broadcast dims), and
    the view they describe (kept alive by the caller). No bias: a null pointer."""
    if bias is None:
        return None, (None, _i64(0), _i64(0), _i64(0), _i64(0))
    view = rt.xp.broadcast_to(bias, shape)
    if any(s < 0 or s % view.dtype.itemsize for s in view.strides):
        view = rt.xp.broadcast_to(rt.xp.ascontiguousarray(bias), shape)
    return view, (view, *(_i64(s // view.dtype.itemsize) for s in view.strides))


def _attention_geometry(q, k, v, is_causal, scale):
    (b, h, tq, d), tk, dv = q.shape, k.shape[2], v.shape[3]
    return (_i32(b), _i32(h), _i32(tq), _i32(tk), _i32(d), _i32(dv), _i32(int(is_causal)), q.dtype.type(scale))


@in_float32(keep_float32=(1,))
def attention_forward(q, k, v, bias, is_causal, scale):
    if not _attention_applies(q, k, v, bias):
        return numpy_ref.attention_forward(q, k, v, bias, is_causal, scale)
    q, k, v = _contiguous(q), _contiguous(k), _contiguous(v)
    (b, h, tq, _), tk = q.shape, k.shape[2]
    suffix = _SUFFIX[q.dtype]
    out = rt.xp.empty((b, h, tq, v.shape[3]), dtype=q.dtype)
    lse = rt.xp.empty((b, h, tq), dtype=q.dtype)
    _, bias_args = _bias_args(bias, (b, h, tq, tk))
    grid = (-(-tq // _ATT_QUERY_TILE[suffix]), builtins.min(b * h, _MAX_GRID_YZ))
    _launch("attention", f"attention_forward_{suffix}", grid, (128,), out, lse, q, k, v, *bias_args,
            *_attention_geometry(q, k, v, is_causal, scale))
    return out, lse


@in_float32
def attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale):
    if not _attention_applies(q, k, v, bias) or _suffix(dout, q, out, lse) is None:
        return numpy_ref.attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale)
    dout, q, k, v, out, lse = (_contiguous(a) for a in (dout, q, k, v, out, lse))
    (b, h, tq, _), tk, dv_dim = q.shape, k.shape[2], v.shape[3]
    suffix = _SUFFIX[q.dtype]
    rows = b * h * tq
    delta = rt.xp.empty((b, h, tq), dtype=q.dtype)
    _launch("attention", f"attention_backward_delta_{suffix}", (_blocks(rows, 4),), (128,), delta, dout, out,
            _i64(rows), _i32(dv_dim))
    dq, dk, dv = rt.xp.empty_like(q), rt.xp.empty_like(k), rt.xp.empty_like(v)
    _, bias_args = _bias_args(bias, (b, h, tq, tk))
    geometry = _attention_geometry(q, k, v, is_causal, scale)
    owned, heads = _ATT_OWNED[suffix], builtins.min(b * h, _MAX_GRID_YZ)
    _launch("attention", f"attention_backward_dkv_{suffix}", (-(-tk // owned), heads), (128,), dk, dv, dout, q, k, v,
            lse, delta, *bias_args, *geometry)
    _launch("attention", f"attention_backward_dq_{suffix}", (-(-tq // owned), heads), (128,), dq, dout, q, k, v,
            lse, delta, *bias_args, *geometry)
    return dq, dk, dv


# ---- adamw.cu: the fused Adam / AdamW step ------------------------------------------------------------------


def adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
               decoupled, amsgrad, maximize):
    state = [param, grad, exp_avg, exp_avg_sq] + ([max_exp_avg_sq] if amsgrad else [])
    if _suffix(*state) is None or not builtins.all(a.flags.c_contiguous for a in state):
        return numpy_ref.adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                                    weight_decay, decoupled, amsgrad, maximize)
    if param.size == 0:
        return None
    t = param.dtype.type  # the scalars in double precision, then rounded, as NumPy rounds a Python float
    _launch("adamw", f"adamw_step_{_SUFFIX[param.dtype]}", (_blocks(param.size, 256),), (256,), param, grad,
            exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None, _i64(param.size), t(beta1), t(1 - beta1),
            t(beta2), t(1 - beta2), t(weight_decay), t(1 - lr * weight_decay), t(math.sqrt(1 - beta2 ** step)),
            t(lr / (1 - beta1 ** step)), t(eps), _i32(int(decoupled)), _i32(int(amsgrad)), _i32(int(maximize)))
    return None


adam_foreach_ = numpy_ref.adam_foreach_over(adam_step_)


# ---- conv2d: conv.cu's im2col / col2im around gemm.cu ------------------------------------------------------


def _conv_geometry(x, weight, stride, padding, dilation):
    (n, c, hi, wi), (_, _, kh, kw) = x.shape, weight.shape
    (top, bottom), (left, right) = padding
    ho = (hi + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wi + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    args = tuple(_i32(v) for v in (n, c, hi, wi, kh, kw, *stride, top, left, *dilation, ho, wo))
    return ho, wo, args


def _conv_applies(x, weight, stride, padding, dilation):
    ho, wo, _ = _conv_geometry(x, weight, stride, padding, dilation)
    return _suffix(x, weight) is not None and ho > 0 and wo > 0 and x.shape[0] > 0 and weight.shape[0] > 0


def _im2col(x, weight, stride, padding, dilation):
    """cols (N, C*kh*kw, Ho*Wo) of conv.cu's im2col, and (Ho, Wo)."""
    ho, wo, geometry = _conv_geometry(x, weight, stride, padding, dilation)
    n, c = x.shape[:2]
    cols = rt.xp.empty((n, c * weight.shape[2] * weight.shape[3], ho * wo), dtype=x.dtype)
    _launch("conv", f"im2col_{_SUFFIX[x.dtype]}", (_blocks(cols.size, 256),), (256,), cols, x, *geometry)
    return cols, (ho, wo)


@in_float32
def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    if not _conv_applies(x, weight, stride, padding, dilation) or (bias is not None and bias.dtype != x.dtype):
        return numpy_ref.conv2d_forward(x, weight, stride, padding, dilation, groups, bias)
    x, weight = _contiguous(x), _contiguous(weight)
    cols, (ho, wo) = _im2col(x, weight, stride, padding, dilation)
    n, o, p = x.shape[0], weight.shape[0], ho * wo
    og, k = o // groups, cols.shape[1] // groups
    out = rt.xp.empty((n, o, ho, wo), dtype=x.dtype)
    flat_out, w2 = out.reshape(n, o, p), weight.reshape(o, k)
    for g in range(groups):  # out[:, g] (N, O/g, P) = weight[g] (O/g, K) · cols[:, g] (N, K, P), weight broadcast
        _gemm(flat_out[:, g * og:(g + 1) * og], (o * p, p, 1), w2[g * og:(g + 1) * og], (0, k, 1),
              cols[:, g * k:(g + 1) * k], (cols.shape[1] * p, p, 1), n, og, p, k)
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out


@in_float32
def conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs=(True, True)):
    if not _conv_applies(x, weight, stride, padding, dilation) or _suffix(dout, x) is None:
        return numpy_ref.conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs)
    dout, x, weight = _contiguous(dout), _contiguous(x), _contiguous(weight)
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    p = dout.shape[2] * dout.shape[3]
    og, k = o // groups, c // groups * kh * kw
    dx = dweight = None
    if needs[1]:
        # dweight[g] = sum over images and positions of dout[n, g] (O/g, P) · cols[n, g]^T: one GEMM over the
        # N*P positions, on copies that put the images next to the positions (O, N*P) and (C*kh*kw, N*P).
        cols, _ = _im2col(x, weight, stride, padding, dilation)
        dout_t = rt.xp.ascontiguousarray(dout.reshape(n, o, p).transpose(1, 0, 2)).reshape(o, n * p)
        cols_t = rt.xp.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(cols.shape[1], n * p)
        dweight = rt.xp.empty((o, k), dtype=x.dtype)
        for g in range(groups):  # B = cols_t[g]^T (N*P, K): row stride 1, column stride N*P
            _gemm(dweight[g * og:(g + 1) * og], (0, k, 1), dout_t[g * og:(g + 1) * og], (0, n * p, 1),
                  cols_t[g * k:(g + 1) * k], (0, 1, n * p), 1, og, k, n * p)
        dweight = dweight.reshape(weight.shape)
    if needs[0]:
        # dcols[n, g] (K, P) = weight[g]^T (K, O/g) · dout[n, g] (O/g, P), then col2im gathers them into dx.
        ho, wo, geometry = _conv_geometry(x, weight, stride, padding, dilation)
        dcols = rt.xp.empty((n, c * kh * kw, p), dtype=x.dtype)
        w2, d2 = weight.reshape(o, k), dout.reshape(n, o, p)
        for g in range(groups):  # A = weight[g]^T: row stride 1, column stride K, broadcast over the images
            _gemm(dcols[:, g * k:(g + 1) * k], (c * kh * kw * p, p, 1), w2[g * og:(g + 1) * og], (0, 1, k),
                  d2[:, g * og:(g + 1) * og], (o * p, p, 1), n, k, p, og)
        dx = rt.xp.empty_like(x)
        _launch("conv", f"col2im_{_SUFFIX[x.dtype]}", (_blocks(dx.size, 256),), (256,), dx, dcols, *geometry)
    return dx, dweight


# ---- rnn.cu: the gate math of one LSTM / GRU step; the sequence loops are numpy_ref's around these cells and
# gemm.cu (the recurrent products h W_hh^T, and their gradients) --------------------------------------------


def _cell_launch(name, outputs, inputs, batch, hidden):
    _launch("rnn", name, (_blocks(batch * hidden, 256),), (256,), *outputs, *inputs, _i64(batch), _i32(hidden))


@in_float32
def lstm_cell_forward(gates_x, gates_h, c):
    if _suffix(gates_x, gates_h, c) is None:
        return numpy_ref.lstm_cell_forward(gates_x, gates_h, c)
    (batch, hidden), xp = c.shape, rt.xp
    hc, cache = xp.empty((2, batch, hidden), dtype=c.dtype), xp.empty((batch, 5 * hidden), dtype=c.dtype)
    if batch:
        _cell_launch(f"lstm_cell_forward_{_SUFFIX[c.dtype]}", (hc, cache),
                     (_contiguous(gates_x), _contiguous(gates_h), _contiguous(c)), batch, hidden)
    return hc, cache


@in_float32
def lstm_cell_backward(dh, dc_new, cache, c):
    if _suffix(dh, cache, c, *([] if dc_new is None else [dc_new])) is None:
        return numpy_ref.lstm_cell_backward(dh, dc_new, cache, c)
    (batch, hidden), xp = c.shape, rt.xp
    dgates, dc = xp.empty((batch, 4 * hidden), dtype=c.dtype), xp.empty((batch, hidden), dtype=c.dtype)
    if batch:
        _cell_launch(f"lstm_cell_backward_{_SUFFIX[c.dtype]}", (dgates, dc),
                     (_contiguous(dh), _opt(dc_new), _contiguous(cache), _contiguous(c)), batch, hidden)
    return dgates, dc


@in_float32
def gru_cell_forward(gates_x, gates_h, h):
    if _suffix(gates_x, gates_h, h) is None:
        return numpy_ref.gru_cell_forward(gates_x, gates_h, h)
    (batch, hidden), xp = h.shape, rt.xp
    h_new, cache = xp.empty((batch, hidden), dtype=h.dtype), xp.empty((batch, 4 * hidden), dtype=h.dtype)
    if batch:
        _cell_launch(f"gru_cell_forward_{_SUFFIX[h.dtype]}", (h_new, cache),
                     (_contiguous(gates_x), _contiguous(gates_h), _contiguous(h)), batch, hidden)
    return h_new, cache


@in_float32
def gru_cell_backward(dh_new, cache, h):
    if _suffix(dh_new, cache, h) is None:
        return numpy_ref.gru_cell_backward(dh_new, cache, h)
    (batch, hidden), xp = h.shape, rt.xp
    dgates_x, dgates_h = (xp.empty((batch, 3 * hidden), dtype=h.dtype) for _ in range(2))
    dh = xp.empty((batch, hidden), dtype=h.dtype)
    if batch:
        _cell_launch(f"gru_cell_backward_{_SUFFIX[h.dtype]}", (dgates_x, dgates_h, dh),
                     (_contiguous(dh_new), _contiguous(cache), _contiguous(h)), batch, hidden)
    return dgates_x, dgates_h, dh


def lstm_scan_forward(gates_x, bias, h0, c0, w_hh, reverse):
    return numpy_ref.lstm_scan_forward(gates_x, bias, h0, c0, w_hh, reverse, cell_forward=lstm_cell_forward,
                                       matmul=matmul)


def lstm_scan_backward(grad, cache, out, h0, c0, w_hh, reverse):
    return numpy_ref.lstm_scan_backward(grad, cache, out, h0, c0, w_hh, reverse, cell_backward=lstm_cell_backward,
                                       matmul=matmul)


def gru_scan_forward(gates_x, bias, h0, w_hh, b_hh, reverse):
    return numpy_ref.gru_scan_forward(gates_x, bias, h0, w_hh, b_hh, reverse, cell_forward=gru_cell_forward,
                                       matmul=matmul)


def gru_scan_backward(grad, cache, out, h0, w_hh, reverse):
    return numpy_ref.gru_scan_backward(grad, cache, out, h0, w_hh, reverse, cell_backward=gru_cell_backward,
                                       matmul=matmul)
