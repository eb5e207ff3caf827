"""nanoGPT's model in PyTorch, with minigrad.models.GPT's parameter names and layout (pre-LN blocks, causal
attention through scaled_dot_product_attention, tanh GELU, weight tying, no dropout), so that
`TorchGPT(config).load_state_dict(...)` takes minigrad's weights: the reference side of the GPT benchmarks
(bench/gpt_cpu_tiny.py, the gpt_step case). Imports torch: only the torch side imports this module."""
import torch
import torch.nn as tnn
from torch.nn import functional as TF


class CausalSelfAttention(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.n_embd = c.n_head, c.n_embd
        self.c_attn = tnn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = tnn.Linear(c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.c_attn(x).split(self.n_embd, dim=2))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

class Block(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.ln_2 = tnn.LayerNorm(c.n_embd, bias=c.bias), tnn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = CausalSelfAttention(c)
        self.mlp = tnn.Sequential()
        self.mlp.add_module("c_fc", tnn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias))
        self.mlp.add_module("gelu", tnn.GELU(approximate="tanh"))
        self.mlp.add_module("c_proj", tnn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class TorchGPT(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = tnn.ModuleDict(dict(
            wte=tnn.Embedding(c.vocab_size, c.n_embd), wpe=tnn.Embedding(c.block_size, c.n_embd),
            h=tnn.ModuleList([Block(c) for _ in range(c.n_layer)]), ln_f=tnn.LayerNorm(c.n_embd, bias=c.bias)))
        self.lm_head = tnn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

