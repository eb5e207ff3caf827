"""Reductions along dims (sum, max/min, logsumexp) and the row-normalizing softmax / log-softmax.

`axes` are normalized, sorted, non-negative ints (see `shapes.normalize_dims`). Backward of a reduction
reshapes the gradient to the keepdim shape and broadcasts it back over the reduced axes.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minigrad import dtypes
from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.autograd import Function
from minigrad.backend import dispatch
from minigrad.ops.elementwise import where
from minigrad.ops.movement import gather
from minigrad.ops.shapes import normalize_dim, normalize_dims
from minigrad.tensor import Tensor


def keepdim_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with every reduced axis set to 1."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with every reduced axis removed."""
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class Sum(Function):
    def forward(self, x, axes, keepdim):
        self.in_shape, self.axes = tuple(x.shape), axes
        return self.backend.sum(x, axes, keepdim)

    def backward(self, grad):
        bk = self.backend
        grad = bk.reshape(grad, keepdim_shape(self.in_shape, self.axes))
        return bk.broadcast_to(grad, self.in_shape)


class Amax(Function):
    """max (or min, with `smallest=True`) over several axes; at ties the gradient is split equally
    among the tied elements, as PyTorch's amax/amin and full max()/min() do."""

    def forward(self, x, axes, keepdim, smallest=False):
        bk = self.backend
        out_keep = (bk.min if smallest else bk.max)(x, axes, True)
        self.save_for_backward(x, out_keep)
        self.axes = axes
        return out_keep if keepdim else bk.reshape(out_keep, reduced_shape(tuple(x.shape), axes))

    def backward(self, grad):
        x, out_keep = self.saved_arrays
        bk = self.backend
        is_extreme = bk.eq(x, out_keep)
        count = bk.sum(is_extreme, self.axes, True)
        share = bk.div(bk.reshape(grad, tuple(out_keep.shape)), bk.astype(count, grad.dtype))
        return bk.where(is_extreme, share, bk.zeros((), grad.dtype))


class LogSumExp(Function):
    def forward(self, x, axes, keepdim):
        bk = self.backend
        out_keep = bk.logsumexp(x, axes, True)
        self.save_for_backward(x, out_keep)
        return out_keep if keepdim else bk.reshape(out_keep, reduced_shape(tuple(x.shape), axes))

    def backward(self, grad):  # d logsumexp / dx = softmax(x) = exp(x - logsumexp(x))
        x, out_keep = self.saved_arrays
        bk = self.backend
        return bk.mul(bk.reshape(grad, tuple(out_keep.shape)), bk.exp(bk.sub(x, out_keep)))


class Softmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        out = self.backend.softmax_forward(x, axis)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_arrays
        return self.backend.softmax_backward(grad, out, self.axis)


class LogSoftmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        out = self.backend.log_softmax_forward(x, axis)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_arrays
        return self.backend.log_softmax_backward(grad, out, self.axis)


# ---- public functions ----------------------------------------------------------------------------
# (These names shadow Python's sum/max/min inside this module on purpose: they are minigrad's.)

class MaxMinResult(NamedTuple):
    """What `max(dim=int)` / `min(dim=int)` return, as PyTorch's (values, indices) named tuple."""
    values: Tensor
    indices: Tensor


def _reduction_axes(x: Tensor, dim) -> tuple[int, ...]:
    # PyTorch reads an empty tuple as "all dims" for reductions.
    return normalize_dims(None if dim == () else dim, x.ndim)


def _require_float(x: Tensor, op: str) -> None:
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op} needs a floating point tensor, got {x.dtype} (convert with .float())")


def sum(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Sum over `dim` (None: all dims; int or tuple). Bool tensors sum to int64. Under autocast a 16-bit
    tensor sums to float32 (torch's autocast does the same)."""
    (x,) = autocast_inputs("sum", x)
    return _sum(x, dim, keepdim)


def _sum(x: Tensor, dim, keepdim: bool) -> Tensor:
    if x.dtype is dtypes.bool_:
        x = x.to(dtypes.int64)
    return Sum.apply(x, axes=_reduction_axes(x, dim), keepdim=keepdim)



def _count(x: Tensor, axes) -> int:
    return math.prod(x.shape[a] for a in axes)


def mean(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Mean over `dim`; the mean of zero elements is nan, as in PyTorch. A 16-bit tensor's mean is
    computed in float32 and rounded once (a 16-bit sum would overflow float16 past 65504)."""
    _require_float(x, "mean")
    if x.dtype in dtypes.HALF_DTYPES:
        return mean(x.float(), dim, keepdim).to(x.dtype)
    n = _count(x, _reduction_axes(x, dim))
    return _sum(x, dim, keepdim) * (1.0 / n if n else math.nan)


def var(x: Tensor, dim=None, correction: int = 1, keepdim: bool = False, unbiased=None) -> Tensor:
    """Variance over `dim` with Bessel's `correction` (1: unbiased, divide by n - 1). `unbiased=False`
    is the older spelling of correction=0."""
    _require_float(x, "var")
    if unbiased is not None:
        correction = int(bool(unbiased))
    if x.dtype in dtypes.HALF_DTYPES:  # in float32, rounded once, as mean
        return var(x.float(), dim, correction, keepdim).to(x.dtype)
    n = _count(x, _reduction_axes(x, dim))
    centered = x - mean(x, dim, keepdim=True)
    dof = n - correction
    return _sum(centered * centered, dim, keepdim) * (1.0 / dof if dof > 0 else math.nan)


def std(x: Tensor, dim=None, correction: int = 1, keepdim: bool = False, unbiased=None) -> Tensor:
    """Standard deviation: sqrt(var). Where the std is 0 (a constant slice) its gradient is 0, as in
    PyTorch, not the inf * 0 = nan of a plain sqrt: the sqrt there reads 1 instead, and is not selected."""
    if x.dtype in dtypes.HALF_DTYPES:  # in float32, rounded once, as mean
        return std(x.float(), dim, correction, keepdim, unbiased).to(x.dtype)
    v = var(x, dim, correction, keepdim, unbiased)
    is_zero = v == 0
    return where(is_zero, 0.0, where(is_zero, 1.0, v).sqrt())


def _extreme(x: Tensor, dim, keepdim: bool, smallest: bool):
    name = "min" if smallest else "max"
    axes = (normalize_dim(dim, x.ndim),) if isinstance(dim, int) and x.ndim else _reduction_axes(x, dim)
    if 0 in [x.shape[a] for a in axes]:
        raise ValueError(f"{name}() over an empty dim of a tensor of shape {x.shape}: a max/min of no "
                         f"elements has no identity")
    if isinstance(dim, int) and x.ndim == 0:  # PyTorch allows dim 0 / -1 on a 0-d tensor
        values, indices = _extreme(x.reshape(1), 0, False, smallest)
        return MaxMinResult(values, indices)
    if isinstance(dim, int):
        indices = (argmin if smallest else argmax)(x, dim, keepdim=True)
        values = gather(x, dim, indices)
        if not keepdim:
            values, indices = values.squeeze(dim), indices.squeeze(dim)
        return MaxMinResult(values, indices)
    return Amax.apply(x, axes=_reduction_axes(x, dim), keepdim=keepdim, smallest=smallest)


def max(x: Tensor, dim=None, keepdim: bool = False):
    """max over everything (a tensor), over an int dim ((values, indices), gradient to the index), or
    over a tuple of dims (a tensor, as amax)."""
    return _extreme(x, dim, keepdim, smallest=False)


def min(x: Tensor, dim=None, keepdim: bool = False):
    """min: see `max`."""
    return _extreme(x, dim, keepdim, smallest=True)


def amax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """max over one or more dims; the gradient is split equally among ties."""
    return Amax.apply(x, axes=_reduction_axes(x, dim), keepdim=keepdim, smallest=False)


def amin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """min over one or more dims; the gradient is split equally among ties."""
    return Amax.apply(x, axes=_reduction_axes(x, dim), keepdim=keepdim, smallest=True)


def _arg_extreme(primitive: str, x: Tensor, dim, keepdim: bool) -> Tensor:
    axis = None if dim is None else normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        axis = None
    if x.numel() == 0 if axis is None else x.shape[axis] == 0:  # other empty dims just give an empty result
        raise ValueError(f"{primitive}() over an empty dim of a tensor of shape {x.shape}")
    backend = dispatch(x.device)
    array = getattr(backend, primitive)(x.data, axis, keepdim and axis is not None)
    if axis is None and keepdim:  # over all dims with keepdim: every dim kept with size 1, as in PyTorch
        array = backend.reshape(array, (1,) * x.ndim)
    return Tensor._wrap(array, x.device)


def argmax(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the max (the first one at ties) over `dim`, or over the flattened tensor if dim is None."""
    return _arg_extreme("argmax", x, dim, keepdim)


def argmin(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the min (the first one at ties); see `argmax`."""
    return _arg_extreme("argmin", x, dim, keepdim)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x))) over `dim`, stable for any magnitude (the max is factored out)."""
    _require_float(x, "logsumexp")
    (x,) = autocast_inputs("logsumexp", x)
    return LogSumExp.apply(x, axes=_reduction_axes(x, dim), keepdim=keepdim)


def softmax(x: Tensor, dim: int) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim`, stable for any magnitude."""
    _require_float(x, "softmax")
    (x,) = autocast_inputs("softmax", x)
    return Softmax.apply(x, axis=normalize_dim(dim, x.ndim))


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """log(softmax(x)) along `dim`, computed as x - logsumexp(x) (no log of 0 for tiny probabilities)."""
    _require_float(x, "log_softmax")
    (x,) = autocast_inputs("log_softmax", x)
    return LogSoftmax.apply(x, axis=normalize_dim(dim, x.ndim))
