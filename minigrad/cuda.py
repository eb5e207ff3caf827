"""The GPU, with torch.cuda's names: `minigrad.cuda.is_available()`, `synchronize()`, `manual_seed()`.

Tensors on `device="cuda"` hold CuPy arrays, and the primitives run minigrad's CUDA kernels (kernels/*.cu,
compiled at run time by NVRTC and cached; see minigrad/backend/cuda.py). The backend loads on first use:
CuPy (`pip install minigrad[cuda]`) and a GPU with its driver are needed; without them `is_available()`
is False and `why_unavailable()` says which is missing. minigrad runs on one GPU, 'cuda:0'.

Kernels run asynchronously, as in PyTorch: time GPU work with `synchronize()` before reading the clock.
"""
from __future__ import annotations

from minigrad import backend
from minigrad.random import seed_device


def is_available() -> bool:
    """True when tensors can be put on 'cuda' (CuPy imports and sees a GPU). Never raises."""
    return backend.cuda_runtime_error() is None


def why_unavailable() -> str | None:
    """Why `is_available()` is False (the missing package, driver or device), or None."""
    return backend.cuda_runtime_error()


def _runtime():
    why = backend.cuda_runtime_error()
    if why is not None:
        raise RuntimeError(f"CUDA is not available: {why}")
    from minigrad.backend import cuda

    return cuda.rt


def device_count() -> int:
    """1 with a usable GPU (minigrad uses one), else 0."""
    return int(is_available())


def current_device() -> int:
    _runtime()
    return 0


def get_device_name(device=None) -> str:
    """The GPU's name, e.g. 'NVIDIA H100 80GB HBM3'."""
    return _runtime().device_name


def synchronize() -> None:
    """Wait for every kernel launched so far to finish."""
    _runtime().synchronize()


def manual_seed(seed: int) -> None:
    """Seed the GPU's generator (rand, randn, randint, dropout on 'cuda'); `minigrad.manual_seed` seeds all.
    Without a GPU the call does nothing, as torch.cuda.manual_seed (so scripts may call it unconditionally)."""
    if is_available():
        seed_device("cuda", seed)


manual_seed_all = manual_seed  # one GPU
