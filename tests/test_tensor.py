"""Tensor construction, properties, conversions, type promotion, in-place ops and the Python protocol.

Expected values come from NumPy (the same call on the same inputs) or are written from the definition.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg


def values(t):
    return t.detach().numpy()


# ---- creation --------------------------------------------------------------------------------------

def test_tensor_copies_its_data():
    src = np.array([1.0, 2.0], dtype=np.float32)
    t = mg.tensor(src)
    src[0] = 9.0
    assert t.tolist() == [1.0, 2.0]
    nested = mg.tensor([[1, 2, 3], [4, 5, 6]])
    assert nested.shape == (2, 3) and nested.dtype is mg.int64
    np.testing.assert_array_equal(nested.numpy(), np.arange(1, 7).reshape(2, 3))
    copy = mg.tensor(nested)
    assert copy.data is not nested.data and copy.tolist() == nested.tolist()


@pytest.mark.parametrize("fn, npfn", [(mg.zeros, np.zeros), (mg.ones, np.ones)])
def test_zeros_ones(fn, npfn):
    for args, shape in [((2, 3), (2, 3)), (((4,),), (4,)), (([2, 1, 2],), (2, 1, 2)), ((), ())]:
        t = fn(*args)
        assert t.shape == shape and t.dtype is mg.float32
        np.testing.assert_array_equal(t.numpy(), npfn(shape, np.float32))
    assert fn(3, dtype=mg.int64).dtype is mg.int64
    assert fn(2, requires_grad=True).requires_grad


def test_full_and_empty():
    t = mg.full((2, 3), 2.5)
    assert t.dtype is mg.float32 and t.shape == (2, 3)
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 2.5, np.float32))
    assert mg.full((2,), 7).dtype is mg.int64
    assert mg.full((2,), True).dtype is mg.bool
    assert mg.full((2,), 7, dtype=mg.float64).tolist() == [7.0, 7.0]
    e = mg.empty(3, 4)
    assert e.shape == (3, 4) and e.dtype is mg.float32
    assert mg.empty((2,), dtype=mg.int64).dtype is mg.int64


@pytest.mark.parametrize("args, kwargs", [
    ((5,), {}), ((2, 7), {}), ((0, 10, 3), {}), ((5, 0, -1), {}), ((10, 2, -3), {}),
    ((0.0, 1.0, 0.25), {}), ((1.0, 0.0, -0.25), {}), ((0, 5), {"dtype": "float64"}), ((3.0,), {}),
])
def test_arange(args, kwargs):
    t = mg.arange(*args, **kwargs)
    is_float = any(isinstance(a, float) for a in args)
    expected_dtype = mg.float64 if kwargs else (mg.float32 if is_float else mg.int64)
    assert t.dtype is expected_dtype
    expected = np.arange(*args, dtype=expected_dtype.np_dtype)
    np.testing.assert_array_equal(t.numpy(), expected)
    assert t.ndim == 1


def test_arange_zero_step_raises():
    with pytest.raises(ValueError, match="step"):
        mg.arange(0, 5, 0)


def test_linspace():
    t = mg.linspace(-1, 1, 5)
    assert t.dtype is mg.float32
    np.testing.assert_allclose(t.numpy(), [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert mg.linspace(0, 1, 1).tolist() == [0.0]
    assert mg.linspace(0, 1, 0).shape == (0,)
    np.testing.assert_allclose(mg.linspace(0, 3, 4, dtype=mg.float64).numpy(), np.linspace(0, 3, 4))


def test_eye():
    np.testing.assert_array_equal(mg.eye(3).numpy(), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(mg.eye(2, 4).numpy(), np.eye(2, 4, dtype=np.float32))
    np.testing.assert_array_equal(mg.eye(4, 2).numpy(), np.eye(4, 2, dtype=np.float32))
    assert mg.eye(2, dtype=mg.int64).dtype is mg.int64


def test_rand_randn_randint_shapes_ranges_dtypes():
    mg.manual_seed(123)
    u = mg.rand(1000)
    assert u.dtype is mg.float32 and u.shape == (1000,)
    assert u.numpy().min() >= 0.0 and u.numpy().max() < 1.0
    n = mg.randn(200, 50)
    assert n.dtype is mg.float32 and n.shape == (200, 50)
    assert abs(n.numpy().mean()) < 0.05 and abs(n.numpy().std() - 1.0) < 0.05
    assert mg.randn(3, dtype=mg.float64).dtype is mg.float64
    assert mg.rand(2, 3, requires_grad=True).requires_grad
    r = mg.randint(-3, 4, (500,))
    assert r.dtype is mg.int64 and r.shape == (500,)
    assert set(r.tolist()) == set(range(-3, 4))
    r2 = mg.randint(5, size=(2, 3))
    assert r2.shape == (2, 3) and r2.numpy().min() >= 0 and r2.numpy().max() < 5


def test_like_functions():
    x = mg.ones(2, 3, dtype=mg.float64)
    for fn in (mg.zeros_like, mg.ones_like, mg.empty_like, mg.rand_like, mg.randn_like):
        y = fn(x)
        assert y.shape == x.shape and y.dtype is mg.float64 and y.device == x.device
    np.testing.assert_array_equal(mg.zeros_like(x).numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(mg.ones_like(x).numpy(), np.ones((2, 3)))
    f = mg.full_like(x, 4.5)
    assert f.dtype is mg.float64 and f.tolist() == [[4.5] * 3] * 2
    assert mg.zeros_like(x, dtype=mg.int64).dtype is mg.int64
    assert mg.ones_like(x, requires_grad=True).requires_grad
    r = mg.randint_like(x, 0, 3)
    assert r.shape == (2, 3) and r.dtype is mg.float64
    assert set(np.unique(r.numpy())) <= {0.0, 1.0, 2.0}


def test_from_numpy_shares_memory():
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = mg.from_numpy(arr)
    assert t.dtype is mg.float64 and t.shape == (2, 3)
    arr[0, 0] = 42.0
    assert t.tolist()[0][0] == 42.0
    with mg.no_grad():
        t.mul_(2.0)
    assert arr[1, 2] == 10.0
    for np_dtype, dtype in [(np.float32, mg.float32), (np.int64, mg.int64), (np.bool_, mg.bool)]:
        assert mg.from_numpy(np.zeros(2, np_dtype)).dtype is dtype


def test_manual_seed_reproducible_and_seeds_differ():
    def draw():
        return mg.randn(4, 5).numpy().copy(), mg.rand(7).numpy().copy(), mg.randint(0, 1000, (9,)).numpy().copy()

    mg.manual_seed(7)
    a = draw()
    mg.manual_seed(7)
    b = draw()
    mg.manual_seed(8)
    c = draw()
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    assert mg.initial_seed() == 8
    # Successive draws after one seed are different from each other.
    mg.manual_seed(7)
    assert not np.array_equal(mg.randn(10).numpy(), mg.randn(10).numpy())


# ---- dtypes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, dtype", [
    (1.5, mg.float32), ([1.0, 2.0], mg.float32), (3, mg.int64), ([1, 2], mg.int64), (True, mg.bool),
    ([True, False], mg.bool), (np.array([1.0], np.float64), mg.float64), (np.array([1.0], np.float32), mg.float32),
    (np.array([1], np.int64), mg.int64), (np.array([1], np.int32), mg.int64), ([1, 2.5], mg.float32),
])
def test_dtype_inference(data, dtype):
    t = mg.tensor(data)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data).astype(dtype.np_dtype))


@pytest.mark.parametrize("dtype, np_dtype", [
    (mg.float32, np.float32), (mg.float64, np.float64), (mg.int64, np.int64), (mg.bool, np.bool_),
    ("float64", np.float64), (float, np.float32), (int, np.int64), (np.float64, np.float64),
])
def test_explicit_dtype(dtype, np_dtype):
    t = mg.tensor([0, 1, 2], dtype=dtype)
    assert t.numpy().dtype == np_dtype
    np.testing.assert_array_equal(t.numpy(), np.array([0, 1, 2]).astype(np_dtype))


def test_dtype_aliases():
    assert mg.float is mg.float32 and mg.double is mg.float64 and mg.long is mg.int64
    assert mg.bool is mg.bool_
    assert mg.float32.is_floating_point and not mg.int64.is_floating_point
    assert repr(mg.float64) == "minigrad.float64"


# ---- properties -----------------------------------------------------------------------------------

def test_properties():
    x = mg.tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.dim() == 3
    assert x.dtype is mg.float64
    assert x.device == "cpu" and str(x.device) == "cpu"
    assert x.requires_grad and x.grad is None and x.is_leaf
    assert x.numel() == 24
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.T.shape == (4, 3, 2)
    np.testing.assert_array_equal(values(x.T), np.arange(24.0).reshape(2, 3, 4).T)
    assert x.mT.shape == (2, 4, 3)
    np.testing.assert_array_equal(values(x.mT), np.swapaxes(np.arange(24.0).reshape(2, 3, 4), -1, -2))
    m = mg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert m.T.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    s = mg.tensor(3.0)
    assert s.shape == () and s.ndim == 0 and s.numel() == 1


def test_numpy_item_tolist():
    t = mg.tensor([[1.5, 2.5], [3.5, 4.5]])
    arr = t.numpy()
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.array([[1.5, 2.5], [3.5, 4.5]], np.float32))
    assert np.shares_memory(arr, t.data)
    assert t.tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert mg.tensor(2.5).item() == 2.5 and isinstance(mg.tensor(2.5).item(), float)
    assert mg.tensor([7]).item() == 7 and isinstance(mg.tensor([7]).item(), int)
    assert mg.tensor(True).item() is True
    assert mg.tensor(3.0).tolist() == 3.0
    with pytest.raises(RuntimeError, match="detach"):
        mg.tensor([1.0], requires_grad=True).numpy()


def test_repr():
    r = repr(mg.tensor([1.0, 2.5]))
    assert r.startswith("tensor(") and "1." in r and "2.5" in r
    assert "dtype" not in r  # float32 is the default: not shown
    r64 = repr(mg.tensor([1.0, 2.0], dtype=mg.float64))
    assert "dtype=minigrad.float64" in r64
    leaf = mg.tensor([3.0], requires_grad=True)
    assert "requires_grad=True" in repr(leaf)
    out = leaf * 2.0
    r = repr(out)
    assert "grad_fn=<MulBackward>" in r and "6." in r and "requires_grad" not in r
    assert "grad_fn=<" in repr(leaf.exp())
    assert repr(mg.tensor([1, 2])).startswith("tensor([1, 2]")
    assert "True" in repr(mg.tensor([True, False]))


def test_to_and_conversions():
    x = mg.tensor([1.7, -2.2, 3.0])
    assert x.to(mg.float32) is x
    d = x.double()
    assert d.dtype is mg.float64
    np.testing.assert_array_equal(d.numpy(), np.array([1.7, -2.2, 3.0], np.float32).astype(np.float64))
    lg = x.long()
    assert lg.dtype is mg.int64 and lg.tolist() == [1, -2, 3]  # truncation toward zero, as astype
    assert lg.float().dtype is mg.float32 and lg.float().tolist() == [1.0, -2.0, 3.0]
    assert x.to(mg.int64).tolist() == [1, -2, 3]
    assert x.to(dtype=mg.float64).dtype is mg.float64
    assert x.to("cpu") is x
    assert x.to("cpu", mg.float64).dtype is mg.float64
    b = mg.tensor([0.0, 2.0]).bool()
    assert b.dtype is mg.bool and b.tolist() == [False, True]


def test_to_dtype_is_differentiable():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.double() * x.double()).sum()
    y.backward()
    assert x.grad.dtype is mg.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


# ---- type promotion -------------------------------------------------------------------------------

def test_type_promotion():
    i = mg.tensor([1, 2])
    f32 = mg.tensor([1.0, 2.0])
    f64 = mg.tensor([1.0, 2.0], dtype=mg.float64)
    r = i + 1.5
    assert r.dtype is mg.float32 and r.tolist() == [2.5, 3.5]
    assert (i + 1).dtype is mg.int64
    assert (f32 + f64).dtype is mg.float64
    assert (f64 + f32).dtype is mg.float64
    assert (i + f32).dtype is mg.float32
    assert (f32 + 2).dtype is mg.float32
    assert (f32 * 2.0).dtype is mg.float32  # a Python float does not upcast a float32 tensor
    q = mg.tensor([1, 3]) / mg.tensor([2, 2])
    assert q.dtype is mg.float32 and q.tolist() == [0.5, 1.5]
    assert (mg.tensor([3]) / 2).dtype is mg.float32
    b = mg.tensor([True, False])
    assert (b + i).dtype is mg.int64
    assert (mg.tensor([1.0, 2.0]) < 1.5).dtype is mg.bool


def test_scalar_on_either_side_and_numpy_scalars():
    x = mg.tensor([1.0, 2.0])
    assert (2.0 - x).tolist() == [1.0, 0.0]
    assert (1.0 / x).tolist() == [1.0, 0.5]
    assert (2.0 ** mg.tensor([1.0, 3.0])).tolist() == [2.0, 8.0]
    y = np.float32(3.0) * x
    assert isinstance(y, mg.Tensor) and y.tolist() == [3.0, 6.0]


# ---- in-place ops ---------------------------------------------------------------------------------

def _inplace_cases():
    a = np.array([[1.0, -2.0, 3.0], [4.0, -5.0, 6.0]], np.float32)
    other = np.array([0.5, 2.0, -1.0], np.float32)
    mask = np.array([[True, False, False], [False, True, True]])
    return a, [
        ("add_", lambda t: t.add_(mg.tensor(other)), a + other),
        ("add_ alpha", lambda t: t.add_(mg.tensor(other), alpha=2), a + 2 * other),
        ("sub_", lambda t: t.sub_(1.5), a - 1.5),
        ("sub_ alpha", lambda t: t.sub_(mg.tensor(other), alpha=3), a - 3 * other),
        ("mul_", lambda t: t.mul_(mg.tensor(other)), a * other),
        ("div_", lambda t: t.div_(4.0), a / 4.0),
        ("zero_", lambda t: t.zero_(), np.zeros_like(a)),
        ("fill_", lambda t: t.fill_(3.25), np.full_like(a, 3.25)),
        ("copy_", lambda t: t.copy_(mg.tensor(other)), np.broadcast_to(other, a.shape)),
        ("copy_ f64", lambda t: t.copy_(mg.tensor(a * 2, dtype=mg.float64)), a * 2),
        ("masked_fill_", lambda t: t.masked_fill_(mg.tensor(mask), -9.0), np.where(mask, -9.0, a)),
        ("clamp_", lambda t: t.clamp_(-1.0, 4.0), np.clip(a, -1.0, 4.0)),
        ("clamp_ min", lambda t: t.clamp_(min=0.0), np.clip(a, 0.0, None)),
    ]


@pytest.mark.parametrize("case", range(len(_inplace_cases()[1])), ids=[c[0] for c in _inplace_cases()[1]])
def test_inplace_ops(case):
    a, cases = _inplace_cases()
    name, op, expected = cases[case]
    t = mg.tensor(a)
    storage, version = t.data, t._version.value
    out = op(t)
    assert out is t, f"{name} must return self"
    assert t.data is storage, f"{name} must write into the existing storage"
    assert t.dtype is mg.float32
    np.testing.assert_allclose(t.numpy(), expected.astype(np.float32), rtol=1e-6)
    assert t._version.value > version


def test_inplace_ops_under_no_grad_on_a_parameter():
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    version = w._version.value
    with mg.no_grad():
        w.mul_(3.0)
        w.add_(1.0)
    assert w.requires_grad and w.is_leaf
    assert w.tolist() == [4.0, 7.0]
    assert w._version.value == version + 2


def test_setitem():
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    t = mg.tensor(a)
    storage, version = t.data, t._version.value
    t[0] = 100.0
    t[1, 2:] = mg.tensor([-1.0, -2.0])
    t[:, 0] = mg.tensor([7.0, 8.0, 9.0])
    t[mg.tensor([2]), mg.tensor([1])] = 55.0
    mask = mg.tensor(np.arange(12).reshape(3, 4) % 5 == 4)
    t[mask] = 0.5
    expected = a.copy()
    expected[0] = 100.0
    expected[1, 2:] = [-1.0, -2.0]
    expected[:, 0] = [7.0, 8.0, 9.0]
    expected[[2], [1]] = 55.0
    expected[np.arange(12).reshape(3, 4) % 5 == 4] = 0.5
    np.testing.assert_array_equal(t.numpy(), expected)
    assert t.data is storage
    assert t._version.value == version + 5
    ti = mg.tensor([1, 2, 3])
    ti[0] = 9
    assert ti.tolist() == [9, 2, 3] and ti.dtype is mg.int64


def test_iadd_under_no_grad_preserves_identity():
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    g = mg.tensor([0.5, 0.5])
    ident, storage, version = id(w), w.data, w._version.value
    with mg.no_grad():
        w += g
        w -= g * 2.0
        w *= 4.0
        w /= 2.0
    assert id(w) == ident and w.data is storage
    assert w._version.value == version + 4
    np.testing.assert_allclose(w.detach().numpy(), ((np.array([1.0, 2.0]) + 0.5 - 1.0) * 4.0) / 2.0)


def test_inplace_cannot_change_dtype_or_shape():
    t = mg.tensor([1, 2])
    with pytest.raises(TypeError, match="float32"):
        t.add_(1.5)
    f = mg.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        f.add_(mg.ones(2, 2))


def test_writes_through_views_reach_the_base():
    a = mg.tensor(np.arange(6.0, dtype=np.float32))
    a[2].fill_(-1.0)
    a.reshape(2, 3)[1].mul_(10.0)
    a[:2].zero_()
    expected = np.arange(6.0, dtype=np.float32)
    expected[2] = -1.0
    expected[3:] *= 10.0
    expected[:2] = 0.0
    np.testing.assert_array_equal(a.numpy(), expected)


# ---- indexing (read) --------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [
    0, -1, (1, 2), slice(1, None), (slice(None), 1), (Ellipsis, 0), (None, 0), slice(None, None, 2),
    ([0, 2],), ([0, 0, 1], [1, 2, 3]), (slice(None), [3, 0]),
])
def test_getitem_matches_numpy(index):
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    t = mg.tensor(a)
    np.testing.assert_array_equal(t[index].numpy(), a[index])
    assert t[index].shape == np.asarray(a[index]).shape


def test_getitem_bool_mask_matches_numpy():
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    m = a % 3 == 0
    np.testing.assert_array_equal(mg.tensor(a)[mg.tensor(m)].numpy(), a[m])
    rows = np.array([True, False, True])
    np.testing.assert_array_equal(mg.tensor(a)[mg.tensor(rows)].numpy(), a[rows])


# ---- Python protocol ------------------------------------------------------------------------------

def test_bool():
    assert bool(mg.tensor(1.0)) is True
    assert bool(mg.tensor([0])) is False
    assert bool(mg.tensor([True])) is True
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(mg.tensor([1.0, 2.0]))


def test_len_and_iter():
    t = mg.tensor([[1, 2], [3, 4], [5, 6]])
    assert len(t) == 3
    rows = list(t)
    assert len(rows) == 3 and all(isinstance(r, mg.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(TypeError):
        len(mg.tensor(1.0))
    with pytest.raises(TypeError):
        iter(mg.tensor(1.0))


def test_float_int_index():
    assert float(mg.tensor([2.5])) == 2.5
    assert int(mg.tensor(3.9)) == 3
    assert int(mg.tensor(-3.9)) == -3
    assert math.isclose(float(mg.tensor(1, dtype=mg.float64) / 3), 1 / 3, rel_tol=1e-7)
    assert [10, 20, 30][mg.tensor(1)] == 20  # __index__
    with pytest.raises(ValueError):
        float(mg.tensor([1.0, 2.0]))
