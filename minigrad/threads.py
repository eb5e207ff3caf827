"""One knob for the threads of every compute pool minigrad runs on the CPU.

    minigrad.set_num_threads(1)     # e.g. one process per core, or deterministic timings
    minigrad.get_num_threads()

The pools, and why one knob:
- the C++ kernels (minigrad._C) are parallelized with OpenMP, and the Numba kernels run on
  Numba's "omp" threading layer: built with GCC, both use the same OpenMP runtime, libgomp, and
  so one pool of worker threads instead of two pools spinning against each other;
- NumPy's BLAS (OpenBLAS or MKL) keeps a pool of its own; the NumPy reference backend uses it
  for matmul-like primitives. It is limited through threadpoolctl, when that is installed.
On a 2-core machine two pools that spin while idle starve each other (a GEMM that runs at
300 GFLOP/s alone was measured at 0.26 beside another pool), so set them together, here.

On a shared machine, mind OpenMP's wait policy. libgomp lets a thread that has finished its share
spin for a while (about a millisecond), waiting for the next parallel region: on a machine of its own
that saves the wake-up of each region, which in a VM costs tens of microseconds (measured here: a
256 x 256 GEMM on 2 threads takes 87 us spinning, 179 us with OMP_WAIT_POLICY=PASSIVE; the demo GPT's
step 25 ms against 37). But when other processes want the cores, the spinning threads take the CPU
from minigrad's own main thread and every region waits for a time slice: beside three busy processes
the same step took 1.3-2.3 s spinning, 53 ms with OMP_WAIT_POLICY=PASSIVE, 129 ms on one thread. So
minigrad keeps libgomp's default, for dedicated machines, and on a busy one you should run with
`OMP_WAIT_POLICY=PASSIVE` (set before Python starts: libgomp reads it once) or fewer threads.
"""
from __future__ import annotations

import importlib.util
import os

_num_threads: int | None = None  # None: each pool's own default (the number of cores)


def set_num_threads(n: int) -> None:
    """Use `n` threads in minigrad's C++ kernels, Numba kernels (if Numba is installed, at most
    its NUMBA_NUM_THREADS) and NumPy's BLAS (if threadpoolctl is installed)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects an int >= 1, got {n!r}")
    _num_threads = n
    try:
        from minigrad import _C
    except ImportError:
        pass
    else:
        _C.set_num_threads(n)
    if importlib.util.find_spec("numba") is not None:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")  # stays in effect: the object is not used as a context


def get_num_threads() -> int:
    """The thread count of minigrad's kernels: the last `set_num_threads`, else the OpenMP default
    (OMP_NUM_THREADS, or the number of cores this process may use)."""
    if _num_threads is not None:
        return _num_threads
    try:
        from minigrad import _C
    except ImportError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _C.get_num_threads()
