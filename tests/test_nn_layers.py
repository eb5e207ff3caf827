"""Activations, LayerNorm, Dropout, Embedding and one_hot against PyTorch: the same weights (loaded
through state_dict) and inputs in both, then outputs, input gradients and parameter gradients compared
after back-propagating one seeded random cotangent (never a plain .sum()). Plus what PyTorch cannot
be compared with directly: dropout's statistics, train/eval behaviour and reproducibility, the
embedding's initialization, and the errors raised at the API boundary.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")

import minigrad as mg  # noqa: E402
from minigrad import nn  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}
MG_DTYPES = {np.float32: mg.float32, np.float64: mg.float64}
TOLERANCES = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: the same numbers on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pair(array: np.ndarray, requires_grad: bool = True):
    """The same values as a minigrad tensor and a torch tensor (both leaves)."""
    return (mg.tensor(array, requires_grad=requires_grad),
            torch.tensor(array, requires_grad=requires_grad))


def assert_close(ours, theirs, dtype=np.float64):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    ours = ours.detach().numpy() if isinstance(ours, mg.Tensor) else ours
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, **TOLERANCES[np.dtype(dtype)])


def backprop_both(rng, ours, theirs):
    """Back-propagate the same random cotangent through both outputs."""
    v = rng.standard_normal(tuple(theirs.shape)).astype(theirs.detach().numpy().dtype)
    ours.backward(mg.tensor(v))
    theirs.backward(torch.tensor(v))


def check_module(rng, ours: nn.Module, theirs: torch.nn.Module, x: np.ndarray):
    """Load theirs' weights into ours, run both on x, compare output, input grad and parameter grads."""
    ours.load_state_dict(theirs.state_dict())
    xm, xt = pair(x)
    out_m, out_t = ours(xm), theirs(xt)
    assert_close(out_m, out_t, x.dtype)
    backprop_both(rng, out_m, out_t)
    assert_close(xm.grad, xt.grad, x.dtype)
    grads_t = {name: p.grad for name, p in theirs.named_parameters()}
    grads_m = {name: p.grad for name, p in ours.named_parameters()}
    assert grads_m.keys() == grads_t.keys()
    for name in grads_t:
        assert_close(grads_m[name], grads_t[name], x.dtype)


# ---- activations -------------------------------------------------------------------------------------

ACTIVATIONS = [  # (id, minigrad layer, torch layer, minigrad function, torch function)
    ("relu", lambda: nn.ReLU(), lambda: torch.nn.ReLU(), F.relu, torch.nn.functional.relu),
    ("gelu", lambda: nn.GELU(), lambda: torch.nn.GELU(), F.gelu, torch.nn.functional.gelu),
    ("gelu_tanh", lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh"),
     lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    ("tanh", nn.Tanh, torch.nn.Tanh, F.tanh, torch.tanh),
    ("sigmoid", nn.Sigmoid, torch.nn.Sigmoid, F.sigmoid, torch.sigmoid),
    ("silu", nn.SiLU, torch.nn.SiLU, F.silu, torch.nn.functional.silu),
    ("softmax", lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1),
     lambda x: F.softmax(x, 1), lambda x: torch.softmax(x, 1)),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), lambda: torch.nn.LogSoftmax(dim=-1),
     lambda x: F.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2),
     lambda x: F.leaky_relu(x, 0.2), lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("leaky_relu_default", nn.LeakyReLU, torch.nn.LeakyReLU, F.leaky_relu, torch.nn.functional.leaky_relu),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, layer_m, layer_t, fn_m, fn_t", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_matches_torch(rng, dtype, name, layer_m, layer_t, fn_m, fn_t):
    x = (rng.standard_normal((3, 5, 7)) * 3).astype(dtype)
    check_module(rng, layer_m(), layer_t(), x)
    xm, xt = pair(x)
    out_m, out_t = fn_m(xm), fn_t(xt)
    assert_close(out_m, out_t, dtype)
    backprop_both(rng, out_m, out_t)
    assert_close(xm.grad, xt.grad, dtype)


def test_leaky_relu_gradient_at_zero_is_the_slope():
    xm, xt = pair(np.array([0.0, -1.0, 2.0]))
    F.leaky_relu(xm, 0.3).backward(mg.ones(3, dtype=mg.float64))
    torch.nn.functional.leaky_relu(xt, 0.3).backward(torch.ones(3, dtype=torch.float64))
    assert_close(xm.grad, xt.grad)


@pytest.mark.parametrize("ours, theirs", [
    (nn.ReLU(), torch.nn.ReLU()), (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.Softmax(dim=0), torch.nn.Softmax(dim=0)),
    (nn.LogSoftmax(1), torch.nn.LogSoftmax(1)), (nn.LeakyReLU(0.1, True), torch.nn.LeakyReLU(0.1, True)),
    (nn.SiLU(), torch.nn.SiLU()), (nn.Tanh(), torch.nn.Tanh()),
    (nn.LayerNorm((4, 5), eps=1e-6, bias=False), torch.nn.LayerNorm((4, 5), eps=1e-6, bias=False)),
    (nn.LayerNorm(3, elementwise_affine=False), torch.nn.LayerNorm(3, elementwise_affine=False)),
    (nn.Dropout(0.25), torch.nn.Dropout(0.25)),
    (nn.Embedding(10, 3), torch.nn.Embedding(10, 3)),
    (nn.Embedding(10, 3, padding_idx=-2), torch.nn.Embedding(10, 3, padding_idx=-2)),
], ids=lambda m: type(m).__name__)
def test_repr_matches_torch(ours, theirs):
    assert repr(ours) == repr(theirs)


def test_softmax_layer_needs_a_dim():
    with pytest.raises(ValueError, match="dim"):
        nn.Softmax()(mg.randn(2, 3))


# ---- layer norm --------------------------------------------------------------------------------------------

LAYER_NORMS = [  # (normalized_shape, input shape, options)
    (7, (3, 7), {}),
    (5, (2, 3, 5), dict(eps=1e-3)),
    ((4, 5), (3, 4, 5), {}),  # several trailing dims
    ((2, 3, 5), (2, 3, 5), {}),  # every dim: one row
    (7, (3, 7), dict(elementwise_affine=False)),
    ((3, 5), (2, 3, 5), dict(elementwise_affine=False)),
    (6, (2, 3, 6), dict(bias=False)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape, shape, options", LAYER_NORMS)
def test_layer_norm_matches_torch(rng, dtype, normalized_shape, shape, options):
    theirs = torch.nn.LayerNorm(normalized_shape, **options, dtype=TORCH_DTYPES[dtype])
    with torch.no_grad():  # not the initial ones and zeros: a swapped weight/bias would show
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    ours = nn.LayerNorm(normalized_shape, **options, dtype=MG_DTYPES[dtype])
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    check_module(rng, ours, theirs, (rng.standard_normal(shape) * 2 + 1).astype(dtype))


@pytest.mark.parametrize("with_weight, with_bias", [(True, False), (False, True), (False, False), (True, True)])
def test_functional_layer_norm_with_either_affine_part(rng, with_weight, with_bias):
    x = rng.standard_normal((4, 2, 3))
    w, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    xm, xt = pair(x)
    wm, wt = pair(w) if with_weight else (None, None)
    bm, bt = pair(b) if with_bias else (None, None)
    out_m = F.layer_norm(xm, (2, 3), wm, bm, eps=1e-4)
    out_t = torch.nn.functional.layer_norm(xt, (2, 3), wt, bt, eps=1e-4)
    assert_close(out_m, out_t)
    backprop_both(rng, out_m, out_t)
    for m, t in [(xm, xt), (wm, wt), (bm, bt)]:
        if m is not None:
            assert_close(m.grad, t.grad)


def test_layer_norm_of_a_non_contiguous_input(rng):
    x = rng.standard_normal((6, 4))
    xm, xt = pair(x)
    out_m = F.layer_norm(xm.T, 6)
    out_t = torch.nn.functional.layer_norm(xt.T, (6,))
    assert_close(out_m, out_t)
    backprop_both(rng, out_m, out_t)
    assert_close(xm.grad, xt.grad)


def test_layer_norm_rows_have_zero_mean_unit_variance(rng):
    out = F.layer_norm(mg.tensor(rng.standard_normal((5, 9)) * 4 + 3), 9, eps=0.0).numpy()
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1, rtol=1e-12)


def test_layer_norm_errors():
    x = mg.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"normalized_shape \(3,\).*\(2, 3, 4\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"weight of shape \(3,\)"):
        F.layer_norm(x, 4, weight=mg.ones(3))
    with pytest.raises(TypeError, match="float64"):
        F.layer_norm(x, 4, bias=mg.zeros(4, dtype=mg.float64))
    with pytest.raises(TypeError, match="floating point"):
        F.layer_norm(mg.tensor([[1, 2]]), 2)
    with pytest.raises(ValueError, match="(3, 4)"):
        nn.LayerNorm((2, 5))(x)


# ---- dropout --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    mg.manual_seed(0)
    n = 200_000
    x = mg.ones(n, requires_grad=True)
    out = F.dropout(x, p)
    values = out.detach().numpy()
    kept = values != 0
    # the fraction dropped is binomial: within 5 standard deviations of p
    assert abs((1 - kept.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(values[kept], 1 / (1 - p), rtol=1e-6)  # survivors scaled by 1 / (1 - p)
    v = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    out.backward(mg.tensor(v))  # the gradient uses the same mask and scale
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, v / (1 - p), 0), rtol=1e-6)


def test_dropout_mask_is_reproducible_under_manual_seed():
    x = mg.randn(50, 40)
    mg.manual_seed(123)
    first = F.dropout(x, 0.5).numpy()
    second = F.dropout(x, 0.5).numpy()
    mg.manual_seed(123)
    again = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first != 0, second != 0)  # a new mask on each call


def test_dropout_train_and_eval():
    mg.manual_seed(0)
    layer = nn.Dropout(0.5)
    x = mg.randn(30, 30)
    assert layer.training
    assert (layer(x) == 0).any().item()
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert (layer(x) == 0).any().item()
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_dropout_with_p_one_gives_zeros_and_zero_gradient():
    x = mg.randn(4, 5, requires_grad=True)
    out = F.dropout(x, 1.0)
    np.testing.assert_array_equal(out.detach().numpy(), 0)
    out.backward(mg.ones(4, 5))
    np.testing.assert_array_equal(x.grad.numpy(), 0)


def test_dropout_keeps_the_dtype():
    assert F.dropout(mg.randn(3, 3, dtype=mg.float64), 0.5).dtype is mg.float64
    assert F.dropout(mg.randn(3, 3), 0.5).dtype is mg.float32


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probabilities(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(mg.randn(3), p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(p)


def test_dropout_of_an_integer_tensor_is_an_error():
    with pytest.raises(TypeError, match="floating point"):
        F.dropout(mg.tensor([1, 2, 3]), 0.5)


# ---- embedding --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0, 4, -1])
@pytest.mark.parametrize("index_shape", [(7,), (3, 5), (2, 3, 4), ()], ids=str)
def test_embedding_matches_torch(rng, dtype, padding_idx, index_shape):
    theirs = torch.nn.Embedding(11, 6, padding_idx=padding_idx, dtype=TORCH_DTYPES[dtype])
    ours = nn.Embedding(11, 6, padding_idx=padding_idx, dtype=MG_DTYPES[dtype])
    ours.load_state_dict(theirs.state_dict())
    indices = rng.integers(0, 11, index_shape)
    if indices.size > 1:
        indices.flat[0] = indices.flat[-1] = 4  # a repeated index, which is also a padding_idx case
    out_m, out_t = ours(mg.tensor(indices)), theirs(torch.tensor(indices))
    assert_close(out_m, out_t, dtype)
    backprop_both(rng, out_m, out_t)
    assert_close(ours.weight.grad, theirs.weight.grad, dtype)


def test_embedding_backward_accumulates_repeated_indices_and_skips_padding():
    weight = mg.zeros(4, 2, requires_grad=True)
    out = F.embedding(mg.tensor([[1, 3, 1], [1, 0, 3]]), weight, padding_idx=3)
    out.backward(mg.ones(2, 3, 2))
    np.testing.assert_array_equal(weight.grad.numpy(), [[1, 1], [3, 3], [0, 0], [0, 0]])


def test_embedding_init_is_standard_normal_with_a_zero_padding_row():
    mg.manual_seed(0)
    layer = nn.Embedding(2000, 16, padding_idx=7)
    w = layer.weight.detach().numpy()
    np.testing.assert_array_equal(w[7], 0)
    others = np.delete(w, 7, axis=0)
    assert abs(others.mean()) < 0.02 and abs(others.std() - 1) < 0.02
    assert layer.weight.requires_grad and layer.weight.shape == (2000, 16)


def test_embedding_errors():
    weight = mg.randn(5, 3)
    with pytest.raises(TypeError, match="int64"):
        F.embedding(mg.tensor([1.0, 2.0]), weight)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        F.embedding(mg.tensor([1, 5]), weight)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        F.embedding(mg.tensor([-1]), weight)
    with pytest.raises(ValueError, match="padding_idx 5"):
        nn.Embedding(5, 3, padding_idx=5)
    with pytest.raises(ValueError, match="2-D"):
        F.embedding(mg.tensor([0]), mg.randn(5))


# ---- one_hot ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [-1, 6])
@pytest.mark.parametrize("shape", [(5,), (2, 3), ()], ids=str)
def test_one_hot_matches_torch(rng, num_classes, shape):
    indices = rng.integers(0, 4, shape)
    ours = F.one_hot(mg.tensor(indices), num_classes)
    theirs = torch.nn.functional.one_hot(torch.tensor(indices), num_classes)
    assert ours.dtype is mg.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_one_hot_errors():
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        F.one_hot(mg.tensor([0, 3]), 3)
    with pytest.raises(TypeError, match="int64"):
        F.one_hot(mg.tensor([0.0]))
    with pytest.raises(ValueError, match="empty"):
        F.one_hot(mg.tensor(np.zeros(0, dtype=np.int64)))
