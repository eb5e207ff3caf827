"""Tensor: an array, its dtype and device, its gradient, and the Function that produced it.

The class holds state and operator sugar only. Every computation is a differentiable op in
`minigrad.ops` (or a primitive of the device's backend, for the few non-differentiable helpers), so a
method here is one line that names the op it calls.
"""
from __future__ import annotations

import numpy as np

from minigrad import dtypes
from minigrad.autograd import _VersionCounter, is_grad_enabled, no_grad, run_backward
from minigrad.backend import dispatch
from minigrad.device import CPU, Device, usable


class Tensor:
    """An n-dimensional array with reverse-mode autograd, on the CPU (NumPy) or a GPU (CuPy).

    Build tensors with `minigrad.tensor(data)`, `minigrad.zeros(...)`, `minigrad.randn(...)`, or
    `Tensor(data, dtype=None, device=None, requires_grad=False)`, which is the same as `minigrad.tensor`.
    """

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "_version", "_retains_grad", "__weakref__")
    __array_ufunc__ = None  # make NumPy defer to our reflected operators: np.float32(2) * t -> t.__rmul__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        if device is not None:
            device = usable(device)
        if isinstance(data, Tensor):  # a copy, cut from data's graph (on data's device unless told)
            device = data.device if device is None else device
            source = data.detach().to(device=device)
            dtype = source.dtype if dtype is None else dtypes.get_dtype(dtype)
            array = dispatch(device).astype(source.data, dtype.np_dtype)
        else:
            device = CPU if device is None else device
            dtype = dtypes.default_dtype_for(data) if dtype is None else dtypes.get_dtype(dtype)
            array = dispatch(device).asarray(data, dtype.np_dtype)
        self._set(array, device, False)
        if requires_grad:
            self.requires_grad_(True)

    def _set(self, array, device: Device, requires_grad: bool) -> None:
        if isinstance(array, np.generic):  # NumPy returns scalars from 0-d math; keep 0-d arrays
            array = np.asarray(array)
        self.data, self.device, self.requires_grad = array, device, requires_grad
        self.grad, self._ctx, self._version, self._retains_grad = None, None, _VersionCounter(), False

    @staticmethod
    def _wrap(array, device: Device = CPU, requires_grad: bool = False) -> "Tensor":
        """A tensor around a backend array, without copying (internal)."""
        t = object.__new__(Tensor)
        t._set(array, device, requires_grad)
        return t

    # ---- properties -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> dtypes.DType:
        return dtypes.from_numpy_dtype(self.data.dtype)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user (or that do not require grad), False for op outputs."""
        return self._ctx is None

    @property
    def grad_fn(self):
        """The Function that produced this tensor, or None for a leaf."""
        return self._ctx

    @property
    def T(self) -> "Tensor":
        """The tensor with its dims reversed (a matrix transpose for 2-D)."""
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> "Tensor":
        """Transpose of the last two dims (batched matrix transpose)."""
        return self.transpose(-2, -1)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    def size(self, dim: int | None = None):
        """The shape, or the size of one dim."""
        return self.shape if dim is None else self.shape[_ops.normalize_dim(dim, self.ndim)]

    def element_size(self) -> int:
        return self.dtype.itemsize

    def is_floating_point(self) -> bool:
        """Whether the dtype is a floating point one (float16, bfloat16, float32, float64)."""
        return self.dtype.is_floating_point

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    # ---- conversion -----------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array sharing memory with this CPU tensor. Like PyTorch, refuses tensors
        that require grad (writing to the array would bypass autograd: call `.detach().numpy()`) and GPU
        tensors (the array could not share their memory: call `.cpu().numpy()`)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        if self.device.type != "cpu":
            raise TypeError(f"can't convert a tensor on {self.device} to numpy: use tensor.cpu() to copy it to "
                            f"host memory first")
        return self.data

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return dispatch(self.device).to_host(self.data).item()

    def tolist(self):
        return dispatch(self.device).to_host(self.data).tolist()

    def to(self, *args, dtype=None, device=None, non_blocking=False) -> "Tensor":
        """`to(dtype)`, `to(device)`, `to(device, dtype)` or keywords; returns self when nothing changes.
        (non_blocking is accepted for PyTorch's signature; copies between devices are synchronous.)"""
        for arg in args:
            if isinstance(arg, (Device, str)):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None and dtypes.get_dtype(dtype) is not self.dtype:
            dtype = dtypes.get_dtype(dtype)  # an integer or bool result carries no gradient, as in PyTorch
            out = _ops.Cast.apply(out if dtype.is_floating_point else out.detach(), dtype=dtype.np_dtype)
        if device is not None and Device(device) != self.device:
            out = _ops.to_device(out, device)
        return out

    def float(self) -> "Tensor":
        return self.to(dtypes.float32)

    def double(self) -> "Tensor":
        return self.to(dtypes.float64)

    def half(self) -> "Tensor":
        return self.to(dtypes.float16)

    def bfloat16(self) -> "Tensor":
        return self.to(dtypes.bfloat16)

    def long(self) -> "Tensor":
        return self.to(dtypes.int64)

    def bool(self) -> "Tensor":
        return self.to(dtypes.bool_)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.to(other.dtype)

    # ---- autograd -------------------------------------------------------------------------------
    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad. A non-scalar output
        needs `gradient` (same shape: the vector in the vector-Jacobian product)."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad and has no grad_fn: "
                               "did you forget requires_grad=True, or compute it under no_grad()?")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs; this tensor has "
                                   f"shape {self.shape}: pass backward(gradient) with that shape")
            grad = dispatch(self.device).ones(self.data.shape, self.data.dtype)
        else:
            gradient = gradient if isinstance(gradient, Tensor) else Tensor(gradient, dtype=self.dtype, device=self.device)
            if gradient.shape != self.shape:
                raise ValueError(f"backward(gradient): gradient has shape {gradient.shape} but the tensor has "
                                 f"shape {self.shape}")
            if gradient.dtype is not self.dtype:
                raise TypeError(f"backward(gradient): gradient has dtype {gradient.dtype} but the tensor has "
                                f"dtype {self.dtype}")
            if gradient.device != self.device:
                raise RuntimeError(f"backward(gradient): gradient is on {gradient.device} but the tensor is on "
                                   f"{self.device}")
            grad = gradient.data
        run_backward(self, grad, retain_graph)

    def _accumulate_grad(self, grad_array, owned: bool) -> None:
        """Add a gradient into `.grad`; `owned` says the array is private to the backward pass, else it
        is copied first (it may be shared with other gradients, or be a read-only view)."""
        backend = dispatch(self.device)
        if self.grad is None:
            self.grad = Tensor._wrap(grad_array if owned else backend.astype(grad_array, self.data.dtype),
                                     self.device)
        else:
            self.grad = Tensor._wrap(backend.add(self.grad.data, grad_array), self.device)

    def retain_grad(self) -> None:
        """Keep `.grad` for this non-leaf tensor after backward."""
        if self._ctx is not None:
            self._retains_grad = True

    def detach(self) -> "Tensor":
        """The same storage, cut from the graph (shares the version counter, as a view does)."""
        out = Tensor._wrap(self.data, self.device)
        out._version = self._version
        return out

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if self._ctx is not None:
            raise RuntimeError("requires_grad_() can only change leaf tensors; use detach() on an op's output")
        if requires_grad and not self.dtype.is_floating_point:
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def clone(self) -> "Tensor":
        """A copy with its own storage; gradients flow back to self."""
        return _ops.Cast.apply(self, dtype=self.data.dtype)  # astype always copies

    # ---- in-place updates -----------------------------------------------------------------------
    def _write(self, compute) -> "Tensor":
        """Store `compute()`, evaluated without recording a graph, into this tensor's storage and bump
        its version (so backward can detect that a value it saved has changed)."""
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(
                f"in-place operation on a tensor of shape {self.shape} that requires grad: use the out-of-place "
                f"op, or wrap parameter updates in `with minigrad.no_grad():`")
        with no_grad():
            result = compute()
        if dtypes.promote_types(result.dtype, self.dtype) is not self.dtype and not \
                (result.dtype.is_floating_point and self.dtype.is_floating_point):  # (float into float: as torch)
            raise TypeError(f"in-place result of dtype {result.dtype} can't be cast to the tensor's dtype {self.dtype}")
        if _ops.broadcast_shapes(self.shape, result.shape) != self.shape:
            raise ValueError(f"in-place result of shape {result.shape} doesn't match the tensor's shape {self.shape}")
        dispatch(self.device).copy_(self.data, result.data)
        self._mark_modified()
        return self

    def _mark_modified(self) -> None:
        """Record that this tensor's storage was written in place (by an in-place method, item assignment,
        or a primitive that updates arrays in place, such as an optimizer step): bumps the version counter
        shared with its views, so backward can detect that a value it saved has changed."""
        self._version.value += 1

    def add_(self, other, alpha=1) -> "Tensor":
        return self._write(lambda: self + (other if alpha == 1 else other * alpha))

    def sub_(self, other, alpha=1) -> "Tensor":
        return self._write(lambda: self - (other if alpha == 1 else other * alpha))

    def mul_(self, other) -> "Tensor":
        return self._write(lambda: self * other)

    def div_(self, other) -> "Tensor":
        return self._write(lambda: self / other)

    def clamp_(self, min=None, max=None) -> "Tensor":
        return self._write(lambda: self.clamp(min, max))

    def masked_fill_(self, mask, value) -> "Tensor":
        return self._write(lambda: self.masked_fill(mask, value))

    def copy_(self, src) -> "Tensor":
        """Write src's values (broadcast, converted to this dtype, copied from another device) into self."""
        return self._write(lambda: as_tensor_like(src, self).to(self.dtype).to(self.device))

    def fill_(self, value) -> "Tensor":
        return self._write(lambda: as_tensor_like(value, self))

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    __iadd__, __isub__, __imul__, __itruediv__ = add_, sub_, mul_, div_

    def __setitem__(self, index, value) -> None:
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("item assignment to a tensor that requires grad: do it under minigrad.no_grad()")
        index, _ = _ops.normalize_index(self, index)
        value = as_tensor_like(value, self)
        if value.device != self.device:
            raise RuntimeError(f"setitem: value on {value.device}, tensor on {self.device}")
        dispatch(self.device).setitem_(self.data, index, value.to(self.dtype).data)
        self._mark_modified()

    # ---- Python protocol ------------------------------------------------------------------------
    def __repr__(self) -> str:
        host = dispatch(self.device).to_host(self.data)
        if host.dtype in dtypes.HALF_NP_DTYPES:  # (NumPy prints bfloat16 1.0 as "1")
            host = host.astype(np.float32)
        values = np.array2string(host, separator=", ", precision=4,
                                 prefix="tensor(", threshold=1000, edgeitems=3)
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_) or self.numel() == 0:
            extras.append(f"dtype={self.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{self._ctx.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({values}{''.join(', ' + e for e in extras)})"

    __hash__ = object.__hash__  # tensors are hashed by identity; == is elementwise

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.numel()} elements is ambiguous; "
                               f"use .any() or .all()")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype is not dtypes.int64 or self.numel() != 1:
            raise TypeError(f"only one-element integer tensors can be used as an index, got {self.dtype} "
                            f"of shape {self.shape}")
        return int(self.item())

    # ---- arithmetic and comparison operators ----------------------------------------------------
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.abs(self)
    def __eq__(self, other): return _ops.eq(self, other)
    def __ne__(self, other): return _ops.ne(self, other)
    def __lt__(self, other): return _ops.lt(self, other)
    def __le__(self, other): return _ops.le(self, other)
    def __gt__(self, other): return _ops.gt(self, other)
    def __ge__(self, other): return _ops.ge(self, other)
    def __invert__(self): return _ops.logical_not(self)
    def __and__(self, other): return _ops.logical_and(self, other)
    def __or__(self, other): return _ops.logical_or(self, other)
    def __getitem__(self, index): return _ops.getitem(self, index)

    # ---- methods that name an op ----------------------------------------------------------------
    def add(self, other): return _ops.add(self, other)
    def sub(self, other): return _ops.sub(self, other)
    def mul(self, other): return _ops.mul(self, other)
    def div(self, other): return _ops.div(self, other)
    def pow(self, exponent): return _ops.pow(self, exponent)
    def matmul(self, other): return _ops.matmul(self, other)
    def neg(self): return _ops.neg(self)
    def abs(self): return _ops.abs(self)
    def sign(self): return _ops.sign(self)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def rsqrt(self): return _ops.rsqrt(self)
    def sin(self): return _ops.sin(self)
    def cos(self): return _ops.cos(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)
    def gelu(self, approximate="none"): return _ops.gelu(self, approximate)
    def silu(self): return _ops.silu(self)
    def clamp(self, min=None, max=None): return _ops.clamp(self, min, max)
    clip = clamp
    def maximum(self, other): return _ops.maximum(self, other)
    def minimum(self, other): return _ops.minimum(self, other)
    def where(self, condition, other): return _ops.where(condition, self, other)
    def eq(self, other): return _ops.eq(self, other)
    def ne(self, other): return _ops.ne(self, other)
    def lt(self, other): return _ops.lt(self, other)
    def le(self, other): return _ops.le(self, other)
    def gt(self, other): return _ops.gt(self, other)
    def ge(self, other): return _ops.ge(self, other)
    def logical_not(self): return _ops.logical_not(self)
    def logical_and(self, other): return _ops.logical_and(self, other)
    def logical_or(self, other): return _ops.logical_or(self, other)
    def isfinite(self): return _ops.isfinite(self)
    def any(self): return _ops.any(self)
    def all(self): return _ops.all(self)

    def sum(self, dim=None, keepdim=False): return _ops.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return _ops.mean(self, dim, keepdim)
    def var(self, dim=None, correction=1, keepdim=False, unbiased=None):
        return _ops.var(self, dim, correction, keepdim, unbiased)
    def std(self, dim=None, correction=1, keepdim=False, unbiased=None):
        return _ops.std(self, dim, correction, keepdim, unbiased)
    def max(self, dim=None, keepdim=False): return _ops.max(self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return _ops.min(self, dim, keepdim)
    def amax(self, dim=None, keepdim=False): return _ops.amax(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return _ops.amin(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False): return _ops.argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim=False): return _ops.argmin(self, dim, keepdim)
    def logsumexp(self, dim, keepdim=False): return _ops.logsumexp(self, dim, keepdim)
    def softmax(self, dim): return _ops.softmax(self, dim)
    def log_softmax(self, dim): return _ops.log_softmax(self, dim)

    def reshape(self, *shape): return _ops.reshape(self, *shape)
    def view(self, *shape): return _ops.reshape(self, *shape)
    def permute(self, *dims): return _ops.permute(self, *dims)
    def transpose(self, dim0, dim1): return _ops.transpose(self, dim0, dim1)
    def unsqueeze(self, dim): return _ops.unsqueeze(self, dim)
    def squeeze(self, dim=None): return _ops.squeeze(self, dim)
    def flatten(self, start_dim=0, end_dim=-1): return _ops.flatten(self, start_dim, end_dim)
    def expand(self, *sizes): return _ops.expand(self, *sizes)
    def expand_as(self, other): return _ops.expand(self, *other.shape)
    def contiguous(self): return _ops.contiguous(self)
    def split(self, split_size_or_sections, dim=0): return _ops.split(self, split_size_or_sections, dim)
    def chunk(self, chunks, dim=0): return _ops.chunk(self, chunks, dim)
    def gather(self, dim, index): return _ops.gather(self, dim, index)
    def masked_fill(self, mask, value): return _ops.masked_fill(self, mask, value)
    def tril(self, diagonal=0): return _ops.tril(self, diagonal)
    def triu(self, diagonal=0): return _ops.triu(self, diagonal)
    def repeat(self, *sizes): return _ops.repeat(self, *sizes)


def as_tensor_like(value, like) -> Tensor:
    """`value` as a tensor for an op with `like`. Tensors pass through; a Python or NumPy scalar becomes
    a 0-d tensor on like's device, with like's dtype unless that would lose the value's kind (a float
    scalar with an int64 tensor gives float32, with a float16 tensor float16, as in PyTorch)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (bool, int, float)):
        raise TypeError(f"expected a Tensor or a Python number, got {type(value).__name__}")
    if not isinstance(like, Tensor):
        return Tensor(value)
    dtype = dtypes.promote_with_scalar(like.dtype, value)
    return Tensor._wrap(dispatch(like.device).full((), value, dtype.np_dtype), like.device)


from minigrad import ops as _ops  # noqa: E402  (the ops import Tensor, so they load after it)
