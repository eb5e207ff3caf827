"""Gradient checks of every differentiable op, driven by one table of cases.

Each case names an op, builds its arguments from hypothesis draws (float64 leaves that require grad,
plus plain values: dims, indices, masks), and gives the function under test. `test_gradcheck` runs
`minigrad.testing.gradcheck` (central differences on every element, output projected onto a seeded
random cotangent) on drawn examples of every case; `test_every_function_has_a_gradcheck` runs every
case once on its simplest example, collects the Function classes in the graphs it builds, and fails
naming any registered Function that no case reaches. A new op therefore needs a row here.

Inputs stay small (sides <= 3 or 4, at most 4 dims) since gradcheck perturbs every element, and away
from the points where an op is not differentiable: kinks (relu/abs at 0, clamp at its bounds), the edge
of a domain (log, sqrt, rsqrt, pow bases are positive), and ties (max/min/maximum/minimum).
"""
from __future__ import annotations

import importlib
import math
import pathlib
import pkgutil
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad.autograd import Function
from minigrad.ops import ToDevice
from minigrad.testing import GradcheckError, arrays, broadcastable_shapes, dims, gradcheck, shapes

from gradcheck_support import (  # tests/ is on sys.path under pytest
    NONEMPTY_SHAPE, SHAPE, Case, away_from, case_decorator, derive_shape, draw_leaf, leaf, reduced_count,
)

# ---- the table -----------------------------------------------------------------------------------

CASES: list[Case] = []
case = case_decorator(CASES)


# ---- elementwise binary, broadcasting --------------------------------------------------------------

def binary(a_kw=None, b_kw=None, b_offset=0.0, grads="both"):
    """Build two operands of broadcastable shapes; `grads` says which require grad ('both', 'a', 'b')."""
    def build(draw):
        sa, sb = draw(broadcastable_shapes(max_dims=3, max_side=3))
        a = draw(arrays(sa, **(a_kw or {})))
        b = draw(arrays(sb, **(b_kw or {}))) + b_offset
        return leaf(a, grads in ("both", "a")), leaf(b, grads in ("both", "b"))
    return build


NONZERO = dict(low=-2.0, high=2.0, kink_gap=0.5)  # |v| >= 0.5
POSITIVE = dict(low=0.3, high=2.5)
GRID = dict(distinct=True)  # values on a grid of step 0.003 ...
HALF_STEP = 0.0015  # ... so adding half a step to one operand makes every pair differ by >= 0.0015

CASES += [
    Case("add", binary(), lambda a, b: a + b),
    Case("add_fn_one_grad", binary(grads="b"), mg.add),
    Case("sub", binary(), lambda a, b: a - b),
    Case("sub_a_only", binary(grads="a"), lambda a, b: a - b),
    Case("sub_b_only", binary(grads="b"), lambda a, b: a.sub(b)),
    Case("mul", binary(), lambda a, b: a * b),
    Case("mul_a_only", binary(grads="a"), mg.mul),
    Case("div", binary(b_kw=NONZERO), lambda a, b: a / b),
    Case("div_b_only", binary(b_kw=NONZERO, grads="b"), mg.div),
    Case("pow", binary(a_kw=POSITIVE, b_kw=dict(low=-2.0, high=2.0)), lambda a, b: a ** b),
    Case("pow_base_only", binary(a_kw=POSITIVE, grads="a"), mg.pow),
    Case("pow_exponent_only", binary(a_kw=POSITIVE, grads="b"), lambda a, b: a.pow(b)),
    Case("maximum", binary(GRID, GRID, HALF_STEP), mg.maximum),
    Case("maximum_method_one_grad", binary(GRID, GRID, HALF_STEP, grads="a"), lambda a, b: a.maximum(b)),
    Case("minimum", binary(GRID, GRID, HALF_STEP), mg.minimum),
    Case("minimum_method_one_grad", binary(GRID, GRID, HALF_STEP, grads="b"), lambda a, b: a.minimum(b)),
]


@case("mixed_dtype_promotion", lambda x, c: x * c + c)
def _(draw):  # a float32 constant is promoted to the float64 leaf's dtype
    sx, sc = draw(broadcastable_shapes(max_dims=3, max_side=3))
    return draw_leaf(draw, sx), mg.tensor(draw(arrays(sc, dtype=np.float32)))


# ---- reflected and scalar forms ----------------------------------------------------------------------

def scalar(low=-3.0, high=3.0, nonzero=False):
    """A Python float, a Python int or a NumPy scalar in [low, high] (|s| >= 0.5 if nonzero)."""
    floats = st.floats(low, high, allow_nan=False)
    if nonzero:
        floats = floats.map(lambda v: v if abs(v) >= 0.5 else math.copysign(0.5, v))
    ints = st.integers(math.ceil(low), math.floor(high)).filter(lambda v: v != 0 or not nonzero)
    return st.one_of(floats, ints, floats.map(np.float64), floats.map(np.float32))


def with_scalar(x_kw=None, s=None):
    def build(draw):
        return draw_leaf(draw, draw(SHAPE), **(x_kw or {})), draw(scalar() if s is None else s)
    return build


CASES += [
    Case("add_scalar", with_scalar(), lambda x, s: x + s),
    Case("radd_scalar", with_scalar(), lambda x, s: s + x),
    Case("sub_scalar", with_scalar(), lambda x, s: x - s),
    Case("rsub_scalar", with_scalar(), lambda x, s: s - x),
    Case("mul_scalar", with_scalar(), lambda x, s: x * s),
    Case("rmul_scalar", with_scalar(), lambda x, s: s * x),
    Case("div_scalar", with_scalar(s=scalar(nonzero=True)), lambda x, s: x / s),
    Case("rdiv_scalar", with_scalar(NONZERO), lambda x, s: s / x),
    Case("pow_scalar_exponent", with_scalar(POSITIVE, st.sampled_from([2, 3, -1, 0.5, -1.5, 2.5, 0.0])),
         lambda x, s: x ** s),
    Case("pow_integer_exponent_any_sign", with_scalar(s=st.sampled_from([1, 2, 3, 4])), lambda x, s: x ** s),
    Case("rpow_scalar_base", with_scalar(dict(low=-2.0, high=2.0), st.floats(0.3, 3.0)), lambda x, s: s ** x),
]


# ---- unary math and activations ----------------------------------------------------------------------

def unary(**array_kw):
    return lambda draw: (draw_leaf(draw, draw(SHAPE), **array_kw),)


KINK = dict(kink_gap=0.05)  # |v| >= 0.05, far beyond eps = 1e-6

CASES += [
    Case("neg", unary(), lambda x: -x),
    Case("neg_fn", unary(), mg.neg),
    Case("sign", unary(**KINK), lambda x: x.sign() * x),
    Case("abs", unary(**KINK), lambda x: x.abs()),
    Case("abs_builtin", unary(**KINK), lambda x: abs(x)),
    Case("exp", unary(), mg.exp),
    Case("log", unary(low=0.2, high=4.0), mg.log),
    Case("sqrt", unary(low=0.2, high=4.0), lambda x: x.sqrt()),
    Case("rsqrt", unary(low=0.2, high=4.0), mg.rsqrt),
    Case("sin", unary(), mg.sin),
    Case("cos", unary(), lambda x: x.cos()),
    Case("tanh", unary(), mg.tanh),
    Case("sigmoid", unary(low=-6.0, high=6.0), lambda x: x.sigmoid()),
    Case("relu", unary(**KINK), mg.relu),
    Case("gelu_exact", unary(), lambda x: mg.gelu(x)),
    Case("gelu_tanh", unary(), lambda x: x.gelu(approximate="tanh")),
    Case("silu", unary(low=-5.0, high=5.0), mg.silu),
]


@case("clamp", lambda x, lo, hi: x.clamp(lo, hi))
def _(draw):
    lo = draw(st.none() | st.floats(-2.0, -0.5))
    hi = draw(st.floats(0.5, 2.0)) if lo is None else draw(st.none() | st.floats(0.5, 2.0))
    values = away_from(draw(arrays(draw(SHAPE))), [b for b in (lo, hi) if b is not None], gap=0.05)
    return leaf(values), lo, hi


@case("clamp_tensor_bounds", lambda x, lo, hi: mg.clamp(x, min=lo, max=hi))
def _(draw):  # tensor bounds go through maximum / minimum; every pair differs by >= HALF_STEP
    sx, sb = draw(broadcastable_shapes(max_dims=3, max_side=3))
    x = draw(arrays(sx, **GRID))  # multiples of 0.003; the bounds are HALF_STEP off that grid
    lo = -np.abs(draw(arrays(sb, **GRID))) - 0.099 + HALF_STEP
    hi = np.abs(draw(arrays(sb, **GRID))) + 0.099 + HALF_STEP
    return leaf(x), leaf(lo), leaf(hi, draw(st.booleans()))


@case("where", lambda cond, a, b: mg.where(cond, a, b))
def _(draw):
    full = draw(SHAPE)  # condition, a and b all broadcast to `full` (or to less)
    cond = mg.tensor(draw(hnp.arrays(np.bool_, derive_shape(draw, full))))
    return cond, draw_leaf(draw, derive_shape(draw, full)), draw_leaf(draw, derive_shape(draw, full))


@case("where_method_scalar_other", lambda x, cond, other: x.where(cond, other))
def _(draw):
    shape = draw(SHAPE)
    return draw_leaf(draw, shape), mg.tensor(draw(hnp.arrays(np.bool_, derive_shape(draw, shape)))), draw(scalar())


# ---- reductions -----------------------------------------------------------------------------------------

def dim_or_none(ndim: int):
    """None, an int dim or a tuple of dims (for a 0-d tensor: None, 0 or -1)."""
    return st.sampled_from([None, 0, -1]) if ndim == 0 else dims(ndim, allow_none=True)


def reduction(shape_strategy=SHAPE, allow_none=True, allow_tuple=True, **array_kw):
    """Build (x, dim, keepdim); dim may be None (all dims) if allow_none, a tuple if allow_tuple."""
    def build(draw):
        shape = draw(shape_strategy)
        if allow_none and allow_tuple:
            dim = draw(dim_or_none(len(shape)))
        else:
            dim = draw(dims(len(shape), allow_tuple=allow_tuple, allow_none=allow_none and len(shape) > 0))
        return draw_leaf(draw, shape, **array_kw), dim, draw(st.booleans())
    return build


def _sum(x, dim, keepdim):
    return x.sum() if dim is None and not keepdim else x.sum(dim, keepdim=keepdim)


def _max(x, dim, keepdim):  # int dim: (values, indices), gradient through gather; else amax
    return x.max() if dim is None else x.max(dim, keepdim)


def _min(x, dim, keepdim):
    return mg.min(x) if dim is None else mg.min(x, dim=dim, keepdim=keepdim)


CASES += [
    Case("sum", reduction(), _sum),
    Case("mean", reduction(), lambda x, dim, keepdim: x.mean(dim, keepdim=keepdim)),
    Case("max", reduction(**GRID), _max),
    Case("min", reduction(**GRID), _min),
    Case("amax", reduction(**GRID), lambda x, dim, keepdim: x.amax(dim, keepdim)),
    Case("amin", reduction(**GRID), lambda x, dim, keepdim: mg.amin(x, dim, keepdim)),
    Case("logsumexp", reduction(allow_none=False), lambda x, dim, keepdim: x.logsumexp(dim, keepdim)),
    Case("softmax", reduction(allow_none=False, allow_tuple=False), lambda x, dim, _: x.softmax(dim)),
    Case("log_softmax", reduction(allow_none=False, allow_tuple=False), lambda x, dim, _: mg.log_softmax(x, dim)),
]


@case("var", lambda x, dim, correction, keepdim: x.var(dim, correction=correction, keepdim=keepdim))
def _(draw):
    x, dim, keepdim = reduction()(draw)
    n = reduced_count(x.shape, dim)
    correction = draw(st.sampled_from([0, 1])) if n > 1 else 0  # n - correction > 0: no nan
    return x, dim, correction, keepdim


@case("std", lambda x, dim, unbiased, keepdim: mg.std(x, dim, unbiased=unbiased, keepdim=keepdim))
def _(draw):  # every reduced slice has >= 2 distinct values: std > 0, away from sqrt's kink
    x, dim, keepdim = reduction(shapes(1, 3, 2, 3), **GRID)(draw)
    return x, dim, draw(st.booleans()), keepdim


# ---- movement: views and copies --------------------------------------------------------------------------

def divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


@st.composite
def reshape_targets(draw, shape):
    """A shape with the same number of elements, maybe with one -1 and extra 1s."""
    rest, target = math.prod(shape), []
    while rest > 1:
        d = draw(st.sampled_from(divisors(rest)))
        target.append(d)
        rest //= d
    for _ in range(draw(st.integers(0, 2))):
        target.insert(draw(st.integers(0, len(target))), 1)
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return tuple(target)


@case("reshape", lambda x, target, transposed: (x.T if transposed else x).reshape(target))
def _(draw):
    shape = draw(SHAPE)
    return draw_leaf(draw, shape), draw(reshape_targets(shape)), draw(st.booleans())


@case("view", lambda x, target: x.view(*target))
def _(draw):
    shape = draw(SHAPE)
    return draw_leaf(draw, shape), draw(reshape_targets(shape))


@case("permute", lambda x, order: x.permute(*order))
def _(draw):
    shape = draw(shapes(1, 4, 1, 3))
    order = draw(st.permutations(range(len(shape))))
    return draw_leaf(draw, shape), tuple(d - len(shape) if draw(st.booleans()) else d for d in order)


@case("transpose", lambda x, d0, d1: x.transpose(d0, d1))
def _(draw):
    shape = draw(shapes(2, 4, 1, 3))
    n = len(shape)
    return draw_leaf(draw, shape), draw(st.integers(-n, n - 1)), draw(st.integers(-n, n - 1))


@case("T_and_mT", lambda x: x.T * 2 + x.mT.mT.T)
def _(draw):
    return (draw_leaf(draw, draw(shapes(2, 3, 1, 3))),)


@case("unsqueeze", lambda x, dim: x.unsqueeze(dim))
def _(draw):
    shape = draw(SHAPE)
    return draw_leaf(draw, shape), draw(st.integers(-len(shape) - 1, len(shape)))


@case("squeeze", lambda x, dim: x.squeeze() if dim is None else x.squeeze(dim))
def _(draw):
    shape = draw(shapes(0, 4, 1, 2))  # many size-1 dims
    return draw_leaf(draw, shape), draw(dim_or_none(len(shape)))


@case("flatten", lambda x, start, end: x.flatten(start, end))
def _(draw):
    shape = draw(shapes(0, 4, 1, 3))
    n = len(shape)
    if n == 0:
        return draw_leaf(draw, shape), 0, -1
    start = draw(st.integers(0, n - 1))
    end = draw(st.integers(start, n - 1))
    negate = st.booleans()
    return (draw_leaf(draw, shape), start - n if draw(negate) else start, end - n if draw(negate) else end)


@case("expand", lambda x, sizes: x.expand(*sizes))
def _(draw):
    shape = draw(shapes(0, 3, 1, 2))
    sizes = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
    sizes += [draw(st.sampled_from([1, 2, 3, -1])) if n == 1 else draw(st.sampled_from([n, -1])) for n in shape]
    if tuple(n if s == -1 else s for s, n in zip(sizes[-len(shape):], shape)) == shape and len(sizes) == len(shape):
        sizes.insert(0, 2)  # make sure something is expanded
    return draw_leaf(draw, shape), tuple(sizes)


@case("expand_as", lambda x, y: x.expand_as(y) * y)
def _(draw):
    sx, sy = draw(broadcastable_shapes(max_dims=3, max_side=3))
    full = np.broadcast_shapes(sx, sy)
    return draw_leaf(draw, sx), draw_leaf(draw, full)


@case("contiguous", lambda x, transposed: (x.T if transposed else x).contiguous())
def _(draw):
    return draw_leaf(draw, draw(SHAPE)), draw(st.booleans())


@case("clone", lambda x: x.clone() * x.clone())
def _(draw):
    return (draw_leaf(draw, draw(SHAPE)),)


@case("cast_to_float64_is_identity", lambda x: x.to(mg.float64) + x.double() * x.type_as(x))
def _(draw):
    return (draw_leaf(draw, draw(SHAPE)),)


@case("cat", lambda dim, *xs: mg.cat(xs, dim))
def _(draw):
    base = list(draw(NONEMPTY_SHAPE))
    dim = draw(st.integers(-len(base), len(base) - 1))
    tensors = []
    for i in range(draw(st.integers(1, 3))):
        base[dim] = draw(st.integers(1, 3))
        tensors.append(leaf(draw(arrays(tuple(base))), requires_grad=i == 0 or draw(st.booleans())))
    return (dim, *tensors)


@case("stack", lambda dim, *xs: mg.stack(xs, dim))
def _(draw):
    shape = draw(shapes(0, 2, 1, 3))
    dim = draw(st.integers(-len(shape) - 1, len(shape)))
    k = draw(st.integers(1, 3))
    return (dim, *[leaf(draw(arrays(shape)), requires_grad=i == 0 or draw(st.booleans())) for i in range(k)])


@case("split", lambda x, sizes, dim: x.split(sizes, dim))
def _(draw):
    shape = draw(shapes(1, 3, 1, 4))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    if draw(st.booleans()):
        sizes = draw(st.integers(1, 4))
    else:  # sections, possibly empty ones
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    return draw_leaf(draw, shape), sizes, dim


@case("chunk", lambda x, chunks, dim: mg.chunk(x, chunks, dim))
def _(draw):
    shape = draw(shapes(1, 3, 1, 4))
    return draw_leaf(draw, shape), draw(st.integers(1, 4)), draw(st.integers(-len(shape), len(shape) - 1))


# ---- indexing -------------------------------------------------------------------------------------------

@st.composite
def basic_indices(draw, shape):
    """ints, slices (with steps), None and at most one Ellipsis."""
    ndim = len(shape)

    def item(n):
        if draw(st.booleans()):
            return draw(st.integers(-n, n - 1))
        bound = st.none() | st.integers(-n - 1, n + 1)
        return slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, 3])))

    use_ellipsis = draw(st.booleans())
    n_front = draw(st.integers(0, ndim))
    n_back = draw(st.integers(0, ndim - n_front)) if use_ellipsis else 0
    items = [item(shape[d]) for d in range(n_front)]
    if use_ellipsis:
        items += [Ellipsis] + [item(shape[d]) for d in range(ndim - n_back, ndim)]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


@case("getitem_basic", lambda x, index: x[index])
def _(draw):
    shape = draw(shapes(0, 3, 1, 4))
    return draw_leaf(draw, shape), draw(basic_indices(shape))


def as_index(draw, array: np.ndarray):
    """An index array as a list, a NumPy array or a minigrad tensor."""
    form = draw(st.sampled_from(["list", "numpy", "tensor"]))
    return array.tolist() if form == "list" else array if form == "numpy" else mg.tensor(array)


@case("getitem_int_arrays_repeated", lambda x, index: x[index])
def _(draw):
    """Integer arrays on some dims (slices before, between and after them), each with a repeated
    position, so gradients of a repeated element must accumulate."""
    shape = draw(shapes(1, 3, 1, 4))
    positions = sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape))))
    index_shape = draw(shapes(1, 2, 1, 3))
    if math.prod(index_shape) < 2:
        index_shape = index_shape[:-1] + (2,)
    items = []
    for d in range(positions[-1] + 1):
        n = shape[d]
        if d in positions:
            array = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(-n, n - 1)))
            array.flat[-1] = array.flat[0]  # the same element twice
            items.append(as_index(draw, array))
        else:
            items.append(draw(st.sampled_from([slice(None), slice(None, None, 2), slice(1, None)])))
    if len(items) == 1 and draw(st.booleans()):
        return draw_leaf(draw, shape), items[0]
    return draw_leaf(draw, shape), tuple(items)


@case("getitem_bool_mask", lambda x, index: x[index])
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    start = draw(st.integers(0, len(shape) - 1))
    k = draw(st.integers(1, len(shape) - start))
    mask = draw(hnp.arrays(np.bool_, shape[start:start + k]))
    mask = mask if draw(st.booleans()) else mg.tensor(mask)
    index = (slice(None),) * start + (mask,)
    return draw_leaf(draw, shape), index if start or draw(st.booleans()) else mask


@case("gather", lambda x, dim, index: x.gather(dim, index))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    axis = draw(st.integers(0, len(shape) - 1))
    index_shape = tuple(draw(st.integers(1, 4)) if d == axis else draw(st.integers(1, n))
                        for d, n in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[axis] - 1)))
    dim = axis - len(shape) if draw(st.booleans()) else axis
    return draw_leaf(draw, shape), dim, mg.tensor(index)


@case("masked_fill", lambda x, mask, value: x.masked_fill(mask, value))
def _(draw):
    shape = draw(SHAPE)
    mask = mg.tensor(draw(hnp.arrays(np.bool_, derive_shape(draw, shape))))
    return draw_leaf(draw, shape), mask, draw(st.floats(-3.0, 3.0))


@case("tril", lambda x, k: x.tril(k))
def _(draw):
    return draw_leaf(draw, draw(shapes(2, 3, 1, 4))), draw(st.integers(-3, 3))


@case("triu", lambda x, k: mg.triu(x, diagonal=k))
def _(draw):
    return draw_leaf(draw, draw(shapes(2, 3, 1, 4))), draw(st.integers(-3, 3))


@case("pad", lambda x, widths, value: mg.pad(x, widths, value=value))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    widths = tuple(draw(st.integers(0, 2)) for _ in range(2 * draw(st.integers(1, len(shape)))))
    return draw_leaf(draw, shape), widths, draw(st.floats(-3.0, 3.0))


@case("repeat", lambda x, reps: x.repeat(*reps))
def _(draw):
    shape = draw(shapes(0, 3, 1, 3))
    reps = tuple(draw(st.integers(1, 3)) for _ in range(len(shape) + draw(st.integers(0, 1))))
    return draw_leaf(draw, shape), reps


# ---- linear algebra ---------------------------------------------------------------------------------------

@case("matmul", lambda a, b: a @ b)
def _(draw):
    kind = draw(st.sampled_from(["vector @ vector", "vector @ matrix", "matrix @ vector", "matrix @ matrix"]))
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(broadcastable_shapes(max_dims=2, max_side=3))
    shape_a = (k,) if kind.startswith("vector") else batch_a + (n, k)
    shape_b = (k,) if kind.endswith("vector") else batch_b + (k, m)
    grads = draw(st.sampled_from(["both", "a", "b"]))
    return (leaf(draw(arrays(shape_a)), grads != "b"), leaf(draw(arrays(shape_b)), grads != "a"))


@case("matmul_fn_and_method", lambda a, b: mg.matmul(a, b) + a.matmul(b))
def _(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    return draw_leaf(draw, (n, k)), draw_leaf(draw, (k, m))


# ---- moving between devices (on the CPU a copy to the CPU; test_cuda.py runs it from 'cuda' to the CPU) -----

@case("to_device", lambda x: ToDevice.apply(x, device=mg.device("cpu")) * 2.0)
def _(draw):
    return (draw_leaf(draw, draw(SHAPE)),)


# ---- a composite, to check that gradients flowing through shared nodes add up -----------------------------

@case("composite_attention_like", lambda q, k, v: ((q @ k.mT) * 0.5).softmax(-1) @ v + q.tanh())
def _(draw):
    t, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return draw_leaf(draw, (t, d)), draw_leaf(draw, (t, d)), draw_leaf(draw, (t, d))


# ---- rows of later op families: tests/gradcases_<family>.py, each defining CASES ---------------------------

for _path in sorted(pathlib.Path(__file__).parent.glob("gradcases_*.py")):
    CASES += importlib.import_module(_path.stem).CASES


# ---- the tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
@given(data=st.data())
def test_gradcheck(case: Case, data):
    args = data.draw(case.strategy(), label="args")
    assert gradcheck(case.fn, *args)


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


# ---- every registered Function has a gradcheck ------------------------------------------------------------

_NOT_FUNCTION_MODULES = ("minigrad.backend", "minigrad.kernels", "minigrad._C")


def import_all_minigrad_modules() -> list[str]:
    """Import every module of the package (not the backends: they hold primitives, not Functions), so
    that every Function subclass is in `Function.registry`. Returns modules skipped because an optional
    dependency is missing."""
    skipped = []
    for info in pkgutil.walk_packages(mg.__path__, "minigrad.", onerror=skipped.append):
        if info.name.startswith(_NOT_FUNCTION_MODULES):
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == "minigrad":
                raise
            skipped.append(f"{info.name} (needs {e.name})")
    return skipped


def functions_in_graph(result) -> set[type]:
    """The Function classes in the graph behind `result` (a tensor or a tuple of them); call it before
    backward(), which frees the graph."""
    stack = [t for t in (result if isinstance(result, (tuple, list)) else (result,)) if isinstance(t, mg.Tensor)]
    seen, classes = set(), set()
    while stack:
        fn = stack.pop()._ctx
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        classes.add(type(fn))
        stack.extend(fn.parents)
    return classes


def simplest_args(c: Case) -> tuple:
    """The case's simplest arguments (hypothesis shrinks to them): fixed, no randomness in the result."""
    return find(c.strategy(), lambda _: True,
                settings=settings(database=None, derandomize=True, max_examples=1,
                                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck)))


def is_library_function(cls: type) -> bool:
    """Function subclasses defined in minigrad; those defined by tests (e.g. deliberately wrong ones
    below, or custom Functions in other test files) are not ops that need a gradcheck."""
    return cls.__module__ == "minigrad" or cls.__module__.startswith("minigrad.")


def test_every_function_has_a_gradcheck():
    skipped = import_all_minigrad_modules()
    covered = set()
    for c in CASES:
        covered |= functions_in_graph(c.fn(*simplest_args(c)))
    registered = {cls for cls in Function.registry if is_library_function(cls)}
    missing = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in registered - covered)
    assert not missing, (
        f"no gradcheck case in tests/test_gradcheck.py reaches these differentiable ops: {', '.join(missing)}. "
        f"Add a Case to CASES for each (modules skipped for missing optional dependencies: {skipped or 'none'})")


def test_graph_walk_sees_through_composites():
    x = leaf(np.arange(6.0).reshape(2, 3) + 1.0)
    names = {cls.__name__ for cls in functions_in_graph(x.var(dim=1).sqrt())}
    assert {"Sum", "Sub", "Mul", "Sqrt"} <= names


# ---- gradcheck itself -------------------------------------------------------------------------------------

@pytest.fixture
def wrong_functions():
    """Function subclasses with wrong backward passes; removed from Function.registry afterwards."""

    class SquareMissingFactor2(Function):  # d x^2 = 2x, but backward says x
        def forward(self, x):
            self.save_for_backward(x)
            return self.backend.mul(x, x)

        def backward(self, grad):
            (x,) = self.saved_arrays
            return self.backend.mul(grad, x)

    class SoftmaxZeroBackward(Function):  # right forward, gradient always 0: invisible to a .sum() check
        def forward(self, x):
            return self.backend.softmax_forward(x, x.ndim - 1)

        def backward(self, grad):
            return self.backend.zeros(grad.shape, grad.dtype)

    classes = [SquareMissingFactor2, SoftmaxZeroBackward]
    yield classes
    for cls in classes:
        Function.registry.remove(cls)


def test_gradcheck_fails_on_a_wrong_backward_naming_both_values(wrong_functions):
    square, _ = wrong_functions
    x = leaf([[0.5, -1.25, 2.0], [1.5, 0.75, -2.5]])
    with pytest.raises(GradcheckError) as error:
        gradcheck(square.apply, x)
    message = str(error.value)
    found = re.search(r"at element \((\d+), (\d+)\): analytic (\S+), numeric (\S+),", message)
    assert found, message
    analytic, numeric = float(found[3]), float(found[4])
    assert analytic == pytest.approx(numeric / 2, rel=1e-6), message  # backward forgot the factor 2
    assert analytic != pytest.approx(numeric), message


def test_gradcheck_projects_onto_a_random_cotangent(wrong_functions):
    """The rows of softmax sum to 1, so a gradient check of softmax(x).sum() passes even with a zero
    backward; projecting onto a random cotangent catches it."""
    _, softmax = wrong_functions
    x = leaf([[0.3, -1.0, 2.0], [0.5, 0.1, -0.7]])
    assert gradcheck(lambda t: softmax.apply(t).sum(), x)  # the blind spot of summing
    with pytest.raises(GradcheckError, match=r"analytic 0, numeric"):
        gradcheck(softmax.apply, x)


def test_gradcheck_passes_a_correct_backward_and_restores_inputs():
    values = np.array([[0.5, -1.25], [2.0, 0.25]])
    x = leaf(values)
    assert gradcheck(lambda t: (t * t).softmax(-1), x)
    np.testing.assert_array_equal(x.detach().numpy(), values)


def test_gradcheck_rejects_float32_inputs():
    x = mg.tensor([1.0, 2.0], dtype=mg.float32, requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, x)


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires grad"):
        gradcheck(lambda t: t * 2, leaf([1.0, 2.0], requires_grad=False))
