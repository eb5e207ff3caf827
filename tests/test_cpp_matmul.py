"""The C++ matmul (minigrad._C, cpp/gemm.cpp) against the NumPy reference.

One table of operand layouts drives the value tests, run for float32 and float64 and for every
micro-kernel this CPU supports (AVX-512, AVX2, scalar); then gradient checks through the autograd
with the C++ backend forced, and the thread-count test. tests/test_cpp_optional.py covers what
works with or without the extension: the thread settings, and the fallback to the reference.

Tolerance: a float32 dot product of length K accumulated in another order differs by about
sqrt(K) * eps * sum_k |a_ik b_kj| (rounding errors add like a random walk), so each element is
compared with atol + 8 * eps * sqrt(K) * (|A| @ |B|).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend
from minigrad.backend import numpy_ref
from minigrad.testing import gradcheck

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import assert_cpp_is_default, gemm_kernel as kernel  # noqa: E402,F401  (a fixture)

ATOL = {np.float32: 1e-5, np.float64: 1e-10}


def assert_matmul_close(got, a, b):
    ref = numpy_ref.matmul(a, b)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.size == 0:
        return
    dtype = ref.dtype.type
    k = a.shape[-1]
    scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(max(k, 1)) * scale
    err = np.abs(got.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (f"shapes {a.shape} @ {b.shape}: element {worst} is {got[worst]}, "
                                f"reference {ref[worst]}, tolerance {tol[worst]:.3g}")


def randn(*shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def transposed(x):
    """x's values as a view with the last two dims swapped in memory (F-order matrices)."""
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2)


def misaligned(x):
    """x's values in a view whose strides are not whole elements (a field of a packed record)."""
    rec = np.zeros(x.size, dtype=[("v", x.dtype), ("pad", np.uint8)])
    rec["v"] = x.ravel()
    return rec["v"].reshape(x.shape)


# How a and b are laid out in memory (the values stay the same); "misaligned" is left to the reference.
LAYOUTS = {
    "contiguous": lambda a, b: (a, b),
    "a_transposed": lambda a, b: (transposed(a), b),
    "b_transposed": lambda a, b: (a, transposed(b)),
    "both_transposed": lambda a, b: (transposed(a), transposed(b)),
    "strided": lambda a, b: (np.repeat(a, 2, axis=-1)[..., ::2], np.repeat(b, 3, axis=-2)[..., ::3, :]),
    "reversed": lambda a, b: (np.ascontiguousarray(a[..., ::-1, :])[..., ::-1, :],  # negative strides
                              np.ascontiguousarray(b[..., ::-1])[..., ::-1]),
    "misaligned": lambda a, b: (misaligned(a), misaligned(b)),
}
# Shapes of a and b: sizes straddle the micro-kernel tiles (14 x 32 and 6 x 16 for float32) and the
# cache blocks (KC = 256, MC = 224, NC = 4096).
SHAPES = [
    ((1, 1), (1, 1)),
    ((1, 7), (7, 1)),
    ((7, 1), (1, 33)),
    ((7, 1000), (1000, 33)),        # K over several KC blocks
    ((13, 17), (17, 19)),
    ((33, 65), (65, 47)),
    ((100, 200), (200, 300)),
    ((1000, 7), (7, 3)),            # tall-skinny
    ((2, 1000), (1000, 2)),
    ((3, 20), (20, 8500)),          # N over NC = 4096 even when split between 2 threads
    ((700, 129), (129, 95)),        # M over MC = 224 even when split between 2 threads
    ((0, 5), (5, 3)),               # zero-size
    ((4, 0), (0, 3)),               # K = 0: zeros
    ((4, 5), (5, 0)),
]
BATCHED = [
    ((2, 3, 4, 5), (2, 3, 5, 6)),
    ((2, 1, 4, 5), (3, 5, 6)),      # broadcast batch -> (2, 3, 4, 6)
    ((4, 5), (2, 5, 6)),
    ((3, 40, 50), (50, 30)),
    ((16, 20, 24), (16, 24, 28)),   # many small products: parallel over the batch
    ((0, 4, 5), (5, 6)),
    ((1, 1, 1), (5, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shapes", SHAPES + BATCHED, ids=str)
def test_matmul_matches_reference(kernel, dtype, layout, shapes):
    a = randn(*shapes[0], dtype=dtype, seed=1)
    b = randn(*shapes[1], dtype=dtype, seed=2)
    a, b = LAYOUTS[layout](a, b)
    assert_matmul_close(cpp.matmul(a, b), a, b)


def test_matmul_reads_strided_operands_in_place():
    """Transposed, strided, reversed and broadcast operands go to the kernel as they are (it returns
    the product); only strides that are not whole elements are left to the reference (None)."""
    a, b = randn(6, 5, dtype=np.float32, seed=3), randn(5, 4, dtype=np.float32, seed=4)
    for x, y in [(transposed(a), b), (a, transposed(b)), (np.repeat(a, 2, axis=1)[:, ::2], b[::-1][::-1]),
                 (np.broadcast_to(a[:1], a.shape), b), (a[::-1], b[:, ::-1])]:
        out = _C.matmul(x, y)
        assert out is not None
        assert_matmul_close(out, x, y)
    assert _C.matmul(misaligned(a), b) is None
    assert _C.matmul(a[0], b) is None  # 1-D: numpy_ref's rules


@pytest.mark.parametrize("a_dtype, b_dtype", [(np.int64, np.int64), (np.float32, np.float64),
                                               (np.float16, np.float16)])
def test_other_dtypes_fall_back_to_numpy(a_dtype, b_dtype):
    a = np.arange(6).reshape(2, 3).astype(a_dtype)
    b = np.arange(12).reshape(3, 4).astype(b_dtype)
    got = cpp.matmul(a, b)
    ref = numpy_ref.matmul(a, b)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_one_dim_operands_follow_numpy():
    a, v = randn(4, 3, dtype=np.float64, seed=5), randn(3, dtype=np.float64, seed=6)
    np.testing.assert_allclose(cpp.matmul(a, v), numpy_ref.matmul(a, v), atol=1e-12)
    np.testing.assert_allclose(cpp.matmul(v, a.T), numpy_ref.matmul(v, a.T), atol=1e-12)


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        cpp.matmul(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError):
        cpp.matmul(np.zeros((2, 2, 3), np.float32), np.zeros((3, 3, 5), np.float32))  # batch 2 vs 3


def test_non_finite_values_propagate_like_numpy():
    a = randn(20, 30, dtype=np.float32, seed=7)
    b = randn(30, 40, dtype=np.float32, seed=8)
    a[3, 4], b[5, 6] = np.inf, np.nan
    got, ref = cpp.matmul(a, b), numpy_ref.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


def test_cpp_is_the_default_cpu_matmul(monkeypatch):
    assert_cpp_is_default(monkeypatch, ("matmul",))


# ---- gradients through the autograd, with the C++ backend forced ---------------------------------

GRAD_SHAPES = [((3, 4), (4, 5)), ((1, 3), (3, 1)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)),
               ((2, 3, 4), (4,)), ((5, 2, 3), (3, 2))]


@pytest.mark.parametrize("shapes", GRAD_SHAPES, ids=str)
def test_matmul_gradcheck_with_cpp_backend(kernel, shapes):
    a = mg.tensor(randn(*shapes[0], dtype=np.float64, seed=9), requires_grad=True)
    b = mg.tensor(randn(*shapes[1], dtype=np.float64, seed=10), requires_grad=True)
    with backend.use("cpp"):
        assert backend.selected("matmul") == "cpp"
        gradcheck(lambda x, y: x @ y, a, b)
        if a.ndim >= 2 and b.ndim >= 2:  # transposed operands: backward then multiplies untransposed views
            gradcheck(lambda x, y: (y.transpose(-1, -2) @ x.transpose(-1, -2)), a, b)


# ---- threads ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((200, 300), (300, 100)),  # row blocks split among threads
                                    ((5, 100), (100, 500)),    # one row block: columns split instead
                                    ((16, 20, 24), (16, 24, 28))], ids=str)  # parallel over the batch
def test_same_result_with_one_and_two_threads(kernel, restore_threads, dtype, shapes):
    """Bitwise equal: every element is summed over k in the same order (KC blocks in order, one
    thread per output tile) whatever the number of threads; only which thread computes a tile changes."""
    a, b = randn(*shapes[0], dtype=dtype, seed=11), randn(*shapes[1], dtype=dtype, seed=12)
    results = []
    for n in (1, 2):
        mg.set_num_threads(n)
        results.append(cpp.matmul(a, b))
    np.testing.assert_array_equal(results[0], results[1])
    assert_matmul_close(results[1], a, b)
