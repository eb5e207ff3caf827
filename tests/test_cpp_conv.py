"""The C++ conv2d (minigrad._C, cpp/conv.cpp) against the NumPy reference.

The rows are the conv2d rows of the Numba kernels' table (tests/test_numba_kernels_b.py: strides, asymmetric
padding, dilation, groups, depthwise, 1x1, one pixel, strided inputs), plus shapes that reach the C++ code's
own cases: the unit-stride grid with wide padding and dilation, images wider than a GEMM panel, a batch
smaller than the thread count (the GEMMs then use the threads) and one not divisible into the weight
gradient's slices, and large-magnitude values. Each runs in float32 and float64 and with every GEMM
micro-kernel this CPU supports (the weight gradient's dot-product kernel follows the same choice), with the
tolerance of tests/test_numba_kernels.py (`assert_matches`: each output's sum of |terms| from the reference
run on absolute values). Then: gradient checks through the autograd with the C++ backend forced, the
thread-count test (1 and 2 threads give the same bits), the default selection, and errors.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import backend
from minigrad.backend import numpy_ref
from minigrad.testing import gradcheck

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import assert_cpp_is_default, gemm_kernel  # noqa: E402,F401  (a fixture)

import test_numba_kernels_b as table  # noqa: E402  (the conv2d rows; tests/ is on sys.path under pytest)
from test_numba_kernels import DTYPES, assert_matches  # noqa: E402

# (N, C, H, W, O, kernel, stride, padding ((top, bottom), (left, right)), dilation, groups), as the table's
CPP_CONFIGS = {
    "pad-wider-than-kernel": (2, 3, 5, 6, 4, (3, 3), (1, 1), ((3, 1), (0, 4)), (1, 1), 1),
    "dilated-unit-stride": (3, 2, 9, 10, 5, (3, 2), (1, 1), ((2, 2), (1, 3)), (2, 3), 1),
    "wide-image": (2, 3, 4, 70, 9, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "one-image": (1, 5, 12, 13, 20, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "nine-images-groups": (9, 4, 6, 5, 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    "stride2-wide": (3, 3, 9, 40, 7, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    "kernel-is-input": (2, 3, 4, 5, 6, (4, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
}


def _rows():
    rows = [row for row in table.ROWS if row.primitive in ("conv2d_forward", "conv2d_backward")]
    for name, config in CPP_CONFIGS.items():
        k = config[5][0] * config[5][1] * config[1] // config[9]
        rows += [
            table.Row(f"conv2d_forward-{name}", "conv2d_forward",
                      lambda rng, dt, c=config: table._conv_args(rng, dt, c, "contiguous", False),
                      table._abs_scales("conv2d_forward", lambda a, k=k: k)),
            table.Row(f"conv2d_backward-{name}", "conv2d_backward",
                      lambda rng, dt, c=config: table._conv_args(rng, dt, c, "contiguous", True),
                      table._abs_scales("conv2d_backward", lambda a: a[0].shape[0] * a[0].shape[2] * a[0].shape[3])),
        ]
    big = table.CONV_CONFIGS["big"]
    rows.append(table.Row("conv2d_backward-big-1e6", "conv2d_backward",  # large magnitudes: relative accuracy
                          lambda rng, dt: tuple(a * dt(1e6) if isinstance(a, np.ndarray) else a
                                                for a in table._conv_args(rng, dt, big, "contiguous", True)),
                          table._abs_scales("conv2d_backward", lambda a: a[0].shape[0] * 16 * 16)))
    return rows


ROWS = _rows()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_conv2d_matches_reference(row, dtype, gemm_kernel):
    got, _ = table.run_row(cpp, row, dtype)
    ref, args = table.run_row(numpy_ref, row, dtype)
    scales = row.scales(args, ref)
    assert len(got) == len(ref) == len(scales)
    for k, (g, r, (scale, n)) in enumerate(zip(got, ref, scales)):
        assert_matches(g, r, scale, n, dtype, False, f"{row.id} [{np.dtype(dtype)}, {gemm_kernel}] output {k}")


GRAD_CASES = ["conv2d", "conv1d", "Conv2d_layer"]


def _grad_cases():
    import test_gradcheck  # the table of gradient-check rows
    by_name = {c.name: c for c in test_gradcheck.CASES}
    return [by_name[name] for name in GRAD_CASES]


@pytest.mark.parametrize("case", _grad_cases(), ids=GRAD_CASES)
@settings(max_examples=10)
@given(data=st.data())
def test_gradcheck_with_cpp_forced(case, data):
    args = data.draw(case.strategy(), label="args")
    with backend.use("cpp"):
        assert backend.selected("conv2d_forward") == backend.selected("conv2d_backward") == "cpp"
        assert gradcheck(case.fn, *args)


THREAD_ROW_IDS = ["conv2d_backward-big-contiguous", "conv2d_forward-big-contiguous", "conv2d_backward-one-image",
                  "conv2d_backward-nine-images-groups", "conv2d_backward-stride2-wide"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row_id", THREAD_ROW_IDS)
def test_same_results_with_one_and_two_threads(row_id, dtype, restore_threads):
    """Work is split by image (forward, input gradient), by fixed slices of the batch (weight gradient) or, for
    a batch smaller than the thread count, by blocks of each GEMM's output: never an element's sum across
    threads. So 1 and 2 threads give the same bits."""
    (row,) = [r for r in ROWS if r.id == row_id]
    results = []
    for threads in (1, 2):
        mg.set_num_threads(threads)
        assert _C.get_num_threads() == threads
        results.append(table.run_row(cpp, row, dtype)[0])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_cpp_is_the_default(monkeypatch):
    assert_cpp_is_default(monkeypatch, ("conv2d_forward", "conv2d_backward"))


def test_other_dtypes_go_to_the_reference():
    x, w = np.ones((1, 2, 4, 4), np.float16), np.ones((3, 2, 3, 3), np.float16)
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    out = cpp.conv2d_forward(x, w, *geometry)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, numpy_ref.conv2d_forward(x, w, *geometry))


@pytest.mark.parametrize("x_shape, w_shape, groups, message", [
    ((2, 3, 5, 5), (4, 2, 3, 3), 1, "do not fit groups=1"),
    ((2, 3, 5), (4, 3, 3, 3), 1, "must be 4-D"),
    ((2, 3, 2, 2), (4, 3, 3, 3), 1, "does not fit the padded input"),
])
def test_bad_shapes_are_value_errors_naming_them(x_shape, w_shape, groups, message):
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        _C.conv2d_forward_f32(x, w, (1, 1), (0, 0, 0, 0), (1, 1), groups, None)
    with pytest.raises(ValueError, match=r"\(2, 3"):
        _C.conv2d_forward_f32(x, w, (1, 1), (0, 0, 0, 0), (1, 1), groups, None)


def test_backward_checks_the_output_shape():
    x, w = np.zeros((2, 3, 5, 5), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    dout = np.zeros((2, 4, 5, 5), np.float32)  # the output is (2, 4, 3, 3) without padding
    with pytest.raises(ValueError, match=r"dout \(2, 4, 5, 5\) is not the output shape"):
        _C.conv2d_backward_f32(dout, x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1, True, True)


@pytest.mark.parametrize("module", ["numpy_ref", "numba_conv", "cpp"])
@pytest.mark.parametrize("needs", [(True, False), (False, True), (False, False)])
def test_backward_computes_only_what_is_needed(module, needs):
    """needs = (dx, dweight) wanted: the others are None, the wanted ones equal the full backward's."""
    import importlib
    if module == "numba_conv":
        pytest.importorskip("numba", reason="numba is not installed: no Numba conv2d")
    prims = importlib.import_module(f"minigrad.backend.{module}")
    args = table._conv_args(np.random.default_rng(3), np.float64, table.CONV_CONFIGS["groups3-stride23"],
                            "contiguous", True)
    full = prims.conv2d_backward(*args)
    part = prims.conv2d_backward(*args, needs)
    for wanted, got, ref in zip(needs, part, full):
        if wanted:
            np.testing.assert_array_equal(got, ref)
        else:
            assert got is None


@pytest.mark.parametrize("module", ["numpy_ref", "numba_conv", "cpp"])
@pytest.mark.parametrize("config", ["3x3-pad1", "groups3-stride23", "big"])
def test_bias_is_added_per_output_channel(module, config):
    import importlib
    if module == "numba_conv":
        pytest.importorskip("numba", reason="numba is not installed: no Numba conv2d")
    prims = importlib.import_module(f"minigrad.backend.{module}")
    rng = np.random.default_rng(4)
    x, w, *geometry = table._conv_args(rng, np.float32, table.CONV_CONFIGS[config], "contiguous", False)
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    got = prims.conv2d_forward(x, w, *geometry, bias=bias)
    ref = numpy_ref.conv2d_forward(x, w, *geometry) + bias.reshape(-1, 1, 1)
    scale = numpy_ref.conv2d_forward(np.abs(x), np.abs(w), *geometry) + np.abs(bias).reshape(-1, 1, 1)
    assert_matches(got, ref.astype(np.float32), scale, w[0].size + 1, np.float32, False, f"{module} {config}")


def test_bias_that_does_not_match_is_a_value_error():
    x, w = np.zeros((2, 3, 5, 5), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"bias \(3,\) does not match weight \(4, 3, 3, 3\)"):
        _C.conv2d_forward_f32(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1, np.zeros(3, np.float32))


def test_empty_batch():
    """N = 0: an output of N = 0 and a zero weight gradient (as PyTorch), no crash."""
    x, w = np.zeros((0, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    out = cpp.conv2d_forward(x, w, *geometry)
    assert out.shape == (0, 3, 5, 5)
    dx, dw = cpp.conv2d_backward(np.zeros_like(out), x, w, *geometry)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros_like(w))


@pytest.mark.parametrize("w_shape, stride, message", [
    ((1, 1, 4, 1), (3, 1), "does not fit the padded input"),  # (2 - 4) // 3 + 1 = 0 rows, not 1 (C's truncation)
    ((1, 1, 1, 0), (1, 1), "at least 1 x 1"),
])
def test_kernels_that_do_not_fit_are_value_errors(w_shape, stride, message):
    x, w = np.ones((1, 1, 2, 2), np.float32), np.ones(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        _C.conv2d_forward_f32(x, w, stride, (0, 0, 0, 0), (1, 1000), 1, None)


def test_infinities_and_nans_reach_only_what_they_touch():
    """With unit stride the kernels compute on a grid whose columns past the output read real pixels; a nan in
    the input or an inf in the weight must still give the reference's nans (where they meet a zero of dout or
    of the padding: 0 * inf), and no others."""
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    x = np.ones((2, 2, 5, 6), np.float64)
    x[0, 1, 2, 5] = np.nan
    x[1, 0, 0, 0] = np.inf
    w = np.ones((3, 2, 3, 3), np.float64)
    w[1, 0, 1, 0] = np.inf
    dout = np.ones((2, 3, 5, 6), np.float64)
    dout[1, 2, 4, :] = 0
    got, ref = cpp.conv2d_backward(dout, x, w, *geometry), numpy_ref.conv2d_backward(dout, x, w, *geometry)
    with np.errstate(invalid="ignore"):
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
            np.testing.assert_allclose(np.where(np.isfinite(r), g, 0), np.where(np.isfinite(r), r, 0), rtol=1e-12)


def test_a_dtype_that_is_not_the_kernels_is_a_type_error():
    x, w = np.zeros((1, 1, 4, 4), np.float64), np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match="x is float64, expected float32"):
        _C.conv2d_forward_f32(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1, None)
