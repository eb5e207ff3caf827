"""layer_norm: normalization over the trailing dims of each sample (Ba et al., 2016)."""
from __future__ import annotations

import math

from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.ops.normalization import LayerNorm
from minigrad.tensor import Tensor

__all__ = ["layer_norm"]


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize x over its trailing dims `normalized_shape` (an int or a tuple, the last dims of x) to
    zero mean and unit (biased) variance, then scale by weight and shift by bias (both of shape
    normalized_shape, optional). x: (*, *normalized_shape) -> same shape.

    The trailing dims are flattened into one of size D, so the kernel sees rows (R, D)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    x, weight, bias = autocast_inputs("layer_norm", x, weight, bias)
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"layer_norm expects a floating point Tensor, got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} must be the trailing dims of the input, "
                         f"got input of shape {x.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != shape:
            raise ValueError(f"layer_norm: {name} of shape {t.shape} does not match normalized_shape {shape}")
        if t is not None and t.dtype is not x.dtype:
            raise TypeError(f"layer_norm: {name} is {t.dtype} but the input is {x.dtype}")
    features = math.prod(shape)
    rows = x.reshape(math.prod(x.shape[:x.ndim - len(shape)]), features)
    affine = [t.reshape(features) for t in (weight, bias) if t is not None]
    out = LayerNorm.apply(rows, *affine, eps=eps, has_weight=weight is not None, has_bias=bias is not None)
    return out.reshape(x.shape)
