"""Render an autograd graph as Graphviz DOT text, to see what backward() will walk.

    print(minigrad.viz.to_dot(loss))   # paste into `dot -Tpng` or an online Graphviz viewer

Tensors are boxes (shape, dtype; leaves that require grad are highlighted), ops are ellipses named after
their Function. Call it before backward(): backward frees the graph unless retain_graph=True.
"""
from __future__ import annotations

from minigrad.tensor import Tensor


def _label(t: Tensor, names: dict) -> str:
    name = names.get(id(t), "")
    prefix = name + "\\n" if name else ""  # a DOT line break inside the label
    return f"{prefix}{t.shape} {t.dtype.name}"


def to_dot(root: Tensor, names: dict[str, Tensor] | None = None) -> str:
    """The graph that produced `root` in DOT syntax; `names` labels tensors, e.g. {"w": w, "loss": loss}."""
    labels = {id(t): n for n, t in (names or {}).items()}
    lines = ["digraph minigrad {", "  rankdir=LR;", '  node [fontname="monospace", fontsize=10];']
    seen, stack = set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        style = ', style=filled, fillcolor="#cde8ff"' if t.is_leaf and t.requires_grad else ""
        lines.append(f'  t{id(t)} [shape=box, label="{_label(t, labels)}"{style}];')
        if t._ctx is not None:
            fn = t._ctx
            lines.append(f'  f{id(fn)} [shape=ellipse, label="{fn.name}"];')
            lines.append(f"  f{id(fn)} -> t{id(t)};")
            for parent in fn.parents:
                lines.append(f"  t{id(parent)} -> f{id(fn)};")
                stack.append(parent)
    lines.append("}")
    return "\n".join(lines)
