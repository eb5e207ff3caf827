"""SGD: stochastic gradient descent with momentum (heavy-ball or Nesterov), dampening and weight decay."""
from __future__ import annotations

from minigrad.backend import dispatch
from minigrad.creation import zeros_like
from minigrad.optim.optimizer import Optimizer, by_device


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

    def update_group(self, params, group):
        # One fused multi-tensor primitive steps all the parameters in place (numpy_ref.sgd_step_, which
        # reads like the docstring, on each).
        momentum = group["momentum"] != 0
        for device, ps in by_device(params):
            bufs, first_steps = [], []
            for p in ps:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer") if momentum else None
                first_steps.append(momentum and buf is None)
                if first_steps[-1]:  # the primitive fills it with the first gradient
                    buf = state["momentum_buffer"] = zeros_like(p)
                if buf is not None:
                    bufs.append(buf)
            dispatch(device).sgd_foreach_([p.data for p in ps], [p.grad.data for p in ps],
                                          [b.data for b in bufs] if momentum else None, group["lr"],
                                          group["momentum"], group["dampening"], group["weight_decay"],
                                          group["nesterov"], group["maximize"], first_steps)
            for t in ps + bufs:
                t._mark_modified()  # the primitive wrote them in place
