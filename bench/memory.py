"""Peak memory of benchmark cases: ``python -m bench.memory [CASES...] [--quick]``.

Each (case, side) runs in a fresh process: the case's step is built (inputs, module, weights) and run
5 times, and the process's peak resident set size (getrusage's ru_maxrss) is reported twice: in total
(what `top` would show at the worst moment: Python, NumPy, the library itself) and as the growth over
the RSS just before the first step (the step's own arrays: activations, gradients, workspaces).

Sides: minigrad (its default backends), numpy (minigrad on the NumPy reference backend, where the case
has that side), torch. The ratio of totals is what the issue's "peak memory" target compares; the
growth shows where the difference comes from.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.cases import CASES

_CHILD = """
import json, resource, sys
from bench.cases import CASES
case = CASES[sys.argv[1]]
params = json.loads(sys.argv[3])
step = case.setup(sys.argv[2], **params)
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
before = rss_kib()
for _ in range(5):
    step()
print(json.dumps({"before_mib": before / 1024, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(name: str, side: str, params: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, name, side, json.dumps(params)], capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["conv2d_step", "lstm_step", "encoder_layer_step", "gpt_step"])
    parser.add_argument("--quick", action="store_true", help="the cases' --quick sizes")
    args = parser.parse_args(argv)
    print(f"{'case':<20} {'size':<22} {'side':<9} {'peak RSS':>9} {'growth':>8} {'vs torch':>9}")
    for name in args.cases:
        case = CASES[name]
        for params in (case.quick if args.quick else case.sizes):
            results = {side: measure(name, side, params) for side in ("minigrad",) + case.refs}
            torch_peak = results.get("torch", {}).get("peak_mib")
            for side, r in results.items():
                ratio = f"{r['peak_mib'] / torch_peak:.2f}x" if torch_peak else ""
                print(f"{name:<20} {case.label.format(**params):<22} {side:<9} {r['peak_mib']:>6.0f} MiB "
                      f"{r['peak_mib'] - r['before_mib']:>5.0f} MiB {ratio:>9}")


if __name__ == "__main__":
    main()
