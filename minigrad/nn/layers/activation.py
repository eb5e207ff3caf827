"""Activation layers: Module wrappers of the functions in `minigrad.nn.functional.activation`.

Each maps a tensor of any shape to one of the same shape (Softmax and LogSoftmax normalize along
`dim`). `inplace` is accepted where PyTorch has it, so PyTorch model code runs unchanged; minigrad
always computes out of place (the value is the same).
"""
from __future__ import annotations

from minigrad.nn import functional as F
from minigrad.nn.module import Module

__all__ = ["ReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax", "LeakyReLU"]


class ReLU(Module):
    """max(x, 0)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class GELU(Module):
    """x * Phi(x), exact (approximate='none') or with the tanh approximation ('tanh')."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class SiLU(Module):
    """x * sigmoid(x)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.silu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class _AlongDim(Module):
    """A normalization along one dim; `dim` must be given (PyTorch's implicit choice is deprecated)."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def _dim(self) -> int:
        if self.dim is None:
            raise ValueError(f"{type(self).__name__}: pass the dim to normalize along, e.g. "
                             f"{type(self).__name__}(dim=-1)")
        return self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """exp(x) / sum(exp(x)) along `dim`."""

    def forward(self, x):
        return F.softmax(x, self._dim())


class LogSoftmax(_AlongDim):
    """log(softmax(x)) along `dim`."""

    def forward(self, x):
        return F.log_softmax(x, self._dim())


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")
