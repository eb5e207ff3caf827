"""GPT `cpu-tiny` end to end: minigrad's examples/train_gpt.py against the same run in PyTorch (CPU).

    python -m bench.gpt_cpu_tiny                                 # 2000 iterations each: several minutes
    python -m bench.gpt_cpu_tiny --iters 500 --json bench/out/gpt_cpu_tiny.json

The two runs differ only in the framework:

* minigrad: `python examples/train_gpt.py --preset cpu-tiny`, the example as users run it.
* PyTorch: nanoGPT's model ported to torch below (same parameter names, bias=False, tanh GELU, weight
  tying), started from minigrad's initial weights (same seed), fed the very same batches (train_gpt.py's
  generator protocol, replayed), with the same AdamW parameter groups, gradient clipping, learning-rate
  schedule (minigrad's WarmupCosineLR drives both) and evaluations at the same iterations.

Timing on a shared machine: the runs alternate, one evaluation interval (250 iterations) at a time, A B
A B, as the harness does (bench/__init__.py), so that a slow spell of the machine hits both sides rather
than one. minigrad's segments are `train_gpt.py --resume` runs (resuming is exact, see
tests/test_train_gpt.py),
timed by the example itself (its training loop, evaluations and checkpoints included; process start and
data loading excluded); the torch side is a persistent process timed the same way. Each segment pair
gives a ratio; the report has the ratio of the totals and the median of the pairs, the share of the
time some task waited for a CPU (Linux PSI) and the canary (512x512 float32 NumPy GEMM) before and after.

Validation: the loss of the first iteration (same weights, same batch) and the first evaluation must
agree to 1e-4, or the comparison is reported as FAIL (exit status 1). Reported for each side: the final
val loss as train_gpt.py estimates it (eval_iters batches) and on a larger fixed set of 200 batches (the
same for both), and the wall time of the training loop. `--threads N` pins both sides to N threads.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "train_gpt.py")
FIXED_VAL_BATCHES, FIXED_VAL_SEED = 200, 12345


def load_example():
    """examples/train_gpt.py as a module: its settings, data protocol and model loader."""
    if os.path.dirname(EXAMPLE) not in sys.path:  # where it finds examples/common.py, as when run as a script
        sys.path.insert(0, os.path.dirname(EXAMPLE))
    spec = importlib.util.spec_from_file_location("train_gpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixed_val_batches(val, args):
    """The 200 validation batches both sides are scored on (NumPy arrays)."""
    from minigrad.data import get_batch
    rng = np.random.default_rng(FIXED_VAL_SEED)
    return [tuple(t.numpy() for t in get_batch(val, args.block_size, args.batch_size, rng))
            for _ in range(FIXED_VAL_BATCHES)]


# ---- the PyTorch side: a persistent process that trains up to the iteration it is sent ---------------


def torch_training(argv: list[str]):
    """train_gpt.py's loop in PyTorch, with train_gpt.py's settings, data and randomness: a generator that
    yields (history, loop seconds) after every evaluation, and finally the result dict."""
    import torch

    import minigrad as mg
    from bench.torch_gpt import TorchGPT
    from minigrad.data import CharTokenizer, get_batch, load_tinyshakespeare, train_val_split
    from minigrad.models import GPT, GPTConfig
    from minigrad.optim.lr_scheduler import WarmupCosineLR

    args = load_example().parse_args(argv)
    if args.dropout:
        raise SystemExit("the torch port has no dropout: compare a dropout-free preset")
    text = load_tinyshakespeare()
    tokenizer = CharTokenizer.from_text(text)
    train_data, val_data = train_val_split(tokenizer.encode(text))
    mg.manual_seed(args.seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=args.n_layer, n_head=args.n_head,
                       n_embd=args.n_embd, block_size=args.block_size, dropout=0.0, bias=args.bias)
    model = TorchGPT(config)
    model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in GPT(config).state_dict().items()})
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=args.lr, betas=(args.beta1, args.beta2))
    decay_iters = args.lr_decay_iters or args.max_iters
    schedule = WarmupCosineLR(mg.optim.SGD([mg.zeros(1, requires_grad=True)], lr=args.lr),
                              min(args.warmup_iters, decay_iters - 1), decay_iters, args.min_lr)

    def batch(data, rng):
        return tuple(torch.from_numpy(t.numpy()) for t in get_batch(data, args.block_size, args.batch_size, rng))

    @torch.no_grad()
    def estimate(it):  # train_gpt.estimate_loss
        model.eval()
        row = [it]
        for data in (train_data, val_data):
            rng = np.random.default_rng(args.seed + 1)
            row.append(float(np.mean([model(*batch(data, rng)).item() for _ in range(args.eval_iters)])))
        model.train()
        return row

    rng = np.random.default_rng(args.seed)
    history = {"loss": [], "eval": []}
    seconds = 0.0
    started = time.perf_counter()
    for it in range(args.max_iters + 1):
        if it % args.eval_interval == 0 or it == args.max_iters:
            history["eval"].append(estimate(it))
            seconds += time.perf_counter() - started
            yield history, seconds
            started = time.perf_counter()
        if it == args.max_iters:
            break
        torch.manual_seed(int(rng.integers(2**62)))  # train_gpt.py draws a dropout seed here
        loss = model(*batch(train_data, rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        history["loss"].append(loss.item())
    model.eval()
    with torch.no_grad():
        fixed = [model(torch.from_numpy(x), torch.from_numpy(y)).item() for x, y in fixed_val_batches(val_data, args)]
    yield {"fixed_val_loss": float(np.mean(fixed)), "torch": torch.__version__, "threads": torch.get_num_threads()}


def torch_worker(argv: list[str], max_iters: int) -> None:
    """Read target iterations from stdin; train up to each and write {"history", "seconds"} as a JSON
    line; after max_iters, write the final result line too."""
    steps = torch_training(argv)
    for line in sys.stdin:
        target = int(line)
        history, seconds = next(steps)
        while history["eval"][-1][0] < target:
            history, seconds = next(steps)
        print(json.dumps({"history": history, "seconds": seconds}), flush=True)
        if target >= max_iters:
            print(json.dumps(next(steps)), flush=True)
            return


# ---- the parent: alternate the two sides, validate, report ---------------------------------------------


def minigrad_fixed_val_loss(out_dir: str) -> float:
    import minigrad as mg
    from minigrad.data import load_tinyshakespeare, train_val_split

    model, tokenizer, info = load_example().load_model(out_dir)
    args = argparse.Namespace(**info["settings"])
    model.eval()
    _, val = train_val_split(tokenizer.encode(load_tinyshakespeare()))
    with mg.no_grad():
        return float(np.mean([model(mg.tensor(x), mg.tensor(y))[1].item() for x, y in fixed_val_batches(val, args)]))


class Stall:
    """The share of wall time during which some task waited for a CPU (Linux PSI), or None."""

    def __enter__(self):
        from bench.harness import cpu_stall_us
        self.read, self.stall, self.t0 = cpu_stall_us, cpu_stall_us(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        self.share = None if self.stall is None else (self.read() - self.stall) / 1e6 / wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpt_cpu_tiny", description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=2000, help="iterations (the preset's 2000 by default)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--threads", type=int, help="threads for both sides (OMP/OpenBLAS/MKL_NUM_THREADS; "
                   "default: the libraries' own choice, one per core)")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    example_argv = ["--preset", "cpu-tiny", "--sample-tokens", "0", "--lr-decay-iters", str(args.iters)]
    if args.torch_worker:
        torch_worker(example_argv + ["--max-iters", str(args.iters)], args.iters)
        return 0

    from bench.harness import canary
    env = dict(os.environ)  # for the two sides; the thread variables are read when a process starts
    if args.threads:
        env.update({var: str(args.threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    example = load_example()
    interval = example.PRESETS["cpu-tiny"]["eval_interval"]
    ends = list(range(interval, args.iters, interval)) + [args.iters]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                         f"NumPy {np.__version__}", "threads": args.threads,
              "canary_gflops": {"before": canary()}, "segments": []}
    torch_proc = subprocess.Popen([sys.executable, "-m", "bench.gpt_cpu_tiny", "--iters", str(args.iters),
                                   "--torch-worker"], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = os.path.join(tmp, "minigrad")
        done = {"minigrad": 0.0, "torch": 0.0}
        for i, end in enumerate(ends):
            time.sleep(0.3)  # let the other side's thread pool stop spinning
            with Stall() as stall_m:
                cmd = [sys.executable, EXAMPLE, *example_argv, "--max-iters", str(end), "--out-dir", out_dir]
                run = subprocess.run(cmd + (["--resume"] if i else []), cwd=REPO, env=env, capture_output=True,
                                     text=True)
            if run.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
            mine = example.read_run_info(out_dir)["history"]
            time.sleep(0.3)
            with Stall() as stall_t:
                torch_proc.stdin.write(f"{end}\n")
                torch_proc.stdin.flush()
                ref = json.loads(torch_proc.stdout.readline())
            seg = {"until": end, "minigrad_s": mine["seconds"] - done["minigrad"],
                   "torch_s": ref["seconds"] - done["torch"], "cpu_wait_minigrad": stall_m.share,
                   "cpu_wait_torch": stall_t.share}
            done = {"minigrad": mine["seconds"], "torch": ref["seconds"]}
            report["segments"].append(seg)
            print(f"iteration {end}: minigrad {seg['minigrad_s']:.1f} s, torch {seg['torch_s']:.1f} s, ratio "
                  f"{seg['minigrad_s'] / seg['torch_s']:.2f}; val loss {mine['eval'][-1][2]:.4f} vs "
                  f"{ref['history']['eval'][-1][2]:.4f}", flush=True)
        final = json.loads(torch_proc.stdout.readline())
        torch_proc.wait()
        report["minigrad"] = {"history": mine, "fixed_val_loss": minigrad_fixed_val_loss(out_dir)}
        report["torch"] = {"history": ref["history"] | {"seconds": ref["seconds"]}, **final}
    report["canary_gflops"]["after"] = canary()

    mine, ref = report["minigrad"]["history"], report["torch"]["history"]
    first = (mine["loss"][0], ref["loss"][0], mine["eval"][0][2], ref["eval"][0][2])
    report["valid"] = bool(abs(first[0] - first[1]) <= 1e-4 * abs(first[1])
                           and np.allclose(mine["eval"][0][1:], ref["eval"][0][1:], rtol=1e-4))
    report["ratio_total"] = mine["seconds"] / ref["seconds"]
    report["ratio_median"] = statistics.median(s["minigrad_s"] / s["torch_s"] for s in report["segments"])
    waits = [w for s in report["segments"] for w in (s["cpu_wait_minigrad"], s["cpu_wait_torch"]) if w is not None]
    report["cpu_wait_mean"] = float(np.mean(waits)) if waits else None
    print(f"\nvalidation (first iteration loss, first val loss): minigrad {first[0]:.6f} / {first[2]:.6f}, "
          f"torch {first[1]:.6f} / {first[3]:.6f}: {'ok' if report['valid'] else 'FAIL'}")
    print(f"{'':10} {'iters':>6} {'val loss (eval_iters)':>22} {'val loss (200 batches)':>23} {'seconds':>8}")
    for side in ("minigrad", "torch"):
        r = report[side]
        print(f"{side:10} {r['history']['eval'][-1][0]:>6} {r['history']['eval'][-1][2]:>22.4f} "
              f"{r['fixed_val_loss']:>23.4f} {r['history']['seconds']:>8.1f}")
    wait = "n/a" if report["cpu_wait_mean"] is None else f"{report['cpu_wait_mean']:.0%}"
    print(f"time ratio minigrad / torch: {report['ratio_total']:.2f}x in total, {report['ratio_median']:.2f}x median "
          f"of {len(ends)} segment pairs; some task waited for a CPU {wait} of the time; canary "
          f"{report['canary_gflops']['before']:.0f} GFLOP/s before, {report['canary_gflops']['after']:.0f} after")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
