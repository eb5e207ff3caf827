"""linear: the affine map of Linear layers; bias_residual(x, bias, residual) = x + bias + residual in one
fused pass (a projection without its bias, then its bias and a skip connection: minigrad.ops.fused)."""
from __future__ import annotations

from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.ops import bias_residual
from minigrad.tensor import Tensor

__all__ = ["linear", "bias_residual"]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias. x: (*, in), weight: (out, in), bias: (out,) -> (*, out). Under autocast all
    three are cast to its dtype (the bias too, so the result stays 16-bit, as torch's)."""
    x, weight, bias = autocast_inputs("linear", x, weight, bias)
    if x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                         f"(expected last dim {weight.shape[1] if weight.ndim == 2 else '?'})")
    out = x @ weight.T
    return out if bias is None else out + bias
