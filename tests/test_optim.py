"""Optimizers, learning-rate schedulers and gradient clipping, side by side with PyTorch.

Optimizers: minigrad and torch start from the same parameters and receive the same sequence of random
gradients (set directly on `.grad`, so the comparison isolates the update rule) for 30 steps, for every
combination of each optimizer's options; the parameters must agree to float32 tolerance (and tightly in
float64). Also: param groups with their own hyperparameters, parameters without a gradient on some steps,
the state_dict layout (PyTorch's) and a round trip mid-training, loading PyTorch's own state dict, and the
constructor's and load_state_dict's errors.

Schedulers: the lr of every param group over 40 steps equals PyTorch's; WarmupCosineLR is checked against
its documented formula by hand and against the equivalent composition of PyTorch schedulers.
"""
from __future__ import annotations

import copy
import itertools
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")
from torch.optim import lr_scheduler as torch_sched  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad.nn.utils import clip_grad_norm_, clip_grad_value_  # noqa: E402
from minigrad.optim import lr_scheduler  # noqa: E402

SHAPES = [(3, 4), (5,), (), (2, 3, 2)]
STEPS = 30
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


class SideBySide:
    """The same parameters in minigrad and torch, fed the same random gradients."""

    def __init__(self, rng, dtype=np.float32, shapes=SHAPES):
        self.rng, self.dtype = rng, dtype
        values = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.mine = [mg.nn.Parameter(mg.tensor(v.copy())) for v in values]
        self.ref = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]

    def set_grads(self, skip=()):
        """New random gradients (the same for both); parameters at positions in `skip` get none."""
        for i, (m, t) in enumerate(zip(self.mine, self.ref)):
            g = None if i in skip else self.rng.standard_normal(m.shape).astype(self.dtype)
            m.grad = None if g is None else mg.tensor(g)
            t.grad = None if g is None else torch.tensor(g)

    def run(self, mine_opt, ref_opt, steps=STEPS, skip_every=0):
        for step in range(steps):
            self.set_grads(skip=(1,) if skip_every and step % skip_every == 0 else ())
            mine_opt.step()
            ref_opt.step()
        self.assert_close()

    def assert_close(self):
        for i, (m, t) in enumerate(zip(self.mine, self.ref)):
            np.testing.assert_allclose(m.detach().numpy(), t.detach().numpy(), err_msg=f"parameter {i}",
                                       **TOL[self.dtype])


def grid(**options):
    """Every combination of the option values, as a list of dicts (with readable ids)."""
    names = list(options)
    combos = [dict(zip(names, values)) for values in itertools.product(*options.values())]
    return [pytest.param(c, id="-".join(f"{k}={v}" for k, v in c.items())) for c in combos]


SGD_OPTIONS = [p for p in grid(momentum=[0.0, 0.9], dampening=[0.0, 0.3], weight_decay=[0.0, 0.05],
                                nesterov=[False, True], maximize=[False, True])
               if not (p.values[0]["nesterov"] and (p.values[0]["momentum"] == 0 or p.values[0]["dampening"]))]
ADAM_OPTIONS = grid(betas=[(0.9, 0.999), (0.5, 0.8)], weight_decay=[0.0, 0.1], amsgrad=[False, True],
                    maximize=[False, True])
RMSPROP_OPTIONS = grid(alpha=[0.99, 0.7], momentum=[0.0, 0.6], centered=[False, True], weight_decay=[0.0, 0.1],
                       maximize=[False, True])


@pytest.mark.parametrize("options", SGD_OPTIONS)
def test_sgd_matches_torch(rng, options):
    pair = SideBySide(rng)
    pair.run(mg.optim.SGD(pair.mine, lr=0.05, **options), torch.optim.SGD(pair.ref, lr=0.05, **options))


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("options", ADAM_OPTIONS)
def test_adam_and_adamw_match_torch(rng, name, options):
    pair = SideBySide(rng)
    pair.run(getattr(mg.optim, name)(pair.mine, lr=0.02, **options),
             getattr(torch.optim, name)(pair.ref, lr=0.02, **options))


@pytest.mark.parametrize("options", RMSPROP_OPTIONS)
def test_rmsprop_matches_torch(rng, options):
    pair = SideBySide(rng)
    pair.run(mg.optim.RMSprop(pair.mine, lr=0.01, **options), torch.optim.RMSprop(pair.ref, lr=0.01, **options))


FULL_OPTIONS = [  # one busy configuration per optimizer, for float64 and the tests below
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.02, amsgrad=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
]
FULL_IDS = [name for name, _ in FULL_OPTIONS]


@pytest.mark.parametrize("name, options", FULL_OPTIONS, ids=FULL_IDS)
def test_float64_matches_torch_tightly(rng, name, options):
    pair = SideBySide(rng, dtype=np.float64)
    pair.run(getattr(mg.optim, name)(pair.mine, **options), getattr(torch.optim, name)(pair.ref, **options))


@pytest.mark.parametrize("name, options", FULL_OPTIONS, ids=FULL_IDS)
def test_param_groups_with_their_own_hyperparameters_and_missing_grads(rng, name, options):
    """Two groups with different lrs (and one other hyperparameter); parameter 1 has no gradient on
    every third step, which skips it (its state does not advance), as in PyTorch."""
    run_two_groups_with_missing_grads(rng, name, options)


@pytest.mark.parametrize("backend", mg.backend.available("cpu"))
@pytest.mark.parametrize("name, options", FULL_OPTIONS[:3], ids=FULL_IDS[:3])
def test_every_backends_foreach_steps_match_torch(rng, backend, name, options):
    """SGD, Adam and AdamW step a param group with one multi-tensor primitive (sgd_foreach_ /
    adam_foreach_): each CPU backend's (the C++ kernel, the loops over the Numba and the reference
    single-tensor steps) matches torch, parameters skipped on some steps (at other step counts) included."""
    with mg.backend.use(backend):
        assert mg.backend.selected("adam_foreach_") == backend
        run_two_groups_with_missing_grads(rng, name, options)


def run_two_groups_with_missing_grads(rng, name, options):
    pair = SideBySide(rng)
    other = dict(SGD=dict(momentum=0.5), Adam=dict(betas=(0.8, 0.9)), AdamW=dict(weight_decay=0.5),
                 RMSprop=dict(alpha=0.9))[name]

    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:], "lr": options["lr"] * 3, **other}]

    mine = getattr(mg.optim, name)(groups(pair.mine), **options)
    ref = getattr(torch.optim, name)(groups(pair.ref), **options)
    assert [g["lr"] for g in mine.param_groups] == [g["lr"] for g in ref.param_groups]
    pair.run(mine, ref, skip_every=3)


def train(pair, opt_mine, opt_ref, steps):
    for _ in range(steps):
        pair.set_grads()
        opt_mine.step()
        if opt_ref is not None:
            opt_ref.step()


@pytest.mark.parametrize("name, options", FULL_OPTIONS, ids=FULL_IDS)
def test_state_dict_round_trip_continues_identically(rng, name, options):
    pair = SideBySide(rng)
    first = getattr(mg.optim, name)([{"params": pair.mine[:1]}, {"params": pair.mine[1:], "lr": 0.003}], **options)
    train(pair, first, None, 15)
    saved = first.state_dict()
    # a second optimizer over copies of the parameters, built with other hyperparameters: all are restored
    copies = [mg.nn.Parameter(mg.tensor(p.detach().numpy().copy())) for p in pair.mine]
    second = getattr(mg.optim, name)([{"params": copies[:1]}, {"params": copies[1:]}], lr=1.0)
    second.load_state_dict(saved)
    assert second.param_groups[1]["lr"] == 0.003
    assert [{k: v for k, v in g.items() if k != "params"} for g in second.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in first.param_groups]
    for _ in range(15):  # both continue on the same gradients: the loaded state is a copy, not shared
        pair.set_grads()
        for p, c in zip(pair.mine, copies):
            c.grad = mg.tensor(p.grad.numpy().copy())
        first.step()
        second.step()
    for p, c in zip(pair.mine, copies):
        np.testing.assert_array_equal(p.detach().numpy(), c.detach().numpy())


@pytest.mark.parametrize("name, options", FULL_OPTIONS, ids=FULL_IDS)
def test_state_dict_layout_is_torchs_and_torch_state_dicts_load(rng, name, options):
    pair = SideBySide(rng)
    mine = getattr(mg.optim, name)(pair.mine, **options)
    ref = getattr(torch.optim, name)(pair.ref, **options)
    train(pair, mine, ref, 5)
    ours, theirs = mine.state_dict(), ref.state_dict()
    assert ours["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]
    assert set(ours["param_groups"][0]) <= set(theirs["param_groups"][0])
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in theirs["state"].items():
        assert set(ours["state"][index]) == set(state)
        assert ours["state"][index].get("step") == (None if "step" not in state else int(state["step"]))
    # a fresh minigrad optimizer loads torch's state dict (its tensors as arrays) and continues as torch does
    fresh = getattr(mg.optim, name)(pair.mine, lr=1.0)
    arrays = {i: {k: v.numpy().copy() for k, v in s.items()} for i, s in theirs["state"].items()}
    fresh.load_state_dict({"param_groups": theirs["param_groups"], "state": arrays})
    pair.run(fresh, ref, steps=10)


def test_optimizer_constructor_errors():
    p = mg.nn.Parameter(mg.zeros(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        mg.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="got a Tensor"):
        mg.optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="ordered collection"):
        mg.optim.SGD({p}, lr=0.1)
    with pytest.raises(TypeError, match="ordered collection"):
        mg.optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        mg.optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="non-leaf"):
        mg.optim.Adam([p * 2])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        mg.optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        mg.optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        mg.optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid alpha"):
        mg.optim.RMSprop([p], alpha=-0.5)


def test_load_state_dict_errors(rng):
    params = [mg.nn.Parameter(mg.zeros(2)), mg.nn.Parameter(mg.zeros(3))]
    opt = mg.optim.Adam(params)
    for p in params:
        p.grad = mg.ones(*p.shape)
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="1 parameter groups, the optimizer has 2"):
        mg.optim.Adam([{"params": params[:1]}, {"params": params[1:]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0 has 2 parameters, the optimizer's has 1"):
        mg.optim.Adam(params[:1]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"shape \(2,\), the parameter has shape \(3,\)"):
        mg.optim.Adam(params[::-1]).load_state_dict(saved)


def test_zero_grad_and_closure():
    p = mg.nn.Parameter(mg.tensor([1.0, -2.0]))
    opt = mg.optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 5.0
    np.testing.assert_allclose(p.detach().numpy(), [0.0, 0.0])  # p - 0.5 * 2p
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None
    assert "Parameter Group 0" in repr(opt) and "lr: 0.5" in repr(opt)


def test_add_param_group_takes_the_defaults(rng):
    pair = SideBySide(rng)
    mine, ref = mg.optim.Adam(pair.mine[:2], lr=0.01), torch.optim.Adam(pair.ref[:2], lr=0.01)
    train(pair, mine, ref, 3)
    mine.add_param_group({"params": pair.mine[2:], "lr": 0.05})
    ref.add_param_group({"params": pair.ref[2:], "lr": 0.05})
    assert mine.param_groups[1]["betas"] == (0.9, 0.999)
    pair.run(mine, ref, steps=10)


# ---- learning-rate schedulers ------------------------------------------------------------------------------

def two_group_optimizers():
    """A minigrad and a torch SGD with two param groups of lrs 0.1 and 0.02."""
    def groups(module):
        return [{"params": [module.Parameter(module_zeros(module))]},
                {"params": [module.Parameter(module_zeros(module))], "lr": 0.02}]
    return mg.optim.SGD(groups(mg.nn), lr=0.1), torch.optim.SGD(groups(torch.nn), lr=0.1)


def module_zeros(module):
    return mg.zeros(2) if module is mg.nn else torch.zeros(2)


def assert_same_lrs(mine, ref, steps=40):
    """The lrs after construction and after each of `steps` steps, of both schedulers and optimizers."""
    for step in range(steps + 1):
        if step:
            for scheduler in (mine, ref):
                scheduler.optimizer.step()  # no gradients: nothing changes, but torch checks the order
                scheduler.step()
        np.testing.assert_allclose(mine.get_last_lr(), ref.get_last_lr(), rtol=1e-12, atol=1e-15,
                                   err_msg=f"step {step}")
        np.testing.assert_allclose([g["lr"] for g in mine.optimizer.param_groups],
                                   [g["lr"] for g in ref.optimizer.param_groups], rtol=1e-12, atol=1e-15)


def lr_lambda(epoch):
    return 0.9 ** epoch + 0.01 * (epoch % 3)


SCHEDULERS = [  # id, constructor(module, optimizer)
    ("StepLR", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    ("LambdaLR", lambda m, o: m.LambdaLR(o, lr_lambda)),
    ("LambdaLR_per_group", lambda m, o: m.LambdaLR(o, [lr_lambda, lambda e: 1 / (1 + e)])),
    ("LinearLR_warmup", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=10)),
    ("LinearLR_decay", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=8)),
    ("LinearLR_default", lambda m, o: m.LinearLR(o)),
    ("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, T_max=12, eta_min=0.001)),
    ("SequentialLR", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)], milestones=[5])),
    ("SequentialLR_three", lambda m, o: m.SequentialLR(
        o, [m.StepLR(o, step_size=2, gamma=0.5), m.LambdaLR(o, lr_lambda), m.CosineAnnealingLR(o, T_max=9)],
        milestones=[6, 15])),
]


@pytest.mark.parametrize("make", [s[1] for s in SCHEDULERS], ids=[s[0] for s in SCHEDULERS])
def test_schedulers_match_torch(make):
    opt_mine, opt_ref = two_group_optimizers()
    assert_same_lrs(make(lr_scheduler, opt_mine), make(torch_sched, opt_ref))


@pytest.mark.parametrize("make", [s[1] for s in SCHEDULERS], ids=[s[0] for s in SCHEDULERS])
def test_scheduler_state_dict_round_trip(make):
    opt, _ = two_group_optimizers()
    scheduler = make(lr_scheduler, opt)
    for _ in range(9):
        scheduler.step()
    saved = copy.deepcopy(scheduler.state_dict())
    expected = []
    for _ in range(10):
        scheduler.step()
        expected.append(scheduler.get_last_lr())
    opt2, _ = two_group_optimizers()
    restored = make(lr_scheduler, opt2)
    restored.load_state_dict(saved)
    got = []
    for _ in range(10):
        restored.step()
        got.append(restored.get_last_lr())
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def warmup_cosine_by_hand(t, base, warmup, total, floor):
    if t < warmup:
        return base * t / warmup
    if t > total:
        return floor
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_warmup_cosine_follows_its_formula():
    opt, _ = two_group_optimizers()
    scheduler = lr_scheduler.WarmupCosineLR(opt, warmup_steps=10, max_steps=30, min_lr=[0.001, 0.0005])
    lrs = [scheduler.get_last_lr()]
    for _ in range(40):
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    lrs = np.array(lrs)  # (41 steps, 2 groups)
    for t in range(41):
        for g, (base, floor) in enumerate([(0.1, 0.001), (0.02, 0.0005)]):
            assert lrs[t, g] == pytest.approx(warmup_cosine_by_hand(t, base, 10, 30, floor), rel=1e-12, abs=1e-15)
    # landmarks: 0 at the start, half-way up at step 5, the peak at 10, the midpoint of the decay at 20,
    # min_lr at max_steps and constant after; increasing, then decreasing
    np.testing.assert_allclose(lrs[[0, 5, 10, 20, 30, 40], 0], [0.0, 0.05, 0.1, (0.1 + 0.001) / 2, 0.001, 0.001])
    assert np.all(np.diff(lrs[:11, 0]) > 0) and np.all(np.diff(lrs[10:31, 0]) < 0)


def test_warmup_cosine_equals_the_torch_composition():
    """Warmup t / W (LambdaLR), then CosineAnnealingLR over max_steps - W: the same lrs up to max_steps."""
    opt_mine, opt_ref = two_group_optimizers()
    mine = lr_scheduler.WarmupCosineLR(opt_mine, warmup_steps=8, max_steps=33, min_lr=0.002)
    ref = torch_sched.SequentialLR(
        opt_ref, [torch_sched.LambdaLR(opt_ref, lambda t: t / 8), torch_sched.CosineAnnealingLR(opt_ref, 25, 0.002)],
        milestones=[8])
    assert_same_lrs(mine, ref, steps=33)


def test_scheduler_errors():
    opt, _ = two_group_optimizers()
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=3, last_epoch=5)
    with pytest.raises(ValueError, match="start_factor"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="one milestone fewer"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="warmup_steps < max_steps"):
        lr_scheduler.WarmupCosineLR(opt, warmup_steps=10, max_steps=10)
    with pytest.raises(ValueError, match="one per param group"):
        lr_scheduler.LambdaLR(opt, [lr_lambda])


# ---- gradient clipping -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf], ids=["l2", "l1", "l3.5", "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clipped", "unclipped"])
def test_clip_grad_norm_matches_torch(rng, dtype, norm_type, max_norm):
    pair = SideBySide(rng, dtype=dtype)
    pair.set_grads(skip=(2,))  # a parameter without grad is left out
    total_mine = clip_grad_norm_(iter(pair.mine), max_norm, norm_type=norm_type)
    total_ref = torch.nn.utils.clip_grad_norm_(pair.ref, max_norm, norm_type=norm_type)
    tol = TOL[dtype]
    np.testing.assert_allclose(total_mine.numpy(), total_ref.numpy(), **tol)
    assert total_mine.dtype.np_dtype == total_ref.numpy().dtype
    for m, t in zip(pair.mine, pair.ref):
        assert (m.grad is None) == (t.grad is None)
        if m.grad is not None:
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), **tol)
    if max_norm < 1:  # clipped to the max norm
        grads = np.concatenate([p.grad.numpy().ravel() for p in pair.mine if p.grad is not None])
        assert np.linalg.norm(grads, ord=norm_type) == pytest.approx(max_norm, rel=1e-4)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, as torch
def test_clip_grad_norm_of_a_single_tensor_and_of_no_grads_and_nonfinite(rng):
    p = mg.nn.Parameter(mg.tensor([3.0, 4.0]))
    assert clip_grad_norm_(p, 1.0).item() == 0.0  # no gradient yet
    p.grad = mg.tensor([3.0, 4.0])
    assert clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)
    p.grad = mg.tensor([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    t = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    t.grad = torch.tensor([np.inf, 1.0])
    assert clip_grad_norm_([p], 1.0).item() == math.inf
    torch.nn.utils.clip_grad_norm_([t], 1.0)
    np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())  # nan, 0: as torch


@pytest.mark.parametrize("clip_value", [0.3, 2.0])
def test_clip_grad_value_matches_torch(rng, clip_value):
    pair = SideBySide(rng)
    pair.set_grads(skip=(0,))
    assert clip_grad_value_(pair.mine, clip_value) is None
    torch.nn.utils.clip_grad_value_(pair.ref, clip_value)
    for m, t in zip(pair.mine[1:], pair.ref[1:]):
        np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())
