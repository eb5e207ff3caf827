"""Parameter: a tensor that a Module registers as trainable."""
from __future__ import annotations

from minigrad.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad and is registered by `Module.__setattr__` in `parameters()`.
    `Parameter(t)` shares t's storage."""

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from minigrad.creation import empty
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        self._set(data.data, data.device, False)
        self.requires_grad_(requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
