"""Scaled dot-product attention, and `attention`, the core it shares with nn.MultiheadAttention.

    attention(q, k, v) = softmax(q k^T * scale + mask) v

Two paths compute it. The fused `Attention` Function (minigrad.ops.attention) keeps no (L, S) array
for backward and is used whenever it can be; the composite path (matmul, softmax, dropout, matmul as
separate ops) is used when the attention weights themselves are needed: to return them, to apply
dropout to them, or to differentiate a float mask. Both give 0 for a query whose keys are all masked
(its weights, output and gradients), as torch's scaled_dot_product_attention does.
"""
from __future__ import annotations

import math

from minigrad import creation, dtypes
from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.autograd import is_grad_enabled
from minigrad.nn.functional.dropout import dropout
from minigrad.ops import Attention
from minigrad.ops.shapes import broadcast_shapes
from minigrad.tensor import Tensor

__all__ = ["scaled_dot_product_attention"]


def attention_weights(q: Tensor, k: Tensor, bias: Tensor | None, is_causal: bool, scale: float) -> Tensor:
    """softmax(q k^T * scale + bias) over the keys: q (B, H, L, E), k (B, H, S, E), bias broadcastable
    to (B, H, L, S) or None -> (B, H, L, S). Rows with every key masked (all scores -inf) are 0."""
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, S)
    if is_causal:
        scores = scores.masked_fill(causal_mask(*scores.shape[-2:], device=q.device), -math.inf)
    if bias is None:
        return scores.softmax(-1)
    scores = scores + bias
    # softmax of an all -inf row is 0/0: such rows are softmaxed as zeros instead, then set to 0, so that
    # neither the weights nor the gradients see a nan.
    empty = scores.detach().amax(-1, keepdim=True) == -math.inf  # (B, H, L, 1)
    return scores.masked_fill(empty, 0.0).softmax(-1).masked_fill(empty, 0.0)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, is_causal: bool, scale: float,
              dropout_p: float = 0.0, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T * scale + bias) v on 4-D tensors, with the attention weights if asked.

    q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev); bias a float tensor broadcastable to (B, H, L, S)
    (-inf where a key is masked) or None; is_causal masks key j > query i. Dropout with probability
    dropout_p applies to the weights. Returns (out (B, H, L, Ev), weights (B, H, L, S) after dropout,
    or None unless need_weights)."""
    bias_needs_grad = bias is not None and bias.requires_grad and is_grad_enabled()
    if not need_weights and dropout_p == 0 and not bias_needs_grad:
        out = Attention.apply(q, k, v, bias=None if bias is None else bias.data, is_causal=is_causal, scale=scale)
        return out, None
    weights = attention_weights(q, k, bias, is_causal, scale)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p, training=True)
    return weights @ v, (weights if need_weights else None)


def causal_mask(L: int, S: int, device=None) -> Tensor:
    """(L, S) bool, True where key j comes after query i (j > i): what is_causal hides."""
    return creation.arange(S, device=device) > creation.arange(L, device=device).unsqueeze(-1)


def mask_to_bias(mask: Tensor, dtype) -> Tensor:
    """An additive float mask of `dtype` from a bool one where True means *masked*: -inf there, 0
    elsewhere. A float mask is already additive: it is only converted to `dtype`."""
    if mask.dtype is not dtypes.bool_:
        return mask.to(dtype)
    return creation.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """softmax(query key^T * scale + mask) value, as torch.nn.functional.scaled_dot_product_attention.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the leading dims (batch,
    heads, any number of them) broadcast. attn_mask, broadcastable to (..., L, S): bool (True: the key
    takes part in attention) or float of query's dtype (added to the scores). is_causal masks key j
    for query i when j > i (top-left aligned; not together with attn_mask). scale defaults to
    1 / sqrt(E). dropout_p > 0 drops attention weights (whatever the mode: this function has no
    training flag, pass 0.0 in eval). A query whose keys are all masked gives 0, as in torch."""
    query, key, value, attn_mask = autocast_inputs("scaled_dot_product_attention", query, key, value, attn_mask)
    _check_inputs(query, key, value, attn_mask, dropout_p, is_causal)
    lead = broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    batch = (1,) * (2 - len(lead)) + lead  # at least (B, H)
    q, k, v = (x.expand(*batch, *x.shape[-2:]).reshape(-1, batch[-1], *x.shape[-2:]) for x in (query, key, value))
    if attn_mask is not None and attn_mask.dtype is dtypes.bool_:
        attn_mask = attn_mask.logical_not()  # here True means "attend"; mask_to_bias wants True = masked
    bias = None if attn_mask is None else _merge_leading_dims(mask_to_bias(attn_mask, query.dtype), batch)
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    out, _ = attention(q, k, v, bias, is_causal, scale, dropout_p)
    return out.reshape(*lead, query.shape[-2], value.shape[-1])


def _merge_leading_dims(bias: Tensor, batch: tuple) -> Tensor:
    """A mask broadcastable to (*batch, L, S) as a 4-D one broadcastable to (B, H, L, S); the dims
    merged into B are expanded only if the mask varies along one of them."""
    bias = bias.reshape(*(1,) * (len(batch) + 2 - bias.ndim), *bias.shape)
    if all(n == 1 for n in bias.shape[:-3]):
        return bias.reshape(1, *bias.shape[-3:])
    return bias.expand(*batch[:-1], *bias.shape[-3:]).reshape(-1, *bias.shape[-3:])


def _check_inputs(query, key, value, attn_mask, dropout_p, is_causal) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point or x.dtype is not query.dtype:
            raise TypeError(f"scaled_dot_product_attention: query, key and value must have one floating "
                            f"point dtype, got {query.dtype}, {key.dtype} and {value.dtype}")
        if x.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} must have at least 2 dims (..., T, E), "
                             f"got shape {x.shape}")
    if key.shape[-1] != query.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: expected query (..., L, E), key (..., S, E) and value "
                         f"(..., S, Ev), got shapes {query.shape}, {key.shape} and {value.shape}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if attn_mask is None:
        return
    if is_causal:
        raise ValueError("scaled_dot_product_attention: give either attn_mask or is_causal=True, not both "
                         "(an explicit attn_mask can include the causal mask)")
    if not isinstance(attn_mask, Tensor) or attn_mask.dtype not in (dtypes.bool_, query.dtype):
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be a bool tensor or a float tensor of "
                        f"query's dtype {query.dtype}, got "
                        f"{attn_mask.dtype if isinstance(attn_mask, Tensor) else type(attn_mask).__name__}")
    lead = broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    target = (*lead, query.shape[-2], key.shape[-2])
    try:
        fits = attn_mask.ndim <= len(target) and broadcast_shapes(attn_mask.shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {attn_mask.shape} does not "
                         f"broadcast to (..., L, S) = {target}")
