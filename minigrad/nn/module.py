"""Module: the base class of layers and models, and the containers Sequential, ModuleList, ModuleDict.

A Module owns parameters, buffers (non-trained state such as BatchNorm's running mean) and child
modules, registered simply by assigning them as attributes. Everything else derives from those three
ordered dicts: parameters(), state_dict(), to(), train()/eval(), the nested repr.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from minigrad import dtypes
from minigrad.autograd import no_grad
from minigrad.nn.parameter import Parameter
from minigrad.tensor import Tensor


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` could not match."""
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model: subclasses set parameters and submodules in `__init__`
    and compute in `forward`; calling the module calls `forward`."""

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called "
                                 f"(call super().__init__() first in {type(self).__name__}.__init__)")
        if isinstance(value, (Parameter, Module)):
            self._forget(name)
            (self._parameters if isinstance(value, Parameter) else self._modules)[name] = value
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(value).__name__}")
            self._buffers[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "submodule"
                raise TypeError(f"cannot assign {type(value).__name__} to {kind} {name!r} "
                                f"(wrap tensors in nn.Parameter, or assign None)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules, self.__dict__):
            registry.pop(name, None)

    def __getattr__(self, name: str):
        for registry in ("_parameters", "_buffers", "_modules"):
            found = self.__dict__.get(registry, {})
            if name in found:
                return found[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is saved in state_dict (unless persistent=False) but not trained."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        self._buffers[name] = tensor
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module, got {type(module).__name__}")
        self._modules[name] = module

    # ---- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, each once, with dotted names ('' for self)."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def _named_members(self, registry: str, prefix: str, recurse: bool):
        seen = set()  # a tensor shared by two modules (weight tying) is listed once, under its first name
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    # ---- modes and bulk updates -----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active, BatchNorm uses batch statistics) for this module and children."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad = p.grad.detach().zero_()

    def apply(self, fn) -> Module:
        """Call fn(module) on every child (recursively), then on self; returns self (e.g. custom init)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args, dtype=None, device=None) -> Module:
        """Move/convert parameters and buffers in place (floating point ones change dtype; integer
        buffers keep theirs). Parameter objects stay the same, so optimizers keep working."""
        for arg in args:
            if isinstance(arg, dtypes.DType):
                dtype = arg
            else:
                device = arg
        if dtype is not None and not dtypes.get_dtype(dtype).is_floating_point:
            raise TypeError(f"Module.to() only accepts floating point dtypes, got {dtype}")

        def convert(t: Tensor) -> Tensor:
            return t.to(dtype=dtype if t.dtype.is_floating_point else None, device=device).detach()

        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    moved = convert(p)
                    p.data, p.device = moved.data, moved.device
                    if p.grad is not None:
                        p.grad = convert(p.grad)
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = convert(b)
        return self

    def float(self) -> Module:
        return self.to(dtypes.float32)

    def double(self) -> Module:
        return self.to(dtypes.float64)

    def cuda(self) -> Module:
        return self.to("cuda")

    def cpu(self) -> Module:
        return self.to("cpu")

    # ---- state dict -----------------------------------------------------------------------------
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Every parameter and persistent buffer by dotted name (detached unless keep_vars)."""
        out = OrderedDict()
        for module_prefix, module in self.named_modules(prefix.rstrip(".")):
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is None or (registry is module._buffers and name in module._non_persistent):
                        continue
                    key = f"{module_prefix}.{name}" if module_prefix else name
                    out[key] = value if keep_vars else value.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into this module's parameters and buffers, by name. Values may be minigrad
        tensors, NumPy arrays, or anything NumPy can read (e.g. CPU torch tensors). Shapes must match;
        dtypes are converted to the parameter's. With strict=True a missing or unexpected key raises
        a KeyError naming them all; a shape mismatch always raises a ValueError naming key and shapes."""
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        values = {}
        mismatched = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
            if tuple(array.shape) != target.shape:
                mismatched.append(f"{key}: checkpoint {tuple(array.shape)} vs model {target.shape}")
            values[key] = array
        if mismatched:
            raise ValueError(f"load_state_dict for {type(self).__name__}: shape mismatch for "
                             + "; ".join(mismatched))
        with no_grad():
            for key, array in values.items():
                target = own[key]
                target.copy_(Tensor(array.astype(target.dtype.np_dtype, copy=False), device=target.device))
        return IncompatibleKeys(missing, unexpected)

    # ---- repr -----------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """One line of constructor arguments shown in repr (layers override it)."""
        return ""

    def __repr__(self) -> str:
        children = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"
