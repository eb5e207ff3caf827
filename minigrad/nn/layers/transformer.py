"""The Transformer (Vaswani et al., 2017): encoder and decoder layers, their stacks, and the whole model.

Submodule names and parameters are torch's (self_attn, multihead_attn, linear1, linear2, norm1..3,
dropout, dropout1..3; layers.N; encoder.norm, decoder.norm), so a torch state_dict loads as it is.

Each layer is a residual block around attention and around a position-wise feed-forward network,
with LayerNorm after the residual sum (post-norm, the paper's) or, with norm_first=True, before the
block (pre-norm, which trains more stably in deep stacks):

    post-norm: x = norm(x + block(x))         pre-norm: x = x + block(norm(x))

Shapes (S source length, T target length, N batch, E d_model): src (S, N, E), tgt (T, N, E), or
(N, S, E) / (N, T, E) with batch_first=True, or (S, E) / (T, E) unbatched. Masks as in
MultiheadAttention: attention masks (S, S), (T, T), (T, S) (or (N * nhead, ., .)), key padding masks
(N, S) / (N, T); bool masks are True where attention is *not* allowed, float masks are added.
"""
from __future__ import annotations

import copy
import math

from minigrad import creation
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.containers import ModuleList
from minigrad.nn.layers.attention import MultiheadAttention
from minigrad.nn.layers.dropout import Dropout
from minigrad.nn.layers.linear import Linear
from minigrad.nn.layers.normalization import LayerNorm
from minigrad.nn.module import Module

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
           "Transformer"]


def _activation(activation):
    """'relu' / 'gelu' -> the function; a callable (a function or a Module) is used as it is."""
    if callable(activation):
        return activation
    if activation in ("relu", "gelu"):
        return getattr(F, activation)
    raise ValueError(f"activation should be 'relu', 'gelu' or a callable, not {activation!r}")


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: the feed-forward network (linear1, dropout, linear2)
    and the attention sub-block, each followed by its own dropout before the residual sum."""

    def _init_feed_forward(self, d_model, dim_feedforward, dropout, bias, factory) -> None:
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)

    def _attention_block(self, attn, dropout, x, memory, attn_mask, key_padding_mask, is_causal):
        """dropout(attn(x, memory, memory)); memory=None: self-attention (one projection matmul)."""
        memory = x if memory is None else memory
        out = attn(x, memory, memory, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                   need_weights=False, is_causal=is_causal)[0]
        return dropout(out)

    def _feed_forward_block(self, x, dropout):
        """dropout(linear2(dropout(activation(linear1(x))))): (*, E) -> (*, dim_feedforward) -> (*, E).
        A GELU takes linear1's bias add into its own kernel pass (F.bias_gelu): the same values."""
        if self.activation is F.gelu:
            hidden = F.bias_gelu(F.linear(x, self.linear1.weight), self.linear1.bias)
        else:
            hidden = self.activation(self.linear1(x))
        return dropout(self.linear2(self.dropout(hidden)))


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention then feed-forward, each a residual block (see the module docstring).
    src (S, N, E) (or (N, S, E) with batch_first, or (S, E)) -> same shape. activation: 'relu', 'gelu' or
    a callable (a function such as F.gelu, or a Module)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        factory = dict(device=device, dtype=dtype)
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            **factory)
        self._init_feed_forward(d_model, dim_feedforward, dropout, bias, factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        """src_mask (S, S) or (N * nhead, S, S); src_key_padding_mask (N, S); is_causal: a hint that
        src_mask is the causal mask."""
        def self_attention(x):
            return self._attention_block(self.self_attn, self.dropout1, x, None, src_mask, src_key_padding_mask,
                                         is_causal)

        x = src
        if self.norm_first:
            x = x + self_attention(self.norm1(x))
            return x + self._feed_forward_block(self.norm2(x), self.dropout2)
        x = self.norm1(x + self_attention(x))
        return self.norm2(x + self._feed_forward_block(x, self.dropout2))


class TransformerDecoderLayer(_TransformerLayer):
    """Self-attention over the target, attention to the encoder's output (memory), then feed-forward,
    each a residual block. tgt (T, N, E), memory (S, N, E) (batch_first / unbatched alike) -> tgt's
    shape. activation as TransformerEncoderLayer."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        factory = dict(device=device, dtype=dtype)
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            **factory)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, **factory)
        self._init_feed_forward(d_model, dim_feedforward, dropout, bias, factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False):
        """tgt_mask (T, T), memory_mask (T, S) (or (N * nhead, ., .)); tgt_key_padding_mask (N, T),
        memory_key_padding_mask (N, S); *_is_causal: hints that the mask is the causal mask."""
        def self_attention(x):
            return self._attention_block(self.self_attn, self.dropout1, x, None, tgt_mask, tgt_key_padding_mask,
                                         tgt_is_causal)

        def cross_attention(x):
            return self._attention_block(self.multihead_attn, self.dropout2, x, memory, memory_mask,
                                         memory_key_padding_mask, memory_is_causal)

        x = tgt
        if self.norm_first:
            x = x + self_attention(self.norm1(x))
            x = x + cross_attention(self.norm2(x))
            return x + self._feed_forward_block(self.norm3(x), self.dropout3)
        x = self.norm1(x + self_attention(x))
        x = self.norm2(x + cross_attention(x))
        return self.norm3(x + self._feed_forward_block(x, self.dropout3))


def _clones(layer: Module, n: int) -> ModuleList:
    """n independent deep copies of `layer` (the layer given to a stack is a template, as in torch)."""
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


def _seq_len(x, batch_first: bool) -> int:
    return x.shape[0] if x.ndim == 2 else x.shape[1 if batch_first else 0]


def _detect_is_causal_mask(mask, is_causal: bool | None, size: int) -> bool:
    """is_causal as given; if None, whether `mask` equals the float causal mask of `size` (as torch)."""
    if is_causal is not None or mask is None:
        return bool(is_causal)
    causal = Transformer.generate_square_subsequent_mask(size, device=mask.device, dtype=mask.dtype)
    return mask.shape == causal.shape and bool((mask == causal).all())


class TransformerEncoder(Module):
    """`num_layers` copies of `encoder_layer` applied in turn, then `norm` if given. src -> same shape.
    (enable_nested_tensor and mask_check are accepted for torch compatibility; they select torch's fast
    inference path, which minigrad does not have.)"""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool | None = None):
        """mask (S, S) or (N * nhead, S, S); src_key_padding_mask (N, S); is_causal: a hint that mask is the
        causal mask (None: detected by comparing mask with it)."""
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(src, self.layers[0].self_attn.batch_first))
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """`num_layers` copies of `decoder_layer` applied in turn, each attending to `memory`, then `norm` if
    given. tgt, memory -> tgt's shape."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool | None = None, memory_is_causal: bool = False):
        """Masks as TransformerDecoderLayer; tgt_is_causal=None detects a causal tgt_mask."""
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal,
                                               _seq_len(tgt, self.layers[0].self_attn.batch_first))
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)


class Transformer(Module):
    """Encoder-decoder Transformer, as torch.nn.Transformer: src (S, N, E), tgt (T, N, E) -> (T, N, E)
    (batch_first: (N, ., E); unbatched: (., E)). Every parameter with more than one dim is re-initialized
    xavier-uniform, as torch does. Use generate_square_subsequent_mask(T) as tgt_mask for
    autoregressive decoding."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", custom_encoder: Module | None = None, custom_decoder: Module | None = None,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                      norm_first, bias)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(TransformerEncoderLayer(*layer_args, **factory), num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(TransformerDecoderLayer(*layer_args, **factory), num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal: bool | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False):
        """Masks: src_mask (S, S), tgt_mask (T, T), memory_mask (T, S); key padding masks (N, S), (N, T),
        (N, S). Returns the decoder's output, shaped as tgt."""
        batch_dim = 0 if self.batch_first else 1
        if src.ndim == 3 and (tgt.ndim != 3 or src.shape[batch_dim] != tgt.shape[batch_dim]):
            raise ValueError(f"Transformer: src {src.shape} and tgt {tgt.shape} must have the same batch size "
                             f"(batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: the feature size of src {src.shape} and tgt {tgt.shape} must be "
                             f"d_model = {self.d_model}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None):
        """(sz, sz) float mask: -inf above the diagonal (position i may not attend to j > i), 0 elsewhere."""
        return creation.full((sz, sz), -math.inf, dtype=dtype, device=device).triu(1)
