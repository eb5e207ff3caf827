"""Matrix multiplication with batch broadcasting.

The Function handles operands of at least 2 dims; the public `matmul` promotes 1-D operands the way
NumPy and PyTorch do (a vector on the left is a row, on the right a column) and removes the added dim.
Backward is two more matmuls on transposed views (dA = dC Bᵀ, dB = Aᵀ dC), summed over broadcast
batch dims, so a backend that reads transposed operands without copying speeds up both passes.
"""
from __future__ import annotations

from minigrad import dtypes
from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.autograd import Function
from minigrad.ops.shapes import broadcast_shapes, unbroadcast
from minigrad.tensor import Tensor


def _swap_last_two(backend, x):
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return backend.transpose(x, axes)


class Matmul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.matmul(a, b)

    def backward(self, grad):
        a, b = self.saved_arrays
        bk = self.backend
        ga = unbroadcast(bk, bk.matmul(grad, _swap_last_two(bk, b)), tuple(a.shape)) \
            if self.needs_input_grad[0] else None
        gb = unbroadcast(bk, bk.matmul(_swap_last_two(bk, a), grad), tuple(b.shape)) \
            if self.needs_input_grad[1] else None
        return ga, gb


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy/PyTorch semantics: (..., n, k) @ (..., k, m) -> (..., n, m), batch dims
    broadcast; a 1-D left operand is a row vector and a 1-D right operand a column vector, and the
    added dim is removed from the result."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul expects two tensors, got {type(a).__name__} and {type(b).__name__}")
    a, b = autocast_inputs("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least 1 dim, got shapes {a.shape} and {b.shape}")
    if a.device != b.device:
        raise RuntimeError(f"matmul: tensors on different devices ({a.device} and {b.device})")
    k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match (inner dims {k_a} != {k_b})")
    broadcast_shapes(a.shape[:-2], b.shape[:-2])
    dtype = dtypes.promote_types(a.dtype, b.dtype)
    a2 = a.to(dtype).unsqueeze(0) if a.ndim == 1 else a.to(dtype)
    b2 = b.to(dtype).unsqueeze(-1) if b.ndim == 1 else b.to(dtype)
    if a2.ndim > 2 and b2.ndim == 2:
        # (..., n, k) @ (k, m): one 2-D GEMM over the flattened rows, so that backward computes the
        # weight gradient as one (k, rows) @ (rows, m) product instead of a batch of them summed after.
        rows = a2.reshape(-1, a2.shape[-1])
        out = Matmul.apply(rows, b2).reshape(*a2.shape[:-1], b2.shape[-1])
    else:
        out = Matmul.apply(a2, b2)
    added = ((out.ndim - 2,) if a.ndim == 1 else ()) + ((out.ndim - 1,) if b.ndim == 1 else ())
    return out.squeeze(added) if added else out
