"""Gradient clipping, applied between `loss.backward()` and `optimizer.step()`:

    total_norm = minigrad.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)

Both functions change the `.grad` of the parameters in place, as PyTorch's.
"""
from __future__ import annotations

import functools
import math

from minigrad import creation, dtypes
from minigrad.autograd import no_grad
from minigrad.ops import stack
from minigrad.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters) -> list[Tensor]:
    """The existing gradients of `parameters` (a tensor or an iterable of them)."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(x: Tensor, norm_type: float) -> Tensor:
    """The norm of all elements of x as one vector: max |x| for norm_type inf, else (sum |x|^p)^(1/p)."""
    if norm_type == math.inf:
        return x.abs().amax()
    if norm_type == 2.0:
        return (x * x).sum().sqrt()
    return (x.abs() ** norm_type).sum() ** (1.0 / norm_type)


@no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale the gradients so that their total norm (the norm of all gradients seen as one vector) is at most
    max_norm: each is multiplied by min(1, max_norm / (total_norm + 1e-6)). norm_type: p > 0 or inf.
    Returns the total norm before clipping, a 0-d tensor (0 when no parameter has a gradient). A nan or inf
    total norm raises with error_if_nonfinite=True; otherwise the gradients are scaled by it (to nan)."""
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be a p > 0 or inf, got {norm_type}")
    grads = _grads(parameters)
    if not grads:
        return creation.tensor(0.0)
    norms = [_vector_norm(g, norm_type) for g in grads]
    dtype = functools.reduce(dtypes.promote_types, [n.dtype for n in norms])
    total_norm = _vector_norm(stack([n.to(dtype) for n in norms]), norm_type)  # the norm of the norms
    if error_if_nonfinite and not total_norm.isfinite().item():
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite "
                           f"({total_norm.item()}), so it cannot be clipped; pass error_if_nonfinite=False to "
                           f"scale the gradients by it anyway")
    clip_coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(clip_coef.to(g.dtype))
    return total_norm


@no_grad()
def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        g.clamp_(-clip_value, clip_value)
