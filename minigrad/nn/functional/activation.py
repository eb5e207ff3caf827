"""Activation functions (PyTorch's names). Most are ops of `minigrad.ops`, re-exported here; leaky_relu
is composed from `where`. bias_gelu(x, bias) is gelu(x + bias) in one fused pass (minigrad.ops.fused)."""
from __future__ import annotations

from minigrad.ops import bias_gelu, gelu, log_softmax, relu, sigmoid, silu, softmax, tanh, where
from minigrad.tensor import Tensor

__all__ = ["relu", "gelu", "bias_gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax", "leaky_relu"]


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else negative_slope * x (any shape -> same shape). At 0 the gradient is
    negative_slope, as in PyTorch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"leaky_relu expects a Tensor, got {type(x).__name__}")
    return where(x > 0, x, x * negative_slope)
