"""nn.Module and Parameter, the containers, nn.init and Linear: registration, traversal, modes, dtype
conversion, state_dict round trips (with PyTorch's layout) and the errors of load_state_dict."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.nn import init

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.scale = nn.Parameter(mg.ones(4))
        self.register_buffer("count", mg.zeros(1, dtype=mg.int64))
        self.register_buffer("cache", mg.zeros(2), persistent=False)
        self.plain = 5  # not registered

    def forward(self, x):
        return self.fc(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Linear(4, 2), nn.Identity())
        self.head_tied = self.head  # the same module twice: listed once

    def forward(self, x):
        return self.head(self.block(x))


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "head.0.weight", "head.0.bias"]
    assert [n for n, _ in net.named_buffers()] == ["block.count", "block.cache"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "head", "head.0", "head.1"]
    assert [n for n, _ in net.named_children()] == ["block", "head", "head_tied"]
    assert all(p.requires_grad and p.is_leaf for p in net.parameters())
    assert net.block.plain == 5 and "plain" not in net.block._parameters


def test_state_dict_keys_skip_non_persistent_buffers_and_detach():
    sd = Net().state_dict()
    assert list(sd) == ["block.scale", "block.count", "block.fc.weight", "block.fc.bias", "head.0.weight",
                        "head.0.bias"]
    assert all(not t.requires_grad for t in sd.values())


def test_reassigning_and_deleting_members():
    block = Block()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        block.scale = mg.ones(4)  # a plain tensor cannot silently replace a parameter
    block.scale = None
    assert "scale" not in dict(block.named_parameters())
    block.count = mg.ones(1, dtype=mg.int64)  # buffers accept tensors
    assert block.count.item() == 1
    del block.fc
    assert "fc" not in dict(block.named_children())
    with pytest.raises(AttributeError, match="no attribute 'fc'"):
        block.fc


def test_setattr_before_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_train_eval_and_zero_grad():
    net = Net()
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net(mg.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_apply_visits_children_before_parent():
    order = []
    Net().apply(lambda m: order.append(type(m).__name__))
    assert order[-1] == "Net" and order.index("Linear") < order.index("Block")


def test_to_dtype_keeps_parameter_identity_and_integer_buffers():
    net = Net()
    params = list(net.parameters())
    net.double()
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype is mg.float64 for p in net.parameters())
    assert net.block.count.dtype is mg.int64
    assert net(mg.randn(2, 3, dtype=mg.float64)).dtype is mg.float64
    with pytest.raises(TypeError, match="floating point"):
        net.to(mg.int64)


def test_load_state_dict_from_torch_matches_outputs_and_gradients():
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Identity(), torch.nn.Linear(7, 3))
    net = nn.Sequential(nn.Linear(5, 7), nn.Identity(), nn.Linear(7, 3))
    net.load_state_dict(tnet.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    mx = mg.tensor(x, requires_grad=True)
    tout, mout = tnet(tx), net(mx)
    np.testing.assert_allclose(mout.detach().numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    v = np.random.default_rng(1).standard_normal(tout.shape).astype(np.float32)
    tout.backward(torch.tensor(v))
    mout.backward(mg.tensor(v))
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    for (name, p), (tname, tp) in zip(net.named_parameters(), tnet.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_load_state_dict_accepts_numpy_and_converts_dtype():
    lin = nn.Linear(2, 2)
    lin.load_state_dict({"weight": np.eye(2), "bias": np.array([1.0, 2.0])})  # float64 arrays
    assert lin.weight.dtype is mg.float32
    np.testing.assert_array_equal(lin(mg.zeros(1, 2)).detach().numpy(), [[1.0, 2.0]])


def test_load_state_dict_errors_name_the_keys():
    lin = nn.Linear(2, 3)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        lin.load_state_dict({"weight": np.zeros((3, 2)), "extra": np.zeros(1)})
    result = lin.load_state_dict({"weight": np.zeros((3, 2)), "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    before = lin.bias.detach().numpy().copy()
    with pytest.raises(ValueError, match=r"weight: checkpoint \(2, 3\) vs model \(3, 2\)"):
        lin.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(3)})
    np.testing.assert_array_equal(lin.bias.detach().numpy(), before)  # nothing half-loaded


def test_deepcopy_gives_independent_parameters():
    net = Net()
    clone = copy.deepcopy(net)
    with mg.no_grad():
        clone.block.fc.weight.add_(1.0)
    assert not np.allclose(clone.block.fc.weight.detach().numpy(), net.block.fc.weight.detach().numpy())


def test_repr_is_nested_like_pytorch():
    text = repr(nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Identity()), nn.Flatten()))
    assert text == ("Sequential(\n  (0): Linear(in_features=3, out_features=4, bias=True)\n"
                    "  (1): Sequential(\n    (0): Identity()\n  )\n"
                    "  (2): Flatten(start_dim=1, end_dim=-1)\n)")
    assert repr(nn.Parameter(mg.zeros(2))).startswith("Parameter containing:\ntensor(")


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert len(seq) == 2 and isinstance(seq[1], nn.Linear) and len(seq[:1]) == 1
    seq.append(nn.Identity())
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    layers = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    layers.insert(1, nn.Identity())
    assert [type(m).__name__ for m in layers] == ["Linear", "Identity", "Linear", "Linear"]
    assert len(list(layers.parameters())) == 6
    heads = nn.ModuleDict({"a": nn.Linear(1, 2), "b": nn.Linear(1, 3)})
    assert list(heads) == ["a", "b"] and "a" in heads and heads["b"].out_features == 3
    assert [n for n, _ in heads.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_linear_validates_input_shape():
    with pytest.raises(ValueError, match=r"input of shape \(2, 5\) does not match weight of shape \(3, 4\)"):
        nn.Linear(4, 3)(mg.zeros(2, 5))


# ---- init ------------------------------------------------------------------------------------------

def sample_stats(fill, shape=(400, 500)):
    t = mg.empty(*shape, dtype=mg.float64)
    fill(t)
    values = t.numpy()
    return values.mean(), values.std(), values.min(), values.max()


def test_init_distributions_have_the_documented_moments():
    mg.manual_seed(0)
    fan_in, fan_out = 500, 400
    mean, std, lo, hi = sample_stats(lambda t: init.uniform_(t, -2.0, 3.0))
    assert abs(mean - 0.5) < 0.02 and lo >= -2.0 and hi < 3.0
    mean, std, *_ = sample_stats(lambda t: init.normal_(t, 1.0, 0.5))
    assert abs(mean - 1.0) < 0.01 and abs(std - 0.5) < 0.01
    bound = math.sqrt(6 / (fan_in + fan_out))
    mean, std, lo, hi = sample_stats(init.xavier_uniform_)
    assert -bound <= lo and hi <= bound and abs(std - bound / math.sqrt(3)) < 0.002
    mean, std, *_ = sample_stats(init.xavier_normal_)
    assert abs(std - math.sqrt(2 / (fan_in + fan_out))) < 0.002
    mean, std, lo, hi = sample_stats(lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)))
    assert -1 / math.sqrt(fan_in) <= lo and hi <= 1 / math.sqrt(fan_in)
    mean, std, *_ = sample_stats(lambda t: init.kaiming_normal_(t, nonlinearity="relu"))
    assert abs(std - math.sqrt(2 / fan_in)) < 0.002
    mean, std, lo, hi = sample_stats(lambda t: init.trunc_normal_(t, 0.0, 1.0, -1.0, 1.5))
    assert lo >= -1.0 and hi <= 1.5
    # the mean of N(0, 1) truncated to [a, b] is (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert abs(mean - (pdf(-1.0) - pdf(1.5)) / (cdf(1.5) - cdf(-1.0))) < 0.01
    for fill, value in ((init.zeros_, 0.0), (init.ones_, 1.0), (lambda t: init.constant_(t, 2.5), 2.5)):
        t = mg.empty(3, 2)
        fill(t)
        assert np.all(t.numpy() == value)


def test_init_is_reproducible_and_works_on_parameters():
    def draw():
        mg.manual_seed(7)
        return nn.Linear(6, 5).weight.detach().numpy().copy()
    np.testing.assert_array_equal(draw(), draw())
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.xavier_uniform_(mg.empty(3))
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("tanh") == 5 / 3
