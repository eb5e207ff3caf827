"""Numba kernels for conv2d (im2col / col2im around the GEMM primitive) and for max / avg pooling.

conv2d. The convolution is a matrix product once each output pixel's receptive field is laid out as a
column: im2col writes cols (N, C*kh*kw, Ho*Wo) (row (c, a, b) holds input channel c shifted by kernel
offset (a, b) for every output pixel), and then, per image and group,

    out[n, g] (O/g, Ho*Wo) = weight[g] (O/g, K) @ cols[n, g] (K, Ho*Wo),        K = C/g * kh * kw

one batched call of the `matmul` primitive of the dispatch table (the C++ GEMM when it is built),
which writes the output directly in (N, O, Ho, Wo) order. Backward: dcols[n, g] = weight[g]^T @
dout[n, g] (the matmul primitive again), then col2im adds dcols back onto the input positions each
column was read from (the adjoint of im2col); and dweight[g] = sum_n dout[n, g] @ cols[n, g]^T, a
product of two operands read along their rows, which `numba_gemm.abt` computes without packing
(2.3x faster than the C++ GEMM on the transposed view, measured at the conv2d_step sizes).

Chosen by measurement (single-threaded, forward, the two layers of bench's conv2d_step): im2col + GEMM
0.51 ms and 8.9 ms, a direct convolution in Numba (a task per image and block of 4 output channels,
each input row added into 4 output rows) 0.71 ms and 11.2 ms: the GEMM's register blocking wins.

im2col and col2im run one task per (image, channel): a task owns its input plane (col2im adds into it
without races) and its kh*kw rows of cols; each (kernel offset, output row) is one strided row copy,
the zero padding handled by clipping the row's range (no padded copy of the input is made).

Pooling. One task per (image, channel) plane, a direct loop over output positions and their windows,
with PyTorch's geometry (ceil_mode, padding, dilation) computed by the reference's `pool_geometry`.
max_pool2d scans only the real (unpadded) elements of a window; the first largest wins ties, a nan
wins and sticks (as NumPy's argmax); a window of -inf points at its first real element. The backward
passes scatter-add into the plane the task owns.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigrad.backend import dispatch, numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, supported
from minigrad.backend.numba_gemm import abt
from minigrad.backend.numba_reduce import _better


def _out_size(size, k, s, before, after, d):
    return (size + before + after - d * (k - 1) - 1) // s + 1


@njit(cache=True)
def _valid_range(out_len, in_len, offset, s):
    """The output positions o in [lo, hi) whose input position o * s + offset lies in [0, in_len)."""
    lo = 0 if offset >= 0 else (-offset + s - 1) // s
    hi = 0 if in_len - offset <= 0 else (in_len - offset + s - 1) // s
    return min(lo, out_len), max(min(hi, out_len), min(lo, out_len))


# ---- conv2d -------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _copy(dst, d0, src, s0, step, n):
    """dst[d0 + t] = src[s0 + t * step] for t < n, on 1-D arrays. The indices are unsigned: Numba checks
    every signed index for wraparound (a negative index counts from the end), a select per element that
    keeps LLVM from vectorizing a loop whose index has an offset."""
    d, s, st = np.uint64(d0), np.uint64(s0), np.uint64(step)
    for t in range(np.uint64(n)):
        dst[d + t] = src[s + t * st]


@njit(cache=True, inline="always")
def _add(dst, d0, step, src, s0, n):
    """dst[d0 + t * step] += src[s0 + t] for t < n, on 1-D arrays (unsigned indices, as in _copy)."""
    d, s, st = np.uint64(d0), np.uint64(s0), np.uint64(step)
    for t in range(np.uint64(n)):
        dst[d + t * st] += src[s + t]


@njit(parallel=True, cache=True)
def _im2col(cols, x, kh, kw, sh, sw, top, left, dh, dw, ho, wo):
    # cols (N, C*kh*kw, Ho*Wo) is written: cols[n, (c*kh + a)*kw + b, i*Wo + j] = x[n, c, i*sh + a*dh - top,
    # j*sw + b*dw - left], 0 where that is padding.
    n, c, h, w = x.shape
    for task in prange(n * c):
        img, ch = task // c, task % c
        plane = x[img, ch].reshape(-1)
        for a in range(kh):
            for b in range(kw):
                row = cols[img, (ch * kh + a) * kw + b]
                xoff = b * dw - left
                j0, j1 = _valid_range(wo, w, xoff, sw)
                for i in range(ho):
                    iy = i * sh + a * dh - top
                    if iy < 0 or iy >= h:
                        row[i * wo:(i + 1) * wo] = 0
                        continue
                    row[i * wo:i * wo + j0] = 0
                    _copy(row, i * wo + j0, plane, iy * w + j0 * sw + xoff, sw, j1 - j0)
                    row[i * wo + j1:(i + 1) * wo] = 0


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _col2im(dx, cols, kh, kw, sh, sw, top, left, dh, dw, ho, wo):
    # The adjoint of _im2col: dx (N, C, H, W) is written, each element the sum of the cols entries read from it.
    n, c, h, w = dx.shape
    for task in prange(n * c):
        img, ch = task // c, task % c
        plane = dx[img, ch].reshape(-1)
        plane[:] = 0
        for a in range(kh):
            for b in range(kw):
                row = cols[img, (ch * kh + a) * kw + b]
                xoff = b * dw - left
                j0, j1 = _valid_range(wo, w, xoff, sw)
                for i in range(ho):
                    iy = i * sh + a * dh - top
                    if 0 <= iy < h:
                        _add(plane, iy * w + j0 * sw + xoff, sw, row, i * wo + j0, j1 - j0)


@njit(parallel=True, cache=True)
def _weight_grad(dw, dout, cols):
    # dw (g, O/g, K) = sum over images n of dout[n, g] (O/g, Ho*Wo) @ cols[n, g] (K, Ho*Wo)^T: the NT form
    # of numba_gemm.abt. One task per (group, block of 4 output channels) owns its rows of dw.
    groups, og = dw.shape[0], dw.shape[1]
    nblocks = (og + 3) // 4
    for task in prange(groups * nblocks):
        g, o0 = task // nblocks, task % nblocks * 4
        o1 = min(o0 + 4, og)
        dw[g, o0:o1] = 0
        for img in range(dout.shape[0]):
            abt(dw[g, o0:o1], dout[img, g, o0:o1], cols[img, g], True)


def _geometry(x_shape, w_shape, stride, padding, dilation):
    (_, _, h, w), (_, _, kh, kw) = x_shape, w_shape
    (top, bottom), (left, right) = padding
    ho = _out_size(h, kh, stride[0], top, bottom, dilation[0])
    wo = _out_size(w, kw, stride[1], left, right, dilation[1])
    return (kh, kw, stride[0], stride[1], top, left, dilation[0], dilation[1], ho, wo)


def _cols(x, geometry):
    """im2col of x (N, C, H, W): (N, C*kh*kw, Ho*Wo)."""
    kh, kw, *_, ho, wo = geometry
    cols = np.empty((x.shape[0], x.shape[1] * kh * kw, ho * wo), x.dtype)
    launch(_im2col, cols.size, cols, kernel_array(x), *geometry)
    return cols


def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    """x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) or None -> out (N, O, Ho, Wo); padding ((top,
    bottom), (left, right)). float32/float64; other dtypes go to numpy_ref."""
    if not supported(x, weight, *([] if bias is None else [bias])):
        return numpy_ref.conv2d_forward(x, weight, stride, padding, dilation, groups, bias)
    geometry = _geometry(x.shape, weight.shape, stride, padding, dilation)
    n, o, (ho, wo) = x.shape[0], weight.shape[0], geometry[-2:]
    cols = _cols(x, geometry).reshape(n, groups, -1, ho * wo)  # (N, g, K, Ho*Wo)
    out = dispatch("cpu").matmul(kernel_array(weight).reshape(groups, o // groups, -1), cols)  # (N, g, O/g, Ho*Wo)
    out = out.reshape(n, o, ho, wo)
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out


def conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs=(True, True)):
    """-> (dx (N, C, H, W), dweight (O, C/groups, kh, kw)) for out = conv2d_forward(x, weight, ...), each None
    where `needs` (need dx, need dweight) says it is not wanted."""
    if not supported(dout, x, weight):
        return numpy_ref.conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs)
    geometry = _geometry(x.shape, weight.shape, stride, padding, dilation)
    n, o, (ho, wo) = x.shape[0], weight.shape[0], geometry[-2:]
    dout_g = kernel_array(dout).reshape(n, groups, o // groups, ho * wo)
    dx = dweight = None
    if needs[1]:
        cols = _cols(x, geometry).reshape(n, groups, -1, ho * wo)  # recomputed, not kept from forward
        dweight = np.empty((groups, o // groups, cols.shape[2]), x.dtype)
        launch(_weight_grad, cols.size, dweight, dout_g, cols)
        dweight = dweight.reshape(weight.shape)
    if needs[0]:
        w_t = kernel_array(weight).reshape(groups, o // groups, -1).swapaxes(-1, -2)  # (g, K, O/g), a view
        dcols = dispatch("cpu").matmul(w_t, dout_g)  # (N, g, K, Ho*Wo)
        dx = np.empty(x.shape, x.dtype)
        launch(_col2im, dcols.size, dx, dcols.reshape(n, -1, ho * wo), *geometry)
    return dx, dweight


# ---- pooling ------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _max_pool(out, argmax, x, kh, kw, sh, sw, ph, pw, dh, dw):
    # out, argmax (N, C, Ho, Wo) are written: each window's max and its flat index into H*W.
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for task in prange(n * c):
        img, ch = task // c, task % c
        plane = x[img, ch]
        for i in range(ho):
            r0 = i * sh - ph
            a0, a1 = _valid_range(kh, h, r0, dh)
            for j in range(wo):
                c0 = j * sw - pw
                b0, b1 = _valid_range(kw, w, c0, dw)
                best = x.dtype.type(-np.inf)  # (a float64 -inf would make every comparison convert)
                at = (r0 + a0 * dh) * w + c0 + b0 * dw  # the first real element (the answer for all -inf)
                for a in range(a0, a1):
                    for b in range(b0, b1):
                        v = plane[r0 + a * dh, c0 + b * dw]
                        if _better(v, best, True):  # larger, or the first nan
                            best, at = v, (r0 + a * dh) * w + c0 + b * dw
                out[img, ch, i, j] = best
                argmax[img, ch, i, j] = at


@njit(parallel=True, cache=True)
def _max_pool_backward(dx, dout, argmax):
    # dx (N, C, H, W) is written: each dout element added at its argmax.
    n, c, ho, wo = dout.shape
    for task in prange(n * c):
        img, ch = task // c, task % c
        plane = dx[img, ch].reshape(-1)
        plane[:] = 0
        for i in range(ho):
            for j in range(wo):
                plane[argmax[img, ch, i, j]] += dout[img, ch, i, j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _avg_pool(out, x, divisor, kh, kw, sh, sw, ph, pw):
    # out (N, C, Ho, Wo) is written: the sum of each window's real elements / divisor (Ho, Wo).
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for task in prange(n * c):
        img, ch = task // c, task % c
        for i in range(ho):
            a0, a1 = _valid_range(kh, h, i * sh - ph, 1)
            for j in range(wo):
                b0, b1 = _valid_range(kw, w, j * sw - pw, 1)
                acc = x.dtype.type(0)
                for a in range(a0, a1):
                    for b in range(b0, b1):
                        acc += x[img, ch, i * sh - ph + a, j * sw - pw + b]
                out[img, ch, i, j] = acc / divisor[i, j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _avg_pool_backward(dx, dout, divisor, kh, kw, sh, sw, ph, pw):
    # dx (N, C, H, W) is written: every real element of a window gets dout / divisor of that window.
    n, c, h, w = dx.shape
    ho, wo = dout.shape[2], dout.shape[3]
    for task in prange(n * c):
        img, ch = task // c, task % c
        dx[img, ch] = 0
        for i in range(ho):
            a0, a1 = _valid_range(kh, h, i * sh - ph, 1)
            for j in range(wo):
                b0, b1 = _valid_range(kw, w, j * sw - pw, 1)
                g = dout[img, ch, i, j] / divisor[i, j]
                for a in range(a0, a1):
                    for b in range(b0, b1):
                        dx[img, ch, i * sh - ph + a, j * sw - pw + b] += g


def max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), argmax int64 (N, C, Ho, Wo), flat indices into H*W)."""
    if not supported(x):
        return numpy_ref.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    (ho, wo), _ = numpy_ref.pool_geometry(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    out = np.empty(x.shape[:2] + (ho, wo), x.dtype)
    argmax = np.empty(out.shape, np.int64)
    launch(_max_pool, x.size, out, argmax, kernel_array(x), *kernel, *stride, *padding, *dilation)
    return out, argmax


def max_pool2d_backward(dout, argmax, input_shape):
    """-> dx (input_shape): dout scatter-added at argmax."""
    if not supported(dout):
        return numpy_ref.max_pool2d_backward(dout, argmax, input_shape)
    dx = np.empty(input_shape, dout.dtype)
    launch(_max_pool_backward, dx.size, dx, kernel_array(dout), kernel_array(argmax))
    return dx


def avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """x (N, C, H, W) -> out (N, C, Ho, Wo): window means (the divisor as in numpy_ref)."""
    if not supported(x):
        return numpy_ref.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
    divisor = numpy_ref.avg_pool_divisor(x.shape[2:], kernel, stride, padding, ceil_mode, count_include_pad, x)
    out = np.empty(x.shape[:2] + divisor.shape, x.dtype)
    launch(_avg_pool, x.size, out, kernel_array(x), divisor, *kernel, *stride, *padding)
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, count_include_pad):
    """-> dx (input_shape) for out = avg_pool2d_forward(x, ...)."""
    if not supported(dout):
        return numpy_ref.avg_pool2d_backward(dout, input_shape, kernel, stride, padding, ceil_mode, count_include_pad)
    divisor = numpy_ref.avg_pool_divisor(input_shape[2:], kernel, stride, padding, ceil_mode, count_include_pad, dout)
    dx = np.empty(input_shape, dout.dtype)
    launch(_avg_pool_backward, dx.size, dx, kernel_array(dout), divisor, *kernel, *stride, *padding)
    return dx
