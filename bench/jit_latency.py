"""What Numba's compilation costs a user: the first training step of a small GPT, cold and warm.

    python -m bench.jit_latency [--threads N] [--json FILE]

Each measurement is a fresh process that imports minigrad, builds the tiny GPT of the benchmarks
(4 layers, 4 heads, d=128, block 64, vocab 65, batch 12) with AdamW, and times its first training
steps (forward, cross-entropy, backward, optimizer step) one by one:

* cold: NUMBA_CACHE_DIR points at an empty directory, so every kernel the step uses compiles (the
  first run after installing minigrad, or after a kernel's source changed);
* warm: the same directory again, now filled, so the kernels load from the on-disk cache (every later
  run: `cache=True`).

The step after the first few is the steady-state time, for scale. Reported: import time, first step,
second step, steady step, in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, time
t0 = time.perf_counter()
import minigrad as mg
from minigrad.models.gpt import GPT, GPTConfig
import minigrad.nn.functional as F
t_import = time.perf_counter() - t0
if THREADS:
    mg.set_num_threads(THREADS)
mg.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False))
opt = mg.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
x, y = mg.randint(0, 65, (12, 64)), mg.randint(0, 65, (12, 64))
steps = []
for _ in range(6):
    t = time.perf_counter()
    _, loss = model(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    steps.append(time.perf_counter() - t)
print(json.dumps(dict(import_s=t_import, first_step_s=steps[0], second_step_s=steps[1], steady_step_s=min(steps[3:]),
                      backends=sorted(set(mg.backend.dispatch("cpu").chosen_backend.values())))))
"""


def run(cache_dir: str, threads: int) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    code = f"THREADS = {threads}\n" + _CHILD
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.jit_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="minigrad.set_num_threads(N) (default: leave it)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        results = {"cold": run(cache, args.threads), "warm": run(cache, args.threads)}
    for name, r in results.items():
        print(f"{name:<5} import {r['import_s']:.2f} s, first step {r['first_step_s']:.2f} s, second "
              f"{r['second_step_s']:.3f} s, steady {r['steady_step_s'] * 1e3:.1f} ms  ({'+'.join(r['backends'])})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
