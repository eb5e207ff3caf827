"""Datasets: the indexable-collection protocol, tensors as a dataset, subsets and random splits."""
from __future__ import annotations

import math
import warnings

import numpy as np

from minigrad.tensor import Tensor


class Dataset:
    """A collection of samples: subclasses define `__getitem__(index) -> sample` and `__len__`.
    A sample is anything `DataLoader`'s collate function can batch (tensors, arrays, numbers, and
    tuples, lists or dicts of them)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not define __len__")


class TensorDataset(Dataset):
    """Samples are rows of tensors sharing their first dim: `dataset[i] == (t[i] for t in tensors)`.

    TensorDataset(x, y) with x: (N, ...) and y: (N, ...) has N samples (x[i], y[i])."""

    def __init__(self, *tensors: Tensor):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TypeError(f"TensorDataset expects minigrad Tensors, got {type(t).__name__}")
            if t.ndim == 0:
                raise ValueError("TensorDataset: 0-d tensors have no first dim to index samples by")
        if len({t.shape[0] for t in tensors}) != 1:
            raise ValueError("TensorDataset: all tensors must have the same size in their first dim, got shapes "
                             + ", ".join(str(t.shape) for t in tensors))
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order: `subset[i] == dataset[indices[i]]`."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def make_rng(generator) -> np.random.Generator:
    """A NumPy generator from `generator`: a numpy.random.Generator (used as is), an int seed, or None
    (seeded from minigrad's global generator, so `minigrad.manual_seed` makes it reproducible)."""
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None:
        from minigrad.creation import randint  # the global generator of minigrad.random
        generator = randint(2**62).item()
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be None, an int seed or a numpy.random.Generator, "
                        f"got {type(generator).__name__}")
    return np.random.default_rng(generator)


def random_split(dataset, lengths, generator=None) -> list[Subset]:
    """Split `dataset` into non-overlapping random Subsets of the given `lengths`: ints summing to
    len(dataset), or fractions summing to 1. Fractions follow PyTorch's rule: floor(len * fraction)
    each, then the remaining items are dealt one by one to the splits in order."""
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        if any(not 0 <= f <= 1 for f in lengths):
            raise ValueError(f"random_split: fractions must lie in [0, 1], got {lengths}")
        counts = [math.floor(n * f) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"random_split: length of split at index {i} is 0", stacklevel=2)
        lengths = counts
    if any(not isinstance(k, int) or k < 0 for k in lengths):
        raise ValueError(f"random_split: lengths must be non-negative ints or fractions summing to 1, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} sum to {sum(lengths)}, but the dataset has {n} samples")
    order = make_rng(generator).permutation(n).tolist()
    ends = np.cumsum(lengths).tolist()
    return [Subset(dataset, order[end - length:end]) for end, length in zip(ends, lengths)]
