"""scaled_dot_product_attention and MultiheadAttention against PyTorch: outputs, attention weights, and
the gradients of the inputs, of float masks and of every parameter (the same state_dict is loaded into
both layers), for the options of each; plus the documented behaviours (fully masked rows give 0, the
fused path keeps no (L, S) array, dropout acts on the weights) and the error messages.

Tolerances: float32 1e-5 (outputs are O(1)), float64 1e-10.
"""
from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")
import torch.nn.functional as TF  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad import nn  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402
from minigrad.nn.functional.attention import attention, attention_weights  # noqa: E402

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pair(array, requires_grad=None):
    """(minigrad tensor, torch tensor) of the same values; float arrays require grad by default."""
    array = np.ascontiguousarray(array)
    if requires_grad is None:
        requires_grad = array.dtype.kind == "f"
    return mg.tensor(array, requires_grad=requires_grad), torch.tensor(array, requires_grad=requires_grad)


def close(mine, ref, what, dtype=None):
    mine = mine.detach().numpy() if isinstance(mine, mg.Tensor) else mine
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    assert mine.shape == ref.shape, f"{what}: shape {mine.shape} != torch's {ref.shape}"
    assert mine.dtype == ref.dtype, f"{what}: dtype {mine.dtype} != torch's {ref.dtype}"
    np.testing.assert_allclose(mine, ref, err_msg=what, **TOL[(dtype or ref.dtype).type])


def backward_both(rng, mine, ref):
    """Back-propagate the same random cotangent through both outputs (never .sum())."""
    cotangent = rng.standard_normal(ref.shape).astype(ref.detach().numpy().dtype)
    mine.backward(mg.tensor(cotangent))
    ref.backward(torch.tensor(cotangent))


def project(rng, mine, ref):
    """<outputs, random cotangents> for tuples of outputs, the same for both frameworks."""
    cotangents = [rng.standard_normal(tuple(r.shape)) for r in ref]
    return (sum((m * mg.tensor(c, dtype=m.dtype)).sum() for m, c in zip(mine, cotangents)),
            sum((r * torch.tensor(c, dtype=r.dtype)).sum() for r, c in zip(ref, cotangents)))


def check_grads(pairs, what):
    for name, (m, t) in pairs.items():
        assert (m.grad is None) == (t.grad is None), f"{what}: grad of {name} is {m.grad} vs torch {t.grad}"
        if t.grad is not None:
            close(m.grad, t.grad, f"{what}: grad of {name}")


# ---- scaled_dot_product_attention -------------------------------------------------------------------------

def sdpa_parity(rng, dtype, q_shape, k_shape, v_shape, mask=None, mask_grad=False, **kwargs):
    arrays = [rng.standard_normal(s).astype(dtype) for s in (q_shape, k_shape, v_shape)]
    (q, tq), (k, tk), (v, tv) = (pair(a) for a in arrays)
    m_mask = t_mask = None
    if mask is not None:
        m_mask, t_mask = pair(mask, requires_grad=mask_grad)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m_mask, **kwargs)
    ref = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=t_mask, **kwargs)
    close(out, ref, "output")
    backward_both(rng, out, ref)
    tensors = dict(query=(q, tq), key=(k, tk), value=(v, tv))
    if mask_grad:
        tensors["attn_mask"] = (m_mask, t_mask)
    check_grads(tensors, "sdpa")
    return out


SHAPES = {  # name: (query, key, value) shapes
    "4d": ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)),
    "3d": ((3, 5, 4), (3, 7, 4), (3, 7, 6)),
    "2d": ((5, 4), (7, 4), (7, 6)),
    "5d": ((2, 2, 3, 5, 4), (2, 2, 3, 7, 4), (2, 2, 3, 7, 6)),
    "broadcast_batch": ((2, 3, 5, 4), (1, 3, 7, 4), (3, 7, 6)),
    "Tq_gt_Tk": ((2, 1, 7, 3), (2, 1, 2, 3), (2, 1, 2, 5)),
    "one_key": ((2, 3, 1), (2, 1, 1), (2, 1, 2)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_sdpa_matches_torch(rng, dtype, shapes):
    sdpa_parity(rng, dtype, *shapes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [SHAPES["4d"], SHAPES["Tq_gt_Tk"], SHAPES["2d"]], ids=["Tq<Tk", "Tq>Tk", "2d"])
def test_sdpa_causal_is_top_left_aligned(rng, dtype, shapes):
    sdpa_parity(rng, dtype, *shapes, is_causal=True)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_sdpa_scale(rng, scale):
    sdpa_parity(rng, np.float64, *SHAPES["4d"], scale=scale)


MASK_SHAPES = [(5, 7), (1, 7), (1, 5, 7), (3, 1, 7), (2, 1, 5, 7), (2, 3, 5, 7)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
def test_sdpa_bool_mask(rng, dtype, mask_shape):
    mask = rng.random(mask_shape) < 0.7  # True: take part in attention
    sdpa_parity(rng, dtype, *SHAPES["4d"], mask=mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
def test_sdpa_float_mask_is_added(rng, dtype, mask_shape):
    mask = (rng.standard_normal(mask_shape) + np.where(rng.random(mask_shape) < 0.2, -np.inf, 0)).astype(dtype)
    sdpa_parity(rng, dtype, *SHAPES["4d"], mask=mask)


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 1, 5, 7)], ids=str)
def test_sdpa_float_mask_requiring_grad_gets_its_gradient(rng, mask_shape):
    sdpa_parity(rng, np.float64, *SHAPES["4d"], mask=rng.standard_normal(mask_shape), mask_grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_give_zero_like_torch(rng, dtype, kind):
    keep = rng.random((2, 3, 5, 7)) < 0.6
    keep[0, 1, 2] = keep[1, :, 4] = False  # rows with no key at all
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf).astype(dtype)
    out = sdpa_parity(rng, dtype, *SHAPES["4d"], mask=mask)
    assert not np.any(out.detach().numpy()[0, 1, 2]) and not np.any(out.detach().numpy()[1, :, 4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_large_scores_are_stable(rng, dtype):
    q_shape, k_shape, v_shape = SHAPES["4d"]
    q = rng.standard_normal(q_shape) * 60  # scores up to ~1e4: exp overflows without the max shift
    (mq, tq), (mk, tk), (mv, tv) = (pair(a.astype(dtype)) for a in (q, rng.standard_normal(k_shape) * 60,
                                                                   rng.standard_normal(v_shape)))
    out = F.scaled_dot_product_attention(mq, mk, mv)
    ref = TF.scaled_dot_product_attention(tq, tk, tv)
    assert np.isfinite(out.detach().numpy()).all()
    # near one-hot softmax: float32 torch and minigrad round the scores differently; compare loosely there
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-4 if dtype ==
                               np.float32 else 1e-9)


def test_sdpa_fused_and_composite_paths_agree(rng):
    q, k, v = (mg.tensor(rng.standard_normal(s), dtype=mg.float64) for s in SHAPES["4d"])
    bias = mg.tensor(np.where(rng.random((5, 7)) < 0.3, -np.inf, rng.standard_normal((5, 7))), dtype=mg.float64)
    for mask, causal in ((None, True), (bias, False)):
        fused, none = attention(q, k, v, mask, causal, 0.5)
        composite, weights = attention(q, k, v, mask, causal, 0.5, need_weights=True)
        assert none is None
        np.testing.assert_allclose(fused.numpy(), composite.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-12)


def test_sdpa_fused_backward_keeps_no_score_matrix(rng):
    q, k, v = (mg.tensor(rng.standard_normal(s), requires_grad=True) for s in SHAPES["4d"])
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert type(out.grad_fn).__name__ == "Attention"
    saved = [a.shape for a in out.grad_fn.saved_arrays]
    assert (2, 3, 5) in saved, "the per-row logsumexp is saved"
    assert all(s[-2:] != (5, 7) for s in saved), f"a (Tq, Tk) array is kept for backward: {saved}"


def test_sdpa_dropout_drops_attention_weights(rng):
    q, k, v = (mg.tensor(rng.standard_normal(s)) for s in SHAPES["4d"])
    mg.manual_seed(7)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    mg.manual_seed(7)  # the same draw, applied by hand to the weights
    weights = F.dropout(attention_weights(q, k, None, False, 0.5), 0.4)
    np.testing.assert_allclose(out.numpy(), (weights @ v).numpy(), rtol=1e-6, atol=1e-6)
    dropped = weights.numpy() == 0
    assert 0.2 < dropped.mean() < 0.6, "about 40% of the weights are dropped"
    assert not np.allclose(out.numpy(), F.scaled_dot_product_attention(q, k, v).numpy())
    assert not np.any(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy())


def test_sdpa_errors():
    q, k, v = mg.randn(2, 5, 4), mg.randn(2, 7, 4), mg.randn(2, 7, 3)
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        sdpa(q, k, v, attn_mask=mg.ones(5, 7, dtype=mg.bool), is_causal=True)
    with pytest.raises(ValueError, match=r"\(2, 6, 3\)"):
        sdpa(q, k, mg.randn(2, 6, 3))
    with pytest.raises(ValueError, match="key"):
        sdpa(q, mg.randn(2, 7, 3), v)
    with pytest.raises(ValueError, match="at least 2 dims"):
        sdpa(mg.randn(4), k, v)
    with pytest.raises(TypeError, match="one floating point dtype"):
        sdpa(q, k.double(), v)
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, k, v, attn_mask=mg.zeros(5, 7, dtype=mg.float64))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(4, 7\)"):
        sdpa(q, k, v, attn_mask=mg.zeros(4, 7))
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, k, v, dropout_p=1.5)


# ---- MultiheadAttention -----------------------------------------------------------------------------------

def mha_pair(embed_dim, num_heads, dtype=np.float64, **kwargs):
    """A torch MultiheadAttention with random biases and the minigrad one with its state_dict."""
    ref = torch.nn.MultiheadAttention(embed_dim, num_heads, dtype=getattr(torch, np.dtype(dtype).name), **kwargs)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "bias" in name:  # torch starts them at 0: make them matter
                p.uniform_(-1, 1)
    mine = nn.MultiheadAttention(embed_dim, num_heads, dtype=mg.float64 if dtype == np.float64 else mg.float32,
                                 **kwargs)
    assert set(mine.state_dict()) == set(ref.state_dict())
    mine.load_state_dict(ref.state_dict())
    return mine, ref


def mha_parity(rng, dtype=np.float64, *, E=6, heads=3, N=2, L=4, S=5, batched=True, self_attention=False,
               padding=None, mask=None, need_weights=True, average=True, is_causal=False, **kwargs):
    mine, ref = mha_pair(E, heads, dtype, **kwargs)
    batch_first = kwargs.get("batch_first", False)

    def seq(T, D):
        shape = ((N, T) if batch_first else (T, N)) if batched else (T,)
        return pair(rng.standard_normal(shape + (D,)).astype(dtype))
    q = seq(L, E)
    k, v = (q, q) if self_attention else (seq(S, kwargs.get("kdim") or E), seq(S, kwargs.get("vdim") or E))
    masks = {}
    if padding is not None:
        masks["key_padding_mask"] = pair(padding, requires_grad=False)
    if mask is not None:
        masks["attn_mask"] = pair(mask, requires_grad=False)
    options = dict(need_weights=need_weights, average_attn_weights=average, is_causal=is_causal)
    out, weights = mine(q[0], k[0], v[0], **{n: m for n, (m, _) in masks.items()}, **options)
    ref_out, ref_weights = ref(q[1], k[1], v[1], **{n: t for n, (_, t) in masks.items()}, **options)
    close(out, ref_out, "output")
    assert (weights is None) == (ref_weights is None)
    if need_weights:
        close(weights, ref_weights, "attention weights")
    if need_weights:  # one random projection of both outputs
        out, ref_out = project(rng, (out, weights), (ref_out, ref_weights))
    backward_both(rng, out, ref_out)
    tensors = dict(query=q) if self_attention else dict(query=q, key=k, value=v)
    check_grads(tensors, "MultiheadAttention inputs")
    params = dict(ref.named_parameters())
    check_grads({name: (p, params[name]) for name, p in mine.named_parameters()}, "MultiheadAttention parameters")
    return mine, out, weights


MHA_OPTIONS = {
    "seq_first": dict(),
    "batch_first": dict(batch_first=True),
    "self_attention": dict(self_attention=True),
    "self_attention_batch_first": dict(self_attention=True, batch_first=True),
    "kdim_vdim": dict(kdim=2, vdim=5),
    "kdim_vdim_batch_first": dict(kdim=2, vdim=5, batch_first=True),
    "no_bias": dict(bias=False),
    "unbatched": dict(batched=False),
    "unbatched_kdim_vdim": dict(batched=False, kdim=2, vdim=5),
    "one_head": dict(heads=1),
    "heads_not_averaged": dict(average=False),
    "no_weights": dict(need_weights=False),
}


@pytest.mark.parametrize("options", MHA_OPTIONS.values(), ids=MHA_OPTIONS.keys())
def test_multihead_attention_matches_torch(rng, options):
    mha_parity(rng, **options)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_float32(rng, need_weights):
    mha_parity(rng, np.float32, need_weights=need_weights, batch_first=True,
               padding=rng.random((2, 5)) < 0.3, mask=rng.random((4, 5)) < 0.2)


MASKS = {  # name: (key_padding_mask, attn_mask) as functions of rng
    "padding_bool": lambda r: (r.random((2, 5)) < 0.4, None),
    "padding_float": lambda r: (r.standard_normal((2, 5)), None),
    "attn_mask_bool_2d": lambda r: (None, r.random((4, 5)) < 0.3),
    "attn_mask_float_2d": lambda r: (None, r.standard_normal((4, 5))),
    "attn_mask_float_3d": lambda r: (None, r.standard_normal((2 * 3, 4, 5))),
    "attn_mask_bool_3d": lambda r: (None, r.random((2 * 3, 4, 5)) < 0.3),
    "both_bool": lambda r: (r.random((2, 5)) < 0.3, r.random((4, 5)) < 0.3),
    "both_float": lambda r: (r.standard_normal((2, 5)), r.standard_normal((4, 5))),
}


@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("masks", MASKS.values(), ids=MASKS.keys())
def test_multihead_attention_masks(rng, masks, need_weights):
    padding, mask = masks(rng)
    for m in (padding, mask):  # key 0 stays visible to every query (no fully masked rows: torch gives nan)
        if m is not None and m.dtype == bool:
            m[..., 0] = False
    mha_parity(rng, padding=padding, mask=mask, need_weights=need_weights, average=False)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_unbatched_masks(rng, need_weights):
    mha_parity(rng, batched=False, padding=rng.standard_normal(5), mask=rng.standard_normal((3, 4, 5)),
               need_weights=need_weights)


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_is_causal_hint(rng, need_weights, padding):
    causal = np.triu(np.full((4, 4), -np.inf), 1)
    # key 0 is never padding, so no query is left without keys (as float: torch wants both masks alike)
    padding_mask = np.where((rng.random((2, 4)) < 0.3) & (np.arange(4) > 0), -np.inf, 0.0) if padding else None
    mha_parity(rng, self_attention=True, L=4, mask=causal, is_causal=True, need_weights=need_weights,
               padding=padding_mask)


def test_multihead_attention_fully_masked_rows_give_zero(rng):
    """torch gives 0 for a query with no key left when it computes no weights, and nan with weights;
    minigrad gives 0 (output and weights) both ways."""
    padding = rng.random((2, 5)) < 0.3
    padding[1] = True  # every key of batch element 1 is padding
    mine, out, _ = mha_parity(rng, batch_first=True, padding=padding, need_weights=False)
    x, y = mg.tensor(rng.standard_normal((2, 4, 6))), mg.tensor(rng.standard_normal((2, 5, 6)))
    with mg.no_grad():
        out, weights = mine(x, y, y, key_padding_mask=mg.tensor(padding))
    assert not np.any(weights.numpy()[1])
    np.testing.assert_allclose(out.numpy()[1], np.broadcast_to(mine.out_proj.bias.detach().numpy(), (4, 6)))


@mg.no_grad()
def test_multihead_attention_dropout_acts_on_weights_in_training_only(rng):
    mine, _ = mha_pair(6, 3, dropout=0.5)
    x = mg.tensor(rng.standard_normal((4, 2, 6)))
    mine.eval()
    _, eval_weights = mine(x, x, x, average_attn_weights=False)
    mine.train()
    mg.manual_seed(3)
    train_out, train_weights = mine(x, x, x, average_attn_weights=False)
    kept = train_weights.numpy() != 0
    assert 0.25 < kept.mean() < 0.75
    np.testing.assert_allclose(train_weights.numpy()[kept], 2 * eval_weights.numpy()[kept], rtol=1e-12)
    mg.manual_seed(3)  # the fused path (no weights) is not taken with dropout: same draw, same output
    np.testing.assert_allclose(mine(x, x, x, need_weights=False)[0].numpy(), train_out.numpy(), rtol=1e-12)


def test_multihead_attention_parameters_and_init_like_torch():
    mine, ref = nn.MultiheadAttention(8, 2), torch.nn.MultiheadAttention(8, 2)
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    bound = math.sqrt(6 / (8 + 24))  # xavier-uniform of a (24, 8) weight
    w = mine.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and abs(w.mean()) < 0.1
    assert not np.any(mine.in_proj_bias.detach().numpy()) and not np.any(mine.out_proj.bias.detach().numpy())
    assert np.abs(mine.out_proj.weight.detach().numpy()).max() <= 1 / math.sqrt(8)  # Linear's default

    mine, ref = nn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False), \
        torch.nn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False)
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert mine.in_proj_weight is None and mine.in_proj_bias is None
    k_bound = math.sqrt(6 / (8 + 3))
    assert np.abs(mine.k_proj_weight.detach().numpy()).max() <= k_bound
    assert repr(mine) == repr(ref).replace("NonDynamicallyQuantizableLinear", "Linear")


def test_multihead_attention_deepcopy_is_independent(rng):
    mine = nn.MultiheadAttention(6, 3)
    clone = copy.deepcopy(mine)
    x = mg.tensor(rng.standard_normal((4, 2, 6)))
    np.testing.assert_array_equal(clone(x, x, x)[0].detach().numpy(), mine(x, x, x)[0].detach().numpy())
    with mg.no_grad():
        clone.in_proj_weight.mul_(2)
    assert not np.allclose(clone.in_proj_weight.detach().numpy(), mine.in_proj_weight.detach().numpy())


def test_multihead_attention_errors():
    with pytest.raises(NotImplementedError):
        nn.MultiheadAttention(4, 2, add_bias_kv=True)
    with pytest.raises(NotImplementedError):
        nn.MultiheadAttention(4, 2, add_zero_attn=True)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(6, 4)
    m = nn.MultiheadAttention(4, 2)
    x = mg.randn(3, 2, 4)
    with pytest.raises(ValueError, match="pass attn_mask too"):
        m(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="feature sizes"):
        m(x, mg.randn(3, 2, 5), x)
    with pytest.raises(ValueError, match="3-D"):
        m(x, mg.randn(3, 4), x)
    with pytest.raises(ValueError, match="batch size"):
        m(x, mg.randn(3, 1, 4), mg.randn(3, 1, 4))
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(3, 2\)"):
        m(x, x, x, key_padding_mask=mg.zeros(3, 2, dtype=mg.bool))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(2, 3, 3\)"):
        m(x, x, x, attn_mask=mg.zeros(2, 3, 3))
    with pytest.raises(TypeError, match="attn_mask must be bool or floating point"):
        m(x, x, x, attn_mask=mg.zeros(3, 3, dtype=mg.int64))
