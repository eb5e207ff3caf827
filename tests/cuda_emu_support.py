"""The CPU emulator of CUDA as a test tool: build kernels/*.cu with tests/cuda_emu/cuda_emu.h and launch them.

`build_emu(dir)` compiles every kernels/*.cu (and the emulator's self-test kernels) into one shared library
and returns an `Emu`, whose `launch(name, grid, block, *args)` runs a kernel as CuPy's RawKernel would, with
the checks described in tests/test_cuda_emulated.py (two thread orders, guard bytes, UBSan).
`EmulatedRuntime(emu)` is the CUDA backend's runtime on top of it (NumPy arrays as device memory), so that
minigrad.backend.cuda runs in CI without a GPU (tests/test_cuda_backend_emulated.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import inspect
import math
import os
import re
import shutil
import subprocess
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
# (an entry point may carry __launch_bounds__(...) before its name: `__global__ void __launch_bounds__(256) f(`)
ENTRY_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
# The thread order of the first of the two runs of every launch: 1 descending (default), 2 a seeded random
# permutation per barrier interval (see cuda_emu.h); extra compiler flags, e.g. "-fsanitize=undefined".
FIRST_SCHEDULE = int(os.environ.get("MINIGRAD_CUDA_EMU_SCHEDULE", "1"))
EXTRA_CXXFLAGS = os.environ.get("MINIGRAD_CUDA_EMU_CXXFLAGS", "").split()
# ---- building the emulated kernels --------------------------------------------------------------------


def _compiler():
    """A C++20 compiler (g++ or $CXX), or the reason there is none."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        return None, "needs g++ (a C++20 compiler) to run the CUDA kernels in the CPU emulator; none on PATH"
    probe = "#include <bit>\nint main() { return std::bit_cast<int>(0.0f); }\n"
    try:
        r = subprocess.run([cxx, "-std=c++20", "-x", "c++", "-fsyntax-only", "-"], input=probe, text=True,
                           capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"needs g++ with C++20 to run the emulated CUDA kernels ({cxx}: {e})"
    if r.returncode != 0:
        return None, f"needs g++ with C++20 (std::bit_cast) to run the emulated CUDA kernels; {cxx} says: " \
                     f"{r.stderr.strip()[:300]}"
    return cxx, None


def entry_points(cxx, cu: Path) -> list[str]:
    """The extern "C" __global__ functions of a .cu file, after its macros are expanded."""
    r = subprocess.run([cxx, "-E", "-P", "-x", "c++", str(cu)], text=True, capture_output=True, check=True)
    return ENTRY_RE.findall(r.stdout)


GUARD_FINITE = 0x3C  # 0x3c3c3c3c: 0.0115 as float32, 1.6e-19 as float64: finite, not a plausible result


class Emu:
    """The compiled emulator library: launch(name, grid, block, *args) like a CuPy RawKernel call."""

    PAD = 64  # guard bytes on each side of every buffer

    def __init__(self, lib, stderr_path):
        self.lib = lib
        self.stderr_path = stderr_path  # where the library's stderr (UBSan's reports) goes during a launch
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_signature.restype = ctypes.c_char_p
        lib.emu_launch.argtypes = [ctypes.c_int] + [ctypes.c_uint] * 6 + [ctypes.POINTER(ctypes.c_void_p),
                                                                          ctypes.c_char_p, ctypes.c_int]
        lib.emu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
        self.index, self.signature = {}, {}
        for i in range(lib.emu_kernel_count()):
            name = lib.emu_kernel_name(i).decode()
            self.index[name] = i
            self.signature[name] = lib.emu_kernel_signature(i).decode().split(",")
        self._guarded = weakref.WeakValueDictionary()  # data pointer -> its guarded buffer, while alive
        self._fill = {}  # data pointer -> the byte its guards hold
        self.launched = set()

    # -- memory ------------------------------------------------------------------------------------
    def array(self, a, dtype=None, misalign=0, fill=0xFF):
        """A copy of `a` (C-contiguous) inside a guarded buffer: what device memory is to a kernel. Its address
        is 16-byte aligned (as an allocation of CuPy's), plus `misalign` bytes (as a view into one). The guards
        hold `fill` bytes: 0xff, nan for floats (an out-of-bounds read poisons what it reaches), or GUARD_FINITE
        (the first of the two runs of a launch: a finite value, which an out-of-bounds `+=` changes, and
        which makes an out-of-bounds read differ between the two runs)."""
        a = np.asarray(a, dtype=dtype)
        buf = np.full(a.nbytes + 2 * self.PAD + 32, fill, dtype=np.uint8)
        start = self.PAD + (-buf.ctypes.data - self.PAD) % 16 + misalign % 16  # (numpy aligns less than CuPy)
        view = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        self._guarded[view.ctypes.data] = buf  # (the view keeps buf alive)
        self._fill[view.ctypes.data] = fill
        return view

    def empty(self, shape, dtype):
        """A guarded array filled with 0xff bytes (nan / -1): a kernel must write every element itself."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self.array(np.frombuffer(b"\xff" * nbytes, dtype=dtype).reshape(shape))

    def _check_guards(self, name, arrays):
        for a in arrays:
            buf = self._guarded[a.ctypes.data]
            start = a.ctypes.data - buf.ctypes.data
            pad = np.concatenate([buf[:start], buf[start + a.nbytes:]])
            assert np.all(pad == self._fill[a.ctypes.data]), \
                f"{name} wrote outside an array of shape {a.shape} ({a.dtype})"

    # -- launching ---------------------------------------------------------------------------------
    def _values(self, name, args):
        sig = self.signature[name]
        assert len(args) == len(sig), f"{name} takes {len(sig)} arguments ({','.join(sig)}), got {len(args)}"
        keep, arrays = [], []
        for k, (want, a) in enumerate(zip(sig, args)):
            if want.endswith("*"):
                if a is None:
                    keep.append(ctypes.c_void_p(0))
                    continue
                assert isinstance(a, np.ndarray), f"{name} argument {k}: a pointer ({want}) needs an array"
                assert a.ctypes.data in self._guarded, f"{name} argument {k}: use emu.array() for device memory"
                assert _code(a.dtype) + "*" == want, f"{name} argument {k}: {a.dtype} array for {want}"
                keep.append(ctypes.c_void_p(a.ctypes.data))
                arrays.append(a)
            else:
                assert isinstance(a, np.generic) and _code(a.dtype) == want, \
                    f"{name} argument {k}: {want} needs a numpy scalar of that type, got {type(a).__name__}"
                keep.append(_CTYPE[want](a.item()))
        return keep, arrays

    def _launch_once(self, name, grid, block, args):
        keep, arrays = self._values(name, args)
        argv = (ctypes.c_void_p * max(1, len(keep)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                       for v in keep])
        err = ctypes.create_string_buffer(2048)
        g, b = _dim3(grid), _dim3(block)
        with open(self.stderr_path, "w+b") as log:  # fd 2 of the process, for the duration of the launch
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                failed = self.lib.emu_launch(self.index[name], *g, *b, argv, err, len(err))
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            stderr = log.read().decode(errors="replace")
        assert "runtime error:" not in stderr, f"{name}<<<{g}, {b}>>>: undefined behaviour (UBSan):\n{stderr[:3000]}"
        if failed:
            raise AssertionError(f"{name}<<<{g}, {b}>>>: {err.value.decode()}")
        self._check_guards(name, arrays)
        return arrays

    def launch(self, name, grid, block, *args):
        """name<<<grid, block>>>(*args), synchronously; run under two thread orders (see the docstring)."""
        assert name in self.index, f"no kernel {name} in kernels/*.cu"
        self.launched.add(name)
        copies = [self.array(a, fill=GUARD_FINITE) if isinstance(a, np.ndarray) else a for a in args]
        self.lib.emu_set_schedule(FIRST_SCHEDULE, 12345)  # descending thread ids (or as chosen)
        first = self._launch_once(name, grid, block, copies)
        self.lib.emu_set_schedule(0, 0)  # ascending
        second = self._launch_once(name, grid, block, args)
        for k, (a, b) in enumerate(zip(first, second)):
            assert a.tobytes() == b.tobytes(), \
                (f"{name}: array argument {k} differs between two thread orders (a race, nondeterminism, or a read "
                 f"out of bounds)")


_CODE = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.int32): "i32",
         np.dtype(np.int64): "i64", np.dtype(np.uint32): "u32", np.dtype(np.uint64): "u64",
         np.dtype(np.uint16): "u16", np.dtype(np.uint8): "u8", np.dtype(np.bool_): "u8"}
_CTYPE = {"f32": ctypes.c_float, "f64": ctypes.c_double, "i32": ctypes.c_int32, "i64": ctypes.c_int64,
          "u32": ctypes.c_uint32, "u64": ctypes.c_uint64, "u16": ctypes.c_uint16, "u8": ctypes.c_uint8}


def _code(dtype):
    return _CODE[np.dtype(dtype)]


def _dim3(d):
    d = (d,) if isinstance(d, int) else tuple(d)
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


def build_emu(out: Path) -> "Emu":
    """Compile every kernels/*.cu with the emulator into `out`; skips the test without a C++20 compiler."""
    cxx, reason = _compiler()
    if cxx is None:
        pytest.skip(reason)
    # The kernel files; kernels/common.cuh (their shared helpers, no entry points) comes in through their
    # `#include "common.cuh"`, which g++ resolves next to the including file. It has no include guard:
    # each namespace below gets its own copy (a guard or #pragma once would leave the later ones without).
    families = sorted(KERNELS.glob("*.cu"))
    assert families, f"no CUDA sources in {KERNELS}"
    families.append(EMU_DIR / "selftest.cu")  # kernels that test the emulator itself
    lines, entries = [], []
    for cu in families:
        ns = f"mg_{cu.stem}"
        lines += [f"#define MG_EMU_HAVE_{cu.stem} 1", f"namespace {ns} {{", f'#include "{cu}"', "}"]
        entries += [f"X({ns}, {name})" for name in entry_points(cxx, cu)]
    lines.append("#define MG_EMU_KERNEL_LIST(X) " + " ".join(entries))
    (out / "emu_kernels.inc").write_text("\n".join(lines) + "\n")
    lib = out / "libcuda_emu.so"
    cmd = [cxx, "-std=c++20", "-O1", "-g0", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra",
           "-Wno-unused-parameter", "-Wno-unused-function", *EXTRA_CXXFLAGS, f"-I{out}", f"-I{EMU_DIR}",
           str(EMU_DIR / "driver.cpp"), "-o", str(lib)]
    # UndefinedBehaviorSanitizer: an out-of-bounds index into a __shared__ array (a static array here),
    # a signed overflow, a misaligned or null access... is reported on stderr, which every launch
    # captures and checks, instead of silently corrupting memory. Without libubsan, no sanitizer.
    r = subprocess.run(cmd[:1] + ["-fsanitize=undefined"] + cmd[1:], text=True, capture_output=True)
    if r.returncode != 0:
        r = subprocess.run(cmd, text=True, capture_output=True)
    assert r.returncode == 0, "the emulated kernels do not compile:\n" + " ".join(cmd) + "\n" + r.stderr[-6000:]
    return Emu(ctypes.CDLL(str(lib)), out / "stderr.txt")


# ---- the CUDA backend's runtime on the emulator -------------------------------------------------------------


def memory_span(a: np.ndarray) -> np.ndarray:
    """What a kernel can reach through `a`'s pointer: a 1-D array of its dtype over the memory from its first
    element to its last one (a view; read-only for a read-only view such as a broadcast)."""
    assert all(s >= 0 for s in a.strides), f"a kernel was given a view with negative strides {a.strides}"
    if a.size == 0:
        return a.reshape(-1)
    extent = sum((n - 1) * s for n, s in zip(a.shape, a.strides)) // a.itemsize + 1
    return np.lib.stride_tricks.as_strided(a, shape=(extent,), strides=(a.itemsize,),
                                           writeable=a.flags.writeable)



class DeviceArray(np.ndarray):
    """NumPy memory standing for GPU memory, as strict as CuPy about mixing: a ufunc or NumPy function that
    gets a device array together with a host array (a plain numpy.ndarray, 0-d included) raises TypeError,
    as CuPy does, so code that creates a NumPy array from a shape and combines it with CuPy arrays fails in
    CI too. Only the outermost call is checked: inside it NumPy's own implementation runs (where CuPy would
    run its own). Results stay device arrays; a full reduction gives a 0-d device array (CuPy's), not a
    NumPy scalar.

    Where CuPy is installed (the test extra has it; it imports without a GPU), a call is also refused when
    CuPy would refuse it: a NumPy function or ufunc CuPy does not have (np.frompyfunc's), arguments its
    function does not take (np.max's `initial`), add.at on a dtype it has no atomics for (bfloat16). And
    CuPy's where (so its tril / triu) has no bfloat16 version and returns float32 for bfloat16 operands:
    so does this where."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_what_cupy_lacks_ufunc(ufunc, method, inputs)
        with _outermost(f"numpy.{ufunc.__name__}.{method}", inputs + (out or ())):
            inputs = tuple(a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in inputs)
            if out is not None:
                kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, DeviceArray) else o for o in out)
            result = getattr(ufunc, method)(*inputs, **kwargs)
        return out[0] if out is not None and len(out) == 1 else to_device_arrays(result)

    def __array_function__(self, func, types, args, kwargs):
        outermost = _calls[0] == 0
        if outermost:
            _refuse_what_cupy_lacks(func, args, kwargs)
        with _outermost(f"numpy.{func.__name__}", _flatten(args) + _flatten(list(kwargs.values()))):
            result = super().__array_function__(func, types, args, kwargs)
        if outermost and func in (np.where, np.tril, np.triu) and getattr(result, "dtype", None) == _BFLOAT16:
            result = result.astype(np.float32)  # CuPy 14's where: no bfloat16 loop (cupy/_sorting/search.py)
        return to_device_arrays(result)


try:
    import cupy as _cupy  # (only its Python signatures are read: no GPU needed)
except Exception:  # not installed, or unusable here: the checks below are skipped
    _cupy = None
try:
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:
    _BFLOAT16 = None
# cupy.add.at's dtypes (cupy/_core/_routines_indexing.pyx, _scatter_op_single: atomicAdd's types)
_CUPY_AT_DTYPES = {np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64, np.float16, np.float32,
                                         np.float64)}


def _cupy_function(func):
    """CuPy's function of the same name as the NumPy function `func` (its submodule's), or None."""
    module = func.__module__ or ""
    namespace = (_cupy.linalg if "linalg" in module else _cupy.lib.stride_tricks if "stride_tricks" in module
                 else _cupy)
    return getattr(namespace, func.__name__, None)


def _refuse_what_cupy_lacks(func, args, kwargs, mine=None):
    """Raise TypeError where CuPy's version of the NumPy function `func` (or `mine`, given) would refuse the
    call: no such function, or arguments its signature does not take."""
    if _cupy is None:
        return
    mine = mine or _cupy_function(func)
    if mine is None:
        raise TypeError(f"numpy.{func.__name__} on a device array: CuPy has no {func.__name__}")
    try:
        signature = inspect.signature(mine)
    except (TypeError, ValueError):  # (a compiled function without a signature: not checked)
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"numpy.{func.__name__} on a device array with arguments CuPy's {func.__name__}"
                        f"{signature} does not take ({sorted(kwargs)}): {e}") from None


def _refuse_what_cupy_lacks_ufunc(ufunc, method, inputs):
    if _cupy is None or _calls[0]:
        return
    mine = getattr(_cupy, ufunc.__name__, None)  # (how CuPy's __array_ufunc__ finds its own)
    if mine is None or not hasattr(mine, method):
        raise TypeError(f"numpy.{ufunc.__name__}.{method} on a device array: CuPy has no such ufunc method")
    if method == "at" and inputs[0].dtype not in _CUPY_AT_DTYPES:
        raise TypeError(f"numpy.{ufunc.__name__}.at on a {inputs[0].dtype} device array: CuPy's ufunc.at "
                        f"supports {sorted(str(d) for d in _CUPY_AT_DTYPES)}")


_calls = [0]  # the depth of DeviceArray calls under way


@contextlib.contextmanager
def _outermost(what, items):
    if _calls[0] == 0:
        host = [a for a in items if type(a) is np.ndarray]
        if host:
            raise TypeError(f"{what}: a host (NumPy) array of shape {host[0].shape} mixed with device arrays; CuPy "
                            f"refuses this (create arrays with the module of the inputs: numpy_ref._xp)")
    _calls[0] += 1
    try:
        yield
    finally:
        _calls[0] -= 1


def _flatten(items) -> tuple:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return tuple(out)


def _refuse_host_arrays(what, items):
    host = [a for a in items if type(a) is np.ndarray and a.ndim > 0]
    if host:
        raise TypeError(f"{what}: a host (NumPy) array of shape {host[0].shape} mixed with device arrays: CuPy "
                        f"refuses this (create arrays with the inputs' module, numpy_ref._xp)")


def emulated_erf(x):
    """erf of a device array (cupyx.scipy.special.erf on a GPU; here math.erf per element on the CPU)."""
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x.view(np.ndarray)), dtype=x.dtype).view(DeviceArray)


def to_device_arrays(result):
    if isinstance(result, tuple):
        return tuple(to_device_arrays(r) for r in result)
    if isinstance(result, list):
        return [to_device_arrays(r) for r in result]
    if type(result) is np.ndarray:
        return result.view(DeviceArray)
    if isinstance(result, np.generic):
        return np.asarray(result).view(DeviceArray)
    return result


class DeviceModule:
    """The emulated runtime's `xp`: numpy's functions, returning device arrays (what `cupy` is to CuPy)."""

    def __getattr__(self, name):
        value = getattr(np, name)
        if name == "random":
            return _DeviceRandom()
        if isinstance(value, np.ufunc):  # (ufuncs keep their methods, such as add.at, as CuPy's do)
            return value
        if callable(value) and not isinstance(value, type):
            if _cupy is not None and getattr(_cupy, name, None) is None:
                raise AttributeError(f"the emulated cupy module has no {name}: CuPy has none")

            def call(*args, **kwargs):
                _refuse_what_cupy_lacks(value, args, kwargs, mine=getattr(_cupy, name, None))
                return to_device_arrays(value(*args, **kwargs))
            return call
        return value

    # cupy.lib.stride_tricks.as_strided(x, shape=None, strides=None): CuPy's signature (no `writeable`)
    lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        as_strided=lambda x, shape=None, strides=None: to_device_arrays(
            np.lib.stride_tricks.as_strided(x.view(np.ndarray), shape, strides))))


class _DeviceRandom:
    @staticmethod
    def default_rng(seed):
        return _DeviceGenerator(np.random.default_rng(seed))


class _DeviceGenerator:
    def __init__(self, gen):
        self._gen = gen

    def __getattr__(self, name):
        method = getattr(self._gen, name)
        return lambda *args, **kwargs: to_device_arrays(method(*args, **kwargs))


class EmulatedRuntime:
    """minigrad.backend.cuda's runtime (see cuda_runtime.py) on the CPU emulator: NumPy arrays stand for device
    memory and every launch runs the kernel in the emulator (Emu.launch: two thread orders, guard bytes,
    argument types checked against the kernel's C signature). A pointer argument reaches the kernel as on a
    GPU: the raw memory from the array's first element on, whatever its strides, so a wrapper that passes a
    non-contiguous array to a kernel that reads rows gets the wrong elements here too, and at the same address
    modulo 16 bytes (a view that starts mid-allocation is as misaligned for a vector load as it is on a
    GPU: UBSan reports a misaligned access). `launched` records
    the kernels run, so that a test can tell a kernel from a fallback to numpy_ref."""

    name = "emulated"
    device_name = "CPU emulator of CUDA (tests/cuda_emu)"
    multiprocessors = 2  # small grids: the grid-stride loops of the kernels run more than once
    compute_capability = 90  # the emulator runs every instruction the kernels use (mma.cuh's portable forms)

    def __init__(self, emu: Emu):
        self.emu = emu
        self.xp = DeviceModule()
        self.launched: list[str] = []

    def launch(self, family, name, grid, block, args, shared_mem=0):
        assert (KERNELS / f"{family}.cu").is_file(), f"no kernels/{family}.cu for kernel {name}"
        self.launched.append(name)
        staged, call = [], []
        for k, a in enumerate(args):
            if isinstance(a, np.ndarray):
                assert isinstance(a, DeviceArray), f"{name} argument {k}: a host array passed to a kernel"
                span = memory_span(a)
                guarded = self.emu.array(span, misalign=span.ctypes.data)  # as misaligned as a view on a GPU
                staged.append((span, guarded))
                call.append(guarded)
            else:
                call.append(a)
        self.emu.launch(name, grid, block, *call)
        for span, guarded in staged:  # write the results back (inputs come back unchanged)
            if span.flags.writeable:
                span[...] = guarded

    def to_host(self, x):
        assert isinstance(x, DeviceArray), f"to_host of a {type(x).__name__}, not a device array"
        return np.array(x.view(np.ndarray))

    def from_host(self, a):
        return np.array(a).view(DeviceArray)

    def synchronize(self):
        pass
