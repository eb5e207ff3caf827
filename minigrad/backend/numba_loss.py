"""Numba cross-entropy fused with log-softmax: forward and backward over logits (N, C), one task per row.

Forward, per row: the log-softmax of the row (numba_reduce.softmax_row: max, sum of exp, write) into
`logprobs`, which backward reuses; then the loss (1 - ls) * -logp[y] + ls * mean_c(-logp[c]), the
mean accumulated during a last pass over the row (label smoothing ls, PyTorch's definition). A row
whose target is ignore_index gets loss 0 (its logprobs are still computed, as in the reference).

Backward, per row, in one pass: dlogits = (exp(logp) - q) * dloss with the target distribution
q = (1 - ls) * onehot(y) + ls / C; ignored rows get exactly 0.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, kernel_array, launch, supported
from minigrad.backend.numba_math import exp
from minigrad.backend.numba_reduce import softmax_row


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(losses, logprobs, logits, targets, ignore_index, label_smoothing):
    n, c = logits.shape
    T = logits.dtype.type
    for i in prange(n):
        softmax_row(logprobs, logits, i, True)
        if targets[i] == ignore_index:
            losses[i] = 0
            continue
        nll = -logprobs[i, targets[i]]
        if label_smoothing != 0:
            acc = 0.0
            for j in range(c):
                acc += logprobs[i, j]
            nll = T(1 - label_smoothing) * nll - T(label_smoothing) * T(acc / c)
        losses[i] = nll


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(dlogits, dlosses, logprobs, targets, ignore_index, label_smoothing):
    n, c = logprobs.shape
    T = logprobs.dtype.type
    on_target, off = T(1 - label_smoothing), T(label_smoothing / c)
    for i in prange(n):
        ignored = targets[i] == ignore_index
        for j in range(c):
            v = exp(logprobs[i, j])
            if j == targets[i]:
                v -= on_target
            if label_smoothing != 0:
                v -= off
            dlogits[i, j] = 0 if ignored else v * dlosses[i]


def _targets(targets):
    return kernel_array(targets) if targets.dtype == np.int64 else None


def cross_entropy_forward(logits, targets, ignore_index, label_smoothing):
    t = _targets(targets)
    if t is None or not supported(logits) or logits.size == 0:
        return numpy_ref.cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
    logits = kernel_array(logits)
    losses, logprobs = np.empty(logits.shape[0], logits.dtype), np.empty_like(logits)
    launch(_forward, logits.size, losses, logprobs, logits, t, int(ignore_index), float(label_smoothing))
    return losses, logprobs


def cross_entropy_backward(dlosses, logprobs, targets, ignore_index, label_smoothing):
    t = _targets(targets)
    if t is None or not supported(dlosses, logprobs) or logprobs.size == 0:
        return numpy_ref.cross_entropy_backward(dlosses, logprobs, targets, ignore_index, label_smoothing)
    logprobs = kernel_array(logprobs)
    dlogits = np.empty_like(logprobs)
    launch(_backward, dlogits.size, dlogits, kernel_array(dlosses), logprobs, t, int(ignore_index),
           float(label_smoothing))
    return dlogits
