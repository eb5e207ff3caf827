"""Convolution and pooling Functions over (N, C, H, W) arrays; their public forms are in minigrad.nn.functional.

Arguments arrive normalized by the functional layer: stride, dilation and kernel are (h, w) pairs of
ints, conv padding is ((top, bottom), (left, right)) (asymmetric, so 'same' works with even kernels),
pooling padding is (ph, pw) on both sides. Conv2d takes the bias as an optional third input: the
kernel adds it while it writes the output (no separate pass over it), and its gradient is dout summed
over N, H and W.
"""
from __future__ import annotations

from minigrad.autograd import Function
from minigrad.backend import dispatch
from minigrad.tensor import Tensor


class Conv2d(Function):
    """Cross-correlation of x (N, C, H, W) with weight (O, C/groups, kh, kw), plus bias (O,) if given ->
    (N, O, Ho, Wo)."""

    def forward(self, x, weight, bias=None, *, stride, padding, dilation, groups):
        self.config = (stride, padding, dilation, groups)
        self.save_for_backward(x, weight)
        return self.backend.conv2d_forward(x, weight, *self.config, bias=bias)

    def backward(self, grad):
        x, weight = self.saved_arrays
        needs = self.needs_input_grad[:2]  # e.g. no dx for the first layer, whose input is data
        dx, dweight = self.backend.conv2d_backward(grad, x, weight, *self.config, needs)  # None where not needed
        if len(self.needs_input_grad) == 2:
            return dx, dweight
        dbias = self.backend.sum(grad, (0, 2, 3), False) if self.needs_input_grad[2] else None
        return dx, dweight, dbias


class MaxPool2d(Function):
    """Max over each window; the gradient goes to the element that was the max (argmax kept from forward)."""

    def forward(self, x, kernel, stride, padding, dilation, ceil_mode):
        out, argmax = self.backend.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
        self.save_for_backward(argmax)
        self.input_shape = tuple(x.shape)
        return out

    def backward(self, grad):
        (argmax,) = self.saved_arrays
        return self.backend.max_pool2d_backward(grad, argmax, self.input_shape)


class AvgPool2d(Function):
    """Mean over each window; the gradient is spread evenly over the window's elements."""

    def forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        self.config = (kernel, stride, padding, ceil_mode, count_include_pad)
        self.input_shape = tuple(x.shape)
        return self.backend.avg_pool2d_forward(x, *self.config)

    def backward(self, grad):
        return self.backend.avg_pool2d_backward(grad, self.input_shape, *self.config)


def max_pool2d_indices(x: Tensor, kernel, stride, padding, dilation, ceil_mode) -> Tensor:
    """The int64 flat index into H * W of each window's max (PyTorch's return_indices); not differentiable."""
    _, argmax = dispatch(x.device).max_pool2d_forward(x.data, kernel, stride, padding, dilation, ceil_mode)
    return Tensor._wrap(argmax, x.device)
