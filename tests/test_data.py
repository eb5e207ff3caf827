"""minigrad.data: Dataset, TensorDataset, Subset, random_split, DataLoader and default_collate, with
PyTorch's torch.utils.data as the oracle for lengths, split sizes and collated structures."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad.data import DataLoader, Dataset, Subset, TensorDataset, default_collate, random_split


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch (test extra) is not installed")


def make_dataset(n=10, features=3):
    x = mg.tensor(np.arange(n * features, dtype=np.float32).reshape(n, features))
    y = mg.arange(n)
    return TensorDataset(x, y)


def labels_of(loader):
    """The y values of every batch, as lists."""
    return [y.tolist() for _, y in loader]


# ---- datasets ------------------------------------------------------------------------------------


def test_tensor_dataset_rows():
    x, y = mg.randn(7, 2, 3), mg.arange(7)
    dataset = TensorDataset(x, y)
    assert len(dataset) == 7
    xi, yi = dataset[4]
    np.testing.assert_array_equal(xi.numpy(), x.numpy()[4])
    assert yi.item() == 4 and xi.shape == (2, 3) and yi.shape == ()


@pytest.mark.parametrize("tensors, error, match", [
    ((mg.zeros(3, 2), mg.zeros(4)), ValueError, r"same size in their first dim.*\(3, 2\), \(4,\)"),
    ((mg.zeros(()),), ValueError, "0-d"),
    ((np.zeros(3),), TypeError, "ndarray"),
    ((), ValueError, "at least one"),
])
def test_tensor_dataset_errors(tensors, error, match):
    with pytest.raises(error, match=match):
        TensorDataset(*tensors)


def test_dataset_is_abstract():
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]
    with pytest.raises(NotImplementedError, match="__len__"):
        len(Dataset())


def test_subset_indexes_through():
    dataset = make_dataset(6)
    subset = Subset(dataset, [5, 0, 3])
    assert len(subset) == 3
    assert [subset[i][1].item() for i in range(3)] == [5, 0, 3]


# ---- random_split --------------------------------------------------------------------------------


@pytest.mark.parametrize("n, lengths", [
    (10, [0.5, 0.5]), (10, [0.3, 0.3, 0.4]), (11, [0.1, 0.2, 0.7]), (7, [1 / 3, 1 / 3, 1 / 3]),
    (5, [0.9, 0.1]), (100, [0.8, 0.2]), (3, [0.25, 0.25, 0.25, 0.25]), (10, [3, 7]), (4, [4, 0]),
])
@pytest.mark.filterwarnings("ignore:.*is 0:UserWarning")  # both warn about the empty splits of some cases
def test_random_split_lengths_match_torch(torch, n, lengths):
    expected = [len(s) for s in torch.utils.data.random_split(range(n), lengths)]
    splits = random_split(make_dataset(n), lengths, generator=0)
    assert [len(s) for s in splits] == expected
    labels = sorted(s[i][1].item() for s in splits for i in range(len(s)))
    assert labels == list(range(n))  # disjoint and complete


def test_random_split_reproducible_and_random():
    dataset = make_dataset(20)

    def indices(generator):
        return [s.indices for s in random_split(dataset, [0.5, 0.5], generator=generator)]

    assert indices(1) == indices(1)
    assert indices(np.random.default_rng(1)) == indices(1)
    assert indices(1) != indices(2)
    mg.manual_seed(5)
    first = indices(None)
    mg.manual_seed(5)
    assert indices(None) == first
    assert indices(None) != first  # the global generator moved on


@pytest.mark.parametrize("lengths, match", [
    ([3, 3], "sum to 6, but the dataset has 10"),
    ([12, -2], "non-negative"),
    ([1.2, -0.2], r"fractions must lie in \[0, 1\]"),
    ([0.5, 0.4], "non-negative ints"),
])
def test_random_split_errors(lengths, match):
    with pytest.raises(ValueError, match=match):
        random_split(make_dataset(10), lengths)


def test_random_split_warns_about_empty_split():
    with pytest.warns(UserWarning, match="index 2 is 0"):
        random_split(make_dataset(2), [0.5, 0.5, 0.0])


def test_random_split_rejects_bad_generator():
    with pytest.raises(TypeError, match="generator"):
        random_split(make_dataset(4), [2, 2], generator="seed")


# ---- DataLoader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11])
@pytest.mark.parametrize("batch_size", [1, 3, 10, 32])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_and_batch_sizes_match_torch(torch, n, batch_size, drop_last):
    loader = DataLoader(make_dataset(n), batch_size=batch_size, drop_last=drop_last)
    reference = torch.utils.data.DataLoader(range(n), batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(reference)
    assert [len(y) for y in labels_of(loader)] == [len(b) for b in reference]


def test_sequential_batches_in_order():
    x, y = mg.randn(7, 3), mg.arange(7)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=3))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert isinstance(batches[0], list) and batches[0][0].shape == (3, 3)
    np.testing.assert_array_equal(batches[1][0].numpy(), x.numpy()[3:6])


def test_shuffle_is_a_permutation_each_epoch_and_differs_between_epochs():
    loader = DataLoader(make_dataset(50), batch_size=8, shuffle=True, generator=0)
    epochs = [sum(labels_of(loader), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(50))
    assert epochs[0] != list(range(50)) and epochs[0] != epochs[1] != epochs[2]


def test_shuffle_is_reproducible_with_a_seed():
    dataset = make_dataset(30)

    def two_epochs(**kwargs):
        loader = DataLoader(dataset, batch_size=4, shuffle=True, **kwargs)
        return [labels_of(loader) for _ in range(2)]

    assert two_epochs(generator=3) == two_epochs(generator=3)
    assert two_epochs(generator=np.random.default_rng(3)) == two_epochs(generator=3)
    assert two_epochs(generator=3) != two_epochs(generator=4)
    mg.manual_seed(11)
    first = two_epochs()
    mg.manual_seed(11)
    assert two_epochs() == first
    mg.manual_seed(12)
    assert two_epochs() != first


def test_shuffle_with_drop_last_drops_a_random_remainder():
    loader = DataLoader(make_dataset(10), batch_size=4, shuffle=True, drop_last=True, generator=0)
    batches = labels_of(loader)
    assert [len(b) for b in batches] == [4, 4] and len(set(sum(batches, []))) == 8


def test_custom_collate_fn():
    loader = DataLoader(make_dataset(5), batch_size=2, collate_fn=lambda samples: [s[1].item() for s in samples])
    assert list(loader) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(make_dataset(), batch_size=batch_size)


def test_loader_over_random_split_subsets():
    train, test = random_split(make_dataset(10), [0.7, 0.3], generator=0)
    seen = sum(labels_of(DataLoader(train, batch_size=3, shuffle=True, generator=1)), [])
    assert sorted(seen) == sorted(train.indices)


# ---- default_collate -----------------------------------------------------------------------------

Point = collections.namedtuple("Point", "x y")


def _to_numpy(value):
    """minigrad and torch batches as nested Python/NumPy values, for comparison."""
    if isinstance(value, mg.Tensor):
        return value.numpy()
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value) if not hasattr(value, "_fields") else \
            type(value)(*(_to_numpy(v) for v in value))
    return value


def _assert_nested_equal(ours, theirs):
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(ours, np.ndarray):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for k in ours:
            _assert_nested_equal(ours[k], theirs[k])
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_nested_equal(a, b)
    else:
        assert ours == theirs


SAMPLES = {
    "floats": lambda i: 0.5 * i,
    "ints": lambda i: i - 1,
    "bools": lambda i: i % 2 == 0,
    "strings": lambda i: f"s{i}",
    "arrays": lambda i: np.full((2, 3), i, dtype=np.float32),
    "int arrays": lambda i: np.arange(4) * i,
    "numpy scalars": lambda i: np.float64(i),
    "tuples": lambda i: (np.ones(2) * i, i, "t"),
    "lists": lambda i: [i, [float(i), i + 1]],
    "dicts": lambda i: {"image": np.zeros((1, 2), np.float32) + i, "label": i, "meta": {"id": str(i)}},
    "namedtuples": lambda i: Point(np.array([i, i], np.int64), 2.0 * i),
}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_default_collate_matches_torch(torch, kind):
    batch = [SAMPLES[kind](i) for i in range(3)]
    theirs = torch.utils.data.default_collate(batch)
    _assert_nested_equal(_to_numpy(default_collate(batch)), _to_numpy(theirs))


def test_default_collate_stacks_minigrad_tensors():
    rows = [mg.randn(2, 3) for _ in range(4)]
    batch = default_collate([(r, mg.tensor(i)) for i, r in enumerate(rows)])
    assert batch[0].shape == (4, 2, 3) and batch[1].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(batch[0].numpy()[2], rows[2].numpy())


@pytest.mark.parametrize("batch, error, match", [
    ([(1, 2), (3,)], ValueError, "different lengths"),
    ([object(), object()], TypeError, "object"),
    ([mg.zeros(2), mg.zeros(3)], ValueError, "stack"),
])
def test_default_collate_errors(batch, error, match):
    with pytest.raises(error, match=match):
        default_collate(batch)


def test_len_counts_partial_batch():
    assert len(DataLoader(make_dataset(10), batch_size=4)) == math.ceil(10 / 4)
    assert len(DataLoader(make_dataset(10), batch_size=4, drop_last=True)) == 10 // 4
