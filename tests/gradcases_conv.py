"""Gradient-check rows for convolution, pooling and batch norm (collected by tests/test_gradcheck.py).

Sizes stay tiny (every element costs two forward passes) but cover the options: stride, padding
(ints, 'same' with even and odd kernels, 'valid'), dilation, groups, ceil_mode, count_include_pad,
unbatched inputs. Max pooling draws distinct values (no ties for eps to flip). Batch norm inputs get a
ramp added, so every channel's batch variance stays well above 0 (where 1/sqrt(var + eps) is steep).
The layer rows pass the module's parameters as extra arguments, so gradcheck perturbs them in place
(they are the module's own tensors) and checks their gradients too.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.testing import arrays

from gradcheck_support import Case, case_decorator, draw_leaf, leaf

CASES: list[Case] = []

case = case_decorator(CASES)


def maybe_unbatched(draw, shape: tuple) -> tuple:
    """shape, or shape without its batch dim when N = 1 and a coin says so."""
    return shape[1:] if shape[0] == 1 and draw(st.booleans()) else shape


# ---- convolution -------------------------------------------------------------------------------------------

@st.composite
def conv_config(draw, spatial: int):
    """(x shape, weight shape, stride, padding, dilation, groups) of a small valid convolution."""
    groups = draw(st.integers(1, 2))
    in_per_group, out_per_group = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(spatial))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    options = ["valid", 0, 1, tuple(draw(st.integers(0, 1)) for _ in range(spatial))]
    padding = draw(st.sampled_from(options + ["same"] if stride == (1,) * spatial else options))
    sizes = tuple(d * (k - 1) + 1 + draw(st.integers(0, 2)) for k, d in zip(kernel, dilation))  # >= the span
    x_shape = maybe_unbatched(draw, (draw(st.integers(1, 2)), in_per_group * groups, *sizes))
    return x_shape, (out_per_group * groups, in_per_group, *kernel), stride, padding, dilation, groups


def conv_args(spatial: int):
    def build(draw):
        x_shape, w_shape, stride, padding, dilation, groups = draw(conv_config(spatial))
        bias = draw_leaf(draw, w_shape[:1]) if draw(st.booleans()) else None
        return draw_leaf(draw, x_shape), draw_leaf(draw, w_shape), bias, stride, padding, dilation, groups
    return build


CASES += [
    Case("conv2d", conv_args(2), F.conv2d),
    Case("conv1d", conv_args(1), F.conv1d),
]


@case("conv2d_weight_only_grad", lambda x, w: F.conv2d(x, w, padding="same"))
def _(draw):  # the input is a constant: only the weight needs (and gets) a gradient
    x = leaf(draw(arrays((1, 2, 4, 3))), requires_grad=False)
    return x, draw_leaf(draw, (3, 2, 2, 2))


@case("Conv2d_layer", lambda m, x, *params: m(x))
def _(draw):
    x_shape, w_shape, stride, padding, dilation, groups = draw(conv_config(2))
    m = nn.Conv2d(w_shape[1] * groups, w_shape[0], w_shape[2:], stride, padding, dilation, groups,
                  bias=draw(st.booleans()), dtype=mg.float64)
    _fill_parameters(draw, m)
    return (m, draw_leaf(draw, x_shape), *m.parameters())


@case("Conv1d_layer", lambda m, x, *params: m(x))
def _(draw):
    x_shape, w_shape, stride, padding, dilation, groups = draw(conv_config(1))
    m = nn.Conv1d(w_shape[1] * groups, w_shape[0], w_shape[2], stride, padding, dilation, groups, dtype=mg.float64)
    _fill_parameters(draw, m)
    return (m, draw_leaf(draw, x_shape), *m.parameters())


def _fill_parameters(draw, m: nn.Module) -> None:
    """Drawn values in every parameter (instead of the random initialization)."""
    with mg.no_grad():
        for p in m.parameters():
            p.copy_(mg.tensor(draw(arrays(p.shape))))


# ---- pooling -----------------------------------------------------------------------------------------------

@st.composite
def pool_config(draw, with_dilation: bool):
    """(x shape, kernel, stride, padding, dilation, ceil_mode) of a small valid pooling."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    sizes = tuple(d * (k - 1) + 1 + draw(st.integers(0, 2)) for k, d in zip(kernel, dilation))
    x_shape = maybe_unbatched(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *sizes))
    return x_shape, kernel, stride, padding, dilation, draw(st.booleans())


@case("max_pool2d", lambda x, k, s, p, d, ceil, indices: _values(F.max_pool2d(x, k, s, p, d, ceil, indices)))
def _(draw):
    x_shape, kernel, stride, padding, dilation, ceil_mode = draw(pool_config(with_dilation=True))
    x = leaf(draw(arrays(x_shape, distinct=True)))
    return x, kernel, stride, padding, dilation, ceil_mode, draw(st.booleans())


def _values(result):
    """The pooled values (return_indices=True returns (values, indices))."""
    return result[0] if isinstance(result, tuple) else result


@case("avg_pool2d", lambda x, k, s, p, ceil, count_pad: F.avg_pool2d(x, k, s, p, ceil, count_pad))
def _(draw):
    x_shape, kernel, stride, padding, _, ceil_mode = draw(pool_config(with_dilation=False))
    return draw_leaf(draw, x_shape), kernel, stride, padding, ceil_mode, draw(st.booleans())


@case("pool_layers", lambda m, x: m(x))
def _(draw):
    x_shape, kernel, stride, padding, dilation, ceil_mode = draw(pool_config(with_dilation=True))
    layer = draw(st.sampled_from(["max", "avg", "adaptive"]))
    if layer == "max":
        m = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    elif layer == "avg":
        m = nn.AvgPool2d(kernel, stride, padding, ceil_mode)
    else:
        m = nn.AdaptiveAvgPool2d((draw(st.integers(1, 4)), draw(st.none() | st.integers(1, 4))))
    return m, leaf(draw(arrays(x_shape, distinct=True)))


@case("adaptive_avg_pool2d", lambda x, size: F.adaptive_avg_pool2d(x, size))
def _(draw):  # divisible sizes go through avg_pool2d, the others through the averaging matmuls
    x_shape = maybe_unbatched(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
                                     draw(st.integers(1, 5)), draw(st.integers(1, 5))))
    size = draw(st.integers(1, 4) | st.tuples(st.none() | st.integers(1, 4), st.none() | st.integers(1, 4)))
    return draw_leaf(draw, x_shape), size


# ---- batch norm --------------------------------------------------------------------------------------------

def spread_leaf(draw, shape: tuple) -> mg.Tensor:
    """A leaf with a ramp over its elements added: each channel's values spread out (batch var >> eps)."""
    ramp = np.linspace(-2.0, 2.0, math.prod(shape)).reshape(shape)
    return leaf(draw(arrays(shape, low=-1.0, high=1.0)) + ramp)


@case("batch_norm", lambda x, mean, var, w, b, training: F.batch_norm(x, mean, var, w, b, training, 0.1, 1e-5))
def _(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *[draw(st.integers(1, 3))
                                                                 for _ in range(draw(st.integers(0, 2)))])
    if math.prod(shape) // shape[1] < 2:
        shape = (2, *shape[1:])
    c = shape[1]
    training = draw(st.booleans())
    tracked = not training or draw(st.booleans())  # eval mode needs the running statistics
    mean = leaf(draw(arrays((c,))), requires_grad=False) if tracked else None
    var = leaf(draw(arrays((c,), low=0.5, high=2.0)), requires_grad=False) if tracked else None
    weight = draw_leaf(draw, (c,)) if draw(st.booleans()) else None
    bias = draw_leaf(draw, (c,)) if draw(st.booleans()) else None
    return spread_leaf(draw, shape), mean, var, weight, bias, training


@case("BatchNorm_layers", lambda m, x, *params: m(x))
def _(draw):
    kind = draw(st.sampled_from(["1d_NC", "1d_NCL", "2d"]))
    c = draw(st.integers(1, 3))
    shape = {"1d_NC": (3, c), "1d_NCL": (2, c, draw(st.integers(1, 3))), "2d": (2, c, 2, draw(st.integers(1, 2)))}[kind]
    layer = nn.BatchNorm2d if kind == "2d" else nn.BatchNorm1d
    m = layer(c, momentum=draw(st.sampled_from([0.1, None])), affine=draw(st.booleans()),
              track_running_stats=draw(st.booleans()), dtype=mg.float64)
    _fill_parameters(draw, m)
    if draw(st.booleans()):
        m.eval()
    return (m, spread_leaf(draw, shape), *m.parameters())
