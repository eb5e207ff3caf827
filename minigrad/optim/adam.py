"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019): per-parameter step sizes from running
estimates of the gradient's first and second moments."""
from __future__ import annotations

from minigrad.backend import dispatch
from minigrad.creation import zeros_like
from minigrad.optim.optimizer import Optimizer, by_device


class Adam(Optimizer):
    """Adam, as PyTorch's. Per step t = 1, 2, ..., with g the gradient:

        g = -g if maximize
        p = p * (1 - lr * weight_decay)      if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p             otherwise (an L2 penalty in the gradient)
        m = beta1 * m + (1 - beta1) * g                  first moment
        v = beta2 * v + (1 - beta2) * g^2                second moment
        v_max = max(v_max, v); use v_max for v           if amsgrad
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    (the bias corrections 1 - beta^t undo the moments' start at 0). State per parameter: 'step',
    'exp_avg' (m), 'exp_avg_sq' (v) and 'max_exp_avg_sq' (when amsgrad)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def update_group(self, params, group):
        # One fused multi-tensor primitive steps all the parameters in place (numpy_ref.adam_step_, which
        # reads like the docstring, on each).
        amsgrad = group["amsgrad"]
        beta1, beta2 = group["betas"]
        for device, ps in by_device(params):
            states = []
            for p in ps:
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(step=0, exp_avg=zeros_like(p), exp_avg_sq=zeros_like(p))
                    if amsgrad:
                        state["max_exp_avg_sq"] = zeros_like(p)
                state["step"] += 1
                states.append(state)
            m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            vmax = [s["max_exp_avg_sq"] for s in states] if amsgrad else []
            dispatch(device).adam_foreach_(
                [p.data for p in ps], [p.grad.data for p in ps], [t.data for t in m], [t.data for t in v],
                [t.data for t in vmax] if amsgrad else None, [s["step"] for s in states], group["lr"], beta1, beta2,
                group["eps"], group["weight_decay"], group["decoupled_weight_decay"], amsgrad, group["maximize"])
            for t in ps + m + v + vmax:
                t._mark_modified()  # the primitive wrote them in place


class AdamW(Adam):
    """Adam with decoupled weight decay: each step first shrinks the parameters, p = p * (1 - lr *
    weight_decay), instead of adding weight_decay * p to the gradient (where Adam's per-parameter scaling
    would weaken the decay of parameters with large gradients). Default weight_decay 1e-2."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
