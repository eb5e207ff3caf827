"""The Numba CPU kernels (minigrad/backend/numba_*.py) against the NumPy reference.

One table drives the kernel tests: each row builds the arguments of a primitive from a seeded
generator (odd shapes, masks, repeated indices, non-contiguous views, values up to +-1e4, infinities
and nans, sizes on both sides of numba_common.PARALLEL_MIN so that the one-thread and the threaded
paths both run), and every row runs in float32 and float64: the Numba primitive and its numpy_ref
namesake get identical arguments (built twice from the same seed, since some primitives write in
place), and their outputs must match. Then: the float32 exp / tanh / erf of numba_math in ulps,
gradient checks through the autograd with the Numba backend forced, the thread-count test, the
default selection, and minigrad without Numba.

Tolerance (DESIGN.md): atol + 8 * eps * scale, atol 1e-5 in float32 and 1e-10 in float64, scale |ref|
for elementwise results. An element that is a sum of n terms may differ by about sqrt(n) * eps *
sum |terms| between two summation orders (the kernels accumulate in float64, NumPy pairwise in the
input's dtype), so for those the scale is sqrt(n) * sum |terms|. Rows that compute exactly what the
reference computes, in the same order (max, argmax, embedding's scatter-add, dropout, bias +
residual), must match to the bit.
"""
from __future__ import annotations

import math
import subprocess
import sys
from typing import Callable, NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

numba = pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[numba]'): the Numba "
                            "CPU kernels are not available")

import minigrad as mg  # noqa: E402
from minigrad import backend  # noqa: E402
from minigrad.backend import numba_common, numba_cpu, numpy_ref  # noqa: E402
from minigrad.backend.numba_math import erf, exp, tanh  # noqa: E402
from minigrad.testing import gradcheck  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def kernels_on_every_size():
    """Run the kernels even on the small arrays that minigrad leaves to NumPy (numba_common.NUMPY_BELOW), so
    that every shape of the tables below tests a kernel. (Module scope: hypothesis's tests take no function-
    scoped fixtures.)"""
    before = numba_common.NUMPY_BELOW
    numba_common.NUMPY_BELOW = 0
    yield
    numba_common.NUMPY_BELOW = before


DTYPES = [np.float32, np.float64]
ATOL = {np.float32: 1e-5, np.float64: 1e-10}
BIG = 300  # rows of the "big" inputs: with 128 or more columns, over PARALLEL_MIN elements

# The modules whose primitives this file covers (numba_attention has its own tests).
MODULES = ["numba_reduce", "numba_norm", "numba_loss", "numba_embedding", "numba_elementwise", "numba_optim"]


# ---- argument builders -------------------------------------------------------------------------------

def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def contiguous(x):
    """x itself (the layout the kernels prefer)."""
    return x


def strided(x):
    """A non-contiguous view equal to x: every other column of a twice-as-wide array."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


def transposed(x):
    """A non-contiguous view equal to x (2-D): the transpose of a C-contiguous copy of x.T."""
    return np.ascontiguousarray(x.T).T


def specials(x):
    """x with a nan, a +inf and a -inf planted (a copy)."""
    x = x.copy()
    flat = x.reshape(-1)
    flat[[0, flat.size // 2, -1]] = [np.nan, np.inf, -np.inf]
    return x


class Row(NamedTuple):
    id: str
    primitive: str
    build: Callable  # build(rng, dtype) -> the primitive's arguments
    scales: Callable | None = None  # (args, refs) -> [(scale, n) per output]; None: (|ref|, 1) each
    exact: bool = False  # must match the reference to the bit
    call: Callable | None = None  # call(fn, args) -> outputs; None: fn(*args)


ROWS: list[Row] = []


# ---- reductions ------------------------------------------------------------------------------------------

def _sum_scales(args, refs):
    x, axis, keepdims = args
    terms = np.abs(x.astype(np.float64))
    n = x.size // max(refs[0].size, 1)
    return [(np.sum(terms, axis=axis, keepdims=keepdims), n)]


REDUCTION_INPUTS = {
    "odd": lambda rng, dt: normal(rng, (7, 13, 5), dt),
    "strided": lambda rng, dt: strided(normal(rng, (7, 13, 5), dt)),
    "transposed": lambda rng, dt: normal(rng, (13, 5, 7), dt).transpose(2, 0, 1),
    "1e4": lambda rng, dt: normal(rng, (7, 13, 5), dt, 1e4),
    "ties": lambda rng, dt: rng.integers(-2, 3, (7, 13, 5)).astype(dt),
    "specials": lambda rng, dt: specials(normal(rng, (7, 13, 5), dt)),
    "masked_rows": lambda rng, dt: np.where(rng.random((7, 13, 1)) < 0.3, -np.inf, normal(rng, (7, 13, 5), dt)),
    "big": lambda rng, dt: normal(rng, (BIG, 129), dt),
}
AXES = [None, 0, 1, -1, (0, 2), (1, 2), (0, 1)]

for _name, _make in REDUCTION_INPUTS.items():
    for _axis in AXES:
        if _name == "big" and isinstance(_axis, tuple):
            continue
        for _keep in (False, True):
            def _build(rng, dt, make=_make, axis=_axis, keep=_keep):
                return make(rng, dt), axis, keep
            _tag = f"{_name}-axis{_axis}-keep{int(_keep)}".replace(" ", "")
            ROWS += [Row(f"sum-{_tag}", "sum", _build, _sum_scales),
                     Row(f"max-{_tag}", "max", _build, exact=True), Row(f"min-{_tag}", "min", _build, exact=True),
                     Row(f"logsumexp-{_tag}", "logsumexp", _build)]
            if not isinstance(_axis, tuple):
                ROWS += [Row(f"argmax-{_tag}", "argmax", _build, exact=True),
                         Row(f"argmin-{_tag}", "argmin", _build, exact=True)]

ROWS += [
    Row("sum-4d-axes023", "sum", lambda rng, dt: (normal(rng, (6, 5, 4, 7), dt), (0, 2, 3), False), _sum_scales),
    Row("sum-4d-axes13-keep", "sum", lambda rng, dt: (strided(normal(rng, (3, 5, 4, 7), dt)), (1, 3), True),
        _sum_scales),
    Row("sum-int64-reference", "sum", lambda rng, dt: (rng.integers(-9, 9, (4, 5)), 0, False), exact=True),
    Row("max-bool-reference", "max", lambda rng, dt: (rng.random((4, 5)) < 0.5, 1, True), exact=True),
    Row("sum-empty-reference", "sum", lambda rng, dt: (np.zeros((0, 3), dt), 0, False), exact=True),
]


# ---- softmax and log-softmax -----------------------------------------------------------------------------

def _masked(rng, shape, dt):
    """Scores with about a third masked to -inf, and one row (along the last axis) all -inf."""
    x = np.where(rng.random(shape) < 0.3, -np.inf, normal(rng, shape, dt, 3.0)).astype(dt)
    x[(0,) * (len(shape) - 1)] = -np.inf
    return x


SOFTMAX_INPUTS = {
    "odd": lambda rng, dt: normal(rng, (7, 13, 5), dt, 3.0),
    "strided": lambda rng, dt: strided(normal(rng, (7, 13, 5), dt)),
    "1e4": lambda rng, dt: normal(rng, (7, 13, 5), dt, 1e4),
    "masked": lambda rng, dt: _masked(rng, (7, 13, 5), dt),
    "specials": lambda rng, dt: specials(normal(rng, (7, 13, 5), dt)),
    "big": lambda rng, dt: normal(rng, (BIG, 129), dt, 3.0),
}


def _softmax_backward_scales(args, refs):
    dout, out, axis = args
    n = out.shape[axis]
    return [(np.abs(out) * (np.abs(dout) + np.sum(np.abs(dout * out), axis, keepdims=True)) * math.sqrt(n), 1)]


def _log_softmax_backward_scales(args, refs):
    dout, out, axis = args
    n = out.shape[axis]
    return [(np.abs(dout) + np.exp(out) * np.sum(np.abs(dout), axis, keepdims=True) * math.sqrt(n), 1)]


for _name, _make in SOFTMAX_INPUTS.items():
    for _axis in (0, 1, -1):
        if _name == "big" and _axis == 1:
            continue
        for _fwd in ("softmax", "log_softmax"):
            ROWS.append(Row(f"{_fwd}_forward-{_name}-axis{_axis}", f"{_fwd}_forward",
                            lambda rng, dt, make=_make, axis=_axis: (make(rng, dt), axis),
                            lambda args, refs: [(np.abs(refs[0]) + np.abs(args[0]), 1)]))
        if _name in ("odd", "strided", "big"):
            for _fwd, _scales in (("softmax", _softmax_backward_scales), ("log_softmax", _log_softmax_backward_scales)):
                def _build(rng, dt, make=_make, axis=_axis, fwd=_fwd):
                    x = make(rng, dt)
                    out = getattr(numpy_ref, f"{fwd}_forward")(x, axis)
                    return normal(rng, x.shape, dt), out, axis
                ROWS.append(Row(f"{_fwd}_backward-{_name}-axis{_axis}", f"{_fwd}_backward", _build, _scales))


# ---- layer norm ------------------------------------------------------------------------------------------

LN_INPUTS = {
    "odd": (7, 13), "one": (1, 1), "wide": (5, 257), "big": (BIG, 128),
}


def _layer_norm_args(rng, dt, shape, affine, scale, layout):
    x = normal(rng, shape, dt, scale) + dt(scale / 3)  # an offset: |mean| comparable to the std
    weight = normal(rng, shape[-1:], dt) if affine in ("both", "weight") else None
    bias = normal(rng, shape[-1:], dt) if affine == "both" else None
    return layout(x), weight, bias


def _ln_backward_scales(args, refs):
    dout, x, weight, mean, rstd = args
    xhat = np.abs((x - mean[:, None]) * rstd[:, None])
    g = np.abs(dout if weight is None else dout * weight)
    n = x.shape[1]
    dx = rstd[:, None] * (g + np.mean(g, 1, keepdims=True) * (1 + xhat)) * math.sqrt(n)
    dweight = np.sum(np.abs(dout) * xhat, 0) * math.sqrt(x.shape[0])
    dbias = np.sum(np.abs(dout), 0) * math.sqrt(x.shape[0])
    return [(dx, 1), (dweight, 1), (dbias, 1)]


for _name, _shape in LN_INPUTS.items():
    for _affine in ("both", "weight", "none"):
        for _scale, _layout in ((1.0, contiguous), (1e4, contiguous), (1.0, strided), (1.0, transposed)):
            _tag = f"{_name}-{_affine}-x{_scale:g}-{_layout.__name__}"
            ROWS.append(Row(f"layer_norm_forward-{_tag}", "layer_norm_forward",
                            lambda rng, dt, s=_shape, a=_affine, sc=_scale, lay=_layout:
                                _layer_norm_args(rng, dt, s, a, sc, lay) + (1e-5,)))

            def _build(rng, dt, s=_shape, a=_affine, sc=_scale, lay=_layout):
                x, weight, bias = _layer_norm_args(rng, dt, s, a, sc, lay)
                _, mean, rstd = numpy_ref.layer_norm_forward(x, weight, bias, 1e-5)
                return lay(normal(rng, s, dt)), x, weight, mean, rstd
            ROWS.append(Row(f"layer_norm_backward-{_tag}", "layer_norm_backward", _build, _ln_backward_scales))


# ---- cross-entropy ---------------------------------------------------------------------------------------

def _ce_args(rng, dt, n, c, ignore_index, scale, layout, masked, all_ignored):
    logits = normal(rng, (n, c), dt, scale)
    targets = rng.integers(0, c, n)
    targets[(rng.random(n) < 0.25) | all_ignored] = ignore_index
    if masked:  # a class no row targets, masked out with -inf (label smoothing then gives inf losses)
        targets[targets == c - 1] = 0
        logits[:, c - 1] = -np.inf
    return layout(logits), targets


CE_CASES = [  # (id, n, c, ignore_index, logit scale, layout, masked class, all rows ignored)
    ("odd", 23, 7, -100, 3.0, contiguous, False, False),
    ("ignore-class", 23, 7, 2, 3.0, contiguous, False, False),
    ("1e4", 23, 7, -100, 1e4, contiguous, False, False),
    ("transposed", 23, 7, -100, 3.0, transposed, False, False),
    ("masked-class", 23, 7, -100, 3.0, contiguous, True, False),
    ("all-ignored", 4, 5, 1, 1.0, contiguous, False, True),
    ("big", BIG, 129, -100, 3.0, contiguous, False, False),
]


def _ce_forward_scales(args, refs):
    logits = args[0]
    return [(np.abs(refs[0]) + np.max(np.abs(np.where(np.isfinite(logits), logits, 0)), 1), 1),
            (np.abs(refs[1]) + np.abs(logits), 1)]


def _ce_backward_scales(args, refs):
    dlosses, logprobs = args[:2]
    return [((np.exp(logprobs) + 1) * np.abs(dlosses)[:, None], 1)]


for _id, *_spec in CE_CASES:
    for _ls in (0.0, 0.1, 1.0):
        def _fwd(rng, dt, spec=tuple(_spec), ls=_ls):
            logits, targets = _ce_args(rng, dt, *spec)
            return logits, targets, spec[2], ls

        def _bwd(rng, dt, fwd=_fwd):
            logits, targets, ignore_index, ls = fwd(rng, dt)
            logprobs = numpy_ref.cross_entropy_forward(logits, targets, ignore_index, ls)[1]
            return normal(rng, targets.shape, dt), logprobs, targets, ignore_index, ls
        ROWS += [Row(f"cross_entropy_forward-{_id}-ls{_ls}", "cross_entropy_forward", _fwd, _ce_forward_scales),
                 Row(f"cross_entropy_backward-{_id}-ls{_ls}", "cross_entropy_backward", _bwd, _ce_backward_scales)]


# ---- embedding -------------------------------------------------------------------------------------------

def _indices(rng, v, shape):
    """Indices into v rows, with heavy repetition (a third of them the same row, v // 2)."""
    idx = rng.integers(0, v, shape)
    idx[rng.random(shape) < 0.33] = v // 2
    return idx


EMBEDDING_CASES = [  # (id, V, D, index shape)
    ("odd", 11, 70, (5, 6)), ("flat", 7, 3, (9,)), ("one", 1, 1, (4,)), ("wide", 9, 200, (2, 3, 4)),
    ("big", BIG, 128, (12, 64)),
]
for _id, _v, _d, _shape in EMBEDDING_CASES:
    ROWS.append(Row(f"embedding_forward-{_id}", "embedding_forward",
                    lambda rng, dt, v=_v, d=_d, s=_shape: (normal(rng, (v, d), dt), _indices(rng, v, s)), exact=True))
    for _pad in (None, _v // 2, 0):  # (v // 2: the most repeated row)
        for _layout in (contiguous, strided):
            ROWS.append(Row(
                f"embedding_backward-{_id}-pad{_pad}-{_layout.__name__}", "embedding_backward",
                lambda rng, dt, v=_v, d=_d, s=_shape, p=_pad, lay=_layout:
                    (lay(normal(rng, s + (d,), dt)), _indices(rng, v, s), v, p), exact=True))


# ---- fused elementwise and dropout -----------------------------------------------------------------------

ELEMENTWISE_INPUTS = {
    "odd": lambda rng, dt: normal(rng, (13, 29), dt, 3.0),
    "one": lambda rng, dt: normal(rng, (1, 1), dt),
    "1e4": lambda rng, dt: normal(rng, (13, 29), dt, 1e4),
    "specials": lambda rng, dt: specials(normal(rng, (13, 29), dt)),
    "strided": lambda rng, dt: strided(normal(rng, (13, 29), dt, 3.0)),
    "transposed": lambda rng, dt: transposed(normal(rng, (13, 29), dt, 3.0)),
    "big": lambda rng, dt: normal(rng, (BIG, 129), dt, 3.0),
}


def _gelu_sensitivity(v, approximate):
    """How much the GELU of v moves per unit error in t = tanh(u) or erf(v / sqrt 2): near t = +-1 both
    float32 implementations know t to about eps absolute only, and gelu = v (1 + t) / 2 and its derivative
    (which has v (1 - t^2) du/dv / 2) carry that error scaled by |v| and |v| du/dv. Where t is +-1 to the
    last bit (|u| > 10) both give exact results, so there the sensitivity is 0."""
    v = np.abs(v.astype(np.float64))
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)
        du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * v ** 2)
        return np.where(u < 10, 1 + v * (1 + du), 0)
    return np.where(v < 10, 1 + v, 0)


def _bias_gelu_forward_scales(args, refs):
    x, bias, approximate = args
    v = x if bias is None else x + bias
    return [(np.abs(refs[0]) + _gelu_sensitivity(v, approximate), 1)]


def _bias_gelu_backward_scales(args, refs):
    dout, x, bias, approximate = args
    v = x if bias is None else x + bias
    dx = np.abs(refs[0]) + np.abs(dout) * _gelu_sensitivity(v, approximate)
    return [(dx, 1), (None if bias is None else np.sum(dx, 0) * math.sqrt(dx.shape[0]), 1)]


for _name, _make in ELEMENTWISE_INPUTS.items():
    for _approx in ("none", "tanh"):
        for _has_bias in (True, False):
            def _bias(rng, dt, x, has):
                return normal(rng, x.shape[-1:], dt) if has else None

            def _fwd(rng, dt, make=_make, approx=_approx, has=_has_bias):
                x = make(rng, dt)
                return x, _bias(rng, dt, x, has), approx

            def _bwd(rng, dt, make=_make, approx=_approx, has=_has_bias):
                x = make(rng, dt)
                return make(rng, dt), x, _bias(rng, dt, x, has), approx
            _tag = f"{_name}-{_approx}-bias{int(_has_bias)}"
            ROWS += [Row(f"bias_gelu_forward-{_tag}", "bias_gelu_forward", _fwd, _bias_gelu_forward_scales),
                     Row(f"bias_gelu_backward-{_tag}", "bias_gelu_backward", _bwd, _bias_gelu_backward_scales)]
    ROWS.append(Row(f"bias_residual_forward-{_name}", "bias_residual_forward",
                    lambda rng, dt, make=_make: (make(rng, dt), normal(rng, make(rng, dt).shape[-1:], dt),
                                                 make(rng, dt)), exact=True))
    for _p in (0.0, 0.3, 1.0):
        ROWS += [
            Row(f"dropout_forward-{_name}-p{_p}", "dropout_forward",
                lambda rng, dt, make=_make, p=_p: (np.random.default_rng(7), make(rng, dt), p), exact=True),
            Row(f"dropout_backward-{_name}-p{_p}", "dropout_backward",
                lambda rng, dt, make=_make, p=_p: (make(rng, dt), strided(rng.random(make(rng, dt).shape) >= p), p),
                exact=True),
        ]

def _relu_input(rng, shape, dtype):
    """Normal values with exact zeros, -0.0, nan and +-inf mixed in (the edge cases of the comparison)."""
    x = normal(rng, shape, dtype).reshape(-1)
    x[::5], x[1::7], x[2::11], x[3::13], x[4::17] = 0, -0.0, np.nan, np.inf, -np.inf
    return x.reshape(shape)


# (below numba_common.PARALLEL_MIN elements the primitives are NumPy's; the two large shapes run the kernels)
for _shape, _layout in [((), contiguous), ((7,), contiguous), ((3, 5, 7), strided), ((BIG, 128), contiguous),
                        ((257, 129), strided)]:
    _tag = f"{_shape}-{_layout.__name__}"
    ROWS += [Row(f"relu-{_tag}", "relu", lambda rng, dt, s=_shape, lay=_layout: (lay(_relu_input(rng, s, dt)),),
                 None, exact=True),
             Row(f"relu_backward-{_tag}", "relu_backward",
                 lambda rng, dt, s=_shape, lay=_layout: (lay(normal(rng, s, dt)), lay(_relu_input(rng, s, dt))),
                 None, exact=True)]

for _shape in [(), (7,), (3, 5, 7)]:  # GELU without a bias takes any shape
    for _approx in ("none", "tanh"):
        ROWS += [Row(f"gelu_forward-{_shape}-{_approx}", "gelu_forward",
                     lambda rng, dt, s=_shape, a=_approx: (normal(rng, s, dt, 3.0), a),
                     lambda args, refs: _bias_gelu_forward_scales((args[0], None, args[1]), refs)),
                 Row(f"gelu_backward-{_shape}-{_approx}", "gelu_backward",
                     lambda rng, dt, s=_shape, a=_approx: (normal(rng, s, dt), normal(rng, s, dt, 3.0), a),
                     lambda args, refs: _bias_gelu_backward_scales((*args[:2], None, args[2]), refs + [None])[:1])]


# ---- optimizer steps (in place: the outputs are the arrays the steps wrote) -------------------------------

OPTIM_SHAPES = {"odd": (37,), "matrix": (5, 7), "strided": (6, 9), "big": (BIG, 128)}


def _param(rng, dt, name):
    p = normal(rng, OPTIM_SHAPES[name], dt)
    return strided(p) if name == "strided" else p


SGD_OPTIONS = [  # momentum, dampening, weight_decay, nesterov, maximize
    (0.0, 0.0, 0.0, False, False), (0.9, 0.0, 0.0, False, False), (0.9, 0.3, 0.01, False, True),
    (0.9, 0.0, 0.05, True, False),
]
ADAM_OPTIONS = [  # weight_decay, decoupled, amsgrad, maximize
    (0.0, False, False, False), (0.1, True, False, False), (0.1, False, True, False), (0.01, True, True, True),
]


def _sgd_steps(fn, args):
    param, grads, buf, options = args
    for step, grad in enumerate(grads):
        fn(param, grad, buf, 0.1, *options, step == 0)
    return [param, buf]


def _adam_steps(fn, args):
    param, grads, m, v, vmax, options = args
    weight_decay, decoupled, amsgrad, maximize = options
    for step, grad in enumerate(grads, start=1):
        fn(param, grad, m, v, vmax, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled, amsgrad, maximize)
    return [param, m, v, vmax]


for _name in OPTIM_SHAPES:
    for _options in SGD_OPTIONS:
        ROWS.append(Row(f"sgd_step_-{_name}-{_options}", "sgd_step_", lambda rng, dt, name=_name, o=_options: (
            _param(rng, dt, name), [normal(rng, OPTIM_SHAPES[name], dt) for _ in range(3)],
            np.zeros(OPTIM_SHAPES[name], dt) if o[0] else None, o), call=_sgd_steps))
    for _options in ADAM_OPTIONS:
        ROWS.append(Row(f"adam_step_-{_name}-{_options}", "adam_step_", lambda rng, dt, name=_name, o=_options: (
            _param(rng, dt, name), [normal(rng, OPTIM_SHAPES[name], dt) for _ in range(3)],
            np.zeros(OPTIM_SHAPES[name], dt), np.zeros(OPTIM_SHAPES[name], dt),
            np.zeros(OPTIM_SHAPES[name], dt) if o[2] else None, o), call=_adam_steps))


# ---- the kernel tests --------------------------------------------------------------------------------------

def _outputs(result) -> list:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def run_row(module, row: Row, dtype, seed: int = 0) -> list:
    """The row's outputs from `module` on freshly built arguments (the same for every module)."""
    args = row.build(np.random.default_rng(seed), dtype)
    fn = getattr(module, row.primitive)
    return _outputs(row.call(fn, args) if row.call else fn(*args)), args


def assert_matches(got, ref, scale, n, dtype, exact, what):
    """got == ref within ATOL + 8 * eps * sqrt(n) * scale (to the bit if exact), same shape and dtype,
    inf and nan in the same places."""
    assert (got is None) == (ref is None), f"{what}: {got!r} vs reference {ref!r}"
    if ref is None:
        return
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, \
        f"{what}: {got.shape} {got.dtype}, reference {ref.shape} {ref.dtype}"
    if exact or ref.dtype.kind not in "fc":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: nan positions")
    np.testing.assert_array_equal(got[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)],
                                  err_msg=f"{what}: infinities")
    tol = ATOL[dtype] + 8 * np.finfo(dtype).eps * math.sqrt(n) * np.where(finite, scale, 0)
    excess = np.where(finite, np.abs(got.astype(np.float64) - ref) - tol, 0)
    if np.any(excess > 0):
        worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
        pytest.fail(f"{what}: {np.sum(excess > 0)} elements off; worst at {worst}: got {got[worst]}, "
                    f"reference {ref[worst]}, tolerance {tol[worst]:.3g}")


def check_row(row: Row, dtype) -> None:
    got, _ = run_row(numba_cpu, row, dtype)
    ref, args = run_row(numpy_ref, row, dtype)
    assert len(got) == len(ref), f"{row.id}: {len(got)} outputs, reference {len(ref)}"
    scales = row.scales(args, ref) if row.scales else [(None, 1)] * len(ref)
    for k, (g, r, (scale, n)) in enumerate(zip(got, ref, scales)):
        if r is not None and scale is None:
            scale = np.abs(r)
        assert_matches(g, r, scale, n, dtype, row.exact, f"{row.id} [{np.dtype(dtype)}] output {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_kernel_matches_reference(row, dtype):
    with np.errstate(all="ignore"):  # the reference's inf - inf and 0 / 0 on the special inputs
        check_row(row, dtype)


def test_every_primitive_has_rows():
    """Every primitive numba_cpu exports from the modules of this file has rows in the table."""
    covered = {row.primitive for row in ROWS}
    provided = {p for p in backend.PRIMITIVES if callable(getattr(numba_cpu, p, None))}
    owners = {p: getattr(numba_cpu, p).__module__.rsplit(".", 1)[-1] for p in provided}
    assert set(owners.values()) >= set(MODULES), f"numba_cpu exports nothing from {set(MODULES) - set(owners.values())}"
    mine = {p for p, owner in owners.items() if owner in MODULES}
    assert mine <= covered, f"no rows for {sorted(mine - covered)}"


def test_rows_cover_the_threaded_path():
    big = [row for row in ROWS if "big" in row.id]
    assert {row.primitive for row in big} >= {"layer_norm_forward", "cross_entropy_backward", "adam_step_"}
    for row in big:
        args = row.build(np.random.default_rng(0), np.float32)
        largest = max(a.size for a in args if isinstance(a, np.ndarray))
        assert largest >= numba_common.PARALLEL_MIN, row.id


# ---- float32 exp, tanh, erf (numba_math) ----------------------------------------------------------------

@numba.njit
def _apply_math(out, x, which):
    for i in range(x.shape[0]):
        out[i] = exp(x[i]) if which == 0 else tanh(x[i]) if which == 1 else erf(x[i])


@pytest.mark.parametrize("which, reference, ulps", [(0, math.exp, 2), (1, math.tanh, 4), (2, math.erf, 4)],
                         ids=["exp", "tanh", "erf"])
def test_float32_math_against_libm(which, reference, ulps):
    """The float32 versions within a few ulps of the float64 libm result (erf: of 1, near 0 its absolute
    error counts); inf and nan as libm; the float64 versions are libm itself."""
    grid = np.concatenate([np.linspace(-110.0, 90.0, 400_001), [0.0, -0.0, 1e-30, -1e-30, 88.72, 88.73, -87.3,
                                                                  -103.9, -104.5, np.inf, -np.inf, np.nan]])
    x32 = grid.astype(np.float32)
    got = np.empty_like(x32)
    _apply_math(got, x32, which)
    ref = np.array([reference(v) if not math.isnan(v) else v for v in x32.astype(np.float64).tolist()])
    with np.errstate(over="ignore"):
        ref32 = ref.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref32))
    np.testing.assert_array_equal(got[np.isinf(ref32)], ref32[np.isinf(ref32)])
    ok = np.isfinite(ref32)
    spacing = np.spacing(np.float32(1.0) if which == 2 else np.abs(ref32[ok]).astype(np.float32))
    spacing = np.maximum(spacing, np.float32(2 ** -149))
    err = np.abs(got[ok].astype(np.float64) - ref[ok]) / spacing
    assert err.max() <= ulps, f"worst {err.max():.2f} ulps at x = {x32[ok][np.argmax(err)]!r}"
    got64 = np.empty_like(grid)
    _apply_math(got64, grid, which)
    np.testing.assert_array_equal(got64, [reference(v) if not math.isnan(v) else v for v in grid.tolist()])


# ---- gradient checks through the autograd, with the Numba backend forced -----------------------------------

GRAD_CASES = ["bias_gelu", "bias_residual", "layer_norm", "layer_norm_module", "embedding", "dropout_seeded",
              "cross_entropy_fused", "softmax", "log_softmax", "logsumexp", "sum", "amax", "amin", "max", "min",
              "gelu_exact", "gelu_tanh", "relu"]


def _grad_cases():
    import test_gradcheck  # the table of gradient-check rows (tests/ is on sys.path under pytest)
    by_name = {c.name: c for c in test_gradcheck.CASES}
    return [by_name[name] for name in GRAD_CASES]


@pytest.mark.parametrize("case", _grad_cases(), ids=GRAD_CASES)
@given(data=st.data())
def test_gradcheck_with_numba_forced(case, data):
    args = data.draw(case.strategy(), label="args")
    with backend.use("numba"):
        assert backend.selected("layer_norm_forward") == backend.selected("softmax_forward") == "numba"
        assert gradcheck(case.fn, *args)


# ---- threads, selection, and minigrad without Numba -------------------------------------------------------

THREAD_ROW_IDS = ["sum-big-axis0-keep0", "softmax_forward-big-axis0", "layer_norm_backward-big-both-x1-contiguous",
                  "cross_entropy_forward-big-ls0.1", "bias_gelu_backward-big-tanh-bias1",
                  "embedding_backward-big-padNone-contiguous", "adam_step_-big-(0.1, True, False, False)",
                  "relu_backward-(300, 128)-contiguous"]
THREAD_ROWS = [row for row in ROWS if row.id in THREAD_ROW_IDS]
assert len(THREAD_ROWS) == len(THREAD_ROW_IDS), "a THREAD_ROW_IDS entry names no row"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba has fewer than 2 threads here")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("row", THREAD_ROWS, ids=[r.id for r in THREAD_ROWS])
def test_same_results_with_one_and_two_threads(row, dtype, restore_threads):
    assert_same_with_one_and_two_threads(lambda: run_row(numba_cpu, row, dtype)[0])


def assert_same_with_one_and_two_threads(run):
    """The kernels split work by rows, column blocks or fixed row chunks (numba_common.row_chunks), never
    by thread, and each output element is computed in one fixed order: the results agree to the bit."""
    results = []
    for threads in (1, 2):
        mg.set_num_threads(threads)
        assert numba.get_num_threads() == threads  # minigrad.set_num_threads sets Numba's threads too
        results.append(run())  # the outputs of the kernel(s) of one row
    for one, two in zip(*results):
        if one is not None:
            np.testing.assert_array_equal(one, two)


def test_threads_are_the_openmp_ones():
    assert numba.threading_layer() == "omp"


def test_numba_is_the_default_below_cpp():
    order = backend.available("cpu")  # highest priority first
    assert order.index("numba") < order.index("numpy")
    if "cpp" in order:
        assert order.index("cpp") < order.index("numba")
    for prim in ("layer_norm_forward", "cross_entropy_backward", "embedding_backward", "adam_step_", "sum"):
        assert backend.selected(prim) == "numba"
    if "cpp" in backend.available("cpu"):
        assert backend.selected("softmax_forward") == "cpp"  # the C++ kernel outranks this one
    with backend.use("numpy"):
        assert backend.selected("layer_norm_forward") == "numpy"


def test_minigrad_without_numba():
    """With Numba hidden, minigrad imports, registers no numba backend and trains (in a fresh process)."""
    code = """if True:
        import sys
        sys.modules["numba"] = None  # as if not installed
        import minigrad as mg
        from minigrad import nn, backend
        assert "numba" not in backend.available("cpu"), backend.available("cpu")
        mg.set_num_threads(1)
        mg.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3))
        opt = mg.optim.AdamW(model.parameters(), lr=1e-2)
        x, y = mg.randn(16, 4), mg.randint(0, 3, (16,))
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print("ok", backend.selected("layer_norm_forward"))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "numpy"]


def test_small_arrays_are_left_to_numpy(monkeypatch):
    """Below NUMPY_BELOW elements ReLU and the reductions run NumPy's loops (no Numba call); from there on, the
    kernels."""
    from minigrad.backend import numba_elementwise, numba_reduce

    def kernel_called(*args):
        raise AssertionError("a Numba kernel ran")
    monkeypatch.setattr(numba_common, "NUMPY_BELOW", numba_common.PARALLEL_MIN)
    for module, name in [(numba_elementwise, "_relu"), (numba_elementwise, "_relu_backward"),
                         (numba_reduce, "_sum_rows"), (numba_reduce, "_sum_cols"), (numba_reduce, "_extreme_rows")]:
        monkeypatch.setattr(module, name, kernel_called)
    small = normal(np.random.default_rng(0), (3, 5, 7), np.float32)
    np.testing.assert_array_equal(numba_cpu.relu(small), numpy_ref.relu(small))
    np.testing.assert_array_equal(numba_cpu.relu_backward(small, small), numpy_ref.relu_backward(small, small))
    np.testing.assert_array_equal(numba_cpu.sum(small, (0, 2), False), numpy_ref.sum(small, (0, 2), False))
    np.testing.assert_array_equal(numba_cpu.max(small, 1, True), numpy_ref.max(small, 1, True))
    with pytest.raises(AssertionError, match="a Numba kernel ran"):
        numba_cpu.sum(normal(np.random.default_rng(0), (BIG, 128), np.float32), 1, False)
