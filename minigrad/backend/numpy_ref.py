"""The NumPy reference backend: every primitive of `base.PRIMITIVES`, written for clarity.

This module is the oracle every accelerated kernel (C++, Numba, CUDA) is tested against, so each
function is the most obvious correct NumPy expression, with the numerically stable form where it
matters (softmax, log-softmax, sigmoid). `dtype` arguments are NumPy dtypes.

It also runs on CuPy arrays: the CUDA backend falls back to it for the primitives that have no kernel
of their own. NumPy hands a call such as `np.exp(a)` or `np.sum(a)` on a CuPy array to CuPy (its
`__array_ufunc__` / `__array_function__` protocols), so the code reads as plain NumPy; the one thing
to spell out is where a function creates an array from a shape (`np.zeros(shape)` has no array
argument to dispatch on), or converts an array (np.ascontiguousarray, np.asarray: NumPy does not
dispatch those on their argument): those name the array module of their inputs, `_xp(a)`.

16-bit floats (float16, bfloat16) follow the contract of base.PRIMITIVES: a primitive marked
`@in_float32` computes in float32 and rounds each output once to the input's dtype; the unmarked ones
(one NumPy ufunc per element, layout, indexing) are exact or round once per element by themselves.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from minigrad.dtypes import HALF_NP_DTYPES

# ---- 16-bit floats: computed in float32, rounded once --------------------------------------------
# NumPy stores float16 (and bfloat16, through ml_dtypes) but computing in them goes wrong in three ways:
# slowly (no BLAS for float16 matmul), inaccurately (a bfloat16 sum accumulates in 8 bits of mantissa:
# 10,000 ones sum to 256) or with a silent upcast (bfloat16 * 0.5 and bfloat16 @ bfloat16 are float32).
# So the primitives that do more than one rounding per element widen their 16-bit inputs to float32 and
# round their float32 outputs once, as GPU kernels do (16-bit products are exact in float32).


def in_float32(fn=None, *, keep_float32=()):
    """Decorate a primitive: when an array argument is float16 or bfloat16, the 16-bit arrays are widened
    to float32, `fn` runs, and its float32 outputs are rounded to that 16-bit dtype, except the outputs
    at the positions `keep_float32` (statistics that backward reads, such as attention's lse). Other
    dtypes call `fn` directly."""
    if fn is None:
        return functools.partial(in_float32, keep_float32=keep_float32)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        half = _half_dtype(args) or (_half_dtype(kwargs.values()) if kwargs else None)
        if half is None:  # (the common case, kept cheap: this runs on every float32 call too)
            return fn(*args, **kwargs)
        out = fn(*map(_widen, args), **{k: _widen(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(o if i in keep_float32 else _round(o, half) for i, o in enumerate(out))
        return _round(out, half)
    return wrapper


def _half_dtype(values):
    """The 16-bit dtype of the first float16 / bfloat16 array among `values`, or None."""
    for a in values:
        dtype = getattr(a, "dtype", None)
        if dtype is not None and dtype in HALF_NP_DTYPES:
            return dtype
    return None


def _widen(a):
    return a.astype(np.float32) if _half_dtype((a,)) is not None else a


def _round(out, half):
    # (any array or NumPy scalar: a full reduction returns a scalar)
    return out.astype(half) if getattr(out, "dtype", None) == np.float32 else out


def _xp(a):
    """The array module of `a`: numpy, or cupy for a CuPy array."""
    return sys.modules["cupy"] if type(a).__module__.startswith("cupy") else np


# ---- creation and conversion ------------------------------------------------------------------


def asarray(data, dtype):
    return np.array(data, dtype=dtype)  # np.array copies by default


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


@in_float32
def rsqrt(x):
    return 1 / np.sqrt(x)


@in_float32
def sigmoid(x):
    # exp(-|x|) never overflows: for x >= 0 use 1 / (1 + e^-x), for x < 0 the equal e^x / (1 + e^x).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def relu(x):
    return np.maximum(x, 0)


def relu_backward(dout, out):
    # the subgradient 0 at x == 0; a nan (out is nan) passes the gradient, as in PyTorch
    return where(out <= 0, 0, dout)


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _erf(x):
    # NumPy has no erf ufunc; math.erf per element is exact and fine for a reference. (asarray, not
    # .astype: on a 0-d input frompyfunc returns a Python float.) A device array has no frompyfunc.
    if _xp(x) is not np:
        return _device_erf(x)
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)


def _device_erf(x):
    """erf of a CuPy array (CuPy's own, in cupyx.scipy.special)."""
    from cupyx.scipy.special import erf
    return erf(x)


@in_float32
def gelu_forward(x, approximate):
    if approximate == "tanh":
        # x * x * x, not x**3: NumPy's float32 power is ~100x slower than two multiplies
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))
    return 0.5 * x * (1 + _erf(x * _INV_SQRT_2))


@in_float32
def gelu_backward(dout, x, approximate):
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        t = np.tanh(inner)
        dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * (x * x))
        return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
    cdf = 0.5 * (1 + _erf(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return dout * (cdf + x * pdf)


@in_float32  # (NumPy clips bfloat16 in float32 and returns float32)
def clip(x, lo, hi):
    return np.clip(x, lo, hi)


# ---- elementwise, binary ----------------------------------------------------------------------

add, sub, mul, div, pow = np.add, np.subtract, np.multiply, np.true_divide, np.power
maximum, minimum = np.maximum, np.minimum


def where(cond, a, b):
    out = np.where(cond, a, b)
    if out.dtype != np.float32 or _xp(out) is np:
        return out
    # CuPy's where has no bfloat16 version and selects in float32: when the array operands are all of one
    # 16-bit dtype, the result is turned back into it (exactly, for values that came from it).
    kinds = {x.dtype for x in (a, b) if hasattr(x, "dtype")}
    half = kinds.pop() if len(kinds) == 1 else None
    return out.astype(half) if half in HALF_NP_DTYPES else out
eq, ne, lt, le, gt, ge = np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal
logical_and, logical_or = np.logical_and, np.logical_or

# ---- reductions -------------------------------------------------------------------------------


@in_float32
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
    # A row of no elements (an empty reduced dim) has max -inf, hence 0, instead of raising: NumPy's
    # initial=-inf (also its fast path), which CuPy's max does not take.
    if _xp(x) is np:
        m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    else:
        axes = range(x.ndim) if axis is None or x.ndim == 0 else \
            [a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,))]
        empty = [a for a in axes if x.shape[a] == 0]  # (`any` is this module's primitive)
        m = (_xp(x).full([1 if d in axes else n for d, n in enumerate(x.shape)], -np.inf, dtype=x.dtype) if empty
             else np.max(x, axis=axis, keepdims=True))
    return np.where(m == -np.inf, 0, m) if keep_posinf else np.where(np.isfinite(m), m, 0)


@in_float32
def logsumexp(x, axis, keepdims):
    m = _stable_max(x, axis)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@in_float32
def softmax_forward(x, axis):
    # Subtracting the row max makes every exponent <= 0: no overflow for any finite input.
    # A row of all -inf gives 0/0 = nan, as in PyTorch.
    with np.errstate(invalid="ignore"):
        e = np.exp(x - _stable_max(x, axis, keep_posinf=True))
        return e / np.sum(e, axis=axis, keepdims=True)


@in_float32
def softmax_backward(dout, out, axis):
    # d softmax: J = diag(s) - s s^T, so J^T g = s * (g - <g, s>) along the row.
    return out * (dout - np.sum(dout * out, axis=axis, keepdims=True))


@in_float32
def log_softmax_forward(x, axis):
    with np.errstate(divide="ignore", invalid="ignore"):  # an all -inf row: -inf - log(0) = nan, as in PyTorch
        shifted = x - _stable_max(x, axis, keep_posinf=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@in_float32
def log_softmax_backward(dout, out, axis):
    # d log_softmax: g - softmax * sum(g) along the row, with softmax = exp(out).
    return dout - np.exp(out) * np.sum(dout, axis=axis, keepdims=True)


# ---- linear algebra ---------------------------------------------------------------------------


@in_float32
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
    return _xp(x).asarray(x, order="C")  # not ascontiguousarray, which turns a 0-d array into shape (1,)


def getitem(x, index):
    # A trailing `...` makes an all-integer index return a 0-d view instead of a NumPy scalar (a copy),
    # so that writes through x[i] reach x; it changes nothing else.
    index = index if isinstance(index, tuple) else (index,)
    if not [item for item in index if item is Ellipsis]:  # (`any` is this module's primitive)
        index = index + (Ellipsis,)
    return x[index]


def accumulate_in_float32(index_add):
    """Decorate an index_add_(out, index, values): when out and values are both float16 or both bfloat16,
    each element's value and all its additions are computed in a float32 copy of out, rounded once
    (base.py's contract); other dtypes call `index_add` directly."""
    @functools.wraps(index_add)
    def wrapper(out, index, values):
        if out.dtype not in HALF_NP_DTYPES or values.dtype != out.dtype:
            return index_add(out, index, values)
        wide = out.astype(np.float32)
        index_add(wide, index, values.astype(np.float32))
        out[...] = wide.astype(out.dtype)
        return None
    return wrapper


@accumulate_in_float32
def index_add_(out, index, values):
    if _has_index_array(index):
        _xp(out).add.at(out, index, values)  # unbuffered: repeated indices accumulate (CuPy: cupy.add.at)
    else:
        out[index] += values  # a basic index selects each element at most once


def _has_index_array(index) -> bool:
    """Whether a normalized index holds an integer array (NumPy's "advanced" indexing)."""
    items = index if isinstance(index, tuple) else (index,)
    return [i for i in items if hasattr(i, "dtype")] != []  # (a NumPy or a CuPy array; `any` is a primitive here)


def setitem_(x, index, values):
    x[index] = values


def concatenate(arrays, axis):
    return np.concatenate(arrays, axis=axis)


def pad(x, pad_width, value):
    return np.pad(x, pad_width, mode="constant", constant_values=value)


def tril(x, k):
    return np.tril(x, k).astype(x.dtype, copy=False)  # (CuPy's tril runs its where: bfloat16 comes back float32)


def triu(x, k):
    return np.triu(x, k).astype(x.dtype, copy=False)  # (see tril)


def take_along_axis(x, index, axis):
    return np.take_along_axis(x, index, axis=axis)


def scatter_add_along_axis(shape, index, values, axis, dtype):
    out = _xp(values).zeros(shape, dtype=dtype)
    index_add_(out, along_axis_index(index, axis), values)  # (16 bits: in float32, see index_add_)
    return out


def along_axis_index(index, axis):
    """The full index tuple that take_along_axis(x, index, axis) reads x at: `index` along `axis`, the
    (broadcast) position along every other axis."""
    xp, ndim = _xp(index), index.ndim
    grids = [xp.arange(n).reshape((1,) * d + (n,) + (1,) * (ndim - d - 1)) for d, n in enumerate(index.shape)]
    grids[axis] = index
    return tuple(grids)


def tile(x, reps):
    return np.tile(x, reps)


def nonzero(x):
    return tuple(i.astype(np.int64, copy=False) for i in np.nonzero(x))


def any(x):
    return bool(np.any(x))


def all(x):
    return bool(np.all(x))


# ---- layer norm, embedding, dropout ----------------------------------------------------------------


@in_float32(keep_float32=(1, 2))
def layer_norm_forward(x, weight, bias, eps):
    # Each row of x (R, D) is normalized on its own: xhat = (x - mean) * rstd with rstd = 1/sqrt(var + eps)
    # (the biased variance), then scaled and shifted: out = xhat * weight + bias. mean and rstd (R,) are
    # returned so that backward need not recompute them.
    mean = np.mean(x, axis=-1)
    centered = x - mean[:, None]
    rstd = 1 / np.sqrt(np.mean(centered * centered, axis=-1) + eps)
    out = centered * rstd[:, None]
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


@in_float32
def layer_norm_backward(dout, x, weight, mean, rstd):
    # With g = dout * weight (the gradient reaching xhat), one pass over each row gives
    #   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)):
    # the two means remove the components along the directions that normalization projects out (a
    # shift of the whole row, and a scaling of it). The affine gradients sum over the rows:
    # dweight = sum(dout * xhat), dbias = sum(dout). The kernel is not told whether there is a bias,
    # so dbias is always returned (the op drops it when there is none).
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dout if weight is None else dout * weight
    dx = rstd[:, None] * (g - np.mean(g, axis=-1, keepdims=True)
                          - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    dweight = None if weight is None else np.sum(dout * xhat, axis=0)
    return dx, dweight, np.sum(dout, axis=0)


def embedding_forward(weight, indices):
    # A lookup: row indices[...] of the table, so out has shape indices.shape + (D,).
    return np.take(weight, indices, axis=0)


@in_float32
def embedding_backward(dout, indices, num_embeddings, padding_idx):
    # The transpose of the lookup: every output row adds its gradient into the table row it was read
    # from. np.add.at is unbuffered, so a row read several times accumulates all its gradients. The
    # padding row gets no gradient: it stays a fixed (usually zero) vector.
    dim = dout.shape[-1]
    dweight = _xp(dout).zeros((num_embeddings, dim), dtype=dout.dtype)
    _xp(dweight).add.at(dweight, np.reshape(indices, -1), np.reshape(dout, (-1, dim)))
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight


def _dropout_scale(p):
    # Kept elements are scaled by 1/(1 - p) so the expected output equals x ("inverted dropout", no
    # rescaling at eval time). p == 1 keeps nothing: the scale is 0 rather than 1/0.
    return 0.0 if p == 1 else 1 / (1 - p)


def _dropout_mask(gen, shape, p):
    # Each element is kept independently with probability 1 - p: a uniform draw u in [0, 1) keeps it
    # when u >= p. Every CPU backend draws its mask here, so a seed gives the same mask on all of them.
    return gen.random(shape) >= p


@in_float32
def dropout_forward(gen, x, p):
    # The bool mask is returned for backward.
    mask = _dropout_mask(gen, x.shape, p)
    return x * mask * _dropout_scale(p), mask


@in_float32
def dropout_backward(dout, mask, p):
    # The forward is linear in x with the same mask and scale, so the gradient is masked and scaled alike.
    return dout * mask * _dropout_scale(p)


# ---- fused elementwise: the bias add of a linear layer folded into what follows it --------------------


@in_float32
def bias_gelu_forward(x, bias, approximate):
    # gelu(x + bias); fused kernels save the pass (and the temporary) of the add.
    return gelu_forward(x if bias is None else x + bias, approximate)


@in_float32
def bias_gelu_backward(dout, x, bias, approximate):
    # The add's gradient is the identity for x and a sum over the rows for the broadcast bias.
    dx = gelu_backward(dout, x if bias is None else x + bias, approximate)
    return dx, None if bias is None else np.sum(dx, axis=0)


@in_float32
def bias_residual_forward(x, bias, residual):
    # (x + bias) + residual: a linear layer's output, its bias, and the skip connection around it.
    return (x + bias) + residual


# ---- optimizer steps, in place (the math of minigrad.optim.SGD / Adam, one line per step of it) -------
# Python floats adopt the arrays' dtype (NumPy 2 promotion), so float32 parameters update in float32.


def sgd_step_(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    if momentum != 0:
        if first_step:  # the buffer starts as the first gradient
            np.copyto(momentum_buf, g)
        else:
            momentum_buf *= momentum
            momentum_buf += g * (1 - dampening)
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    param -= g * lr


def adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
               decoupled, amsgrad, maximize):
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled:  # AdamW: shrink the parameter itself
            param *= 1 - lr * weight_decay
        else:  # Adam: an L2 penalty in the gradient
            g = g + weight_decay * param
    exp_avg *= beta1
    exp_avg += g * (1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (g * g) * (1 - beta2)
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps
    param -= (exp_avg / denom) * (lr / bias_correction1)


# The multi-tensor ("foreach") steps: the single-tensor step on each parameter in turn. A backend with
# single-tensor kernels only (Numba) builds its foreach primitives from them the same way.

def sgd_foreach_over(sgd_step):
    """The sgd_foreach_ primitive as a loop over `sgd_step` (a single-tensor sgd_step_)."""
    def sgd_foreach(params, grads, momentum_bufs, lr, momentum, dampening, weight_decay, nesterov, maximize,
                    first_steps):
        bufs = [None] * len(params) if momentum_bufs is None else momentum_bufs
        for param, grad, buf, first_step in zip(params, grads, bufs, first_steps, strict=True):
            sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)
    return sgd_foreach


def adam_foreach_over(adam_step):
    """The adam_foreach_ primitive as a loop over `adam_step` (a single-tensor adam_step_)."""
    def adam_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
                     weight_decay, decoupled, amsgrad, maximize):
        vmaxes = [None] * len(params) if max_exp_avg_sqs is None else max_exp_avg_sqs
        for param, grad, m, v, vmax, step in zip(params, grads, exp_avgs, exp_avg_sqs, vmaxes, steps, strict=True):
            adam_step(param, grad, m, v, vmax, step, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad,
                      maximize)
    return adam_foreach


sgd_foreach_ = sgd_foreach_over(sgd_step_)
adam_foreach_ = adam_foreach_over(adam_step_)


# ---- attention (scaled dot-product) -------------------------------------------------------------
# out = softmax(S) v with scores S = q k^T * scale + bias (+ -inf above the diagonal if causal).
# The (B, H, Tq, Tk) scores are materialized, one batched matmul over (B, H) for all heads at once:
# simple, and fast enough at the sequence lengths of the examples. FlashAttention computes the same
# thing in tiles without ever storing S; like it, forward keeps only the per-row logsumexp `lse`
# (not the (Tq, Tk) probabilities), and backward recomputes P = exp(S - lse) from it.
#
# A row whose keys are all masked (scores all -inf) has no softmax (0 / 0); as torch's
# scaled_dot_product_attention, it attends to nothing: its probabilities, its output and its
# gradients are 0. Its lse is -inf, which is why the shift below reads 0 there.


def _attention_scores(q, k, bias, is_causal, scale):
    # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk), a fresh array that is then edited in place;
    # the scale goes on q, which is smaller than the scores when D < Tk.
    s = np.matmul(q * scale, np.swapaxes(k, -1, -2))
    if bias is not None:
        s += bias  # broadcasts over (B, H, Tq, Tk)
    if is_causal:  # top-left aligned, as torch's is_causal: query i sees keys j <= i
        s += np.triu(_xp(s).full(s.shape[-2:], -np.inf, dtype=s.dtype), k=1)  # -inf above the diagonal, else 0
    return s


def _lse_shift(lse):
    # The row offset that turns scores into log-probabilities: lse, or 0 for fully masked rows.
    return np.where(lse == -np.inf, 0, lse)[..., None]


@in_float32(keep_float32=(1,))
def attention_forward(q, k, v, bias, is_causal, scale):
    # The (B, H, Tq, Tk) arrays are updated in place: a fresh array that size costs more in page
    # faults than the arithmetic.
    s = _attention_scores(q, k, bias, is_causal, scale)
    m = _stable_max(s, -1)  # the row max (0 for fully masked rows): every exponent is <= 0
    s -= m
    p = np.exp(s, out=s)
    rowsum = np.sum(p, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):  # log(0) = -inf: the lse of a fully masked row
        lse = (m + np.log(rowsum))[..., 0]
    p /= np.where(rowsum == 0, 1, rowsum)  # fully masked rows stay all 0
    return np.matmul(p, v), lse


@in_float32
def attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale):
    # P = exp(S - lse) is softmax(S), recomputed. Then, with dP = dout v^T, the softmax backward along
    # each row is dS = P * (dP - sum_j P_j dP_j); the row sum needs no (Tq, Tk) product, because
    # sum_j P_ij dP_ij = sum_j P_ij sum_d dout_id v_jd = sum_d dout_id out_id (out = P v): it is
    # rowsum(dout * out), a (Tq, Dv) product (the FlashAttention identity).
    s = _attention_scores(q, k, bias, is_causal, scale)
    s -= _lse_shift(lse)
    p = np.exp(s, out=s)
    dv = np.matmul(np.swapaxes(p, -1, -2), dout)
    ds = np.matmul(dout, np.swapaxes(v, -1, -2))  # dP, turned into dS in place:
    ds -= np.sum(dout * out, axis=-1, keepdims=True)
    ds *= p
    # S = (scale q) k^T: dq = dS k * scale, dk = dS^T (scale q)
    return np.matmul(ds, k) * scale, np.matmul(np.swapaxes(ds, -1, -2), q * scale), dv


# ---- cross-entropy (fused with log-softmax) -----------------------------------------------------------


@in_float32
def cross_entropy_forward(logits, targets, ignore_index, label_smoothing):
    # Per row of logits (N, C) with target class y (PyTorch's definition of label smoothing ls):
    #   logp = log_softmax(x)               (the row max is subtracted first: stable for any |x|)
    #   loss = (1 - ls) * -logp[y] + ls * mean_c(-logp[c])
    # A row whose target is ignore_index reads class 0 (any valid index would do) and gets loss 0.
    logprobs = log_softmax_forward(logits, 1)
    ignored = targets == ignore_index
    safe = np.where(ignored, 0, targets)
    nll = -np.take_along_axis(logprobs, safe[:, None], axis=1)[:, 0]
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * np.mean(logprobs, axis=1)
    return np.where(ignored, 0, nll).astype(logits.dtype, copy=False), logprobs


@in_float32
def cross_entropy_backward(dlosses, logprobs, targets, ignore_index, label_smoothing):
    # d loss / d logits = softmax(x) - q, where q is the target distribution the loss compares to:
    # q = (1 - ls) * onehot(y) + ls / C. Ignored rows get exactly 0 (np.where, so that an inf or nan
    # upstream gradient, e.g. the mean over zero valid rows, does not leak into them).
    n, c = logprobs.shape
    ignored = targets == ignore_index
    dlogits = np.exp(logprobs)
    dlogits[_xp(targets).arange(n), np.where(ignored, 0, targets)] -= 1 - label_smoothing
    if label_smoothing:
        dlogits -= label_smoothing / c
    return np.where(ignored[:, None], 0, dlogits * dlosses[:, None]).astype(logprobs.dtype, copy=False)


# ---- convolution and pooling --------------------------------------------------------------------
# One strided view carries all four kernels: `_windows` shows a padded (N, C, Hp, Wp) array as the
# (N, C, kh, kw, Ho, Wo) array of its receptive fields, without copying. Forward passes reduce over the
# window axes (a matmul for conv2d, argmax / sum for pooling). Backward passes are the adjoint of that
# view, `_col2im`: each of the kh*kw kernel offsets scatter-adds its gradients back onto the strided
# grid of input positions it was read from (a loop over kernel offsets, never over pixels).


def _windows(xp, kernel, stride, dilation):
    """Read-only view (N, C, kh, kw, Ho, Wo) of xp (N, C, Hp, Wp):
    view[n, c, a, b, i, j] = xp[n, c, i*sh + a*dh, j*sw + b*dw] (window (i, j), kernel offset (a, b))."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    n, c, hp, wp = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    sn, sc, sy, sx = xp.strides
    shape, strides = (n, c, kh, kw, ho, wo), (sn, sc, sy * dh, sx * dw, sy * sh, sx * sw)
    if _xp(xp) is not np:  # (CuPy's as_strided has no `writeable`)
        return _xp(xp).lib.stride_tricks.as_strided(xp, shape, strides)
    return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)


def _col2im(cols, padded_shape, stride, dilation):
    """The adjoint of `_windows`: a zero (N, C, Hp, Wp) array with every cols[n, c, a, b, i, j] (any
    strides, broadcast views too) added at the position the window view read it from."""
    _, _, kh, kw, ho, wo = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = _xp(cols).zeros(padded_shape, dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):  # within one offset the positions are distinct, so += is a scatter-add
            out[:, :, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw] += cols[:, :, a, b]
    return out


def _pad_hw(x, widths, value=0):
    """x (N, C, H, W) padded by widths ((top, bottom), (left, right)) with `value`; x itself if no padding."""
    if not np.any(widths):
        return x
    return np.pad(x, ((0, 0), (0, 0), *widths), mode="constant", constant_values=value)


def _im2col(x, kernel, stride, padding, dilation, groups):
    """cols (g, C/g * kh * kw, N * Ho * Wo): one column per output pixel (of every image) holding its
    receptive field in each group's channels, a copy of the window view; and (Ho, Wo)."""
    win = _windows(_pad_hw(x, padding), kernel, stride, dilation)  # (N, C, kh, kw, Ho, Wo)
    n, c, kh, kw, ho, wo = win.shape
    win = win.reshape(n, groups, c // groups, kh, kw, ho, wo).transpose(1, 2, 3, 4, 0, 5, 6)
    return _xp(win).ascontiguousarray(win).reshape(groups, -1, n * ho * wo), (ho, wo)


@in_float32
def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    # im2col + one matmul per group: out[g] (O/g, N*Ho*Wo) = weight[g] (O/g, K) @ cols[g] (K, N*Ho*Wo).
    o = weight.shape[0]
    cols, (ho, wo) = _im2col(x, weight.shape[2:], stride, padding, dilation, groups)
    out = np.matmul(weight.reshape(groups, o // groups, -1), cols)
    out = _xp(out).ascontiguousarray(out.reshape(o, x.shape[0], ho, wo).transpose(1, 0, 2, 3))
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out


@in_float32
def conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs=(True, True)):
    # With out[g] = W[g] @ cols[g]: dW[g] = dout[g] @ cols[g]^T and dcols[g] = W[g]^T @ dout[g]; dx is
    # dcols scattered back through the window map (col2im), with the padding cropped off.
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    dout_g = dout.transpose(1, 0, 2, 3).reshape(groups, o // groups, -1)  # (g, O/g, N*Ho*Wo)
    dx = dweight = None
    if needs[1]:
        cols, _ = _im2col(x, (kh, kw), stride, padding, dilation, groups)  # recomputed, not cached
        dweight = np.matmul(dout_g, cols.transpose(0, 2, 1)).reshape(weight.shape)
    if needs[0]:
        dcols = np.matmul(weight.reshape(groups, o // groups, -1).transpose(0, 2, 1), dout_g)  # (g, K, N*Ho*Wo)
        dcols = dcols.reshape(c, kh, kw, n, *dout.shape[2:]).transpose(3, 0, 1, 2, 4, 5)  # window layout (a view)
        (top, bottom), (left, right) = padding
        dxp = _col2im(dcols, (n, c, top + h + bottom, left + w + right), stride, dilation)
        dx = _xp(dxp).ascontiguousarray(dxp[:, :, top:top + h, left:left + w])
    return dx, dweight


def pool_geometry(hw, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output size per spatial dim, and the ((before, after), ...) padding whose window
    view has exactly that size: `padding` on both sides, more after for ceil_mode's last partial window."""
    sizes, widths = [], []
    for size, k, s, p, d in zip(hw, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        out = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside the input or left pad
            out -= 1
        sizes.append(out)
        widths.append((p, int(np.maximum(p, (out - 1) * s + span - size - p))))  # (max is this module's)
    return tuple(sizes), tuple(widths)


def max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode):
    # Pad with -inf (never the max), take each window's argmax over its kh*kw elements (the first at
    # ties, as PyTorch), and turn that window-local offset (a, b) into a flat index into the H*W plane.
    n, c, h, w = x.shape
    (ho, wo), widths = pool_geometry((h, w), kernel, stride, padding, dilation, ceil_mode)
    win = _windows(_pad_hw(x, widths, -np.inf), kernel, stride, dilation)
    flat = win.reshape(n, c, -1, ho, wo)  # (N, C, kh*kw, Ho, Wo), a copy
    local = np.argmax(flat, axis=2)
    out = np.take_along_axis(flat, local[:, :, None], axis=2)[:, :, 0]
    a, b = np.divmod(local, kernel[1])
    rows = _xp(x).arange(ho)[:, None] * stride[0] - padding[0]  # each window's top-left corner in the input
    cols = _xp(x).arange(wo)[None, :] * stride[1] - padding[1]
    # A window whose max is -inf (all its real elements are -inf) may have picked a padding element;
    # PyTorch points it at the window's first real element instead.
    all_neg_inf = out == -np.inf
    if np.any(all_neg_inf):
        a = np.where(all_neg_inf, np.maximum(0, -(rows // dilation[0])), a)
        b = np.where(all_neg_inf, np.maximum(0, -(cols // dilation[1])), b)
    argmax = (rows + a * dilation[0]) * w + cols + b * dilation[1]
    return out, argmax.astype(np.int64)


def max_pool2d_backward(dout, argmax, input_shape):
    # Each output's gradient goes to the input element that was its max; windows overlap when stride <
    # kernel, so an element can collect several: bincount sums them over flat (n, c, h, w) indices.
    n, c, h, w = input_shape
    flat_index = argmax + _xp(argmax).arange(n * c).reshape(n, c, 1, 1) * (h * w)
    dx = np.bincount(flat_index.ravel(), weights=dout.ravel(), minlength=n * c * h * w)
    return dx.astype(dout.dtype).reshape(input_shape)  # (bincount sums in float64)


def avg_pool_divisor(hw, kernel, stride, padding, ceil_mode, count_include_pad, like):
    """(Ho, Wo) element counts of the windows, of `like`'s dtype and array module: the window clipped to the
    padded input, or, without count_include_pad, to the input itself. A window is a rectangle, so its count
    is a product. (Shared with the Numba and CUDA kernels, which divide by it.)"""
    out_hw, _ = pool_geometry(hw, kernel, stride, padding, (1, 1), ceil_mode)
    counts = []
    for size, k, s, p, out in zip(hw, kernel, stride, padding, out_hw):
        start = _xp(like).arange(out) * s - p
        end = np.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        counts.append(end - start)
    return np.outer(*counts).astype(like.dtype)


@in_float32
def avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
    # Sum each window of the zero-padded input and divide by its element count (see avg_pool_divisor).
    hw = x.shape[2:]
    out_hw, widths = pool_geometry(hw, kernel, stride, padding, (1, 1), ceil_mode)
    sums = _windows(_pad_hw(x, widths), kernel, stride, (1, 1)).sum(axis=(2, 3))
    return sums / avg_pool_divisor(hw, kernel, stride, padding, ceil_mode, count_include_pad, x)


@in_float32
def avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, count_include_pad):
    # Every element of a window receives dout / count: broadcast that over the window's kh*kw offsets
    # (a view), scatter-add it back onto the padded input (col2im), and crop the padding.
    n, c, h, w = input_shape
    (ho, wo), ((top, bottom), (left, right)) = pool_geometry((h, w), kernel, stride, padding, (1, 1), ceil_mode)
    grad = dout / avg_pool_divisor((h, w), kernel, stride, padding, ceil_mode, count_include_pad, dout)
    cols = np.broadcast_to(grad[:, :, None, None], (n, c, *kernel, ho, wo))
    dxp = _col2im(cols, (n, c, top + h + bottom, left + w + right), stride, (1, 1))
    return _xp(dxp).ascontiguousarray(dxp[:, :, top:top + h, left:left + w])


# ---- recurrent cells (the gate math of one LSTM / GRU step; the recurrent matmul is a separate call) ------
# Gate blocks are H columns wide, in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n). The cache keeps
# the activated gates, so backward uses the derivatives sigmoid' = s (1 - s) and tanh' = 1 - t^2.


def _blocks(a, count):
    """The `count` column blocks of a (B, count * H), as views."""
    return np.split(a, count, axis=1)


@in_float32
def lstm_cell_forward(gates_x, gates_h, c):
    i, f, g, o = _blocks(gates_x + gates_h, 4)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    return np.stack([o * tc, c_new]), np.concatenate([i, f, g, o, tc], axis=1)


@in_float32
def lstm_cell_backward(dh, dc_new, cache, c):
    # With h' = o tanh(c'): the gradient reaching c' is dc' + dh' o tanh'(c'); it flows to the gates
    # through c' = f c + i g, and to c through the forget gate.
    i, f, g, o, tc = _blocks(cache, 5)
    dc_total = dc_new + dh * o * (1 - tc * tc)
    dgates = np.concatenate([dc_total * g * i * (1 - i), dc_total * c * f * (1 - f), dc_total * i * (1 - g * g),
                             dh * tc * o * (1 - o)], axis=1)
    return dgates, dc_total * f


@in_float32
def gru_cell_forward(gates_x, gates_h, h):
    (x_r, x_z, x_n), (h_r, h_z, h_n) = _blocks(gates_x, 3), _blocks(gates_h, 3)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)  # the reset gate scales the recurrent part of the candidate (its bias included)
    return n + z * (h - n), np.concatenate([r, z, n, h_n], axis=1)


@in_float32
def gru_cell_backward(dh_new, cache, h):
    # h' = n + z (h - n): dn = dh' (1 - z), dz = dh' (h - n), dh = dh' z; then through the activations.
    # Only the candidate differs between the two inputs: gates_h_n is scaled by r.
    r, z, n, h_n = _blocks(cache, 4)
    dn = dh_new * (1 - z) * (1 - n * n)
    dr = dn * h_n * r * (1 - r)
    dz = dh_new * (h - n) * z * (1 - z)
    return np.concatenate([dr, dz, dn], axis=1), np.concatenate([dr, dz, dn * r], axis=1), dh_new * z


# ---- recurrent layers over a sequence (one layer, one direction): the step loop around the cells above ------
# Step t runs in the order t = 0 .. T-1, or T-1 .. 0 with `reverse`; arrays are indexed by t either way.
# The LSTM cache holds, per step, the cell's cache (i, f, g, o, tanh(c')) and c' (T, B, 6H); the GRU cache
# is the cell's (T, B, 4H). Backward sums dW_hh over all steps in one matmul and returns the bias
# gradients (column sums of the gate gradients), so the bias add of the input projection can live here.
# The cell functions and the matmul are parameters (defaulting to the cells above and NumPy's) so that
# numba_rnn and the CUDA backend run this same loop around their own kernels.


def _scan_order(steps, reverse):
    return range(steps - 1, -1, -1) if reverse else range(steps)


def _entering(h0, hs, order):
    """(T, B, H): at row t the h that entered step t (h0 for the first step run, else the h' before)."""
    order = list(order)
    entering = _xp(h0).empty((len(order),) + h0.shape, h0.dtype)
    for k, t in enumerate(order):
        entering[t] = h0 if k == 0 else hs[order[k - 1]]
    return entering


def _rows(a):
    return a.reshape(-1, a.shape[-1])


@in_float32
def lstm_scan_forward(gates_x, bias, h0, c0, w_hh, reverse, cell_forward=lstm_cell_forward, matmul=np.matmul):
    steps, (batch, hidden) = gates_x.shape[0], h0.shape
    xp = _xp(h0)
    out, cache = xp.empty((steps + 1, batch, hidden), h0.dtype), xp.empty((steps, batch, 6 * hidden), h0.dtype)
    h, c = h0, c0
    for t in _scan_order(steps, reverse):
        gx = gates_x[t] if bias is None else gates_x[t] + bias
        (h, c), cache[t, :, :5 * hidden] = cell_forward(gx, matmul(h, w_hh.T), c)
        out[t], cache[t, :, 5 * hidden:] = h, c
    out[steps] = c
    return out, cache


@in_float32
def lstm_scan_backward(grad, cache, out, h0, c0, w_hh, reverse, cell_backward=lstm_cell_backward, matmul=np.matmul):
    steps, hidden = cache.shape[0], h0.shape[1]
    order = list(_scan_order(steps, reverse))
    dgates = _xp(h0).empty((steps, h0.shape[0], 4 * hidden), h0.dtype)
    dh, dc = np.zeros_like(h0), grad[steps]
    for k in reversed(range(steps)):
        t = order[k]
        c = c0 if k == 0 else cache[order[k - 1], :, 5 * hidden:]
        dgates[t], dc = cell_backward(grad[t] + dh, dc, cache[t, :, :5 * hidden], c)
        dh = matmul(dgates[t], w_hh)  # the gradient reaching the h that entered the step
    dw_hh = matmul(_rows(dgates).T, _rows(_entering(h0, out, order)))
    return dgates, dh, dc, dw_hh, _rows(dgates).sum(0)


@in_float32
def gru_scan_forward(gates_x, bias, h0, w_hh, b_hh, reverse, cell_forward=gru_cell_forward, matmul=np.matmul):
    steps, (batch, hidden) = gates_x.shape[0], h0.shape
    xp = _xp(h0)
    out, cache = xp.empty((steps, batch, hidden), h0.dtype), xp.empty((steps, batch, 4 * hidden), h0.dtype)
    h = h0
    for t in _scan_order(steps, reverse):
        gx = gates_x[t] if bias is None else gates_x[t] + bias
        h, cache[t] = cell_forward(gx, matmul(h, w_hh.T) + b_hh, h)
        out[t] = h
    return out, cache


@in_float32
def gru_scan_backward(grad, cache, out, h0, w_hh, reverse, cell_backward=gru_cell_backward, matmul=np.matmul):
    steps, hidden = cache.shape[0], h0.shape[1]
    order = list(_scan_order(steps, reverse))
    dgates_x, dgates_h = (_xp(h0).empty((steps, h0.shape[0], 3 * hidden), h0.dtype) for _ in range(2))
    dh = np.zeros_like(h0)
    for k in reversed(range(steps)):
        t = order[k]
        h = h0 if k == 0 else out[order[k - 1]]
        dgates_x[t], dgates_h[t], dh_direct = cell_backward(grad[t] + dh, cache[t], h)
        dh = dh_direct + matmul(dgates_h[t], w_hh)  # h enters h' directly and through gates_h
    dw_hh = matmul(_rows(dgates_h).T, _rows(_entering(h0, out, order)))
    return dgates_x, dh, dw_hh, _rows(dgates_h).sum(0), _rows(dgates_x).sum(0)
