"""SGD: stochastic gradient descent with momentum (heavy-ball or Nesterov), dampening and weight decay."""
from __future__ import annotations

from minigrad.optim.optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, as PyTorch's SGD. Per step, with g the gradient:

        g = -g if maximize;  g = g + weight_decay * p
        b = g (first step)  or  b = momentum * b + (1 - dampening) * g      (when momentum != 0)
        g = g + momentum * b if nesterov else b
        p = p - lr * g

    State per parameter: 'momentum_buffer' (when momentum != 0)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def update(self, param, grad, state, group):
        momentum = group["momentum"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
            grad = grad + momentum * buf if group["nesterov"] else buf
        param.sub_(grad, alpha=group["lr"])
