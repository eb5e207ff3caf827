"""Parity with PyTorch for every loss function and loss layer, and every option: class-index and
class-probability targets, (N, C), (N, C, d1), (N, C, d1, d2) and (C,) inputs, ignore_index (including all
targets ignored), label smoothing, class weights, pos_weight, the three reductions, logits of magnitude 1e4,
float32 and float64. Each case compares the loss, then back-propagates one seeded random cotangent through
both frameworks and compares the gradient of every floating point input (logits, probability targets,
weights). Also: the error messages, the loss layers' buffers and state_dict, and the fused cross-entropy
kernel of every available backend against the NumPy reference.
"""
from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")
import torch.nn.functional as TF  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad.backend import numpy_ref  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TOL = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
REDUCTIONS = ["none", "mean", "sum"]


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: the same numbers on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def compare(mg_fn, torch_fn, arrays: dict, rng, grad_of=None, tol=None):
    """Call both functions with keyword tensors made from `arrays` (those named in `grad_of`, by default
    a floating point input and target, require grad); compare the losses, then the gradients of a random
    cotangent. Returns the minigrad loss."""
    if grad_of is None:
        grad_of = [k for k in ("input", "target") if arrays[k].dtype.kind == "f"]
    mine = {k: None if a is None else mg.tensor(a, requires_grad=k in grad_of) for k, a in arrays.items()}
    ref = {k: None if a is None else torch.tensor(a, requires_grad=k in grad_of) for k, a in arrays.items()}
    out, expected = mg_fn(**mine), torch_fn(**ref)
    tol = tol or TOL[np.dtype(expected.detach().numpy().dtype)]
    assert out.shape == tuple(expected.shape)
    assert out.dtype.np_dtype == expected.detach().numpy().dtype
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), equal_nan=True, err_msg="loss", **tol)
    if grad_of:
        v = rng.standard_normal(out.shape).astype(out.dtype.np_dtype)
        out.backward(mg.tensor(v))
        expected.backward(torch.tensor(v))
        for k in grad_of:
            np.testing.assert_allclose(mine[k].grad.numpy(), ref[k].grad.numpy(), equal_nan=True,
                                       err_msg=f"gradient of {k}", **tol)
    return out


def class_targets(rng, shape, classes, ignore_index=None, n_ignored=0):
    """int64 class indices of `shape`; `n_ignored` of them set to ignore_index."""
    target = rng.integers(0, classes, shape)
    if n_ignored:
        target.reshape(-1)[rng.choice(target.size, n_ignored, replace=False)] = ignore_index
    return target


def probabilities(rng, shape, dtype, class_dim):
    p = rng.uniform(0.05, 1.0, shape)
    return (p / p.sum(axis=class_dim, keepdims=True)).astype(dtype)


CLASS_SHAPES = [  # input shape; the classes are on dim 1 (dim 0 for a single sample)
    pytest.param((5, 7), id="NC"),
    pytest.param((4, 3, 5), id="NCd"),
    pytest.param((3, 4, 2, 5), id="NCdd"),
    pytest.param((6,), id="C"),
]


def split_shape(shape):
    """(classes, target shape) of a class-loss input shape."""
    return (shape[0], ()) if len(shape) == 1 else (shape[1], shape[:1] + shape[2:])


# ---- cross_entropy with class indices ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_indices(rng, dtype, shape, weighted, label_smoothing, ignore_index, reduction):
    classes, target_shape = split_shape(shape)
    n_ignored = 0 if not target_shape else 2
    arrays = dict(input=rng.standard_normal(shape).astype(dtype),
                  target=class_targets(rng, target_shape, classes, ignore_index, n_ignored),
                  weight=rng.uniform(0.2, 2.0, classes).astype(dtype) if weighted else None)
    options = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    compare(lambda **a: F.cross_entropy(**a, **options), lambda **a: TF.cross_entropy(**a, **options), arrays, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_all_targets_ignored(rng, dtype, weighted, label_smoothing, reduction):
    """'mean' over no counted target is 0/0 = nan, as in PyTorch; the gradient is 0 (not nan)."""
    arrays = dict(input=rng.standard_normal((3, 4, 2)).astype(dtype), target=np.full((3, 2), -100),
                  weight=rng.uniform(0.5, 2.0, 4).astype(dtype) if weighted else None)
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's 0/0
        out = compare(lambda **a: F.cross_entropy(**a, **options), lambda **a: TF.cross_entropy(**a, **options),
                      arrays, rng, grad_of=["input"])
    if reduction == "mean":
        assert np.isnan(out.item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_huge_logits(rng, dtype, weighted, label_smoothing):
    """Logits of magnitude 1e4: the max-shifted log-softmax neither overflows nor loses the loss."""
    logits = rng.choice([-1.0, 1.0], (6, 5)) * 1e4 * rng.uniform(0.5, 1.0, (6, 5))
    logits[0] = [1e4, 1e4 - 1, -1e4, 0.0, 1e4 - 0.5]  # near-ties at the top
    arrays = dict(input=logits.astype(dtype), target=rng.integers(0, 5, 6),
                  weight=rng.uniform(0.5, 2.0, 5).astype(dtype) if weighted else None)
    options = dict(label_smoothing=label_smoothing)
    out = compare(lambda **a: F.cross_entropy(**a, reduction="none", **options),
                  lambda **a: TF.cross_entropy(**a, reduction="none", **options), arrays, rng,
                  tol=dict(rtol=1e-6, atol=1e-3) if dtype == np.float32 else None)
    assert np.all(np.isfinite(out.detach().numpy()))


def test_cross_entropy_uses_the_fused_op_without_weights(rng):
    x = mg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    plain = F.cross_entropy(x, mg.tensor([0, 1, 2]), reduction="none")
    weighted = F.cross_entropy(x, mg.tensor([0, 1, 2]), weight=mg.ones(4, dtype=mg.float64), reduction="none")
    assert plain.grad_fn.name == "CrossEntropyBackward"
    assert weighted.grad_fn.name != "CrossEntropyBackward"
    np.testing.assert_allclose(plain.detach().numpy(), weighted.detach().numpy(), rtol=1e-12)


# ---- cross_entropy with class probabilities ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_probabilities(rng, dtype, shape, weighted, label_smoothing, reduction):
    classes, _ = split_shape(shape)
    arrays = dict(input=rng.standard_normal(shape).astype(dtype),
                  target=probabilities(rng, shape, dtype, 0 if len(shape) == 1 else 1),
                  weight=rng.uniform(0.2, 2.0, classes).astype(dtype) if weighted else None)
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    compare(lambda **a: F.cross_entropy(**a, **options), lambda **a: TF.cross_entropy(**a, **options), arrays, rng)


# ---- nll_loss ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("ignore_index", [-100, 0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(rng, dtype, shape, weighted, ignore_index, reduction):
    classes, target_shape = split_shape(shape)
    arrays = dict(input=rng.standard_normal(shape).astype(dtype),
                  target=class_targets(rng, target_shape, classes, ignore_index, 0 if not target_shape else 2),
                  weight=rng.uniform(0.2, 2.0, classes).astype(dtype) if weighted else None)
    options = dict(ignore_index=ignore_index, reduction=reduction)
    compare(lambda **a: F.nll_loss(**a, **options), lambda **a: TF.nll_loss(**a, **options), arrays, rng)


def test_nll_loss_all_ignored_is_nan_for_mean(rng):
    x = rng.standard_normal((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        compare(F.nll_loss, TF.nll_loss, dict(input=x, target=np.array([-100, -100])), rng)


# ---- elementwise losses ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)], ids=["1d", "2d", "3d"])
def test_error_losses(rng, dtype, name, weighted, reduction, shape):
    arrays = dict(input=rng.standard_normal(shape).astype(dtype), target=rng.standard_normal(shape).astype(dtype),
                  weight=rng.uniform(0.0, 2.0, shape).astype(dtype) if weighted else None)
    compare(lambda **a: getattr(F, name)(**a, reduction=reduction),
            lambda **a: getattr(TF, name)(**a, reduction=reduction), arrays, rng)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_error_losses_broadcast_a_different_target_shape_with_a_warning(rng, name):
    arrays = dict(input=rng.standard_normal((4, 1)), target=rng.standard_normal(4))
    with pytest.warns(UserWarning, match="different to the input size"):
        compare(lambda **a: getattr(F, name)(**a, reduction="none"),
                lambda **a: getattr(TF, name)(**a, reduction="none"), arrays, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_shape", [None, (5,), (3, 5)], ids=["plain", "weight_C", "weight_full"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(rng, dtype, weight_shape, reduction):
    arrays = dict(input=rng.uniform(0.02, 0.98, (3, 5)).astype(dtype), target=rng.uniform(0, 1, (3, 5)).astype(dtype),
                  weight=None if weight_shape is None else rng.uniform(0.2, 2.0, weight_shape).astype(dtype))
    compare(lambda **a: F.binary_cross_entropy(**a, reduction=reduction),
            lambda **a: TF.binary_cross_entropy(**a, reduction=reduction), arrays, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_clamps_the_log_at_0_and_1(rng, dtype):
    """Probabilities of exactly 0 and 1 (a saturated sigmoid) give PyTorch's finite loss (each log clamped
    to -100), and a finite gradient."""
    x, t = np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype), np.array([1.0, 0.0, 0.0, 1.0, 0.3], dtype)
    compare(lambda **a: F.binary_cross_entropy(**a, reduction="none"),
            lambda **a: TF.binary_cross_entropy(**a, reduction="none"), dict(input=x, target=t), rng, grad_of=[])
    xm = mg.tensor(x, requires_grad=True)
    F.binary_cross_entropy(xm, mg.tensor(t)).backward()
    assert np.all(np.isfinite(xm.grad.numpy()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("pos_weighted", [False, True], ids=["", "pos_weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["normal", "huge"])
def test_binary_cross_entropy_with_logits(rng, dtype, weighted, pos_weighted, reduction, scale):
    x = rng.standard_normal((4, 3)) * scale
    x[0] = [0.0, 0.0, 0.0]  # exactly 0, where a form with |x| or max(x, 0) would take a one-sided gradient
    arrays = dict(input=x.astype(dtype), target=rng.uniform(0, 1, (4, 3)).astype(dtype),
                  weight=rng.uniform(0.2, 2.0, (4, 3)).astype(dtype) if weighted else None,
                  pos_weight=rng.uniform(0.5, 3.0, 3).astype(dtype) if pos_weighted else None)
    compare(lambda **a: F.binary_cross_entropy_with_logits(**a, reduction=reduction),
            lambda **a: TF.binary_cross_entropy_with_logits(**a, reduction=reduction), arrays, rng,
            tol=dict(rtol=1e-5, atol=1e-3) if scale > 1 and dtype == np.float32 else None)


# ---- layers --------------------------------------------------------------------------------------------

def test_loss_layers_register_weights_as_buffers_and_load_torch_state_dicts(rng):
    w, pw = rng.uniform(0.5, 2.0, 4).astype(np.float32), rng.uniform(0.5, 2.0, 4).astype(np.float32)
    pairs = [
        (mg.nn.CrossEntropyLoss(weight=mg.ones(4)), torch.nn.CrossEntropyLoss(weight=torch.tensor(w))),
        (mg.nn.NLLLoss(weight=mg.ones(4)), torch.nn.NLLLoss(weight=torch.tensor(w))),
        (mg.nn.BCELoss(weight=mg.ones(4)), torch.nn.BCELoss(weight=torch.tensor(w))),
        (mg.nn.BCEWithLogitsLoss(weight=mg.ones(4), pos_weight=mg.ones(4)),
         torch.nn.BCEWithLogitsLoss(weight=torch.tensor(w), pos_weight=torch.tensor(pw))),
        (mg.nn.MSELoss(), torch.nn.MSELoss()),
        (mg.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()),
    ]
    for mine, ref in pairs:
        assert list(mine.state_dict()) == list(ref.state_dict())
        assert list(mine.parameters()) == []
        mine.load_state_dict(ref.state_dict())
        for key, value in ref.state_dict().items():
            np.testing.assert_array_equal(mine.state_dict()[key].numpy(), value.numpy())
        assert repr(mine) == repr(ref)


LAYERS = [  # minigrad layer, torch layer, kwargs, input maker
    ("CrossEntropyLoss", dict(ignore_index=2, label_smoothing=0.1), "logits"),
    ("CrossEntropyLoss", dict(weight="w", reduction="sum"), "logits"),
    ("NLLLoss", dict(weight="w", ignore_index=0, reduction="none"), "logits"),
    ("MSELoss", dict(reduction="sum"), "pair"),
    ("L1Loss", dict(), "pair"),
    ("BCELoss", dict(weight="w"), "probs"),
    ("BCEWithLogitsLoss", dict(weight="w", pos_weight="w"), "pair"),
]


@pytest.mark.parametrize("name, kwargs, inputs", LAYERS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(LAYERS)])
def test_loss_layers_match_torch(rng, name, kwargs, inputs):
    w = rng.uniform(0.5, 2.0, 4)
    mine = getattr(mg.nn, name)(**{k: mg.tensor(w) if v == "w" else v for k, v in kwargs.items()})
    ref = getattr(torch.nn, name)(**{k: torch.tensor(w) if v == "w" else v for k, v in kwargs.items()})
    if inputs == "logits":
        arrays = dict(input=rng.standard_normal((5, 4)), target=rng.integers(0, 4, 5))
    elif inputs == "probs":
        arrays = dict(input=rng.uniform(0.05, 0.95, (3, 4)), target=rng.uniform(0, 1, (3, 4)))
    else:
        arrays = dict(input=rng.standard_normal((3, 4)), target=rng.uniform(0, 1, (3, 4)))
    compare(mine, ref, arrays, rng)


@pytest.mark.parametrize("size_average, reduce", list(itertools.product([None, True, False], [True, False])))
def test_deprecated_size_average_and_reduce_flags(size_average, reduce):
    with pytest.warns(UserWarning, match="size_average and reduce"):
        mine = mg.nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
    assert mine.reduction == ref.reduction


# ---- errors --------------------------------------------------------------------------------------------

def test_loss_errors_name_the_problem():
    x, t = mg.randn(3, 4), mg.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(x, t, reduction="average")
    with pytest.raises(TypeError, match="int64 class indices"):
        F.cross_entropy(x, t.float())
    with pytest.raises(ValueError, match=r"needs a target of shape \(3,\)"):
        F.cross_entropy(x, mg.tensor([0, 1]))
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        F.nll_loss(x, mg.tensor([0, 4, 1]))
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        F.cross_entropy(x, mg.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"one value per class\) of shape \(3,\) must have the shape \(4,\)"):
        F.cross_entropy(x, t, weight=mg.ones(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="not supported for class-probability"):
        F.cross_entropy(x, mg.rand(3, 4), ignore_index=0)
    with pytest.raises(TypeError, match="floating point"):
        F.cross_entropy(t, t)
    with pytest.raises(ValueError, match="0-d"):
        F.cross_entropy(mg.tensor(1.0), mg.tensor(0))
    with pytest.raises(ValueError, match=r"must have the input's shape \(3, 4\)"):
        F.binary_cross_entropy(mg.rand(3, 4), mg.rand(4))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        F.binary_cross_entropy(x, mg.rand(3, 4))
    with pytest.raises(ValueError, match="pos_weight of shape"):
        F.binary_cross_entropy_with_logits(x, mg.rand(3, 4), pos_weight=mg.ones(3))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) must have the shape \(3, 4\)"):
        F.mse_loss(x, x, weight=mg.ones(4))
    with pytest.raises(ValueError):
        F.mse_loss(x, mg.randn(2, 4))  # shapes that do not broadcast
    with pytest.raises(TypeError, match="must be Tensors"):
        F.l1_loss(x, [1.0, 2.0])


# ---- the fused kernel on every backend -------------------------------------------------------------

@pytest.mark.parametrize("backend", mg.backend.available("cpu"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_kernel_of_every_backend_matches_the_reference(rng, backend, dtype):
    logits = (rng.standard_normal((9, 6)) * 3).astype(dtype)
    targets = rng.integers(0, 6, 9)
    targets[[1, 4]] = -100
    dlosses = rng.standard_normal(9).astype(dtype)
    ref_losses, ref_logprobs = numpy_ref.cross_entropy_forward(logits, targets, -100, 0.1)
    ref_dlogits = numpy_ref.cross_entropy_backward(dlosses, ref_logprobs, targets, -100, 0.1)
    x = mg.tensor(logits, requires_grad=True)
    with mg.backend.use(backend):
        losses = F.cross_entropy(x, mg.tensor(targets), reduction="none", label_smoothing=0.1)
        losses.backward(mg.tensor(dlosses))
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(losses.detach().numpy(), ref_losses, **tol)
    np.testing.assert_allclose(x.grad.numpy(), ref_dlogits, **tol)
    assert losses.dtype.np_dtype == dtype and x.grad.dtype.np_dtype == dtype
    assert np.all(x.grad.numpy()[[1, 4]] == 0)
