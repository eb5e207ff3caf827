"""Build script: package discovery, package data and the C++ extension minigrad._C.

Project metadata and dependencies live in pyproject.toml; this file only says what goes into
the wheel.

minigrad._C is built from cpp/*.cpp (C++17, OpenMP) with flags every x86-64 machine accepts:
no -march=native; the SIMD kernels carry function-level target attributes and are picked at run
time from what the CPU supports. The extension is optional: where it cannot be built (no C++
compiler, no OpenMP), the install still succeeds and minigrad runs on its NumPy reference
backend, saying so once when it is imported.
"""
import glob
import sys

from setuptools import find_packages, setup
from setuptools.errors import BaseError, CCompilerError

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError:  # only without the build requirements of pyproject.toml (a bare `python setup.py`)
    Pybind11Extension = build_ext = None


def _warn_no_extension(reason):
    bar = "=" * 78
    print(f"\n{bar}\nWARNING: the C++ extension minigrad._C was not built ({reason}).\n"
          "minigrad will work, on its NumPy reference backend (slower). To get the C++ kernels,\n"
          "install a C++17 compiler with OpenMP (e.g. g++) and reinstall.\n"
          f"{bar}\n", file=sys.stderr)


ext_modules, cmdclass = [], {}
if Pybind11Extension is None:
    _warn_no_extension("pybind11 is not installed")
else:
    class OptionalBuildExt(build_ext):
        """build_ext that warns instead of failing when the extension cannot be compiled."""

        def run(self):
            try:
                super().run()
            except (BaseError, CCompilerError, OSError) as e:  # e.g. no compiler found at all
                _warn_no_extension(e)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except (BaseError, CCompilerError, OSError) as e:
                _warn_no_extension(e)
                self.extensions.remove(ext)  # nothing to copy into the source tree afterwards

    ext_modules = [Pybind11Extension(
        "minigrad._C",
        sorted(glob.glob("cpp/*.cpp")),
        depends=sorted(glob.glob("cpp/*.h")),
        cxx_std=17,
        # -fno-math-errno: no kernel reads errno, and without it a sqrt cannot be vectorized (optim.cpp)
        extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno"],
        extra_link_args=["-fopenmp"],
    )]
    cmdclass = {"build_ext": OptionalBuildExt}

setup(
    # minigrad.kernels is the top-level kernels/ directory (CUDA C sources, no Python): it is installed
    # inside the package so that the CUDA backend finds its .cu files wherever minigrad is installed.
    packages=find_packages(include=["minigrad", "minigrad.*"]) + ["minigrad.kernels"],
    package_dir={"minigrad.kernels": "kernels"},
    # Data files shipped inside the package (paths relative to each package's directory), e.g. bundled
    # tokenizer vocabularies and small datasets under minigrad/data/, and the CUDA sources.
    package_data={"minigrad": ["data/*.txt", "data/*.json"], "minigrad.kernels": ["*.cu", "*.cuh"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
