"""Convolution and pooling: conv1d, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d (PyTorch's forms).

Inputs are batched (N, C, *spatial) or unbatched (C, *spatial), as in PyTorch. Sizes, strides, paddings
and dilations are an int (the same for every spatial dim) or a tuple with one int per spatial dim.
conv1d is conv2d over (N, C, 1, L); the Functions behind these are in minigrad.ops.conv.
"""
from __future__ import annotations

from numbers import Integral

import numpy as np

from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.backend.numpy_ref import pool_geometry
from minigrad.creation import tensor
from minigrad.ops.conv import AvgPool2d, Conv2d, MaxPool2d, max_pool2d_indices
from minigrad.tensor import Tensor

__all__ = ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def int_tuple(value, n: int, what: str, op: str, low: int = 1) -> tuple[int, ...]:
    """`value` (an int, or a tuple/list of n ints), each >= low, as a tuple of n ints."""
    items = (value,) * n if isinstance(value, Integral) else value
    if not (isinstance(items, (tuple, list)) and len(items) == n
            and all(isinstance(v, Integral) and not isinstance(v, bool) for v in items)):
        raise TypeError(f"{op}: {what} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < low for v in items):
        raise ValueError(f"{op}: {what} must be >= {low}, got {value!r}")
    return tuple(int(v) for v in items)


def _batched(x: Tensor, spatial: int, op: str) -> tuple[Tensor, bool]:
    """x as (N, C, *spatial), and whether it came unbatched as (C, *spatial)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim not in (spatial + 1, spatial + 2):
        raise ValueError(f"{op}: expected a {spatial + 1}-D (unbatched) or {spatial + 2}-D (batched) input, "
                         f"got shape {x.shape}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: expected a floating point input, got {x.dtype}")
    return (x.unsqueeze(0), True) if x.ndim == spatial + 1 else (x, False)


# ---- convolution ---------------------------------------------------------------------------------

def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """2-D cross-correlation, as torch.nn.functional.conv2d.

    x (N, C, H, W) or (C, H, W); weight (O, C/groups, kh, kw); bias (O,) -> (N, O, Ho, Wo) (or (O, Ho, Wo))
    with Ho = (H + pad_top + pad_bottom - dilation_h * (kh - 1) - 1) // stride_h + 1 (Wo alike).
    padding: an int or (ph, pw) padded on both sides, 'valid' (none) or 'same' (Ho = H, Wo = W; needs
    stride 1; an odd total pads the extra row/column at the bottom/right, as PyTorch). groups splits the
    channels into independent convolutions (groups = C = O: depthwise)."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, spatial=2, op="conv2d")


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """1-D cross-correlation, as torch.nn.functional.conv1d: x (N, C, L) or (C, L); weight (O, C/groups, k);
    bias (O,) -> (N, O, Lo), Lo = (L + 2 * padding - dilation * (k - 1) - 1) // stride + 1. Options as conv2d."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, spatial=1, op="conv1d")


def _conv(x, weight, bias, stride, padding, dilation, groups, spatial: int, op: str) -> Tensor:
    x, weight, bias = autocast_inputs(op, x, weight, bias)
    x, unbatched = _batched(x, spatial, op)
    if not isinstance(weight, Tensor) or weight.ndim != spatial + 2:
        raise ValueError(f"{op}: weight must be a {spatial + 2}-D tensor (out_channels, in_channels / groups, "
                         f"*kernel_size), got {getattr(weight, 'shape', type(weight).__name__)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype is not x.dtype:
            raise TypeError(f"{op}: input ({x.dtype}) and {name} ({t.dtype}) must have the same dtype")
    if not isinstance(groups, Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    out_channels, group_channels, *kernel = weight.shape
    if x.shape[1] != group_channels * groups:
        raise ValueError(f"{op}: input of shape {x.shape} has {x.shape[1]} channels, but weight of shape "
                         f"{weight.shape} with groups={groups} expects {group_channels * groups}")
    if out_channels % groups:
        raise ValueError(f"{op}: out_channels {out_channels} (weight of shape {weight.shape}) is not divisible "
                         f"by groups={groups}")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"{op}: bias must have shape ({out_channels},), got {bias.shape}")
    stride = int_tuple(stride, spatial, "stride", op)
    dilation = int_tuple(dilation, spatial, "dilation", op)
    pads = _conv_padding(padding, kernel, stride, dilation, op)
    for size, (before, after), k, d in zip(x.shape[2:], pads, kernel, dilation):
        if size + before + after < d * (k - 1) + 1:
            raise ValueError(f"{op}: input of shape {x.shape} with padding {padding!r} is smaller than the "
                             f"kernel {tuple(kernel)} with dilation {dilation}")
    if spatial == 1:  # conv1d is conv2d over (N, C, 1, L) with a (O, C/groups, 1, k) kernel
        x, weight = x.unsqueeze(2), weight.unsqueeze(2)
        stride, dilation, pads = (1, *stride), (1, *dilation), ((0, 0), *pads)
    out = Conv2d.apply(x, weight, *([] if bias is None else [bias]), stride=stride, padding=pads, dilation=dilation,
                       groups=groups)
    if spatial == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


def _conv_padding(padding, kernel, stride, dilation, op: str) -> tuple[tuple[int, int], ...]:
    """((before, after), ...) per spatial dim, from an int, a tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * len(kernel)
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]  # what keeps the size: span - 1
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in int_tuple(padding, len(kernel), "padding", op, low=0))


# ---- pooling -------------------------------------------------------------------------------------

def _pool_args(x: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool, op: str):
    """(kernel, stride, padding, dilation) as (h, w) pairs, checked as PyTorch does."""
    kernel = int_tuple(kernel_size, 2, "kernel_size", op)
    stride = kernel if stride is None else int_tuple(stride, 2, "stride", op)
    padding = int_tuple(padding, 2, "padding", op, low=0)
    dilation = int_tuple(dilation, 2, "dilation", op)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation):
        # No window at all: floor((size + 2p - span) / s) + 1 < 1; ceil_mode also keeps a last partial window.
        if size + 2 * p - (d * (k - 1) + 1) + (s - 1 if ceil_mode else 0) < 0:
            raise ValueError(f"{op}: input of shape {x.shape} is too small for kernel_size {kernel}, stride "
                             f"{stride}, padding {padding}, dilation {dilation}: the output would be empty")
    _check_windows_see_the_input(x.shape[2:], kernel, stride, padding, dilation, ceil_mode, op)
    return kernel, stride, padding, dilation


def _check_windows_see_the_input(hw, kernel, stride, padding, dilation, ceil_mode: bool, op: str) -> None:
    """Raise ValueError when a window's taps all fall in the padding (a dilation can step over a small
    input): its max would be over no element, and PyTorch's index for it points outside the window, or
    outside the input (its backward then writes out of bounds). Without dilation padding <= kernel / 2
    rules this out, so only dilated pools pay for the check."""
    if all(d == 1 for d in dilation):
        return
    out_hw, _ = pool_geometry(hw, kernel, stride, padding, dilation, ceil_mode)
    for dim, (size, k, s, p, d, out) in enumerate(zip(hw, kernel, stride, padding, dilation, out_hw)):
        taps = (np.arange(out) * s - p)[:, None] + np.arange(k) * d  # (windows, taps) positions along the dim
        blind = np.flatnonzero(~((taps >= 0) & (taps < size)).any(axis=1))
        if blind.size:
            raise ValueError(f"{op}: window {blind[0]} along dim {dim + 2} covers no element of the input (size "
                             f"{size}): with kernel_size {kernel}, stride {stride}, padding {padding} and dilation "
                             f"{dilation} all its taps fall in the padding")


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Max over each kh x kw window (padding counts as -inf), as torch.nn.functional.max_pool2d.

    x (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo), Ho = floor_or_ceil((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
    (ceil_mode rounds up, keeping a last partial window that starts inside the input or its left padding).
    stride defaults to kernel_size; padding is at most half the kernel. return_indices=True also returns
    the int64 flat index into H * W of each max (PyTorch's indices)."""
    x, unbatched = _batched(x, 2, "max_pool2d")
    kernel, stride, padding, dilation = _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    if return_indices:  # the values are then gathered at the indices (the gradient goes to them alike)
        indices = max_pool2d_indices(x, kernel, stride, padding, dilation, ceil_mode)
        out = x.flatten(2).gather(2, indices.flatten(2)).reshape(*indices.shape)
        return (out.squeeze(0), indices.squeeze(0)) if unbatched else (out, indices)
    out = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return out.squeeze(0) if unbatched else out


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Mean over each kh x kw window, as torch.nn.functional.avg_pool2d: x (N, C, H, W) or (C, H, W) ->
    (N, C, Ho, Wo), sizes as max_pool2d (without dilation). The zero padding counts in the divisor with
    count_include_pad=True (the default); a ceil_mode window's part beyond the padding never counts.
    divisor_override is not supported (NotImplementedError)."""
    if divisor_override is not None:
        raise NotImplementedError("avg_pool2d: divisor_override is not supported")
    x, unbatched = _batched(x, 2, "avg_pool2d")
    kernel, stride, padding, _ = _pool_args(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    out = AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad)
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """Average pooling to a fixed output size, as torch.nn.functional.adaptive_avg_pool2d.

    x (N, C, H, W) or (C, H, W) -> (N, C, oh, ow); output_size is an int or (oh, ow), where None keeps that
    dim. Output row i averages input rows floor(i * H / oh) .. ceil((i + 1) * H / oh) - 1 (columns alike).
    When the sizes divide, that is avg_pool2d with kernel = stride = (H / oh, W / ow); otherwise the
    windows differ in size (and may overlap), and the result is A_h @ x @ A_w^T, where row i of the
    averaging matrix A_h (oh, H) holds 1 / len over window i."""
    x, unbatched = _batched(x, 2, "adaptive_avg_pool2d")
    sizes = (output_size,) * 2 if output_size is None or isinstance(output_size, Integral) else output_size
    if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
        raise TypeError(f"adaptive_avg_pool2d: output_size must be an int or a tuple of 2 ints or None, "
                        f"got {output_size!r}")
    h, w = x.shape[2:]
    oh, ow = int_tuple(tuple(n if s is None else s for n, s in zip((h, w), sizes)), 2, "output_size",
                       "adaptive_avg_pool2d")
    if h % oh == 0 and w % ow == 0:
        kernel = (h // oh, w // ow)
        out = AvgPool2d.apply(x, kernel=kernel, stride=kernel, padding=(0, 0), ceil_mode=False, count_include_pad=True)
    else:
        out = _averaging_matrix(oh, h, x) @ x @ _averaging_matrix(ow, w, x).T
    return out.squeeze(0) if unbatched else out


def _averaging_matrix(out: int, size: int, like: Tensor) -> Tensor:
    """(out, size): row i is 1 / len over PyTorch's adaptive window i, [floor(i*size/out), ceil((i+1)*size/out))."""
    rows = []
    for i in range(out):
        start, end = i * size // out, -(-(i + 1) * size // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return tensor(rows, dtype=like.dtype, device=like.device)
