"""Embedding: a learned table of vectors looked up by integer index (token ids, positions, ...)."""
from __future__ import annotations

from minigrad import creation
from minigrad.autograd import no_grad
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.functional.sparse import normalize_padding_idx
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """A table weight (num_embeddings, embedding_dim), initialized N(0, 1) as in PyTorch. indices int64
    (*) -> (*, embedding_dim). The row padding_idx (negative counts from the end) starts at zero and
    receives no gradient, so it stays fixed, e.g. for padding tokens."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype=None, device=None):
        super().__init__()
        padding_idx = normalize_padding_idx(padding_idx, num_embeddings, "Embedding")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, indices):
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
