"""Ops that move, select or copy elements without arithmetic: reshape, permute, expand, indexing,
concatenation, padding, triangles, gather, repeat, masked_fill.

Their backward passes route each gradient element back to where it came from: the inverse
reshape/permutation, a sum over broadcast or repeated copies, or a scatter-add for indexing (which
accumulates correctly when an index repeats).
"""
from __future__ import annotations

import math

import numpy as np

from minigrad import dtypes
from minigrad.autograd import Function, IndexedGrad
from minigrad.backend import dispatch
from minigrad.ops.shapes import broadcast_shapes, normalize_dim, normalize_dims, unbroadcast
from minigrad.tensor import Tensor


class Reshape(Function):
    returns_view = True

    def forward(self, x, shape):
        self.in_shape = tuple(x.shape)
        return self.backend.reshape(x, shape)

    def backward(self, grad):
        return self.backend.reshape(grad, self.in_shape)


class Permute(Function):
    returns_view = True

    def forward(self, x, axes):
        self.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return self.backend.transpose(x, axes)

    def backward(self, grad):
        return self.backend.transpose(grad, self.inverse)


class Expand(Function):
    returns_view = True

    def forward(self, x, shape):
        self.in_shape = tuple(x.shape)
        return self.backend.broadcast_to(x, shape)

    def backward(self, grad):
        return unbroadcast(self.backend, grad, self.in_shape)


class Contiguous(Function):
    """A C-contiguous copy (or x itself if it already is); the gradient passes through."""

    def forward(self, x):
        return self.backend.contiguous(x)

    def backward(self, grad):
        return grad


class GetItem(Function):
    """x[index] for a normalized index (ints, slices, None, Ellipsis, int64 arrays; bool masks are
    converted to int arrays by the caller). Backward returns an IndexedGrad, which the backward pass
    scatter-adds into x's gradient: repeated integer indices accumulate."""

    def forward(self, x, index, advanced):
        self.index = index
        self.returns_view = not advanced
        return self.backend.getitem(x, index)

    def backward(self, grad):
        return IndexedGrad(self.index, grad)


class Cat(Function):
    def forward(self, *xs, axis):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return self.backend.concatenate(xs, axis)

    def backward(self, grad):
        grads, start = [], 0
        lead = (slice(None),) * self.axis
        for size, needed in zip(self.sizes, self.needs_input_grad):
            grads.append(self.backend.getitem(grad, lead + (slice(start, start + size),)) if needed else None)
            start += size
        return tuple(grads)


class Pad(Function):
    """Constant padding; `pad_width` is NumPy's ((before, after), ...) per dim, all >= 0."""

    def forward(self, x, pad_width, value):
        self.window = tuple(slice(before, before + n) for (before, _), n in zip(pad_width, x.shape))
        return self.backend.pad(x, pad_width, value)

    def backward(self, grad):
        return self.backend.getitem(grad, self.window)


class Tril(Function):
    def forward(self, x, k):
        self.k = k
        return self.backend.tril(x, k)

    def backward(self, grad):
        return self.backend.tril(grad, self.k)


class Triu(Function):
    def forward(self, x, k):
        self.k = k
        return self.backend.triu(x, k)

    def backward(self, grad):
        return self.backend.triu(grad, self.k)


class Gather(Function):
    """out[i][j] = x[i][index[i][j]] along `axis` (index has x's shape except along axis)."""

    def forward(self, x, index, axis):
        self.in_shape, self.in_dtype, self.index, self.axis = tuple(x.shape), x.dtype, index, axis
        return self.backend.take_along_axis(x, index, axis)

    def backward(self, grad):
        return self.backend.scatter_add_along_axis(self.in_shape, self.index, grad, self.axis, self.in_dtype)


class Repeat(Function):
    """Tile x `reps[i]` times along dim i (PyTorch's `repeat`); extra leading reps add new dims."""

    def forward(self, x, reps):
        self.in_shape = tuple(x.shape)
        return self.backend.tile(x, reps)

    def backward(self, grad):
        # View the gradient as (r0, n0, r1, n1, ...) and sum over every copy axis r_i.
        bk = self.backend
        padded = (1,) * (grad.ndim - len(self.in_shape)) + self.in_shape
        reps = [g // n if n else 0 for g, n in zip(grad.shape, padded)]
        split = tuple(v for r, n in zip(reps, padded) for v in (r, n))
        summed = bk.sum(bk.reshape(grad, split), tuple(range(0, 2 * len(padded), 2)), False)
        return bk.reshape(summed, self.in_shape)


class MaskedFill(Function):
    """x with `value` where the bool array `mask` (broadcastable to x) is True."""

    def forward(self, x, mask, value):
        self.mask = mask
        return self.backend.where(mask, self.backend.full((), value, x.dtype), x)

    def backward(self, grad):
        bk = self.backend
        return bk.where(self.mask, bk.zeros((), grad.dtype), grad)


# ---- public functions ----------------------------------------------------------------------------

def _sizes(args) -> tuple:
    """Accept both f(2, 3) and f((2, 3)) / f([2, 3]), as PyTorch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for a in args:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"sizes must be ints, got {args}")
    return tuple(args)


def _infer_shape(shape: tuple, numel: int, old_shape) -> tuple:
    """Resolve one -1 in `shape` from the element count."""
    if shape.count(-1) > 1:
        raise ValueError(f"shape {shape}: only one dimension can be -1")
    known = math.prod(n for n in shape if n != -1)
    if any(n < -1 for n in shape):
        raise ValueError(f"shape {shape} has a negative size")
    if -1 in shape:
        if known == 0 or numel % known:
            raise ValueError(f"shape {shape} is invalid for input of shape {old_shape} ({numel} elements)")
        shape = tuple(numel // known if n == -1 else n for n in shape)
    if math.prod(shape) != numel:
        raise ValueError(f"shape {shape} is invalid for input of shape {old_shape} ({numel} elements)")
    return shape


def reshape(x: Tensor, *shape) -> Tensor:
    """The same elements in a new shape (one size may be -1). A view when the layout allows, else a
    copy; `view` is the same function."""
    shape = _infer_shape(_sizes(shape), x.numel(), x.shape)
    return x if shape == x.shape else Reshape.apply(x, shape=shape)


def permute(x: Tensor, *dims) -> Tensor:
    """Reorder dims: out.shape[i] == x.shape[dims[i]] (a view)."""
    dims = _sizes(dims)
    axes = tuple(normalize_dim(d, x.ndim) for d in dims)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: dims {dims} are not a permutation of the {x.ndim} dims of shape {x.shape}")
    return Permute.apply(x, axes=axes)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims (a view)."""
    axes = list(range(x.ndim))
    d0, d1 = normalize_dim(dim0, x.ndim), normalize_dim(dim1, x.ndim)
    if x.ndim < 2:
        return x
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute.apply(x, axes=tuple(axes))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at position `dim` (in [-ndim-1, ndim])."""
    d = normalize_dim(dim, x.ndim + 1)
    return Reshape.apply(x, shape=x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x: Tensor, dim=None) -> Tensor:
    """Remove size-1 dims: all of them, or those among `dim` (an int or tuple; others are kept)."""
    dims = normalize_dims(dim, x.ndim)
    shape = tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1))
    return x if shape == x.shape else Reshape.apply(x, shape=shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims start_dim..end_dim into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = normalize_dim(start_dim, x.ndim), normalize_dim(end_dim, x.ndim)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def expand(x: Tensor, *sizes) -> Tensor:
    """Broadcast to `sizes` without copying (-1 keeps a dim; new dims may be added on the left)."""
    sizes = _sizes(sizes)
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: target {sizes} has fewer dims than the tensor's shape {x.shape}")
    shape = []
    for i, n in enumerate(sizes):
        old = x.shape[i - lead] if i >= lead else None
        if n == -1:
            if old is None:
                raise ValueError(f"expand: -1 is not allowed for a new leading dim (target {sizes})")
            n = old
        if old not in (None, 1, n):
            raise ValueError(f"expand: cannot expand shape {x.shape} to {sizes} (dim {i}: {old} -> {n})")
        shape.append(n)
    shape = tuple(shape)
    return x if shape == x.shape else Expand.apply(x, shape=shape)


def contiguous(x: Tensor) -> Tensor:
    """x laid out in C order (a copy only when it is not already)."""
    return Contiguous.apply(x)


def check_index_bounds(index: Tensor, size: int, dim: int, op: str) -> None:
    """Raise IndexError unless every value of the int64 `index` lies in [-size, size). NumPy raises by itself,
    but CuPy wraps out-of-range indices around (a silent wrong answer), so indices on a GPU are checked
    here, at the price of one device sync."""
    if index.device == "cpu" or not index.numel():
        return
    if ((index < -size) | (index >= size)).any().item():
        raise IndexError(f"{op}: indices from {index.min().item()} to {index.max().item()} are out of bounds "
                         f"for dim {dim} with size {size} (tensor on {index.device})")


def normalize_index(x: Tensor, index) -> tuple[tuple, bool]:
    """Turn a user index into a tuple the backend can use, and say whether it has an advanced
    (integer-array) part. Bool masks become integer arrays (one per masked dim), so that backward
    can scatter-add by position; the mask's shape is checked against the dims it covers."""
    items = [Tensor(it, device=x.device) if isinstance(it, (list, np.ndarray)) else it
             for it in (index if isinstance(index, tuple) else (index,))]
    backend = dispatch(x.device)
    consumed = [0 if it is None or it is Ellipsis else
                it.ndim if isinstance(it, Tensor) and it.dtype is dtypes.bool_ else 1 for it in items]
    out, advanced, dim = [], False, 0
    for position, item in enumerate(items):
        if isinstance(item, Tensor):
            if item.device != x.device:
                if item.device != "cpu":  # CPU indices are copied over, as in PyTorch; others are an error
                    raise RuntimeError(f"indexing a tensor on {x.device} with an index on {item.device}")
                item = item.to(x.device)
            if item.dtype is dtypes.bool_:
                covered = x.shape[dim:dim + item.ndim]
                if covered != item.shape:
                    raise IndexError(f"boolean mask of shape {item.shape} does not match the indexed dims "
                                     f"{covered} of the tensor of shape {x.shape} (starting at dim {dim})")
                out.extend(backend.nonzero(item.data))
                advanced, dim = True, dim + item.ndim
                continue
            if item.dtype is not dtypes.int64:
                raise IndexError(f"tensors used as indices must be int64 or bool, got {item.dtype}")
            if dim < x.ndim:
                check_index_bounds(item, x.shape[dim], dim, "indexing")
            out.append(item.data)
            advanced, dim = True, dim + 1
        elif item is Ellipsis:
            out.append(item)
            dim = x.ndim - sum(consumed[position + 1:])
        elif item is None or isinstance(item, slice) or (isinstance(item, int) and not isinstance(item, bool)):
            out.append(item)
            dim += item is not None
        else:
            raise IndexError(f"unsupported index {item!r} of type {type(item).__name__}; use ints, slices, None, "
                             f"..., int64/bool tensors or lists")
    return tuple(out), advanced


def getitem(x: Tensor, index) -> Tensor:
    """x[index] with PyTorch/NumPy semantics: ints, slices (with steps), None, ..., integer arrays and
    bool masks. Gradients of repeated indices accumulate.

    Where the two differ, PyTorch wins: with integer arrays, plain ints are applied first (as a select),
    so they do not decide where the array dims go: x[0, :, [1, 2]] of a (4, 5, 6) tensor is (5, 2), not
    NumPy's (2, 5)."""
    index, advanced = normalize_index(x, index)
    is_int = [isinstance(it, int) and not isinstance(it, bool) for it in index]
    if advanced and any(is_int):
        ints_only = tuple(it if i or it is None or it is Ellipsis else slice(None) for it, i in zip(index, is_int))
        x = GetItem.apply(x, index=ints_only, advanced=False)
        index = tuple(slice(None) if it is None else it for it, i in zip(index, is_int) if not i)
    return GetItem.apply(x, index=index, advanced=advanced)


def _common(tensors, op: str):
    tensors = list(tensors)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{op} expects a non-empty sequence of tensors")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = dtypes.promote_types(dtype, t.dtype)
        if t.device != tensors[0].device:
            raise RuntimeError(f"{op}: tensors on different devices ({tensors[0].device} and {t.device})")
    return [t.to(dtype) for t in tensors]


def cat(tensors, dim: int = 0) -> Tensor:
    """Join tensors along an existing dim; all other dims must match."""
    tensors = _common(tensors, "cat")
    ref = tensors[0]
    axis = normalize_dim(dim, ref.ndim)
    for t in tensors[1:]:
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != axis):
            raise ValueError(f"cat along dim {dim}: shapes {ref.shape} and {t.shape} differ outside that dim")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new dim."""
    tensors = _common(tensors, "stack")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors must have one shape, got {tensors[0].shape} and {t.shape}")
    axis = normalize_dim(dim, tensors[0].ndim + 1)
    return cat([unsqueeze(t, axis) for t in tensors], axis)


def split(x: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of `split_size` along dim (the last may be smaller), or of the listed sizes."""
    axis = normalize_dim(dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim {dim} of shape {x.shape}")
    lead = (slice(None),) * axis
    starts = [0]
    for s in sizes[:-1]:
        starts.append(starts[-1] + s)
    return tuple(getitem(x, lead + (slice(start, start + size),)) for start, size in zip(starts, sizes))


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into `chunks` pieces of ceil(n / chunks) (fewer pieces when n is small; `chunks` empty
    pieces when n is 0, as in PyTorch)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = x.shape[normalize_dim(dim, x.ndim)]
    if n == 0:
        return split(x, [0] * chunks, dim)
    return split(x, max(1, -(-n // chunks)), dim)


def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """out[..., j, ...] = x[..., index[..., j, ...], ...] along `dim` (torch.gather). index has x's number
    of dims and sizes no larger than x's outside `dim`."""
    if not isinstance(index, Tensor) or index.dtype is not dtypes.int64:
        raise TypeError(f"gather: index must be an int64 tensor, got "
                        f"{index.dtype if isinstance(index, Tensor) else type(index).__name__}")
    axis = normalize_dim(dim, x.ndim)
    if index.ndim != x.ndim or any(i > n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise ValueError(f"gather: index of shape {index.shape} does not fit input of shape {x.shape} "
                         f"outside dim {dim}")
    if index.device != x.device:
        raise RuntimeError(f"gather: input on {x.device}, index on {index.device}")
    check_index_bounds(index, x.shape[axis], axis, "gather")
    window = tuple(slice(None) if d == axis else slice(0, i) for d, i in enumerate(index.shape))
    source = x if all(i == n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis) else x[window]
    return Gather.apply(source, index=index.data, axis=axis)


def masked_fill(x: Tensor, mask: Tensor, value) -> Tensor:
    """x with `value` wherever the bool `mask` (broadcastable to x's shape) is True."""
    if not isinstance(mask, Tensor) or mask.dtype is not dtypes.bool_:
        raise TypeError(f"masked_fill: mask must be a bool tensor, got "
                        f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if broadcast_shapes(x.shape, mask.shape) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {x.shape}")
    if isinstance(value, Tensor):
        value = value.item()
    return MaskedFill.apply(x, mask=mask.data, value=value)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements above the `diagonal`-th diagonal of the last two dims."""
    if x.ndim < 2:
        raise ValueError(f"tril needs at least 2 dims, got shape {x.shape}")
    return Tril.apply(x, k=diagonal)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements below the `diagonal`-th diagonal of the last two dims."""
    if x.ndim < 2:
        raise ValueError(f"triu needs at least 2 dims, got shape {x.shape}")
    return Triu.apply(x, k=diagonal)


def pad(x: Tensor, pad: tuple, value: float = 0.0, mode: str = "constant") -> Tensor:
    """Constant padding in PyTorch's order: (left, right) of the last dim, then of the one before, ..."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is implemented, got {mode!r}")
    pad = _sizes(tuple(pad))
    if len(pad) % 2 or len(pad) > 2 * x.ndim:
        raise ValueError(f"pad: {pad} must have an even length of at most 2 * ndim = {2 * x.ndim}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported (slice the tensor instead)")
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
    width = tuple([(0, 0)] * (x.ndim - len(pairs)) + pairs[::-1])
    return Pad.apply(x, pad_width=width, value=value)


def repeat(x: Tensor, *sizes) -> Tensor:
    """Tile x along each dim (PyTorch's `repeat`; extra leading sizes add dims)."""
    sizes = _sizes(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: {len(sizes)} sizes given for a tensor with {x.ndim} dims (shape {x.shape})")
    return Repeat.apply(x, reps=sizes)
