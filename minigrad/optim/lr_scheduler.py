"""Learning-rate schedules: each sets `group['lr']` of every param group from the step count.

    scheduler = WarmupCosineLR(optimizer, warmup_steps=100, max_steps=5000, min_lr=3e-5)
    for batch in data:
        loss = ...; loss.backward(); optimizer.step(); optimizer.zero_grad()
        scheduler.step()

A scheduler counts its steps in `last_epoch` (PyTorch's name: 0 after construction, +1 per `step()`) and
remembers each group's starting lr as `group['initial_lr']` (its `base_lrs`). Every schedule here is a
closed form lr = f(base_lr, last_epoch): the values equal PyTorch's, whose schedulers update the current
lr recursively (so they can be stacked on one optimizer); to combine schedules here, use SequentialLR or
LambdaLR.
"""
from __future__ import annotations

import math
import types
from bisect import bisect_right

from minigrad.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "LambdaLR", "LinearLR", "CosineAnnealingLR", "SequentialLR",
           "WarmupCosineLR"]


class LRScheduler:
    """Base class: subclasses define `get_lr()`, the lr of every group at step `last_epoch`.
    `last_epoch=-1` starts a new schedule; another value resumes one (the groups must then hold
    'initial_lr', as after a scheduler has run on the optimizer)."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming a "
                               f"scheduler (last_epoch={last_epoch})")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list[float]:
        """The lr of every param group at step `self.last_epoch`."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr()")

    def step(self) -> None:
        """Advance one step and set every group's lr (call it after `optimizer.step()`)."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The lrs set by the last `step()`, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer (which has its own state_dict)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (last_epoch // step_size): decay by gamma every step_size steps."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(last_epoch); `lr_lambda` is a function, or a list of one per group."""

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1):
        groups = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * groups
        if len(self.lr_lambdas) != groups:
            raise ValueError(f"expected {groups} lr_lambdas (one per param group), got {len(self.lr_lambdas)}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> dict:
        """As PyTorch: plain functions and lambdas are not saved (the constructor provides them again);
        a callable object's attributes are."""
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__)
                               for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        for fn, saved in zip(self.lr_lambdas, state_dict.pop("lr_lambdas")):
            if saved is not None:
                fn.__dict__.update(saved)
        super().load_state_dict(state_dict)


class LinearLR(LRScheduler):
    """lr = base_lr * factor, the factor going linearly from start_factor (step 0) to end_factor (step
    total_iters), then staying there: factor = start + (end - start) * min(last_epoch, total_iters) /
    total_iters."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        progress = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * last_epoch / T_max)) / 2: half a cosine from
    base_lr down to eta_min over T_max steps (past T_max the cosine goes on, back up, as in PyTorch)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run `schedulers` one after the other: schedulers[i] from step milestones[i - 1] on, restarted at
    its own step 0 there (len(milestones) = len(schedulers) - 1, increasing)."""

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1):
        if not schedulers:
            raise ValueError("SequentialLR expects at least one scheduler")
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ValueError("SequentialLR expects all schedulers to belong to its optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SequentialLR milestones must be increasing, got {milestones}")
        self.optimizer, self._schedulers, self._milestones = optimizer, list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:  # undo the first step the schedulers took when constructed
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            scheduler.last_epoch -= 1
        self._schedulers[0].step()
        self._last_lr = self._schedulers[0].get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler.last_epoch = -1  # the next scheduler starts at its own step 0
        scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state_dict.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(state_dict)


class WarmupCosineLR(LRScheduler):
    """Linear warmup, then cosine decay: the schedule of GPT-style training. With t = last_epoch,
    W = warmup_steps, T = max_steps:

        lr(t) = base_lr * t / W                                                    for t < W
        lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2   for W <= t <= T
        lr(t) = min_lr                                                             for t > T

    so lr rises from 0 to base_lr at step W, falls to min_lr at step T and stays there. `min_lr` is one
    value for all groups, or a list with one per group."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, max_steps: int, min_lr=0.0, last_epoch: int = -1):
        if not 0 <= warmup_steps < max_steps:
            raise ValueError(f"WarmupCosineLR needs 0 <= warmup_steps < max_steps, got {warmup_steps} and "
                             f"{max_steps}")
        groups = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * groups
        if len(self.min_lrs) != groups:
            raise ValueError(f"expected {groups} min_lr values (one per param group), got {len(self.min_lrs)}")
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, warmup = self.last_epoch, self.warmup_steps
        if t < warmup:
            return [base_lr * t / warmup for base_lr in self.base_lrs]
        if t > self.max_steps:
            return list(self.min_lrs)
        cosine = (1 + math.cos(math.pi * (t - warmup) / (self.max_steps - warmup))) / 2
        return [min_lr + (base_lr - min_lr) * cosine for base_lr, min_lr in zip(self.base_lrs, self.min_lrs)]
