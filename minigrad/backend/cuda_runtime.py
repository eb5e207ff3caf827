"""The CUDA runtime: CuPy's arrays and minigrad's kernels, compiled at run time, behind four names.

The CUDA backend (cuda.py) reaches the GPU only through a runtime object:

    rt.xp                      the array module (cupy)
    rt.launch(family, name, grid, block, args, shared_mem=0)
                               run kernel `name` of kernels/<family>.cu: args as the kernel's C signature
                               types them (device arrays for pointers, None for a null pointer, NumPy
                               scalars of the exact C type for values: np.int32 for int, np.int64 for long
                               long, the array's dtype for T)
    rt.multiprocessors         the GPU's SM count, to size grid-stride launches
    rt.compute_capability      e.g. 90 for an H100 (the tensor-core GEMM needs 80 or more)
    rt.to_host(x) / rt.from_host(a)
                               copies between the GPU and NumPy
    rt.synchronize(), rt.device_name

so that tests can run the same backend on an emulated runtime (NumPy arrays, every kernel executed by the
CPU emulator of tests/cuda_emu) where CI has no GPU.

Compilation: the first launch of a kernel of `family` compiles kernels/<family>.cu with NVRTC through
`cupy.RawModule` (with the kernels directory on the include path, for common.cuh); CuPy caches the
binary on disk (~/.cupy/kernel_cache), so later processes load it without compiling. CuPy's cache key is
the source text, which does not show a change to an included header: `module_source` adds the headers'
digest to it. CuPy compiles with -ftz=true (float32 subnormals, below 1.2e-38, flush to zero; float64
keeps them) and NVRTC contracts a * b + c into one FMA: results differ from numpy_ref's in the last bits,
within the tolerances the tests use.
"""
from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import numpy as np


def probe():
    """(cupy, None) when CuPy imports and sees a GPU, else (None, the reason). Never raises: a machine
    without a driver, without CuPy or with a broken CuPy install is simply a machine without a GPU."""
    try:
        import cupy
    except Exception as e:  # not installed, or built for another CUDA / NumPy
        return None, f"CuPy does not import ({type(e).__name__}: {e}); install minigrad[cuda]"
    try:
        if cupy.is_available():  # False without a driver or a device
            return cupy, None
        return None, "CuPy finds no CUDA device (no GPU, or no driver)"
    except Exception as e:
        return None, f"CuPy cannot query the CUDA driver ({type(e).__name__}: {e})"


def kernels_dir() -> str:
    """The directory of the .cu sources: the package minigrad.kernels of an installed minigrad (setup.py maps
    kernels/ there), or kernels/ next to the minigrad/ of a source tree used without installing."""
    try:
        found = Path(str(importlib.resources.files("minigrad.kernels")))
    except ModuleNotFoundError:
        found = Path(__file__).resolve().parents[2] / "kernels"
    if not (found / "common.cuh").is_file():
        raise FileNotFoundError(f"minigrad's CUDA sources are not in {found} (reinstall minigrad)")
    return str(found)


def module_source(kernels: str, family: str) -> str:
    """The text RawModule compiles for kernels/<family>.cu: the file, after a comment with the digest of the
    headers (*.cuh) it may include, so that CuPy's on-disk cache, keyed by this text, misses when a header
    changes instead of loading a binary built from the old one."""
    digest = hashlib.sha256()
    for header in sorted(Path(kernels).glob("*.cuh")):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    return (f"// headers: sha256 {digest.hexdigest()}\n#line 1 \"{family}.cu\"\n"  # (NVRTC's line numbers: the file's)
            + (Path(kernels) / f"{family}.cu").read_text())


class CupyRuntime:
    """The runtime on a real GPU: CuPy arrays, kernels as CuPy RawModule functions."""

    name = "cupy"

    def __init__(self, cupy):
        self.xp = cupy
        self._kernels_dir = kernels_dir()
        self._modules = {}    # family -> cupy.RawModule
        self._functions = {}  # (family, name) -> cupy.RawKernel
        device = cupy.cuda.Device()
        self.multiprocessors = device.attributes["MultiProcessorCount"]
        self.compute_capability = int(device.compute_capability)  # e.g. 90 for an H100
        self.device_name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()

    def function(self, family: str, name: str):
        """The compiled kernel `name` of kernels/<family>.cu (compiled on first use, then cached)."""
        fn = self._functions.get((family, name))
        if fn is None:
            module = self._modules.get(family)
            if module is None:
                module = self.xp.RawModule(code=module_source(self._kernels_dir, family),
                                           options=("--include-path=" + self._kernels_dir,))
                self._modules[family] = module
            fn = self._functions[(family, name)] = module.get_function(name)
        return fn

    def launch(self, family, name, grid, block, args, shared_mem=0):
        # A null pointer is passed as a 64-bit zero (CuPy has no None argument).
        args = tuple(np.uint64(0) if a is None else a for a in args)
        self.function(family, name)(tuple(grid), tuple(block), args, shared_mem=shared_mem)

    def to_host(self, x) -> np.ndarray:
        return self.xp.asnumpy(x)

    def from_host(self, a):
        return self.xp.asarray(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()
