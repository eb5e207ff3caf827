"""Numba fused elementwise kernels: bias + GELU, bias + residual, dropout's mask-and-scale, ReLU.

Each is one pass over memory where the NumPy reference makes several (GELU's tanh form alone is
about ten NumPy passes, each reading and writing a full temporary). The GELU of a linear layer's
output is computed with the bias add folded in, forward and backward:

    forward   out = gelu(x + bias)
    backward  dx = dout * gelu'(x + bias),  dbias = sum over rows of dx

(x + bias is recomputed in backward rather than stored: one add is cheaper than a stored array.)
The dbias sum is fused too: each chunk of rows adds into its own row of a (chunks, D) partial array
and the partials are summed at the end, in float64 (see numba_common.row_chunks). The tanh and erf come from
numba_math (vectorized in float32). Constants are converted to the array's dtype (T(0.5)) so that
float32 code stays float32 (a Python float would promote it to float64).

gelu_forward / gelu_backward (any shape, no bias) run the same kernels on x seen as (rows, last dim).

ReLU forward and backward are one pass each, over the flat arrays, on all threads (NumPy's maximum and
the backward's comparison-then-where run on one thread, the latter in two passes and a bool temporary).
Small arrays are left to NumPy (numba_common.leave_to_numpy).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, leave_to_numpy, row_chunks, supported
from minigrad.backend.numba_math import erf, exp, tanh

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@njit(inline="always")  # inlined into the kernels' loops (a call would stop LLVM from vectorizing them)
def _gelu(v, tanh_form, T):
    # x * Phi(x): Phi exact (erf), or GPT-2's tanh approximation.
    if tanh_form:
        return T(0.5) * v * (T(1) + tanh(T(_SQRT_2_OVER_PI) * (v + T(0.044715) * (v * v * v))))
    return T(0.5) * v * (T(1) + erf(v * T(_INV_SQRT_2)))


@njit(inline="always")
def _gelu_grad(v, tanh_form, T):
    # d gelu / dx: Phi(x) + x * phi(x) (exact), or the derivative of the tanh form.
    if tanh_form:
        t = tanh(T(_SQRT_2_OVER_PI) * (v + T(0.044715) * (v * v * v)))
        dinner = T(_SQRT_2_OVER_PI) * (T(1) + T(3 * 0.044715) * (v * v))
        return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * dinner
    cdf = T(0.5) * (T(1) + erf(v * T(_INV_SQRT_2)))
    return cdf + v * (T(_INV_SQRT_2PI) * exp(T(-0.5) * v * v))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gelu_forward(out, x, bias, tanh_form):
    # out, x (R, D); bias (D,) or None.
    T = x.dtype.type
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j] + bias[j] if bias is not None else x[r, j]
            out[r, j] = _gelu(v, tanh_form, T)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gelu_backward(dx, dbias_part, dout, x, bias, tanh_form):
    # dx (R, D) written; with a bias, dbias_part (chunks, D) zeros collects each chunk's row sums, in x's
    # dtype (float64 adds in this loop would halve its vector width); the chunks are summed in float64.
    T = x.dtype.type
    rows, chunks = x.shape[0], dbias_part.shape[0]
    for c in prange(chunks):
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            for j in range(x.shape[1]):
                v = x[r, j] + bias[j] if bias is not None else x[r, j]
                g = dout[r, j] * _gelu_grad(v, tanh_form, T)
                dx[r, j] = g
                if bias is not None:
                    dbias_part[c, j] += g


@njit(parallel=True, cache=True)
def _bias_residual(out, x, bias, residual):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = (x[r, j] + bias[j]) + residual[r, j]


@njit(parallel=True, cache=True)
def _mask_scale(out, x, mask, scale):
    # out = x * mask * scale, all flat; (x * 0 stays nan for a nan or inf x, as in the reference)
    T = x.dtype.type
    s = T(scale)
    for i in prange(x.shape[0]):
        out[i] = x[i] * T(mask[i]) * s


@njit(parallel=True, cache=True)
def _relu(out, x):
    # out = max(x, 0), flat; a nan stays nan (as np.maximum)
    T = x.dtype.type
    for i in prange(x.shape[0]):
        out[i] = x[i] if not x[i] < T(0) else T(0)


@njit(parallel=True, cache=True)
def _relu_backward(dx, dout, out):
    # dx = dout where out > 0 or out is nan, else 0; flat
    T = dout.dtype.type
    for i in prange(dx.shape[0]):
        dx[i] = T(0) if out[i] <= T(0) else dout[i]


def _rows(x):
    """x (any shape) as a C-contiguous (rows, last dim) array."""
    return kernel_array(x).reshape(-1, x.shape[-1] if x.ndim else 1)


def bias_gelu_forward(x, bias, approximate):
    if not supported(x, *([] if bias is None else [bias])) or x.size == 0:
        return numpy_ref.bias_gelu_forward(x, bias, approximate)
    x2 = _rows(x)
    out = np.empty_like(x2)
    launch(_gelu_forward, out.size, out, x2, None if bias is None else kernel_array(bias), approximate == "tanh")
    return out.reshape(x.shape)


def bias_gelu_backward(dout, x, bias, approximate):
    if not supported(dout, x, *([] if bias is None else [bias])) or x.size == 0:
        return numpy_ref.bias_gelu_backward(dout, x, bias, approximate)
    x2 = _rows(x)
    dx = np.empty_like(x2)
    dbias_part = np.zeros((row_chunks(x2.shape[0]) if bias is not None else 1, x2.shape[1]), x.dtype)
    launch(_gelu_backward, dx.size, dx, dbias_part, _rows(dout), x2, None if bias is None else kernel_array(bias),
           approximate == "tanh")
    return dx.reshape(x.shape), None if bias is None else dbias_part.sum(axis=0, dtype=np.float64).astype(x.dtype)


def gelu_forward(x, approximate):
    return bias_gelu_forward(x, None, approximate)


def gelu_backward(dout, x, approximate):
    return bias_gelu_backward(dout, x, None, approximate)[0]


def bias_residual_forward(x, bias, residual):
    if not supported(x, bias, residual) or x.size == 0 or x.shape != residual.shape:
        return numpy_ref.bias_residual_forward(x, bias, residual)
    x2 = _rows(x)
    out = np.empty_like(x2)
    launch(_bias_residual, out.size, out, x2, kernel_array(bias), _rows(residual))
    return out.reshape(x.shape)


def _mask_and_scale(x, mask, p):
    """x * mask / (1 - p) (the forward of dropout, and its backward with dout for x)."""
    if not supported(x) or x.size == 0:
        return numpy_ref.dropout_backward(x, mask, p)  # the same formula
    out = np.empty(x.shape, x.dtype)
    launch(_mask_scale, out.size, out.reshape(-1), kernel_array(x).reshape(-1), kernel_array(mask).reshape(-1),
           numpy_ref._dropout_scale(p))
    return out


def dropout_forward(gen, x, p):
    # The keep-mask is the reference's (the same generator calls, so the same mask for the same seed on
    # either backend); the kernel fuses the multiplies by the mask and by the scale.
    mask = numpy_ref._dropout_mask(gen, x.shape, p)
    return _mask_and_scale(x, mask, p), mask


def dropout_backward(dout, mask, p):
    return _mask_and_scale(dout, mask, p)


def relu(x):
    """max(x, 0), any shape."""
    if not supported(x) or leave_to_numpy(x):
        return numpy_ref.relu(x)
    out = np.empty(x.shape, x.dtype)
    launch(_relu, x.size, out.reshape(-1), kernel_array(x).reshape(-1))
    return out


def relu_backward(dout, out):
    """dout where out > 0 (or nan), else 0; dout and out of one shape."""
    if not supported(dout, out) or dout.shape != out.shape or leave_to_numpy(dout):
        return numpy_ref.relu_backward(dout, out)
    dx = np.empty(dout.shape, dout.dtype)
    launch(_relu_backward, dx.size, dx.reshape(-1), kernel_array(dout).reshape(-1), kernel_array(out).reshape(-1))
    return dx
