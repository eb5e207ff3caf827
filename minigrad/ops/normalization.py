"""Layer normalization: the LayerNorm Function over the last dim of a (rows, features) array.

Callers flatten their tensor to (R, D) first (see `minigrad.nn.functional.layer_norm`, which also
handles a normalized_shape of several trailing dims). The kernel caches each row's mean and rstd
(1 / sqrt(var + eps)) for backward.
"""
from __future__ import annotations

from minigrad.autograd import Function


class LayerNorm(Function):
    """out = (x - mean) * rstd * weight + bias over each row of x (R, D); weight and bias (D,) are
    optional, and passed after x only when present (`has_weight`, `has_bias` say which are)."""

    def forward(self, x, *affine, eps, has_weight, has_bias):
        weight = affine[0] if has_weight else None
        bias = affine[-1] if has_bias else None
        out, mean, rstd = self.backend.layer_norm_forward(x, weight, bias, eps)
        self.has_weight, self.has_bias = has_weight, has_bias
        self.save_for_backward(x, weight, mean, rstd)
        return out

    def backward(self, grad):
        x, weight, mean, rstd = self.saved_arrays
        dx, dweight, dbias = self.backend.layer_norm_backward(grad, x, weight, mean, rstd)
        return (dx,) + ((dweight,) if self.has_weight else ()) + ((dbias,) if self.has_bias else ())
