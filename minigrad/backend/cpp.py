"""The C++ backend: a thin wrapper over the compiled extension `minigrad._C` (sources in cpp/).

Importing this module raises ImportError when the extension was not built; `minigrad.backend`
then warns once and keeps the NumPy reference. Each primitive here has exactly the semantics of
its `numpy_ref` namesake; inputs the kernels do not cover (other dtypes, 1-D operands) go to the
reference.

matmul: the kernel (cpp/gemm.cpp) reads any strides, so transposed operands (the Aᵀ·B and A·Bᵀ of
backward) and broadcast batch dims (stride 0) are used in place, without copies. It runs with the
GIL released, on `minigrad.get_num_threads()` threads.

softmax / log_softmax, forward and backward: the kernels (cpp/softmax.cpp) work on the last dim of
C-contiguous arrays; another axis is moved last with a copy (see `_along_rows`). Same threads.

attention_forward / attention_backward: flash-style kernels (cpp/attention.cpp) on strided q, k, v;
same threads.

lstm_scan / gru_scan, forward and backward: the whole time loop of a recurrent layer (cpp/rnn.cpp), on
C-contiguous arrays (others are copied first) except w_hh, read with its strides. Same threads.

sgd_foreach_ / adam_foreach_: one parallel pass over all the parameters of a param group
(cpp/optim.cpp), bitwise equal to numpy_ref's steps; the tensors the kernel does not take go through
the reference's single-tensor step.
"""
from __future__ import annotations

import numpy as np

from minigrad import _C
from minigrad.backend import numpy_ref


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _in_cpp(*arrays):
    """Whether the kernels below take these arrays (None for an absent one): all float32 or all float64.
    Anything else goes to numpy_ref."""
    dtypes = {a.dtype for a in arrays if a is not None}
    return len(dtypes) == 1 and dtypes <= set(_KERNEL_DTYPES)


def matmul(a, b):
    """a (..., m, k) @ b (..., k, n) -> (..., m, n), batch dims broadcast, as `numpy.matmul`;
    float32 and float64 (both operands the same dtype, at least 2-D) in C++, anything else (and
    the rare operand whose strides are not whole elements) in NumPy."""
    out = _C.matmul(a, b)
    return numpy_ref.matmul(a, b) if out is None else out


# ---- softmax and log-softmax (cpp/softmax.cpp) -----------------------------------------------------
# The kernels normalize the rows of a C-contiguous (rows, n) array: the last dim. Another `axis` is
# first moved last (np.moveaxis, a view) and made contiguous (np.ascontiguousarray: a copy, of a
# transposed or strided input only); the result is moved back, as a view, so it has the input's shape.

def _along_rows(name, axis, *arrays):
    """`_C.<name>(out, *rows)` on the arrays (one shape and dtype) seen as rows along `axis`; returns
    out (the arrays' shape). Dtypes other than float32/float64 go to numpy_ref."""
    if not _in_cpp(*arrays):
        return getattr(numpy_ref, name)(*arrays, axis)
    ndim = arrays[0].ndim
    moved = [np.moveaxis(a, axis, -1) if ndim else a.reshape(1) for a in arrays]  # a 0-d array: one row
    shape = moved[0].shape
    rows = [np.ascontiguousarray(m).reshape(int(np.prod(shape[:-1])), shape[-1]) for m in moved]
    out = np.empty_like(rows[0])
    getattr(_C, name)(out, *rows)
    return np.moveaxis(out.reshape(shape), -1, axis) if ndim else out.reshape(())


def softmax_forward(x, axis):
    """exp(x - max) / sum(exp(x - max)) along `axis`; x any shape, float32/float64 in C++."""
    return _along_rows("softmax_forward", axis, x)


def softmax_backward(dout, out, axis):
    """out * (dout - sum(dout * out)) along `axis`; dout and out of one shape, out = softmax."""
    return _along_rows("softmax_backward", axis, dout, out)


def log_softmax_forward(x, axis):
    """(x - max) - log(sum(exp(x - max))) along `axis`."""
    return _along_rows("log_softmax_forward", axis, x)


def log_softmax_backward(dout, out, axis):
    """dout - exp(out) * sum(dout) along `axis`; out = log_softmax."""
    return _along_rows("log_softmax_backward", axis, dout, out)


# ---- conv2d (cpp/conv.cpp) -------------------------------------------------------------------------
# GEMMs on implicit image patches: the kernels read x, weight and dout as C-contiguous arrays of one dtype
# (a copy, only of an input that is not); any stride, padding, dilation and groups.

def _conv_args(stride, padding, dilation, groups):
    (top, bottom), (left, right) = padding
    return tuple(stride), (top, bottom, left, right), tuple(dilation), groups


def conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None):
    """x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) or None -> out (N, O, Ho, Wo); padding ((top,
    bottom), (left, right)). The bias is added as the output is written."""
    if not _in_cpp(x, weight, bias):
        return numpy_ref.conv2d_forward(x, weight, stride, padding, dilation, groups, bias)
    forward = _C.conv2d_forward_f32 if x.dtype == np.float32 else _C.conv2d_forward_f64
    return forward(np.ascontiguousarray(x), np.ascontiguousarray(weight), *_conv_args(stride, padding, dilation, groups),
                   None if bias is None else np.ascontiguousarray(bias))


def conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs=(True, True)):
    """-> (dx (N, C, H, W), dweight (O, C/groups, kh, kw)) for out = conv2d_forward(x, weight, ...), each None
    where `needs` (need dx, need dweight) says it is not wanted."""
    if not _in_cpp(dout, x, weight):
        return numpy_ref.conv2d_backward(dout, x, weight, stride, padding, dilation, groups, needs)
    backward = _C.conv2d_backward_f32 if x.dtype == np.float32 else _C.conv2d_backward_f64
    return tuple(backward(*(np.ascontiguousarray(a) for a in (dout, x, weight)),
                          *_conv_args(stride, padding, dilation, groups), *needs))


# ---- scaled dot-product attention (cpp/attention.cpp) -----------------------------------------------
# The kernels read q, k, v (and dout, out, lse) with any strides of whole elements (others go to the
# reference), and the bias broadcast with stride 0; the bias is converted to q's dtype first (results
# match numpy_ref within rounding).


def _attention_ok(*arrays):
    """_in_cpp, and strides of whole elements (a field of a record array has others)."""
    return _in_cpp(*arrays) and all(s % a.itemsize == 0 for a in arrays for s in a.strides)


def attention_forward(q, k, v, bias, is_causal, scale):
    """q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,Dv), bias broadcastable to (B,H,Tq,Tk) or None ->
    (out (B,H,Tq,Dv), lse (B,H,Tq)); float32/float64 in C++, other dtypes in numpy_ref."""
    kernel_bias = None if bias is None or not _attention_ok(q) else np.asarray(bias, q.dtype)
    if not _attention_ok(q, k, v, *([] if kernel_bias is None else [kernel_bias])):
        return numpy_ref.attention_forward(q, k, v, bias, is_causal, scale)
    return _C.attention_forward(q, k, v, kernel_bias, bool(is_causal), float(scale))


def attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale):
    """-> (dq, dk, dv), shaped like q, k, v; out and lse as attention_forward returned them."""
    kernel_bias = None if bias is None or not _attention_ok(q) else np.asarray(bias, q.dtype)
    if not _attention_ok(dout, q, k, v, out, lse, *([] if kernel_bias is None else [kernel_bias])):
        return numpy_ref.attention_backward(dout, q, k, v, out, lse, bias, is_causal, scale)
    return _C.attention_backward(dout, q, k, v, out, lse, kernel_bias, bool(is_causal), float(scale))


# ---- LSTM / GRU layers over a sequence (cpp/rnn.cpp) ------------------------------------------------------


def _c(a):
    return None if a is None else np.ascontiguousarray(a)


def lstm_scan_forward(gates_x, bias, h0, c0, w_hh, reverse):
    """An LSTM layer in one direction (see base.PRIMITIVES): float32/float64 in C++."""
    if not _in_cpp(gates_x, bias, h0, c0, w_hh):
        return numpy_ref.lstm_scan_forward(gates_x, bias, h0, c0, w_hh, reverse)
    return _C.lstm_scan_forward(_c(gates_x), _c(bias), _c(h0), _c(c0), w_hh, reverse)


def lstm_scan_backward(grad, cache, out, h0, c0, w_hh, reverse):
    """-> (dgates, dh0, dc0, dw_hh, dbias), from lstm_scan_forward's out and cache."""
    if not _in_cpp(grad, cache, out, h0, c0, w_hh):
        return numpy_ref.lstm_scan_backward(grad, cache, out, h0, c0, w_hh, reverse)
    return _C.lstm_scan_backward(_c(grad), _c(cache), _c(out), _c(h0), _c(c0), w_hh, reverse)


def gru_scan_forward(gates_x, bias, h0, w_hh, b_hh, reverse):
    """A GRU layer in one direction (see base.PRIMITIVES): float32/float64 in C++."""
    if not _in_cpp(gates_x, bias, h0, w_hh, b_hh):
        return numpy_ref.gru_scan_forward(gates_x, bias, h0, w_hh, b_hh, reverse)
    return _C.gru_scan_forward(_c(gates_x), _c(bias), _c(h0), w_hh, _c(b_hh), reverse)


def gru_scan_backward(grad, cache, out, h0, w_hh, reverse):
    """-> (dgates_x, dh0, dw_hh, db_hh, dbias), from gru_scan_forward's out and cache."""
    if not _in_cpp(grad, cache, out, h0, w_hh):
        return numpy_ref.gru_scan_backward(grad, cache, out, h0, w_hh, reverse)
    return _C.gru_scan_backward(_c(grad), _c(cache), _c(out), _c(h0), w_hh, reverse)


# ---- multi-tensor optimizer steps (cpp/optim.cpp) ----------------------------------------------------
# The kernels take float32 / float64 parameters whose gradient and state have their dtype, the parameter
# and state arrays C-contiguous and writeable (they are updated in place; a strided gradient is copied).
# They return the positions of the other tensors, which get numpy_ref's single-tensor step here.


def sgd_foreach_(params, grads, momentum_bufs, lr, momentum, dampening, weight_decay, nesterov, maximize,
                 first_steps):
    """numpy_ref.sgd_step_ on every tensor of the lists, in one C++ call."""
    for i in _C.sgd_foreach_(params, grads, momentum_bufs, lr, momentum, dampening, weight_decay, nesterov,
                             maximize, first_steps):
        numpy_ref.sgd_step_(params[i], grads[i], None if momentum_bufs is None else momentum_bufs[i], lr, momentum,
                            dampening, weight_decay, nesterov, maximize, first_steps[i])


def adam_foreach_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                  decoupled, amsgrad, maximize):
    """numpy_ref.adam_step_ on every tensor of the lists, in one C++ call."""
    for i in _C.adam_foreach_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
                              weight_decay, decoupled, amsgrad, maximize):
        numpy_ref.adam_step_(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i],
                             None if max_exp_avg_sqs is None else max_exp_avg_sqs[i], steps[i], lr, beta1, beta2, eps,
                             weight_decay, decoupled, amsgrad, maximize)
