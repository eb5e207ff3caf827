"""Conv1d/Conv2d, MaxPool2d/AvgPool2d/AdaptiveAvgPool2d and BatchNorm1d/2d against PyTorch.

Each layer gets the torch layer's weights through state_dict; both run on the same random input (odd
sizes, and the layer's options: stride, 'same' padding with odd and even kernels, dilation, groups,
ceil_mode, count_include_pad, ...); outputs, input gradients and parameter gradients are compared after
back-propagating one seeded random cotangent. BatchNorm is also compared step by step over several
training steps (running statistics, num_batches_tracked) and then in eval mode. Plus: default
initialization, state_dict keys, repr, and the errors raised at the API boundary.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")

import minigrad as mg  # noqa: E402
from minigrad import nn  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402

TF = torch.nn.functional
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TOLERANCES = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
MG_DTYPES = {np.dtype(np.float32): mg.float32, np.dtype(np.float64): mg.float64}
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # torch's


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: the same numbers on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def distinct(rng, shape, dtype):
    """Values with no ties (a permutation of a grid), so every max has one position and one gradient."""
    n = math.prod(shape)
    return ((rng.permutation(n) - n / 2) * (4.0 / n)).reshape(shape).astype(dtype)


def assert_close(ours, theirs, what: str) -> None:
    theirs = theirs.detach().numpy()
    ours = ours.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch's {theirs.dtype}"
    if theirs.dtype.kind != "f":  # num_batches_tracked
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
        return
    np.testing.assert_allclose(ours, theirs, err_msg=what, **TOLERANCES[theirs.dtype])


def check_module(rng, ours: nn.Module, theirs: torch.nn.Module, x: np.ndarray, load: bool = True):
    """Load theirs' state into ours (unless load=False), run both on x, compare the output, then
    back-propagate one random cotangent and compare the input's and every parameter's gradient."""
    if load:
        ours.load_state_dict(theirs.state_dict())
    xm, xt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_m, out_t = ours(xm), theirs(xt)
    assert_close(out_m, out_t, "output")
    v = rng.standard_normal(tuple(out_t.shape)).astype(x.dtype)
    out_m.backward(mg.tensor(v))
    out_t.backward(torch.tensor(v))
    assert_close(xm.grad, xt.grad, "input grad")
    grads_m = {name: p.grad for name, p in ours.named_parameters()}
    grads_t = {name: p.grad for name, p in theirs.named_parameters()}
    assert grads_m.keys() == grads_t.keys()
    for name, grad in grads_t.items():
        assert_close(grads_m[name], grad, f"{name}.grad")
    ours.zero_grad()
    theirs.zero_grad()


def check_function(rng, fn_m, fn_t, *arrays):
    """fn_m and fn_t on the same float arrays (all require grad): outputs and every input's gradient."""
    ms = [mg.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_m, out_t = fn_m(*ms), fn_t(*ts)
    assert_close(out_m, out_t, "output")
    v = rng.standard_normal(tuple(out_t.shape)).astype(arrays[0].dtype)
    out_m.backward(mg.tensor(v))
    out_t.backward(torch.tensor(v))
    for i, (m, t) in enumerate(zip(ms, ts)):
        assert_close(m.grad, t.grad, f"grad of input {i}")


def pair_layers(name: str, dtype, *args, **kwargs):
    """The minigrad and torch layers of that name, built with the same arguments, in `dtype`."""
    ours = getattr(nn, name)(*args, **kwargs, dtype=MG_DTYPES[np.dtype(dtype)])
    theirs = getattr(torch.nn, name)(*args, **kwargs, dtype=TORCH_DTYPES[np.dtype(dtype)])
    return ours, theirs


# ---- convolutions ------------------------------------------------------------------------------------

CONV2D = [  # id, constructor kwargs, input shape
    ("basic", dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 7, 6)),
    ("stride2_pad1", dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1), (2, 3, 9, 8)),
    ("rect_kernel_tuple_args", dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=(2, 1),
                                    padding=(1, 2)), (3, 2, 7, 5)),
    ("same_odd_kernel", dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"), (2, 3, 5, 7)),
    ("same_even_kernel", dict(in_channels=3, out_channels=4, kernel_size=4, padding="same"), (2, 3, 6, 5)),
    ("same_mixed_kernel_dilated", dict(in_channels=2, out_channels=3, kernel_size=(2, 3), padding="same",
                                       dilation=(3, 2)), (2, 2, 7, 6)),
    ("valid", dict(in_channels=3, out_channels=2, kernel_size=(2, 4), padding="valid"), (2, 3, 5, 7)),
    ("dilation", dict(in_channels=2, out_channels=3, kernel_size=3, dilation=(2, 1), padding=1), (2, 2, 9, 7)),
    ("dilation_stride", dict(in_channels=2, out_channels=2, kernel_size=2, dilation=2, stride=3), (1, 2, 11, 8)),
    ("groups2", dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1), (2, 4, 5, 5)),
    ("depthwise", dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1), (2, 3, 6, 7)),
    ("depthwise_multiplier", dict(in_channels=3, out_channels=6, kernel_size=(1, 3), groups=3, stride=2),
     (2, 3, 5, 9)),
    ("pointwise_1x1", dict(in_channels=5, out_channels=3, kernel_size=1), (2, 5, 3, 4)),
    ("no_bias", dict(in_channels=3, out_channels=4, kernel_size=2, bias=False), (2, 3, 5, 5)),
    ("kernel_fills_input", dict(in_channels=2, out_channels=3, kernel_size=(5, 4)), (3, 2, 5, 4)),
    ("unbatched", dict(in_channels=3, out_channels=2, kernel_size=3, padding=1), (3, 5, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs, shape", [pytest.param(k, s, id=i) for i, k, s in CONV2D])
def test_conv2d_layer_matches_torch(rng, dtype, kwargs, shape):
    ours, theirs = pair_layers("Conv2d", dtype, **kwargs)
    check_module(rng, ours, theirs, rng.standard_normal(shape).astype(dtype))


CONV1D = [
    ("basic", dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 11)),
    ("stride_padding", dict(in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1), (3, 2, 9)),
    ("same_even_kernel", dict(in_channels=3, out_channels=2, kernel_size=4, padding="same"), (2, 3, 7)),
    ("same_dilated", dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2), (2, 2, 8)),
    ("groups_no_bias", dict(in_channels=4, out_channels=2, kernel_size=(2,), groups=2, bias=False), (2, 4, 6)),
    ("depthwise", dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding="valid"), (2, 3, 5)),
    ("unbatched", dict(in_channels=3, out_channels=4, kernel_size=1), (3, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs, shape", [pytest.param(k, s, id=i) for i, k, s in CONV1D])
def test_conv1d_layer_matches_torch(rng, dtype, kwargs, shape):
    ours, theirs = pair_layers("Conv1d", dtype, **kwargs)
    check_module(rng, ours, theirs, rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_functional_on_views_and_without_bias(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 2, 3)).astype(dtype)

    def run(conv, x, w):  # a permuted input and a transposed kernel: strided views reach the kernel
        return conv(x.permute(0, 1, 3, 2), w.transpose(2, 3), None, stride=(1, 2), padding=(2, 0), dilation=(1, 2))
    check_function(rng, lambda x, w: run(F.conv2d, x, w), lambda x, w: run(TF.conv2d, x, w), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_functional_int_tuple_args(rng, dtype):
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(2, 4, 9), (6, 2, 3), (6,)])
    check_function(rng, lambda x, w, b: F.conv1d(x, w, b, stride=(2,), padding=(2,), dilation=(2,), groups=2),
                   lambda x, w, b: TF.conv1d(x, w, b, stride=(2,), padding=(2,), dilation=(2,), groups=2), x, w, b)


def test_conv_layers_training_step_matches_torch(rng):
    """Conv -> BatchNorm -> ReLU -> MaxPool -> AdaptiveAvgPool -> Linear: one model, loaded from torch's
    state_dict, gives the same loss and gradients (the pieces compose)."""
    def model(lib):
        return lib.Sequential(lib.Conv2d(3, 8, 3, padding=1), lib.BatchNorm2d(8), lib.ReLU(), lib.MaxPool2d(2),
                              lib.Conv2d(8, 4, 3, groups=2), lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(4, 5))
    ours, theirs = model(nn), model(torch.nn)
    check_module(rng, ours, theirs, rng.standard_normal((4, 3, 10, 11)).astype(np.float32))


# ---- pooling --------------------------------------------------------------------------------------------

MAX_POOL = [  # id, kwargs, input shape
    ("k2", dict(kernel_size=2), (2, 3, 6, 7)),
    ("k3_s2_p1", dict(kernel_size=3, stride=2, padding=1), (2, 3, 7, 8)),
    ("rect", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 5)),
    ("overlapping_stride1", dict(kernel_size=3, stride=1), (2, 2, 5, 6)),
    ("dilation", dict(kernel_size=2, stride=1, dilation=(2, 3)), (1, 3, 6, 7)),
    ("ceil_mode", dict(kernel_size=2, ceil_mode=True), (2, 3, 7, 5)),
    ("ceil_mode_padding", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 8, 6)),
    ("ceil_mode_dilation", dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True), (2, 2, 8, 9)),
    ("ceil_mode_drops_window_in_padding", dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), (2, 2, 5, 7)),
    ("unbatched", dict(kernel_size=2, stride=1), (3, 5, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs, shape", [pytest.param(k, s, id=i) for i, k, s in MAX_POOL])
def test_max_pool2d_matches_torch(rng, dtype, kwargs, shape):
    x = distinct(rng, shape, dtype)
    check_module(rng, nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), x, load=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs, shape", [pytest.param(k, s, id=i) for i, k, s in MAX_POOL])
def test_max_pool2d_return_indices_matches_torch(rng, dtype, kwargs, shape):
    x = distinct(rng, shape, dtype)
    xm, xt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_m, idx_m = nn.MaxPool2d(**kwargs, return_indices=True)(xm)
    out_t, idx_t = TF.max_pool2d(xt, **kwargs, return_indices=True)
    assert_close(out_m, out_t, "output")
    assert idx_m.dtype is mg.int64
    np.testing.assert_array_equal(idx_m.numpy(), idx_t.numpy())
    v = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
    out_m.backward(mg.tensor(v))
    out_t.backward(torch.tensor(v))
    assert_close(xm.grad, xt.grad, "input grad")


def test_max_pool2d_ties_and_all_inf_windows_pick_torchs_element(rng):
    x = np.full((1, 2, 5, 6), -np.inf)
    x[0, 0, :2] = 1.0  # ties: the first max in each window wins
    x[0, 1, 4, 5] = 2.0
    xm, xt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_m, idx_m = F.max_pool2d(xm, 3, stride=2, padding=1, return_indices=True)
    out_t, idx_t = TF.max_pool2d(xt, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx_m.numpy(), idx_t.numpy())
    np.testing.assert_array_equal(out_m.detach().numpy(), out_t.detach().numpy())
    v = rng.standard_normal(tuple(out_t.shape))
    F.max_pool2d(xm, 3, stride=2, padding=1).backward(mg.tensor(v))
    out_t.backward(torch.tensor(v))
    np.testing.assert_array_equal(xm.grad.numpy(), xt.grad.numpy())


AVG_POOL = [  # id, kwargs, input shape
    ("k2", dict(kernel_size=2), (2, 3, 6, 7)),
    ("k3_s2_p1", dict(kernel_size=3, stride=2, padding=1), (2, 3, 7, 8)),
    ("k3_s2_p1_exclude_pad", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), (2, 3, 7, 8)),
    ("rect", dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)), (2, 2, 5, 7)),
    ("rect_exclude_pad", dict(kernel_size=(2, 3), stride=1, padding=(1, 1), count_include_pad=False), (1, 2, 5, 6)),
    ("ceil_mode", dict(kernel_size=2, ceil_mode=True), (2, 3, 7, 5)),
    ("ceil_mode_padding", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 8, 6)),
    ("ceil_mode_padding_exclude_pad", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                           count_include_pad=False), (2, 2, 8, 6)),
    ("ceil_mode_partial_only", dict(kernel_size=3, ceil_mode=True), (1, 2, 2, 4)),
    ("ceil_mode_drops_window_in_padding", dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), (2, 2, 5, 7)),
    ("ceil_mode_drops_window_exclude_pad", dict(kernel_size=(2, 3), stride=(2, 3), padding=1, ceil_mode=True,
                                                count_include_pad=False), (2, 2, 5, 6)),
    ("unbatched", dict(kernel_size=2, stride=1), (3, 5, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs, shape", [pytest.param(k, s, id=i) for i, k, s in AVG_POOL])
def test_avg_pool2d_matches_torch(rng, dtype, kwargs, shape):
    x = rng.standard_normal(shape).astype(dtype)
    check_module(rng, nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), x, load=False)


ADAPTIVE = [  # id, output_size, input shape
    ("global", 1, (2, 3, 5, 7)),
    ("divisible", (2, 3), (2, 3, 6, 9)),
    ("non_divisible", (3, 2), (2, 3, 7, 5)),
    ("non_divisible_square", 4, (2, 2, 6, 7)),
    ("keep_height", (None, 3), (2, 2, 5, 7)),
    ("keep_width", (2, None), (2, 2, 5, 7)),
    ("larger_than_input", (5, 4), (1, 2, 3, 3)),
    ("unbatched", (3, 3), (2, 7, 8)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size, shape", [pytest.param(o, s, id=i) for i, o, s in ADAPTIVE])
def test_adaptive_avg_pool2d_matches_torch(rng, dtype, output_size, shape):
    x = rng.standard_normal(shape).astype(dtype)
    check_module(rng, nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size), x, load=False)


# ---- batch norm -------------------------------------------------------------------------------------------

BATCH_NORM = [  # id, layer, kwargs, input shape
    ("1d_NC", "BatchNorm1d", dict(), (6, 4)),
    ("1d_NCL", "BatchNorm1d", dict(momentum=0.3), (3, 4, 5)),
    ("2d", "BatchNorm2d", dict(), (3, 4, 5, 3)),
    ("2d_momentum_none", "BatchNorm2d", dict(momentum=None), (2, 3, 4, 5)),
    ("2d_no_affine", "BatchNorm2d", dict(affine=False, eps=1e-3), (2, 3, 3, 3)),
    ("2d_no_bias", "BatchNorm2d", dict(bias=False), (2, 3, 3, 4)),
    ("1d_untracked", "BatchNorm1d", dict(track_running_stats=False), (5, 3, 2)),
    ("2d_untracked_no_affine", "BatchNorm2d", dict(track_running_stats=False, affine=False), (2, 3, 3, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs, shape", [pytest.param(n, k, s, id=i) for i, n, k, s in BATCH_NORM])
def test_batch_norm_train_then_eval_matches_torch(rng, dtype, name, kwargs, shape):
    """Three training steps (outputs, gradients, running stats after each), then eval mode."""
    ours, theirs = pair_layers(name, dtype, shape[1], **kwargs)
    if theirs.affine:  # away from the initial ones and zeros, so that both parameters matter
        with torch.no_grad():
            for p in theirs.parameters():
                p.copy_(torch.tensor(rng.uniform(0.5, 1.5, p.shape).astype(dtype)))
    ours.load_state_dict(theirs.state_dict())
    for step in range(3):
        x = (rng.standard_normal(shape) * 2 + step).astype(dtype)  # shifting statistics
        check_module(rng, ours, theirs, x, load=False)
        for key, buffer in theirs.state_dict().items():
            assert_close(ours.state_dict()[key], buffer, f"step {step}: {key}")
    ours.eval(), theirs.eval()
    check_module(rng, ours, theirs, rng.standard_normal(shape).astype(dtype), load=False)
    for key, buffer in theirs.state_dict().items():  # eval mode leaves the statistics alone
        assert_close(ours.state_dict()[key], buffer, f"eval: {key}")


def test_batch_norm_running_stats_track_torchs_update_rule_exactly(rng):
    """momentum 0.1: running = 0.9 running + 0.1 batch, with the unbiased batch variance; and the buffers
    never require grad or join a graph."""
    bn = nn.BatchNorm1d(3, dtype=mg.float64)
    x = rng.standard_normal((5, 3))
    bn(mg.tensor(x, requires_grad=True))
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-12)
    assert not bn.running_mean.requires_grad and bn.running_mean.grad_fn is None
    assert bn.num_batches_tracked.dtype is mg.int64 and bn.num_batches_tracked.item() == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional_matches_torch(rng, dtype, training):
    shape = (3, 4, 2, 3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [shape, (4,), (4,)])
    mean0, var0 = rng.standard_normal(4).astype(dtype), rng.uniform(0.5, 2.0, 4).astype(dtype)
    mean_m, var_m, mean_t, var_t = mg.tensor(mean0), mg.tensor(var0), torch.tensor(mean0), torch.tensor(var0)
    check_function(rng, lambda x, w, b: F.batch_norm(x, mean_m, var_m, w, b, training, 0.2, 1e-3),
                   lambda x, w, b: TF.batch_norm(x, mean_t, var_t, w, b, training, 0.2, 1e-3), x, w, b)
    assert_close(mean_m, mean_t, "running_mean")
    assert_close(var_m, var_t, "running_var")


# ---- initialization, state_dict, repr ------------------------------------------------------------------

def test_conv_default_init_is_torchs_distribution():
    """weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels / groups * kh * kw."""
    mg.manual_seed(0)
    conv = nn.Conv2d(16, 64, (3, 5), groups=2)
    bound = 1 / math.sqrt(8 * 3 * 5)
    for p in (conv.weight, conv.bias):
        values = p.detach().numpy()
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.9 * bound  # the whole range is used, not a narrower one
    weights = conv.weight.detach().numpy()
    np.testing.assert_allclose(weights.std(), bound / math.sqrt(3), rtol=0.05)  # the std of a uniform
    assert abs(weights.mean()) < 0.05 * bound


def test_batch_norm_initial_state_matches_torch():
    ours, theirs = nn.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key].numpy(), value.numpy(), err_msg=key)
        assert ours.state_dict()[key].dtype.np_dtype == value.numpy().dtype, key


@pytest.mark.parametrize("make", [
    lambda lib: lib.Conv2d(4, 6, 3, groups=2),
    lambda lib: lib.Conv2d(4, 6, 3, bias=False),
    lambda lib: lib.Conv1d(3, 2, 5),
    lambda lib: lib.BatchNorm1d(3),
    lambda lib: lib.BatchNorm2d(3, affine=False, track_running_stats=False),
    lambda lib: lib.BatchNorm2d(3, bias=False),
    lambda lib: lib.Sequential(lib.Conv2d(1, 2, 3), lib.BatchNorm2d(2), lib.MaxPool2d(2), lib.AvgPool2d(2),
                               lib.AdaptiveAvgPool2d(1)),
], ids=["conv2d_groups", "conv2d_no_bias", "conv1d", "bn1d", "bn2d_bare", "bn2d_no_bias", "sequential"])
def test_state_dict_keys_shapes_and_dtypes_match_torch(make):
    ours, theirs = make(nn).state_dict(), make(torch.nn).state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == tuple(theirs[key].shape), key
        assert ours[key].dtype.np_dtype == theirs[key].numpy().dtype, key


@pytest.mark.parametrize("make", [
    lambda lib: lib.Conv2d(3, 4, 3),
    lambda lib: lib.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=(2, 1), groups=1, bias=False),
    lambda lib: lib.Conv2d(4, 4, 4, padding="same", groups=4),
    lambda lib: lib.Conv2d(4, 4, 1, padding="valid"),
    lambda lib: lib.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2),
    lambda lib: lib.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True),
    lambda lib: lib.MaxPool2d((2, 3)),
    lambda lib: lib.AvgPool2d(3, 2, 1),
    lambda lib: lib.AvgPool2d((2, 2), ceil_mode=True, count_include_pad=False),
    lambda lib: lib.AdaptiveAvgPool2d((None, 7)),
    lambda lib: lib.BatchNorm1d(4, eps=1e-3, momentum=None),
    lambda lib: lib.BatchNorm2d(8, affine=False, track_running_stats=False),
])
def test_repr_matches_torch(make):
    assert repr(make(nn)) == repr(make(torch.nn))


# ---- errors at the API boundary ------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, "padding"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "strided"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), NotImplementedError, "reflect"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), TypeError, "kernel_size"),
    (lambda: nn.Conv1d(3, 4, 3, stride=0), ValueError, "stride"),
    (lambda: nn.AvgPool2d(2, divisor_override=3), NotImplementedError, "divisor_override"),
])
def test_layer_constructor_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


X4 = mg.randn(2, 3, 5, 5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.conv2d(X4, mg.randn(4, 2, 3, 3)), ValueError, r"3 channels.*expects 2"),
    (lambda: F.conv2d(X4, mg.randn(4, 3, 3)), ValueError, "4-D"),
    (lambda: F.conv2d(X4.reshape(6, 25), mg.randn(4, 3, 3, 3)), ValueError, r"3-D \(unbatched\) or 4-D"),
    (lambda: F.conv2d(X4, mg.randn(4, 3, 3, 3, dtype=mg.float64)), TypeError, "same dtype"),
    (lambda: F.conv2d(X4, mg.randn(4, 3, 3, 3), mg.randn(3)), ValueError, "bias"),
    (lambda: F.conv2d(X4, mg.randn(4, 3, 6, 3)), ValueError, "smaller than the kernel"),
    (lambda: F.conv2d(X4, mg.randn(4, 3, 3, 3), stride=2, padding="same"), ValueError, "strided"),
    (lambda: F.conv2d(X4, mg.randn(3, 1, 3, 3), groups=3.0), ValueError, "groups"),
    (lambda: F.conv2d(X4, mg.randn(3, 3, 3, 3), padding=-1), ValueError, "padding"),
    (lambda: F.conv2d(mg.ones(2, 3, 5, 5, dtype=mg.int64), mg.randn(3, 3, 3, 3)), TypeError, "floating"),
    (lambda: F.conv1d(X4, mg.randn(4, 3, 3)), ValueError, "2-D"),
    (lambda: F.max_pool2d(X4, 2, padding=2), ValueError, "half of kernel_size"),
    (lambda: F.max_pool2d(X4, 6), ValueError, "too small"),
    # a dilation that steps over the input: window 0's taps, columns -1 and 2 of 2, are all padding (PyTorch
    # returns an index outside the input there, and its backward writes out of bounds)
    (lambda: F.max_pool2d(mg.randn(1, 1, 3, 2), (1, 2), 1, (0, 1), dilation=(1, 3)), ValueError, "covers no element"),
    (lambda: nn.MaxPool2d((2, 3), (1, 3), 1, dilation=2, ceil_mode=True)(mg.randn(1, 1, 1, 8)), ValueError,
     "window 0 along dim 2 covers no element"),
    (lambda: F.avg_pool2d(X4, (2, 2, 2)), TypeError, "kernel_size"),
    (lambda: F.adaptive_avg_pool2d(X4, (2, 0)), ValueError, "output_size"),
    (lambda: F.adaptive_avg_pool2d(X4, (1, 2, 3)), TypeError, "output_size"),
    (lambda: nn.BatchNorm2d(3)(mg.randn(2, 3, 4)), ValueError, "4-D"),
    (lambda: nn.BatchNorm1d(3)(X4), ValueError, "2-D or 3-D"),
    (lambda: nn.BatchNorm1d(4)(mg.randn(2, 3)), ValueError, "4 channels|does not match"),
    (lambda: nn.BatchNorm1d(3)(mg.randn(1, 3)), ValueError, "more than 1 value per channel"),
    (lambda: F.batch_norm(X4, None, None), ValueError, "running_mean and running_var"),
    (lambda: nn.BatchNorm2d(3)(X4.double()), TypeError, "same dtype"),
])
def test_functional_errors_name_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()
