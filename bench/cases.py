"""The benchmark cases, and the registry they are declared in.

A case is a function ``setup(side, **params) -> step`` decorated with ``@case(...)``. It runs
inside a worker process: it builds the inputs for one side ("minigrad", "numpy" or "torch")
and returns a zero-argument ``step`` that does the timed work once and returns its result
(tensors, arrays, floats or a tuple of them; the worker converts them for validation).
Imports of minigrad and torch stay inside the functions: a worker imports only its own side.

All sides build their inputs from the same seeded NumPy data, so the results must agree.
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

CASES = {}


@dataclass
class Case:
    name: str
    setup: Callable
    refs: tuple          # reference sides to compare minigrad against
    sizes: list          # parameter dicts for a full run
    quick: list          # parameter dicts for --quick
    tol: float           # max normwise relative error allowed in validation
    label: str           # format string for a parameter dict, e.g. "n={n}"
    doc: str = field(default="")


def case(name, *, refs, sizes, label, quick=None, tol=1e-4):
    """Register ``setup(side, **params) -> step`` as the benchmark case ``name``."""
    def register(setup):
        CASES[name] = Case(name, setup, tuple(refs), list(sizes), list(quick or sizes), tol,
                           label, (setup.__doc__ or "").strip().splitlines()[0])
        return setup
    return register


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _lib(side):
    """The tensor library of a side: minigrad or torch (both PyTorch-like)."""
    if side == "torch":
        import torch
        return torch
    import minigrad
    return minigrad


@case("matmul", refs=("numpy", "torch"),
      sizes=[dict(n=256), dict(n=512), dict(n=1024), dict(n=2048)],
      quick=[dict(n=128), dict(n=256)], label="n={n}")
def matmul(side, n):
    """float32 (n, n) @ (n, n)."""
    a, b = _randn(n, n, seed=1), _randn(n, n, seed=2)
    if side == "numpy":
        return lambda: a @ b
    lib = _lib(side)
    A, B = lib.from_numpy(a), lib.from_numpy(b)
    return lambda: A @ B


@case("softmax", refs=("numpy", "torch"),
      sizes=[dict(rows=4096, cols=1024)], quick=[dict(rows=256, cols=1024)],
      label="{rows}x{cols}", tol=1e-5)
def softmax(side, rows, cols):
    """float32 softmax over the last dim (NumPy: exp(x - max) / sum)."""
    x = _randn(rows, cols, seed=3)
    if side == "numpy":
        def step():
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        return step
    if side == "torch":
        import torch
        X = torch.from_numpy(x)
        return lambda: torch.softmax(X, dim=-1)
    import minigrad as mg
    X = mg.from_numpy(x)
    return lambda: X.softmax(-1)


@case("mlp_step", refs=("torch",),
      sizes=[dict(batch=128, d_in=784, hidden=256, classes=10)],
      label="B={batch} {d_in}-{hidden}-{classes}")
def mlp_step(side, batch, d_in, hidden, classes, lr=0.01):
    """One SGD step of a 2-layer ReLU MLP, cross-entropy via log_softmax + indexing."""
    lib = _lib(side)
    rng = np.random.default_rng(4)
    x = lib.from_numpy(_randn(batch, d_in, seed=5))
    y = lib.from_numpy(rng.integers(0, classes, size=batch, dtype=np.int64))
    init = [_randn(d_in, hidden, seed=6) * np.float32(np.sqrt(2 / d_in)),
            np.zeros(hidden, np.float32),
            _randn(hidden, classes, seed=7) * np.float32(np.sqrt(1 / hidden)),
            np.zeros(classes, np.float32)]
    params = [lib.tensor(p, requires_grad=True) for p in init]
    w1, b1, w2, b2 = params

    def step():
        h = (x @ w1 + b1).relu()                        # (B, H)
        logp = (h @ w2 + b2).log_softmax(1)             # (B, C)
        loss = -logp[lib.arange(batch), y].mean()
        loss.backward()
        grads = [p.grad for p in params]
        with lib.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
                p.grad = None
        return (loss, *grads)
    return step


@case("add_tiny", refs=("numpy", "torch"), sizes=[dict(n=4)], label="({n},)", tol=1e-6)
def add_tiny(side, n):
    """a + b on float32 (n,): per-op dispatch overhead."""
    a, b = _randn(n, seed=8), _randn(n, seed=9)
    if side == "numpy":
        return lambda: a + b
    lib = _lib(side)
    A, B = lib.from_numpy(a), lib.from_numpy(b)
    return lambda: A + B


@case("fwd_bwd_tiny", refs=("torch",), sizes=[dict(n=4)], label="({n},)", tol=1e-6)
def fwd_bwd_tiny(side, n):
    """(x * w + x).relu().sum().backward() on (n,): autograd overhead per op."""
    lib = _lib(side)
    x = lib.tensor(_randn(n, seed=10), requires_grad=True)
    w = lib.tensor(_randn(n, seed=11), requires_grad=True)

    def step():
        out = (x * w + x).relu().sum()
        out.backward()
        gx, gw = x.grad, w.grad
        x.grad = None
        w.grad = None
        return out, gx, gw
    return step


def _seeded_state(module, seed):
    """Seeded NumPy values for every entry of a module's state_dict (both sides get the same weights;
    a uniform +-1/sqrt(fan) keeps activations of deep stacks in range)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, value in module.state_dict().items():
        shape = tuple(value.shape)
        fan = shape[-1] if len(shape) > 1 else max(shape[0], 1) if shape else 1
        if "running_var" in name:
            state[name] = np.ones(shape, np.float32)
        elif "num_batches" in name:
            state[name] = np.zeros(shape, np.int64)
        else:
            state[name] = rng.uniform(-1, 1, shape).astype(np.float32) / np.float32(np.sqrt(fan))
    return state


def _layer_step(side, build, x, seed):
    """forward + backward of `build(nn)` on input x with loss mean(out^2); returns the loss and every
    parameter gradient (the same code runs on minigrad and on torch)."""
    lib = _lib(side)
    module = build(lib.nn)
    state = _seeded_state(module, seed)
    module.load_state_dict({k: lib.from_numpy(v) for k, v in state.items()})
    X = lib.from_numpy(x)
    params = list(module.parameters())

    def step():
        out = module(X)
        out = out[0] if isinstance(out, tuple) else out
        loss = (out * out).mean()
        loss.backward()
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        return (loss, *grads)
    return step


@case("conv2d_step", refs=("torch",), sizes=[dict(batch=32, size=32)], quick=[dict(batch=4, size=16)],
      label="B={batch} {size}x{size} 3-16-32", tol=1e-3)
def conv2d_step(side, batch, size):
    """forward + backward of Conv2d(3->16, 3x3) -> ReLU -> Conv2d(16->32, 3x3), padding 1."""
    build = lambda nn: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),  # noqa: E731
                                     nn.Conv2d(16, 32, 3, padding=1))
    return _layer_step(side, build, _randn(batch, 3, size, size, seed=12), seed=13)


@case("lstm_step", refs=("torch",), sizes=[dict(seq=64, batch=32, d_in=64, hidden=128)],
      quick=[dict(seq=8, batch=4, d_in=16, hidden=32)], label="T={seq} B={batch} {d_in}->{hidden}", tol=1e-3)
def lstm_step(side, seq, batch, d_in, hidden):
    """forward + backward of a one-layer LSTM over a (T, B, d_in) sequence."""
    return _layer_step(side, lambda nn: nn.LSTM(d_in, hidden), _randn(seq, batch, d_in, seed=14), seed=15)


@case("encoder_layer_step", refs=("torch",), sizes=[dict(batch=12, seq=64, d=128, heads=4)],
      quick=[dict(batch=2, seq=16, d=32, heads=4)], label="B={batch} T={seq} d={d} h={heads}", tol=1e-3)
def encoder_layer_step(side, batch, seq, d, heads):
    """forward + backward of a TransformerEncoderLayer (pre-LN, GELU, ffn 4d, no dropout), causal mask."""
    lib = _lib(side)
    mask = lib.from_numpy(np.triu(np.full((seq, seq), -np.inf, np.float32), 1))

    def build(nn):
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        forward = layer.forward
        layer.forward = lambda x: forward(x, src_mask=mask)
        return layer
    return _layer_step(side, build, _randn(batch, seq, d, seed=16), seed=17)
