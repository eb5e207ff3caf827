"""autocast: run chosen ops in a 16-bit float dtype, as torch.autocast.

Inside `with autocast(device_type, dtype):`, an op on tensors of that device type looks itself up in
`OP_POLICIES` through `autocast_inputs(op, *tensors)`, which the ops call on their tensor inputs first:

- LOWER_PRECISION ops (matmul and @, linear, conv1d/conv2d, scaled_dot_product_attention) cast their
  float32 inputs to the autocast dtype, so they run in it and return it;
- FLOAT32 ops (sum, softmax, log_softmax, logsumexp, layer_norm, batch_norm, the losses, exp, log, pow,
  rsqrt) cast their 16-bit inputs to float32, so they compute and return float32;
- every other op runs in the widest dtype of its inputs (ordinary promotion: a float16 activation
  plus a float32 bias is float32).

float64 inputs and non-floating ones are never cast, as in torch. The casts are `Tensor.to`, hence
differentiable: gradients reach float32 parameters as float32. The lists follow torch's CUDA lists
(torch's CPU lists are narrower: it leaves softmax and layer_norm in bfloat16 on the CPU), for the ops
minigrad has, with two deliberate differences: batch_norm computes in float32 (minigrad's batch norm takes
one dtype for its input and its float32 parameters) and binary_cross_entropy computes in float32 (torch
refuses it under CUDA autocast). RNN layers are not cast.

Costs: casts are not cached (torch caches the 16-bit copy of each weight for the duration of an
autocast block): every op casts its float32 weights again. On the GPU only matmul / linear have
tensor-core kernels; conv2d and attention under autocast run their float32 kernels on the 16-bit
values widened back (the same results as torch's up to rounding, without its speed-up). A linear layer
rounds its product and then its bias add (two roundings, where cuBLAS's epilogue rounds once).

The state is a context variable (like grad mode): a dict from device type to the dtype autocast runs
there, or None outside any autocast, so an op outside autocast pays one ContextVar.get().
"""
from __future__ import annotations

import contextvars
import functools

from minigrad import dtypes
from minigrad.tensor import Tensor

__all__ = ["autocast", "autocast_inputs", "is_autocast_enabled", "get_autocast_dtype", "OP_POLICIES"]

LOWER_PRECISION = "lower_precision"
FLOAT32 = "float32"

OP_POLICIES = {
    **dict.fromkeys(("matmul", "linear", "conv1d", "conv2d", "scaled_dot_product_attention"), LOWER_PRECISION),
    **dict.fromkeys(("sum", "softmax", "log_softmax", "logsumexp", "layer_norm", "batch_norm", "cross_entropy",
                     "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                     "exp", "log", "pow", "rsqrt"), FLOAT32),
}

DEFAULT_DTYPES = {"cuda": dtypes.float16, "cpu": dtypes.bfloat16}  # torch's defaults

_autocast_dtypes = contextvars.ContextVar("minigrad_autocast", default=None)  # {device type: DType} or None


def autocast_inputs(op: str, *tensors):
    """`tensors` (Tensors; None and Python numbers pass through) as `op` takes them under the current
    autocast state: cast to the autocast dtype of their device type for a LOWER_PRECISION op, to float32
    for a FLOAT32 op; unchanged outside autocast, on other device types, and for ops without a policy."""
    state = _autocast_dtypes.get()
    if state is None:
        return tensors
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    target = None if first is None else state.get(first.device.type)
    policy = OP_POLICIES.get(op)
    if target is None or policy is None:
        return tensors
    if policy == FLOAT32:
        target, castable = dtypes.float32, dtypes.HALF_DTYPES
    else:
        castable = (*dtypes.HALF_DTYPES, dtypes.float32)
    return tuple(t.to(target) if isinstance(t, Tensor) and t.dtype in castable else t for t in tensors)


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    """Whether autocast is on for `device_type` here."""
    return device_type in (_autocast_dtypes.get() or {})


def get_autocast_dtype(device_type: str):
    """The dtype autocast would use on `device_type` (its default when autocast is off there)."""
    return (_autocast_dtypes.get() or {}).get(device_type, DEFAULT_DTYPES.get(device_type))


class autocast:
    """`with autocast(device_type, dtype=None, enabled=True):` (or as a decorator): run the ops on tensors
    of `device_type` ('cpu' or 'cuda') in mixed precision, as torch.autocast. `dtype`: float16 or bfloat16,
    by default float16 on 'cuda' and bfloat16 on 'cpu'. `enabled=False` turns autocast off for that
    device type inside the block (also inside an enclosing autocast); leaving the block restores the
    state it found. See the module docstring for which ops run in which precision."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True):
        if device_type not in DEFAULT_DTYPES:
            raise ValueError(f"autocast: device_type must be one of {sorted(DEFAULT_DTYPES)}, got {device_type!r}")
        dtype = DEFAULT_DTYPES[device_type] if dtype is None else dtypes.get_dtype(dtype)
        if dtype not in dtypes.HALF_DTYPES:
            raise ValueError(f"autocast: dtype must be minigrad.float16 or minigrad.bfloat16, got {dtype}")
        self.device_type, self.fast_dtype, self.enabled = device_type, dtype, bool(enabled)
        self._tokens = []

    def _state_inside(self) -> dict | None:
        state = dict(_autocast_dtypes.get() or {})
        if self.enabled:
            state[self.device_type] = self.fast_dtype
        else:
            state.pop(self.device_type, None)
        return state or None

    def __enter__(self):
        self._tokens.append(_autocast_dtypes.set(self._state_inside()))
        return self

    def __exit__(self, *exc_info):
        _autocast_dtypes.reset(self._tokens.pop())
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):  # a fresh context per call: calls may overlap (threads, generators)
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return func(*args, **kwargs)
        return wrapper
