"""The NumPy reference backend: every primitive of `base.PRIMITIVES`, written for clarity.

This module is the oracle every accelerated kernel (C++, Numba, CUDA) is tested against, so each
function is the most obvious correct NumPy expression, with the numerically stable form where it
matters (softmax, log-softmax, sigmoid). `dtype` arguments are NumPy dtypes.
"""
from __future__ import annotations

import math

import numpy as np

# ---- creation and conversion ------------------------------------------------------------------


def asarray(data, dtype):
    return np.array(data, dtype=dtype, copy=True)


def from_host(array):
    return array


def to_host(x):
    return x


def empty(shape, dtype):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype):
    return np.ones(shape, dtype=dtype)


def full(shape, value, dtype):
    return np.full(shape, value, dtype=dtype)


def arange(start, stop, step, dtype):
    return np.arange(start, stop, step, dtype=dtype)


def linspace(start, stop, steps, dtype):
    return np.linspace(start, stop, steps, dtype=dtype)


def eye(n, m, dtype):
    return np.eye(n, m, dtype=dtype)


def astype(x, dtype):
    return x.astype(dtype, copy=True)


def copy_(dst, src):
    np.copyto(dst, src)


# ---- random numbers ---------------------------------------------------------------------------


def make_generator(seed):
    return np.random.default_rng(seed)


def rand(gen, shape, dtype):
    return gen.random(shape, dtype=np.float64).astype(dtype, copy=False)


def randn(gen, shape, dtype):
    return gen.standard_normal(shape, dtype=np.float64).astype(dtype, copy=False)


def randint(gen, low, high, shape, dtype):
    # Drawn as int64 (NumPy draws no float integers), then cast: randint_like of a float tensor is float.
    return gen.integers(low, high, size=shape, dtype=np.int64).astype(dtype, copy=False)


# ---- elementwise, unary -----------------------------------------------------------------------

neg, abs, sign, exp, log, sqrt = np.negative, np.abs, np.sign, np.exp, np.log, np.sqrt
sin, cos, tanh, logical_not, isfinite = np.sin, np.cos, np.tanh, np.logical_not, np.isfinite


def rsqrt(x):
    return 1 / np.sqrt(x)


def sigmoid(x):
    # exp(-|x|) never overflows: for x >= 0 use 1 / (1 + e^-x), for x < 0 the equal e^x / (1 + e^x).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def relu(x):
    return np.maximum(x, 0)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _erf(x):
    # NumPy has no erf ufunc; math.erf per element is exact and fine for a reference. (asarray, not
    # .astype: on a 0-d input frompyfunc returns a Python float.)
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)


def gelu_forward(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x * _INV_SQRT_2))


def gelu_backward(dout, x, approximate):
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x**2)
        return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
    cdf = 0.5 * (1 + _erf(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return dout * (cdf + x * pdf)


def clip(x, lo, hi):
    return np.clip(x, lo, hi)


# ---- elementwise, binary ----------------------------------------------------------------------

add, sub, mul, div, pow = np.add, np.subtract, np.multiply, np.true_divide, np.power
maximum, minimum, where = np.maximum, np.minimum, np.where
eq, ne, lt, le, gt, ge = np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal
logical_and, logical_or = np.logical_and, np.logical_or

# ---- reductions -------------------------------------------------------------------------------


def sum(x, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims)


def max(x, axis, keepdims):
    return np.max(x, axis=axis, keepdims=keepdims)


def min(x, axis, keepdims):
    return np.min(x, axis=axis, keepdims=keepdims)


def argmax(x, axis, keepdims):
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)


def argmin(x, axis, keepdims):
    return np.argmin(x, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)


def _stable_max(x, axis, keep_posinf=False):
    # The row max, with -inf rows mapped to 0 so that x - max stays -inf (not nan) for them; +inf too,
    # unless keep_posinf (softmax: inf - inf = nan makes the whole row nan, as in PyTorch; logsumexp is inf).
    # initial=-inf: a row of no elements (an empty reduced dim) has max -inf, hence 0, instead of raising.
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return np.where(m == -np.inf, 0, m) if keep_posinf else np.where(np.isfinite(m), m, 0)


def logsumexp(x, axis, keepdims):
    m = _stable_max(x, axis)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax_forward(x, axis):
    # Subtracting the row max makes every exponent <= 0: no overflow for any finite input.
    # A row of all -inf gives 0/0 = nan, as in PyTorch.
    with np.errstate(invalid="ignore"):
        e = np.exp(x - _stable_max(x, axis, keep_posinf=True))
        return e / np.sum(e, axis=axis, keepdims=True)


def softmax_backward(dout, out, axis):
    # d softmax: J = diag(s) - s s^T, so J^T g = s * (g - <g, s>) along the row.
    return out * (dout - np.sum(dout * out, axis=axis, keepdims=True))


def log_softmax_forward(x, axis):
    with np.errstate(divide="ignore", invalid="ignore"):  # an all -inf row: -inf - log(0) = nan, as in PyTorch
        shifted = x - _stable_max(x, axis, keep_posinf=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(dout, out, axis):
    # d log_softmax: g - softmax * sum(g) along the row, with softmax = exp(out).
    return dout - np.exp(out) * np.sum(dout, axis=axis, keepdims=True)


# ---- linear algebra ---------------------------------------------------------------------------


def matmul(a, b):
    return np.matmul(a, b)


# ---- layout and indexing ----------------------------------------------------------------------


def reshape(x, shape):
    return np.reshape(x, shape)


def transpose(x, axes):
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def contiguous(x):
    return np.asarray(x, order="C")  # not np.ascontiguousarray, which turns a 0-d array into shape (1,)


def getitem(x, index):
    # A trailing `...` makes an all-integer index return a 0-d view instead of a NumPy scalar (a copy),
    # so that writes through x[i] reach x; it changes nothing else.
    index = index if isinstance(index, tuple) else (index,)
    if not [item for item in index if item is Ellipsis]:  # (`any` is this module's primitive)
        index = index + (Ellipsis,)
    return x[index]


def index_add(shape, index, values, dtype):
    out = np.zeros(shape, dtype=dtype)
    np.add.at(out, index, values)  # unbuffered: repeated indices accumulate
    return out


def setitem_(x, index, values):
    x[index] = values


def concatenate(arrays, axis):
    return np.concatenate(arrays, axis=axis)


def pad(x, pad_width, value):
    return np.pad(x, pad_width, mode="constant", constant_values=value)


def tril(x, k):
    return np.tril(x, k)


def triu(x, k):
    return np.triu(x, k)


def take_along_axis(x, index, axis):
    return np.take_along_axis(x, index, axis=axis)


def scatter_add_along_axis(shape, index, values, axis, dtype):
    out = np.zeros(shape, dtype=dtype)
    # Build a full index tuple: `index` along `axis`, the broadcast position along every other axis.
    grids = list(np.indices(index.shape, sparse=True))
    grids[axis] = index
    np.add.at(out, tuple(grids), values)
    return out


def tile(x, reps):
    return np.tile(x, reps)


def nonzero(x):
    return tuple(i.astype(np.int64, copy=False) for i in np.nonzero(x))


def any(x):
    return bool(np.any(x))


def all(x):
    return bool(np.all(x))
