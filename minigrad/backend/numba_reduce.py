"""Numba reductions along any dims (sum, max, min, argmax, argmin, logsumexp) and softmax / log-softmax.

Reductions. Any choice of axes is brought to one of two layouts, without a copy when the reduced axes
are adjacent (C order):

    (pre, n, post)   reduce the middle axis: post == 1 is the "rows" kernel (each of the pre rows is
                     reduced by one task, a contiguous loop that LLVM vectorizes with several partial
                     accumulators: the "reassoc" flag), post > 1 the "columns" kernel (one task per
                     (pre, block of 64 columns): for each of the n rows it updates 64 running values
                     at once, reading 64 contiguous elements, which vectorizes across columns).

Axes that are not adjacent are first moved last (a transposed copy), which gives post == 1. Sums
accumulate in float64, also for float32 input (more accurate than NumPy's pairwise float32 sum; the
cost is a conversion per element, hidden behind the memory traffic). max / min / argmax / argmin share
one kernel: the running value is replaced when a strictly better value comes (so the first of equal
values wins, as in NumPy) or when a nan comes and the running value is not yet nan (so the first nan
wins and sticks: NumPy's max propagates nan, argmax points at the first one).

Softmax and log-softmax normalize the last axis (another axis is moved last, as in the C++ backend):
one task per row, three passes over a row that stays in cache (max, sum of exp, write).
Integer and bool inputs, and empty ones, go to the NumPy reference.

Helpers are inlined into the kernels at Numba IR level (inline="always": a call inside a loop keeps
LLVM from vectorizing it) and take the 2-D array and a row number rather than the row x[r] (a view
costs a reference-count update, which dominated the work of short rows).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, leave_to_numpy, supported
from minigrad.backend.numba_math import exp

BLOCK = 64  # columns per task in the "columns" kernels: 256 bytes of float32, 4 cache lines per row


# ---- kernels ---------------------------------------------------------------------------------------

@njit(inline="always")
def _better(v, best, largest):
    # Whether v replaces the running extreme `best`: strictly larger (smaller), or the first nan.
    return (v > best if largest else v < best) or (v != v and best == best)


@njit(inline="always")
def row_max(x, r):
    """The max of row r of x (2-D) in x's dtype: nan if the row holds a nan, -inf if it is empty."""
    m = x.dtype.type(-np.inf)  # (a float64 -inf would make every comparison convert)
    for j in range(x.shape[1]):
        if _better(x[r, j], m, True):
            m = x[r, j]
    return m


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _sum_rows(out, x):
    # out (pre,) = x (pre, n) summed along rows, in float64.
    for p in prange(x.shape[0]):
        acc = 0.0
        for i in range(x.shape[1]):
            acc += x[p, i]
        out[p] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _sum_cols(out, x):
    # out (pre, post) = x (pre, n, post) summed along n; one task per (p, block of columns).
    pre, n, post = x.shape
    nblocks = (post + BLOCK - 1) // BLOCK
    for task in prange(pre * nblocks):
        p, j0, j1 = _column_block(task, nblocks, post)
        acc = np.zeros(j1 - j0)  # float64
        for i in range(n):
            for j in range(j0, j1):
                acc[j - j0] += x[p, i, j]
        for j in range(j0, j1):
            out[p, j] = acc[j - j0]


@njit(parallel=True, cache=True)
def _extreme_rows(values, index, x, largest):
    # values, index (pre,): the max (largest) or min of each row of x (pre, n), and its first position.
    for p in prange(x.shape[0]):
        best, at = x[p, 0], 0
        for i in range(1, x.shape[1]):
            if _better(x[p, i], best, largest):
                best, at = x[p, i], i
        values[p], index[p] = best, at


@njit(parallel=True, cache=True)
def _extreme_cols(values, index, x, largest):
    # values, index (pre, post): the extreme along n of x (pre, n, post); one task per (p, column block).
    pre, n, post = x.shape
    nblocks = (post + BLOCK - 1) // BLOCK
    for task in prange(pre * nblocks):
        p, j0, j1 = _column_block(task, nblocks, post)
        for j in range(j0, j1):
            values[p, j], index[p, j] = x[p, 0, j], 0
        for i in range(1, n):
            for j in range(j0, j1):
                if _better(x[p, i, j], values[p, j], largest):
                    values[p, j], index[p, j] = x[p, i, j], i


@njit(inline="always")
def _column_block(task, nblocks, post):
    # Task number -> (p, first column, end column) of its block of BLOCK columns (the last may be short).
    p, j0 = task // nblocks, (task % nblocks) * BLOCK
    return p, j0, (j0 + BLOCK if j0 + BLOCK < post else post)  # (not min(): in this module, min is a primitive)


@njit(inline="always")
def _finite_or_zero(m):
    # The shift of a stable logsumexp: the max, or 0 when it is +-inf or nan (so that x - shift keeps
    # -inf rows at -inf, and +inf / nan rows give inf / nan, as in NumPy).
    return m if math.isfinite(m) else 0.0


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _logsumexp_rows(out, x):
    # out (pre,) = m + log(sum(exp(x - m))) over each row of x (pre, n), m the row max (see _finite_or_zero).
    for p in prange(x.shape[0]):
        m = x.dtype.type(_finite_or_zero(row_max(x, p)))
        acc = 0.0
        for i in range(x.shape[1]):
            acc += exp(x[p, i] - m)
        out[p] = math.log(acc) + m


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _logsumexp_cols(out, x):
    # out (pre, post) = logsumexp along n of x (pre, n, post): per column block, a max pass, then a sum pass.
    pre, n, post = x.shape
    nblocks = (post + BLOCK - 1) // BLOCK
    for task in prange(pre * nblocks):
        p, j0, j1 = _column_block(task, nblocks, post)
        m = np.full(j1 - j0, -np.inf, x.dtype)
        for i in range(n):
            for j in range(j0, j1):
                if _better(x[p, i, j], m[j - j0], True):
                    m[j - j0] = x[p, i, j]
        for j in range(j1 - j0):
            m[j] = _finite_or_zero(m[j])
        acc = np.zeros(j1 - j0)
        for i in range(n):
            for j in range(j0, j1):
                acc[j - j0] += exp(x[p, i, j] - m[j - j0])
        for j in range(j0, j1):
            out[p, j] = math.log(acc[j - j0]) + m[j - j0]


@njit(inline="always")
def softmax_row(out, x, r, log):
    """Row r of x (R, D) -> row r of out: m = max (0 for a -inf row, which then gives 0 / 0 = nan, as
    NumPy), e = exp(x - m), then out = e / sum(e) (softmax) or (x - m) - log(sum(e)) (log-softmax).
    The max skips nans (a plain compare-and-select, twice as fast as row_max): a nan still makes its
    exp, the sum and so the whole row nan, which is the reference's result."""
    m = x.dtype.type(-np.inf)
    for j in range(x.shape[1]):
        m = x[r, j] if x[r, j] > m else m
    if m == -np.inf:
        m = x.dtype.type(0)
    acc = 0.0
    for j in range(x.shape[1]):
        e = exp(x[r, j] - m)
        out[r, j] = e  # (also for log-softmax, which overwrites it: no branch in the loop, so it vectorizes)
        acc += e
    if log:
        shift = m + x.dtype.type(math.log(acc))
        for j in range(x.shape[1]):
            out[r, j] = x[r, j] - shift
    else:
        inv = x.dtype.type(1.0 / acc)
        for j in range(x.shape[1]):
            out[r, j] *= inv


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_rows(out, x, log):
    # One task per row of x (R, D).
    for r in prange(x.shape[0]):
        softmax_row(out, x, r, log)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_backward_rows(dx, dout, out, log):
    # softmax: dx = out * (dout - sum(dout * out)); log-softmax: dx = dout - exp(out) * sum(dout).
    for r in prange(dout.shape[0]):
        acc = 0.0
        for j in range(dout.shape[1]):
            acc += dout[r, j] * out[r, j] if not log else dout[r, j]
        s = dout.dtype.type(acc)
        for j in range(dout.shape[1]):
            dx[r, j] = dout[r, j] - exp(out[r, j]) * s if log else out[r, j] * (dout[r, j] - s)


# ---- layouts ---------------------------------------------------------------------------------------

def _normalized_axes(axis, ndim):
    """axis (None, int or tuple, maybe negative) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted({a % ndim for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)}))


def _pre_n_post(x, axes):
    """x as a C-contiguous (pre, n, post) array whose middle axis holds the reduced elements."""
    shape = x.shape
    if axes == tuple(range(axes[0], axes[-1] + 1)):  # adjacent axes: a reshape
        pre, n = math.prod(shape[:axes[0]]), math.prod(shape[axes[0]:axes[-1] + 1])
        return kernel_array(x).reshape(pre, n, -1)
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.ascontiguousarray(np.transpose(x, kept + list(axes)))  # reduced axes last: post == 1
    return moved.reshape(math.prod(shape[a] for a in kept), -1, 1)


def _reduce(x, axis, keepdims, rows_kernel, cols_kernel, outputs):
    """Run a reduction over `axis` and shape its results (a list, one per output dtype in `outputs`,
    None for x's dtype) as NumPy would with `keepdims`; None if the kernels do not cover x."""
    if not supported(x) or x.ndim == 0 or x.size == 0 or leave_to_numpy(x):
        return None
    axes = _normalized_axes(axis, x.ndim)
    if not axes:
        return None
    x3 = _pre_n_post(x, axes)
    pre, _, post = x3.shape
    results = [np.empty((pre, post), x.dtype if dt is None else dt) for dt in outputs]
    if post == 1:
        launch(rows_kernel, x.size, *[r.reshape(pre) for r in results], x3.reshape(pre, -1))
    else:
        launch(cols_kernel, x.size, *results, x3)
    shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape)) if keepdims else \
        tuple(n for a, n in enumerate(x.shape) if a not in axes)
    return [r.reshape(shape) for r in results]


def _extreme(x, axis, keepdims, largest, want_index):
    out = _reduce(x, axis, keepdims,
                  lambda v, i, x2: _extreme_rows(v, i, x2, largest),
                  lambda v, i, x3: _extreme_cols(v, i, x3, largest), [None, np.int64])
    return None if out is None else out[1 if want_index else 0]


# ---- primitives ------------------------------------------------------------------------------------

def sum(x, axis, keepdims):
    axes = _normalized_axes(axis, x.ndim) if supported(x) and x.ndim and not leave_to_numpy(x) else ()
    runs = _adjacent_runs(axes)
    if len(runs) > 1 and x.size:
        # Axes in several separate runs, e.g. (0, 2, 3) of (N, C, H, W) for a conv bias gradient: sum the last
        # run first (a reshape, no copy: here N*C rows of H*W), then the other runs of the smaller result,
        # instead of one transposed copy of all of x (_pre_n_post).
        partial = sum(x, runs[-1], True)
        out = sum(partial, tuple(a for run in runs[:-1] for a in run), True)
        return out if keepdims else out.reshape(tuple(n for a, n in enumerate(x.shape) if a not in axes))
    out = _reduce(x, axis, keepdims, _sum_rows, _sum_cols, [None])
    return numpy_ref.sum(x, axis, keepdims) if out is None else out[0]


def _adjacent_runs(axes):
    """Sorted axes cut into runs of consecutive ones: (0, 2, 3) -> [(0,), (2, 3)]."""
    runs = []
    for a in axes:
        if runs and a == runs[-1][-1] + 1:
            runs[-1] += (a,)
        else:
            runs.append((a,))
    return runs


def max(x, axis, keepdims):
    out = _extreme(x, axis, keepdims, True, False)
    return numpy_ref.max(x, axis, keepdims) if out is None else out


def min(x, axis, keepdims):
    out = _extreme(x, axis, keepdims, False, False)
    return numpy_ref.min(x, axis, keepdims) if out is None else out


def argmax(x, axis, keepdims):
    out = _extreme(x, axis, keepdims, True, True)
    return numpy_ref.argmax(x, axis, keepdims) if out is None else out


def argmin(x, axis, keepdims):
    out = _extreme(x, axis, keepdims, False, True)
    return numpy_ref.argmin(x, axis, keepdims) if out is None else out


def logsumexp(x, axis, keepdims):
    out = _reduce(x, axis, keepdims, _logsumexp_rows, _logsumexp_cols, [None])
    return numpy_ref.logsumexp(x, axis, keepdims) if out is None else out[0]


def _last_axis_rows(x, axis):
    """x with `axis` moved last, as a C-contiguous (rows, n) array (a copy only if it has to be)."""
    moved = np.moveaxis(x, axis, -1)
    return kernel_array(moved).reshape(-1, moved.shape[-1]), moved.shape


def _rowwise(kernel, reference, axis, *arrays, log):
    """Apply a row kernel to the arrays seen as rows along `axis`; the result has their shape."""
    if not supported(*arrays) or arrays[0].ndim == 0 or arrays[0].size == 0:
        return reference(*arrays, axis)
    rows = [_last_axis_rows(a, axis) for a in arrays]
    out = np.empty_like(rows[0][0])
    launch(kernel, out.size, out, *[r for r, _ in rows], log)
    return np.moveaxis(out.reshape(rows[0][1]), -1, axis)


def softmax_forward(x, axis):
    return _rowwise(_softmax_rows, numpy_ref.softmax_forward, axis, x, log=False)


def log_softmax_forward(x, axis):
    return _rowwise(_softmax_rows, numpy_ref.log_softmax_forward, axis, x, log=True)


def softmax_backward(dout, out, axis):
    return _rowwise(_softmax_backward_rows, numpy_ref.softmax_backward, axis, dout, out, log=False)


def log_softmax_backward(dout, out, axis):
    return _rowwise(_softmax_backward_rows, numpy_ref.log_softmax_backward, axis, dout, out, log=True)
