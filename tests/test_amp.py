"""Mixed precision: minigrad.autocast (which ops run in which dtype, against torch.autocast on the CPU),
and minigrad.amp.GradScaler (the scale sequence, skipped steps and parameter updates against
torch.amp.GradScaler("cpu"), step for step)."""
from __future__ import annotations

import contextvars
import math

import numpy as np
import pytest
import torch

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.amp import GradScaler, autocast
from minigrad.testing import gradcheck

HALVES = [mg.float16, mg.bfloat16]
EPS = {mg.float16: 2.0 ** -10, mg.bfloat16: 2.0 ** -7}


def torch_dtype(dtype):
    return getattr(torch, dtype.name)


def pair(*shape, seed=0, positive=False):
    """The same float32 values as a minigrad and a torch tensor."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    values = np.abs(values) + 0.5 if positive else values
    return mg.tensor(values), torch.tensor(values)


# ---- autocast: the dtype each op runs in, against torch ------------------------------------------------

def _ops():
    """name -> (minigrad fn, torch fn, argument pairs)."""
    (x, tx), (w, tw), (b, tb) = pair(4, 8), pair(6, 8, seed=1), pair(6, seed=2)
    (img, timg), (k, tk) = pair(2, 3, 5, 5, seed=3), pair(4, 3, 3, 3, seed=4)
    (q, tq), (p, tp) = pair(2, 2, 5, 8, seed=5), pair(4, 8, seed=6, positive=True)
    y, ty = mg.tensor([0, 3, 5, 1]), torch.tensor([0, 3, 5, 1])
    return {
        "matmul": (lambda a, c: a @ c.T, lambda a, c: a @ c.T, (x, w), (tx, tw)),
        "linear": (F.linear, torch.nn.functional.linear, (x, w, b), (tx, tw, tb)),
        "conv2d": (lambda a, c: F.conv2d(a, c, padding=1), lambda a, c: torch.nn.functional.conv2d(a, c, padding=1),
                   (img, k), (timg, tk)),
        "scaled_dot_product_attention": (lambda a: F.scaled_dot_product_attention(a, a, a, is_causal=True),
                                         lambda a: torch.nn.functional.scaled_dot_product_attention(a, a, a, is_causal=True),
                                         (q,), (tq,)),
        "cross_entropy": (lambda a: F.cross_entropy(a @ w.T, y), lambda a: torch.nn.functional.cross_entropy(a @ tw.T, ty),
                          (x,), (tx,)),
        "nll_loss": (lambda a: F.nll_loss(a @ w.T, y), lambda a: torch.nn.functional.nll_loss(a @ tw.T, ty), (x,), (tx,)),
        "mse_loss": (lambda a: F.mse_loss(a @ w.T, b.expand(4, 6)),
                     lambda a: torch.nn.functional.mse_loss(a @ tw.T, tb.expand(4, 6)), (x,), (tx,)),
        "add_promotes": (lambda a: a @ w.T + b, lambda a: a @ tw.T + tb, (x,), (tx,)),
        "relu_keeps": (lambda a: (a @ w.T).relu(), lambda a: (a @ tw.T).relu(), (x,), (tx,)),
        # float32 ops of torch's CUDA list, which torch's CPU autocast leaves in 16 bits (see autocast_mode.py):
        "softmax": (lambda a: (a @ w.T).softmax(-1), lambda a: (a @ tw.T).softmax(-1), (x,), (tx,)),
        "log_softmax": (lambda a: (a @ w.T).log_softmax(-1), lambda a: (a @ tw.T).log_softmax(-1), (x,), (tx,)),
        "layer_norm": (lambda a: F.layer_norm(a @ w.T, (6,)), lambda a: torch.nn.functional.layer_norm(a @ tw.T, (6,)),
                       (x,), (tx,)),
        "exp": (lambda a: (a @ w.T).exp(), lambda a: (a @ tw.T).exp(), (x,), (tx,)),
        "log": (lambda a: (a @ a.T).abs().log(), lambda a: (a @ a.T).abs().log(), (p,), (tp,)),
        "pow": (lambda a: (a @ w.T) ** 2, lambda a: (a @ tw.T) ** 2, (x,), (tx,)),
    }


FLOAT32_HERE_16_BIT_IN_TORCH_CPU = {"softmax", "log_softmax", "layer_norm", "exp", "log", "pow"}


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("name", list(_ops()))
def test_each_op_runs_in_the_dtype_torch_autocast_gives_it(name, dtype):
    fn, torch_fn, args, torch_args = _ops()[name]
    with autocast("cpu", dtype=dtype):
        out = fn(*args)
    with torch.autocast("cpu", dtype=torch_dtype(dtype)):
        expected = torch_fn(*torch_args)
    if name in FLOAT32_HERE_16_BIT_IN_TORCH_CPU:
        assert out.dtype is mg.float32 and expected.dtype == torch_dtype(dtype)
    else:
        assert out.dtype.name == str(expected.dtype).removeprefix("torch.")
    np.testing.assert_allclose(out.detach().float().numpy(), expected.detach().float().numpy(),
                               rtol=4 * EPS[dtype], atol=4 * EPS[dtype] * float(expected.abs().max().float()))


class Block(nn.Module):
    """A pre-norm transformer block with an MLP: layer_norm, attention, linear, gelu, residuals."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x, functional):  # x (B, T, d); `functional` is minigrad's F or torch's
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(functional.gelu(self.fc(x)))


class TorchBlock(torch.nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = torch.nn.LayerNorm(d), torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    forward = Block.forward


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_transformer_block_under_autocast_matches_torch(dtype):
    mg.manual_seed(0)
    ours, theirs = Block(), TorchBlock()
    theirs.load_state_dict({k: torch.tensor(v.detach().numpy()) for k, v in ours.state_dict().items()})
    x, tx = pair(2, 5, 16, seed=7)
    with autocast("cpu", dtype=dtype):
        out = ours(x, F)
    with torch.autocast("cpu", dtype=torch_dtype(dtype)):
        expected = theirs(tx, torch.nn.functional)
    assert out.dtype is mg.float32 and expected.dtype == torch.float32  # the residual x + 16-bit: promoted
    np.testing.assert_allclose(out.float().detach().numpy(), expected.float().detach().numpy(),
                               rtol=8 * EPS[dtype], atol=8 * EPS[dtype])
    (out * out).sum().backward()
    (expected * expected).sum().backward()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert p.dtype is mg.float32 and p.grad.dtype is mg.float32, name  # float32 master weights
        scale = float(tp.grad.abs().max())
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), atol=16 * EPS[dtype] * scale, err_msg=name)


def test_nested_disabled_autocast_and_other_devices_leave_ops_alone():
    x = mg.randn(3, 4)
    with autocast("cpu"):
        assert (x @ x.T).dtype is mg.bfloat16 and mg.amp.is_autocast_enabled("cpu")
        with autocast("cpu", enabled=False):
            assert (x @ x.T).dtype is mg.float32 and not mg.amp.is_autocast_enabled("cpu")
            with autocast("cpu", dtype=mg.float16):
                assert (x @ x.T).dtype is mg.float16
        assert (x @ x.T).dtype is mg.bfloat16
    with autocast("cuda"):  # only tensors on a CUDA device are affected
        assert (x @ x.T).dtype is mg.float32 and mg.amp.get_autocast_dtype("cuda") is mg.float16
    assert (x @ x.T).dtype is mg.float32 and not mg.amp.is_autocast_enabled("cpu")


def test_autocast_as_decorator_and_contextvar():
    @autocast("cpu", dtype=mg.float16)
    def product(a):
        return a @ a

    x = mg.randn(2, 2)
    assert product(x).dtype is mg.float16 and (x @ x).dtype is mg.float32
    with autocast("cpu"):
        outside = contextvars.Context()  # a context copied before the block: autocast is off there
    assert outside.run(lambda: (x @ x).dtype) is mg.float32
    with autocast("cpu"):
        inside = contextvars.copy_context()
    assert inside.run(lambda: (x @ x).dtype) is mg.bfloat16


def test_float64_and_integer_inputs_are_not_cast_and_gradcheck_is_unaffected():
    x = mg.randn(3, 3, dtype=mg.float64, requires_grad=True)
    with autocast("cpu"):
        assert (x @ x).dtype is mg.float64 and (x.softmax(-1)).dtype is mg.float64
        assert (mg.arange(3) * 2).dtype is mg.int64
        assert gradcheck(lambda t: F.layer_norm(t @ t.T, (3,)).softmax(-1), x)
    assert gradcheck(lambda t: t @ t.T, x)


@pytest.mark.parametrize("kwargs, error", [
    (dict(device_type="tpu"), "device_type"),
    (dict(device_type="cpu", dtype=mg.float32), "dtype"),
    (dict(device_type="cpu", dtype=mg.int64), "dtype"),
])
def test_autocast_rejects_unknown_devices_and_dtypes(kwargs, error):
    with pytest.raises(ValueError, match=error):
        autocast(**kwargs)


def test_training_a_tiny_model_under_bfloat16_autocast_reduces_the_loss():
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 3))
    x = mg.randn(64, 10)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = mg.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        with autocast("cpu", dtype=mg.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype is mg.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0], losses


# ---- GradScaler against torch's, step for step ---------------------------------------------------------

OPTIMIZERS = {
    "SGD": (lambda ps: mg.optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    "Adam": (lambda ps: mg.optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "AdamW": (lambda ps: mg.optim.AdamW(ps, lr=0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
    "RMSprop": (lambda ps: mg.optim.RMSprop(ps, lr=0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
}
# the loss factor of each iteration: inf and nan make every gradient non-finite (a skipped step)
FACTORS = [1.0, 1.0, math.inf, 1.0, 1.0, 1.0, math.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1e38, 1.0]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # the injected inf
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_grad_scaler_matches_torch_step_for_step(optimizer):
    make, make_torch = OPTIMIZERS[optimizer]
    (w, tw), (x, tx) = pair(3, 4, seed=8), pair(5, 4, seed=9)
    w.requires_grad_()
    tw.requires_grad_()
    opt, topt = make([w]), make_torch([tw])
    options = dict(init_scale=2.0 ** 10, growth_factor=3.0, backoff_factor=0.25, growth_interval=3)
    scaler, tscaler = GradScaler("cpu", **options), torch.amp.GradScaler("cpu", **options)
    for i, factor in enumerate(FACTORS):
        opt.zero_grad()
        topt.zero_grad()
        scaler.scale(((x @ w.T).tanh() * factor).sum()).backward()
        tscaler.scale(((tx @ tw.T).tanh() * factor).sum()).backward()
        before = w.detach().numpy().copy()
        scaler.step(opt)
        tscaler.step(topt)
        scaler.update()
        tscaler.update()
        assert scaler.get_scale() == tscaler.get_scale(), i
        assert scaler.state_dict() == tscaler.state_dict(), i
        skipped = factor != 1.0  # inf, nan, and 1e38 * scale overflows float32
        assert np.array_equal(w.detach().numpy(), before) == skipped, i
        np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=str(i))
    assert scaler.get_scale() != options["init_scale"]  # both backed off and grew along the way


def test_unscale_then_clip_then_step_and_the_call_order_errors():
    (w, _), (x, _) = pair(2, 3, seed=10), pair(4, 3, seed=11)
    w.requires_grad_()
    opt, scaler = mg.optim.SGD([w], lr=0.1), GradScaler("cpu", init_scale=8.0)
    scaler.scale((x @ w.T).sum()).backward()
    scaled = w.grad.numpy().copy()
    scaler.unscale_(opt)
    np.testing.assert_array_equal(w.grad.numpy(), scaled / 8.0)  # the true gradient, e.g. to clip it
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(AssertionError, match="No inf checks"):
        scaler.update()
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: None)


def test_float16_gradients_are_refused_and_a_float16_loss_is_scaled_in_float16():
    w = mg.ones(3, dtype=mg.float16, requires_grad=True)
    scaler = GradScaler("cpu", init_scale=4.0)
    loss = (w * 2).sum()
    assert scaler.scale(loss).dtype is mg.float16 and scaler.scale(loss).item() == 24.0
    scaler.scale(loss).backward()
    with pytest.raises(ValueError, match="FP16 gradients"):
        scaler.unscale_(mg.optim.SGD([w], lr=0.1))


def test_update_with_new_scale_state_dict_round_trip_and_torch_state_dicts():
    scaler = GradScaler("cpu", growth_interval=7)
    scaler.update(new_scale=3.0)
    assert scaler.get_scale() == 3.0
    other = GradScaler("cpu")
    other.load_state_dict(scaler.state_dict())
    assert other.state_dict() == scaler.state_dict()
    theirs = torch.amp.GradScaler("cpu", init_scale=5.0, growth_interval=11)
    other.load_state_dict(theirs.state_dict())
    assert other.get_scale() == 5.0 and other.state_dict()["growth_interval"] == 11
    with pytest.raises(RuntimeError, match="empty"):
        other.load_state_dict({})
    with pytest.raises(ValueError, match="new_scale"):
        scaler.update(new_scale=mg.ones(2))


def test_disabled_scaler_passes_through_and_cuda_without_a_backend_disables_itself():
    w = mg.ones(2, requires_grad=True)
    opt = mg.optim.SGD([w], lr=1.0)
    scaler = GradScaler("cpu", enabled=False)
    loss = (w * 3).sum()
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    loss.backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(w.detach().numpy(), [-2.0, -2.0])
    if not mg.backend.available("cuda"):
        with pytest.warns(UserWarning, match="Disabling"):
            assert not GradScaler("cuda").is_enabled()


@pytest.mark.parametrize("kwargs", [dict(growth_factor=1.0), dict(backoff_factor=1.0), dict(growth_interval=0)])
def test_grad_scaler_rejects_bad_factors(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GradScaler("cpu", **kwargs)


# ---- found in review: 16-bit reductions, the default scale, sum under autocast, threads, in-place, printing ----


@pytest.mark.parametrize("dtype", [mg.float16, mg.bfloat16], ids=["float16", "bfloat16"])
def test_mean_var_std_of_16_bit_tensors_do_not_overflow_and_round_once(dtype):
    """1000 values near 100: their sum (1e5) is past float16's 65504, the mean is not; computed in float32 and
    rounded once, as torch."""
    values = np.random.default_rng(0).normal(100, 1, (4, 1000)).astype(np.float32)
    x, t = mg.tensor(values).to(dtype), torch.tensor(values).to(torch_dtype(dtype))
    for name in ("mean", "var", "std"):
        got, want = getattr(x, name)(1), getattr(t, name)(1)
        assert got.dtype is dtype and np.all(np.isfinite(got.float().numpy()))
        np.testing.assert_array_equal(got.float().numpy(), want.float().numpy(), err_msg=name)


def test_grad_scaler_scales_a_float16_loss_at_the_default_scale():
    """The default scale 2**16 is past float16's range: the product must be formed in float32 (32768 for 0.5)."""
    loss = mg.tensor([0.5, 1e-3]).half()
    got = GradScaler("cpu").scale(loss)
    want = torch.amp.GradScaler("cpu").scale(torch.tensor([0.5, 1e-3]).half())
    assert got.dtype is mg.float16
    np.testing.assert_array_equal(got.float().numpy(), want.float().numpy())


def test_sum_under_autocast_is_float32_and_mean_keeps_its_dtype():
    x = mg.ones(300).half()
    with autocast("cpu", dtype=mg.float16):
        assert x.sum().dtype is mg.float32 and x.sum().item() == 300.0
        assert x.mean().dtype is mg.float16
    assert x.sum().dtype is mg.float16  # outside autocast: the input's dtype (accumulated in float32)


def test_autocast_as_a_decorator_from_two_threads():
    import threading
    started, results = threading.Barrier(2), []

    @autocast("cpu", dtype=mg.bfloat16)
    def work(delay):
        started.wait()
        out = mg.ones(2, 2) @ mg.ones(2, 2)
        threading.Event().wait(delay)
        results.append(out.dtype)

    threads = [threading.Thread(target=work, args=(d,)) for d in (0.05, 0.0)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [mg.bfloat16, mg.bfloat16]


def test_in_place_float32_into_a_16_bit_tensor_and_printing():
    o = mg.ones(2).bfloat16()
    o.add_(mg.tensor([0.5, 1.0]))  # float32 into bfloat16, as torch allows
    assert o.dtype is mg.bfloat16 and o.tolist() == [1.5, 2.0]
    assert repr(o) == repr(o.float()).replace(")", ", dtype=minigrad.bfloat16)")  # printed as floats
    with pytest.raises(TypeError, match="int64"):
        mg.zeros(2, dtype=mg.int64).add_(mg.ones(2))  # a float into an int tensor stays an error


def test_unscale_without_gradients_is_allowed_and_step_refuses():
    w = nn.Parameter(mg.ones(2))
    opt = mg.optim.SGD([w], lr=0.1)
    scaler = GradScaler("cpu")
    scaler.unscale_(opt)  # no gradient yet: nothing to check (torch allows it)
    with pytest.raises(AssertionError, match="No inf checks"):
        scaler.step(opt)
