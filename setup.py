"""Build script: package discovery and package data.

Project metadata and dependencies live in pyproject.toml; this file only says what goes into
the wheel.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["minigrad", "minigrad.*"]),
    # Data files shipped inside the package (paths relative to minigrad/), e.g. bundled
    # tokenizer vocabularies and small datasets under minigrad/data/.
    package_data={"minigrad": ["data/*.txt", "data/*.json"]},
    # The pybind11 extension minigrad._C (C++17 sources in cpp/) is added here by a later
    # issue, as ext_modules=[Pybind11Extension("minigrad._C", ...)] with
    # cmdclass={"build_ext": build_ext} from pybind11.setup_helpers (pybind11 is already a
    # build requirement in pyproject.toml).
)
