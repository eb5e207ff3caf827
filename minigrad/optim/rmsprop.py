"""RMSprop (Hinton's lecture notes; centered variant from Graves, 2013): the gradient divided by a running
root mean square of recent gradients."""
from __future__ import annotations

from minigrad.creation import zeros_like
from minigrad.optim.optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop, as PyTorch's. Per step, with g the gradient:

        g = -g if maximize;  g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g^2                       running mean of g^2
        a = alpha * a + (1 - alpha) * g                         running mean of g (when centered)
        r = sqrt(s - a^2) + eps if centered else sqrt(s) + eps
        b = momentum * b + g / r;  p = p - lr * b               when momentum > 0
        p = p - lr * g / r                                      otherwise

    State per parameter: 'step', 'square_avg' (s), 'grad_avg' (a, when centered), 'momentum_buffer'
    (b, when momentum > 0)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, *, maximize: bool = False):
        for name, value in dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum).items():
            if value < 0:
                raise ValueError(f"Invalid {name} value: {value}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def update(self, param, grad, state, group):
        alpha = group["alpha"]
        if not state:
            state.update(step=0, square_avg=zeros_like(param))
            if group["momentum"] > 0:
                state["momentum_buffer"] = zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = zeros_like(param)
        state["step"] += 1
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        square_avg = state["square_avg"].mul_(alpha).add_(grad * grad, alpha=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"].mul_(alpha).add_(grad, alpha=1 - alpha)
            rms = (square_avg - grad_avg * grad_avg).sqrt() + group["eps"]
        else:
            rms = square_avg.sqrt() + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"].mul_(group["momentum"]).add_(grad / rms)
            param.sub_(buf, alpha=group["lr"])
        else:
            param.sub_(grad / rms, alpha=group["lr"])
