"""Backend selection: the reference provides every primitive, dispatch picks per primitive by priority,
and the MINIGRAD_BACKEND variable and `use(...)` override the choice (and restore it afterwards)."""
from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

import minigrad as mg
import minigrad.backend as backend
from minigrad.backend import numpy_ref
from minigrad.backend.base import PRIMITIVES, missing_primitives


@pytest.fixture
def clean_backend(monkeypatch):
    """No MINIGRAD_BACKEND from the environment; the registry, overrides and tables restored afterwards."""
    monkeypatch.delenv("MINIGRAD_BACKEND", raising=False)
    saved_registry = {k: list(v) for k, v in backend._registry.items()}
    saved_overrides = list(backend._overrides)
    backend._tables.clear()
    yield
    backend._registry.clear()
    backend._registry.update(saved_registry)
    backend._overrides[:] = saved_overrides
    backend._tables.clear()


@pytest.fixture
def fake(clean_backend):
    """A backend providing only `matmul`, which records its calls and delegates to the reference,
    registered on the CPU above every other backend."""
    calls = []
    module = types.ModuleType("fake_backend")

    def matmul(a, b):
        calls.append((a.shape, b.shape))
        return numpy_ref.matmul(a, b)

    module.matmul = matmul
    top = max((p for p, _, _ in backend._registry.get("cpu", [])), default=0)
    backend.register("fake", "cpu", module, priority=top + 100)
    return types.SimpleNamespace(module=module, calls=calls)


def _matmul_result():
    a = mg.tensor(np.arange(6.0).reshape(2, 3))
    b = mg.tensor(np.arange(12.0).reshape(3, 4))
    out = a @ b
    np.testing.assert_array_equal(out.numpy(), np.arange(6.0).reshape(2, 3) @ np.arange(12.0).reshape(3, 4))
    return out


# ---- the reference and the default choice ------------------------------------------------------------

def test_numpy_ref_provides_every_primitive():
    assert missing_primitives(numpy_ref) == []
    assert all(callable(getattr(numpy_ref, name)) for name in PRIMITIVES)


def test_missing_primitives_lists_what_a_module_lacks():
    module = types.ModuleType("partial")
    module.matmul = numpy_ref.matmul
    module.add = 3  # not callable: does not count
    missing = missing_primitives(module)
    assert "matmul" not in missing and "add" in missing
    assert len(missing) == len(PRIMITIVES) - 1 and missing == sorted(missing)


def test_dispatch_cpu_picks_numpy_by_default(clean_backend):
    assert "numpy" in backend.available("cpu")
    table = backend.dispatch("cpu")
    assert table is backend.dispatch(mg.device("cpu"))  # cached, same for a Device and its string
    assert set(table.chosen_backend) == set(PRIMITIVES)
    entries = backend._registry["cpu"]
    for prim in PRIMITIVES:
        # the highest-priority registered backend that provides the primitive
        expected = next(name for _, name, module in entries if hasattr(module, prim))
        assert table.chosen_backend[prim] == expected == backend.selected(prim)
    if backend.available("cpu") == ["numpy"]:
        assert set(table.chosen_backend.values()) == {"numpy"}
        assert table.matmul is numpy_ref.matmul and table.softmax_forward is numpy_ref.softmax_forward


def test_use_numpy_selects_numpy_everywhere_and_restores(clean_backend):
    before = dict(backend.dispatch("cpu").chosen_backend)
    with backend.use("numpy"):
        table = backend.dispatch("cpu")
        assert set(table.chosen_backend.values()) == {"numpy"}
        assert all(getattr(table, p) is getattr(numpy_ref, p) for p in PRIMITIVES)
        _matmul_result()
    assert backend._overrides == []
    assert backend.dispatch("cpu").chosen_backend == before


def test_use_per_primitive_and_restores(clean_backend):
    before = dict(backend.dispatch("cpu").chosen_backend)
    with backend.use(matmul="numpy"):
        assert backend.selected("matmul") == "numpy"
        assert backend.dispatch("cpu").matmul is numpy_ref.matmul
        _matmul_result()
    assert backend._overrides == []
    assert backend.dispatch("cpu").chosen_backend == before


def test_use_restores_when_the_block_raises(clean_backend):
    with pytest.raises(KeyError):
        with backend.use("numpy", matmul="numpy"):
            raise KeyError("boom")
    assert backend._overrides == []


@pytest.mark.parametrize("call, pattern", [
    (lambda: backend.use("no-such-backend"), "unknown backend 'no-such-backend'"),
    (lambda: backend.use(matmul="no-such-backend"), "unknown backend 'no-such-backend'"),
    (lambda: backend.use(no_such_primitive="numpy"), "unknown primitive 'no_such_primitive'"),
])
def test_unknown_names_raise_value_error(clean_backend, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        with call():
            pass
    assert backend._overrides == []


def test_selected_unknown_primitive_raises(clean_backend):
    with pytest.raises(ValueError, match="unknown primitive 'nope'"):
        backend.selected("nope")


def test_no_backend_for_a_device_type(clean_backend):
    backend._registry.pop("cuda", None)
    with pytest.raises(RuntimeError, match="cuda"):
        backend.dispatch("cuda")


# ---- a registered backend, and the overrides that beat it ---------------------------------------------

def test_registered_backend_runs_what_it_provides(fake):
    assert backend.available("cpu")[0] == "fake"
    assert backend.selected("matmul") == "fake"
    # what the fake does not provide keeps its default (the reference, or minigrad._C's softmax)
    assert backend.selected("add") == "numpy" and backend.selected("softmax_forward") != "fake"
    _matmul_result()
    assert fake.calls == [((2, 3), (3, 4))]
    mg.ones(2) + mg.ones(2)  # other primitives do not go through the fake module
    assert len(fake.calls) == 1


def test_registered_backend_runs_matmul_in_backward_too(fake):
    a = mg.ones(2, 3, requires_grad=True)
    b = mg.ones(3, 4, requires_grad=True)
    (a @ b).sum().backward()
    assert len(fake.calls) == 3  # forward, dA = dC B^T, dB = A^T dC
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 4.0))


def test_use_numpy_overrides_a_registered_backend(fake):
    with backend.use("numpy"):
        assert backend.selected("matmul") == "numpy"
        _matmul_result()
    assert fake.calls == []
    with backend.use(matmul="numpy"):
        _matmul_result()
    assert fake.calls == []
    assert backend.selected("matmul") == "fake"
    _matmul_result()
    assert len(fake.calls) == 1


def test_inner_use_wins_over_outer(fake):
    with backend.use("numpy"):
        with backend.use(matmul="fake"):
            assert backend.selected("matmul") == "fake"
        assert backend.selected("matmul") == "numpy"


def test_use_of_a_backend_that_lacks_a_primitive_keeps_the_default(fake):
    with backend.use("fake"):
        assert backend.selected("matmul") == "fake"
        assert backend.selected("add") == "numpy"
    with backend.use(add="fake"):  # fake has no `add`: the default stays
        assert backend.selected("add") == "numpy"


def test_register_replaces_an_entry_of_the_same_name(fake):
    n = len(backend.available("cpu"))
    backend.register("fake", "cpu", fake.module, priority=-5)
    assert len(backend.available("cpu")) == n
    assert backend.available("cpu")[-1] == "fake"
    assert backend.selected("matmul") != "fake"


def test_env_var_is_honoured(fake, monkeypatch):
    assert backend.selected("matmul") == "fake"
    monkeypatch.setenv("MINIGRAD_BACKEND", "numpy")
    backend._tables.clear()  # the variable is read when the tables are built
    assert backend.selected("matmul") == "numpy"
    _matmul_result()
    assert fake.calls == []
    with backend.use(matmul="fake"):  # an explicit use() beats the environment
        assert backend.selected("matmul") == "fake"
    monkeypatch.setenv("MINIGRAD_BACKEND", "fake")
    backend._tables.clear()
    assert backend.selected("matmul") == "fake" and backend.selected("add") == "numpy"


def test_env_var_naming_an_unknown_backend_fails_clearly(clean_backend, monkeypatch):
    monkeypatch.setenv("MINIGRAD_BACKEND", "no-such-backend")
    backend._tables.clear()
    with pytest.raises(ValueError, match="MINIGRAD_BACKEND names unknown backend 'no-such-backend'"):
        mg.ones(2) + 1


def test_env_var_in_a_fresh_process():
    code = (
        "import types, minigrad as mg, minigrad.backend as B\n"
        "from minigrad.backend import numpy_ref\n"
        "m = types.ModuleType('fast'); m.matmul = numpy_ref.matmul\n"
        "B.register('fast', 'cpu', m, priority=100)\n"
        "print(B.selected('matmul'), B.selected('add'))\n"
    )
    env = dict(os.environ)
    results = {}
    for value in ("numpy", None):
        if value is None:
            env.pop("MINIGRAD_BACKEND", None)
        else:
            env["MINIGRAD_BACKEND"] = value
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(mg.__file__))))
        assert proc.returncode == 0, proc.stderr
        results[value] = proc.stdout.split()
    assert results["numpy"] == ["numpy", "numpy"]
    assert results[None] == ["fast", "numpy"]
