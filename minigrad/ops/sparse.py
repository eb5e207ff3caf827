"""Embedding lookup: rows of a weight table selected by integer indices; backward is a scatter-add."""
from __future__ import annotations

from minigrad.autograd import Function


class Embedding(Function):
    """out[...] = weight[indices[...]]: weight (V, D), indices int64 (*) -> (*, D). The indices are an
    attribute (not differentiable); the gradient of the padding_idx row is left at zero."""

    def forward(self, weight, indices, padding_idx):
        self.indices, self.padding_idx, self.num_embeddings = indices, padding_idx, weight.shape[0]
        return self.backend.embedding_forward(weight, indices)

    def backward(self, grad):
        return self.backend.embedding_backward(grad, self.indices, self.num_embeddings, self.padding_idx)
