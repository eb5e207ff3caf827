"""Train a small MLP on two interleaved spirals, with nothing but minigrad tensors and autograd.

    python examples/train_mlp.py              # about 10 seconds on 2 cores
    python examples/train_mlp.py --steps 500 --hidden 32 --seed 1

The data are generated here (no download): three spiral arms in the plane, one class each. The model is
written out by hand (two hidden layers, ReLU, softmax cross-entropy) so every step is visible; the
`minigrad.nn` and `minigrad.optim` modules package the same ideas.
"""
import argparse
import math
import time

import minigrad as mg


def make_spirals(points_per_class: int, classes: int, noise: float):
    """(N, 2) float32 coordinates and (N,) int64 labels of `classes` spiral arms."""
    radius = mg.linspace(0.05, 1.0, points_per_class).repeat(classes)           # (N,)
    label = mg.arange(classes).reshape(classes, 1).expand(classes, points_per_class).reshape(-1)
    angle = label * (2 * math.pi / classes) + radius * 4.0 + mg.randn(radius.shape[0]) * noise
    xy = mg.stack([radius * angle.cos(), radius * angle.sin()], dim=1)          # (N, 2)
    return xy, label


def init_linear(fan_in: int, fan_out: int):
    """Weights with variance 2 / fan_in (He init, right for ReLU) and zero biases."""
    w = (mg.randn(fan_in, fan_out) * math.sqrt(2.0 / fan_in)).requires_grad_()
    b = mg.zeros(fan_out, requires_grad=True)
    return w, b


def forward(params, x):
    """Logits (N, classes) of the MLP: linear -> relu -> linear -> relu -> linear."""
    (w1, b1), (w2, b2), (w3, b3) = params
    h = (x @ w1 + b1).relu()
    h = (h @ w2 + b2).relu()
    return h @ w3 + b3


def cross_entropy(logits, labels):
    """Mean of -log softmax(logits)[label] (log_softmax is stable for any logit magnitude)."""
    logp = logits.log_softmax(dim=1)                    # (N, classes)
    return -logp[mg.arange(labels.shape[0]), labels].mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mg.manual_seed(args.seed)
    x, y = make_spirals(points_per_class=200, classes=3, noise=0.2)
    params = [init_linear(2, args.hidden), init_linear(args.hidden, args.hidden), init_linear(args.hidden, 3)]
    flat = [p for layer in params for p in layer]
    velocity = [mg.zeros_like(p) for p in flat]

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = cross_entropy(forward(params, x), y)
        for p in flat:
            p.grad = None
        loss.backward()
        with mg.no_grad():  # SGD with momentum: v = m v + g; p -= lr v
            for p, v in zip(flat, velocity):
                v.mul_(args.momentum).add_(p.grad)
                p.sub_(v, alpha=args.lr)
        if step % 50 == 0 or step == 1:
            with mg.no_grad():
                accuracy = (forward(params, x).argmax(dim=1) == y).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.1%}")
    elapsed = time.perf_counter() - start
    print(f"trained {args.steps} steps in {elapsed:.1f} s ({args.steps / elapsed:.0f} steps/s)")
    if accuracy < 0.9:
        raise SystemExit(f"accuracy {accuracy:.1%} is below 90%: training did not converge")


if __name__ == "__main__":
    main()
