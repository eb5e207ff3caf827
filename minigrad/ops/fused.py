"""Fused elementwise ops: a linear layer's bias add folded into the op that follows it.

    bias_gelu(x, bias)                 = gelu(x + bias)            the hidden layer of a Transformer MLP
    bias_residual(x, bias, residual)   = (x + bias) + residual     a projection and its skip connection

x (*, D), bias (D,), residual shaped as x. Same values and gradients as the unfused expressions, in
one kernel pass instead of two (or, for GELU's tanh form on the NumPy reference, about ten). The
Functions see x as (R, D) rows, R the product of the leading dims; the bias gradient sums over them.
"""
from __future__ import annotations

import functools

from minigrad import dtypes
from minigrad.autograd import Function
from minigrad.tensor import Tensor


def _rows(backend, x):
    return backend.reshape(x, (-1, x.shape[-1]))


class BiasGelu(Function):
    """gelu(x + bias) for x (*, D) and an optional bias (D,), passed after x when present."""

    def forward(self, x, *bias, approximate):
        b = bias[0] if bias else None
        self.approximate = approximate
        self.save_for_backward(x, b)
        return self.backend.reshape(self.backend.bias_gelu_forward(_rows(self.backend, x), b, approximate), x.shape)

    def backward(self, grad):
        x, b = self.saved_arrays
        bk = self.backend
        dx, dbias = bk.bias_gelu_backward(_rows(bk, grad), _rows(bk, x), b, self.approximate)
        return (bk.reshape(dx, x.shape),) + (() if b is None else (dbias,))


class BiasResidual(Function):
    """(x + bias) + residual for x (*, D), bias (D,), residual shaped as x."""

    def forward(self, x, bias, residual):
        bk = self.backend
        self.shape = tuple(x.shape)
        return bk.reshape(bk.bias_residual_forward(_rows(bk, x), bias, _rows(bk, residual)), self.shape)

    def backward(self, grad):
        bk = self.backend
        dbias = bk.sum(_rows(bk, grad), (0,), False) if self.needs_input_grad[1] else None
        return grad, dbias, grad


def _operands(op: str, x, bias, *others) -> list[Tensor]:
    """[x, bias (may be None), *others] converted to their common floating dtype, after checking that
    x has a dim, bias is (x.shape[-1],) and the others have x's shape."""
    tensors = [t for t in (x, bias, *others) if t is not None]
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{op} expects Tensors, got {', '.join(type(t).__name__ for t in tensors)}")
    if x.ndim == 0 or (bias is not None and bias.shape != x.shape[-1:]):
        raise ValueError(f"{op}: input of shape {x.shape} and bias of shape "
                         f"{None if bias is None else bias.shape}: the input needs a last dim D and the bias "
                         f"the shape (D,)")
    for t in others:
        if t.shape != x.shape:
            raise ValueError(f"{op}: residual of shape {t.shape} must have the input's shape {x.shape}")
    dtype = functools.reduce(dtypes.promote_types, [t.dtype for t in tensors])
    if not dtype.is_floating_point:
        raise TypeError(f"{op} needs floating point tensors, got {', '.join(str(t.dtype) for t in tensors)}")
    return [t.to(dtype) for t in tensors]


def bias_gelu(x: Tensor, bias: Tensor | None, approximate: str = "none") -> Tensor:
    """gelu(x + bias) in one pass: x (*, D), bias (D,) or None -> (*, D). approximate: 'none' (erf) or
    'tanh'. Equal to `gelu(x + bias, approximate)`, values and gradients."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"bias_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return BiasGelu.apply(*_operands("bias_gelu", x, bias), approximate=approximate)


def bias_residual(x: Tensor, bias: Tensor, residual: Tensor) -> Tensor:
    """(x + bias) + residual in one pass: x (*, D), bias (D,), residual (*, D) -> (*, D)."""
    return BiasResidual.apply(*_operands("bias_residual", x, bias, residual))
