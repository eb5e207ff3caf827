"""BatchNorm1d, BatchNorm2d: per-channel normalization with batch statistics in training and running
statistics in evaluation (PyTorch's layers, parameters, buffers and update rule)."""
from __future__ import annotations

from minigrad import creation, dtypes
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Parameters weight (C,) = 1 and bias (C,) = 0 (if affine); buffers running_mean (C,) = 0,
    running_var (C,) = 1 and num_batches_tracked (int64, 0-d) (if track_running_stats).

    In training mode each forward normalizes with the batch statistics and, if track_running_stats,
    counts the batch and moves the running statistics by `momentum` (None: by 1 / num_batches_tracked,
    a cumulative average). In eval mode it normalizes with the running statistics, or with the batch
    statistics if it does not track them."""

    valid_ndims: tuple[int, ...]

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(creation.empty(num_features, dtype=dtype, device=device)) if affine else None
        self.bias = Parameter(creation.empty(num_features, dtype=dtype, device=device)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", creation.zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", creation.ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", creation.tensor(0, dtype=dtypes.int64, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        if x.ndim not in self.valid_ndims:
            shapes = " or ".join(f"{n}-D" for n in self.valid_ndims)
            raise ValueError(f"{type(self).__name__}: expected a {shapes} input, got shape {x.shape}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / self.num_batches_tracked.item()
        use_batch_stats = self.training or self.running_mean is None
        # The running statistics are updated only when tracked in training, and read in eval mode.
        pass_running = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if pass_running else None, self.running_var if pass_running else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of x (N, C) or (N, C, L) over N (and L), per channel C = num_features."""

    valid_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of x (N, C, H, W) over N, H and W, per channel C = num_features."""

    valid_ndims = (4,)
