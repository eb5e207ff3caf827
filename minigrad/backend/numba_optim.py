"""Numba fused optimizer steps: SGD (momentum, Nesterov) and Adam / AdamW, updating in place.

The reference (numpy_ref.sgd_step_ / adam_step_) makes a pass over memory per line of the algorithm,
with a temporary for each; Adam is about a dozen. Here one parallel loop over the elements reads the
parameter, its gradient and its state once, and writes the parameter and the state once: the step is
bound by that memory traffic. The math, and its order, is the reference's; scalars are converted to
the parameter's dtype first (T(beta1)), as NumPy does with Python floats, so float32 stays float32.
A state array that is not used (no momentum, no amsgrad) is passed as None, and Numba compiles that
case without it. Arrays that are not C-contiguous, or of mixed dtypes, go to the reference (which
updates any strided array in place).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import FASTMATH, launch, supported


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _sgd(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    T = param.dtype.type
    lr_, momentum_, wd, undamped = T(lr), T(momentum), T(weight_decay), T(1 - dampening)
    for i in prange(param.shape[0]):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        if buf is not None:  # momentum != 0
            b = g if first_step else buf[i] * momentum_ + g * undamped
            buf[i] = b
            g = g + momentum_ * b if nesterov else b
        param[i] = param[i] - g * lr_


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled,
          maximize, bias_correction1, bias_correction2):
    T = param.dtype.type
    b1, b2, one_b1, one_b2 = T(beta1), T(beta2), T(1 - beta1), T(1 - beta2)
    wd, decay, eps_ = T(weight_decay), T(1 - lr * weight_decay), T(eps)
    sqrt_bc2, step_size = T(math.sqrt(bias_correction2)), T(lr / bias_correction1)
    for i in prange(param.shape[0]):
        g = -grad[i] if maximize else grad[i]
        p = param[i]
        if weight_decay != 0:
            if decoupled:
                p = p * decay
            else:
                g = g + wd * p
        m = exp_avg[i] * b1 + g * one_b1
        v = exp_avg_sq[i] * b2 + (g * g) * one_b2
        exp_avg[i], exp_avg_sq[i] = m, v
        if max_exp_avg_sq is not None:  # amsgrad: v_max = maximum(v_max, v), nan-propagating as np.maximum
            w = max_exp_avg_sq[i]
            v = v if v > w or v != v else w
            max_exp_avg_sq[i] = v
        param[i] = p - (m / (np.sqrt(v) / sqrt_bc2 + eps_)) * step_size


def _flat(*arrays):
    """The arrays as flat views if they are all C-contiguous, writeable and of one kernel dtype; else None."""
    ok = supported(*arrays) and all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
    return [a.reshape(-1) for a in arrays] if ok else None


def sgd_step_(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    flat = _flat(param, np.ascontiguousarray(grad), *([] if momentum_buf is None else [momentum_buf]))
    if flat is None:
        return numpy_ref.sgd_step_(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov,
                                   maximize, first_step)
    p, g, *buf = flat
    launch(_sgd, p.size, p, g, buf[0] if buf else None, float(lr), float(momentum), float(dampening),
           float(weight_decay), bool(nesterov), bool(maximize), bool(first_step))


def adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
               decoupled, amsgrad, maximize):
    state = [exp_avg, exp_avg_sq] + ([max_exp_avg_sq] if amsgrad else [])
    flat = _flat(param, np.ascontiguousarray(grad), *state)
    if flat is None:
        return numpy_ref.adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                                    weight_decay, decoupled, amsgrad, maximize)
    p, g, m, v, *vmax = flat
    launch(_adam, p.size, p, g, m, v, vmax[0] if vmax else None, float(lr), float(beta1), float(beta2), float(eps),
          float(weight_decay), bool(decoupled), bool(maximize), 1 - beta1 ** step, 1 - beta2 ** step)


# The multi-tensor primitives: these kernels on each parameter in turn (the C++ backend has one kernel
# over all of them, cpp/optim.cpp).
sgd_foreach_ = numpy_ref.sgd_foreach_over(sgd_step_)
adam_foreach_ = numpy_ref.adam_foreach_over(adam_step_)
