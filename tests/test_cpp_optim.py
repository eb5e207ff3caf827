"""The C++ multi-tensor optimizer steps (minigrad._C, cpp/optim.cpp) against the NumPy reference.

sgd_foreach_ and adam_foreach_ step a list of parameters at once; the oracle is numpy_ref's
single-tensor step on each parameter in turn. The kernels do numpy_ref's operations in its order and
rounding (no FMA contraction), so results must be equal bit for bit: for every option (momentum,
dampening, Nesterov, weight decay of both kinds, amsgrad, maximize), float32 and float64, every version
of the kernels this CPU runs (AVX-512, AVX2, portable), over several steps (SGD's first step, per-tensor
step counts), on lists that mix odd sizes, size 1, 0-d, empty and big parameters (above the size where
threads start, and across the kernel's chunks), strided gradients, large magnitudes, infinities and nans.
Tensors the kernels do not take (other dtypes, mixed dtypes, strided parameters or state) go to the
reference's single-tensor step. Then: 1 vs 2 threads bitwise, the distance to the Numba kernels (which
fuse multiply-adds), errors, and the optimizers' use of the foreach primitives.
"""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend
from minigrad.backend import numpy_ref

_C = pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built "
                         "(needs a C++17 compiler with OpenMP at install time)")
from minigrad.backend import cpp  # noqa: E402  (needs _C)
from cpp_support import simd_kernel as kernel  # noqa: E402,F401  (a fixture)

# odd sizes around the vector widths, size 1, 0-d, empty, a chunk-crossing one (the kernels' chunks are
# 2^14 elements), and enough elements in all (> 2^15) that the kernels start threads
SHAPES = [(37,), (1,), (), (0,), (5, 7), (128,), (3, 0, 2), (130, 257), (17,), (2, 3, 5), (9000,)]

SGD_OPTIONS = [  # momentum, dampening, weight_decay, nesterov, maximize
    (0.0, 0.0, 0.0, False, False), (0.0, 0.0, 0.05, False, True), (0.9, 0.0, 0.0, False, False),
    (0.9, 0.3, 0.01, False, True), (0.9, 0.0, 0.05, True, False), (0.5, 0.1, 0.0, False, False),
]
ADAM_OPTIONS = [  # weight_decay, decoupled, amsgrad, maximize
    (0.0, False, False, False), (0.1, False, False, False), (0.1, True, False, False), (0.1, False, True, False),
    (0.01, True, True, True), (0.0, False, True, True),
]
BETAS = [(0.9, 0.999), (0.5, 0.8)]


def strided(x):
    """A non-contiguous view equal to x: every other element of a twice-as-long last dim."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],) if x.ndim else (2,), x.dtype)
    view = wide[..., ::2] if x.ndim else wide[::2].reshape(())
    view[...] = x
    return view


def make_tensors(rng, dtype, shapes=SHAPES, scale=1.0, strided_grads=()):
    """Parameters, and per step a list of gradients (those at positions in strided_grads strided)."""
    params = [np.array(rng.standard_normal(s) * scale, dtype) for s in shapes]

    def grads():
        gs = [np.array(rng.standard_normal(s) * scale, dtype) for s in shapes]
        return [strided(g) if i in strided_grads else g for i, g in enumerate(gs)]
    return params, [grads() for _ in range(3)]


def zeros(params):
    return [np.zeros_like(p) for p in params]


def copies(arrays):
    return None if arrays is None else [a.copy() for a in arrays]


def assert_same(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (i, g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_array_equal(g, w, err_msg=f"tensor {i}", strict=True)


def sgd_steps(foreach, params, grads_per_step, options, first_steps_per_step):
    """Steps of sgd_foreach_ (or of numpy_ref.sgd_step_ on each tensor when foreach is None) on copies;
    returns the parameters and buffers after them."""
    momentum = options[0]
    params, bufs = copies(params), zeros(params) if momentum else None
    for grads, first_steps in zip(grads_per_step, first_steps_per_step):
        if foreach is None:
            for i, (p, g, first) in enumerate(zip(params, grads, first_steps)):
                numpy_ref.sgd_step_(p, g, bufs[i] if bufs else None, 0.1, *options, first)
        else:
            foreach(params, grads, bufs, 0.1, *options, first_steps)
    return params + (bufs or [])


def adam_steps(foreach, params, grads_per_step, options, steps_per_step, betas=(0.9, 0.999)):
    weight_decay, decoupled, amsgrad, maximize = options
    params, m, v = copies(params), zeros(params), zeros(params)
    vmax = zeros(params) if amsgrad else None
    args = (1e-2, *betas, 1e-8, weight_decay, decoupled, amsgrad, maximize)
    for grads, steps in zip(grads_per_step, steps_per_step):
        if foreach is None:
            for i, (p, g, step) in enumerate(zip(params, grads, steps)):
                numpy_ref.adam_step_(p, g, m[i], v[i], vmax[i] if vmax else None, step, *args)
        else:
            foreach(params, grads, m, v, vmax, steps, *args)
    return params + m + v + (vmax or [])


def first_steps(n):
    """SGD's first_steps per step: a first step for all; then one tensor (2) starts later; then none."""
    return [[True] * n, [i == 2 for i in range(n)], [False] * n]


def adam_step_counts(n):
    """Per step, each tensor's step count: tensors at different counts (as after skipped steps)."""
    return [[1 + i % 4 for i in range(n)], [2 + i % 4 for i in range(n)], [3 + 7 * (i % 2) for i in range(n)]]


# ---- values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_sgd_equals_reference(kernel, dtype, options):
    params, grads = make_tensors(np.random.default_rng(1), dtype, strided_grads=(0, 5))
    if options[0] == 0:
        plan = [[False] * len(params)] * 3
    else:
        plan = first_steps(len(params))
    assert_same(sgd_steps(cpp.sgd_foreach_, params, grads, options, plan),
                sgd_steps(None, params, grads, options, plan))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("betas", BETAS, ids=str)
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
def test_adam_equals_reference(kernel, dtype, betas, options):
    params, grads = make_tensors(np.random.default_rng(2), dtype, strided_grads=(4, 7))
    plan = adam_step_counts(len(params))
    assert_same(adam_steps(cpp.adam_foreach_, params, grads, options, plan, betas),
                adam_steps(None, params, grads, options, plan, betas))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_large_and_small_magnitudes(kernel, dtype, scale):
    params, grads = make_tensors(np.random.default_rng(3), dtype, scale=scale)
    n = len(params)
    sgd = (0.9, 0.0, 0.05, True, True)
    assert_same(sgd_steps(cpp.sgd_foreach_, params, grads, sgd, first_steps(n)),
                sgd_steps(None, params, grads, sgd, first_steps(n)))
    adam = (0.1, True, True, False)
    assert_same(adam_steps(cpp.adam_foreach_, params, grads, adam, adam_step_counts(n)),
                adam_steps(None, params, grads, adam, adam_step_counts(n)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinities_and_nans(kernel, dtype):
    """They propagate as in NumPy: amsgrad's maximum keeps a nan of either operand."""
    params, grads = make_tensors(np.random.default_rng(4), dtype, shapes=[(40,), (7,)])
    grads[0][0][[3, 20]] = [np.nan, np.inf]
    grads[1][1][[0, 6]] = [-np.inf, np.nan]
    params[1][2] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        for options in [(0.1, True, True, False), (0.1, False, True, True)]:
            got = adam_steps(cpp.adam_foreach_, params, grads, options, adam_step_counts(2))
            assert_same(got, adam_steps(None, params, grads, options, adam_step_counts(2)))
            assert np.isnan(got[-2][3]) and np.isnan(got[-1][6])  # v_max stays nan
        options = (0.9, 0.0, 0.01, True, False)
        assert_same(sgd_steps(cpp.sgd_foreach_, params, grads, options, first_steps(2)),
                    sgd_steps(None, params, grads, options, first_steps(2)))


def test_mixed_dtypes_and_layouts_the_kernels_do_not_take(kernel):
    """float32 and float64 tensors in one list are both stepped in C++; float16, a float64 gradient of
    a float32 parameter, and strided parameters or state go to numpy_ref.sgd_step_ / adam_step_, in
    place (the results are still the reference's)."""
    rng = np.random.default_rng(5)
    shapes = [(33,), (6, 5), (9,), (4, 4), (20,), (3,)]
    params = [rng.standard_normal(s).astype(dt) for s, dt in
              zip(shapes, [np.float32, np.float64, np.float16, np.float32, np.float32, np.float64])]
    grads = [[rng.standard_normal(s).astype(p.dtype if i != 3 else np.float64) for i, (s, p) in
              enumerate(zip(shapes, params))] for _ in range(3)]
    params[4] = strided(params[4])  # a strided parameter

    def strided_state(arrays):  # tensor 5's state strided
        arrays[5] = strided(arrays[5])
        return arrays

    def run(foreach_sgd, foreach_adam):
        ps, bufs = copies(params), strided_state(zeros(params))
        for step, gs in enumerate(grads):
            foreach_sgd(ps, gs, bufs, 0.1, 0.9, 0.0, 0.01, True, False, [step == 0] * len(ps))
        qs, m, v, vmax = copies(params), zeros(params), strided_state(zeros(params)), zeros(params)
        for step, gs in enumerate(grads, start=1):
            foreach_adam(qs, gs, m, v, vmax, [step] * len(qs), 1e-2, 0.9, 0.999, 1e-8, 0.1, True, True, False)
        return ps + bufs + qs + m + v + vmax

    assert_same(run(cpp.sgd_foreach_, cpp.adam_foreach_), run(numpy_ref.sgd_foreach_, numpy_ref.adam_foreach_))
    with pytest.raises(ValueError, match="read-only"):  # a read-only parameter: the reference refuses it
        p = np.ones(3, np.float32)
        p.flags.writeable = False
        cpp.sgd_foreach_([p], [np.ones(3, np.float32)], None, 0.1, 0.0, 0.0, 0.0, False, False, [False])


def test_skipped_positions_are_reported():
    f32 = np.zeros(4, np.float32)
    skipped = _C.sgd_foreach_([f32.copy(), np.zeros(4, np.float16), f32.copy(), f32.copy()[::2]],
                              [f32, np.zeros(4, np.float16), np.zeros(4, np.float64), f32[::2]], None,
                              0.1, 0.0, 0.0, 0.0, False, False, [False] * 4)
    assert skipped == [1, 2, 3]


def test_empty_list():
    cpp.sgd_foreach_([], [], [], 0.1, 0.9, 0.0, 0.0, False, False, [])
    cpp.adam_foreach_([], [], [], [], None, [], 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_result_with_one_and_two_threads(kernel, restore_threads, dtype):
    """Bitwise equal: each element's update reads only that element, and the chunks do not depend on
    the thread count (300k elements: the kernels start threads)."""
    shapes = [(300, 1000), (129,), (1,), (70001,)]
    params, grads = make_tensors(np.random.default_rng(6), dtype, shapes=shapes)
    results = []
    for n in (1, 2):
        mg.set_num_threads(n)
        results.append(adam_steps(cpp.adam_foreach_, params, grads, (0.1, True, True, False),
                                  adam_step_counts(len(shapes)))
                       + sgd_steps(cpp.sgd_foreach_, params, grads, (0.9, 0.0, 0.0, True, False),
                                   first_steps(len(shapes))))
    assert_same(results[0], results[1])
    assert_same(results[1][:len(shapes)], adam_steps(None, params, grads, (0.1, True, True, False),
                                                     adam_step_counts(len(shapes)))[:len(shapes)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distance_to_the_numba_kernels(dtype):
    """The Numba kernels (numba_optim) fuse multiply-adds and may multiply by a reciprocal (fastmath
    'contract', 'arcp'), so they round differently from numpy_ref and the C++ kernels: after one step,
    each result is within 3 ulps of the magnitude of the terms it is computed from (measured: 2.1)."""
    numba_optim = pytest.importorskip("minigrad.backend.numba_optim")
    rng = np.random.default_rng(7)
    n, eps = 100_000, np.finfo(dtype).eps
    p, g, buf, m = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    v = (rng.standard_normal(n) ** 2).astype(dtype)
    results = []
    for module in (cpp, numba_optim):
        ps, bufs = [p.copy(), p.copy()], [buf.copy()]
        module.sgd_foreach_(ps[:1], [g], bufs, 0.1, 0.9, 0.3, 0.01, False, True, [False])
        state = [m.copy()], [v.copy()], [v.copy() * 2]
        module.adam_foreach_(ps[1:], [g], *state, [3], 1e-2, 0.9, 0.999, 1e-8, 0.1, False, True, False)
        results.append(ps + bufs + [s[0] for s in state])
    (sgd_p, adam_p, b, m1, v1, _), (sgd_p2, adam_p2, b2, m2, v2, _) = results
    d = dtype(0.01) * p - g  # maximize: the gradient is -g, plus weight decay
    terms_b = 0.9 * np.abs(buf) + 0.7 * np.abs(d)
    limits = [(sgd_p, sgd_p2, np.abs(p) + 0.1 * (0.01 * np.abs(p) + np.abs(g) + terms_b)),
              (b, b2, terms_b),
              (adam_p, adam_p2, np.abs(p) + np.abs(adam_p.astype(np.float64) - p)),
              (m1, m2, 0.9 * np.abs(m) + 0.1 * np.abs(g + 0.1 * p)),
              (v1, v2, 0.999 * v + 0.001 * (g + 0.1 * p) ** 2)]
    for mine, theirs, magnitude in limits:
        assert np.all(np.abs(mine.astype(np.float64) - theirs) <= 3 * eps * magnitude)


# ---- errors ------------------------------------------------------------------------------------------

def test_errors():
    p, g = np.zeros(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="grads has 2 entries, params has 1"):
        _C.sgd_foreach_([p], [g, g], None, 0.1, 0.0, 0.0, 0.0, False, False, [False])
    with pytest.raises(ValueError, match="first_steps has 0 entries"):
        _C.sgd_foreach_([p], [g], None, 0.1, 0.0, 0.0, 0.0, False, False, [])
    with pytest.raises(ValueError, match="momentum != 0 needs momentum_bufs"):
        _C.sgd_foreach_([p], [g], None, 0.1, 0.9, 0.0, 0.0, False, False, [True])
    with pytest.raises(ValueError, match=r"momentum_bufs\[0\] has shape \(4,\), params\[0\] has shape \(3,\)"):
        _C.sgd_foreach_([p], [g], [np.zeros(4, np.float32)], 0.1, 0.9, 0.0, 0.0, False, False, [True])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(3, 1\), params\[0\] has shape \(3,\)"):
        _C.sgd_foreach_([p], [g.reshape(3, 1)], None, 0.1, 0.0, 0.0, 0.0, False, False, [False])
    with pytest.raises(TypeError, match=r"params\[0\] is a list, not a NumPy array"):
        _C.sgd_foreach_([[0.0]], [g], None, 0.1, 0.0, 0.0, 0.0, False, False, [False])
    with pytest.raises(ValueError, match="step counts start at 1, got 0"):
        _C.adam_foreach_([p], [g], [p], [p], None, [0], 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, False)
    with pytest.raises(ValueError, match="max_exp_avg_sqs"):
        _C.adam_foreach_([p], [g], [p], [p], None, [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, False, True, False)
    for beta1, beta2 in ((1.0, 0.999), (0.9, 1.5), (-0.1, 0.999)):  # numpy_ref raises on 1 / 0 or sqrt(< 0)
        with pytest.raises(ValueError, match="betas must be in"):
            _C.adam_foreach_([p], [g], [p], [p], None, [1], 1e-3, beta1, beta2, 1e-8, 0.0, False, False, False)
    with pytest.raises(ValueError, match="exp_avg_sqs has 2 entries, params has 1"):
        _C.adam_foreach_([p], [g], [p], [p, p], None, [1], 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, False)


# ---- the optimizers ----------------------------------------------------------------------------------

def test_the_optimizers_step_a_group_with_one_foreach_call(monkeypatch):
    """SGD and Adam call the multi-tensor primitive once per param group (C++ by default), never the
    single-tensor one; parameters without a gradient are left out of the call."""
    calls = []

    class Recorder:  # a dispatch table that records which primitives are looked up
        def __init__(self, table):
            self.table = table

        def __getattr__(self, name):
            calls.append((name, self.table.chosen_backend[name]))
            return getattr(self.table, name)

    monkeypatch.delenv("MINIGRAD_BACKEND", raising=False)  # the default choice
    monkeypatch.setattr(backend, "_tables", {})  # rebuilt without it, dropped afterwards
    for module in (mg.optim.sgd, mg.optim.adam):
        monkeypatch.setattr(module, "dispatch", lambda device, real=module.dispatch: Recorder(real(device)))
    params = [mg.nn.Parameter(mg.randn(*s)) for s in [(3, 4), (5,), (), (2, 3)]]
    for p in params[:3]:
        p.grad = mg.randn(*p.shape)
    for opt in (mg.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], lr=0.1, momentum=0.9),
                mg.optim.AdamW(params)):
        opt.step()
    assert [name for name, _ in calls] == ["sgd_foreach_", "sgd_foreach_", "adam_foreach_"]
    assert {chosen for _, chosen in calls} == {"cpp"}
    assert backend.selected("sgd_foreach_") == backend.selected("adam_foreach_") == "cpp"
