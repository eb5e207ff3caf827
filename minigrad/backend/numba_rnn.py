"""Numba kernels for the gate math of one LSTM or GRU step, forward and backward, each in one pass.

Composed of NumPy ops, one LSTM step is about ten passes over (B, H) arrays (the add of the two gate
projections, three sigmoids, two tanh, the products and sums), each a separate allocation and, in
training, a separate autograd node. Fused, each element of the state is read once and written once:
per (row b, unit j) the kernel reads the four gate pre-activations, applies the nonlinearities (the
vectorizable float32 exp / tanh of numba_math), and writes h', c' and the activated gates that
backward needs. The recurrent matmuls (h W_hh^T) stay on the GEMM primitive.

The sequence scans (lstm_scan_*, gru_scan_*: what nn.LSTM / nn.GRU run) are numpy_ref's step loop
around these cells; the C++ extension, where built, runs the whole loop in compiled code instead.

The gate blocks are addressed as views (B, G, H) of the (B, G*H) arrays, so that the unit index j is
the only index that varies in the inner loop (an offset such as `H + j` would cost a wraparound
check per element and keep LLVM from vectorizing). Work is split over the batch rows; calls smaller
than numba_common.PARALLEL_MIN elements (a batch of 32 with H = 128) run on one thread.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, supported
from minigrad.backend.numba_math import exp, tanh


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _sigmoid(x, one):
    # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) for x < 0: e = exp(-|x|) <= 1 never overflows.
    # (`one` is 1 in the arrays' dtype: a literal 1 would turn float32 arithmetic into float64.)
    e = exp(-abs(x))
    return (one if x >= 0 else e) / (one + e)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _lstm_forward(hc, cache, gx, gh, c):
    # hc (2, B, H) and cache (B, 5, H) are written; gx, gh (B, 4, H), c (B, H) are read.
    one = c.dtype.type(1)
    for b in prange(c.shape[0]):
        for j in range(c.shape[1]):
            i = _sigmoid(gx[b, 0, j] + gh[b, 0, j], one)
            f = _sigmoid(gx[b, 1, j] + gh[b, 1, j], one)
            g = tanh(gx[b, 2, j] + gh[b, 2, j])
            o = _sigmoid(gx[b, 3, j] + gh[b, 3, j], one)
            c_new = f * c[b, j] + i * g
            tc = tanh(c_new)
            hc[0, b, j], hc[1, b, j] = o * tc, c_new
            cache[b, 0, j], cache[b, 1, j], cache[b, 2, j], cache[b, 3, j], cache[b, 4, j] = i, f, g, o, tc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _lstm_backward(dgates, dc, dh_new, dc_new, cache, c):
    # dgates (B, 4, H) and dc (B, H) are written; dh_new, dc_new (B, H), cache (B, 5, H), c (B, H) are read.
    one = c.dtype.type(1)
    for b in prange(c.shape[0]):
        for j in range(c.shape[1]):
            i, f, g, o, tc = cache[b, 0, j], cache[b, 1, j], cache[b, 2, j], cache[b, 3, j], cache[b, 4, j]
            dh = dh_new[b, j]
            dc_total = dc_new[b, j] + dh * o * (one - tc * tc)  # all that reaches c'
            dgates[b, 0, j] = dc_total * g * i * (one - i)
            dgates[b, 1, j] = dc_total * c[b, j] * f * (one - f)
            dgates[b, 2, j] = dc_total * i * (one - g * g)
            dgates[b, 3, j] = dh * tc * o * (one - o)
            dc[b, j] = dc_total * f


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gru_forward(h_new, cache, gx, gh, h):
    # h_new (B, H) and cache (B, 4, H) are written; gx, gh (B, 3, H), h (B, H) are read.
    one = h.dtype.type(1)
    for b in prange(h.shape[0]):
        for j in range(h.shape[1]):
            r = _sigmoid(gx[b, 0, j] + gh[b, 0, j], one)
            z = _sigmoid(gx[b, 1, j] + gh[b, 1, j], one)
            n = tanh(gx[b, 2, j] + r * gh[b, 2, j])
            h_new[b, j] = n + z * (h[b, j] - n)
            cache[b, 0, j], cache[b, 1, j], cache[b, 2, j], cache[b, 3, j] = r, z, n, gh[b, 2, j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gru_backward(dgx, dgh, dh, dh_new, cache, h):
    # dgx, dgh (B, 3, H) and dh (B, H) are written; dh_new (B, H), cache (B, 4, H), h (B, H) are read.
    one = h.dtype.type(1)
    for b in prange(h.shape[0]):
        for j in range(h.shape[1]):
            r, z, n, h_n = cache[b, 0, j], cache[b, 1, j], cache[b, 2, j], cache[b, 3, j]
            g = dh_new[b, j]
            dn = g * (one - z) * (one - n * n)
            dr = dn * h_n * r * (one - r)
            dz = g * (h[b, j] - n) * z * (one - z)
            dgx[b, 0, j], dgx[b, 1, j], dgx[b, 2, j] = dr, dz, dn
            dgh[b, 0, j], dgh[b, 1, j], dgh[b, 2, j] = dr, dz, dn * r
            dh[b, j] = g * z


def _gates(a, count):
    """a (B, count * H) as the C-contiguous (B, count, H) view the kernels index."""
    return kernel_array(a).reshape(a.shape[0], count, -1)


def lstm_cell_forward(gates_x, gates_h, c):
    """gates_x, gates_h (B, 4H), c (B, H) -> (hc (2, B, H): h', c'; cache (B, 5H))."""
    if not supported(gates_x, gates_h, c):
        return numpy_ref.lstm_cell_forward(gates_x, gates_h, c)
    nb, hs = c.shape
    hc, cache = np.empty((2, nb, hs), c.dtype), np.empty((nb, 5, hs), c.dtype)
    launch(_lstm_forward, 4 * nb * hs, hc, cache, _gates(gates_x, 4), _gates(gates_h, 4), kernel_array(c))
    return hc, cache.reshape(nb, 5 * hs)


def lstm_cell_backward(dh_new, dc_new, cache, c):
    """dh', dc' (B, H) -> (dgates (B, 4H), dc (B, H))."""
    if not supported(dh_new, dc_new, cache, c):
        return numpy_ref.lstm_cell_backward(dh_new, dc_new, cache, c)
    nb, hs = c.shape
    dgates, dc = np.empty((nb, 4, hs), c.dtype), np.empty((nb, hs), c.dtype)
    launch(_lstm_backward, 4 * nb * hs, dgates, dc, kernel_array(dh_new), kernel_array(dc_new), _gates(cache, 5),
           kernel_array(c))
    return dgates.reshape(nb, 4 * hs), dc


def gru_cell_forward(gates_x, gates_h, h):
    """gates_x, gates_h (B, 3H), h (B, H) -> (h' (B, H), cache (B, 4H))."""
    if not supported(gates_x, gates_h, h):
        return numpy_ref.gru_cell_forward(gates_x, gates_h, h)
    nb, hs = h.shape
    h_new, cache = np.empty((nb, hs), h.dtype), np.empty((nb, 4, hs), h.dtype)
    launch(_gru_forward, 3 * nb * hs, h_new, cache, _gates(gates_x, 3), _gates(gates_h, 3), kernel_array(h))
    return h_new, cache.reshape(nb, 4 * hs)


def gru_cell_backward(dh_new, cache, h):
    """dh' (B, H) -> (dgates_x (B, 3H), dgates_h (B, 3H), dh (B, H))."""
    if not supported(dh_new, cache, h):
        return numpy_ref.gru_cell_backward(dh_new, cache, h)
    nb, hs = h.shape
    dgx, dgh, dh = np.empty((nb, 3, hs), h.dtype), np.empty((nb, 3, hs), h.dtype), np.empty((nb, hs), h.dtype)
    launch(_gru_backward, 3 * nb * hs, dgx, dgh, dh, kernel_array(dh_new), _gates(cache, 4), kernel_array(h))
    return dgx.reshape(nb, 3 * hs), dgh.reshape(nb, 3 * hs), dh


lstm_scan_forward = functools.partial(numpy_ref.lstm_scan_forward, cell_forward=lstm_cell_forward)
lstm_scan_backward = functools.partial(numpy_ref.lstm_scan_backward, cell_backward=lstm_cell_backward)
gru_scan_forward = functools.partial(numpy_ref.gru_scan_forward, cell_forward=gru_cell_forward)
gru_scan_backward = functools.partial(numpy_ref.gru_scan_backward, cell_backward=gru_cell_backward)
