"""The fused cross-entropy op: log-softmax and the negative log-likelihood of the target class in one
Function, so backward is the one-line `softmax - target distribution` instead of two chained ops.

The public losses (with reductions, class weights, probability targets, shapes (N, C, d1, ...)) are in
`minigrad.nn.functional.loss`; this op only sees rows of logits and their class indices.
"""
from __future__ import annotations

from minigrad.autograd import Function


class CrossEntropy(Function):
    """Per-row loss of logits (N, C) against class indices (N,): (N,) losses, 0 for rows whose target
    is `ignore_index`. `targets` (an int64 array), `ignore_index` and `label_smoothing` are attributes;
    with label smoothing ls the loss is (1 - ls) * -logp[y] + ls * mean_c(-logp[c]), as in PyTorch."""

    def forward(self, logits, targets, ignore_index, label_smoothing):
        losses, logprobs = self.backend.cross_entropy_forward(logits, targets, ignore_index, label_smoothing)
        self.save_for_backward(logprobs)
        self.targets, self.ignore_index, self.label_smoothing = targets, ignore_index, label_smoothing
        return losses

    def backward(self, grad):
        (logprobs,) = self.saved_arrays
        return self.backend.cross_entropy_backward(grad, logprobs, self.targets, self.ignore_index,
                                                   self.label_smoothing)
