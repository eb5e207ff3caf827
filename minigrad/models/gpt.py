"""GPT: a decoder-only Transformer language model, as in Karpathy's nanoGPT (itself GPT-2's architecture).

    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    logits, loss = model(idx, targets)                  # idx, targets (B, T) int64 -> logits (B, T, vocab)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.99))
    model.eval()
    out = model.generate(idx, max_new_tokens=200, temperature=0.8, top_k=40)   # (B, T + 200)

The network: token embedding + learned position embedding, `n_layer` pre-LayerNorm blocks

    x = x + attn(ln_1(x))          causal multi-head self-attention
    x = x + mlp(ln_2(x))           Linear(C, 4C) -> GELU -> Linear(4C, C)

then a final LayerNorm and `lm_head`, a Linear(C, vocab) that shares its weight with the token embedding
(weight tying: the same matrix reads tokens in and writes them out).

Decoding with a KV cache: the keys and values of the tokens already seen do not change, so `generate`
keeps them (`KVCache`) and runs the network on the new token only. Then the queries (the new tokens) are
fewer than the keys (all tokens), and the causal mask must be aligned to the bottom-right: new token i of
Tq is position Tk - Tq + i and sees keys 0..Tk - Tq + i. A top-left mask (`is_causal`, which lets query i
see keys 0..i) would hide almost the whole past from a new token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minigrad import creation, dtypes, nn
from minigrad.autograd import no_grad
from minigrad.nn import functional as F
from minigrad.ops import cat
from minigrad.optim import AdamW
from minigrad.tensor import Tensor

__all__ = ["GPTConfig", "GPT", "KVCache", "causal_mask_bottom_right"]


@dataclass
class GPTConfig:
    """The shape of a GPT. block_size: the longest context (number of learned positions); n_embd must
    be a multiple of n_head; bias: biases in the Linear and LayerNorm layers (False is a little faster
    and as good); dropout: probability on embeddings, attention weights and residual branches."""
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")


class KVCache:
    """The keys and values of the tokens seen so far, per layer: each (B, nh, T_past, hs). `len(cache)`
    is T_past, the position of the next token."""

    def __init__(self, n_layer: int):
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new tokens' k, v (B, nh, T, hs) to layer `layer`; return all of them,
        (B, nh, T_past + T, hs) each."""
        if self.keys[layer] is not None:
            k = cat([self.keys[layer], k], dim=2)
            v = cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k.detach(), v.detach()
        return k, v


def causal_mask_bottom_right(Tq: int, Tk: int, device=None) -> Tensor:
    """(Tq, Tk) bool, True where query i may attend to key j: the queries are the last Tq of Tk
    positions, so query i sits at position Tk - Tq + i and sees keys j <= Tk - Tq + i."""
    return creation.arange(Tk, device=device) <= creation.arange(Tq, device=device).unsqueeze(-1) + (Tk - Tq)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it.
    x (B, T, C) -> (B, T, C); with a `cache`, x holds only the new tokens."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.n_embd, self.dropout, self.layer = config.n_head, config.n_embd, config.dropout, layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.extend(self.layer, k, v)  # (B, nh, Tk, hs), Tk = T_past + T
        dropout_p = self.dropout if self.training else 0.0
        Tk = k.shape[2]
        if Tk == T:  # queries and keys are the same positions: the usual (top-left = bottom-right) mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif T == 1:  # one new token (cached decoding): the last position sees every key, nothing to mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            mask = causal_mask_bottom_right(T, Tk, device=x.device)  # (T, Tk)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        # y: (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, C), the heads side by side
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """x (B, T, C) -> Linear(C, 4C) -> GELU -> Linear(4C, C) -> dropout -> (B, T, C). The GELU is GPT-2's
    tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        # gelu(c_fc(x)) with c_fc's bias add fused into the GELU's pass (same values as the modules in turn)
        h = F.bias_gelu(F.linear(x, self.c_fc.weight), self.c_fc.bias, approximate=self.gelu.approximate)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """A pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). (B, T, C) -> (B, T, C)."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The language model: token ids (B, T) -> next-token logits (B, T, vocab_size). Parameter names
    follow nanoGPT's (transformer.wte, transformer.h.0.attn.c_attn, lm_head, ...)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: one (vocab, C) matrix, two uses
        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds its attention and MLP outputs to the residual stream, 2 *
        # n_layer additions in all; N(0, 0.02 / sqrt(2 n_layer)) on the projections that write them keeps
        # the variance of the stream from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """The number of parameters (the tied embedding counted once); non_embedding leaves out the
        position embedding (the token embedding stays: it is also the output layer's weight)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: Tensor, targets: Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) int64 token ids -> (logits (B, T, vocab_size), loss). loss is the mean
        cross-entropy against targets (B, T) int64 (-1 marks positions to ignore), or None without
        targets. With a `cache`, idx holds the tokens after the len(cache) ones it has seen; the cache
        grows by T. At most block_size positions in all."""
        if not isinstance(idx, Tensor) or idx.dtype is not dtypes.int64 or idx.ndim != 2:
            raise TypeError(f"GPT: idx must be an int64 Tensor (B, T), got "
                            f"{f'{idx.dtype} {idx.shape}' if isinstance(idx, Tensor) else type(idx).__name__}")
        B, T = idx.shape
        past = 0 if cache is None else len(cache)
        if past + T > self.config.block_size:
            raise ValueError(f"GPT: cannot attend over {past + T} positions ({past} cached + {T} new), "
                             f"block_size is only {self.config.block_size}")
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(f"GPT: targets must have idx's shape {idx.shape}, got {targets.shape}")
        pos = creation.arange(past, past + T, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)  # (B, T, C)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float] = (0.9, 0.95)) -> AdamW:
        """AdamW with weight decay on the matrices (dim >= 2: the Linear weights and the embeddings) and
        none on the vectors (biases, LayerNorm scales and shifts), whose decay would only pull the
        normalization and offsets toward 0."""
        params = list(self.parameters())
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return AdamW(groups, lr=learning_rate, betas=betas)

    @no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True) -> Tensor:
        """Extend idx (B, T) int64 by max_new_tokens sampled tokens -> (B, T + max_new_tokens). Each token
        is drawn from softmax(logits / temperature), restricted to the top_k most likely when top_k is
        given, from minigrad's global generator (`minigrad.manual_seed` makes it reproducible). The model
        sees the last block_size tokens, as nanoGPT's generate. Call model.eval() first (dropout)."""
        if not temperature > 0:
            raise ValueError(f"generate: temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be >= 1 or None, got {top_k}")
        block_size = self.config.block_size
        cache = KVCache(self.config.n_layer) if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= block_size:
                logits, _ = self(idx[:, len(cache):], cache=cache)  # only the tokens the cache has not seen
            else:
                # Past block_size tokens the window slides: every token's position changes, so cached keys
                # and values (computed at the old positions) are stale. Run the whole window.
                logits, _ = self(idx[:, -block_size:])
            idx_next = sample(logits[:, -1, :], temperature, top_k)  # (B, 1)
            idx = cat([idx, idx_next], dim=1)
        return idx


def sample(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    """One token per row from softmax(logits / temperature), over the top_k largest logits if given:
    logits (B, V) -> (B, 1) int64. Uses the Gumbel-max trick: argmax(z + g), g = -log(-log(u)) with u
    uniform, is distributed as softmax(z), so sampling needs only a uniform draw and an argmax."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = -logits.detach().cpu().numpy()  # the k-th largest logit of each row, on the host (a (B, V) array)
        kth.partition(top_k - 1, axis=-1)
        threshold = creation.tensor(-kth[:, top_k - 1:top_k], dtype=logits.dtype, device=logits.device)  # (B, 1)
        logits = logits.masked_fill(logits < threshold, -math.inf)
    tiny = 1e-20 if logits.dtype is dtypes.float64 else 1e-38  # u = 0 would make log(0) = -inf
    u = creation.rand(*logits.shape, dtype=logits.dtype, device=logits.device).clamp(min=tiny)
    gumbel = -(-u.log()).log()  # (B, V)
    return (logits + gumbel).argmax(dim=-1, keepdim=True)  # (B, 1)
