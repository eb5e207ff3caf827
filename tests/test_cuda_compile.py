"""Every kernels/*.cu compiles with NVRTC, as CuPy's RawModule will compile it on a GPU machine.

No GPU or driver is needed: NVRTC is a library (libnvrtc) that turns CUDA C++ into PTX (a virtual ISA,
JIT-compiled by the driver) or, given a real architecture, into a CUBIN (running ptxas, which checks
registers and shared memory). It is reached through CuPy's binding, cupy_backends.cuda.libs.nvrtc;
CuPy finds libnvrtc.so.13 in the nvidia-cuda-nvrtc wheel (site-packages/nvidia/cu13/lib) through
cuda-pathfinder. Both are in the `test` extra: `pip install -e ".[test]"`. nvidia-cuda-nvrtc is pinned
to 13.0.*, the CUDA of the GPU machines' driver: PTX from a newer NVRTC would not load on that driver.

The shared device helpers are in kernels/common.cuh, which the .cu files include (`#include
"common.cuh"`): it is compiled as part of each of them (never alone: it has no entry points), with the
kernels directory on the include path, `--include-path=<kernels>` for NVRTC (the option the CUDA backend
must give RawModule, see kernels/__init__.py) and `-I kernels` for nvcc.

Checks per file, with the options CuPy's RawModule passes: PTX for compute_80 (A100) and compute_90
(H100) and a CUBIN for sm_90 (ptxas: registers, shared memory) compile without errors (the NVRTC log is
printed on failure), the PTX has entry points, all with unmangled (extern "C") names, and every float32
entry point has its float64 twin (the 16-bit kernels, _f16 / _bf16, have no such rule). The kernels on
the tensor-core primitives of kernels/mma.cuh are also compiled with its portable twin of the inline PTX
(-DMG_MMA_PORTABLE, what the CPU emulator runs), and their default PTX must hold the tensor-core
instructions.

Where NVRTC is not available but the CUDA toolkit's nvcc is, the same sources are compiled to PTX with
nvcc instead (a fallback with a skip of the NVRTC tests naming the missing package).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minigrad.backend.cuda_runtime import module_source

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
SOURCES = sorted(KERNELS.glob("*.cu"))  # the kernel files; not the headers (*.cuh), which they include
HEADERS = sorted(KERNELS.glob("*.cuh"))
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
IDS = [p.name for p in SOURCES]
ARCHS = ["compute_80", "compute_90", "sm_90"]
# The options CuPy's RawModule adds (cupy/cuda/compiler.py) besides the architecture, which it gives as
# -arch=sm_XX of the device (a CUBIN) unless told to use PTX.
CUPY_OPTIONS = ["-ftz=true", "--device-as-default-execution-space"]
# ... and the one the CUDA backend adds for kernels/common.cuh.
INCLUDE_OPTIONS = [f"--include-path={KERNELS}"]
ENTRY_RE = re.compile(r"^\s*\.(?:visible\s+)?\.entry\s+(\w+)", re.MULTILINE)


def _nvrtc():
    """cupy_backends' NVRTC binding with libnvrtc loaded, or the reason it is not available."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as e:
        return None, f"needs the cupy-cuda13x package (CuPy's NVRTC binding) to compile kernels/*.cu: {e}"
    try:
        nvrtc.getVersion()  # loads libnvrtc.so: raises when it is nowhere to be found
    except Exception as e:  # cuda.pathfinder's DynamicLibNotFoundError (a RuntimeError), or an NVRTCError
        return None, ("needs the nvidia-cuda-nvrtc==13.0.* package (libnvrtc.so.13, found by CuPy through "
                      f"cuda-pathfinder) to compile kernels/*.cu: {type(e).__name__}: {str(e)[:300]}")
    return nvrtc, None


NVRTC, NVRTC_MISSING = _nvrtc()


def nvrtc_compile(source: Path, arch: str, extra_options=()) -> bytes:
    """PTX (compute_XX) or CUBIN (sm_XX) of `source`, as the CUDA runtime gives it to RawModule; fails the test
    with NVRTC's log."""
    nvrtc = NVRTC
    prog = nvrtc.createProgram(module_source(str(source.parent), source.stem), source.name, [], [])
    try:
        error = None
        try:
            nvrtc.compileProgram(prog, [*CUPY_OPTIONS, *INCLUDE_OPTIONS, f"--gpu-architecture={arch}",
                                        *extra_options])
        except nvrtc.NVRTCError as e:
            error = e
        log = nvrtc.getProgramLog(prog).strip()
        if error is not None:
            pytest.fail(f"NVRTC {nvrtc.getVersion()} cannot compile {source.name} for {arch}: {error}\n{log}",
                        pytrace=False)
        if log:
            print(f"NVRTC log for {source.name} ({arch}):\n{log}")
        return nvrtc.getCUBIN(prog) if arch.startswith("sm_") else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)


def check_entry_points(name: str, ptx: str):
    entries = ENTRY_RE.findall(ptx)
    assert entries, f"{name}: no __global__ entry points in the PTX"
    mangled = [e for e in entries if e.startswith("_Z")]
    assert not mangled, f"{name}: entry points without extern \"C\" (mangled names): {mangled}"
    missing = [e for e in entries if e.endswith("_f32") and e[:-4] + "_f64" not in entries]
    assert not missing, f"{name}: float32 entry points without a float64 twin: {missing}"


def test_a_header_change_changes_the_compiled_text(tmp_path):
    """CuPy's kernel cache is keyed by the source text RawModule gets: module_source puts the headers'
    digest in it, so an edited common.cuh cannot load a binary built from the old one."""
    for f in SOURCES[:1] + HEADERS:
        shutil.copy(f, tmp_path / f.name)
    family = SOURCES[0].stem
    before = module_source(str(tmp_path), family)
    assert before.endswith(SOURCES[0].read_text())
    (tmp_path / "common.cuh").write_text((tmp_path / "common.cuh").read_text() + "\n// edited\n")
    assert module_source(str(tmp_path), family) != before


def test_there_are_kernels():
    assert SOURCES, "no kernels/*.cu"


def test_headers_are_included_and_shipped():
    """Every kernels/*.cuh is included by a .cu file (so the tests above compile it, as part of that
    file), every quoted include names a file in kernels/, and setup.py ships the headers as package data."""
    included = {name for cu in SOURCES for name in INCLUDE_RE.findall(cu.read_text())}
    assert included <= {h.name for h in HEADERS}, f"kernels/*.cu include missing files: {included}"
    unused = [h.name for h in HEADERS if h.name not in included]
    assert not unused, f"headers that no kernels/*.cu includes (so no test compiles them): {unused}"
    assert '"*.cuh"' in (ROOT / "setup.py").read_text(), "setup.py: package_data must ship kernels/*.cuh"


@pytest.mark.skipif(NVRTC is None, reason=str(NVRTC_MISSING))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_nvrtc_compiles(source, arch):
    out = nvrtc_compile(source, arch)
    assert out, f"NVRTC returned an empty {'CUBIN' if arch.startswith('sm_') else 'PTX'} for {source.name}"
    if arch.startswith("compute_"):
        ptx = out.decode()
        assert f".target sm_{arch.split('_')[1]}" in ptx
        check_entry_points(source.name, ptx)


# The kernels built on kernels/mma.cuh: its tensor-core instructions are inline PTX, with a portable twin
# (warp shuffles, plain loads) that the CPU emulator runs and that -DMG_MMA_PORTABLE selects on the GPU.
MMA_SOURCES = [p for p in SOURCES if "mma.cuh" in INCLUDE_RE.findall(p.read_text())]
TENSOR_CORE_PTX = ["mma.sync.aligned.m16n8k16.row.col.f32", "ldmatrix.sync.aligned.m8n8.x4", "cp.async.cg.shared.global",
                   "cp.async.wait_group"]


@pytest.mark.skipif(NVRTC is None, reason=str(NVRTC_MISSING))
@pytest.mark.parametrize("source", MMA_SOURCES, ids=[p.name for p in MMA_SOURCES])
def test_nvrtc_tensor_core_paths(source):
    """By default the PTX has the tensor-core instructions; with MG_MMA_PORTABLE it has none of them
    (warp shuffles instead) and still compiles, to a CUBIN too: the portable twin stays valid CUDA, so a
    GPU test can compare the two paths."""
    ptx = nvrtc_compile(source, "compute_80").decode()
    missing = [i for i in TENSOR_CORE_PTX if i not in ptx]
    assert not missing, f"{source.name}: the PTX lacks {missing}"
    portable = nvrtc_compile(source, "compute_80", ["-DMG_MMA_PORTABLE"]).decode()
    present = [i for i in TENSOR_CORE_PTX if i in portable]
    assert not present and "shfl.sync" in portable, f"{source.name} with MG_MMA_PORTABLE: {present}"
    check_entry_points(source.name, portable)
    assert nvrtc_compile(source, "sm_90", ["-DMG_MMA_PORTABLE"])


@pytest.mark.skipif(NVRTC is not None, reason="compiled with NVRTC (test_nvrtc_compiles)")
@pytest.mark.skipif(shutil.which("nvcc") is None, reason=f"no NVRTC ({NVRTC_MISSING}) and no nvcc on PATH")
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_nvcc_compiles(source, tmp_path):
    """The fallback without NVRTC: the toolkit's nvcc, to PTX for compute_80."""
    ptx = tmp_path / (source.stem + ".ptx")
    r = subprocess.run(["nvcc", "--ptx", "-arch=compute_80", "-I", str(KERNELS), "-o", str(ptx), str(source)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"nvcc cannot compile {source.name}:\n{r.stderr}"
    check_entry_points(source.name, ptx.read_text())
