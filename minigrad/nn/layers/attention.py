"""MultiheadAttention: attention over several heads of projected queries, keys and values."""
from __future__ import annotations

import math

from minigrad import creation, dtypes
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.functional.attention import attention, mask_to_bias
from minigrad.nn.layers.linear import Linear
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter

__all__ = ["MultiheadAttention"]


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al., 2017), as torch.nn.MultiheadAttention:

        out = concat(head_1 .. head_h) W_o^T + b_o,  head_i = softmax(q_i k_i^T / sqrt(E / h) + mask) v_i

    where q, k, v are the projected inputs split into h heads of E / h features.

    Shapes (L target length, S source length, N batch, E embed_dim): query (L, N, E), key (S, N, kdim),
    value (S, N, vdim), or (N, L, E) ... with batch_first=True, or (L, E) ... unbatched. forward
    returns (out (L, N, E) / (N, L, E) / (L, E), weights (N, L, S) averaged over heads, (N, h, L, S)
    with average_attn_weights=False, without N unbatched, or None with need_weights=False).

    Parameters as torch: in_proj_weight (3E, E) holds W_q, W_k, W_v stacked (xavier-uniform), or,
    when kdim or vdim differs from E, q_proj_weight (E, E), k_proj_weight (E, kdim), v_proj_weight
    (E, vdim); in_proj_bias (3E,) (zeros); out_proj, a Linear(E, E) (its bias zeroed).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.head_dim = embed_dim // num_heads
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim

        def weight(*shape):
            return Parameter(creation.empty(*shape, dtype=dtype, device=device))

        if self._qkv_same_embed_dim:
            self.in_proj_weight = weight(3 * embed_dim, embed_dim)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = weight(embed_dim, embed_dim)
            self.k_proj_weight = weight(embed_dim, self.kdim)
            self.v_proj_weight = weight(embed_dim, self.vdim)
        self.register_parameter("in_proj_bias", weight(3 * embed_dim) if bias else None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype, device=device)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        """Masks: key_padding_mask (N, S) (or (S,) unbatched) and attn_mask (L, S) or (N * num_heads, L, S)
        (or (num_heads, L, S) unbatched), bool (True: the key is *not* attended to) or float (added to
        the scores). is_causal=True is a hint that attn_mask is the causal mask (it must be given): the
        fused kernel then applies the causal mask itself. A query whose keys are all masked gives 0
        (torch gives 0 without weights and nan with them)."""
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal=True is a hint that attn_mask is the causal mask; "
                             "pass attn_mask too (e.g. Transformer.generate_square_subsequent_mask(L))")
        self_attention = query is key and key is value
        if not batched:  # (L, E) -> (1, L, E)
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        (N, L, E), S = query.shape, key.shape[1]

        q, k, v = self._project(query, key, value, self_attention)
        q, k, v = (x.reshape(N, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
                   for x in (q, k, v))  # (N, h, T, E / h)
        causal = is_causal and key_padding_mask is None and not need_weights  # as torch: then the mask is dropped
        bias = None if causal else self._merge_masks(attn_mask, key_padding_mask, N, L, S, query.dtype)
        out, weights = attention(q, k, v, bias, causal, 1 / math.sqrt(self.head_dim),
                                 self.dropout if self.training else 0.0, need_weights)
        out = self.out_proj(out.transpose(1, 2).reshape(N, L, E))  # heads concatenated: (N, L, E)

        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (N, L, S)
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _project(self, query, key, value, self_attention: bool):
        """The input projections: (N, L, E), (N, S, kdim), (N, S, vdim) -> q, k, v, each (N, T, E)."""
        if self_attention and self._qkv_same_embed_dim:  # one matmul for the three
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def _merge_masks(self, attn_mask, key_padding_mask, N, L, S, dtype):
        """attn_mask (L, S) or (N * h, L, S) and key_padding_mask (N, S) as one additive float mask
        broadcastable to (N, h, L, S), or None."""
        bias = None
        if attn_mask is not None:
            bias = mask_to_bias(attn_mask, dtype)
            if bias.ndim == 3:
                bias = bias.reshape(N, self.num_heads, L, S)
        if key_padding_mask is not None:
            padding = mask_to_bias(key_padding_mask, dtype).reshape(N, 1, 1, S)
            bias = padding if bias is None else bias + padding
        return bias

    def _check_inputs(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        """Validate shapes against torch's rules; True when the inputs are batched."""
        name = "MultiheadAttention"
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{name}: query, key and value must all be 3-D (batched) or 2-D (unbatched), got "
                             f"shapes {query.shape}, {key.shape} and {value.shape}")
        if not query.dtype.is_floating_point:
            raise TypeError(f"{name}: expected floating point inputs, got {query.dtype}")
        dims = (query.shape[-1], key.shape[-1], value.shape[-1])
        if dims != (self.embed_dim, self.kdim, self.vdim):
            raise ValueError(f"{name}: expected feature sizes (embed_dim, kdim, vdim) = "
                             f"{(self.embed_dim, self.kdim, self.vdim)} for query, key and value, got {dims}")
        batched = query.ndim == 3
        batch_dim = 0 if self.batch_first else 1
        N = query.shape[batch_dim] if batched else None
        if key.shape[:-1] != value.shape[:-1] or (batched and key.shape[batch_dim] != N):
            raise ValueError(f"{name}: key {key.shape} and value {value.shape} must have the same length and "
                             f"batch size, and the batch size of query {query.shape}")
        L = query.shape[1 - batch_dim] if batched else query.shape[0]
        S = key.shape[1 - batch_dim] if batched else key.shape[0]
        for mask_name, mask, shapes in (
                ("key_padding_mask", key_padding_mask, [(N, S)] if batched else [(S,)]),
                ("attn_mask", attn_mask, [(L, S), ((N if batched else 1) * self.num_heads, L, S)])):
            if mask is None:
                continue
            if mask.dtype is not dtypes.bool_ and not mask.dtype.is_floating_point:
                raise TypeError(f"{name}: {mask_name} must be bool or floating point, got {mask.dtype}")
            if mask.shape not in shapes:
                raise ValueError(f"{name}: {mask_name} of shape {mask.shape} should have shape "
                                 f"{' or '.join(map(str, shapes))}")
        return batched
