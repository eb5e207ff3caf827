"""What the softmax kernel tests (C++: test_cpp_softmax.py, CUDA: test_cuda_emulated.py) share: the error
scale an element of each primitive's result is compared with.

A kernel sums a row in another order than NumPy (in vector lanes or warps, then a tree), and a sum of n
terms in another order differs by about sqrt(n) * eps * sum |terms|; so an element is compared with
atol + c * eps * sqrt(n) * scale, scale being the magnitude of what the element is computed from.
"""
from __future__ import annotations

import numpy as np


def softmax_error_scale(name: str, args, ref, axis: int):
    """The magnitude of the terms each element of primitive `name` (softmax_forward, log_softmax_forward,
    softmax_backward, log_softmax_backward) is computed from: |ref| for softmax, |x| + |ref| for
    log-softmax, the products of the backward formulas; args are the primitive's array arguments, ref
    numpy_ref's result, axis the softmax axis."""
    with np.errstate(invalid="ignore", over="ignore"):
        if name == "softmax_forward":
            return np.abs(ref)
        if name == "log_softmax_forward":
            return np.abs(args[0]) + np.abs(ref)
        dout, out = (a.astype(np.float64) for a in args)
        if name == "softmax_backward":
            return np.abs(out) * (np.abs(dout) + np.sum(np.abs(dout * out), axis=axis, keepdims=True))
        return np.abs(dout) + np.exp(out) * np.sum(np.abs(dout), axis=axis, keepdims=True)
