"""Loss modules: the functions of `nn.functional.loss` with their options fixed at construction.

As in PyTorch, class weights (`weight`) and BCEWithLogitsLoss's `pos_weight` are registered as buffers, so
they follow `.to()` and appear in `state_dict()` (when given). The deprecated `size_average` / `reduce`
flags are accepted and turned into `reduction`.
"""
from __future__ import annotations

from minigrad.nn import functional as F
from minigrad.nn.functional.loss import legacy_reduction
from minigrad.nn.module import Module
from minigrad.tensor import Tensor

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    """A loss with a `reduction` ('none' | 'mean' | 'sum')."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.reduction = legacy_reduction(size_average, reduce, reduction)


class _WeightedLoss(_Loss):
    """A loss with an optional `weight` buffer."""

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits against class indices or class probabilities (see F.cross_entropy).
    input (N, C), (N, C, d1, ...) or (C,); target (N, d1, ...) int64 or probabilities of the input's shape;
    weight (C,). Output: a scalar, or (N, d1, ...) with reduction='none'."""

    def __init__(self, weight: Tensor | None = None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (see F.nll_loss). input (N, C), (N, C, d1, ...) or (C,);
    target (N, d1, ...) int64; weight (C,). Output: a scalar, or (N, d1, ...) with reduction='none'."""

    def __init__(self, weight: Tensor | None = None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error: (input - target)^2 per element, any shape; a scalar unless reduction='none'."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: |input - target| per element, any shape; a scalar unless reduction='none'."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities in [0, 1] (see F.binary_cross_entropy). input and target of
    one shape; weight broadcasts to it. A scalar unless reduction='none'."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of sigmoid(logits), computed stably (see F.binary_cross_entropy_with_logits).
    input and target of one shape; weight broadcasts to it; pos_weight, e.g. (C,), weighs the positive
    term per class along the last dim. A scalar unless reduction='none'."""

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean",
                 pos_weight: Tensor | None = None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, weight=self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
