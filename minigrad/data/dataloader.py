"""DataLoader: batches of samples from a Dataset, in order or shuffled, stacked by a collate function."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from minigrad import dtypes
from minigrad.creation import tensor
from minigrad.data.dataset import make_rng
from minigrad.ops import stack
from minigrad.tensor import Tensor


def default_collate(batch):
    """Stack a sequence of samples into a batch, as torch's default_collate does: tensors and NumPy
    arrays of shape S become one tensor of shape (B, *S); Python floats a float64 tensor, ints an int64
    tensor, bools a bool tensor; strings stay as given. Dicts are collated per key, namedtuples per
    field, and other tuples and lists per position (returning a list)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch)
    if isinstance(elem, (np.ndarray, np.generic)):
        return tensor(np.stack(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype=dtypes.float64)
    if isinstance(elem, int):  # bool is an int: a batch of bools becomes a bool tensor
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise ValueError(f"default_collate: samples are sequences of different lengths "
                             f"{sorted({len(sample) for sample in batch})}")
        fields = [default_collate(column) for column in zip(*batch)]
        return type(elem)(*fields) if hasattr(elem, "_fields") else fields  # namedtuple, else a list
    raise TypeError(f"default_collate: samples must be tensors, NumPy arrays, numbers, strings, or dicts, "
                    f"tuples or lists of them; got {type(elem).__name__}")


class DataLoader:
    """Iterate over `dataset` in batches of `batch_size` samples, each batch made by `collate_fn`
    (default: `default_collate`, so a TensorDataset of x: (N, F), y: (N,) gives (B, F), (B,) batches).

    shuffle:   a new random order every epoch, from `generator` (an int seed or a
               numpy.random.Generator, drawn on across epochs) or, if None, from a seed drawn each
               epoch from minigrad's global generator; either way two runs with the same seed give
               identical batches.
    drop_last: leave out the last batch when it has fewer than batch_size samples.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 collate_fn=None, generator=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self._rng = None if generator is None else make_rng(generator)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        rng = make_rng(None) if self._rng is None and self.shuffle else self._rng
        order = rng.permutation(n).tolist() if self.shuffle else range(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            yield self.collate_fn([self.dataset[i] for i in indices])
