"""Shared pieces of the gradient-check tables: the Case record and helpers to build float64 leaves.

tests/test_gradcheck.py holds the table of core ops; a family of ops added later (nn layers, losses,
...) puts its rows in a `tests/gradcases_<family>.py` module defining `CASES`, which test_gradcheck.py
collects, so every registered Function stays covered by the one coverage test.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import arrays, shapes


def leaf(values, requires_grad: bool = True) -> mg.Tensor:
    """A float64 tensor holding a copy of `values`."""
    return mg.tensor(np.asarray(values, dtype=np.float64), dtype=mg.float64, requires_grad=requires_grad)


def away_from(values: np.ndarray, points, gap: float) -> np.ndarray:
    """`values` with every element closer than `gap` to one of `points` pushed out to point +- gap."""
    values = np.array(values, dtype=np.float64)
    for p in points:
        near = np.abs(values - p) < gap
        values[near] = p + np.where(values[near] >= p, gap, -gap)
    return values


def derive_shape(draw, full: tuple) -> tuple:
    """A shape that broadcasts to `full`: leading dims dropped, some sizes set to 1."""
    start = draw(st.integers(0, len(full)))
    return tuple(1 if draw(st.booleans()) else n for n in full[start:])


def reduced_count(shape: tuple, dim) -> int:
    """How many elements a reduction over `dim` (None, int or tuple) combines."""
    if dim is None or not shape:
        return math.prod(shape)
    axes = {d % len(shape) for d in ((dim,) if isinstance(dim, int) else dim)}
    return math.prod(shape[a] for a in axes)


SHAPE = shapes(0, 3, 1, 3)  # up to 27 elements
NONEMPTY_SHAPE = shapes(1, 3, 1, 3)


def draw_leaf(draw, shape, **array_kw) -> mg.Tensor:
    return leaf(draw(arrays(shape, **array_kw)))


class Case(NamedTuple):
    name: str
    build: Callable  # build(draw) -> tuple of arguments for fn
    fn: Callable  # the function under test
    marks: tuple = ()

    def strategy(self):
        return st.composite(lambda draw: self.build(draw))()


def case_decorator(cases: list):
    """`case = case_decorator(CASES)` gives the decorator `@case(name, fn)`, which appends a Case whose
    argument builder is the decorated function."""
    def case(name: str, fn: Callable, marks=()):
        def register(build):
            cases.append(Case(name, build, fn, tuple(marks)))
            return build
        return register
    return case
