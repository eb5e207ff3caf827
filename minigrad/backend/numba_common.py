"""What the Numba kernel modules share: the threading layer, the fastmath flags, operand preparation.

Importing this module selects Numba's "omp" threading layer (before any parallel kernel runs), so
Numba's workers are the OpenMP threads the C++ kernels use too (see minigrad/threads.py).
"""
from __future__ import annotations

import numba
import numpy as np

numba.config.THREADING_LAYER = "omp"

# LLVM fast-math flags that keep IEEE inf and nan (no "nnan", "ninf"): reassociation lets loops that
# sum (dot products, row sums) be vectorized; contraction allows fused multiply-adds; "arcp" turns
# x / y into x * (1 / y); "nsz" ignores the sign of zero.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def supported(*arrays) -> bool:
    """Whether the kernels take these arrays: all float32 or all float64."""
    return arrays[0].dtype in KERNEL_DTYPES and all(a.dtype == arrays[0].dtype for a in arrays)


def kernel_array(x):
    """x as a C-contiguous, writeable array (a copy only when x is not one): the layout the kernels are
    compiled for, so that each dtype costs one compilation and inner loops see unit strides."""
    return x if x.flags.c_contiguous and x.flags.writeable else np.array(x, order="C")


def row_chunks(rows: int) -> int:
    """How many chunks to split `rows` into for a kernel that also sums over the rows (a bias or weight
    gradient): each chunk is one parallel task with its own partial sums, added up at the end, so no
    two threads write the same sum. At least 8 rows a chunk, at most 64 chunks. The count depends on
    the size only, not on the thread count, so the result does not either."""
    return max(1, min(64, rows // 8))


PARALLEL_MIN = 1 << 15  # elements (as in the C++ kernels): below this, one thread does the whole call

# Elements below which the single-pass primitives (ReLU, the reductions) leave an array to NumPy's own
# loops: there the kernel would run on one thread too, where NumPy is as fast, without the few
# microseconds a Numba call costs (dispatch, thread-count toggling: 4-7 us, more than a 128-float sum).
# Read at each call; the kernels' tests set it to 0 so that every shape of their tables runs the kernels.
NUMPY_BELOW = PARALLEL_MIN


def leave_to_numpy(x) -> bool:
    """Whether x is small enough for NumPy's loops to beat a Numba kernel (see NUMPY_BELOW)."""
    return x.size < NUMPY_BELOW


def launch(kernel, work: int, *args):
    """kernel(*args) on Numba's threads, or on the calling thread alone when `work` (the elements the
    call touches) is below PARALLEL_MIN: waking the other threads costs more than a small call's work,
    and on a busy machine a parallel region also waits until every one of its threads gets a core."""
    if work >= PARALLEL_MIN:
        return kernel(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)
