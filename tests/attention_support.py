"""What the attention kernel tests (C++: test_cpp_attention.py, CUDA: test_cuda_emulated.py) share: the
error scales the results of attention_forward / attention_backward are compared with.

A kernel computes the scores, their exp and the products in another order than numpy_ref (tiles, an online
softmax, FMAs), so each element is compared with atol + 8 * eps * sqrt(n) * scale, scale the magnitude of
what the element is computed from (below).
"""
from __future__ import annotations

import numpy as np


def attention_error_scales(q, k, v, bias, causal, scale, dout, out, lse):
    """The magnitudes the kernels' results are computed from, in float64 (see the module docstring). A score is off
    by about eps (|scale q| |k| + |bias|); in exp(s - m) that is a relative error of the probability,
    amplified by the largest such magnitude of the row (`amp`), then carried through the products like the
    values themselves."""
    q, k, v, dout, out = (a.astype(np.float64) for a in (q, k, v, dout, out))
    tq, tk = q.shape[2], k.shape[2]
    qs = q * float(scale)
    s = qs @ np.swapaxes(k, -1, -2)
    sabs = np.abs(qs) @ np.swapaxes(np.abs(k), -1, -2)
    hidden = np.triu(np.ones((tq, tk), bool), 1) if causal else np.zeros((tq, tk), bool)
    if bias is not None:
        b = np.broadcast_to(bias.astype(np.float64), s.shape)
        finite = np.isfinite(b)
        s, sabs, hidden = s + np.where(finite, b, 0), sabs + np.where(finite, np.abs(b), 0), hidden | ~finite
    hidden = np.broadcast_to(hidden, s.shape)
    amp = 1 + 2 * np.max(np.where(hidden, 0, sabs), axis=-1, keepdims=True)
    shift = np.where(np.isfinite(lse), lse, 0)[..., None]
    p = np.where(hidden, 0, np.exp(np.minimum(0, s - shift)))  # P, in float64
    dout, v = np.abs(dout), np.abs(v)
    ads = p * amp * (dout @ np.swapaxes(v, -1, -2) + np.sum(dout * np.abs(out), axis=-1, keepdims=True))
    return (amp * (p @ v), amp[..., 0] + np.abs(shift[..., 0]), ads @ np.abs(k) * float(scale),
            np.swapaxes(ads, -1, -2) @ np.abs(qs), np.swapaxes(p, -1, -2) @ (amp * dout))
