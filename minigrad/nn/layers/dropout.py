"""Dropout: random zeroing in training mode, the identity in eval mode."""
from __future__ import annotations

from minigrad.nn import functional as F
from minigrad.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """In training mode, zero each element with probability p and scale the rest by 1 / (1 - p); in eval
    mode return the input. Any shape -> same shape. (`inplace` is accepted for PyTorch compatibility;
    minigrad computes out of place.)"""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
