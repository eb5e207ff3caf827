"""Shared pytest configuration: the hypothesis settings profiles.

    HYPOTHESIS_PROFILE=ci        few examples, fixed seed, no example database: reproducible and fast
    HYPOTHESIS_PROFILE=dev       the default outside CI: a few more random examples per run
    HYPOTHESIS_PROFILE=thorough  many examples, for a long local run before a release

Without HYPOTHESIS_PROFILE the profile is "ci" when the CI environment variable is set, else "dev".
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,  # same examples on every run of the same code
    database=None,  # and no replay of failures saved by earlier runs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    """One thread for torch, the test oracle: its OpenMP pool and NumPy's OpenBLAS pool spinning side by
    side on a 2-core machine starve each other (calls that take microseconds wait milliseconds)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture
def restore_threads():
    """Put minigrad's thread count (every pool: minigrad.set_num_threads) back as it was after the test."""
    import minigrad as mg
    before = mg.get_num_threads()
    yield
    mg.set_num_threads(before)


@pytest.fixture(scope="session")
def emu(tmp_path_factory):
    """Every kernels/*.cu compiled with the CPU emulator of CUDA (tests/cuda_emu_support.py), once per session."""
    from cuda_emu_support import build_emu
    return build_emu(tmp_path_factory.mktemp("cuda_emu"))


@pytest.fixture(scope="module", params=["emulated", "gpu"])
def cuda_runtime(request):
    """The runtime the 'cuda' device runs on for a module's tests, which run twice: "gpu", on a real GPU
    through CuPy (skipped, with the reason, without one), and "emulated", on tests/cuda_emu_support's
    EmulatedRuntime (NumPy arrays as device memory, the kernels in the CPU emulator). The backend registry
    is restored afterwards."""
    import minigrad as mg
    from minigrad import backend
    from minigrad import random as mg_random
    from minigrad.backend import cuda, numpy_ref
    saved_registry, saved_rt = backend._registry.get("cuda"), cuda.rt
    if request.param == "gpu":
        why = mg.cuda.why_unavailable()
        if why is not None:
            pytest.skip(f"needs an NVIDIA GPU with CuPy (pip install minigrad[cuda]): {why}")
        runtime = cuda.rt
    else:
        from cuda_emu_support import DeviceArray, EmulatedRuntime, emulated_erf
        runtime = EmulatedRuntime(request.getfixturevalue("emu"))
        backend.register_cuda(runtime)
        host_xp, device_erf = numpy_ref._xp, numpy_ref._device_erf
        numpy_ref._xp = lambda a: runtime.xp if isinstance(a, DeviceArray) else host_xp(a)  # (as cupy is CuPy's)
        numpy_ref._device_erf = emulated_erf  # (cupyx.scipy.special.erf on a GPU)
    mg_random._generators.pop("cuda", None)
    yield runtime
    mg_random._generators.pop("cuda", None)
    if request.param == "emulated":
        numpy_ref._xp, numpy_ref._device_erf = host_xp, device_erf
        backend.unregister("cuda", "cuda")
        backend.unregister("numpy", "cuda")
        cuda.use_runtime(saved_rt)
        if saved_registry is not None:
            backend._registry["cuda"] = saved_registry
            backend._tables.clear()
