"""The Transformer layers against PyTorch: TransformerEncoderLayer, TransformerDecoderLayer, their stacks and
the whole Transformer load torch's state_dict and give the same outputs, input gradients and gradients of
every parameter, in eval mode (dropout 0.1, inactive) and in train mode with dropout=0.0, post- and
pre-norm, relu and gelu (by name, as a function, as a module), batch_first both ways, unbatched inputs,
and with every mask. Also: torch's parameter names and initialization, deep copies, causal-mask
detection, dropout in training, and the error messages.

Tolerance: float64 1e-10 (the layers are compared in float64, where the implementations agree to rounding).
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
from minigrad.ops.attention import Attention  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")

D_MODEL, NHEAD, D_FF = 8, 2, 12
S, T, N = 5, 4, 3  # source length, target length, batch


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def close(mine, ref, what):
    mine = mine.detach().numpy() if isinstance(mine, mg.Tensor) else mine
    ref = ref.detach().numpy()
    assert mine.shape == ref.shape, f"{what}: shape {mine.shape} != torch's {ref.shape}"
    np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-10, err_msg=what)


def randomize(ref: torch.nn.Module, rng) -> None:
    """Give torch's biases (zeros) and LayerNorm weights (ones) random values, so that they matter."""
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.tensor(rng.uniform(0.5, 1.5, p.shape) if "norm" in name and name.endswith("weight")
                                     else rng.uniform(-0.5, 0.5, p.shape)))


def build(rng, torch_factory, mine_factory):
    ref = torch_factory().double()
    randomize(ref, rng)
    mine = mine_factory().double()
    assert set(mine.state_dict()) == set(ref.state_dict()), "parameter names differ from torch's"
    mine.load_state_dict(ref.state_dict())
    return mine, ref


ACTIVATIONS = {  # name: (torch's activation, minigrad's)
    "relu": ("relu", "relu"),
    "gelu": ("gelu", "gelu"),
    "gelu_function": (TF.gelu, F.gelu),
    "gelu_module": (torch.nn.GELU, nn.GELU),  # a module instance: registered as the submodule `activation`
    "relu_function": (TF.relu, F.relu),
}


def activation_pair(name):
    ref, mine = ACTIVATIONS[name]
    return (ref(), mine()) if isinstance(ref, type) else (ref, mine)


def layer_pair(rng, kind, activation="relu", train=False, **options):
    ref_act, mine_act = activation_pair(activation)
    dropout = 0.0 if train else 0.1
    ref_cls, mine_cls = ((torch.nn.TransformerEncoderLayer, nn.TransformerEncoderLayer) if kind == "encoder"
                         else (torch.nn.TransformerDecoderLayer, nn.TransformerDecoderLayer))
    mine, ref = build(rng, lambda: ref_cls(D_MODEL, NHEAD, D_FF, dropout, ref_act, **options),
                      lambda: mine_cls(D_MODEL, NHEAD, D_FF, dropout, mine_act, **options))
    return mine.train(train), ref.train(train)


def sequence(rng, length, batch_first=False, batched=True):
    shape = ((N, length) if batch_first else (length, N)) if batched else (length,)
    array = rng.standard_normal(shape + (D_MODEL,))
    return mg.tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def masks(rng, names: dict, kind: str, causal=()):
    """{argument name: (minigrad mask, torch mask)} for {argument name: shape}; kind 'float' (additive, -inf
    where masked) or 'bool' (True where masked). The masks named in `causal` hide the future; the others
    are random, but never hide key 0, so that every query keeps a key."""
    out = {}
    for name, shape in names.items():
        masked = (rng.random(shape) < 0.3) & (np.arange(shape[-1]) > 0)
        if name in causal:
            masked = np.triu(np.ones(shape, dtype=bool), 1)
        array = masked if kind == "bool" else np.where(masked, -np.inf, rng.standard_normal(shape) * 0.1)
        out[name] = (mg.tensor(array), torch.tensor(array))
    return out


def compare(rng, mine, ref, inputs: dict, mask_args: dict, **flags):
    """Run both with the same inputs and masks; compare outputs, input grads and parameter grads."""
    out = mine(*(m for m, _ in inputs.values()), **{k: m for k, (m, _) in mask_args.items()}, **flags)
    ref_out = ref(*(t for _, t in inputs.values()), **{k: t for k, (_, t) in mask_args.items()}, **flags)
    close(out, ref_out, "output")
    cotangent = rng.standard_normal(tuple(ref_out.shape))
    out.backward(mg.tensor(cotangent, dtype=mg.float64))
    ref_out.backward(torch.tensor(cotangent))
    for name, (m, t) in inputs.items():
        close(m.grad, t.grad, f"grad of {name}")
    params = dict(ref.named_parameters())
    for name, p in mine.named_parameters():
        close(p.grad, params[name].grad, f"grad of parameter {name}")


MODES = [pytest.param(False, id="eval_dropout0.1"), pytest.param(True, id="train_dropout0")]


# ---- layers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_encoder_layer_matches_torch(rng, norm_first, activation, train):
    mine, ref = layer_pair(rng, "encoder", activation, train, norm_first=norm_first)
    compare(rng, mine, ref, dict(src=sequence(rng, S)), {})


@pytest.mark.parametrize("mask_kind", ["float", "bool"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_encoder_layer_masks(rng, norm_first, batch_first, mask_kind):
    mine, ref = layer_pair(rng, "encoder", "gelu", train=True, norm_first=norm_first, batch_first=batch_first)
    mask_args = masks(rng, dict(src_mask=(S, S), src_key_padding_mask=(N, S)), mask_kind)
    compare(rng, mine, ref, dict(src=sequence(rng, S, batch_first)), mask_args)


def test_encoder_layer_unbatched_and_is_causal(rng):
    mine, ref = layer_pair(rng, "encoder", "relu", train=True, batch_first=True)
    causal = nn.Transformer.generate_square_subsequent_mask(S, dtype=mg.float64)
    mask_args = dict(src_mask=(causal, torch.nn.Transformer.generate_square_subsequent_mask(S, dtype=torch.float64)))
    compare(rng, mine, ref, dict(src=sequence(rng, S, batched=False)), mask_args, is_causal=True)


@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("activation", ["relu", "gelu_module"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_decoder_layer_matches_torch(rng, norm_first, activation, train):
    mine, ref = layer_pair(rng, "decoder", activation, train, norm_first=norm_first)
    compare(rng, mine, ref, dict(tgt=sequence(rng, T), memory=sequence(rng, S)), {})


@pytest.mark.parametrize("mask_kind", ["float", "bool"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_decoder_layer_masks(rng, norm_first, batch_first, mask_kind):
    mine, ref = layer_pair(rng, "decoder", "relu", train=True, norm_first=norm_first, batch_first=batch_first)
    mask_args = masks(rng, dict(tgt_mask=(T, T), memory_mask=(T, S), tgt_key_padding_mask=(N, T),
                                memory_key_padding_mask=(N, S)), mask_kind, causal=["tgt_mask"])
    compare(rng, mine, ref, dict(tgt=sequence(rng, T, batch_first), memory=sequence(rng, S, batch_first)),
            mask_args, tgt_is_causal=True)


def test_decoder_layer_unbatched(rng):
    mine, ref = layer_pair(rng, "decoder", "gelu", train=True)
    mask_args = masks(rng, dict(tgt_mask=(T, T), memory_key_padding_mask=(S,)), "float")
    compare(rng, mine, ref, dict(tgt=sequence(rng, T, batched=False), memory=sequence(rng, S, batched=False)),
            mask_args)


# ---- stacks and the whole model ------------------------------------------------------------------------------

@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_encoder_stack_matches_torch(rng, norm_first, train):
    dropout = 0.0 if train else 0.1
    mine, ref = build(rng, lambda: torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, dropout, norm_first=norm_first), 2,
        torch.nn.LayerNorm(D_MODEL), enable_nested_tensor=False),
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, dropout, norm_first=norm_first),
                                      2, nn.LayerNorm(D_MODEL)))
    mine.train(train), ref.train(train)
    compare(rng, mine, ref, dict(src=sequence(rng, S)),
            masks(rng, dict(mask=(S, S), src_key_padding_mask=(N, S)), "float"))


@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_decoder_stack_matches_torch(rng, norm_first, train):
    dropout = 0.0 if train else 0.1
    mine, ref = build(rng, lambda: torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(D_MODEL, NHEAD, D_FF, dropout, norm_first=norm_first, batch_first=True), 2,
        torch.nn.LayerNorm(D_MODEL)),
        lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(D_MODEL, NHEAD, D_FF, dropout, norm_first=norm_first,
                                                                 batch_first=True), 2, nn.LayerNorm(D_MODEL)))
    mine.train(train), ref.train(train)
    compare(rng, mine, ref, dict(tgt=sequence(rng, T, True), memory=sequence(rng, S, True)),
            masks(rng, dict(tgt_mask=(T, T), tgt_key_padding_mask=(N, T), memory_key_padding_mask=(N, S)), "bool",
                  causal=["tgt_mask"]))


def transformer_pair(rng, train=False, **options):
    dropout = 0.0 if train else 0.1
    mine, ref = build(rng, lambda: torch.nn.Transformer(D_MODEL, NHEAD, 2, 2, D_FF, dropout, **options),
                      lambda: nn.Transformer(D_MODEL, NHEAD, 2, 2, D_FF, dropout, **options))
    return mine.train(train), ref.train(train)


@pytest.mark.parametrize("train", MODES)
@pytest.mark.parametrize("options", [dict(), dict(batch_first=True, norm_first=True, activation="gelu")],
                         ids=["default", "batch_first_pre_norm_gelu"])
def test_transformer_matches_torch(rng, options, train):
    mine, ref = transformer_pair(rng, train, **options)
    batch_first = options.get("batch_first", False)
    mask_args = masks(rng, dict(src_mask=(S, S), tgt_mask=(T, T), memory_mask=(T, S), src_key_padding_mask=(N, S),
                                tgt_key_padding_mask=(N, T), memory_key_padding_mask=(N, S)), "float")
    compare(rng, mine, ref, dict(src=sequence(rng, S, batch_first), tgt=sequence(rng, T, batch_first)), mask_args)


def test_transformer_unbatched_with_causal_target(rng):
    mine, ref = transformer_pair(rng, train=True, bias=False)
    mask_args = dict(tgt_mask=(nn.Transformer.generate_square_subsequent_mask(T, dtype=mg.float64),
                               torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)))
    compare(rng, mine, ref, dict(src=sequence(rng, S, batched=False), tgt=sequence(rng, T, batched=False)),
            mask_args, tgt_is_causal=True)


def test_generate_square_subsequent_mask_matches_torch():
    for sz in (1, 4):
        mask = nn.Transformer.generate_square_subsequent_mask(sz)
        ref = torch.nn.Transformer.generate_square_subsequent_mask(sz)
        assert mask.dtype is mg.float32
        np.testing.assert_array_equal(mask.numpy(), ref.numpy())


@mg.no_grad()
def test_causal_mask_is_detected_and_used_by_the_fused_kernel(rng, monkeypatch):
    calls = []
    forward = Attention.forward

    def spy(self, q, k, v, bias, is_causal, scale):
        calls.append((bias is None, is_causal))
        return forward(self, q, k, v, bias, is_causal, scale)
    monkeypatch.setattr(Attention, "forward", spy)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, 0.0), 2)
    x = mg.tensor(rng.standard_normal((S, N, D_MODEL)), dtype=mg.float32)
    causal = nn.Transformer.generate_square_subsequent_mask(S)
    detected = encoder(x, mask=causal)
    assert calls == [(True, True)] * 2, "the causal mask is replaced by the kernel's is_causal"
    calls.clear()
    explicit = encoder(x, mask=causal, is_causal=False)
    assert calls == [(False, False)] * 2
    np.testing.assert_allclose(detected.numpy(), explicit.numpy(), rtol=1e-5, atol=1e-5)
    calls.clear()
    encoder(x, mask=mg.zeros(S, S))  # not causal: used as a mask
    assert calls == [(False, False)] * 2


# ---- parameters, copies, dropout, errors ----------------------------------------------------------------------

def test_transformer_parameters_and_init_like_torch():
    mine, ref = nn.Transformer(D_MODEL, NHEAD, 2, 1, D_FF), torch.nn.Transformer(D_MODEL, NHEAD, 2, 1, D_FF)
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for name, p in mine.named_parameters():
        values = p.detach().numpy()
        if p.ndim > 1:  # xavier-uniform
            fan_out, fan_in = p.shape
            assert np.abs(values).max() <= math.sqrt(6 / (fan_in + fan_out)), name
        elif name.endswith("norm1.weight") or name.endswith("norm.weight"):
            np.testing.assert_array_equal(values, 1.0, err_msg=name)
    assert mine.encoder.layers[0].linear1.weight is not mine.encoder.layers[1].linear1.weight
    assert not np.array_equal(mine.encoder.layers[0].linear1.weight.detach().numpy(),
                              mine.encoder.layers[1].linear1.weight.detach().numpy()), "re-initialized per layer"


def test_layer_with_module_activation_registers_it_like_torch():
    mine = nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, activation=nn.GELU())
    ref = torch.nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, activation=torch.nn.GELU())
    assert [n for n, _ in mine.named_children()] == [n for n, _ in ref.named_children()]


def test_deepcopy_gives_independent_layers(rng):
    template = nn.TransformerDecoderLayer(D_MODEL, NHEAD, D_FF, 0.0, activation=nn.GELU())
    decoder = nn.TransformerDecoder(template, 2)
    assert all(layer is not template for layer in decoder.layers)
    tgt, memory = (mg.tensor(rng.standard_normal(shape), dtype=mg.float32)
                   for shape in ((T, N, D_MODEL), (S, N, D_MODEL)))
    with mg.no_grad():
        before = decoder.layers[0](tgt, memory).numpy()
        np.testing.assert_array_equal(before, template(tgt, memory).numpy())
        template.linear1.weight.mul_(2)
        decoder.layers[1].self_attn.in_proj_weight.zero_()
        np.testing.assert_array_equal(decoder.layers[0](tgt, memory).numpy(), before)
        assert np.any(decoder.layers[0].self_attn.in_proj_weight.detach().numpy())
    clone = copy.deepcopy(decoder)
    for (name, p), q in zip(decoder.named_parameters(), clone.parameters()):
        assert p is not q and not np.shares_memory(p.detach().numpy(), q.detach().numpy()), name


def test_dropout_is_active_in_training(rng):
    layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, D_FF, dropout=0.5)
    x = mg.tensor(rng.standard_normal((S, N, D_MODEL)), dtype=mg.float32)
    with mg.no_grad():
        mg.manual_seed(0)
        first = layer(x).numpy()
        second = layer(x).numpy()
        mg.manual_seed(0)
        again = layer(x).numpy()
        evaluated = layer.eval()(x).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, evaluated)


def test_transformer_errors():
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(D_MODEL, NHEAD, activation="tanh")
    model = nn.Transformer(D_MODEL, NHEAD, 1, 1, D_FF)
    with pytest.raises(ValueError, match="batch size"):
        model(mg.randn(S, 2, D_MODEL), mg.randn(T, 3, D_MODEL))
    with pytest.raises(ValueError, match="d_model"):
        model(mg.randn(S, 2, D_MODEL), mg.randn(T, 2, D_MODEL + 1))
