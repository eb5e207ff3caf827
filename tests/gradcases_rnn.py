"""Gradient-check rows for the fused recurrent ops: the cells LSTMCellFn, GRUCellFn and the sequence scans
LSTMScan, GRUScan, both directions, with and without the bias they add to gates_x (collected by tests/test_gradcheck.py; the LSTM / GRU layers and cells
that use them have rows in gradcases_layers.py).

The gate pre-activations span [-3, 3], across the bend of sigmoid and tanh; some rows leave one input
without a gradient, so a backward that mixes up which gradient goes where is caught.
"""
from __future__ import annotations

from hypothesis import strategies as st

from minigrad.ops import GRUCellFn, GRUScan, LSTMCellFn, LSTMScan
from minigrad.testing import arrays

from gradcheck_support import Case, case_decorator, draw_leaf, leaf

CASES: list[Case] = []

case = case_decorator(CASES)


def _cell_args(draw, gates: int):
    """gates_x, gates_h (B, gates * H) and the state (B, H); each requires grad unless a draw says not."""
    B, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shapes = ((B, gates * H), (B, gates * H), (B, H))
    wanted = draw(st.sampled_from([(True, True, True), (True, False, True), (False, True, False)]))
    return tuple(leaf(draw(arrays(shape)), requires_grad=w) for shape, w in zip(shapes, wanted))


@case("lstm_cell_fused", lambda gx, gh, c: LSTMCellFn.apply(gx, gh, c))
def _(draw):
    return _cell_args(draw, 4)


@case("gru_cell_fused", lambda gx, gh, h: GRUCellFn.apply(gx, gh, h))
def _(draw):
    return _cell_args(draw, 3)


@case("lstm_cell_fused_two_steps", lambda gx, gh, c: _two_lstm_steps(gx, gh, c))
def _(draw):  # the state of step 1 feeds step 2: c' and h' both carry gradient back
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return draw_leaf(draw, (2, B, 4 * H)), draw_leaf(draw, (B, 4 * H)), draw_leaf(draw, (B, H))


def _two_lstm_steps(gx, gh, c):
    hc = LSTMCellFn.apply(gx[0], gh, c)
    return LSTMCellFn.apply(gx[1], gh * hc[0].repeat(1, 4), hc[1])


@case("lstm_scan", lambda gx, h0, c0, w_hh, reverse: LSTMScan.apply(gx, h0, c0, w_hh, reverse=reverse))
def _(draw):
    T, B, H = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (draw_leaf(draw, (T, B, 4 * H)), draw_leaf(draw, (B, H)), draw_leaf(draw, (B, H)),
            draw_leaf(draw, (4 * H, H)), draw(st.booleans()))


@case("gru_scan", lambda gx, h0, w_hh, b_hh, reverse: GRUScan.apply(gx, h0, w_hh, b_hh, reverse=reverse))
def _(draw):
    T, B, H = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (draw_leaf(draw, (T, B, 3 * H)), draw_leaf(draw, (B, H)), draw_leaf(draw, (3 * H, H)),
            draw_leaf(draw, (3 * H,)), draw(st.booleans()))


@case("lstm_scan_bias", lambda gx, h0, c0, w_hh, b, reverse: LSTMScan.apply(gx, h0, c0, w_hh, b, reverse=reverse))
def _(draw):  # the bias the scan adds to gates_x at every step
    T, B, H = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (draw_leaf(draw, (T, B, 4 * H)), draw_leaf(draw, (B, H)), draw_leaf(draw, (B, H)),
            draw_leaf(draw, (4 * H, H)), draw_leaf(draw, (4 * H,)), draw(st.booleans()))


@case("gru_scan_bias", lambda gx, h0, w_hh, b_hh, b_ih, reverse: GRUScan.apply(gx, h0, w_hh, b_hh, b_ih,
                                                                                reverse=reverse))
def _(draw):  # b_ih, added to gates_x by the scan, next to b_hh inside the recurrence
    T, B, H = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (draw_leaf(draw, (T, B, 3 * H)), draw_leaf(draw, (B, H)), draw_leaf(draw, (3 * H, H)),
            draw_leaf(draw, (3 * H,)), draw_leaf(draw, (3 * H,)), draw(st.booleans()))
