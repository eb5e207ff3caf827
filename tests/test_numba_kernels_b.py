"""The Numba kernels for attention, conv2d, pooling and the LSTM / GRU cells against the NumPy reference.

Each row builds a primitive's arguments from a seeded generator, in float32 and float64; the Numba
primitive and its numpy_ref namesake get the same arguments and their outputs must match within
atol + 8 * eps * sqrt(n) * scale (tests/test_numba_kernels.py, `assert_matches`), where n is the
number of terms an output sums and `scale` bounds the sum of their magnitudes:

- conv2d and pooling: the reference run in float64 on absolute values (|x| conv |w| is exactly the
  sum of |terms| of each output);
- attention: the largest |value| of the row (an output row is an average of v rows, a gradient row a
  sum of products of O(1) probabilities), with n = Tk + D;
- the LSTM / GRU cells: |reference| (a handful of terms per element).

Max pooling must match to the bit (out, argmax). Fully masked attention rows are checked exactly:
output 0, logsumexp -inf, gradients 0. Then: gradient checks through the autograd with the Numba
backend forced, the thread-count test (1 and 2 threads give the same bits: work is split by rows,
planes and query blocks, never by thread), the default selection, and one compilation per dtype.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[numba]'): the Numba "
                            "CPU kernels are not available")

from minigrad import backend  # noqa: E402
from minigrad.backend import numba_attention, numba_conv, numba_cpu, numba_gemm, numba_rnn, numpy_ref  # noqa: E402
from minigrad.testing import gradcheck  # noqa: E402

from test_numba_kernels import DTYPES, assert_matches, assert_same_with_one_and_two_threads  # noqa: E402  (tests/ is on sys.path under pytest)

MODULES = (numba_attention, numba_conv, numba_rnn, numba_gemm)


def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def strided(x):
    """A non-contiguous view equal to x: every other element of a twice-as-long last dim."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


def heads_view(x):
    """x (B, H, T, D) as the non-contiguous view multi-head attention makes: (B, T, H, D) transposed."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


class Row(NamedTuple):
    id: str
    primitive: str
    build: Callable  # build(rng, dtype) -> the primitive's arguments
    scales: Callable  # (args, refs) -> [(scale, n) per output]
    exact: bool = False


ROWS: list[Row] = []


def _abs_scales(primitive, n_of):
    """Scales from the float64 reference on absolute values: each output's sum of |terms|."""
    def scales(args, refs):
        absolute = [np.abs(a).astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                    for a in args]
        out = getattr(numpy_ref, primitive)(*absolute)
        out = out if isinstance(out, tuple) else (out,)
        return [(o, n_of(args)) for o in out]
    return scales


# ---- attention ---------------------------------------------------------------------------------------------
# (B, H, Tq, Tk, D, Dv): T = 1, 7, 33, 65 (one block, partial blocks, several blocks), Tq != Tk both ways.

ATTENTION_SHAPES = {"1x1": (1, 1, 1, 1, 4, 3), "7x7": (2, 3, 7, 7, 5, 4), "33x65": (1, 2, 33, 65, 8, 3),
                    "65x33": (2, 1, 65, 33, 4, 6), "65x65": (2, 2, 65, 65, 16, 16), "7x130": (1, 2, 7, 130, 3, 5)}


def _mask(rng, kind, b, tq, tk, dtype):
    """An additive bias (or None): 'none', 'causal' (is_causal, no bias), 'float' (B, 1, Tq, Tk),
    'padding' (B, 1, 1, Tk) -inf on some keys, the last batch element fully masked, 'rows' (Tq, 1): -inf on
    some query rows (a bias constant along the keys), 'row_keys' (1, 1, Tq, Tk): -inf on whole query rows
    and scattered keys."""
    if kind in ("none", "causal"):
        return None
    if kind == "float":
        return normal(rng, (b, 1, tq, tk), dtype)
    if kind == "padding":
        bias = np.zeros((b, 1, 1, tk), dtype)
        bias[..., (tk + 1) // 2:] = -np.inf
        bias[-1] = -np.inf
        return bias
    if kind == "rows":
        return np.where(rng.random((tq, 1)) < 0.4, -np.inf, 0.5).astype(dtype)
    bias = np.where(rng.random((1, 1, tq, tk)) < 0.3, -np.inf, normal(rng, (1, 1, tq, tk), dtype))
    bias[..., ::3, :] = -np.inf
    return bias


def _attention_args(rng, dtype, shape, kind, layout):
    b, h, tq, tk, d, dv = shape
    q, k, v = normal(rng, (b, h, tq, d), dtype), normal(rng, (b, h, tk, d), dtype), normal(rng, (b, h, tk, dv), dtype)
    if layout == "heads":
        q, k, v = heads_view(q), heads_view(k), heads_view(v)
    return q, k, v, _mask(rng, kind, b, tq, tk, dtype), kind == "causal", 1 / math.sqrt(d)


def _attention_backward_args(rng, dtype, shape, kind, layout):
    q, k, v, bias, causal, scale = _attention_args(rng, dtype, shape, kind, layout)
    out, lse = numpy_ref.attention_forward(q, k, v, bias, causal, scale)
    return normal(rng, out.shape, dtype), q, k, v, out, lse, bias, causal, scale


def _row_max_scales(n_of):
    def scales(args, refs):
        return [(np.max(np.where(np.isfinite(r), np.abs(r), 0), axis=-1, keepdims=True), n_of(args))
                for r in refs]
    return scales


for _name, _shape in ATTENTION_SHAPES.items():
    for _kind in ("none", "causal", "float", "padding", "rows", "row_keys"):
        for _layout in ("contiguous", "heads"):
            if _layout == "heads" and _kind not in ("none", "causal"):
                continue
            _tag = f"{_name}-{_kind}-{_layout}"
            ROWS += [
                Row(f"attention_forward-{_tag}", "attention_forward",
                    lambda rng, dt, s=_shape, m=_kind, lay=_layout: _attention_args(rng, dt, s, m, lay),
                    _row_max_scales(lambda a: a[1].shape[2] + a[0].shape[3])),
                Row(f"attention_backward-{_tag}", "attention_backward",
                    lambda rng, dt, s=_shape, m=_kind, lay=_layout: _attention_backward_args(rng, dt, s, m, lay),
                    _row_max_scales(lambda a: a[2].shape[2] + a[1].shape[2] + a[1].shape[3])),
            ]

# ---- conv2d -------------------------------------------------------------------------------------------------
# (N, C, H, W, O, kernel, stride, padding ((top, bottom), (left, right)), dilation, groups)

CONV_CONFIGS = {
    "3x3-pad1": (2, 3, 7, 9, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "stride2-asym-dil": (1, 4, 8, 5, 6, (2, 3), (2, 1), ((0, 1), (2, 0)), (1, 2), 2),
    "1x1": (3, 2, 5, 5, 2, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "groups3-stride23": (2, 6, 9, 11, 6, (3, 2), (2, 3), ((1, 2), (1, 1)), (2, 1), 3),
    "1-pixel": (1, 1, 1, 1, 1, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "pad-wider-than-stride": (2, 2, 4, 4, 4, (3, 3), (3, 3), ((2, 2), (2, 2)), (1, 1), 2),
    "depthwise": (2, 4, 6, 6, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    "big": (8, 16, 16, 16, 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
}


def _conv_args(rng, dtype, config, layout, with_dout):
    n, c, h, w, o, k, s, p, d, g = config
    x, weight = normal(rng, (n, c, h, w), dtype), normal(rng, (o, c // g) + k, dtype)
    if layout == "strided":
        x = strided(x)
    geometry = (s, p, d, g)
    if not with_dout:
        return (x, weight) + geometry
    dout = normal(rng, numpy_ref.conv2d_forward(x, weight, *geometry).shape, dtype)
    return (dout, x, weight) + geometry


for _name, _config in CONV_CONFIGS.items():
    for _layout in ("contiguous", "strided"):
        _k = _config[5][0] * _config[5][1] * _config[1] // _config[9]
        ROWS += [
            Row(f"conv2d_forward-{_name}-{_layout}", "conv2d_forward",
                lambda rng, dt, c=_config, lay=_layout: _conv_args(rng, dt, c, lay, False),
                _abs_scales("conv2d_forward", lambda a, k=_k: k)),
            Row(f"conv2d_backward-{_name}-{_layout}", "conv2d_backward",
                lambda rng, dt, c=_config, lay=_layout: _conv_args(rng, dt, c, lay, True),
                _abs_scales("conv2d_backward", lambda a: a[0].shape[0] * a[0].shape[2] * a[0].shape[3])),
        ]

# ---- pooling ------------------------------------------------------------------------------------------------
# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)

POOL_CONFIGS = {
    "3x3-s2-p1": (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), (1, 1), False),
    "3x3-s2-p1-ceil": (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), (1, 1), True),
    "2x3-dil-ceil": (1, 2, 5, 6, (2, 3), (1, 2), (1, 0), (2, 1), True),
    "2x2-s2": (1, 1, 4, 4, (2, 2), (2, 2), (0, 0), (1, 1), False),
    "overlapping-dil2": (2, 2, 9, 9, (3, 2), (1, 1), (1, 1), (2, 2), True),
    "big": (16, 32, 16, 16, (3, 3), (2, 2), (1, 1), (1, 1), False),
}


def _pool_input(rng, dtype, config, values):
    n, c, h, w = config[:4]
    if values == "ties":  # few distinct values: the first max must win
        return rng.integers(-2, 2, (n, c, h, w)).astype(dtype)
    x = normal(rng, (n, c, h, w), dtype)
    if values == "specials":  # a window of -inf (its first real element is the argmax) and a nan
        x[0, 0, :3, :3] = -np.inf
        x[-1, -1, 1, 1] = np.nan
    return x


def _max_pool_backward_args(rng, dtype, config, values):
    x = _pool_input(rng, dtype, config, values)
    out, argmax = numpy_ref.max_pool2d_forward(x, *config[4:])
    return normal(rng, out.shape, dtype), argmax, x.shape


def _avg_args(rng, dtype, config, include_pad, with_dout):
    x = _pool_input(rng, dtype, config, "normal")
    kernel, stride, padding, _, ceil = config[4:]
    if not with_dout:
        return x, kernel, stride, padding, ceil, include_pad
    out = numpy_ref.avg_pool2d_forward(x, kernel, stride, padding, ceil, include_pad)
    return normal(rng, out.shape, dtype), x.shape, kernel, stride, padding, ceil, include_pad


for _name, _config in POOL_CONFIGS.items():
    _window = _config[4][0] * _config[4][1]
    for _values in ("normal", "ties", "specials"):
        ROWS += [
            Row(f"max_pool2d_forward-{_name}-{_values}", "max_pool2d_forward",
                lambda rng, dt, c=_config, v=_values: (_pool_input(rng, dt, c, v),) + c[4:],
                lambda args, refs: [(None, 1)] * 2, exact=True),
            Row(f"max_pool2d_backward-{_name}-{_values}", "max_pool2d_backward",
                lambda rng, dt, c=_config, v=_values: _max_pool_backward_args(rng, dt, c, v),
                _abs_scales("max_pool2d_backward", lambda a, n=_window: n)),
        ]
    if _config[7] == (1, 1):  # avg pooling has no dilation
        for _include in (True, False):
            ROWS += [
                Row(f"avg_pool2d_forward-{_name}-pad{int(_include)}", "avg_pool2d_forward",
                    lambda rng, dt, c=_config, i=_include: _avg_args(rng, dt, c, i, False),
                    _abs_scales("avg_pool2d_forward", lambda a, n=_window: n)),
                Row(f"avg_pool2d_backward-{_name}-pad{int(_include)}", "avg_pool2d_backward",
                    lambda rng, dt, c=_config, i=_include: _avg_args(rng, dt, c, i, True),
                    _abs_scales("avg_pool2d_backward", lambda a, n=_window: n)),
            ]

# ---- LSTM and GRU cells ---------------------------------------------------------------------------------------
# (B, H); "big" is above numba_common.PARALLEL_MIN (the threaded path); pre-activations up to +-60 saturate.

CELL_SHAPES = {"1x1": (1, 1), "3x7": (3, 7), "bench": (32, 128), "big": (300, 33)}


def _cell_args(rng, dtype, shape, gates, layout, scale):
    b, h = shape
    gx, gh, state = normal(rng, (b, gates * h), dtype, scale), normal(rng, (b, gates * h), dtype, scale), \
        normal(rng, (b, h), dtype)
    if layout == "strided":
        gx, gh, state = strided(gx), strided(gh), strided(state)
    return gx, gh, state


def _lstm_backward_args(rng, dtype, shape, layout, scale):
    gx, gh, c = _cell_args(rng, dtype, shape, 4, layout, scale)
    _, cache = numpy_ref.lstm_cell_forward(gx, gh, c)
    return normal(rng, c.shape, dtype), normal(rng, c.shape, dtype), cache, c


def _gru_backward_args(rng, dtype, shape, layout, scale):
    gx, gh, h = _cell_args(rng, dtype, shape, 3, layout, scale)
    _, cache = numpy_ref.gru_cell_forward(gx, gh, h)
    return normal(rng, h.shape, dtype), cache, h


def _elementwise_scales(args, refs):
    return [(np.abs(r), 4) for r in refs]


for _name, _shape in CELL_SHAPES.items():
    for _layout in ("contiguous", "strided"):
        for _scale in (2.0, 60.0):
            _tag = f"{_name}-{_layout}-x{_scale:g}"
            ROWS += [
                Row(f"lstm_cell_forward-{_tag}", "lstm_cell_forward",
                    lambda rng, dt, s=_shape, lay=_layout, sc=_scale: _cell_args(rng, dt, s, 4, lay, sc),
                    _elementwise_scales),
                Row(f"lstm_cell_backward-{_tag}", "lstm_cell_backward",
                    lambda rng, dt, s=_shape, lay=_layout, sc=_scale: _lstm_backward_args(rng, dt, s, lay, sc),
                    _elementwise_scales),
                Row(f"gru_cell_forward-{_tag}", "gru_cell_forward",
                    lambda rng, dt, s=_shape, lay=_layout, sc=_scale: _cell_args(rng, dt, s, 3, lay, sc),
                    _elementwise_scales),
                Row(f"gru_cell_backward-{_tag}", "gru_cell_backward",
                    lambda rng, dt, s=_shape, lay=_layout, sc=_scale: _gru_backward_args(rng, dt, s, lay, sc),
                    _elementwise_scales),
            ]


# ---- the kernel tests ---------------------------------------------------------------------------------------

def run_row(module, row: Row, dtype, seed: int = 0):
    """The row's outputs (a list) from `module`, and the arguments (built afresh from the seed)."""
    args = row.build(np.random.default_rng(seed), dtype)
    out = getattr(module, row.primitive)(*args)
    return list(out) if isinstance(out, tuple) else [out], args


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_kernel_matches_reference(row, dtype):
    got, _ = run_row(numba_cpu, row, dtype)
    with np.errstate(all="ignore"):  # the reference's inf - inf and 0 / 0 on masked rows and special inputs
        ref, args = run_row(numpy_ref, row, dtype)
        scales = row.scales(args, ref)
        assert len(got) == len(ref), f"{row.id}: {len(got)} outputs, reference {len(ref)}"
        for k, (g, r, (scale, n)) in enumerate(zip(got, ref, scales)):
            assert_matches(g, r, scale, n, dtype, row.exact, f"{row.id} [{np.dtype(dtype)}] output {k}")


def test_every_primitive_has_rows():
    """Every primitive numba_cpu takes from this file's modules has rows."""
    mine = {p for p in backend.PRIMITIVES if getattr(getattr(numba_cpu, p, None), "__module__", "") in
            {m.__name__ for m in MODULES}}
    assert mine == {row.primitive for row in ROWS}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["padding", "rows", "row_keys"])
def test_fully_masked_attention_rows_are_exactly_zero(kind, dtype):
    """A query row whose keys are all masked attends to nothing: output 0, lse -inf, no gradient."""
    rng = np.random.default_rng(1)
    q, k, v, bias, causal, scale = _attention_args(rng, dtype, ATTENTION_SHAPES["7x7"], kind, "contiguous")
    out, lse = numba_cpu.attention_forward(q, k, v, bias, causal, scale)
    empty = np.all(np.broadcast_to(bias, q.shape[:3] + k.shape[2:3]) == -np.inf, axis=-1)  # (B, H, Tq)
    assert empty.any() and not empty.all()
    assert np.all(out[empty] == 0) and np.all(lse[empty] == -np.inf) and np.all(np.isfinite(out))
    dout = normal(rng, out.shape, dtype)
    dq, dk, dv = numba_cpu.attention_backward(dout, q, k, v, out, lse, bias, causal, scale)
    assert np.all(dq[empty] == 0) and all(np.all(np.isfinite(g)) for g in (dq, dk, dv))


# ---- gradient checks through the autograd, with the Numba backend forced -------------------------------------

GRAD_CASES = ["attention_fused", "attention_leading_dims", "multihead_attention_forward", "conv2d", "conv1d",
              "Conv2d_layer", "max_pool2d", "avg_pool2d", "pool_layers", "lstm_cell_fused", "gru_cell_fused",
              "lstm_cell_fused_two_steps", "lstm_scan", "gru_scan", "lstm_forward", "gru_forward", "lstm_cell",
              "gru_cell"]
FUSED = ("attention_forward", "conv2d_forward", "max_pool2d_forward", "avg_pool2d_backward", "lstm_cell_backward",
         "gru_cell_forward")


def _grad_cases():
    import test_gradcheck  # the table of gradient-check rows
    by_name = {c.name: c for c in test_gradcheck.CASES}
    return [by_name[name] for name in GRAD_CASES]


@pytest.mark.parametrize("case", _grad_cases(), ids=GRAD_CASES)
@settings(max_examples=8)  # tests/test_gradcheck.py runs these cases too, on the default (Numba) selection
@given(data=st.data())
def test_gradcheck_with_numba_forced(case, data):
    args = data.draw(case.strategy(), label="args")
    with backend.use("numba"):
        assert {backend.selected(p) for p in FUSED} == {"numba"}
        assert gradcheck(case.fn, *args)


# ---- threads, selection, compilation ---------------------------------------------------------------------------

THREAD_ROW_IDS = ["attention_forward-65x65-causal-contiguous", "attention_backward-65x65-float-contiguous",
                  "conv2d_forward-big-contiguous", "conv2d_backward-big-contiguous", "max_pool2d_forward-big-normal",
                  "max_pool2d_backward-big-normal", "avg_pool2d_backward-big-pad0", "lstm_cell_forward-big-contiguous-x2",
                  "gru_cell_backward-big-contiguous-x2"]
THREAD_ROWS = [row for row in ROWS if row.id in THREAD_ROW_IDS]
assert len(THREAD_ROWS) == len(THREAD_ROW_IDS), "a THREAD_ROW_IDS entry names no row"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has fewer than 2 threads here")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row", THREAD_ROWS, ids=[r.id for r in THREAD_ROWS])
def test_same_results_with_one_and_two_threads(row, dtype, restore_threads):
    assert_same_with_one_and_two_threads(lambda: run_row(numba_cpu, row, dtype)[0])



def test_numba_is_the_default_for_these_primitives():
    for prim in ("max_pool2d_forward", "avg_pool2d_backward", "lstm_cell_forward", "gru_cell_backward"):
        assert backend.selected(prim) == "numba", prim
    # the C++ kernels (cpp/conv.cpp, cpp/attention.cpp) outrank these ones where the extension is built
    for prim in ("conv2d_forward", "conv2d_backward", "attention_forward", "attention_backward"):
        assert backend.selected(prim) == ("cpp" if "cpp" in backend.available("cpu") else "numba"), prim
    with backend.use("numpy"):
        assert backend.selected("lstm_cell_forward") == "numpy"


def test_one_compilation_per_dtype():
    """Every layout of the operands (views, broadcast biases of any shape, read-only arrays) reaches the
    kernels as the same types: after calls with all of them, no kernel has more than one signature per
    dtype (a second one would cost a compilation, seconds, in every new process without the disk cache)."""
    rng = np.random.default_rng(2)
    for dtype in DTYPES:
        for kind in ("none", "float", "padding", "rows"):
            args = list(_attention_backward_args(rng, dtype, ATTENTION_SHAPES["7x7"], kind, "heads"))
            args[1].flags.writeable = False
            numba_cpu.attention_forward(*args[1:4], *args[6:])
            numba_cpu.attention_backward(*args)
        for layout in ("contiguous", "strided"):
            numba_cpu.conv2d_backward(*_conv_args(rng, dtype, CONV_CONFIGS["groups3-stride23"], layout, True))
            numba_cpu.lstm_cell_backward(*_lstm_backward_args(rng, dtype, (3, 7), layout, 2.0))
    kernels = [obj for m in MODULES for obj in vars(m).values() if isinstance(obj, numba.core.dispatcher.Dispatcher)]
    assert kernels
    for kernel in kernels:  # (a constant argument of a call between kernels is a literal type: not counted)
        signatures = {tuple(numba.types.unliteral(t) for t in sig) for sig in kernel.signatures}
        dtypes = [next((t.dtype for t in sig if isinstance(t, numba.types.Array)), None) for sig in signatures]
        dtypes = [d for d in dtypes if d is not None]  # (helpers on scalars, e.g. index ranges, have none)
        assert len(dtypes) == len(set(dtypes)), f"{kernel.__name__}: {kernel.signatures}"
