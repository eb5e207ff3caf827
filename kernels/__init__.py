"""CUDA C sources of minigrad's GPU kernels, one file per family (softmax.cu, layernorm.cu, ...).

This directory is installed as the package `minigrad.kernels` (setup.py: package_dir), with the *.cu
files and the shared device helpers of common.cuh (included by the .cu files: `#include "common.cuh"`)
as package data; the CUDA backend reads them with
`importlib.resources.files("minigrad.kernels").joinpath("softmax.cu").read_text()` and compiles them
with NVRTC (CuPy RawModule), which must be told where common.cuh is:
`cupy.RawModule(code=source, options=("--include-path=" + kernels_dir,))` with
`kernels_dir = str(importlib.resources.files("minigrad.kernels"))` (a real directory for a regular
install; under a zip import use `importlib.resources.as_file`). Without it NVRTC fails with
`cannot open source file "common.cuh"`. (nvcc: `-I kernels`.) common.cuh is not a kernel file: it has
no entry points and is never compiled alone. There is no Python code here: this file only makes the
directory a regular package, which the editable install (`pip install -e .`) needs to find it.
"""
