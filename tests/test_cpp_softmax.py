"""The C++ softmax and log-softmax (minigrad._C, cpp/softmax.cpp) against the NumPy reference.

Every primitive (forward and backward) is compared with numpy_ref in float32 and float64, for every
version of the kernels this CPU runs (AVX-512, AVX2, portable), on row lengths around the vector
widths, non-last axes, non-contiguous inputs, values up to +-1e4 and rows with infinities and nans;
then the accuracy of the kernels' vector exp in ulps, gradient checks through the autograd with the
C++ backend forced, and the thread-count test.

Tolerance: the kernels sum a row in another order than NumPy (in vector lanes, then a tree), and a
sum of n terms in another order differs by about sqrt(n) * eps * sum |terms|, so each element is
compared with atol + 8 * eps * sqrt(n) * scale, scale the magnitude of what the element is computed
from (|ref| for softmax, |x| + |ref| for log-softmax, the products of the backward formulas).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend
from minigrad.backend import numpy_ref
from minigrad.testing import gradcheck
from softmax_support import softmax_error_scale  # tests/ is on sys.path under pytest

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import assert_cpp_is_default, simd_kernel as kernel  # noqa: E402,F401  (a fixture)

ATOL = {np.float32: 1e-5, np.float64: 1e-10}
PRIMITIVES = ["softmax_forward", "log_softmax_forward", "softmax_backward", "log_softmax_backward"]


def uniform(shape, dtype, seed, scale=1.0):
    return (np.random.default_rng(seed).uniform(-scale, scale, shape)).astype(dtype)


def inputs(name, x, axis, seed=0):
    """The arguments of primitive `name` built from x: x itself for forward; for backward a random
    upstream gradient and the forward output of x (what autograd passes)."""
    if name.endswith("forward"):
        return (x,)
    out = getattr(numpy_ref, name.replace("backward", "forward"))(x, axis)
    return uniform(x.shape, x.dtype, seed + 1), out


def assert_close(name, got, args, axis):
    ref = getattr(numpy_ref, name)(*args, axis)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{name}: nan positions differ")
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)],
                                  err_msg=f"{name}: infinities differ")
    if ref.size == 0:
        return
    dtype = ref.dtype.type
    n = ref.shape[axis] if ref.ndim else 1
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(n) * softmax_error_scale(name, args, ref, axis)
    with np.errstate(invalid="ignore"):
        excess = np.where(finite, np.abs(got.astype(np.float64) - ref) - tol, 0)  # <= 0: within tolerance
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    assert np.all(excess <= 0), (f"{name} of shape {ref.shape} along axis {axis}: element {worst} is "
                                f"{got[worst]}, reference {ref[worst]}, tolerance {tol[worst]:.3g}")


# ---- values -----------------------------------------------------------------------------------------

# (shape, axis): row lengths below, at and above the vector widths (4, 8 and 16 floats), one thread and
# several (above 2^15 elements), zero-size, 0-d, and axes other than the last.
SHAPES = [((1, 1), 1), ((3, 7), 1), ((5, 33), 1), ((64, 64), 1), ((40, 1000), 1), ((9, 4099), 1),
          ((2, 3, 16), 2), ((7,), 0), ((), 0), ((0, 5), 1), ((4, 0), 1),
          ((33, 6), 0), ((4, 5, 6), 1), ((1000, 3), 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("shape, axis", SHAPES, ids=str)
def test_matches_reference(kernel, dtype, name, shape, axis):
    x = uniform(shape, dtype, seed=1, scale=10)
    args = inputs(name, x, axis)
    assert_close(name, getattr(cpp, name)(*args, axis), args, axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax_forward", "log_softmax_forward"])
def test_large_values(kernel, dtype, name):
    """Values up to +-1e4: exp(x) overflows float64 past 709, so only the max shift keeps this finite."""
    x = uniform((50, 1000), dtype, seed=2, scale=1e4)
    x[:, 0] = 1e4  # ties at the max
    x[:, 1] = 1e4
    assert_close(name, getattr(cpp, name)(x, 1), (x,), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax_forward", "log_softmax_forward"])
@pytest.mark.parametrize("n", [1, 7, 33, 1000])
def test_rows_with_infinities_and_nans(kernel, dtype, name, n):
    """-inf entries get probability 0 (log: -inf); a row of all -inf gives nan, as PyTorch; +inf or nan
    anywhere in a row makes it all nan, as numpy_ref."""
    x = uniform((6, n), dtype, seed=3, scale=5)
    x[0, n // 2] = -np.inf
    x[1, :] = -np.inf
    x[2, -1] = np.inf
    x[3, 0] = np.nan
    x[4, ::2] = -np.inf
    got = getattr(cpp, name)(x, 1)
    assert_close(name, got, (x,), 1)
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all() and np.isnan(got[3]).all()
    if name == "softmax_forward" and n > 1:
        assert got[0, n // 2] == 0 and np.isfinite(got[5]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("layout", ["transposed", "strided", "reversed", "broadcast"])
def test_non_contiguous_inputs(kernel, dtype, name, layout):
    base = uniform((20, 30), dtype, seed=4, scale=10)
    x = {"transposed": base.T, "strided": base[::2, 1::3], "reversed": base[::-1, ::-1],
         "broadcast": np.broadcast_to(base[:1], (5, 30))}[layout]
    for axis in (0, 1):
        args = inputs(name, x, axis)
        if name.endswith("backward"):  # the upstream gradient and the forward output column-major
            args = tuple(np.asfortranarray(a) for a in args)
        assert_close(name, getattr(cpp, name)(*args, axis), args, axis)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_other_dtypes_fall_back_to_numpy(name):
    x = uniform((3, 4), np.float16, seed=5)
    args = inputs(name, x, 1)
    got, ref = getattr(cpp, name)(*args, 1), getattr(numpy_ref, name)(*args, 1)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_kernels_check_their_arguments():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"2-D.*\(3, 4, 1\)"):
        _C.softmax_forward(np.zeros((3, 4, 1), np.float32), x)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(4, 3\)"):
        _C.softmax_forward(x, np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="float32 and float64"):
        _C.log_softmax_forward(x, np.zeros((3, 4), np.float64))
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        _C.softmax_forward(np.zeros((3, 4), np.int64), np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.softmax_backward(x, x, np.zeros((4, 3), np.float32).T)
    with pytest.raises(ValueError, match="read-only"):
        _C.softmax_forward(np.broadcast_to(x, (3, 4)), x)
    with pytest.raises(TypeError):  # a list would be converted to a temporary array: refused
        _C.softmax_forward(x, [[0.0] * 4] * 3)


def test_cpp_is_the_default_cpu_softmax(monkeypatch):
    assert_cpp_is_default(monkeypatch, PRIMITIVES)


# ---- the vector exp ---------------------------------------------------------------------------------

# Largest error of the kernels' exp in units in the last place of e^x, as documented in cpp/softmax.cpp:
# under 1 ulp with FMA (AVX2, AVX-512), 1.25 ulp where each Horner step rounds twice (the portable
# version on x86-64: SSE2 has no FMA). Measured here: 0.93 / 0.87 ulp (float32 / float64) with FMA,
# 1.20 / 1.14 without.
EXP_MAX_ULP = {"avx512": 1.0, "avx2": 1.0, "portable": 1.25}


def ulp_error(got, x, dtype):
    """|got - e^x| / ulp(e^x) where e^x is finite in `dtype`, e^x in extended precision (long double)."""
    exact = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore"):
        rounded = exact.astype(dtype)
    finite = np.isfinite(rounded)
    return (np.abs(got[finite].astype(np.longdouble) - exact[finite]) / np.spacing(rounded[finite])).astype(
        np.float64), x[finite]


@pytest.mark.parametrize("dtype, lo, hi", [(np.float32, -104.0, 88.8), (np.float64, -746.0, 709.8)])
def test_exp_error_in_ulp(kernel, dtype, lo, hi):
    """Over the whole range where e^x is neither 0 nor inf once rounded, down into the subnormals,
    plus a dense sample of |x| < 1 (where the polynomial alone does the work)."""
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an 80-bit long double (x86) as the exact reference")
    rng = np.random.default_rng(6)
    x = np.concatenate([np.linspace(lo, hi, 1_000_001), rng.uniform(-1, 1, 1_000_000),
                        rng.uniform(lo, hi, 1_000_000)]).astype(dtype)
    got = np.empty_like(x)
    _C.vexp(got, x)
    err, xs = ulp_error(got, x, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= EXP_MAX_ULP[kernel], f"exp({xs[worst]!r}) is off by {err[worst]:.3f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(kernel, dtype):
    info = np.finfo(dtype)
    max_log = float(np.log(np.longdouble(info.max)))
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1.0, -1e30, 1e30, max_log * 1.0001, max_log * 0.9999,
                  np.log(float(info.smallest_subnormal)) - 1], dtype)
    got = np.empty_like(x)
    _C.vexp(got, x)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.longdouble)).astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[1:], ref[1:], rtol=2 * info.eps, atol=0)
    assert got[3] == 1 and got[4] == 1 and np.isinf(got[8]) and np.isfinite(got[9]) and got[10] == 0


# ---- gradients through the autograd, with the C++ backend forced ------------------------------------

@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((3, 5), -1), ((2, 3, 4), 1), ((4,), 0), ((2, 1, 3), 0), ((5, 2), 0)],
                         ids=str)
def test_gradcheck_with_cpp_backend(kernel, fn, shape, dim):
    x = mg.tensor(np.random.default_rng(7).standard_normal(shape) * 3, requires_grad=True)
    with backend.use("cpp"):
        assert backend.selected(f"{fn}_forward") == backend.selected(f"{fn}_backward") == "cpp"
        gradcheck(lambda t: getattr(t, fn)(dim), x)
        if x.ndim >= 2:  # a transposed (non-contiguous) input
            gradcheck(lambda t: getattr(t.transpose(0, -1), fn)(-1), x)


# ---- threads ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_same_result_with_one_and_two_threads(kernel, restore_threads, dtype, name):
    """Bitwise equal: each row is computed by one thread, in the same order, whatever the number of
    threads (300 x 1000 elements: above the size where the kernels start threads)."""
    x = uniform((300, 1000), dtype, seed=8, scale=10)
    args = inputs(name, x, 1)
    results = []
    for n in (1, 2):
        mg.set_num_threads(n)
        results.append(getattr(cpp, name)(*args, 1))
    np.testing.assert_array_equal(results[0], results[1])
    assert_close(name, results[1], args, 1)
