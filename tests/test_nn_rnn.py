"""RNN, LSTM, GRU and their cells against PyTorch: the torch layer's weights are loaded into the minigrad
layer through state_dict, both run the same input and initial state, and the outputs, the final states,
the gradients of the input and initial state and the gradient of every parameter are compared, after
back-propagating seeded random cotangents through the output and the final states.

Covered: num_layers 1 and 2, batch_first both ways, bidirectional, initial states given or zero,
unbatched (2-D) input, no bias, odd sizes, float32 and float64; inter-layer dropout (active in training,
reproducible under manual_seed, off in eval); parameter names, shapes and init; errors.
"""
from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) is not installed")

import minigrad as mg  # noqa: E402
from minigrad import nn  # noqa: E402

TOLERANCES = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
KINDS = [  # (id, constructor keyword arguments shared by both libraries)
    ("RNN", {}), ("RNN_relu", dict(nonlinearity="relu")), ("LSTM", {}), ("GRU", {}),
]
INPUT, HIDDEN, STEPS, BATCH = 5, 7, 6, 3  # odd, distinct sizes: a swapped dim cannot go unnoticed


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def layer_pair(kind: str, dtype=np.float64, **options):
    """A torch layer with random weights and the minigrad layer loaded from its state_dict."""
    options = {**dict(KINDS)[kind], **options}
    name = kind.split("_")[0]
    theirs = getattr(torch.nn, name)(INPUT, HIDDEN, **options)
    theirs = theirs.double() if dtype == np.float64 else theirs
    ours = getattr(nn, name)(INPUT, HIDDEN, **options, dtype=mg.float64 if dtype == np.float64 else mg.float32)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def leaves(array):
    return mg.tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def flat(result):
    """(output, h_n) / (output, (h_n, c_n)) / h / (h, c) -> a flat list of tensors."""
    if isinstance(result, (mg.Tensor, torch.Tensor)):
        return [result]
    return [t for item in result for t in flat(item)]


def assert_close(ours, theirs, dtype):
    assert ours is not None and theirs is not None
    ours = ours.detach().numpy()
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, **TOLERANCES[np.dtype(dtype)])


def run_and_compare(rng, ours, theirs, x: np.ndarray, states: list[np.ndarray] | None, lstm: bool):
    """Run both on x (and the initial states, if given), compare every result and every gradient."""
    dtype = x.dtype
    xm, xt = leaves(x)
    state_pairs = [leaves(s) for s in states] if states is not None else None
    if state_pairs is None:
        hx_m = hx_t = None
    elif lstm:
        hx_m, hx_t = tuple(p[0] for p in state_pairs), tuple(p[1] for p in state_pairs)
    else:
        (hx_m, hx_t), = state_pairs
    results_m, results_t = flat(ours(xm, hx_m)), flat(theirs(xt, hx_t))
    assert len(results_m) == len(results_t)
    for m, t in zip(results_m, results_t):
        assert_close(m, t, dtype)
    # one backward through every result (output and final states) with random cotangents
    cotangents = [rng.standard_normal(tuple(t.shape)).astype(dtype) for t in results_t]
    sum(((m * mg.tensor(v)).sum() for m, v in zip(results_m, cotangents)), mg.tensor(0.0, dtype=xm.dtype)).backward()
    sum((t * torch.tensor(v)).sum() for t, v in zip(results_t, cotangents)).backward()
    assert_close(xm.grad, xt.grad, dtype)
    for m, t in state_pairs or []:
        assert_close(m.grad, t.grad, dtype)
    params_t = dict(theirs.named_parameters())
    params_m = dict(ours.named_parameters())
    assert params_m.keys() == params_t.keys()
    for name, p in params_t.items():
        assert_close(params_m[name].grad, p.grad, dtype)


def initial_states(rng, lead: tuple, lstm: bool, dtype):
    return [rng.standard_normal(lead + (HIDDEN,)).astype(dtype) for _ in range(2 if lstm else 1)]


# ---- full layers -----------------------------------------------------------------------------------------

CONFIGS = list(itertools.product([1, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("num_layers, batch_first, bidirectional, given_state", CONFIGS,
                         ids=[f"L{n}-{'bf' if bf else 'tf'}-{'bi' if bi else 'uni'}-{'hx' if hx else 'zero'}"
                              for n, bf, bi, hx in CONFIGS])
@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_layer_matches_torch(rng, kind, num_layers, batch_first, bidirectional, given_state):
    ours, theirs = layer_pair(kind, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    lead = (num_layers * (2 if bidirectional else 1), BATCH)
    states = initial_states(rng, lead, kind == "LSTM", np.float64) if given_state else None
    run_and_compare(rng, ours, theirs, rng.standard_normal(shape), states, kind == "LSTM")


@pytest.mark.parametrize("given_state", [False, True])
@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_unbatched_input_matches_torch(rng, kind, given_state):
    ours, theirs = layer_pair(kind, num_layers=2, bidirectional=True)
    states = initial_states(rng, (4,), kind == "LSTM", np.float64) if given_state else None
    run_and_compare(rng, ours, theirs, rng.standard_normal((STEPS, INPUT)), states, kind == "LSTM")


@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_float32_without_bias_matches_torch(rng, kind):
    ours, theirs = layer_pair(kind, np.float32, num_layers=2, bias=False, batch_first=True)
    assert not any("bias" in name for name, _ in ours.named_parameters())
    states = initial_states(rng, (2, 1), kind == "LSTM", np.float32)
    run_and_compare(rng, ours, theirs, rng.standard_normal((1, 9, INPUT)).astype(np.float32), states,
                    kind == "LSTM")


@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_single_step_sequence(rng, kind):
    ours, theirs = layer_pair(kind, bidirectional=True)
    run_and_compare(rng, ours, theirs, rng.standard_normal((1, 2, INPUT)), None, kind == "LSTM")


# ---- dropout between layers -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [k for k, _ in KINDS])
def test_inter_layer_dropout_in_train_mode_only(rng, kind):
    ours, theirs = layer_pair(kind, num_layers=2, dropout=0.5)
    plain, _ = layer_pair(kind, num_layers=2)
    plain.load_state_dict(theirs.state_dict())
    x = mg.tensor(rng.standard_normal((STEPS, BATCH, INPUT)))

    mg.manual_seed(5)
    first = ours(x)[0].detach().numpy()
    mg.manual_seed(5)
    np.testing.assert_array_equal(ours(x)[0].detach().numpy(), first)  # reproducible under manual_seed
    assert not np.allclose(first, plain(x)[0].detach().numpy())  # dropout changed the second layer's input
    assert not np.allclose(ours(x)[0].detach().numpy(), first)  # a new mask on the next call

    ours.eval()
    theirs.eval()
    assert_close(ours(x)[0], theirs(torch.tensor(x.numpy()))[0], np.float64)  # identical in eval
    assert_close(ours(x)[0], plain(x)[0], np.float64)


def test_inter_layer_dropout_leaves_the_first_layer_alone(rng):
    """The dropout acts between layers: the first layer's final state is the same with and without it."""
    ours, theirs = layer_pair("GRU", num_layers=2, dropout=0.9)
    plain, _ = layer_pair("GRU", num_layers=2)
    plain.load_state_dict(theirs.state_dict())
    x = mg.tensor(rng.standard_normal((STEPS, BATCH, INPUT)))
    h_n, h_plain = ours(x)[1], plain(x)[1]
    np.testing.assert_allclose(h_n[0].detach().numpy(), h_plain[0].detach().numpy(), rtol=1e-12)
    assert not np.allclose(h_n[1].detach().numpy(), h_plain[1].detach().numpy())


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.LSTM(3, 4, dropout=0.2)


# ---- cells ----------------------------------------------------------------------------------------------------

CELLS = [("RNNCell", {}), ("RNNCell", dict(nonlinearity="relu")), ("LSTMCell", {}), ("GRUCell", {}),
         ("GRUCell", dict(bias=False))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batched, given_state", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("name, options", CELLS, ids=[f"{n}{'-' + '-'.join(map(str, o.values())) if o else ''}"
                                                       for n, o in CELLS])
def test_cell_matches_torch(rng, name, options, batched, given_state, dtype):
    theirs = getattr(torch.nn, name)(INPUT, HIDDEN, **options)
    theirs = theirs.double() if dtype == np.float64 else theirs
    ours = getattr(nn, name)(INPUT, HIDDEN, **options, dtype=mg.float64 if dtype == np.float64 else mg.float32)
    ours.load_state_dict(theirs.state_dict())
    lead = (BATCH,) if batched else ()
    lstm = name == "LSTMCell"
    states = initial_states(rng, lead, lstm, dtype) if given_state else None
    run_and_compare(rng, ours, theirs, rng.standard_normal(lead + (INPUT,)).astype(dtype), states, lstm)


def test_cell_and_layer_compute_the_same_step(rng):
    """One step of a one-layer LSTM is one LSTMCell step with the same weights."""
    layer = nn.LSTM(INPUT, HIDDEN).double()
    cell = nn.LSTMCell(INPUT, HIDDEN).double()
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # weight_ih_l0 -> weight_ih
    x = mg.tensor(rng.standard_normal((1, BATCH, INPUT)))
    out, (h, c) = layer(x)
    h_cell, c_cell = cell(x[0])
    np.testing.assert_allclose(h_cell.detach().numpy(), h[0].detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_cell.detach().numpy(), c[0].detach().numpy(), rtol=1e-12)


# ---- parameters, init, repr ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(num_layers=3, bidirectional=True), dict(num_layers=2, bias=False), {}])
@pytest.mark.parametrize("kind", [k for k, _ in KINDS] + ["RNNCell", "LSTMCell", "GRUCell"])
def test_parameter_names_shapes_and_init(kind, options):
    name = kind.split("_")[0]
    if name.endswith("Cell"):
        options = {k: v for k, v in options.items() if k == "bias"}
    theirs = getattr(torch.nn, name)(INPUT, HIDDEN, **options)
    mg.manual_seed(0)
    ours = getattr(nn, name)(INPUT, HIDDEN, **options)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    bound = 1 / math.sqrt(HIDDEN)
    for p in ours.parameters():  # every parameter ~ U(-1/sqrt(H), 1/sqrt(H))
        values = p.detach().numpy()
        assert np.all(np.abs(values) <= bound) and values.std() > bound / 4
    assert repr(ours) == repr(theirs)


def test_repr_shows_the_options_like_torch():
    options = dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True)
    assert repr(nn.GRU(3, 4, **options)) == repr(torch.nn.GRU(3, 4, **options))
    assert repr(nn.RNNCell(3, 4, bias=False, nonlinearity="relu")) == \
           repr(torch.nn.RNNCell(3, 4, bias=False, nonlinearity="relu"))


def test_all_weights_lists_each_layer_and_direction():
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert [[tuple(p.shape) for p in ws] for ws in layer.all_weights] == \
           [[tuple(p.shape) for p in ws] for ws in torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).all_weights]


# ---- errors ---------------------------------------------------------------------------------------------------------

def test_errors_name_the_shapes():
    lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2)
    x = mg.randn(STEPS, BATCH, INPUT)
    with pytest.raises(ValueError, match=rf"input_size={INPUT}.*\(6, 3, 4\)"):
        lstm(mg.randn(STEPS, BATCH, 4))
    with pytest.raises(ValueError, match="2 or 3 dims"):
        lstm(mg.randn(INPUT))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm(x, mg.zeros(2, BATCH, HIDDEN))
    with pytest.raises(ValueError, match=r"\(2, 3, 7\).*\(1, 3, 7\)"):
        lstm(x, (mg.zeros(1, BATCH, HIDDEN), mg.zeros(1, BATCH, HIDDEN)))
    with pytest.raises(ValueError, match=r"\(2, 7\)"):  # unbatched input wants unbatched states
        nn.GRU(INPUT, HIDDEN, num_layers=2)(mg.randn(STEPS, INPUT), mg.zeros(2, 1, HIDDEN))
    with pytest.raises(TypeError, match="float64"):
        lstm(x.double())
    with pytest.raises(ValueError, match="empty"):
        lstm(mg.randn(0, BATCH, INPUT))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        nn.GRU(3, 0)
    with pytest.raises(ValueError, match="dropout"):
        nn.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"\(3, 7\)"):
        nn.GRUCell(INPUT, HIDDEN)(mg.randn(3, INPUT), mg.zeros(2, HIDDEN))
