"""Gradient-check rows for attention: the fused Attention Function (through scaled_dot_product_attention,
with no mask, a causal mask, float and bool masks, fully masked rows), the composite path (a float
mask that requires grad, dropout), leading dims, and the forwards of MultiheadAttention and of the
Transformer encoder and decoder layers (collected by tests/test_gradcheck.py).

The module rows pass the module's parameters as extra arguments, so gradcheck perturbs them in place
and checks their gradients too; the dropout row seeds the generator before each call, so that every
finite-difference evaluation sees the mask of the backward pass.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.testing import arrays

from gradcheck_support import Case, case_decorator, draw_leaf, leaf

CASES: list[Case] = []

case = case_decorator(CASES)


def _sizes(draw):
    """(B, H, L, S, E, Ev): B, H in 1..2, S in 2..3 (one key gives a constant softmax), the others 1..3."""
    B, H, L, S, E, Ev = (draw(st.integers(1, n)) for n in (2, 2, 3, 3, 3, 3))
    return B, H, L, S + (S == 1), E, Ev


def _bool_mask(draw, shape):
    """A bool mask (True: attend; mostly True) whose first query row is sometimes fully masked."""
    mask = draw(hnp.arrays(np.bool_, shape, elements=st.sampled_from([True, True, False])))
    if draw(st.booleans()):
        mask[..., 0, :] = False
    return mg.tensor(mask)


def _sdpa(q, k, v, mask, is_causal, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


@case("attention_fused", _sdpa)
def _(draw):
    B, H, L, S, E, Ev = _sizes(draw)
    kind = draw(st.sampled_from(["none", "causal", "float", "bool"]))
    mask_shape = draw(st.sampled_from([(L, S), (B, 1, L, S), (H, 1, S)]))
    mask = None
    if kind == "float":  # a constant: the fused Function takes it as an attribute
        mask = leaf(draw(arrays(mask_shape)), requires_grad=False)
    elif kind == "bool":
        mask = _bool_mask(draw, mask_shape)
    q, k, v = (draw_leaf(draw, shape) for shape in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev)))
    return q, k, v, mask, kind == "causal", draw(st.sampled_from([None, 0.5, 2.0]))


@case("attention_float_mask_requiring_grad", _sdpa)
def _(draw):  # the composite path, which differentiates the mask too
    B, H, L, S, E, Ev = _sizes(draw)
    mask = draw_leaf(draw, draw(st.sampled_from([(L, S), (B, H, L, S), (1, 1, S)])))
    q, k, v = (draw_leaf(draw, shape) for shape in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev)))
    return q, k, v, mask, False, None


@case("attention_leading_dims", _sdpa)
def _(draw):  # 2-D to 5-D inputs whose leading dims broadcast
    _, _, L, S, E, Ev = _sizes(draw)
    lead = tuple(draw(st.lists(st.integers(1, 2), max_size=3)))

    def cut(full):  # `full` with some dims dropped from the left or set to 1
        start = draw(st.integers(0, len(full)))
        return tuple(1 if draw(st.booleans()) else n for n in full[start:])
    q, k, v = (draw_leaf(draw, cut(lead) + shape) for shape in ((L, E), (S, E), (S, Ev)))
    batch = mg.ops.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])  # the mask may not add dims
    mask = _bool_mask(draw, cut(batch) + (L, S)) if draw(st.booleans()) else None
    return q, k, v, mask, mask is None and draw(st.booleans()), None


def _seeded_dropout_attention(q, k, v, seed, p):
    mg.manual_seed(seed)  # the same dropout mask on every call
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p)


@case("attention_dropout_seeded", _seeded_dropout_attention)
def _(draw):
    B, H, L, S, E, Ev = _sizes(draw)
    q, k, v = (draw_leaf(draw, shape) for shape in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev)))
    return q, k, v, draw(st.integers(0, 1000)), draw(st.sampled_from([0.3, 0.5]))


# ---- layers -----------------------------------------------------------------------------------------------

def _mha(m, query, key, value, key_padding_mask, attn_mask, need_weights, average, *params):
    return m(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=need_weights,
             average_attn_weights=average)


@case("multihead_attention_forward", _mha)
def _(draw):
    mg.manual_seed(draw(st.integers(0, 1000)))  # the module's initial weights
    E, heads = draw(st.sampled_from([(2, 1), (2, 2), (4, 2)]))
    kdim, vdim = draw(st.sampled_from([(None, None), (1, 3)]))
    batch_first, batched, bias = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    m = nn.MultiheadAttention(E, heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first).double()
    for p in m.parameters():  # biases start at 0: make them matter
        nn.init.uniform_(p, -1.0, 1.0)
    N, L, S = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))

    def seq(T, D):
        return draw_leaf(draw, ((N, T) if batch_first else (T, N)) + (D,) if batched else (T, D))
    query = seq(L, E)
    if kdim is None and draw(st.booleans()):
        key = value = query  # self-attention: one projection matmul
        S = L
    else:
        key, value = seq(S, kdim or E), seq(S, vdim or E)
    padding = None
    if draw(st.booleans()):
        padding = mg.tensor(draw(hnp.arrays(np.bool_, (N, S) if batched else (S,))))
    attn_mask = None
    if draw(st.booleans()):  # float, (L, S) or one per batch element and head
        shape = draw(st.sampled_from([(L, S), ((N if batched else 1) * heads, L, S)]))
        attn_mask = leaf(draw(arrays(shape)), requires_grad=False)
    return (m, query, key, value, padding, attn_mask, draw(st.booleans()), draw(st.booleans()), *m.parameters())


def _layer(m, x, memory, mask, padding, *params):
    if memory is None:
        return m(x, src_mask=mask, src_key_padding_mask=padding)
    return m(x, memory, tgt_mask=mask, tgt_key_padding_mask=padding, memory_key_padding_mask=padding)


def _layer_case(cls):
    def build(draw):
        mg.manual_seed(draw(st.integers(0, 1000)))
        batch_first = draw(st.booleans())
        # dropout 0 (train mode); gelu, which has no kink for central differences to straddle
        m = cls(4, 2, dim_feedforward=3, dropout=0.0, activation="gelu", batch_first=batch_first,
                norm_first=draw(st.booleans())).double()
        for p in m.parameters():
            nn.init.uniform_(p, -1.0, 1.0)
        N, T = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        shape = (N, T, 4) if batch_first else (T, N, 4)
        memory = draw_leaf(draw, shape) if cls is nn.TransformerDecoderLayer else None
        mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=mg.float64) if draw(st.booleans()) else None
        padding = mg.tensor(draw(hnp.arrays(np.bool_, (N, T)))) if draw(st.booleans()) else None
        return (m, draw_leaf(draw, shape), memory, mask, padding, *m.parameters())
    return build


CASES += [
    Case("transformer_encoder_layer_forward", _layer_case(nn.TransformerEncoderLayer), _layer),
    Case("transformer_decoder_layer_forward", _layer_case(nn.TransformerDecoderLayer), _layer),
]
