"""Reverse-mode automatic differentiation: the Function base class, grad mode, and the backward pass.

Every differentiable op is a `Function` subclass with `forward(self, *arrays, **attrs) -> array` and
`backward(self, grad) -> grad or tuple of grads` (one per tensor input, `None` where not needed). The
Function object is the op's context (as in tinygrad): it keeps only what backward needs, via
`save_for_backward`, and it releases that and its parents once backward has run, so the graph of a
training step is freed by the step that consumed it.

`Tensor.backward()` calls `run_backward`, which orders the graph topologically with an explicit stack
(no recursion: a 10,000-op chain is fine) and walks it from the output to the leaves.
"""
from __future__ import annotations

import contextvars
import functools

from minigrad.backend import dispatch

_grad_enabled = contextvars.ContextVar("minigrad_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """Whether ops on tensors that require grad currently record a graph."""
    return _grad_enabled.get()


class _GradMode:
    """A grad-mode switch usable as a context manager and as a decorator (with or without parentheses)."""

    mode: bool

    def __new__(cls, func=None):
        self = super().__new__(cls)
        self._tokens = []
        return self(func) if callable(func) else self

    def __enter__(self):
        self._tokens.append(_grad_enabled.set(self.mode))
        return self

    def __exit__(self, *exc_info):
        _grad_enabled.reset(self._tokens.pop())
        return False

    def __call__(self, func):
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            token = _grad_enabled.set(mode)
            try:
                return func(*args, **kwargs)
            finally:
                _grad_enabled.reset(token)
        return wrapper


class no_grad(_GradMode):
    """Disable graph recording: `with no_grad():`, `@no_grad()` or `@no_grad`."""
    mode = False


class enable_grad(_GradMode):
    """Re-enable graph recording inside a `no_grad` region."""
    mode = True


class set_grad_enabled(_GradMode):
    """`set_grad_enabled(False)` switches grad mode at once; as a context manager it restores the
    previous mode on exit, as a decorator it applies `mode` around each call."""

    def __new__(cls, mode: bool):
        self = object.__new__(cls)
        self.mode = bool(mode)
        self._tokens = [_grad_enabled.set(self.mode)]
        return self

    def __enter__(self):
        return self

    def __call__(self, func):
        _grad_enabled.reset(self._tokens.pop())  # as a decorator, only the calls switch the mode
        return super().__call__(func)


class _VersionCounter:
    """Counts in-place writes to a storage; shared by a tensor and the views made from it."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class Function:
    """Base class of differentiable ops. Subclasses implement `forward` and `backward` on arrays,
    using `self.backend` (the dispatch table of the inputs' device) for every computation."""

    registry: list[type] = []  # every differentiable op, so tests can check each has a gradcheck
    returns_view = False  # True when forward returns a view of its first input (shares its versions)
    out_device = None  # set by a forward whose output lives on another device than its inputs (ToDevice)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Function.registry.append(cls)

    def __init__(self, backend, parents, needs_input_grad):
        self.backend = backend
        self.parents = parents
        self.needs_input_grad = needs_input_grad
        self.released = False
        self._saved = ()

    @classmethod
    def apply(cls, *inputs, **attrs):
        """Run `forward` on the inputs' arrays; record the op in the output's graph when grad mode is on
        and an input requires grad. Non-tensor arguments (dims, index arrays, masks) go in `attrs`."""
        device = inputs[0].device
        for t in inputs[1:]:
            if t.device is not device and t.device != device:
                raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, "
                                   f"got {device} and {t.device}")
        needs_input_grad = tuple(t.requires_grad for t in inputs)
        record = any(needs_input_grad) and _grad_enabled.get()
        fn = cls(dispatch(device), inputs if record else (), needs_input_grad)
        out = inputs[0]._wrap(fn.forward(*[t.data for t in inputs], **attrs), fn.out_device or device,
                              requires_grad=record)
        if fn.returns_view:
            out._version = inputs[0]._version
        if record:
            out._ctx = fn
            fn._track_versions(inputs, out)
        return out

    def forward(self, *arrays, **attrs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def save_for_backward(self, *arrays) -> None:
        """Keep arrays for backward. Inputs and the output are version-checked when backward reads them."""
        self._saved = arrays

    @property
    def saved_arrays(self) -> tuple:
        """The arrays given to `save_for_backward`, after checking none was modified in place since."""
        if self.released:
            raise RuntimeError(_SECOND_BACKWARD)
        for array, counter, version in self._saved:
            if counter is not None and counter.value != version:
                raise RuntimeError(
                    f"one of the tensors needed for gradient computation has been modified by an "
                    f"in-place operation: a tensor of shape {tuple(array.shape)} saved by "
                    f"{type(self).__name__} is at version {counter.value}; expected version {version}. "
                    f"Use an out-of-place op (e.g. `x = x + y` instead of `x += y`) or clone it first.")
        return tuple(array for array, _, _ in self._saved)

    def _track_versions(self, inputs, output) -> None:
        """Pair each saved array with the version counter of the tensor that owns it, if any."""
        tracked = []
        for array in self._saved:
            owner = next((t for t in (*inputs, output) if t.data is array), None)
            if owner is None:
                tracked.append((array, None, 0))
            else:
                tracked.append((array, owner._version, owner._version.value))
        self._saved = tracked

    def release(self) -> None:
        """Drop what backward needed and the links to the inputs: the graph behind is freed."""
        self._saved = ()
        self.parents = ()
        self.released = True

    @property
    def name(self) -> str:
        return f"{type(self).__name__}Backward"


_SECOND_BACKWARD = ("Trying to backward through the graph a second time (or to read saved tensors after "
                    "they were freed). Pass retain_graph=True to the first backward() if you need to "
                    "backward through the graph again.")


def _topological_order(root) -> list:
    """Tensors that require grad and were produced by an op, outputs before inputs (iterative DFS)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited or tensor._ctx is None:
            continue
        if tensor._ctx.released:
            raise RuntimeError(_SECOND_BACKWARD)
        visited.add(id(tensor))
        stack.append((tensor, True))
        for parent in tensor._ctx.parents:
            if parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


class IndexedGrad:
    """A gradient that is zero except at `index`: what `x[index]` sends back to x. The backward pass adds
    `values` into x's gradient buffer in place, so that reading n slices of a tensor (the time steps of
    an RNN) costs O(size + total slice size) in backward, not the O(n * size) of n dense zero arrays."""

    __slots__ = ("index", "values")

    def __init__(self, index: tuple, values):
        self.index, self.values = index, values


class _GradBuffers:
    """The gradients accumulated so far for each tensor of the backward pass. A buffer the pass
    allocated itself ("owned") may be updated in place; one returned by a backward() may be shared
    (Add hands the same array to both inputs), so it is copied before its first in-place update."""

    def __init__(self, backend):
        self.backend = backend
        self.arrays: dict[int, tuple[object, bool]] = {}  # id(tensor) -> (array, owned)

    def add(self, tensor, grad) -> None:
        key, bk = id(tensor), self.backend
        array, owned = self.arrays.get(key, (None, False))
        if isinstance(grad, IndexedGrad):
            if array is None:
                array = bk.zeros(tensor.data.shape, tensor.data.dtype)
            elif not owned:
                array = bk.astype(array, tensor.data.dtype)  # a private copy
            bk.index_add_(array, grad.index, grad.values)
            self.arrays[key] = (array, True)
            return
        if tuple(grad.shape) != tensor.shape:
            raise RuntimeError(f"internal error: a backward returned a gradient of shape {tuple(grad.shape)} "
                               f"for an input of shape {tensor.shape}")
        self.arrays[key] = (grad, False) if array is None else (bk.add(array, grad), True)

    def pop(self, tensor):
        """(array, owned) for `tensor`, or (None, False) if no gradient reached it."""
        return self.arrays.pop(id(tensor), (None, False))


def run_backward(root, grad, retain_graph: bool) -> None:
    """Propagate `grad` (an array shaped like `root`) from `root` to every leaf that requires grad,
    accumulating into the leaves' `.grad` once all their contributions are summed."""
    order = _topological_order(root)
    if not order:  # root is itself a leaf
        root._accumulate_grad(grad, owned=False)
        return
    buffers = _GradBuffers(root._ctx.backend)
    buffers.add(root, grad)
    leaves = {}
    for tensor in order:
        grad, owned = buffers.pop(tensor)
        if grad is None:
            continue
        if tensor._retains_grad:
            tensor._accumulate_grad(grad, owned=False)
        fn = tensor._ctx
        input_grads = fn.backward(grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, parent_grad, needed in zip(fn.parents, input_grads, fn.needs_input_grad):
            if needed and parent_grad is not None:
                buffers.add(parent, parent_grad)
                if parent._ctx is None:
                    leaves[id(parent)] = parent
        if not retain_graph:
            fn.release()
    for leaf in leaves.values():
        grad, owned = buffers.pop(leaf)
        leaf._accumulate_grad(grad, owned)
