"""What the C++ kernels' tests share (import it after `pytest.importorskip("minigrad._C", ...)`):

- `simd_kernel` / `gemm_kernel`: fixtures that run a test once per instruction set this CPU supports, for the
  SIMD row kernels (softmax, attention, LSTM / GRU steps, optimizer steps: `set_simd_kernel`) and for the GEMM
  micro-kernel (matmul, conv2d: `set_gemm_kernel`), putting the previous choice back afterwards;
- `assert_cpp_is_default`: the C++ backend is what the CPU dispatch table picks for some primitives.
"""
from __future__ import annotations

import pytest

from minigrad import _C, backend


def _each(kernels, current, choose):
    @pytest.fixture(params=kernels())
    def fixture(request):
        before = current()
        choose(request.param)
        yield request.param
        choose(before)
    return fixture


simd_kernel = _each(_C.simd_kernels, _C.simd_kernel, _C.set_simd_kernel)
gemm_kernel = _each(_C.gemm_kernels, _C.gemm_kernel, _C.set_gemm_kernel)


def assert_cpp_is_default(monkeypatch, primitives):
    """With no MINIGRAD_BACKEND in the environment, the CPU table picks "cpp" for every one of `primitives`."""
    monkeypatch.delenv("MINIGRAD_BACKEND", raising=False)
    backend._tables.clear()  # the variable is read when the tables are built
    try:
        assert {backend.selected(name) for name in primitives} == {"cpp"}
    finally:
        backend._tables.clear()
