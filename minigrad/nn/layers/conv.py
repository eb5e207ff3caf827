"""Conv1d, Conv2d: learned cross-correlations (PyTorch's layers, parameters and initialization)."""
from __future__ import annotations

import math

from minigrad import creation
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.functional.conv import int_tuple
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter

__all__ = ["Conv1d", "Conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """What Conv1d and Conv2d share: arguments, parameters, initialization and repr."""

    spatial: int  # number of spatial dims

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        name, n = type(self).__name__, self.spatial
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must both "
                             f"be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        if padding_mode != "zeros":
            raise NotImplementedError(f"{name}: padding_mode={padding_mode!r} is not implemented (only 'zeros')")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", name)
        self.stride = int_tuple(stride, n, "stride", name)
        self.dilation = int_tuple(dilation, n, "dilation", name)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = int_tuple(padding, n, "padding", name, low=0)
        self.padding_mode = padding_mode
        self.weight = Parameter(creation.empty(out_channels, in_channels // groups, *self.kernel_size,
                                               dtype=dtype, device=device))
        self.bias = Parameter(creation.empty(out_channels, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with a = sqrt(5)),
        bias alike, with fan_in = in_channels / groups * prod(kernel_size)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.spatial:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.spatial:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """1-D convolution: x (N, C_in, L) or (C_in, L) -> (N, C_out, L_out); weight (C_out, C_in / groups, k),
    bias (C_out,). Arguments as torch.nn.Conv1d (padding_mode 'zeros' only); see F.conv1d for sizes."""

    spatial = 1

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_ConvNd):
    """2-D convolution: x (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out); weight
    (C_out, C_in / groups, kh, kw), bias (C_out,). Arguments as torch.nn.Conv2d (padding_mode 'zeros'
    only); see F.conv2d for sizes and the 'same' / 'valid' paddings."""

    spatial = 2

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
