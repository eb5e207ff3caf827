"""Optimizer: the base class of SGD, Adam, AdamW and RMSprop.

An optimizer holds `param_groups`, a list of dicts each with a 'params' list and the hyperparameters of
those parameters (lr, ...), and `state`, a dict from parameter to its own dict of running statistics
(momentum buffers, moment estimates, step counts). `step()` hands each group's parameters that have a
gradient to `update_group`: by default a loop calling the subclass's `update` on each parameter, which
reads like the algorithm's pseudocode; SGD and Adam instead update a whole group with one multi-tensor
("foreach") primitive call per device (`by_device`), which saves the per-parameter overhead.

`state_dict()` uses PyTorch's layout, with parameters replaced by their position across all groups:

    {'state': {0: {'step': 3, 'exp_avg': Tensor, ...}, ...},
     'param_groups': [{'lr': 0.001, 'betas': (0.9, 0.999), ..., 'params': [0, 1, 2]}, ...]}

so a checkpoint restores into a fresh optimizer over the same parameters (and PyTorch's own optimizer
state dicts load too, their tensors converted).
"""
from __future__ import annotations

from minigrad.autograd import enable_grad, no_grad
from minigrad.tensor import Tensor

_UNORDERED = ("optimizer parameters must be an ordered collection (a set's order varies between runs); use a "
              "list")


class Optimizer:
    """Base class: `params` is an iterable of tensors, or of dicts {'params': tensors, <hyperparameters>}
    (param groups) whose hyperparameters override `defaults`. Subclasses implement `update` (one
    parameter) or `update_group` (all of a group's parameters that have a gradient)."""

    def __init__(self, params, defaults: dict):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts (param groups), got a Tensor; "
                            "pass [tensor] or model.parameters()")
        if isinstance(params, (set, frozenset)):
            raise TypeError(_UNORDERED)
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict] = {}  # keyed by the parameter object (tensors hash by identity)
        self.param_groups: list[dict] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (missing ones come from `defaults`),
        e.g. to start training layers that were frozen."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, (set, frozenset)):
            raise TypeError(_UNORDERED)
        params = [params] if isinstance(params, Tensor) else list(params or [])
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but param {i} is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (param {i}, shape {p.shape}): optimize the "
                                 f"leaf it was computed from, or detach() it and set requires_grad")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a param group lists the same parameter more than once")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append({**self.defaults, **param_group, "params": params})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: drop them (set_to_none=True, saving memory) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient, in place. `closure` (optional) re-evaluates the model
        and returns the loss, which step returns."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self.update_group(params, group)
        return loss

    def update_group(self, params: list[Tensor], group: dict) -> None:
        """Apply one step of the algorithm in place to `params`, the parameters of `group` that have a
        gradient (in the group's order), given the group's hyperparameters: `update` on each. Runs under
        no_grad."""
        for p in params:
            self.update(p, p.grad, self.state.setdefault(p, {}), group)

    def update(self, param: Tensor, grad: Tensor, state: dict, group: dict) -> None:
        """Apply one step of the algorithm to `param` in place, given its gradient, its state dict (empty
        on the first step) and its group's hyperparameters. Runs under no_grad."""
        raise NotImplementedError(f"{type(self).__name__} defines neither update() nor update_group()")

    # ---- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{'state': {position: {name: Tensor or number}}, 'param_groups': [{hyperparameters, 'params':
        [positions]}]}, positions numbering the parameters across all groups in order. The state's
        tensors are the optimizer's own (as in PyTorch): copy them to keep a snapshot."""
        position = {}
        groups = []
        for group in self.param_groups:
            indices = [position.setdefault(id(p), len(position)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {position[id(p)]: dict(s) for p, s in self.state.items() if id(p) in position}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by `state_dict()` (of this optimizer type, over parameters
        of the same shapes in the same groups). State tensors are copied into each parameter's dtype and
        device; the group sizes and every tensor's shape are checked."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        by_position = {}
        for i, (saved, own) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"loaded state dict's parameter group {i} has {len(saved['params'])} parameters, "
                                 f"the optimizer's has {len(own['params'])}")
            by_position.update(zip(saved["params"], own["params"]))
        state = {}
        for position, values in state_dict["state"].items():
            if position not in by_position:
                raise ValueError(f"loaded state dict has state for parameter {position}, which no parameter "
                                 f"group lists")
            param = by_position[position]
            state[param] = {name: _restored(value, name, param, position) for name, value in values.items()}
        self.state = state
        self.param_groups = [{**saved, "params": own["params"]} for saved, own in zip(saved_groups, self.param_groups)]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines + [")"])


def by_device(params: list[Tensor]) -> list[tuple]:
    """(device, [its parameters]) for the devices of `params`, in order of first appearance: a multi-tensor
    primitive runs on one device."""
    first = params[0].device
    if all(p.device is first or p.device == first for p in params):  # the usual case, without hashing
        return [(first, params)]
    groups: dict = {}
    for p in params:
        groups.setdefault(p.device, []).append(p)
    return list(groups.items())


def _restored(value, name: str, param: Tensor, position):
    """A state value from a checkpoint: the step count as a number (PyTorch saves a 0-d tensor), other
    numbers as they are, tensors (minigrad's, or anything NumPy reads, e.g. CPU torch tensors) as copies
    with the parameter's dtype, device and shape."""
    if name == "step":
        return int(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    copy = Tensor(value, dtype=param.dtype, device=param.device)
    if copy.shape != param.shape:
        raise ValueError(f"loaded state {name!r} of parameter {position} has shape {copy.shape}, the parameter "
                         f"has shape {param.shape}")
    return copy
