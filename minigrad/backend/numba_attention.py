"""Numba kernels for scaled dot-product attention: flash-style, the (Tq, Tk) scores never stored whole.

out = softmax(q k^T * scale + bias) v, with the semantics of `numpy_ref.attention_forward` /
`attention_backward` (causal mask top-left aligned, additive bias, a fully masked row gives 0).

Forward (FlashAttention's online softmax; one task per (batch, head, block of BQ queries)): the keys
are visited in blocks of BK. For each block the task computes the (BQ, BK) tile of scores, and keeps
per query row a running max m, a running sum l of exp(s - m) and a running output acc = sum of
exp(s - m) v. When a block raises a row's max from m to m', the old sums are first rescaled by
exp(m - m'); after the last block, acc / l is the softmax average of v and m + log(l) the row's
logsumexp (lse), without the row ever being stored whole. Causal blocks wholly above the diagonal
are skipped.

Backward (one task per (batch, head): dK and dV sum over query blocks and dQ over key blocks, so a
task owning a whole head writes all three without races or partial buffers): the probabilities are
recomputed tile by tile from the saved lse, P = exp(S - lse), and

    dV += P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dO * O)),   dQ += dS K * scale,   dK += dS^T (q * scale)

(rowsum(dO * O) = rowsum(P * dP), the FlashAttention identity: a (Tq, Dv) product, computed once).

Tiles. Every product above is computed by one micro-kernel, `numba_gemm.abt`: c = a b^T, each entry
a dot product of two contiguous rows. So the operands are prepared once per call in the layouts those
rows need: the sequences zero-padded to whole blocks, and v, k, q, dO also transposed block by block
(x^T of each block of rows, contiguous: the `_blocks_t` arrays); inside a task, the P and dS tiles
are transposed for dV and dK. A padded key is masked like a causal one; a padded query row is masked
whole and cut off at the end.

The C++ kernels of cpp/attention.cpp (same algorithm, leaner tile products) outrank these where the
extension is built; these serve builds without it.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, supported
from minigrad.backend.numba_gemm import abt, transpose
from minigrad.backend.numba_math import exp

BQ, BK = 64, 64  # queries, keys per block: a (BQ, BK) tile is 16 KiB in float32 (64 x 64 measured 10% faster
# than 32 x 64 and 64 x 32 at the tiny GPT's sizes, causal or not)


@njit(cache=True, fastmath=FASTMATH)
def _scores(s, q, k, bias, bstrides, is_causal, b, h, i0, j0, tq, tk):
    """The (BQ, BK) tile of scores of queries i0.. against keys j0.. of head (b, h): q (scaled) k^T + bias,
    -inf where a key is hidden (causal, or padding), and whole rows of -inf for padded queries."""
    abt(s, q[b, h, i0:i0 + BQ], k[b, h, j0:j0 + BK], False)
    sb, sh, si = bstrides
    nk = min(BK, tk - j0)
    for ii in range(BQ):
        i = i0 + ii
        if i >= tq:
            s[ii, :] = -np.inf
            continue
        start = b * sb + h * sh + i * si + j0
        brow = bias[start:start + nk]  # a slice: an index with an offset in the loop would not vectorize
        for jj in range(nk):
            s[ii, jj] += brow[jj]
        visible = max(0, min(nk, i - j0 + 1)) if is_causal else nk  # causal: keys j <= i
        for jj in range(visible, BK):
            s[ii, jj] = -np.inf


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(out, lse, q, k, vt, bias, bstrides, is_causal, tq, tk):
    # out (B, H, Tq', Dv), lse (B, H, Tq') are written. q (B, H, Tq', D) (scaled), k (B, H, Tk', D),
    # vt (B, H, Tk'/BK, Dv, BK) (v^T by key block); ' marks sizes padded to whole blocks; bias: see _bias.
    nb, nh, tqp, _ = q.shape
    nqb = tqp // BQ
    for task in prange(nb * nh * nqb):
        b, h, i0 = task // (nh * nqb), task // nqb % nh, task % nqb * BQ
        s = np.empty((BQ, BK), q.dtype)
        m = np.full(BQ, -np.inf, q.dtype)  # running row max
        l = np.zeros(BQ, q.dtype)  # running sum of exp(s - m)
        acc = np.zeros((BQ, out.shape[3]), q.dtype)  # running sum of exp(s - m) v
        kend = min(tk, i0 + BQ) if is_causal else tk  # causal: the block's last row sees keys < i0 + BQ
        for j0 in range(0, kend, BK):
            _scores(s, q, k, bias, bstrides, is_causal, b, h, i0, j0, tq, tk)
            for ii in range(BQ):
                mb = m[ii]
                for jj in range(BK):
                    mb = max(mb, s[ii, jj])
                if mb == -np.inf:  # every key so far is hidden: the row stays empty
                    s[ii, :] = 0
                    continue
                alpha = exp(m[ii] - mb)  # rescales the old sums to the new max (0 when m was -inf)
                m[ii] = mb
                rowsum = l[ii] * alpha
                for jj in range(BK):
                    s[ii, jj] = exp(s[ii, jj] - mb)
                    rowsum += s[ii, jj]
                l[ii] = rowsum
                for c in range(acc.shape[1]):
                    acc[ii, c] *= alpha
            abt(acc, s, vt[b, h, j0 // BK], True)  # acc += P V
        for ii in range(BQ):
            i = i0 + ii
            if l[ii] == 0:  # a fully masked row: output 0, logsumexp -inf
                out[b, h, i, :] = 0
                lse[b, h, i] = -np.inf
            else:
                inv = 1 / l[ii]
                for c in range(acc.shape[1]):
                    out[b, h, i, c] = acc[ii, c] * inv
                lse[b, h, i] = m[ii] + np.log(l[ii])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(dq, dk, dv, dout, q, k, v, out, lse, qt, kt, dot, bias, bstrides, is_causal, tq, tk):
    # dq (B, H, Tq', D), dk (B, H, Tk', D), dv (B, H, Tk', Dv) are written, dq without its factor
    # `scale`. Read: dout, out (B, H, Tq', Dv), q (scaled), k, v as in _forward, lse (B, H, Tq'), and
    # the transposed blocks qt (B, H, Tq'/BQ, D, BQ), kt (B, H, Tk'/BK, D, BK), dot (B, H, Tq'/BQ, Dv, BQ).
    nb, nh, tqp, _ = q.shape
    for task in prange(nb * nh):
        b, h = task // nh, task % nh
        dq[b, h] = 0
        dk[b, h] = 0
        dv[b, h] = 0
        p = np.empty((BQ, BK), q.dtype)  # scores, then P
        ds = np.empty((BQ, BK), q.dtype)  # dP, then dS
        t = np.empty((BK, BQ), q.dtype)  # P^T, then dS^T
        delta = np.empty(BQ, q.dtype)  # rowsum(dO * O)
        for i0 in range(0, tqp, BQ):
            for ii in range(BQ):
                acc = q.dtype.type(0)
                for c in range(dout.shape[3]):
                    acc += dout[b, h, i0 + ii, c] * out[b, h, i0 + ii, c]
                delta[ii] = acc
            kend = min(tk, i0 + BQ) if is_causal else tk
            for j0 in range(0, kend, BK):
                _scores(p, q, k, bias, bstrides, is_causal, b, h, i0, j0, tq, tk)
                abt(ds, dout[b, h, i0:i0 + BQ], v[b, h, j0:j0 + BK], False)  # dP = dO V^T
                for ii in range(BQ):
                    row_lse = lse[b, h, i0 + ii]
                    if row_lse == -np.inf:  # a fully masked row (or a padded one): P = 0
                        p[ii, :] = 0
                        ds[ii, :] = 0
                        continue
                    for jj in range(BK):  # P = exp(S - lse), dS = P * (dP - delta)
                        p[ii, jj] = exp(p[ii, jj] - row_lse)
                        ds[ii, jj] = p[ii, jj] * (ds[ii, jj] - delta[ii])
                transpose(t, p)
                abt(dv[b, h, j0:j0 + BK], t, dot[b, h, i0 // BQ], True)  # dV += P^T dO
                transpose(t, ds)
                abt(dk[b, h, j0:j0 + BK], t, qt[b, h, i0 // BQ], True)  # dK += dS^T q
                abt(dq[b, h, i0:i0 + BQ], ds, kt[b, h, j0 // BK], True)  # dQ += dS K


# ---- operand preparation ----------------------------------------------------------------------------


def _padded(x, block):
    """x (B, H, T, D) zero-padded to whole blocks of rows, C-contiguous."""
    pad = -x.shape[2] % block
    return kernel_array(np.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) if pad else x)


def _scaled_queries(q, scale):
    """scale * q (B, H, Tq, D) zero-padded to whole query blocks, C-contiguous, in one new array (padded
    first when it needs padding, then scaled in place: the padding's zeros stay 0)."""
    s = q.dtype.type(scale)
    if q.shape[2] % BQ == 0:
        return kernel_array(q * s)
    qp = _padded(q, BQ)  # a fresh array
    qp *= s
    return qp


def _blocks_t(x, block):
    """x (B, H, T', D) padded -> (B, H, T'/block, D, block): the transpose of each block of rows."""
    nb, nh, t, d = x.shape
    return np.ascontiguousarray(x.reshape(nb, nh, t // block, block, d).transpose(0, 1, 2, 4, 3))


def _bias(bias, shape, dtype):
    """The bias as a flat C-contiguous array and its element strides (sb, sh, si) as a view of shape
    (B, H, Tq, Tk), 0 along broadcast dims and 1 along the keys (a bias constant along them is
    expanded): one array type whatever the bias's shape, so one compilation. No bias: zeros(Tk)."""
    if bias is None:
        return np.zeros(shape[-1], dtype), (0, 0, 0)
    bias = np.reshape(bias, (1,) * (4 - np.ndim(bias)) + np.shape(bias))
    bias = kernel_array(np.broadcast_to(bias, bias.shape[:3] + shape[3:]))
    strides = np.broadcast_to(bias, shape).strides
    return bias.reshape(-1), tuple(st // bias.itemsize for st in strides[:3])


def attention_forward(q, k, v, bias, is_causal, scale):
    """q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,Dv), bias broadcastable to (B,H,Tq,Tk) or None ->
    (out (B,H,Tq,Dv), lse (B,H,Tq)); dtypes other than float32/float64 go to numpy_ref."""
    if not supported(*((q, k, v) if bias is None else (q, k, v, bias))):
        return numpy_ref.attention_forward(q, k, v, bias, is_causal, scale)
    (nb, nh, tq, _), tk = q.shape, k.shape[2]
    flat, bstrides = _bias(bias, (nb, nh, tq, tk), q.dtype)
    vp = _padded(v, BK)
    out = np.empty((nb, nh, tq + -tq % BQ, vp.shape[3]), q.dtype)
    lse = np.empty(out.shape[:3], q.dtype)
    launch(_forward, nb * nh * tq * tk, out, lse, _scaled_queries(q, scale), _padded(k, BK),
           _blocks_t(vp, BK), flat, bstrides, bool(is_causal), tq, tk)  # work: the scores
    return out[:, :, :tq], lse[:, :, :tq]


def attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale):
    """-> (dq, dk, dv), shaped like q, k, v; out and lse as attention_forward returned them."""
    arrays = (dout, q, k, v, out, lse) + (() if bias is None else (bias,))
    if not supported(*arrays):
        return numpy_ref.attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale)
    (nb, nh, tq, _), tk = q.shape, k.shape[2]
    flat, bstrides = _bias(bias, (nb, nh, tq, tk), q.dtype)
    qs, kp, vp = _scaled_queries(q, scale), _padded(k, BK), _padded(v, BK)
    lsep = np.pad(lse, ((0, 0), (0, 0), (0, -tq % BQ)), constant_values=-np.inf)
    dq, dk, dv = np.empty_like(qs), np.empty_like(kp), np.empty_like(vp)
    dop = _padded(dout, BQ)
    launch(_backward, nb * nh * tq * tk, dq, dk, dv, dop, qs, kp, vp, _padded(out, BQ), lsep, _blocks_t(qs, BQ),
           _blocks_t(kp, BK), _blocks_t(dop, BQ), flat, bstrides, bool(is_causal), tq, tk)
    dq = dq[:, :, :tq]
    dq *= q.dtype.type(scale)
    return dq, dk[:, :, :tk], dv[:, :, :tk]
