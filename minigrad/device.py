"""Devices: where a tensor's storage lives ("cpu" holds NumPy arrays, "cuda" holds CuPy arrays)."""
from __future__ import annotations

_KNOWN_TYPES = ("cpu", "cuda")


class Device:
    """A device such as `Device("cpu")` or `Device("cuda:0")`; compares equal to its string form."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
        kind, _, index = spec.partition(":")
        if kind not in _KNOWN_TYPES or (index and not index.isdigit()):
            raise ValueError(f"unknown device {spec!r}; expected 'cpu', 'cuda' or 'cuda:N'")
        if kind == "cpu" and index not in ("", "0"):
            raise ValueError(f"unknown device {spec!r}; the CPU has no index")
        self.type = kind
        self.index = int(index or 0) if kind == "cuda" else None  # "cuda" means "cuda:0"

    def __str__(self) -> str:
        return self.type if self.index in (None, 0) else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except ValueError:
                return False
        if not isinstance(other, Device):
            return NotImplemented
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self) -> int:
        return hash((self.type, self.index or 0))


CPU = Device("cpu")


def usable(spec) -> Device:
    """The Device for `spec`, checked to be one this process can put tensors on: the CPU, or 'cuda:0' when
    a CUDA backend is available (minigrad runs on one GPU). Raises RuntimeError naming why not."""
    device = Device(spec)
    if device.type == "cuda":
        from minigrad.backend import cuda_runtime_error  # (the backend imports this module)

        why = cuda_runtime_error()
        if why is not None:
            raise RuntimeError(f"device '{device}' is not available: {why} (minigrad.cuda.is_available() is False)")
        if device.index:
            raise RuntimeError(f"device '{device}': minigrad runs on one GPU, 'cuda:0'")
    return device
