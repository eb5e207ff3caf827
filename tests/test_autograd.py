"""The autograd engine: graph recording, backward order and accumulation, grad mode, the version counter
that guards saved tensors against in-place writes, memory release, and the DOT rendering of a graph.

Expected gradients are derived by hand in each test (noted in comments) or computed with NumPy.
"""
from __future__ import annotations

import gc
import re
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import minigrad as mg
from minigrad.autograd import Function


def leaf(values, dtype=mg.float64):
    return mg.tensor(values, dtype=dtype, requires_grad=True)


# ---- the dynamic graph ---------------------------------------------------------------------------

def test_graph_is_recorded_per_call_and_follows_python_control_flow():
    x = leaf([1.0, -2.0, 3.0])
    for branch in (True, False):
        y = (x * 2.0) if branch else x.exp()
        expected_fn = "MulBackward" if branch else "ExpBackward"
        assert y.grad_fn is not None and y.grad_fn.name == expected_fn
        assert y.requires_grad and not y.is_leaf
    # Only the branch that ran contributes: d/dx sum(exp(x)) = exp(x).
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, -2.0, 3.0]), rtol=1e-12)


def test_leaf_and_grad_fn():
    x = leaf([1.0, 2.0])
    c = mg.tensor([3.0, 4.0])
    assert x.is_leaf and x.grad_fn is None
    assert c.is_leaf and c.grad_fn is None and not c.requires_grad
    y = x * c
    assert not y.is_leaf and y.grad_fn.name == "MulBackward"
    z = c * 2.0  # no input requires grad: a leaf, no graph
    assert z.is_leaf and z.grad_fn is None and not z.requires_grad


def test_diamond_graph_exact_gradients():
    # x is used by two branches that meet again: y = sum(x * x + sin(x) * x)
    # dy/dx = 2x + cos(x) * x + sin(x)
    xv = np.array([0.5, -1.25, 2.0])
    x = leaf(xv)
    a = x * x
    b = x.sin() * x
    (a + b).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * xv + np.cos(xv) * xv + np.sin(xv), rtol=1e-12)


def test_backward_runs_in_topological_order_on_a_diamond():
    """An interior node with two consumers must run its backward once, after both consumers, with the
    sum of their gradients."""
    calls = []

    class Tag(Function):  # identity op that records when its backward runs
        def forward(self, x, tag):
            self.tag = tag
            return self.backend.astype(x, x.dtype)

        def backward(self, grad):
            calls.append((self.tag, grad.copy()))
            return grad

    try:
        xv = np.array([0.3, -0.7])
        x = leaf(xv)
        u = Tag.apply(x * 2.0, tag="u")          # u = 2x, used by both branches
        a = Tag.apply(u * 3.0, tag="a")          # a = 3u
        b = Tag.apply(u.exp(), tag="b")          # b = e^u
        y = Tag.apply(a * b, tag="y")            # y = 3u e^u
        y.sum().backward()
    finally:
        Function.registry.remove(Tag)  # test-only op: keep the registry of real ops clean

    order = [tag for tag, _ in calls]
    assert sorted(order) == ["a", "b", "u", "y"], "each node's backward must run exactly once"
    assert order[0] == "y" and order[-1] == "u"
    uv = 2 * xv
    # dy/du = 3 e^u + 3u e^u, received by u as the sum of both branches
    np.testing.assert_allclose(dict(calls)["u"], 3 * np.exp(uv) * (1 + uv), rtol=1e-12)
    # dy/dx = 2 * dy/du
    np.testing.assert_allclose(x.grad.numpy(), 6 * np.exp(uv) * (1 + uv), rtol=1e-12)


def test_long_chain_backward_has_no_recursion_limit():
    n = 10_000
    assert n > sys.getrecursionlimit() // 2
    x = leaf(1.5)
    y = x
    for _ in range(n):
        y = y * 1.0001
    y = y + 1.0
    for _ in range(n):
        y = y + 1.0
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** n, rtol=1e-9)
    np.testing.assert_allclose(y.item(), 1.5 * 1.0001 ** n + n + 1, rtol=1e-9)


def test_gradients_accumulate_across_backward_calls():
    xv = np.array([1.0, 2.0, -3.0])
    x = leaf(xv)
    (x * x).sum().backward()          # 2x
    first = x.grad.numpy().copy()
    np.testing.assert_allclose(first, 2 * xv)
    (x * 5.0).sum().backward()        # + 5
    np.testing.assert_allclose(x.grad.numpy(), 2 * xv + 5)
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 5.0))


def test_accumulated_grad_is_a_copy_not_an_alias():
    x = leaf([1.0, 2.0])
    g = mg.tensor([1.0, 1.0], dtype=mg.float64)
    y = x * 1.0
    y.backward(g)
    g.numpy()[:] = 7.0  # changing the seed afterwards must not change x.grad
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_backward_with_gradient_for_non_scalar_output():
    xv = np.array([[1.0, 2.0], [3.0, 4.0]])
    gv = np.array([[0.5, -1.0], [2.0, 0.25]])
    x = leaf(xv)
    y = x * x * 3.0  # dy/dx = 6x elementwise; vjp = 6x * g
    y.backward(mg.tensor(gv))
    np.testing.assert_allclose(x.grad.numpy(), 6 * xv * gv, rtol=1e-12)


def test_backward_on_a_leaf_seeds_its_grad():
    x = leaf(2.0)
    x.backward()
    assert x.grad.item() == 1.0


# ---- retain_graph ----------------------------------------------------------------------------------

def test_retain_graph_allows_a_second_backward():
    xv = np.array([0.2, 0.4])
    x = leaf(xv)
    y = (x.exp() * x).sum()  # d/dx = e^x (1 + x)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(xv) * (1 + xv), rtol=1e-12)


def test_second_backward_without_retain_graph_raises():
    x = leaf([0.2, 0.4])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_second_backward_through_a_shared_freed_subgraph_raises():
    x = leaf([1.0, 2.0])
    h = x.exp()
    h.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (h * 2.0).sum().backward()


# ---- grad mode -------------------------------------------------------------------------------------

def test_no_grad_context_manager():
    x = leaf([1.0, 2.0])
    assert mg.is_grad_enabled()
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2.0
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    np.testing.assert_allclose(y.numpy(), [2.0, 4.0])


def test_no_grad_as_decorator_with_and_without_parentheses():
    x = leaf([1.0])

    @mg.no_grad()
    def with_parens(t):
        return mg.is_grad_enabled(), t * 2.0

    @mg.no_grad
    def without_parens(t):
        return mg.is_grad_enabled(), t * 2.0

    for fn in (with_parens, without_parens):
        enabled, y = fn(x)
        assert enabled is False
        assert not y.requires_grad
        assert mg.is_grad_enabled()
    assert without_parens.__name__ == "without_parens"  # functools.wraps


def test_enable_grad_inside_no_grad_nested():
    x = leaf([1.0])
    with mg.no_grad():
        with mg.enable_grad():
            assert mg.is_grad_enabled()
            y = x * 2.0
            with mg.no_grad():
                assert not mg.is_grad_enabled()
                z = x * 2.0
            assert mg.is_grad_enabled()
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()
    assert y.requires_grad and y.grad_fn is not None
    assert not z.requires_grad


def test_enable_grad_as_decorator():
    x = leaf([3.0])

    @mg.enable_grad()
    def f(t):
        return t * t

    with mg.no_grad():
        y = f(x)
        assert not mg.is_grad_enabled()
    assert y.requires_grad
    y.sum().backward()
    assert x.grad.item() == 6.0


def test_set_grad_enabled_as_function_and_context_manager():
    x = leaf([1.0])
    try:
        mg.set_grad_enabled(False)
        assert not mg.is_grad_enabled()
        assert not (x * 2.0).requires_grad
        mg.set_grad_enabled(True)
        assert mg.is_grad_enabled()
        with mg.set_grad_enabled(False):
            assert not mg.is_grad_enabled()
            with mg.set_grad_enabled(True):
                assert (x * 2.0).requires_grad
            assert not mg.is_grad_enabled()
        assert mg.is_grad_enabled()
    finally:
        mg.set_grad_enabled(True)


def test_set_grad_enabled_as_decorator_leaves_grad_mode_unchanged():
    x = leaf([1.0])
    try:
        @mg.set_grad_enabled(False)
        def f(t):
            return mg.is_grad_enabled(), t * 2.0

        assert mg.is_grad_enabled(), "decorating must not switch grad mode off outside the function"
        enabled, y = f(x)
        assert enabled is False and not y.requires_grad
        assert mg.is_grad_enabled()
    finally:
        mg.set_grad_enabled(True)


def test_grad_mode_is_restored_when_the_block_raises():
    with pytest.raises(KeyError):
        with mg.no_grad():
            raise KeyError("boom")
    assert mg.is_grad_enabled()

    @mg.no_grad
    def fails():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fails()
    assert mg.is_grad_enabled()


# ---- detach, requires_grad_, retain_grad -----------------------------------------------------------

def test_detach_shares_storage_and_has_no_grad():
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    assert np.shares_memory(d.numpy(), y.data)
    with mg.no_grad():
        d[0] = 100.0
    assert y.data[0] == 100.0


def test_requires_grad_():
    x = mg.tensor([1.0, 2.0])
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    with pytest.raises(RuntimeError, match="int64"):
        mg.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="bool"):
        mg.tensor([True]).requires_grad_()
    y = leaf([1.0]) * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_retain_grad_on_non_leaf():
    xv = np.array([1.0, -2.0])
    x = leaf(xv)
    h = x * 3.0
    other = x * 4.0
    h.retain_grad()
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 3.0 * xv)   # d(h^2)/dh = 2h
    assert other.grad is None                                    # not retained
    np.testing.assert_allclose(x.grad.numpy(), 18 * xv + 4.0)   # d(9x^2 + 4x)/dx


# ---- the version counter: in-place writes to saved tensors -------------------------------------------

VERSION_ERROR = r"in-place.*version|version.*in-place"


def test_inplace_on_saved_input_of_mul_is_detected():
    w = leaf([1.0, 2.0])
    a = mg.tensor([3.0, 4.0], dtype=mg.float64)  # saved by Mul for dw = a
    y = (a * w).sum()
    a.mul_(2.0)                                  # allowed: a does not require grad
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_under_no_grad_on_saved_leaf_is_detected():
    w = leaf([1.0, 2.0])
    y = (w * w).sum()
    with mg.no_grad():
        w.add_(1.0)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_on_saved_output_of_exp_is_detected():
    x = leaf([0.1, 0.2])
    out = x.exp()          # Exp saves its output
    y = (out * 2.0).sum()  # Mul by a scalar saves `out` too; Exp's check is reached through backward
    with mg.no_grad():
        out.mul_(3.0)
    with pytest.raises(RuntimeError, match=VERSION_ERROR) as info:
        y.backward()
    assert "Exp" in str(info.value) or "Mul" in str(info.value)


def test_inplace_on_saved_output_of_exp_only_exp_saves_it():
    x = leaf([0.1, 0.2])
    out = x.exp()
    y = (out + 1.0).sum()  # Add saves nothing: only Exp's saved output is at stake
    with mg.no_grad():
        out.zero_()
    with pytest.raises(RuntimeError, match=VERSION_ERROR) as info:
        y.backward()
    assert "Exp" in str(info.value)


def test_inplace_through_an_index_view_of_a_saved_tensor_is_detected():
    w = leaf([1.0, 2.0, 3.0])
    a = mg.tensor([1.0, 2.0, 3.0], dtype=mg.float64)
    y = (a * w).sum()
    view = a[0]
    view.fill_(5.0)  # writes into a's storage
    assert a.data[0] == 5.0
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_through_a_reshape_view_of_a_saved_tensor_is_detected():
    w = leaf([[1.0, 2.0], [3.0, 4.0]])
    a = mg.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=mg.float64)
    y = (a * w).sum()
    a.reshape(4).mul_(2.0)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_on_the_base_of_a_saved_view_is_detected():
    w = leaf([1.0, 2.0])
    a = mg.tensor([1.0, 2.0, 3.0], dtype=mg.float64)
    y = (a[:2] * w).sum()  # Mul saves the view a[:2]
    a.add_(1.0)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_through_setitem_on_a_saved_tensor_is_detected():
    w = leaf([1.0, 2.0])
    a = mg.tensor([1.0, 2.0], dtype=mg.float64)
    y = (a * w).sum()
    a[1] = 0.0
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.backward()


def test_inplace_after_backward_is_fine():
    w = leaf([1.0, 2.0])
    a = mg.tensor([3.0, 4.0], dtype=mg.float64)
    y = (a * w).sum()
    y.backward()
    a.mul_(2.0)
    with mg.no_grad():
        w.sub_(0.1 * w.grad)
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(w.detach().numpy(), [1.0 - 0.3, 2.0 - 0.4])


def test_inplace_on_an_unsaved_tensor_is_fine():
    w = leaf([1.0, 2.0])
    b = mg.tensor([3.0, 4.0], dtype=mg.float64)
    y = ((w + b) * 2.0).sum()  # Add saves neither operand; d/dw = 2
    b.mul_(10.0)
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 2.0])


def test_inplace_on_tensor_requiring_grad_in_grad_mode_raises():
    w = leaf([1.0, 2.0])
    for op in (lambda: w.add_(1.0), lambda: w.mul_(2.0), lambda: w.zero_(), lambda: w.__setitem__(0, 1.0)):
        with pytest.raises(RuntimeError, match="requires grad"):
            op()
    np.testing.assert_allclose(w.detach().numpy(), [1.0, 2.0])  # nothing was written
    with pytest.raises(RuntimeError, match="requires grad"):
        w += 1.0


# ---- memory ----------------------------------------------------------------------------------------

def _mlp_step(x, target, params, lr=0.05):
    w1, b1, w2, b2 = params
    h = (x @ w1 + b1).relu()
    pred = h @ w2 + b2
    diff = pred - target
    loss = (diff * diff).mean()
    loss.backward()
    with mg.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None
    return loss, h


def _mlp():
    mg.manual_seed(0)
    x = mg.randn(16, 8)
    target = mg.randn(16, 1)
    params = [mg.randn(8, 32) * 0.3, mg.zeros(32), mg.randn(32, 1) * 0.3, mg.zeros(1)]
    return x, target, [p.requires_grad_() for p in params]


def test_training_loop_memory_stays_flat():
    x, target, params = _mlp()
    ids = [id(p) for p in params]
    first_loss = None
    tracemalloc.start()
    try:
        for step in range(1, 1001):
            loss, _ = _mlp_step(x, target, params)
            if step == 1:
                first_loss = loss.item()
            if step == 100:
                gc.collect()
                at_100 = tracemalloc.get_traced_memory()[0]
        gc.collect()
        at_1000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert [id(p) for p in params] == ids, "the update must be in place"
    assert all(p.is_leaf and p.requires_grad and p.grad is None for p in params)
    assert loss.item() < first_loss, "training must make progress (the updates really happen)"
    assert at_1000 - at_100 < 1 << 20, f"memory grew by {(at_1000 - at_100) / 2**20:.2f} MiB over 900 steps"


def test_graph_of_a_step_is_freed_by_reference_counting():
    x, target, params = _mlp()
    loss, h = _mlp_step(x, target, params)
    refs = [weakref.ref(h), weakref.ref(loss), weakref.ref(loss.grad_fn)]
    gc.disable()  # no cycle collection: the graph must go as soon as the last reference does
    try:
        del loss, h
        loss, h = _mlp_step(x, target, params)
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()


def test_backward_frees_intermediates_while_the_output_is_alive():
    x = leaf(np.ones(4))
    h = x.exp()
    y = (h * h).sum()
    ref = weakref.ref(h)
    del h
    assert ref() is not None, "the graph keeps h alive before backward"
    y.backward()
    assert ref() is None, "backward must drop the graph behind y"
    assert y.grad_fn is None or y.grad_fn.parents == ()


def test_retain_graph_keeps_intermediates():
    x = leaf(np.ones(4))
    h = x.exp()
    y = (h * h).sum()
    ref = weakref.ref(h)
    del h
    y.backward(retain_graph=True)
    assert ref() is not None


# ---- viz.to_dot --------------------------------------------------------------------------------------

def test_to_dot_renders_the_graph():
    w = leaf([[1.0, 2.0]])
    x = mg.tensor([[3.0], [4.0]], dtype=mg.float64)
    h = w @ x
    loss = (h * h).sum()
    dot = mg.viz.to_dot(loss, names={"weight": w, "loss": loss})
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    for fn in ("MatmulBackward", "MulBackward", "SumBackward"):
        assert fn in dot
    assert "weight" in dot and "loss" in dot
    # One edge from each parent tensor into its Function, one from each Function to its output.
    edges = re.findall(r"^\s*(\w+)\s*->\s*(\w+);", dot, flags=re.M)
    parent_edges = [(a, b) for a, b in edges if a.startswith("t") and b.startswith("f")]
    output_edges = [(a, b) for a, b in edges if a.startswith("f") and b.startswith("t")]
    assert len(output_edges) == 3                    # matmul, mul, sum
    assert len(parent_edges) == 2 + 2 + 1            # matmul(w, x), mul(h, h), sum(p)
    nodes = set(re.findall(r"^\s*(\w+)\s*\[", dot, flags=re.M))
    assert {n for e in edges for n in e} <= nodes, "every edge endpoint is a declared node"
