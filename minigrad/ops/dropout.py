"""Dropout: zero each element with probability p and scale the survivors by 1 / (1 - p).

The caller passes the device's generator (`minigrad.random.generator`), so `manual_seed` makes the
keep-mask reproducible; the mask is kept on the Function for backward.
"""
from __future__ import annotations

from minigrad.autograd import Function


class Dropout(Function):
    """x * mask / (1 - p) with a bool keep-mask drawn from `gen` (P(keep) = 1 - p); p == 1 gives zeros."""

    def forward(self, x, gen, p):
        out, self.mask = self.backend.dropout_forward(gen, x, p)
        self.p = p
        return out

    def backward(self, grad):
        return self.backend.dropout_backward(grad, self.mask, self.p)
