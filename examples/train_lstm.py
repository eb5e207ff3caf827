"""Train a character-level LSTM language model on Tiny Shakespeare (bundled with minigrad), and optionally
the same configuration in PyTorch, from the same initial weights on the same batches, for comparison.

    python examples/train_lstm.py                              # a few minutes on one core: val loss ~1.63
    python examples/train_lstm.py --compare-torch              # and the PyTorch twin: one plot, both curves
    python examples/train_lstm.py --compare-torch --threads 1  # one thread for both libraries
    python examples/train_lstm.py --max-iters 3000 --resume    # train on from the checkpoint

The model: Embedding -> LSTM (--n-layer layers of --hidden-size) -> Linear to the vocabulary, trained with
cross-entropy on random windows of --block-size characters (truncated backpropagation through time: each
window starts from a zero state), AdamW, gradient clipping and a cosine learning-rate decay.

--compare-torch (needs PyTorch) builds a small torch.nn twin of the model, copies minigrad's state_dict
into it (minigrad's layers use PyTorch's parameter names and layouts), and trains it beside minigrad's:
every batch is drawn once and fed to both, both use their own AdamW, gradient clipping and LambdaLR
(the same cosine schedule) with the same settings, and both are evaluated on the same batches. It
prints the val loss of both at every evaluation and their relative difference, the seconds per step of
each side, and plots both loss curves in one PNG.

The run writes to --out-dir: ckpt.safetensors (model, optimizer, step, settings, loss history and the
state of the random generator, saved at every evaluation and at the end; with --compare-torch also
torch_ckpt.pt, the twin's model and optimizer), tokenizer.json and loss.png (with matplotlib).
All randomness (init, batches, dropout) follows --seed: a run resumed from a checkpoint continues exactly
as the uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn
from minigrad.data import CharTokenizer, get_batch, load_tinyshakespeare, train_val_split
from minigrad.optim.lr_scheduler import LambdaLR

from common import Progress, check_device, checkpoint_path, optimize, plot_losses, run_settings

SHAPE_KEYS = ("n_embd", "hidden_size", "n_layer")  # fixed by the checkpoint's weights
DEFAULTS = dict(n_embd=64, hidden_size=256, n_layer=2, dropout=0.0, block_size=64, batch_size=32,
                max_iters=1500, lr_decay_iters=None, lr=2e-3, min_lr=2e-4, weight_decay=0.01, beta1=0.9, beta2=0.99,
                grad_clip=1.0, eval_interval=250, eval_iters=20, sample_tokens=300, temperature=0.8,
                device="cpu", seed=1337, compare_torch=False)


class CharLSTM(nn.Module):
    """Embedding (V, E) -> LSTM (E -> H, num_layers) -> Linear (H -> V): next-character logits."""

    def __init__(self, vocab_size: int, n_embd: int, hidden_size: int, n_layer: int, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, n_embd)
        self.lstm = nn.LSTM(n_embd, hidden_size, n_layer, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx, state=None):
        """idx (B, T) int64, state (h, c) each (L, B, H) or None (zeros) -> logits (B, T, V), final state."""
        out, state = self.lstm(self.embedding(idx), state)
        return self.head(out), state

    @mg.no_grad()
    def generate(self, prompt, new_tokens: int, temperature: float, rng: np.random.Generator) -> list[int]:
        """Feed prompt (1, T), then each sampled character back in, carrying the LSTM state (in eval mode):
        the ids of new_tokens characters drawn from softmax(logits / temperature)."""
        training = self.training
        self.eval()
        logits, state = self(prompt)
        out = []
        for _ in range(new_tokens):
            probs = (logits[0, -1] / temperature).softmax(dim=-1).cpu().numpy().astype(np.float64)
            out.append(int(rng.choice(len(probs), p=probs / probs.sum())))
            logits, state = self(mg.tensor([[out[-1]]], device=prompt.device), state)
        self.train(training)
        return out


def lr_factor(args):
    """The schedule of both libraries' LambdaLR: lr(it) = base lr * factor(it), a cosine from --lr down to
    --min-lr over --lr-decay-iters iterations (default --max-iters), then --min-lr. A closed form of `it`,
    so a resumed run (a scheduler built with last_epoch) continues exactly."""
    decay_iters = args.lr_decay_iters or args.max_iters

    def factor(it: int) -> float:
        cosine = (1 + math.cos(math.pi * min(it, decay_iters) / decay_iters)) / 2
        return (args.min_lr + (args.lr - args.min_lr) * cosine) / args.lr
    return factor


def lm_loss(logits, targets):
    """Mean cross-entropy of logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---- the PyTorch twin ------------------------------------------------------------------------------------

class TorchTwin:
    """The same model, optimizer, clipping and schedule in PyTorch, starting from minigrad's weights."""

    def __init__(self, model: CharLSTM, args, vocab_size: int, resume_from: str | None = None, start: int = 0):
        try:
            import torch
        except ImportError:
            raise SystemExit("--compare-torch needs PyTorch, which is not installed "
                             "(pip install torch, e.g. the CPU build from https://pytorch.org)") from None
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--compare-torch --device cuda: this PyTorch build has no CUDA device")
        if args.threads:
            torch.set_num_threads(args.threads)

        class TorchCharLSTM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(vocab_size, args.n_embd)
                self.lstm = torch.nn.LSTM(args.n_embd, args.hidden_size, args.n_layer, batch_first=True,
                                          dropout=args.dropout)
                self.head = torch.nn.Linear(args.hidden_size, vocab_size)

            def forward(self, idx):
                return self.head(self.lstm(self.embedding(idx))[0])

        self.torch, self.device, self.args = torch, args.device, args
        self.model = TorchCharLSTM().to(self.device)
        self.model.load_state_dict({k: torch.tensor(v.cpu().numpy()) for k, v in model.state_dict().items()})
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2),
                                           weight_decay=args.weight_decay)
        if resume_from is not None:
            self.load(resume_from, start)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(args), last_epoch=start - 1)

    def tensor(self, x):
        return self.torch.from_numpy(x.cpu().numpy()).to(self.device)

    def loss(self, x, y):
        logits = self.model(self.tensor(x))
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.tensor(y).reshape(-1))

    def train_step(self, x, y, seed: int) -> float:
        self.torch.manual_seed(seed)  # this iteration's dropout masks (torch's own generator)
        loss = self.loss(x, y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.args.grad_clip:
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def evaluate(self, batches) -> float:
        self.model.eval()
        with self.torch.no_grad():
            losses = [self.loss(x, y).item() for x, y in batches]
        self.model.train()
        return float(np.mean(losses))

    def save(self, path: str, step: int) -> None:
        self.torch.save({"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
                        path + ".tmp")
        os.replace(path + ".tmp", path)

    def load(self, path: str, step: int) -> None:
        if not os.path.exists(path):
            raise SystemExit(f"--compare-torch --resume: no PyTorch checkpoint at {path} (the run was saved "
                             f"without --compare-torch; resume with --no-compare-torch)")
        state = self.torch.load(path, map_location=self.device, weights_only=True)
        if state["step"] != step:
            raise SystemExit(f"{path} is at iteration {state['step']}, the minigrad checkpoint at {step}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


# ---- settings, checkpoints ----------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    """The defaults, overridden by the settings saved in the checkpoint (with --resume), overridden by the
    flags given on the command line."""
    p = argparse.ArgumentParser(description="Train a character-level LSTM language model on Tiny Shakespeare, "
                                "optionally beside its PyTorch twin. Options take the defaults shown or, with "
                                "--resume, the checkpointed run's values.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out-dir", default=os.path.join("out", "lstm"), help="where checkpoints and plots go "
                   "(default out/lstm)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.safetensors")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--seed", type=int, help="default 1337")
    p.add_argument("--threads", type=int, help="threads of minigrad's kernels (mg.set_num_threads) and, with "
                   "--compare-torch, of PyTorch (torch.set_num_threads); default: each library's own")
    p.add_argument("--compare-torch", action=argparse.BooleanOptionalAction,
                   help="also train the same configuration in PyTorch and compare (needs torch)")
    model = p.add_argument_group("model (its shape is fixed by the checkpoint when resuming)")
    model.add_argument("--n-embd", type=int, help="embedding size (default 64)")
    model.add_argument("--hidden-size", type=int, help="LSTM hidden size (default 256)")
    model.add_argument("--n-layer", type=int, help="LSTM layers (default 2)")
    model.add_argument("--dropout", type=float, help="between LSTM layers (default 0; with --compare-torch "
                       "the two libraries draw different masks)")
    train = p.add_argument_group("training")
    train.add_argument("--block-size", type=int, help="characters per window, the BPTT length (default 64)")
    train.add_argument("--batch-size", type=int, help="default 32")
    train.add_argument("--max-iters", type=int, help="train until this iteration (default 1500)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    train.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay (default 2e-4)")
    train.add_argument("--lr-decay-iters", type=int, help="where the cosine decay ends (default --max-iters)")
    train.add_argument("--weight-decay", type=float, help="AdamW's (default 0.01)")
    train.add_argument("--beta1", type=float, help="default 0.9")
    train.add_argument("--beta2", type=float, help="default 0.99")
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm at this value (0: off; default 1)")
    train.add_argument("--eval-interval", type=int, help="evaluate and checkpoint every N iterations (default 250)")
    train.add_argument("--eval-iters", type=int, help="batches per split in an evaluation (default 20)")
    sample = p.add_argument_group("the sample printed at the end")
    sample.add_argument("--sample-tokens", type=int, help="characters to generate (0: none; default 300)")
    sample.add_argument("--temperature", type=float, help="default 0.8")
    args = p.parse_args(argv)

    settings = run_settings(p, args, DEFAULTS, SHAPE_KEYS, args.out_dir)
    settings.setdefault("threads", None)
    return argparse.Namespace(**settings)


def eval_batches(data, args, seed: int) -> list:
    """args.eval_iters batches of `data` from a generator seeded with `seed`: the same ones at every evaluation."""
    rng = np.random.default_rng(seed)
    return [get_batch(data, args.block_size, args.batch_size, rng) for _ in range(args.eval_iters)]


@mg.no_grad()
def evaluate(model: CharLSTM, batches) -> float:
    """Mean loss over the batches, in eval mode."""
    model.eval()
    loss = float(np.mean([lm_loss(model(x)[0], y).item() for x, y in batches]))
    model.train()
    return loss


def plot_comparison(history: dict, path: str) -> None:
    """Two panels in one PNG: the per-batch training loss of both libraries, and their evaluations."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss curve (pip install matplotlib)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    # minigrad: solid, filled markers; PyTorch: dashed, hollow markers on top (the curves may coincide)
    for name, run, style in (("minigrad", history, dict(color="C0", ls="-", lw=1.5)),
                             ("PyTorch", history["torch"], dict(color="C3", ls="--", lw=1.0))):
        left.plot(range(1, len(run["loss"]) + 1), run["loss"], alpha=0.6, label=name, **dict(style, lw=style["lw"] / 2))
        rows = np.array(run["eval"])
        if rows.size:
            hollow = {} if name == "minigrad" else dict(mfc="none", ms=9)
            right.plot(rows[:, 0], rows[:, 1], marker="o", label=f"{name} train", alpha=0.6, **style, **hollow)
            right.plot(rows[:, 0], rows[:, 2], marker="s", label=f"{name} val", **style, **hollow)
    if history["eval"] and history["torch"]["eval"]:
        (it, _, val), tval = history["eval"][-1], history["torch"]["eval"][-1][2]
        right.text(0.97, 0.45, f"val loss at step {it}:\nminigrad {val:.4f}\nPyTorch {tval:.4f}\n"
                   f"relative difference {abs(val - tval) / tval:.3%}", transform=right.transAxes, ha="right",
                   va="center", bbox=dict(boxstyle="round", fc="white", alpha=0.8))
    left.set(xlabel="step", ylabel="cross-entropy (nats / char)", title="training loss (each batch)")
    right.set(xlabel="step", title="evaluation (fixed batches)")
    left.legend()
    right.legend()
    fig.suptitle("char LSTM on Tiny Shakespeare: minigrad vs PyTorch, same weights and batches")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"loss curves: {path}")


# ---- training -------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    if args.threads:
        mg.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt, torch_ckpt = checkpoint_path(args.out_dir), os.path.join(args.out_dir, "torch_ckpt.pt")

    text = load_tinyshakespeare()
    tokenizer = CharTokenizer.from_text(text)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    train_data, val_data = (d.to(args.device) for d in train_val_split(tokenizer.encode(text)))
    evals = {"train": eval_batches(train_data, args, args.seed + 1), "val": eval_batches(val_data, args, args.seed + 2)}

    mg.manual_seed(args.seed)
    model = CharLSTM(tokenizer.vocab_size, args.n_embd, args.hidden_size, args.n_layer, args.dropout).to(args.device)
    optimizer = mg.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2),
                               weight_decay=args.weight_decay)
    # All the randomness of training (batches, dropout seeds) is drawn from `rng`, whose state the
    # checkpoint keeps: a resumed run continues exactly as an uninterrupted one.
    rng = np.random.default_rng(args.seed)
    # per side: loss per iteration, eval rows [iteration, train loss, val loss], seconds spent in training steps
    start = 0
    history = {"loss": [], "eval": [], "seconds": 0.0, "torch": {"loss": [], "eval": [], "seconds": 0.0}}
    if args.resume:
        info = mg.load_checkpoint(ckpt, model, optimizer)
        start, history, extra = info["step"], info["extra"]["history"], info["extra"]
        rng.bit_generator.state = extra["rng_state"]
        if start > args.max_iters:
            raise SystemExit(f"{ckpt} is at iteration {start}, past --max-iters {args.max_iters}")
        if args.compare_torch and len(history["torch"]["loss"]) != start:
            raise SystemExit(f"{ckpt} was trained without the PyTorch twin after iteration "
                             f"{len(history['torch']['loss'])}: resume with --no-compare-torch")
        print(f"resumed from {ckpt} at iteration {start}")
    scheduler = LambdaLR(optimizer, lr_factor(args), last_epoch=start - 1)
    twin = None
    if args.compare_torch:  # from minigrad's initial weights, or from its own checkpoint when resuming
        twin = TorchTwin(model, args, tokenizer.vocab_size, torch_ckpt if args.resume else None, start)
    print(f"{model}\n{sum(p.numel() for p in model.parameters()):,} parameters; "
          f"data: {train_data.shape[0]:,} train / {val_data.shape[0]:,} val characters, vocab {tokenizer.vocab_size}"
          + (f"; threads: {args.threads}" if args.threads else ""))

    def evaluate_and_save(it: int) -> None:
        row = [it, evaluate(model, evals["train"]), evaluate(model, evals["val"])]
        history["eval"].append(row)
        line = f"iter {it}: train loss {row[1]:.4f}, val loss {row[2]:.4f}"
        if twin is not None:
            trow = [it, twin.evaluate(evals["train"]), twin.evaluate(evals["val"])]
            history["torch"]["eval"].append(trow)
            line += (f" | torch: train loss {trow[1]:.4f}, val loss {trow[2]:.4f} | val rel. diff "
                     f"{(row[2] - trow[2]) / trow[2]:+.3%}")
            twin.save(torch_ckpt, it)
        progress.write(line)
        run_info = {"settings": {k: v for k, v in vars(args).items() if k not in ("resume", "threads")},
                    "history": history, "rng_state": rng.bit_generator.state}
        mg.save_checkpoint(ckpt, model, optimizer, step=it, extra=run_info)

    progress = Progress(start, args.max_iters)
    tokens_per_iter = args.batch_size * args.block_size
    started = time.perf_counter()
    for it in range(start, args.max_iters):
        if it % args.eval_interval == 0 and (it == 0 or it > start):
            evaluate_and_save(it)
        seed = int(rng.integers(2**62))  # this iteration's dropout masks
        x, y = get_batch(train_data, args.block_size, args.batch_size, rng)  # (B, T) each, for both sides
        t0 = time.perf_counter()
        mg.manual_seed(seed)
        loss = lm_loss(model(x)[0], y)
        lr = optimize(loss, model, optimizer, scheduler, args.grad_clip)
        history["loss"].append(loss.item())
        seconds = time.perf_counter() - t0
        history["seconds"] += seconds
        if twin is not None:
            t0 = time.perf_counter()
            history["torch"]["loss"].append(twin.train_step(x, y, seed))
            history["torch"]["seconds"] += time.perf_counter() - t0
        progress.update(it + 1, history["loss"][-1], lr, tokens_per_iter / seconds)
    progress.close()
    if start < args.max_iters or not history["eval"]:
        evaluate_and_save(args.max_iters)
    elapsed = time.perf_counter() - started

    trained, steps = args.max_iters - start, len(history["loss"])
    final = history["eval"][-1]
    print(f"trained {trained} iterations in {elapsed:.1f} s with evaluations; final train loss {final[1]:.4f}, "
          f"val loss {final[2]:.4f}")
    print(f"minigrad: {history['seconds'] / max(steps, 1):.4f} s/step "
          f"({steps * tokens_per_iter / max(history['seconds'], 1e-9):,.0f} tokens/s) over {steps} steps")
    if twin is not None:
        tfinal, tsec = history["torch"]["eval"][-1], history["torch"]["seconds"]
        print(f"PyTorch:  {tsec / max(steps, 1):.4f} s/step ({steps * tokens_per_iter / max(tsec, 1e-9):,.0f} "
              f"tokens/s) over {steps} steps")
        print("   iter   minigrad val   PyTorch val   rel. diff")
        for (it, _, val), (_, _, tval) in zip(history["eval"], history["torch"]["eval"]):
            print(f"{it:7d}   {val:12.4f}   {tval:11.4f}   {(val - tval) / tval:+9.3%}")
        print(f"final val loss: minigrad {final[2]:.4f}, PyTorch {tfinal[2]:.4f}, relative difference "
              f"{abs(final[2] - tfinal[2]) / tfinal[2]:.3%}")
    print(f"checkpoint: {ckpt}")
    png = os.path.join(args.out_dir, "loss.png")
    if twin is not None:
        plot_comparison(history, png)
    else:
        plot_losses(history["loss"], history["eval"], ["train", "val"], "char LSTM on Tiny Shakespeare", png,
                    ylabel="cross-entropy (nats / char)")

    if args.sample_tokens:
        prompt = tokenizer.encode("\n").reshape(1, -1).to(args.device)
        sample = model.generate(prompt, args.sample_tokens, args.temperature, np.random.default_rng(args.seed))
        print("---------- sample ----------")
        print(tokenizer.decode(sample))


if __name__ == "__main__":
    sys.exit(main())
