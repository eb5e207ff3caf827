"""CUDA C sources of minigrad's GPU kernels, one file per family (softmax.cu, layernorm.cu, ...).

This directory is installed as the package `minigrad.kernels` (setup.py: package_dir), with the *.cu
files as package data; the CUDA backend reads them with
`importlib.resources.files("minigrad.kernels").joinpath("softmax.cu").read_text()` and compiles them
with NVRTC (CuPy RawModule). There is no Python code here: this file only makes the directory a regular
package, which the editable install (`pip install -e .`) needs to find it.
"""
