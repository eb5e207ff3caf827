"""A timing worker: one persistent process per side ("minigrad", "numpy" or "torch").

Started by the harness as ``python -m bench.worker FD SIDE``; FD is its end of a socket pair
over which it receives commands and sends back ``("ok", result)`` or ``("error", traceback)``.

Commands:
  ("info",)                          versions and thread settings of this process
  ("prepare", case, params, min_s)   build the case's step function for this side, run it twice
                                     and return the outputs (for validation) and ``number``:
                                     how many calls one timed repeat makes (>= min_s seconds)
  ("turn", warmup, repeats)          one turn: ``warmup`` repeats untimed, then ``repeats``
                                     timed ones; returns the seconds per call of each repeat
  ("canary", n, repeats)             GFLOP/s of an n x n float32 NumPy GEMM (median)
  ("peaks",)                         the machine's peak FLOP/s and copy bandwidth (bench/peak.py)
  ("quit",)
"""
import gc
import os
import re
import statistics
import sys
import time
import traceback
from multiprocessing.connection import Connection

import numpy as np

from bench.cases import CASES


def as_numpy(out):
    """A step's output as NumPy data: arrays, floats, or tuples of them."""
    if isinstance(out, (tuple, list)):
        return tuple(as_numpy(o) for o in out)
    if hasattr(out, "detach"):  # torch.Tensor (minigrad tensors may have it too)
        out = out.detach()
    if hasattr(out, "numpy"):
        return np.array(out.numpy(), copy=True)
    return np.array(out, copy=True)  # a copy: a step may update the arrays it returned in place


class Worker:
    def __init__(self, side):
        self.side = side
        self.fn = None
        self.number = 1

    def info(self):
        info = {"side": self.side, "pid": os.getpid(), "numpy": np.__version__,
                "python": sys.version.split()[0]}
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            info["numpy_blas"] = f"{blas['name']} {blas['version']}"
        except (TypeError, KeyError):  # NumPy < 1.25 has no mode="dicts"
            pass
        if self.side == "torch":
            import torch
            blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
            info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                        torch_interop_threads=torch.get_num_interop_threads(),
                        torch_blas=blas and blas[1])
        if self.side == "minigrad":
            import minigrad
            info["minigrad"] = getattr(minigrad, "__version__", "?")
            info["minigrad_file"] = minigrad.__file__
        try:
            from threadpoolctl import threadpool_info
            info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                                   for p in threadpool_info()]
        except ImportError:
            pass
        # A non-torch worker must never load torch (two thread pools in one process).
        info["torch_loaded"] = "torch" in sys.modules
        return info

    def prepare(self, case, params, min_s):
        self.fn = None
        gc.collect()
        self.fn = CASES[case].setup(self.side, **params)
        # Two calls: a step that updates state (an SGD step) shows the update in the second.
        output = (as_numpy(self.fn()), as_numpy(self.fn()))
        # Calibrate: enough calls per repeat that one repeat lasts at least min_s seconds.
        number = 1
        while True:
            t = self._time(number)
            if t >= min_s or number >= 1 << 20:
                break
            number = max(number * 2, int(number * min_s / max(t, 1e-9) * 1.2))
        self.number = number
        return {"output": output, "number": number}

    def turn(self, warmup, repeats):
        for _ in range(warmup):
            self._time(self.number)
        return [self._time(self.number) / self.number for _ in range(repeats)]

    def _time(self, number):
        fn = self.fn
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - t0

    def peaks(self):
        from bench import peak
        return peak.measure()

    def canary(self, n, repeats):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b  # warm-up: thread pool start, page faults
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return 2 * n**3 / statistics.median(times) / 1e9


def main():
    conn = Connection(int(sys.argv[1]))
    worker = Worker(sys.argv[2])
    while True:
        try:
            cmd, *args = conn.recv()
        except EOFError:
            break
        if cmd == "quit":
            break
        try:
            conn.send(("ok", getattr(worker, cmd)(*args)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    main()
