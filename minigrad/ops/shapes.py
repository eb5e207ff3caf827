"""Shape arithmetic shared by the ops: broadcasting, dim normalization, and the one `unbroadcast`."""
from __future__ import annotations


class DimensionError(IndexError, ValueError):
    """A `dim` argument out of range: catchable as IndexError (like PyTorch) or ValueError."""


def normalize_dim(dim: int, ndim: int) -> int:
    """Map a possibly negative `dim` into [0, ndim); a 0-d tensor accepts dim 0 and -1, as in PyTorch."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    bound = max(ndim, 1)
    if not -bound <= dim < bound:
        raise DimensionError(f"dim {dim} is out of range for a tensor with {ndim} dims "
                             f"(expected a value in [{-bound}, {bound - 1}])")
    return dim % bound


def normalize_dims(dim, ndim: int) -> tuple[int, ...]:
    """`dim` as a sorted tuple of non-negative axes: None means all dims; an int or a tuple/list of ints."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = tuple(sorted({normalize_dim(d, ndim) for d in dims}))
    if len(axes) != len(dims):
        raise ValueError(f"dim {dim} names the same dimension more than once")
    return tuple(a for a in axes if a < ndim)  # a 0-d tensor reduces over nothing


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape that NumPy/PyTorch broadcasting gives, or a ValueError naming the shapes."""
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast "
                             f"together (dim {i}: sizes {sorted(sizes)})")
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def unbroadcast(backend, grad, shape: tuple[int, ...]):
    """Sum a gradient of the broadcast shape back to an input's `shape` (the adjoint of broadcasting)."""
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    summed = backend.sum(grad, axes, True) if axes else grad
    return backend.reshape(summed, shape)
