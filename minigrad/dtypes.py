"""Data types: a thin, named layer over the array library's dtypes.

A `DType` pairs the public name users write (`minigrad.float32`) with the NumPy dtype that stores it.
Tensors never change dtype silently: ops that mix dtypes follow PyTorch's promotion (int64 + float32 ->
float32, float32 + float64 -> float64), and every conversion is an explicit `.to(dtype)` / `.float()`.
"""
from __future__ import annotations

import numpy as np


class DType:
    """A tensor element type, e.g. `minigrad.float32`."""

    __slots__ = ("name", "np_dtype", "is_floating_point", "itemsize")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.np_dtype = np.dtype(np_dtype)
        self.is_floating_point = self.np_dtype.kind == "f"
        self.itemsize = self.np_dtype.itemsize

    def __repr__(self) -> str:
        return f"minigrad.{self.name}"

    def __reduce__(self):  # DTypes are singletons, also across copy/pickle
        return (get_dtype, (self.name,))


float32 = DType("float32", np.float32)
float64 = DType("float64", np.float64)
int64 = DType("int64", np.int64)
bool_ = DType("bool", np.bool_)

ALL_DTYPES = (float32, float64, int64, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NP = {d.np_dtype: d for d in ALL_DTYPES}
_DEFAULT_FLOAT = float32
_PYTHON_SCALARS = {bool: bool_, int: int64, float: _DEFAULT_FLOAT}


def get_dtype(spec) -> DType:
    """Resolve a DType, its name, a NumPy dtype or a Python type (float, int, bool) to a DType."""
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]
    if spec is float:
        return _DEFAULT_FLOAT
    if spec is int:
        return int64
    if spec is bool:
        return bool_
    try:
        np_dtype = np.dtype(spec)
    except TypeError:
        np_dtype = None
    if np_dtype is not None and np_dtype in _BY_NP:
        return _BY_NP[np_dtype]
    raise TypeError(f"unsupported dtype {spec!r}; minigrad supports {', '.join(_BY_NAME)}")


def from_numpy_dtype(np_dtype) -> DType:
    """The DType of arrays of `np_dtype`. Unsupported storage types (int32, float16, ...) raise rather
    than being mapped to a neighbour, so that conversions stay explicit."""
    found = _BY_NP.get(np_dtype)  # the fast path: np_dtype is already a numpy.dtype we support
    if found is not None:
        return found
    np_dtype = np.dtype(np_dtype)
    if np_dtype not in _BY_NP:
        raise TypeError(f"arrays of dtype {np_dtype} are not supported; convert to one of "
                        f"{', '.join(_BY_NAME)} first")
    return _BY_NP[np_dtype]


def default_dtype_for(data) -> DType:
    """The dtype `minigrad.tensor(data)` picks when none is given, as in PyTorch: Python floats -> float32,
    ints -> int64, bools -> bool; NumPy arrays keep float64/float32/int64/bool, other ints become int64."""
    scalar_type = type(data)
    if scalar_type in _PYTHON_SCALARS:  # the fast path for `tensor * 2.0` and friends
        return _PYTHON_SCALARS[scalar_type]
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "b":
        return bool_
    if kind in "iu":
        return int64
    if kind == "f":
        if isinstance(data, np.ndarray) and arr.dtype in _BY_NP:
            return _BY_NP[arr.dtype]
        return _DEFAULT_FLOAT
    raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}")


_PROMOTION_RANK = {bool_: 0, int64: 1, float32: 2, float64: 3}


def promote_types(a: DType, b: DType) -> DType:
    """PyTorch's type promotion among the dtypes we have: bool < int64 < float32 < float64."""
    return a if _PROMOTION_RANK[a] >= _PROMOTION_RANK[b] else b
