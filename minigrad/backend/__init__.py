"""Backend selection: which implementation runs each primitive, per device.

Backends register themselves for a device with a priority. For every primitive name of
`base.PRIMITIVES`, the dispatch table of a device picks the highest-priority backend that provides it
(so the NumPy reference fills in whatever a faster backend lacks). Users override the choice:

    MINIGRAD_BACKEND=numpy python train.py           # environment: prefer one backend everywhere
    with minigrad.backend.use("numpy"): ...           # a whole backend, inside a block
    with minigrad.backend.use(matmul="numpy"): ...    # one primitive, inside a block

A preferred backend runs every primitive it provides; the others keep their default choice.
`dispatch(device)` returns the table as an object whose attributes are the chosen functions; tables are
rebuilt only when registrations or overrides change, so a lookup costs one attribute access.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import warnings
from types import ModuleType, SimpleNamespace

from minigrad.backend import numpy_ref
from minigrad.backend.base import DEVICE_BOUND, PRIMITIVES
from minigrad.device import Device

__all__ = ["register", "unregister", "dispatch", "use", "available", "selected", "PRIMITIVES", "cuda_runtime_error",
           "register_cuda"]

_registry: dict[str, list[tuple[int, str, ModuleType]]] = {}  # device type -> [(priority, name, module)]
_overrides: list[dict[str, str]] = []  # stack of {primitive or "*": backend name}, innermost last
_tables: dict[str, "DispatchTable"] = {}


class DispatchTable:
    """The chosen implementation of every primitive for one device, as attributes."""

    def __init__(self, device_type: str, choice: dict[str, tuple[str, ModuleType]]):
        self.device_type = device_type
        self.chosen_backend = {prim: name for prim, (name, _) in choice.items()}
        for prim, (_, module) in choice.items():
            setattr(self, prim, getattr(module, prim))

    def __repr__(self) -> str:
        return f"<DispatchTable {self.device_type}: {sorted(set(self.chosen_backend.values()))}>"


def register(name: str, device_type: str, module: ModuleType, priority: int) -> None:
    """Make `module` (a backend exporting primitives by name) available on `device_type`."""
    entries = [e for e in _registry.get(device_type, []) if e[1] != name]
    entries.append((priority, name, module))
    entries.sort(key=lambda e: -e[0])
    _registry[device_type] = entries
    _tables.clear()


def unregister(name: str, device_type: str) -> None:
    """Remove backend `name` from `device_type` (tests that registered an emulated GPU)."""
    _registry[device_type] = [e for e in _registry.get(device_type, []) if e[1] != name]
    if not _registry[device_type]:
        del _registry[device_type]
    _tables.clear()


def available(device_type: str = "cpu") -> list[str]:
    """Names of the backends registered for a device type, fastest (highest priority) first (for 'cuda',
    after trying to load the CUDA backend)."""
    if device_type == "cuda" and device_type not in _registry:
        _load_cuda()
    return [name for _, name, _ in _registry.get(device_type, [])]


def _preferences() -> list[dict[str, str]]:
    env = os.environ.get("MINIGRAD_BACKEND", "").strip()
    if env:
        _check_names(env, {}, source="MINIGRAD_BACKEND")
    return ([{"*": env}] if env else []) + _overrides


def _build(device_type: str) -> DispatchTable:
    if device_type == "cuda" and device_type not in _registry:
        _load_cuda()
    entries = _registry.get(device_type)
    if not entries:
        why = f": {_cuda_error}" if device_type == "cuda" and _cuda_error else ""
        raise RuntimeError(f"no backend is available for device '{device_type}'{why}")
    modules = {name: module for _, name, module in entries}
    choice = {}
    for prim in PRIMITIVES:
        providers = [(name, module) for _, name, module in entries if hasattr(module, prim)]
        if not providers:  # only while a primitive is being added; tests require numpy_ref to have all
            continue
        pick = providers[0]
        for prefs in _preferences():  # later (inner) preferences win
            wanted = prefs.get(prim, prefs.get("*"))
            if wanted in modules and hasattr(modules[wanted], prim):
                pick = (wanted, modules[wanted])
        choice[prim] = pick
    return DispatchTable(device_type, choice)


def dispatch(device) -> DispatchTable:
    """The dispatch table for a device (a `Device` or a string such as 'cpu')."""
    device_type = device.type if isinstance(device, Device) else Device(device).type
    table = _tables.get(device_type)
    if table is None:
        table = _tables[device_type] = _build(device_type)
    return table


def selected(primitive: str, device="cpu") -> str:
    """The name of the backend that runs `primitive` on `device` right now."""
    if primitive not in PRIMITIVES:
        raise ValueError(f"unknown primitive {primitive!r}")
    return dispatch(device).chosen_backend[primitive]


def _check_names(backend: str | None, primitives: dict[str, str], source: str = "use()") -> None:
    known = {name for entries in _registry.values() for _, name, _ in entries}
    for name in ([backend] if backend else []) + list(primitives.values()):
        if name not in known:
            raise ValueError(f"{source} names unknown backend {name!r}; available: {sorted(known)} "
                             f"(a backend whose package or build is missing is not registered)")
    for prim in primitives:
        if prim not in PRIMITIVES:
            raise ValueError(f"unknown primitive {prim!r}")


@contextlib.contextmanager
def use(backend: str | None = None, **primitives: str):
    """Prefer `backend` for every primitive it provides, and/or a named backend per primitive:
    `with use("numpy"):`, `with use(matmul="cpp"):`. Not thread-safe: it changes global tables."""
    _check_names(backend, primitives)
    prefs = dict(primitives)
    if backend:
        prefs["*"] = backend
    _overrides.append(prefs)
    _tables.clear()
    try:
        yield
    finally:
        _overrides.remove(prefs)
        _tables.clear()


register("numpy", "cpu", numpy_ref, priority=0)

try:  # the C++ kernels, when setup.py could build them
    from minigrad.backend import cpp
except ImportError as e:
    why = ("minigrad._C was not built when minigrad was installed" if importlib.util.find_spec("minigrad._C") is None
           else f"minigrad._C does not load: {e}")
    warnings.warn(f"minigrad's C++ extension is not available ({why}): CPU primitives run on the Numba "
                  "kernels where Numba is installed, else on the NumPy reference backend (slower). Reinstall "
                  "with a C++17 compiler with OpenMP (g++) to build it.", RuntimeWarning, stacklevel=2)
else:
    register("cpp", "cpu", cpp, priority=10)

if importlib.util.find_spec("numba") is not None:  # the Numba kernels, with the optional `numba` extra
    try:
        import numba  # noqa: F401  (about 0.2 s; the kernels themselves compile on first use)
    except ImportError as e:  # installed but unusable, e.g. built for another NumPy
        warnings.warn(f"Numba is installed but does not import ({e}): CPU primitives run without the Numba "
                      "kernels.", RuntimeWarning, stacklevel=2)
    else:
        from minigrad.backend import numba_cpu
        register("numba", "cpu", numba_cpu, priority=5)


# ---- the GPU: registered on first use of the 'cuda' device (importing CuPy costs ~0.3 s) ----------------
_cuda_error: str | None = None  # why there is no CUDA backend, once a load was tried and failed


_cuda_lock = threading.Lock()  # one load at a time, when threads reach 'cuda' first together


def register_cuda(runtime) -> None:
    """Run the 'cuda' device on `runtime` (cuda_runtime.py's interface): the CUDA backend's kernels, with
    numpy_ref on the device arrays for every other primitive but the DEVICE_BOUND ones (numpy_ref's would
    make host arrays), also under use("numpy"). Both enter the registry in one assignment, so no dispatch
    table is ever built from half of them."""
    from minigrad.backend import cuda

    cuda.use_runtime(runtime)
    on_device_arrays = SimpleNamespace(**{p: getattr(numpy_ref, p) for p in PRIMITIVES if p not in DEVICE_BOUND})
    _registry["cuda"] = [(10, "cuda", cuda), (0, "numpy", on_device_arrays)]
    _tables.clear()


def _load_cuda() -> None:
    global _cuda_error
    with _cuda_lock:
        if _cuda_error is not None or "cuda" in _registry:
            return
        from minigrad.backend import cuda_runtime

        cupy, why = cuda_runtime.probe()
        if cupy is None:
            _cuda_error = why
            return
        try:
            runtime = cuda_runtime.CupyRuntime(cupy)
        except Exception as e:  # a device that CuPy lists but cannot open, kernels not found, ...
            _cuda_error = f"CuPy sees a GPU but cannot use it ({type(e).__name__}: {e})"
            return
        register_cuda(runtime)


def cuda_runtime_error() -> str | None:
    """None when the 'cuda' device has a backend (loading it if needed), else why not."""
    if "cuda" not in _registry:
        _load_cuda()
    return None if "cuda" in _registry else _cuda_error
