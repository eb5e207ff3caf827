"""Moving tensors between devices: a differentiable copy (the gradient travels back)."""
from __future__ import annotations

from minigrad import device as devices
from minigrad.autograd import Function
from minigrad.backend import dispatch
from minigrad.tensor import Tensor


class ToDevice(Function):
    """Copy to another device, through host memory (NumPy); the gradient is copied back the same way."""

    def forward(self, x, device):
        self.out_device = device
        return dispatch(device).from_host(self.backend.to_host(x))

    def backward(self, grad):
        return self.backend.from_host(dispatch(self.out_device).to_host(grad))


def to_device(x: Tensor, device) -> Tensor:
    """x on `device` (a copy; gradients flow back to x). Raises when the device has no backend, naming why."""
    return ToDevice.apply(x, device=devices.usable(device))
