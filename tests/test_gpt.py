"""minigrad.models.GPT and the text data helpers (minigrad.data.text).

The model: shapes and errors, the loss at initialization, nanoGPT's init, weight tying, the optimizer's
weight-decay groups, parity with a PyTorch transcription of nanoGPT's forward pass (logits, loss and every
parameter's gradient, float64), a few training steps; decoding with the KV cache: cached and uncached
logits at every step of `generate` (float64, past block_size too), the bottom-right causal mask (checked
to fail with a top-left one), sampling (distribution, temperature, top_k) and determinism under
manual_seed. The data: the bundled corpus, the tokenizer, nanoGPT's split and get_batch windows.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad.data import CharTokenizer, get_batch, load_tinyshakespeare, train_val_split
from minigrad.models import GPT, GPTConfig
from minigrad.models import gpt as gpt_module
from minigrad.models.gpt import KVCache, causal_mask_bottom_right, sample
from minigrad.optim import AdamW

SMALL = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def small_model(dtype=mg.float64, seed=0, **overrides) -> GPT:
    mg.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).to(dtype)


def tokens(*shape, vocab=SMALL["vocab_size"], seed=1) -> mg.Tensor:
    return mg.tensor(np.random.default_rng(seed).integers(0, vocab, size=shape))


# ---- the model --------------------------------------------------------------------------------------


def test_forward_shapes():
    model = small_model()
    idx, targets = tokens(3, 5), tokens(3, 5, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 5, SMALL["vocab_size"]) and loss.shape == ()
    logits_only, no_loss = model(idx)
    assert no_loss is None
    np.testing.assert_array_equal(logits_only.detach().numpy(), logits.detach().numpy())


def test_forward_errors():
    model = small_model()
    with pytest.raises(TypeError, match="int64"):
        model(mg.zeros(2, 3))
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(1, SMALL["block_size"] + 1))
    with pytest.raises(ValueError, match="targets"):
        model(tokens(2, 3), tokens(2, 4))
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_loss_at_init_is_log_vocab():
    """Small init (std 0.02) makes the logits nearly equal: the first loss is about ln(vocab_size)."""
    vocab = 65
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=4, n_embd=64))
    _, loss = model(tokens(8, 32, vocab=vocab), tokens(8, 32, vocab=vocab, seed=2))
    assert abs(loss.item() - math.log(vocab)) < 0.05


def test_init_follows_nanogpt():
    """N(0, 0.02) weights, N(0, 0.02 / sqrt(2 n_layer)) on the residual projections, zero biases,
    LayerNorm at (1, 0)."""
    n_layer = 4
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=n_layer, n_head=4, n_embd=96, bias=True))
    for name, p in model.named_parameters():
        values = p.detach().numpy()
        if name.endswith("c_proj.weight"):
            assert values.std() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.05), name
        elif p.ndim == 2:
            assert values.std() == pytest.approx(0.02, rel=0.05), name
        elif ".ln_" in name and name.endswith("weight"):
            assert np.all(values == 1), name
        else:
            assert np.all(values == 0), name


def test_weight_tying():
    model = small_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names  # listed once
    assert model.num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())
    assert model.num_params() == model.num_params(non_embedding=False) - SMALL["block_size"] * SMALL["n_embd"]
    state = model.state_dict()  # both names, as in PyTorch
    np.testing.assert_array_equal(state["lm_head.weight"].numpy(), state["transformer.wte.weight"].numpy())
    other = small_model(seed=1)
    other.load_state_dict(state)
    assert other.lm_head.weight is other.transformer.wte.weight
    np.testing.assert_array_equal(other.lm_head.weight.detach().numpy(), model.lm_head.weight.detach().numpy())


def test_configure_optimizers_decays_matrices_only():
    model = small_model(bias=True)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95))
    assert isinstance(optimizer, AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)
    by_id = {id(p): name for name, p in model.named_parameters()}
    decayed = {by_id[id(p)] for p in decay["params"]}
    plain = {by_id[id(p)] for p in no_decay["params"]}
    assert decayed | plain == set(by_id.values()) and not decayed & plain
    assert decayed == {name for name, p in model.named_parameters() if p.ndim == 2}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight"} <= decayed
    assert {"transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.bias", "transformer.ln_f.bias"} <= plain


def torch_gpt_loss(torch, params: dict, idx, targets, config: GPTConfig):
    """nanoGPT's forward pass, written out with torch.nn.functional on the given parameter tensors."""
    TF = torch.nn.functional
    C, nh = config.n_embd, config.n_head

    def linear(x, name):
        return TF.linear(x, params[f"{name}.weight"], params.get(f"{name}.bias"))

    def layer_norm(x, name):
        return TF.layer_norm(x, (C,), params[f"{name}.weight"], params.get(f"{name}.bias"))

    B, T = idx.shape
    x = params["transformer.wte.weight"][idx] + params["transformer.wpe.weight"][:T]
    for i in range(config.n_layer):
        h = f"transformer.h.{i}"
        q, k, v = linear(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + linear(y, f"{h}.attn.c_proj")
        m = TF.gelu(linear(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc"), approximate="tanh")
        x = x + linear(m, f"{h}.mlp.c_proj")
    logits = TF.linear(layer_norm(x, "transformer.ln_f"), params["transformer.wte.weight"])  # tied lm_head
    return logits, TF.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


@pytest.mark.parametrize("bias", [False, True])
def test_matches_pytorch_nanogpt(bias):
    """Logits, loss and the gradient of every parameter (the tied one gets both uses) against a torch
    transcription of nanoGPT, in float64."""
    torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")
    model = small_model(bias=bias)
    idx, targets = tokens(2, 7), tokens(2, 7, seed=2)
    logits, loss = model(idx, targets)
    loss.backward()
    params = {name: torch.tensor(p.detach().numpy(), requires_grad=True) for name, p in model.named_parameters()}
    ref_logits, ref_loss = torch_gpt_loss(torch, params, torch.tensor(idx.numpy()), torch.tensor(targets.numpy()),
                                          model.config)
    ref_loss.backward()
    np.testing.assert_allclose(logits.detach().numpy(), ref_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), params[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


def test_dropout_only_in_training():
    model = small_model(dropout=0.5)
    idx = tokens(2, 6)
    model.eval()
    a, b = model(idx)[0].detach().numpy(), model(idx)[0].detach().numpy()
    np.testing.assert_array_equal(a, b)
    model.train()
    assert not np.allclose(model(idx)[0].detach().numpy(), a)


def test_training_steps_reduce_the_loss():
    model = small_model(dtype=mg.float32)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.99))
    idx, targets = tokens(4, 8), tokens(4, 8, seed=2)
    losses = []
    for _ in range(30):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---- decoding with the KV cache -------------------------------------------------------------------


def test_bottom_right_mask():
    for tq, tk in [(1, 1), (1, 5), (3, 7), (4, 4)]:
        expected = np.tril(np.ones((tq, tk), dtype=bool), k=tk - tq)  # query i sees keys j <= tk - tq + i
        np.testing.assert_array_equal(causal_mask_bottom_right(tq, tk).numpy(), expected)


def chunked_logits_error(model: GPT, past: int, new: int) -> float:
    """Largest difference between the logits of `new` tokens fed after `past` cached ones and the
    logits of the same positions computed without a cache."""
    idx = tokens(2, past + new)
    full, _ = model(idx)
    cache = KVCache(model.config.n_layer)
    model(idx[:, :past], cache=cache)
    assert len(cache) == past
    chunk, _ = model(idx[:, past:], cache=cache)
    assert len(cache) == past + new
    return float(np.abs(chunk.detach().numpy() - full[:, past:].detach().numpy()).max())


@pytest.mark.parametrize("past, new", [(5, 3), (7, 1), (1, 6)])
def test_cached_chunk_matches_uncached(past, new):
    model = small_model()
    model.eval()
    assert chunked_logits_error(model, past, new) < 1e-10


def test_cached_chunk_needs_the_bottom_right_mask(monkeypatch):
    """The test above fails with a top-left mask (query i sees keys 0..i), the trap of passing is_causal
    when the queries are fewer than the keys."""
    model = small_model()
    model.eval()

    def top_left(tq, tk, device=None):  # query i sees keys j <= i
        return mg.arange(tk, device=device) <= mg.arange(tq, device=device).unsqueeze(-1)

    monkeypatch.setattr(gpt_module, "causal_mask_bottom_right", top_left)
    assert chunked_logits_error(model, 5, 3) > 1e-3


def record_generate(model: GPT, use_cache: bool, seed: int, **kwargs):
    """model.generate's output, and the next-token logits (B, V) it computed at every step."""
    seen = []
    forward = model.forward

    def recording_forward(*args, **kw):
        logits, loss = forward(*args, **kw)
        seen.append(logits[:, -1].numpy())
        return logits, loss

    model.forward = recording_forward
    try:
        mg.manual_seed(seed)
        out = model.generate(tokens(2, 3), use_cache=use_cache, **kwargs)
    finally:
        del model.forward
    return out.numpy(), seen


@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.7, "top_k": 4}])
def test_cached_and_uncached_logits_agree_at_every_step(kwargs):
    """3 prompt tokens + 12 new ones with block_size 8: the cache serves the steps up to 8 tokens, then
    the window slides (and the cache is bypassed); at every step both decoders see the same logits."""
    model = small_model()
    model.eval()
    out, cached = record_generate(model, True, seed=3, max_new_tokens=12, **kwargs)
    ref, uncached = record_generate(model, False, seed=3, max_new_tokens=12, **kwargs)
    assert len(cached) == len(uncached) == 12
    for step, (a, b) in enumerate(zip(cached, uncached)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"step {step}")
    np.testing.assert_array_equal(out, ref)
    assert out.shape == (2, 15)


def test_generate_is_deterministic_under_manual_seed():
    model = small_model(dtype=mg.float32)
    model.eval()
    prompt = tokens(2, 3)
    runs = []
    for seed in (5, 5, 6):
        mg.manual_seed(seed)
        runs.append(model.generate(prompt, max_new_tokens=30).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    np.testing.assert_array_equal(runs[0][:, :3], prompt.numpy())  # the prompt is kept


def test_top_k_one_is_greedy():
    model = small_model()
    model.eval()
    out = model.generate(tokens(1, 2), max_new_tokens=10, top_k=1)
    idx = tokens(1, 2)
    for _ in range(10):
        logits, _ = model(idx[:, -SMALL["block_size"]:])
        idx = mg.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    np.testing.assert_array_equal(out.numpy(), idx.numpy())


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 3)])
def test_sample_follows_softmax(temperature, top_k):
    """Frequencies of 40,000 draws against softmax(logits / temperature) over the top_k logits
    (within 5 standard errors), and no draw outside the top_k."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 40_000
    mg.manual_seed(0)
    draws = sample(mg.tensor(np.tile(logits, (n, 1))), temperature, top_k).numpy()
    assert draws.shape == (n, 1)
    z = logits / temperature
    if top_k is not None:
        z = np.where(logits >= np.sort(logits)[-top_k], z, -np.inf)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    freq = np.bincount(draws[:, 0], minlength=len(logits)) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (freq, p)


def test_generate_errors():
    model = small_model()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(tokens(1, 2), 3, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(tokens(1, 2), 3, top_k=0)


# ---- text data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text():
    return load_tinyshakespeare()


def test_bundled_tinyshakespeare(text):
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\n")


def test_char_tokenizer_round_trip(text, tmp_path):
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype is mg.int64 and ids.shape == (len(text),)
    assert tok.decode(ids) == text
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded.chars == tok.chars
    np.testing.assert_array_equal(loaded.encode("ROMEO: ay?\n").numpy(), tok.encode("ROMEO: ay?\n").numpy())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("caf\u00e9")
    with pytest.raises(ValueError, match="ids"):
        tok.decode([tok.vocab_size])


def test_train_val_split(text):
    data = CharTokenizer.from_text(text).encode(text)
    train, val = train_val_split(data)
    n = len(text)
    assert train.shape == (int(0.9 * n),) and val.shape == (n - int(0.9 * n),)
    np.testing.assert_array_equal(np.concatenate([train.numpy(), val.numpy()]), data.numpy())  # in order
    with pytest.raises(ValueError):
        train_val_split(data, 1.0)


def test_get_batch_windows():
    """On data = 0, 1, 2, ... a window's tokens are its positions: each row of x is a run of block_size
    consecutive positions inside the data, and y is x shifted by one."""
    n, block, batch = 100, 16, 64
    data = mg.arange(n)
    x, y = get_batch(data, block, batch, np.random.default_rng(0))
    assert x.shape == y.shape == (batch, block) and x.dtype is y.dtype is mg.int64
    x, y = x.numpy(), y.numpy()
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(block))
    np.testing.assert_array_equal(y, x + 1)
    assert x.min() >= 0 and y.max() <= n - 1
    assert len(np.unique(x[:, 0])) > 1  # random offsets
    offsets = np.random.default_rng(0).integers(0, n - block, size=batch)  # the documented draw
    np.testing.assert_array_equal(x[:, 0], offsets)
    again, _ = get_batch(data, block, batch, np.random.default_rng(0))
    np.testing.assert_array_equal(again.numpy(), x)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(data, n, 2, 0)
    with pytest.raises(TypeError, match="int64"):
        get_batch(mg.zeros(n), block, 2, 0)
