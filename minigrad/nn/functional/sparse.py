"""embedding (a table lookup by integer index) and one_hot."""
from __future__ import annotations

from minigrad import creation, dtypes
from minigrad.ops.sparse import Embedding
from minigrad.tensor import Tensor

__all__ = ["embedding", "one_hot"]


def _check_indices(indices, op: str) -> None:
    if not isinstance(indices, Tensor) or indices.dtype is not dtypes.int64:
        raise TypeError(f"{op} expects an int64 Tensor of indices, got "
                        f"{indices.dtype if isinstance(indices, Tensor) else type(indices).__name__}")


def _check_range(indices: Tensor, size: int, op: str, what: str) -> None:
    if indices.numel() and ((indices < 0) | (indices >= size)).any().item():
        raise IndexError(f"{op}: indices must lie in [0, {size}) ({what}), got values from "
                         f"{indices.min().item()} to {indices.max().item()}")


def normalize_padding_idx(padding_idx: int | None, num_embeddings: int, op: str) -> int | None:
    """padding_idx as a row number in [0, num_embeddings) (negative counts from the end), or None."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{op}: padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
    return padding_idx % num_embeddings


def embedding(indices: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` (V, D) picked by `indices` (int64, any shape *) -> (*, D). The gradient of a row
    read several times accumulates; the row `padding_idx` (negative counts from the end) gets none."""
    _check_indices(indices, "embedding")
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"embedding: weight must be a 2-D Tensor (num_embeddings, embedding_dim), got "
                         f"{weight.shape if isinstance(weight, Tensor) else type(weight).__name__}")
    if indices.device != weight.device:
        raise RuntimeError(f"embedding: indices on {indices.device}, weight on {weight.device}")
    num_embeddings = weight.shape[0]
    padding_idx = normalize_padding_idx(padding_idx, num_embeddings, "embedding")
    _check_range(indices, num_embeddings, "embedding", f"the weight has {num_embeddings} rows")
    return Embedding.apply(weight, indices=indices.data, padding_idx=padding_idx)


def one_hot(indices: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (*, num_classes) with a 1 at each index: indices int64 (*). num_classes=-1 uses max + 1."""
    _check_indices(indices, "one_hot")
    if num_classes == -1:
        if not indices.numel():
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = indices.max().item() + 1
    _check_range(indices, num_classes, "one_hot", f"num_classes is {num_classes}")
    classes = creation.arange(num_classes, device=indices.device)
    return (indices.unsqueeze(-1) == classes).long()
