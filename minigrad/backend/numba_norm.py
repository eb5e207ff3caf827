"""Numba LayerNorm: forward and backward over the rows of x (R, D), one parallel task per row (forward)
or per chunk of rows (backward).

Forward, per row, in three passes over D elements that stay in the L1 cache: the mean, then the
variance as the mean of squared deviations (two passes, not E[x^2] - E[x]^2, which cancels
catastrophically when |mean| >> std), both accumulated in float64, then the output
(x - mean) * rstd * weight + bias. mean and rstd (R,) are kept for backward.

Backward, per row, with xhat = (x - mean) * rstd and g = dout * weight:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

one pass to accumulate the two row means (and this row's terms of dweight = sum dout * xhat and
dbias = sum dout), one to write dx. dweight and dbias sum over all rows: each chunk of rows adds into
its own row of a (chunks, D) partial array (no two threads write the same element), and the partials
are summed at the end.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, row_chunks, supported


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(out, mean, rstd, x, weight, bias, eps):
    # out (R, D), mean, rstd (R,) written; weight, bias (D,) or None (Numba compiles the None case
    # without the multiply / add).
    rows, d = x.shape
    for r in prange(rows):
        acc = 0.0
        for j in range(d):
            acc += x[r, j]
        mu = acc / d
        acc = 0.0
        for j in range(d):
            c = x[r, j] - mu
            acc += c * c
        s = 1.0 / math.sqrt(acc / d + eps)
        mean[r], rstd[r] = mu, s
        m, s = x.dtype.type(mu), x.dtype.type(s)
        for j in range(d):
            v = (x[r, j] - m) * s
            if weight is not None:
                v = v * weight[j]
            if bias is not None:
                v = v + bias[j]
            out[r, j] = v


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(dx, dweight_part, dbias_part, dout, x, weight, mean, rstd):
    # dx (R, D) written; dweight_part, dbias_part (chunks, D) float64 zeros, summed over rows per chunk.
    rows, d = x.shape
    chunks = dbias_part.shape[0]
    for c in prange(chunks):
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            m, s = mean[r], rstd[r]
            sum_g, sum_gx = 0.0, 0.0
            for j in range(d):
                xhat = (x[r, j] - m) * s
                g = dout[r, j] * weight[j] if weight is not None else dout[r, j]
                sum_g += g
                sum_gx += g * xhat
                if weight is not None:
                    dweight_part[c, j] += dout[r, j] * xhat
                dbias_part[c, j] += dout[r, j]
            mean_g, mean_gx = x.dtype.type(sum_g / d), x.dtype.type(sum_gx / d)
            for j in range(d):
                xhat = (x[r, j] - m) * s
                g = dout[r, j] * weight[j] if weight is not None else dout[r, j]
                dx[r, j] = s * (g - mean_g - xhat * mean_gx)


def layer_norm_forward(x, weight, bias, eps):
    affine = [a for a in (weight, bias) if a is not None]
    if not supported(x, *affine) or x.size == 0:
        return numpy_ref.layer_norm_forward(x, weight, bias, eps)
    x = kernel_array(x)
    rows = x.shape[0]
    out, mean, rstd = np.empty_like(x), np.empty(rows, x.dtype), np.empty(rows, x.dtype)
    launch(_forward, x.size, out, mean, rstd, x, None if weight is None else kernel_array(weight),
             None if bias is None else kernel_array(bias), float(eps))
    return out, mean, rstd


def layer_norm_backward(dout, x, weight, mean, rstd):
    if not supported(dout, x, mean, rstd, *([] if weight is None else [weight])) or x.size == 0:
        return numpy_ref.layer_norm_backward(dout, x, weight, mean, rstd)
    x, dout = kernel_array(x), kernel_array(dout)
    chunks = row_chunks(x.shape[0])
    dx = np.empty_like(x)
    dweight_part = np.zeros((chunks if weight is not None else 1, x.shape[1]))  # unused without a weight
    dbias_part = np.zeros((chunks, x.shape[1]))
    launch(_backward, x.size, dx, dweight_part, dbias_part, dout, x, None if weight is None else kernel_array(weight),
              kernel_array(mean), kernel_array(rstd))
    dweight = None if weight is None else dweight_part.sum(axis=0).astype(x.dtype)
    return dx, dweight, dbias_part.sum(axis=0).astype(x.dtype)
