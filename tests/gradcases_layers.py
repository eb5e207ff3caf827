"""Gradient-check rows for the layer ops: LayerNorm, Embedding, Dropout, leaky_relu, and the forward of
the recurrent layers and cells (collected by tests/test_gradcheck.py).

Dropout draws a new mask on every call, so its row seeds the generator before each call: every
finite-difference evaluation then sees the same mask as the backward pass. The recurrent rows pass
the module's parameters as extra arguments, so gradcheck perturbs them in place (they are the
module's own tensors) and checks their gradients too; sizes stay tiny since every element costs two
forward passes.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.testing import shapes

from gradcheck_support import Case, case_decorator, draw_leaf

CASES: list[Case] = []

case = case_decorator(CASES)


# ---- layer norm ----------------------------------------------------------------------------------------

@case("layer_norm", lambda x, shape, w, b, eps: F.layer_norm(x, shape, w, b, eps))
def _(draw):
    shape = draw(shapes(1, 3, 1, 3))
    k = draw(st.integers(1, len(shape)))  # normalize over the last k dims
    normalized = shape[-k:]
    weight = draw_leaf(draw, normalized) if draw(st.booleans()) else None
    bias = draw_leaf(draw, normalized) if draw(st.booleans()) else None
    normalized = normalized[0] if k == 1 and draw(st.booleans()) else normalized  # the int form
    return draw_leaf(draw, shape), normalized, weight, bias, draw(st.sampled_from([1e-5, 0.1]))


@case("layer_norm_module", lambda m, x, *params: m(x))
def _(draw):
    shape = draw(shapes(2, 3, 1, 3))
    m = nn.LayerNorm(shape[-1], bias=draw(st.booleans())).double()
    mg.manual_seed(draw(st.integers(0, 1000)))
    for p in m.parameters():  # away from the initial ones and zeros
        nn.init.uniform_(p, -2.0, 2.0)
    return (m, draw_leaf(draw, shape), *m.parameters())


# ---- embedding ---------------------------------------------------------------------------------------------

def _embedding(w, indices, padding_idx):
    # The padding row gets no gradient by design, so make the function truly constant in that row
    # (multiply it by 0): the numeric derivative is then 0 as well, and every other row is checked.
    if padding_idx is not None:
        keep = np.ones((w.shape[0], 1))
        keep[padding_idx] = 0.0
        w = w * mg.tensor(keep)
    return F.embedding(indices, w, padding_idx)


@case("embedding", _embedding)
def _(draw):
    v, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    index_shape = draw(shapes(0, 2, 1, 3)) + (2,)
    indices = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, v - 1)))
    indices.flat[-1] = indices.flat[0]  # a row read twice: its gradients must add up
    padding_idx = draw(st.none() | st.integers(-v, v - 1))
    return draw_leaf(draw, (v, d)), mg.tensor(indices), padding_idx


# ---- dropout -------------------------------------------------------------------------------------------------

def _seeded_dropout(x, seed, p):
    mg.manual_seed(seed)  # the same mask on every call
    return F.dropout(x, p)


@case("dropout_seeded", _seeded_dropout)
def _(draw):
    return draw_leaf(draw, draw(shapes(1, 3, 1, 4))), draw(st.integers(0, 1000)), draw(st.sampled_from([0.3, 0.5, 0.9]))


@case("leaky_relu", lambda x, slope: F.leaky_relu(x, slope))
def _(draw):
    return draw_leaf(draw, draw(shapes(0, 3, 1, 3)), kink_gap=0.05), draw(st.sampled_from([0.01, 0.2, -0.5]))


# ---- recurrent layers and cells ------------------------------------------------------------------------------

def _flatten(result):
    """(output, h) / (output, (h, c)) / h / (h, c) -> a flat tuple of tensors."""
    if isinstance(result, mg.Tensor):
        return (result,)
    return tuple(t for item in result for t in _flatten(item))


def _recurrent(m, x, hx, *params):
    return _flatten(m(x, hx))


def _state(draw, shape, lstm):
    if not draw(st.booleans()):
        return None
    return (draw_leaf(draw, shape), draw_leaf(draw, shape)) if lstm else draw_leaf(draw, shape)


def _layer_case(cls, **options):
    def build(draw):
        mg.manual_seed(draw(st.integers(0, 1000)))  # the module's initial weights
        num_layers, bidirectional = draw(st.sampled_from([(1, False), (1, True), (2, False)]))
        batch_first = draw(st.booleans())
        m = cls(draw(st.integers(1, 2)), 2, num_layers=num_layers, bidirectional=bidirectional,
                batch_first=batch_first, **options).double()
        t, b = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        batched = draw(st.booleans())
        shape = ((b, t) if batch_first else (t, b)) if batched else (t,)
        lead = (num_layers * (2 if bidirectional else 1),) + ((b,) if batched else ())
        hx = _state(draw, lead + (m.hidden_size,), cls is nn.LSTM)
        return (m, draw_leaf(draw, shape + (m.input_size,)), hx, *m.parameters())
    return build


def _cell_case(cls):
    def build(draw):
        mg.manual_seed(draw(st.integers(0, 1000)))
        m = cls(draw(st.integers(1, 3)), draw(st.integers(1, 3)), bias=draw(st.booleans())).double()
        lead = (draw(st.integers(1, 2)),) if draw(st.booleans()) else ()
        x = draw_leaf(draw, lead + (m.input_size,))
        return (m, x, _state(draw, lead + (m.hidden_size,), cls is nn.LSTMCell), *m.parameters())
    return build


CASES += [
    Case("rnn_tanh_forward", _layer_case(nn.RNN), _recurrent),
    Case("rnn_relu_forward", _layer_case(nn.RNN, nonlinearity="relu"), _recurrent),
    Case("lstm_forward", _layer_case(nn.LSTM), _recurrent),
    Case("gru_forward", _layer_case(nn.GRU), _recurrent),
    Case("rnn_cell", _cell_case(nn.RNNCell), _recurrent),
    Case("lstm_cell", _cell_case(nn.LSTMCell), _recurrent),
    Case("gru_cell", _cell_case(nn.GRUCell), _recurrent),
]
