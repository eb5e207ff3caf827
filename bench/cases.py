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
    # (unit, amount(**params)): the work of one step, to report a throughput and a fraction of the
    # machine's peak for it (bench/peak.py), e.g. ("GFLOP/s", lambda n: 2 * n**3 / 1e9).
    # Units with a peak: "GFLOP/s" (measured FMA loop), "GB/s" (measured copy bandwidth).
    work: tuple = None


def case(name, *, refs, sizes, label, quick=None, tol=1e-4, work=None):
    """Register ``setup(side, **params) -> step`` as the benchmark case ``name``."""
    def register(setup):
        CASES[name] = Case(name, setup, tuple(refs), list(sizes), list(quick or sizes), tol,
                           label, (setup.__doc__ or "").strip().splitlines()[0], work)
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
      sizes=[dict(n=128), dict(n=256), dict(n=512), dict(n=1024), dict(n=2048)],
      quick=[dict(n=128), dict(n=256)], label="n={n}", work=("GFLOP/s", lambda n: 2 * n**3 / 1e9))
def matmul(side, n):
    """float32 (n, n) @ (n, n)."""
    return matmul_rect(side, n, n, n)


@case("matmul_rect", refs=("numpy", "torch"),
      sizes=[dict(m=768, k=128, n=512), dict(m=128, k=768, n=512), dict(m=768, k=512, n=128)],
      quick=[dict(m=768, k=128, n=512)], label="{m}x{k} @ {k}x{n}",
      work=("GFLOP/s", lambda m, k, n: 2 * m * k * n / 1e9))
def matmul_rect(side, m, k, n):
    """float32 (m, k) @ (k, n): transformer shapes (768x128 @ 128x512: 768 tokens, d=128 -> 512)."""
    a, b = _randn(m, k, seed=1), _randn(k, n, seed=2)
    if side == "numpy":
        return lambda: a @ b
    lib = _lib(side)
    A, B = lib.from_numpy(a), lib.from_numpy(b)
    return lambda: A @ B


@case("matmul_prim", refs=("numpy", "torch"),
      sizes=[dict(n=16), dict(n=32), dict(n=64), dict(n=128)], quick=[dict(n=64)], label="n={n}",
      work=("GFLOP/s", lambda n: 2 * n**3 / 1e9))
def matmul_prim(side, n):
    """float32 (n, n) @ (n, n) on arrays: minigrad's matmul primitive (its Python wrapper and
    the kernel of the selected CPU backend), without the Tensor and autograd layers."""
    a, b = _randn(n, n, seed=1), _randn(n, n, seed=2)
    if side == "numpy":
        return lambda: np.matmul(a, b)
    if side == "torch":
        import torch
        A, B = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.matmul(A, B)
    import minigrad
    prim = minigrad.backend.dispatch("cpu").matmul
    return lambda: prim(a, b)


# Softmax reads x and writes y once: its work is counted as those bytes (GB/s, compared with the copy
# bandwidth of bench/peak.py); rows/s = rows / time.
_SOFTMAX_SIZES = dict(sizes=[dict(rows=4096, cols=1024), dict(rows=65536, cols=64)],
                      quick=[dict(rows=256, cols=1024)], label="{rows}x{cols}", tol=1e-5,
                      work=("GB/s", lambda rows, cols: 2 * rows * cols * 4 / 1e9))


def _softmax_step(side, rows, cols, log):
    x = _randn(rows, cols, seed=3)
    if side == "numpy":  # the composite: 5 passes over the data, 3 temporaries
        def step():
            shifted = x - x.max(axis=-1, keepdims=True)
            e = np.exp(shifted)
            s = e.sum(axis=-1, keepdims=True)
            return shifted - np.log(s) if log else e / s
        return step
    lib = _lib(side)
    X = lib.from_numpy(x)
    return (lambda: X.log_softmax(-1)) if log else (lambda: X.softmax(-1))


@case("softmax", refs=("numpy", "torch"), **_SOFTMAX_SIZES)
def softmax(side, rows, cols):
    """float32 softmax over the last dim (NumPy: exp(x - max) / sum)."""
    return _softmax_step(side, rows, cols, log=False)


@case("log_softmax", refs=("numpy", "torch"), **_SOFTMAX_SIZES)
def log_softmax(side, rows, cols):
    """float32 log-softmax over the last dim (NumPy: (x - max) - log(sum(exp(x - max))))."""
    return _softmax_step(side, rows, cols, log=True)


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
    return _on_numpy_ref(step) if side == "numpy" else step


def _on_numpy_ref(step):
    """The "numpy" side of a minigrad layer step: minigrad itself with every primitive on the NumPy
    reference backend (as MINIGRAD_BACKEND=numpy), so the ratio is minigrad's kernels against the reference."""
    import minigrad

    def run():
        with minigrad.backend.use("numpy"):
            return step()
    return run


@case("conv2d_step", refs=("numpy", "torch"), sizes=[dict(batch=32, size=32)], quick=[dict(batch=4, size=16)],
      label="B={batch} {size}x{size} 3-16-32", tol=1e-3)
def conv2d_step(side, batch, size):
    """forward + backward of Conv2d(3->16, 3x3) -> ReLU -> Conv2d(16->32, 3x3), padding 1."""
    build = lambda nn: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),  # noqa: E731
                                     nn.Conv2d(16, 32, 3, padding=1))
    return _layer_step(side, build, _randn(batch, 3, size, size, seed=12), seed=13)


@case("lstm_step", refs=("numpy", "torch"), sizes=[dict(seq=64, batch=32, d_in=64, hidden=128)],
      quick=[dict(seq=8, batch=4, d_in=16, hidden=32)], label="T={seq} B={batch} {d_in}->{hidden}", tol=1e-3)
def lstm_step(side, seq, batch, d_in, hidden):
    """forward + backward of a one-layer LSTM over a (T, B, d_in) sequence."""
    return _layer_step(side, lambda nn: nn.LSTM(d_in, hidden), _randn(seq, batch, d_in, seed=14), seed=15)


@case("encoder_layer_step", refs=("numpy", "torch"), sizes=[dict(batch=12, seq=64, d=128, heads=4)],
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


# ---- the Numba kernels, one primitive pair at a time ------------------------------------------------------
# minigrad: the primitives its CPU dispatch table selects (the Numba kernels when Numba is installed);
# numpy: the same primitives of the NumPy reference backend (numpy_ref), so the ratio is kernel against
# reference; torch: the aten kernels its autograd would run for the same forward + backward, called
# directly (no autograd on any side).

def _primitives(side):
    """minigrad's CPU dispatch table, or the NumPy reference backend (both export the primitives)."""
    if side == "numpy":
        from minigrad.backend import numpy_ref
        return numpy_ref
    import minigrad
    return minigrad.backend.dispatch("cpu")


@case("layernorm", refs=("numpy", "torch"), sizes=[dict(rows=768, d=128), dict(rows=4096, d=768)],
      quick=[dict(rows=768, d=128)], label="{rows}x{d}", work=("GB/s", lambda rows, d: 5 * rows * d * 4 / 1e9))
def layernorm(side, rows, d):
    """LayerNorm forward + backward, float32 (rows, d) with weight and bias (768 x 128: the tiny GPT's)."""
    x, w, b, dout = _randn(rows, d, seed=20), _randn(d, seed=21), _randn(d, seed=22), _randn(rows, d, seed=23)
    if side == "torch":
        import torch
        X, W, B, G = map(torch.from_numpy, (x, w, b, dout))

        def step():
            out, mean, rstd = torch.ops.aten.native_layer_norm(X, [d], W, B, 1e-5)
            return (out, *torch.ops.aten.native_layer_norm_backward(G, X, [d], mean, rstd, W, B, [True] * 3))
        return step
    prims = _primitives(side)

    def step():
        out, mean, rstd = prims.layer_norm_forward(x, w, b, 1e-5)
        return (out, *prims.layer_norm_backward(dout, x, w, mean, rstd))
    return step


@case("bias_gelu", refs=("numpy", "torch"),
      sizes=[dict(rows=768, d=512, approximate="tanh"), dict(rows=768, d=512, approximate="none"),
             dict(rows=2048, d=2048, approximate="tanh")],
      quick=[dict(rows=768, d=512, approximate="tanh")], label="{rows}x{d} {approximate}",
      work=("GB/s", lambda rows, d, approximate: 5 * rows * d * 4 / 1e9))
def bias_gelu(side, rows, d, approximate):
    """gelu(x + bias) forward + backward (dx, dbias), float32 (768 x 512: the tiny GPT's MLP).

    torch: the add, gelu, gelu_backward and the bias gradient's sum."""
    x, b, dout = _randn(rows, d, seed=24), _randn(d, seed=25), _randn(rows, d, seed=26)
    if side == "torch":
        import torch
        X, B, G = map(torch.from_numpy, (x, b, dout))

        def step():
            h = X + B
            out = torch.ops.aten.gelu(h, approximate=approximate)
            dh = torch.ops.aten.gelu_backward(G, h, approximate=approximate)
            return out, dh, dh.sum(0)
        return step
    prims = _primitives(side)

    def step():
        out = prims.bias_gelu_forward(x, b, approximate)
        return (out, *prims.bias_gelu_backward(dout, x, b, approximate))
    return step


@case("cross_entropy", refs=("numpy", "torch"), sizes=[dict(rows=768, classes=65), dict(rows=2048, classes=8192)],
      quick=[dict(rows=768, classes=65)], label="{rows}x{classes}",
      work=("GB/s", lambda rows, classes: 4 * rows * classes * 4 / 1e9))
def cross_entropy(side, rows, classes):
    """Cross-entropy with log-softmax, forward + backward, float32 logits (768 x 65: the tiny GPT's).

    Mean over the rows; torch: log_softmax, nll_loss and their backward."""
    x = _randn(rows, classes, seed=27) * np.float32(3)
    targets = np.random.default_rng(28).integers(0, classes, rows)
    if side == "torch":
        import torch
        X, T, one = torch.from_numpy(x), torch.from_numpy(targets), torch.ones(())

        def step():
            logp = torch.ops.aten._log_softmax(X, 1, False)
            loss, total = torch.ops.aten.nll_loss_forward(logp, T, None, 1, -100)
            dlogp = torch.ops.aten.nll_loss_backward(one, logp, T, None, 1, -100, total)
            return loss, torch.ops.aten._log_softmax_backward_data(dlogp, logp, 1, torch.float32)
        return step
    prims = _primitives(side)
    dlosses = np.full(rows, 1 / rows, np.float32)

    def step():
        losses, logprobs = prims.cross_entropy_forward(x, targets, -100, 0.0)
        return losses.mean(), prims.cross_entropy_backward(dlosses, logprobs, targets, -100, 0.0)
    return step


def _tiny_gpt_shapes(n_layer=4, d=128, vocab=65, block=64):
    """The parameter shapes of the tiny GPT (bench/gpt_cpu_tiny.py's model): 52 tensors, 0.8M floats."""
    layer = [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return [(vocab, d), (block, d)] + layer * n_layer + [(d,), (d,)]


@case("optimizer_step", refs=("numpy", "torch"), sizes=[dict(opt="adamw"), dict(opt="sgd")],
      label="{opt}, tiny GPT's params",
      work=("GB/s", lambda opt: (7 if opt == "adamw" else 5) * 4 * sum(
          int(np.prod(s)) for s in _tiny_gpt_shapes()) / 1e9))
def optimizer_step(side, opt):
    """One AdamW or SGD (momentum, Nesterov) step over the tiny GPT's 52 parameters (0.8M floats).

    Fixed gradients. minigrad: its optimizer (one multi-tensor primitive call); numpy: the reference
    primitive per parameter (no optimizer overhead); torch: torch.optim, its CPU default (a loop over
    the parameters)."""
    rng = np.random.default_rng(29)
    values = [rng.standard_normal(s).astype(np.float32) for s in _tiny_gpt_shapes()]
    grads = [rng.standard_normal(s).astype(np.float32) for s in _tiny_gpt_shapes()]
    adamw = dict(lr=1e-3, weight_decay=0.1)
    sgd = dict(lr=1e-2, momentum=0.9, nesterov=True)
    if side == "numpy":
        from minigrad.backend import numpy_ref
        state = [[np.zeros_like(v) for _ in range(2)] for v in values]
        steps = [0]

        def step():
            steps[0] += 1
            for v, g, (m, s) in zip(values, grads, state):
                if opt == "adamw":
                    numpy_ref.adam_step_(v, g, m, s, None, steps[0], 1e-3, 0.9, 0.999, 1e-8, 0.1, True, False, False)
                else:
                    numpy_ref.sgd_step_(v, g, m, 1e-2, 0.9, 0.0, 0.0, True, False, steps[0] == 1)
            return tuple(values)
        return step
    lib = _lib(side)
    params = [lib.tensor(v, requires_grad=True) for v in values]
    for p, g in zip(params, grads):
        p.grad = lib.from_numpy(g)
    optimizer = lib.optim.AdamW(params, **adamw) if opt == "adamw" else lib.optim.SGD(params, **sgd)

    def step():
        optimizer.step()
        return tuple(p.detach() for p in params)
    return step


# ---- attention, convolution, pooling and recurrent cells (numba_attention / numba_conv / numba_rnn) --------

@case("attention", refs=("numpy", "torch"),
      sizes=[dict(batch=12, heads=4, seq=64, d=32, mask="causal"), dict(batch=12, heads=4, seq=64, d=32, mask="none"),
             dict(batch=4, heads=4, seq=256, d=32, mask="causal")],
      quick=[dict(batch=2, heads=2, seq=33, d=16, mask="causal")], label="B={batch} H={heads} T={seq} D={d} {mask}",
      work=("GFLOP/s", lambda batch, heads, seq, d, mask: (0.5 if mask == "causal" else 1) * 14 * batch * heads
            * seq * seq * d / 1e9))
def attention(side, batch, heads, seq, d, mask):
    """Scaled dot-product attention forward + backward (dq, dk, dv), float32 (the tiny GPT's: 12x4x64x32, causal).

    Work: 7 products of (T, T, D) (2 forward, 5 backward), half of each when causal.

    torch: its CPU flash-attention kernels (what scaled_dot_product_attention runs, forward and backward)."""
    q, k, v, dout = (_randn(batch, heads, seq, d, seed=40 + i) for i in range(4))
    causal, scale = mask == "causal", 1 / float(np.sqrt(d))
    if side == "torch":
        import torch
        Q, K, V, G = map(torch.from_numpy, (q, k, v, dout))

        def step():
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(Q, K, V, 0.0, causal, scale=scale)
            grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(G, Q, K, V, out, lse, 0.0,
                                                                                        causal, scale=scale)
            return (out, *grads)
        return step
    prims = _primitives(side)

    def step():
        out, lse = prims.attention_forward(q, k, v, None, causal, scale)
        return (out, *prims.attention_backward(dout, q, k, v, out, lse, None, causal, scale))
    return step


@case("conv2d", refs=("numpy", "torch"),
      sizes=[dict(batch=32, c_in=3, c_out=16, size=32), dict(batch=32, c_in=16, c_out=32, size=32)],
      quick=[dict(batch=4, c_in=3, c_out=8, size=16)], label="B={batch} {c_in}->{c_out} {size}x{size}",
      work=("GFLOP/s", lambda batch, c_in, c_out, size: 3 * 2 * batch * c_out * size * size * c_in * 9 / 1e9))
def conv2d(side, batch, c_in, c_out, size):
    """Conv2d 3x3, padding 1, forward + backward (dx, dweight), float32: the two layers of conv2d_step.

    torch: aten.convolution and aten.convolution_backward (its CPU default, oneDNN where it applies)."""
    x, w, dout = _randn(batch, c_in, size, size, seed=50), _randn(c_out, c_in, 3, 3, seed=51), \
        _randn(batch, c_out, size, size, seed=52)
    if side == "torch":
        import torch
        X, W, G = map(torch.from_numpy, (x, w, dout))

        def step():
            out = torch.ops.aten.convolution(X, W, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
            dx, dw, _ = torch.ops.aten.convolution_backward(G, X, W, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                           [True, True, False])
            return out, dx, dw
        return step
    prims, geometry = _primitives(side), ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)

    def step():
        return (prims.conv2d_forward(x, w, *geometry), *prims.conv2d_backward(dout, x, w, *geometry))
    return step


_POOL_SIZES = dict(sizes=[dict(batch=32, channels=32, size=32, kernel=2), dict(batch=32, channels=32, size=32, kernel=3)],
                   quick=[dict(batch=4, channels=8, size=16, kernel=3)],
                   label="B={batch} C={channels} {size}x{size} k={kernel} s=2",
                   work=("GB/s", lambda batch, channels, size, kernel: 2.5 * batch * channels * size * size * 4 / 1e9))


def _pool_step(side, batch, channels, size, kernel, kind):
    """forward + backward of max or avg pooling, stride 2, padding kernel // 2 (3x3: as ResNet's stem)."""
    x, pad = _randn(batch, channels, size, size, seed=53), kernel // 2
    dout = _randn(batch, channels, (size + 2 * pad - kernel) // 2 + 1, (size + 2 * pad - kernel) // 2 + 1, seed=54)
    if side == "torch":
        import torch
        X, G, ops, k2, s2, p2 = torch.from_numpy(x), torch.from_numpy(dout), torch.ops.aten, [kernel] * 2, [2, 2], [pad] * 2
        if kind == "max":
            def step():
                out, idx = ops.max_pool2d_with_indices(X, k2, s2, p2, [1, 1], False)
                return out, ops.max_pool2d_with_indices_backward(G, X, k2, s2, p2, [1, 1], False, idx)
        else:
            def step():
                return ops.avg_pool2d(X, k2, s2, p2, False, True), ops.avg_pool2d_backward(G, X, k2, s2, p2, False,
                                                                                          True, None)
        return step
    prims, k2, s2, p2 = _primitives(side), (kernel, kernel), (2, 2), (pad, pad)
    if kind == "max":
        def step():
            out, argmax = prims.max_pool2d_forward(x, k2, s2, p2, (1, 1), False)
            return out, prims.max_pool2d_backward(dout, argmax, x.shape)
    else:
        def step():
            return (prims.avg_pool2d_forward(x, k2, s2, p2, False, True),
                    prims.avg_pool2d_backward(dout, x.shape, k2, s2, p2, False, True))
    return step


@case("max_pool2d", refs=("numpy", "torch"), **_POOL_SIZES)
def max_pool2d(side, batch, channels, size, kernel):
    """MaxPool2d forward + backward, float32. torch: aten.max_pool2d_with_indices and its backward."""
    return _pool_step(side, batch, channels, size, kernel, "max")


@case("avg_pool2d", refs=("numpy", "torch"), **_POOL_SIZES)
def avg_pool2d(side, batch, channels, size, kernel):
    """AvgPool2d (count_include_pad) forward + backward, float32. torch: aten.avg_pool2d and its backward."""
    return _pool_step(side, batch, channels, size, kernel, "avg")


def _cell_step(side, batch, hidden, kind):
    """The gate math of one LSTM / GRU step, forward + backward; the recurrent matmul is not included."""
    gates = 4 if kind == "lstm" else 3
    gx, gh = _randn(batch, gates * hidden, seed=55), _randn(batch, gates * hidden, seed=56)
    state, dh, dc = (_randn(batch, hidden, seed=57 + i) for i in range(3))
    if side == "torch":  # the ops of torch's CPU cell (torch has no fused CPU kernel), through its autograd
        import torch
        GX, GH, S = (torch.tensor(a, requires_grad=True) for a in (gx, gh, state))
        DH, DC = torch.from_numpy(dh), torch.from_numpy(dc)

        def step():
            if kind == "lstm":
                i, f, g, o = (GX + GH).chunk(4, 1)
                c = f.sigmoid() * S + i.sigmoid() * g.tanh()
                outs, grads = (o.sigmoid() * c.tanh(), c), (DH, DC)
            else:
                (xr, xz, xn), (hr, hz, hn) = GX.chunk(3, 1), GH.chunk(3, 1)
                r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
                n = (xn + r * hn).tanh()
                outs, grads = (n + z * (S - n),), (DH,)
            return (*outs, *torch.autograd.grad(outs, (GX, GH, S), grads))
        return step
    prims = _primitives(side)

    def step():
        if kind == "lstm":
            hc, cache = prims.lstm_cell_forward(gx, gh, state)
            dgates, dstate = prims.lstm_cell_backward(dh, dc, cache, state)
            return hc[0], hc[1], dgates, dgates, dstate
        h, cache = prims.gru_cell_forward(gx, gh, state)
        return (h, *prims.gru_cell_backward(dh, cache, state))
    return step


@case("lstm_cell", refs=("numpy", "torch"), sizes=[dict(batch=32, hidden=128)], quick=[dict(batch=4, hidden=32)],
      label="B={batch} H={hidden}", tol=1e-5)
def lstm_cell(side, batch, hidden):
    """LSTM gate math (i, f, g, o) of one step, forward + backward, float32 (lstm_step's sizes)."""
    return _cell_step(side, batch, hidden, "lstm")


@case("gru_cell", refs=("numpy", "torch"), sizes=[dict(batch=32, hidden=128)], quick=[dict(batch=4, hidden=32)],
      label="B={batch} H={hidden}", tol=1e-5)
def gru_cell(side, batch, hidden):
    """GRU gate math (r, z, n) of one step, forward + backward, float32."""
    return _cell_step(side, batch, hidden, "gru")


# ---- a whole training step ------------------------------------------------------------------------------

@case("gpt_step", refs=("numpy", "torch"), sizes=[dict(batch=12, block=64, layers=4, d=128)],
      quick=[dict(batch=2, block=16, layers=1, d=32)], label="B={batch} T={block} L={layers} d={d}", tol=1e-3,
      work=("tokens/s", lambda batch, block, layers, d: batch * block))
def gpt_step(side, batch, block, layers, d):
    """One AdamW training step of the tiny GPT (nanoGPT's CPU recipe: 4 layers, 4 heads, d=128, block 64,
    batch 12, vocab 65, no dropout): forward, cross-entropy, backward, gradient clipping, optimizer step.

    minigrad: minigrad.models.GPT with its default kernels; numpy: the same on the NumPy reference backend;
    torch: nanoGPT's model ported to PyTorch (bench/torch_gpt.py), started from minigrad's initial weights,
    with torch.optim.AdamW over the same parameter groups. All sides see the same batches; a step returns
    its loss (computed before its update), so successive calls also check that the updates agree."""
    import minigrad as mg
    from minigrad.models import GPT, GPTConfig
    config = GPTConfig(vocab_size=65, block_size=block, n_layer=layers, n_head=4, n_embd=d, dropout=0.0, bias=False)
    mg.manual_seed(30)
    model = GPT(config)
    rng = np.random.default_rng(31)
    batches = [(rng.integers(0, 65, (batch, block)), rng.integers(0, 65, (batch, block))) for _ in range(8)]
    calls = [0]

    def next_batch():
        calls[0] += 1
        return batches[(calls[0] - 1) % len(batches)]
    if side == "torch":
        import torch
        from bench.torch_gpt import TorchGPT
        tmodel = TorchGPT(config)
        tmodel.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
        params = list(tmodel.parameters())
        opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                                 {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.99))

        def step():
            x, y = map(torch.from_numpy, next_batch())
            loss = tmodel(x, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return loss.detach()
        return step
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    params = list(model.parameters())

    def step():
        x, y = map(mg.from_numpy, next_batch())
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        mg.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()
    return _on_numpy_ref(step) if side == "numpy" else step
