"""What works with or without the C++ extension: `set_num_threads` / `get_num_threads`, and a process
in which minigrad._C cannot be imported (minigrad warns once and runs on the NumPy reference)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import minigrad as mg


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_sets_every_pool(restore_threads, n):
    mg.set_num_threads(n)
    assert mg.get_num_threads() == n
    try:
        from minigrad import _C
    except ImportError:
        pass
    else:
        assert _C.get_num_threads() == n
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        assert all(p["num_threads"] == n for p in threadpool_info() if p["user_api"] == "blas")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_bad_values(restore_threads, bad):
    with pytest.raises(ValueError, match="set_num_threads expects an int >= 1"):
        mg.set_num_threads(bad)


def test_missing_extension_warns_once_and_uses_numpy():
    """A process where `from minigrad import _C` fails: one RuntimeWarning naming the extension, no
    C++ backend (matmul runs on Numba or the NumPy reference), and matmul and the thread settings work."""
    code = (
        "import sys, warnings\n"
        "sys.modules['minigrad._C'] = None  # makes `from minigrad import _C` raise ImportError\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import minigrad as mg\n"
        "    x = mg.ones(2, 3) @ mg.ones(3, 4)\n"
        "    mg.set_num_threads(1)\n"
        "mine = [w for w in caught if 'C++ extension' in str(w.message)]\n"
        "assert len(mine) == 1 and mine[0].category is RuntimeWarning, [str(w.message) for w in caught]\n"
        "assert 'cpp' not in mg.backend.available('cpu') and mg.backend.selected('matmul') != 'cpp'\n"
        "assert x.numpy().tolist() == [[3.0] * 4] * 2\n"
        "assert mg.get_num_threads() == 1\n"
        "print('ok')\n"
    )
    env = dict(os.environ)
    env.pop("MINIGRAD_BACKEND", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(mg.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_cpp_and_numba_kernels_share_one_openmp_runtime():
    """After C++ and Numba kernels have both run, the process has mapped exactly one OpenMP runtime
    (libgomp): one pool of threads, not two spinning against each other (Linux: /proc/self/maps)."""
    pytest.importorskip("minigrad._C", reason="the C++ extension minigrad._C is not built")
    pytest.importorskip("numba", reason="numba is not installed (the `numba` extra)")
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs Linux's /proc/self/maps to list the loaded libraries")
    code = (
        "import os, minigrad as mg\n"
        "x = mg.randn(256, 256)\n"
        "with mg.backend.use('cpp'):\n"
        "    x @ x\n"
        "with mg.backend.use('numba'):\n"
        "    x.softmax(-1)\n"
        "    x @ x\n"
        "libs = {line.split()[-1] for line in open('/proc/self/maps')}\n"
        "print('\\n'.join(sorted(lib for lib in libs if 'libgomp' in os.path.basename(lib) "
        "or 'libiomp' in os.path.basename(lib))))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(mg.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr
    runtimes = proc.stdout.split()
    assert len(runtimes) == 1, f"OpenMP runtimes loaded: {runtimes}"
