"""Helpers shared by the training examples: the device check, a progress bar, the loss-curve plot.

The examples import this file as a sibling module (`from common import ...`): Python puts the directory
of the script it runs on sys.path, so `python examples/<name>.py` finds it from any working directory.
"""
from __future__ import annotations

import json
import os

import numpy as np

import minigrad as mg

try:
    from tqdm import tqdm
except ImportError:  # optional (the `examples` extra): log lines instead of a progress bar
    tqdm = None


def check_device(device: str) -> None:
    """Stop with a clear message when `device` is 'cuda' and minigrad has no CUDA backend here."""
    if device == "cuda" and not mg.cuda.is_available():
        raise SystemExit(f"--device cuda: minigrad's CUDA backend is not available on this machine "
                         f"({mg.cuda.why_unavailable()}; it needs an NVIDIA GPU and CuPy: pip install -e \".[cuda]\"); "
                         f"use --device cpu")


def checkpoint_path(out_dir: str) -> str:
    """Where an example keeps its checkpoint: <out_dir>/ckpt.safetensors."""
    return os.path.join(out_dir, "ckpt.safetensors")


def read_run_info(out_dir: str) -> dict:
    """The JSON `extra` saved with the checkpoint in `out_dir` (settings, history, generator state...);
    stops with a clear message when there is no checkpoint to resume from."""
    path = checkpoint_path(out_dir)
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path} to resume from (train without --resume first)")
    return json.loads(mg.io.load_metadata(path)["extra"])


def run_settings(parser, args, defaults: dict, fixed_keys, out_dir: str, not_from_checkpoint=()) -> dict:
    """The settings of a run: `defaults`, overridden (with --resume) by the settings saved with the checkpoint
    in out_dir, except the keys of not_from_checkpoint (where a run trains, not how), overridden by the flags
    given on the command line (those not None). A flag that contradicts a key the checkpoint fixes
    (fixed_keys: the model's shape) is a usage error."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    settings = dict(defaults)
    if args.resume:
        saved = read_run_info(out_dir)["settings"]
        for key in fixed_keys:
            if key in given and given[key] != saved[key]:
                parser.error(f"--{key.replace('_', '-')} {given[key]} differs from the checkpoint's {saved[key]}")
        settings.update({k: v for k, v in saved.items() if k in settings and k not in not_from_checkpoint})
    settings.update(given)
    return settings


def optimize(loss, model, optimizer, scheduler, grad_clip: float = 0.0, scaler=None) -> float:
    """One update from `loss`: zero the gradients, backward, clip their global norm at grad_clip (0: no
    clipping), optimizer step, scheduler step. Returns the learning rate the step used. With a GradScaler
    (float16 mixed precision): backward from the scaled loss, unscale before clipping, a step that the
    scaler skips when a gradient is inf or nan, and the scale's update."""
    optimizer.zero_grad()
    (loss if scaler is None else scaler.scale(loss)).backward()
    if scaler is not None and grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients
    if grad_clip:
        mg.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    lr = scheduler.get_last_lr()[0]
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    return lr


class Progress:
    """A tqdm bar showing the loss and a throughput; without tqdm, a log line every `every` steps."""

    def __init__(self, start: int, total: int, every: int = 10):
        self.bar = tqdm(total=total, initial=start, dynamic_ncols=True) if tqdm else None
        self.every = every

    def update(self, step: int, loss: float, lr: float, rate: float, unit: str = "tok/s") -> None:
        """After step `step` (1-based): its loss, learning rate and throughput (`rate` `unit`)."""
        line = f"loss {loss:.4f}, lr {lr:.2e}, {rate:,.0f} {unit}"
        if self.bar is not None:
            self.bar.set_postfix_str(line, refresh=False)
            self.bar.update(1)
        elif step % self.every == 0:
            print(f"step {step}: {line}", flush=True)

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_losses(losses: list[float], evals: list[list[float]], eval_names: list[str], title: str, path: str,
                ylabel: str = "loss") -> None:
    """Per-step training loss (step 1, 2, ...), and evaluations (rows [step, value, ...], the values named
    by eval_names) as points joined by lines, to a PNG. Needs matplotlib; says so and returns without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss curve (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.5, label="train (batch)")
    if evals:
        rows = np.array(evals)
        for column, name in enumerate(eval_names, start=1):
            ax.plot(rows[:, 0], rows[:, column], "o-", label=name)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"loss curve: {path}")
