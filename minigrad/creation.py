"""Creation functions: tensors from data, constants, ranges and random draws (PyTorch's signatures)."""
from __future__ import annotations

import numpy as np

from minigrad import dtypes
from minigrad.backend import dispatch
from minigrad.device import CPU, Device, usable
from minigrad.ops.movement import _sizes
from minigrad.random import generator
from minigrad.tensor import Tensor


def _finish(array, device: Device, requires_grad: bool) -> Tensor:
    return Tensor._wrap(array, device).requires_grad_(requires_grad) if requires_grad else Tensor._wrap(array, device)


def _where(device, dtype, default=dtypes.float32):
    device = CPU if device is None else usable(device)
    return device, (default if dtype is None else dtypes.get_dtype(dtype)), dispatch(device)


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (nested lists, a number, a NumPy array or a tensor).
    Without `dtype`: Python floats give float32, ints int64, bools bool; NumPy arrays keep their dtype."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array (float32, float64, int64 or bool)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    dtypes.from_numpy_dtype(array.dtype)  # raises for unsupported dtypes
    return Tensor._wrap(array, CPU)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.empty(_sizes(size), dtype.np_dtype), device, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.zeros(_sizes(size), dtype.np_dtype), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.ones(_sizes(size), dtype.np_dtype), device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of `size` filled with `fill_value` (dtype inferred from the value if not given)."""
    device, dtype, backend = _where(device, dtype, dtypes.default_dtype_for(fill_value))
    return _finish(backend.full(_sizes((size,)), fill_value, dtype.np_dtype), device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Values from start (default 0) up to end, excluded; int64 unless an argument is a float."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    is_float = any(isinstance(v, float) for v in (start, end, step))
    device, dtype, backend = _where(device, dtype, dtypes.float32 if is_float else dtypes.int64)
    return _finish(backend.arange(start, end, step, dtype.np_dtype), device, requires_grad)


def linspace(start, end, steps: int, dtype=None, device=None, requires_grad=False) -> Tensor:
    """`steps` evenly spaced values from start to end, both included."""
    if steps < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {steps}")
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.linspace(start, end, steps, dtype.np_dtype), device, requires_grad)


def eye(n: int, m: int | None = None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """The (n, m) identity matrix (m defaults to n)."""
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.eye(n, n if m is None else m, dtype.np_dtype), device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the seeded generator (see `manual_seed`)."""
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.rand(generator(device), _sizes(size), dtype.np_dtype), device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the seeded generator (see `manual_seed`)."""
    device, dtype, backend = _where(device, dtype)
    return _finish(backend.randn(generator(device), _sizes(size), dtype.np_dtype), device, requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None) -> Tensor:
    """Integers in [low, high) (`randint(high, size)` means low = 0), int64 by default."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    device, dtype, backend = _where(device, dtype, dtypes.int64)
    return Tensor._wrap(backend.randint(generator(device), low, high, _sizes((size,)), dtype.np_dtype), device)


def _like(x: Tensor, dtype, device):
    return {"dtype": x.dtype if dtype is None else dtype, "device": x.device if device is None else device}


def zeros_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(x.shape, **_like(x, dtype, device), requires_grad=requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(x.shape, **_like(x, dtype, device), requires_grad=requires_grad)


def empty_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    return empty(x.shape, **_like(x, dtype, device), requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(x.shape, fill_value, **_like(x, dtype, device), requires_grad=requires_grad)


def rand_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    return rand(x.shape, **_like(x, dtype, device), requires_grad=requires_grad)


def randn_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    return randn(x.shape, **_like(x, dtype, device), requires_grad=requires_grad)


def randint_like(x, low, high=None, dtype=None, device=None) -> Tensor:
    return randint(low, high, x.shape, **_like(x, dtype, device))
