"""Tools to test differentiable code: `gradcheck` and hypothesis strategies for shapes and values.

gradcheck compares the gradient from backward() with central finite differences, in float64, on every
element of every input that requires grad. The output is projected onto a seeded random cotangent v
(we differentiate <f(x), v>) rather than summed: a plain sum hides bugs, e.g. the rows of softmax
always sum to 1, so d sum(softmax(x)) / dx is 0 whatever the backward computes.

The strategies need `hypothesis` (a test dependency); gradcheck needs only minigrad.
"""
from __future__ import annotations

import numpy as np

from minigrad import dtypes
from minigrad.autograd import no_grad
from minigrad.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by gradcheck; the message names the worst element with its analytic and numeric values."""


def _outputs(result) -> list[Tensor]:
    results = result if isinstance(result, (tuple, list)) else (result,)
    return [r for r in results if isinstance(r, Tensor) and r.dtype.is_floating_point]


def _projection(outputs, cotangents) -> float:
    return float(sum(np.sum(o.detach().cpu().numpy().astype(np.float64) * v) for o, v in zip(outputs, cotangents)))


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Check the backward of `fn(*inputs)` against central differences; return True or raise
    GradcheckError. Inputs that require grad must be float64 tensors; other arguments pass through.

    For every element x_j of every such input: numeric = (L(x + eps e_j) - L(x - eps e_j)) / (2 eps),
    with L(x) = <fn(x), v> for a random v ~ N(0, 1) seeded by `seed`; it must match the analytic
    dL/dx_j within atol + rtol * |numeric|."""
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for x in checked:
        if x.dtype is not dtypes.float64:
            raise TypeError(f"gradcheck needs float64 inputs for accurate differences, got {x.dtype} "
                            f"(shape {x.shape})")
    outputs = _outputs(fn(*inputs))
    if not outputs:
        raise ValueError("gradcheck: fn returned no floating point tensor")
    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(o.shape) for o in outputs]

    for x in checked:
        x.grad = None
    differentiable = [(o, v) for o, v in zip(outputs, cotangents) if o.requires_grad]
    for i, (o, v) in enumerate(differentiable):
        o.backward(Tensor(v, dtype=o.dtype, device=o.device), retain_graph=i < len(differentiable) - 1)

    worst = None  # (excess over tolerance, input number, element index, analytic, numeric)
    with no_grad():
        for number, x in enumerate(checked):
            analytic = np.zeros(x.shape) if x.grad is None else x.grad.cpu().numpy()
            values = x.data  # perturbed in place, restored after each element
            for index in np.ndindex(*x.shape):
                original = values[index]
                values[index] = original + eps
                plus = _projection(_outputs(fn(*inputs)), cotangents)
                values[index] = original - eps
                minus = _projection(_outputs(fn(*inputs)), cotangents)
                values[index] = original
                numeric = (plus - minus) / (2 * eps)
                excess = abs(analytic[index] - numeric) - (atol + rtol * abs(numeric))
                if worst is None or excess > worst[0] or np.isnan(excess):
                    worst = (excess, number, index, analytic[index], numeric)
    if worst is not None and not worst[0] <= 0:
        _, number, index, a, n = worst
        raise GradcheckError(
            f"gradient mismatch for input {number} (shape {checked[number].shape}) at element {index}: "
            f"analytic {a:.10g}, numeric {n:.10g}, difference {abs(a - n):.3g} > atol {atol} + rtol {rtol} * "
            f"|numeric|")
    return True


# ---- hypothesis strategies -----------------------------------------------------------------------

def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 5):
    """Tensor shapes, e.g. (), (3,), (2, 1, 4)."""
    from hypothesis import strategies as st
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def broadcastable_shapes(min_dims: int = 0, max_dims: int = 4, max_side: int = 4):
    """Pairs of shapes that broadcast together: both are cut from one shape by dropping leading dims
    and setting some sizes to 1."""
    from hypothesis import strategies as st

    @st.composite
    def pair(draw):
        full = draw(shapes(min_dims, max_dims, 1, max_side))
        def derive():
            dropped = draw(st.integers(0, len(full)))
            return tuple(1 if draw(st.booleans()) else n for n in full[dropped:])
        return derive(), derive()
    return pair()


def dims(ndim: int, allow_tuple: bool = True, allow_none: bool = False):
    """A valid `dim` argument for a tensor of `ndim` dims: an int (possibly negative) or a tuple."""
    from hypothesis import strategies as st
    if ndim == 0:
        return st.just(None) if allow_none else st.sampled_from([0, -1])
    single = st.integers(-ndim, ndim - 1)
    options = [single]
    if allow_tuple:
        options.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple))
    if allow_none:
        options.append(st.none())
    return st.one_of(*options)


def arrays(shape, low: float = -3.0, high: float = 3.0, kink_gap: float = 0.0, distinct: bool = False,
           dtype=np.float64):
    """NumPy arrays of `shape` with values in [low, high].

    kink_gap > 0 keeps every value at least that far from 0 (the kink of relu/abs/clamp at 0), so
    central differences never straddle a kink. distinct=True makes all values differ by at least
    (high - low) / 2000, so max/min/sort have no ties for eps-sized perturbations to flip."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
    if distinct:
        steps = 1000
        elements = st.integers(-steps, steps)
        scale, center = (high - low) / (2 * steps), (high + low) / 2
        return hnp.arrays(np.int64, shape, elements=elements, unique=True).map(
            lambda a: (center + a * scale).astype(dtype))
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kink_gap > 0:
        elements = elements.map(lambda v: v + np.copysign(kink_gap, v))
    return hnp.arrays(dtype, shape, elements=elements)
