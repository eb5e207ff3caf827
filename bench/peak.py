"""What the machine can do at best, to express throughputs as a fraction of it.

FLOP/s, computed (the textbook peak of the cores this process may use):

    peak = SIMD lanes x FMA units x 2 FLOP per FMA x clock x cores

- SIMD lanes: float32 elements per vector register of the widest instruction set the CPU reports
  in /proc/cpuinfo (AVX-512: 16, AVX/AVX2: 8, SSE: 4);
- FMA units per core: 2, an assumption that cpuid cannot check: true for AMD Zen 5 (full-width
  512-bit pipes) and for Intel cores since Haswell with AVX2 (server parts with AVX-512 have two
  512-bit FMA ports, some one), not for Zen 4 (512-bit FMAs at half rate) or older;
- clock: the highest "cpu MHz" of /proc/cpuinfo (cpufreq's maximum where the kernel has it). In a
  VM this is the nominal (TSC) clock, while the cores may run faster in turbo: the computed peak
  can then be below what is measured;
- cores: the CPUs this process may run on (sched_getaffinity).

FLOP/s, measured: `minigrad._C.fma_peak_gflops()` runs independent FMAs (no memory traffic) on
every thread, with the instruction set of the GEMM micro-kernel: the practical peak, at the clock
the cores really run. The GEMM targets are fractions of this one.

Memory bandwidth, measured: a copy of a 256 MiB array (far beyond the caches), split between
threads, counted as bytes read + bytes written per second.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

FMA_UNITS = 2  # per core; see the module docstring


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return set(), None
    flags, mhz = set(), []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
        elif key.strip() == "cpu MHz":
            mhz.append(float(value))
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            mhz.append(int(f.read()) / 1000)
    except (OSError, ValueError):
        pass
    return flags, max(mhz, default=None)


def computed_flops_peak() -> dict:
    """The textbook float32 peak (GFLOP/s) and the figures it is computed from."""
    flags, mhz = _cpuinfo()
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gflops = lanes * FMA_UNITS * 2 * mhz / 1e3 * cores if mhz else None
    return {"gflops": gflops, "lanes_f32": lanes, "fma_units": FMA_UNITS, "clock_ghz": mhz and mhz / 1e3,
            "cores": cores, "formula": "lanes x FMA units x 2 x clock x cores"}


def measured_flops_peak(repeats=5) -> float | None:
    """GFLOP/s of minigrad._C's FMA loop on all its threads (best of `repeats`), or None without _C."""
    try:
        from minigrad import _C
    except ImportError:
        return None
    _C.fma_peak_gflops("float32", 1_000_000)  # wake the threads
    return max(_C.fma_peak_gflops("float32") for _ in range(repeats))


def copy_bandwidth(nbytes=256 << 20, repeats=5, threads=None) -> float:
    """GB/s (read + write) of copying an nbytes array, in `threads` slices at once (NumPy releases
    the GIL during the copy); best of `repeats`."""
    threads = threads or len(os.sched_getaffinity(0))
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)

    def part(i):
        np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]])

    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def measure() -> dict:
    """All of the above; bench's minigrad worker runs this once per benchmark run."""
    return {"flops_computed": computed_flops_peak(), "gflops_measured": measured_flops_peak(),
            "copy_gbs": copy_bandwidth()}
