"""GradScaler: dynamic loss scaling for float16 training, as torch.amp.GradScaler.

float16 gradients below 2^-24 round to zero. Scaling the loss by S (2^16 to start) scales every
gradient by S, out of that range; `step` divides them by S again ("unscales") before the optimizer
reads them, and skips the step when one of them overflowed to inf or nan. `update` then adapts S:

    a step found inf/nan      ->  S *= backoff_factor (0.5), and the count of good steps restarts
    growth_interval good steps ->  S *= growth_factor (2.0) (unless that overflows float32)

The scale is a float32 0-d tensor on the scaler's device, updated with float32 arithmetic as torch's,
so the sequence of scales matches torch's step for step. The inf/nan check runs through tensor ops
(the count of non-finite elements, `(~isfinite(grad)).sum()`, summed over the gradients and read
once per step: one device-to-host synchronization on a GPU), so the same code runs on any device's arrays.
"""
from __future__ import annotations

import enum
import warnings

from minigrad import backend, dtypes
from minigrad.autograd import no_grad
from minigrad.device import Device
from minigrad.tensor import Tensor

__all__ = ["GradScaler"]

_FLOAT32_MAX = 3.4028234663852886e38  # the scale is a float32: it does not grow past this


class _Stage(enum.Enum):
    READY = 0  # since the last update(): nothing done to this optimizer's gradients yet
    UNSCALED = 1
    STEPPED = 2


class GradScaler:
    """Loss scaling for mixed-precision training; see the module docstring. On a device type with no
    backend (device='cuda' on a machine without the CUDA backend) it warns and disables itself, as torch's
    does: scale() then returns the loss as is and step() just calls optimizer.step()."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        self.device = Device(device)
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        if enabled and not backend.available(self.device.type):
            warnings.warn(f"GradScaler is enabled, but no backend is available for device '{self.device}'. "
                          f"Disabling.", stacklevel=2)
            enabled = False
        self._enabled = bool(enabled)
        self._init_scale, self._growth_factor, self._backoff_factor = init_scale, growth_factor, backoff_factor
        self._growth_interval, self._growth_tracker = growth_interval, 0
        self._scale = Tensor(init_scale, dtype=dtypes.float32, device=self.device) if self._enabled else None
        self._optimizer_states: dict[int, dict] = {}  # id(optimizer) -> {"stage", "found_inf"}

    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return self._scale.item() if self._enabled else 1.0

    def scale(self, outputs):
        """outputs * scale: a tensor, or a list / tuple (nested too) of tensors, each keeping its dtype (a
        float16 loss stays float16, as in torch); the product is computed in float32 and rounded once (the
        scale itself, 2**16 by default, is past float16's largest value, 65504)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if outputs.device != self.device:
                raise ValueError(f"GradScaler.scale: the scaler is for device '{self.device}', the tensor is on "
                                 f"'{outputs.device}'")
            if outputs.dtype in dtypes.HALF_DTYPES:
                return (outputs.float() * self._scale).to(outputs.dtype)
            return outputs * self._scale.to(outputs.dtype)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale expects a Tensor or a list / tuple of them, got {type(outputs).__name__}")

    def _state(self, optimizer) -> dict:
        return self._optimizer_states.setdefault(id(optimizer), {"stage": _Stage.READY, "found_inf": False})

    @no_grad()
    def unscale_(self, optimizer) -> None:
        """Divide the gradients of `optimizer`'s parameters by the scale, in place, and record whether any
        is inf or nan. Call it once per step, between backward() and step(), to read or clip the true
        gradients (step() calls it if you did not). float16 gradients are refused, as in torch: unscale the
        float32 gradients of float32 parameters (what autocast keeps)."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] is _Stage.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is _Stage.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = (1.0 / self._scale.double()).float()  # as torch: the reciprocal in float64, then float32
        nonfinite = None  # the count of inf / nan gradient elements, a 0-d tensor: read once, at the end
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.dtype is dtypes.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                if param.grad.device != self.device:
                    raise ValueError(f"GradScaler for device '{self.device}': a parameter of shape {param.shape} "
                                     f"has its gradient on '{param.grad.device}'")
                count = (~param.grad.isfinite()).sum()
                nonfinite = count if nonfinite is None else nonfinite + count
                param.grad.mul_(inv_scale.to(param.grad.dtype))
        # one device-to-host sync per step; None: no gradient to check (step() will refuse, as torch's)
        state.update(stage=_Stage.UNSCALED, found_inf=None if nonfinite is None else nonfinite.item() > 0)

    def step(self, optimizer, *args, **kwargs):
        """Unscale the gradients (unless unscale_ was called), then `optimizer.step(*args, **kwargs)` if
        they are all finite; returns what that step returned, or None when the step was skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state(optimizer)
        if state["stage"] is _Stage.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is _Stage.READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        result = None if state["found_inf"] else optimizer.step(*args, **kwargs)
        state["stage"] = _Stage.STEPPED
        return result

    def update(self, new_scale=None) -> None:
        """Adapt the scale to the steps since the last update (see the module docstring), or set it to
        `new_scale` (a number, or a one-element float32 tensor). Call it once per iteration, after step()."""
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, Tensor) and (new_scale.numel() != 1 or new_scale.dtype is not dtypes.float32):
                raise ValueError(f"GradScaler.update: new_scale must be a number or a one-element float32 tensor, "
                                 f"got a {new_scale.dtype} tensor of shape {new_scale.shape}")
            self._scale = Tensor(float(new_scale), dtype=dtypes.float32, device=self.device)
        else:
            if not self._optimizer_states:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(state["found_inf"] for state in self._optimizer_states.values()):
                self._scale = self._scale * self._backoff_factor
                self._growth_tracker = 0
            elif self._growth_tracker + 1 == self._growth_interval:
                if self._scale.item() * self._growth_factor <= _FLOAT32_MAX:  # (checked before multiplying)
                    self._scale = self._scale * self._growth_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
        self._optimizer_states = {}

    def state_dict(self) -> dict:
        """{'scale', 'growth_factor', 'backoff_factor', 'growth_interval', '_growth_tracker'} as torch's (empty
        when disabled), to save with a checkpoint."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what state_dict() returned (also from torch's GradScaler)."""
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._scale = Tensor(float(state_dict["scale"]), dtype=dtypes.float32, device=self.device)
        self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
        self._growth_interval, self._growth_tracker = state_dict["growth_interval"], int(state_dict["_growth_tracker"])
