"""Gradient-check rows for the fused elementwise ops (minigrad.ops.fused), collected by
tests/test_gradcheck.py: bias_gelu (exact and tanh GELU, with and without a bias, inputs of 1 to 3
dims) and bias_residual, every input a float64 leaf so that all gradients (x, bias, residual) are
checked. tests/test_numba_kernels.py runs the same rows with the Numba backend forced.
"""
from __future__ import annotations

from hypothesis import strategies as st

from minigrad.nn import functional as F
from minigrad.testing import shapes

from gradcheck_support import Case, case_decorator, draw_leaf

CASES: list[Case] = []

case = case_decorator(CASES)


@case("bias_gelu", lambda x, bias, approximate: F.bias_gelu(x, bias, approximate))
def _(draw):
    shape = draw(shapes(1, 3, 1, 4))
    bias = draw_leaf(draw, shape[-1:]) if draw(st.booleans()) else None
    return draw_leaf(draw, shape), bias, draw(st.sampled_from(["none", "tanh"]))


@case("bias_residual", lambda x, bias, residual: F.bias_residual(x, bias, residual))
def _(draw):
    shape = draw(shapes(1, 3, 1, 4))
    return draw_leaf(draw, shape), draw_leaf(draw, shape[-1:]), draw_leaf(draw, shape)
