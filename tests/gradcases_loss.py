"""Gradient-check rows for the losses (collected by tests/test_gradcheck.py): the fused CrossEntropy op
through cross_entropy with class indices (ignore_index, label smoothing, every reduction, (N, C),
(N, C, d) and (C,) inputs), and the composite losses: weighted cross-entropy, cross-entropy against
class probabilities, nll_loss, mse_loss, l1_loss, binary_cross_entropy[_with_logits], and the forward of
every loss layer. Weights, pos_weight and probability targets are leaves too, so their gradients are
checked as well.

At least one target of a batch is never ignored (a 'mean' over no targets is nan), l1_loss keeps
input - target away from its kink at 0, and binary_cross_entropy keeps probabilities inside (0, 1),
away from its clamped logs.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.testing import arrays, shapes

from gradcheck_support import Case, case_decorator, draw_leaf, leaf

CASES: list[Case] = []

REDUCTION = st.sampled_from(["none", "mean", "sum"])

case = case_decorator(CASES)


def class_shape(draw, single: bool = True) -> tuple:
    """(N, C), (N, C, d) or, if single, (C,): sides up to 3, C >= 2."""
    classes = draw(st.integers(2, 4))
    kind = draw(st.sampled_from(["NC", "NCd", "C"] if single else ["NC", "NCd"]))
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    return {"NC": (n, classes), "NCd": (n, classes, d), "C": (classes,)}[kind]


def class_targets(draw, shape: tuple, ignore_index: int):
    """Class indices for an input of `shape`; some equal ignore_index, but never the first one."""
    classes, target_shape = (shape[0], ()) if len(shape) == 1 else (shape[1], shape[:1] + shape[2:])
    size = int(np.prod(target_shape))
    counted = [c for c in range(classes) if c != ignore_index]
    values = [draw(st.sampled_from(counted))] + [
        draw(st.sampled_from(counted + [ignore_index])) for _ in range(size - 1)]
    return mg.tensor(np.array(values, dtype=np.int64).reshape(target_shape))


def class_weight(draw, shape: tuple):
    return draw_leaf(draw, (shape[0 if len(shape) == 1 else 1],), low=0.3, high=2.0)


def index_options(draw, shape: tuple) -> dict:
    """ignore_index (the default -100, or a class when there is a batch) and a reduction."""
    ignore_index = -100 if len(shape) == 1 else draw(st.sampled_from([-100, 0, 1]))
    return dict(ignore_index=ignore_index, reduction=draw(REDUCTION))


# ---- cross-entropy ----------------------------------------------------------------------------------------

@case("cross_entropy_fused", lambda x, t, options: F.cross_entropy(x, t, **options))
def _(draw):
    shape = class_shape(draw)
    options = dict(index_options(draw, shape), label_smoothing=draw(st.sampled_from([0.0, 0.2, 1.0])))
    return draw_leaf(draw, shape), class_targets(draw, shape, options["ignore_index"]), options


@case("cross_entropy_weighted", lambda x, t, w, options: F.cross_entropy(x, t, weight=w, **options))
def _(draw):
    shape = class_shape(draw)
    options = dict(index_options(draw, shape), label_smoothing=draw(st.sampled_from([0.0, 0.3])))
    return draw_leaf(draw, shape), class_targets(draw, shape, options["ignore_index"]), class_weight(draw, shape), \
        options


@case("cross_entropy_probabilities", lambda x, q, w, options: F.cross_entropy(x, q, weight=w, **options))
def _(draw):
    shape = class_shape(draw)
    weight = class_weight(draw, shape) if draw(st.booleans()) else None
    options = dict(reduction=draw(REDUCTION), label_smoothing=draw(st.sampled_from([0.0, 0.3])))
    return draw_leaf(draw, shape), draw_leaf(draw, shape, low=0.0, high=1.0), weight, options


@case("nll_loss", lambda x, t, w, options: F.nll_loss(x, t, weight=w, **options))
def _(draw):
    shape = class_shape(draw)
    options = index_options(draw, shape)
    weight = class_weight(draw, shape) if draw(st.booleans()) else None
    return draw_leaf(draw, shape), class_targets(draw, shape, options["ignore_index"]), weight, options


# ---- elementwise losses ---------------------------------------------------------------------------------

def error_pair(draw, gap: float = 0.0):
    """input and target of one shape; with gap > 0, |input - target| >= gap everywhere."""
    shape = draw(shapes(1, 3, 1, 3))
    x = draw(arrays(shape))
    offset = draw(arrays(shape, low=-1.0, high=1.0, kink_gap=gap))
    weight = draw_leaf(draw, shape, low=0.3, high=2.0) if draw(st.booleans()) else None
    return leaf(x), leaf(x + offset), weight, draw(REDUCTION)


CASES += [
    Case("mse_loss", error_pair, lambda x, t, w, r: F.mse_loss(x, t, reduction=r, weight=w)),
    Case("l1_loss", lambda draw: error_pair(draw, gap=0.1), lambda x, t, w, r: F.l1_loss(x, t, reduction=r, weight=w)),
]


@case("binary_cross_entropy", lambda p, t, w, r: F.binary_cross_entropy(p, t, weight=w, reduction=r))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    weight = draw_leaf(draw, shape[-1:], low=0.3, high=2.0) if draw(st.booleans()) else None
    return draw_leaf(draw, shape, low=0.05, high=0.95), draw_leaf(draw, shape, low=0.0, high=1.0), weight, \
        draw(REDUCTION)


@case("binary_cross_entropy_with_logits",
      lambda x, t, w, pw, r: F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=r, pos_weight=pw))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    weight = draw_leaf(draw, shape, low=0.3, high=2.0) if draw(st.booleans()) else None
    pos_weight = draw_leaf(draw, shape[-1:], low=0.3, high=3.0) if draw(st.booleans()) else None
    return draw_leaf(draw, shape, low=-4.0, high=4.0), draw_leaf(draw, shape, low=0.0, high=1.0), weight, \
        pos_weight, draw(REDUCTION)


# ---- the loss layers' forward ---------------------------------------------------------------------------

@case("loss_layers_class", lambda m, x, t: m(x, t))
def _(draw):
    shape = class_shape(draw, single=False)
    weight = class_weight(draw, shape).detach() if draw(st.booleans()) else None
    options = index_options(draw, shape)
    layer = draw(st.sampled_from(["CrossEntropyLoss", "NLLLoss"]))
    extra = dict(label_smoothing=draw(st.sampled_from([0.0, 0.2]))) if layer == "CrossEntropyLoss" else {}
    module = getattr(nn, layer)(weight=weight, **options, **extra)
    return module, draw_leaf(draw, shape), class_targets(draw, shape, options["ignore_index"])


@case("loss_layers_elementwise", lambda m, x, t: m(x, t))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    layer = draw(st.sampled_from(["MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss"]))
    reduction = draw(REDUCTION)
    if layer == "BCELoss":
        module = nn.BCELoss(weight=draw_leaf(draw, shape[-1:], low=0.3, high=2.0).detach(), reduction=reduction)
        return module, draw_leaf(draw, shape, low=0.05, high=0.95), draw_leaf(draw, shape, low=0.0, high=1.0)
    if layer == "BCEWithLogitsLoss":
        module = nn.BCEWithLogitsLoss(pos_weight=draw_leaf(draw, shape[-1:], low=0.3, high=3.0).detach(),
                                      reduction=reduction)
        return module, draw_leaf(draw, shape), draw_leaf(draw, shape, low=0.0, high=1.0)
    x = draw(arrays(shape))
    return getattr(nn, layer)(reduction=reduction), leaf(x), leaf(x + draw(arrays(shape, 0.1, 1.0)))
