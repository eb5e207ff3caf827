"""Data types: a thin, named layer over the array library's dtypes.

A `DType` pairs the public name users write (`minigrad.float32`) with the NumPy dtype that stores it.
Tensors never change dtype silently: ops that mix dtypes follow PyTorch's promotion (int64 + float32 ->
float32, float32 + float64 -> float64, float16 + bfloat16 -> float32), and every conversion is an
explicit `.to(dtype)` / `.float()` / `.half()`, or the documented casts of `minigrad.autocast`.

The 16-bit floats are storage types for mixed precision: float16 is NumPy's; bfloat16 comes from the
`ml_dtypes` package, which is optional: without it `minigrad.bfloat16` exists but using it raises a
TypeError that says to install the package.
"""
from __future__ import annotations

import numpy as np

try:
    import ml_dtypes
except ImportError:  # bfloat16 is then named but unusable (see _MissingDType)
    ml_dtypes = None


class DType:
    """A tensor element type, e.g. `minigrad.float32`."""

    __slots__ = ("name", "np_dtype", "is_floating_point", "itemsize")

    def __init__(self, name: str, np_dtype, is_floating_point: bool | None = None):
        self.name = name
        self.np_dtype = np.dtype(np_dtype)
        # ml_dtypes' bfloat16 is a NumPy "void"-kind type, so it says it is floating point explicitly
        self.is_floating_point = self.np_dtype.kind == "f" if is_floating_point is None else is_floating_point
        self.itemsize = self.np_dtype.itemsize

    def __repr__(self) -> str:
        return f"minigrad.{self.name}"

    def __reduce__(self):  # DTypes are singletons, also across copy/pickle
        return (get_dtype, (self.name,))


class _MissingDType(DType):
    """A dtype whose storage type comes from a package that is not installed: it can be named (so that
    `minigrad.bfloat16` always exists), but reading its NumPy dtype raises a TypeError naming the package."""

    def __init__(self, name: str, itemsize: int, package: str):
        self.name, self.is_floating_point, self.itemsize, self.package = name, True, itemsize, package

    @property
    def np_dtype(self):
        raise TypeError(f"minigrad.{self.name} needs the {self.package} package, which is not installed: "
                        f"pip install {self.package}")


float16 = DType("float16", np.float16)
bfloat16 = _MissingDType("bfloat16", 2, "ml_dtypes") if ml_dtypes is None else \
    DType("bfloat16", ml_dtypes.bfloat16, is_floating_point=True)
float32 = DType("float32", np.float32)
float64 = DType("float64", np.float64)
int64 = DType("int64", np.int64)
bool_ = DType("bool", np.bool_)

ALL_DTYPES = (float16, bfloat16, float32, float64, int64, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NP = {d.np_dtype: d for d in ALL_DTYPES if not isinstance(d, _MissingDType)}
HALF_DTYPES = (float16, bfloat16)  # the 16-bit floats: computed in float32 and rounded once (backend/base.py)
HALF_NP_DTYPES = frozenset(d.np_dtype for d in HALF_DTYPES if d in _BY_NP.values())  # the available ones
_DEFAULT_FLOAT = float32
_PYTHON_SCALARS = {bool: bool_, int: int64, float: _DEFAULT_FLOAT}


def get_dtype(spec) -> DType:
    """Resolve a DType, its name, a NumPy dtype or a Python type (float, int, bool) to a DType."""
    if isinstance(spec, DType):
        spec.np_dtype  # a dtype whose package is missing raises its TypeError here  # noqa: B018
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return get_dtype(_BY_NAME[spec])
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
    ints -> int64, bools -> bool; NumPy arrays keep the dtypes minigrad has (float16, bfloat16, float32,
    float64, int64, bool), other ints become int64."""
    scalar_type = type(data)
    if scalar_type in _PYTHON_SCALARS:  # the fast path for `tensor * 2.0` and friends
        return _PYTHON_SCALARS[scalar_type]
    if isinstance(data, np.ndarray) and data.dtype in _BY_NP:
        return _BY_NP[data.dtype]
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "b":
        return bool_
    if kind in "iu":
        return int64
    if kind == "f":
        return _DEFAULT_FLOAT
    raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}")


# bool < int64 < {float16, bfloat16} < float32 < float64; the two 16-bit floats meet at float32.
_PROMOTION_RANK = {bool_: 0, int64: 1, float16: 2, bfloat16: 2, float32: 3, float64: 4}
_FLOAT_RANK = 2  # the rank of the lowest floating point dtypes


def promote_types(a: DType, b: DType) -> DType:
    """PyTorch's type promotion among the dtypes we have: bool < int64 < float16, bfloat16 < float32 <
    float64, and float16 + bfloat16 -> float32 (neither holds the other's values)."""
    rank_a, rank_b = _PROMOTION_RANK[a], _PROMOTION_RANK[b]
    if rank_a == rank_b and a is not b:
        return float32
    return a if rank_a >= rank_b else b


def promote_with_scalar(dtype: DType, value) -> DType:
    """The dtype of an op between a tensor of `dtype` and a Python number, as PyTorch: the number takes
    the tensor's dtype unless it is of a higher kind (bool < integer < floating point). So float16 * 0.5
    is float16, int64 * 0.5 is float32 (the default float) and bool + 1 is int64."""
    scalar = default_dtype_for(value)
    return dtype if min(_PROMOTION_RANK[scalar], _FLOAT_RANK) <= min(_PROMOTION_RANK[dtype], _FLOAT_RANK) else scalar
