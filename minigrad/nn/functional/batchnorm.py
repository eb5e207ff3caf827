"""batch_norm: normalization of each channel over the batch and spatial dims, as a composite of minigrad ops."""
from __future__ import annotations

from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.autograd import no_grad
from minigrad.tensor import Tensor

__all__ = ["batch_norm"]


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalization, as torch.nn.functional.batch_norm. x: (N, C, *) -> (N, C, *); running_mean,
    running_var, weight, bias: (C,) or None.

    out = (x - mean) / sqrt(var + eps) * weight + bias, per channel. With training=True, mean and var are
    the batch statistics over every dim but C (the biased variance), and running_mean / running_var
    (when given) are updated in place, without recording a graph, as
    running = (1 - momentum) * running + momentum * batch_stat, with the unbiased batch variance.
    With training=False the running statistics are used (and required)."""
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, *), got {x.shape}")
    x, weight, bias = autocast_inputs("batch_norm", x, weight, bias)  # (the running stats stay float32)
    if not x.dtype.is_floating_point:
        raise TypeError(f"batch_norm: expected a floating point input, got {x.dtype}")
    channels = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"batch_norm: {name} of shape {t.shape} does not match the {channels} channels "
                             f"of the input of shape {x.shape}")
        if t is not None and t.dtype is not x.dtype:
            raise TypeError(f"batch_norm: input ({x.dtype}) and {name} ({t.dtype}) must have the same dtype")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    dims = (0, *range(2, x.ndim))
    stat_shape = (1, channels) + (1,) * (x.ndim - 2)  # broadcasts a (C,) statistic over x
    if training:
        count = x.numel() // channels
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}")
        mean = x.mean(dims, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dims, keepdim=True)  # biased, for the normalization
        out = centered * (var + eps).rsqrt()
        with no_grad():
            if running_mean is not None:
                _update_running(running_mean, mean, momentum)
            if running_var is not None:
                _update_running(running_var, var * (count / (count - 1)), momentum)  # unbiased
    else:
        out = (x - running_mean.reshape(stat_shape)) * (running_var.reshape(stat_shape) + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(stat_shape)
    if bias is not None:
        out = out + bias.reshape(stat_shape)
    return out


def _update_running(stat: Tensor, batch_stat: Tensor, momentum: float) -> None:
    """stat <- (1 - momentum) * stat + momentum * batch_stat, in place (call under no_grad)."""
    stat.mul_(1 - momentum).add_(batch_stat.detach().reshape(stat.shape) * momentum)
