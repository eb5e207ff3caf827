"""dropout: randomly zero elements during training (Srivastava et al., 2014)."""
from __future__ import annotations

from minigrad.ops.dropout import Dropout
from minigrad.random import generator
from minigrad.tensor import Tensor

__all__ = ["dropout"]


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p), so the expected value is
    unchanged (any shape -> same shape). Returns x itself when not training or p == 0; p == 1 gives
    zeros. The mask comes from the device's generator: `minigrad.manual_seed` makes it reproducible."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout expects a Tensor, got {type(x).__name__}")
    if not training or p == 0:
        return x
    if not x.dtype.is_floating_point:
        raise TypeError(f"dropout needs a floating point tensor, got {x.dtype}")
    return Dropout.apply(x, gen=generator(x.device), p=float(p))
