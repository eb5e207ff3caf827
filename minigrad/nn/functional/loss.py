"""Loss functions with PyTorch's names, signatures and semantics.

Class losses (cross_entropy, nll_loss) take input (N, C) or (N, C, d1, ..., dk) with the classes on dim 1,
or (C,) for one sample, and targets of class indices (N, d1, ..., dk) int64 (cross_entropy also takes class
probabilities of the input's shape). Elementwise losses (mse_loss, l1_loss, binary_cross_entropy[_with_logits])
compare input and target element by element.

`reduction` is 'none' (the per-element losses), 'mean' or 'sum'. The deprecated `size_average` / `reduce`
flags are accepted as in PyTorch and override `reduction` (with a warning).
"""
from __future__ import annotations

import warnings

from minigrad import dtypes
from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.creation import zeros_like
from minigrad.ops import CrossEntropy, broadcast_shapes, log_softmax, stack, where
from minigrad.tensor import Tensor

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("none", "mean", "sum")


# ---- argument checks ---------------------------------------------------------------------------------

def legacy_reduction(size_average, reduce, reduction: str) -> str:
    """`reduction`, unless PyTorch's deprecated flags are given: reduce=False means 'none', else
    size_average=False means 'sum', else 'mean' (a None flag counts as True)."""
    if size_average is None and reduce is None:
        return reduction
    reduction = "none" if reduce is False else "sum" if size_average is False else "mean"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' "
                  f"instead.", stacklevel=3)
    return reduction


def _check_args(fn: str, input, target, reduction: str) -> None:
    """input is a floating point tensor, target a tensor, reduction a known name."""
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{fn}: input and target must be Tensors, got {type(input).__name__} and "
                        f"{type(target).__name__}")
    if not input.dtype.is_floating_point:
        raise TypeError(f"{fn}: input must be a floating point tensor, got {input.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_weight(fn: str, name: str, weight, shape: tuple, broadcast: bool = True) -> None:
    """An optional floating point weight tensor of `shape`, or of a shape that broadcasts to it."""
    if weight is None:
        return
    if not isinstance(weight, Tensor) or not weight.dtype.is_floating_point:
        raise TypeError(f"{fn}: {name} must be a floating point Tensor, got "
                        f"{weight.dtype if isinstance(weight, Tensor) else type(weight).__name__}")
    if weight.shape == shape:
        return
    if broadcast:
        try:
            if broadcast_shapes(weight.shape, shape) == shape:
                return
        except ValueError:
            pass
    raise ValueError(f"{fn}: {name} of shape {weight.shape} "
                     f"{'does not broadcast to' if broadcast else 'must have the shape'} {shape}")


def _check_class_input(fn: str, input: Tensor, weight) -> None:
    """input (C,) or (N, C, ...), with an optional weight of one value per class, shape (C,)."""
    if input.ndim == 0:
        raise ValueError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    _check_weight(fn, "weight (one value per class)", weight, (input.shape[0 if input.ndim == 1 else 1],),
                  broadcast=False)


def _check_class_targets(fn: str, input: Tensor, target: Tensor, ignore_index: int) -> None:
    """Class indices (N, d1, ...) int64 for input (N, C, d1, ...), each in [0, C) or ignore_index."""
    if target.dtype is not dtypes.int64:
        raise TypeError(f"{fn}: target must hold int64 class indices, got {target.dtype}"
                        + (" (class probabilities must have the input's shape)" if fn == "cross_entropy" else ""))
    expected = input.shape[:1] + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{fn}: input of shape {input.shape} (classes on dim 1) needs a target of shape "
                         f"{expected}, got {target.shape}")
    classes = input.shape[1]
    if target.numel() and ((target != ignore_index) & ((target < 0) | (target >= classes))).any().item():
        raise IndexError(f"{fn}: target values must lie in [0, {classes}) or equal ignore_index "
                         f"({ignore_index}), got values from {target.min().item()} to {target.max().item()}")


def _check_same_shape(fn: str, input: Tensor, target: Tensor) -> None:
    if target.shape != input.shape:
        raise ValueError(f"{fn}: target of shape {target.shape} must have the input's shape {input.shape}")


def _check_broadcast(fn: str, input: Tensor, target: Tensor) -> None:
    """Different shapes broadcast, with PyTorch's warning (a (N, 1) vs (N,) mix-up is a classic bug)."""
    if target.shape != input.shape:
        broadcast_shapes(input.shape, target.shape)  # a ValueError naming both if they don't broadcast
        warnings.warn(f"{fn}: using a target size {target.shape} that is different to the input size "
                      f"{input.shape}. This will likely lead to incorrect results due to broadcasting. "
                      f"Please ensure they have the same size.", stacklevel=4)


# ---- reductions and shared pieces --------------------------------------------------------------------

def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """'none': the per-element losses; 'mean': their mean (nan over no elements, as PyTorch); 'sum'."""
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _reduce_weighted(loss: Tensor, weights: Tensor, reduction: str) -> Tensor:
    """As `_reduce`, but 'mean' is the weighted mean sum(loss) / sum(weights), where `loss` already holds
    the weighted per-element losses. For class targets the weights are those of the targets' classes (1
    without class weights) and 0 for ignored targets, so the mean counts only the other targets (and is
    nan, 0 / 0, when all are ignored, as in PyTorch)."""
    return loss.sum() / weights.sum() if reduction == "mean" else _reduce(loss, reduction)


def _batch_of_one(loss_fn, input: Tensor, target: Tensor, reduction: str, **options) -> Tensor:
    """A class loss of one sample, input (C,): computed as a batch of one; 'none' gives back a 0-d loss."""
    loss = loss_fn(input.unsqueeze(0), target.unsqueeze(0), reduction=reduction, **options)
    return loss.squeeze(0) if reduction == "none" else loss


def _along_classes(weight: Tensor, ndim: int) -> Tensor:
    """weight (C,) shaped (1, C, 1, ..., 1) to broadcast along the class dim 1 of an ndim-dim tensor."""
    return weight.reshape(1, -1, *([1] * (ndim - 2)))


def _nll_terms(logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> tuple[Tensor, Tensor]:
    """For log-probabilities logp (N, C, ...) and class indices y (N, ...): the per-element losses
    -weight[y] * logp[y], and the weights weight[y] (1 without class weights); both 0 where y is ignored."""
    counted = target != ignore_index
    safe = target.masked_fill(~counted, 0)  # ignored targets read class 0, masked out below
    picked = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    weights = counted.to(logp.dtype) if weight is None else where(counted, weight[safe], 0.0)
    return where(counted, -picked * weights, 0.0), weights


def _softplus(z: Tensor) -> Tensor:
    """log(1 + e^z) as logsumexp(0, z): stable for any z, and its gradient is sigmoid(z) everywhere (a
    form with |z| and max(z, 0) would get the gradient wrong at their kink z = 0)."""
    return stack([zeros_like(z), z], dim=-1).logsumexp(dim=-1)


def _clamped_log(x: Tensor) -> Tensor:
    """log(x) clamped to >= -100, as PyTorch's binary_cross_entropy, so x = 0 gives a finite loss. The
    inner where keeps log's gradient at x = 0 finite (0 instead of 0/0); the clamp passes none there."""
    positive = x > 0
    return where(positive, where(positive, x, 1.0).log().clamp(min=-100.0), -100.0)


# ---- class losses ------------------------------------------------------------------------------------

def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between softmax(input) along the class dim and the target.

    input: logits (N, C), (N, C, d1, ..., dk) or (C,). target: class indices (N, d1, ..., dk) int64 (()
    for input (C,)), where ignore_index marks elements that count for nothing; or class probabilities of
    the input's shape. weight: (C,) per-class weights. label_smoothing ls in [0, 1] mixes the target with
    the uniform distribution: loss = (1 - ls) * -logp[y] + ls * mean_c(-logp[c]) for index targets.
    'mean' divides by the summed weights of the counted index targets (their number without `weight`),
    or by N * d1 * ... * dk for probability targets. 'none' returns (N, d1, ..., dk)."""
    fn = "cross_entropy"
    input, target, weight = autocast_inputs(fn, input, target, weight)
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_args(fn, input, target, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    _check_class_input(fn, input, weight)
    if input.ndim == 1:
        return _batch_of_one(cross_entropy, input, target, reduction, weight=weight, ignore_index=ignore_index,
                             label_smoothing=label_smoothing)
    if target.shape == input.shape:
        return _cross_entropy_probabilities(input, target, weight, ignore_index, reduction, label_smoothing)
    _check_class_targets(fn, input, target, ignore_index)
    if weight is None:
        return _cross_entropy_fused(input, target, ignore_index, reduction, label_smoothing)
    return _cross_entropy_weighted(input, target, weight, ignore_index, reduction, label_smoothing)


def _cross_entropy_fused(input, target, ignore_index, reduction, label_smoothing) -> Tensor:
    """Index targets, no class weights: the fused CrossEntropy op on rows (N * d1 * ... * dk, C)."""
    classes = input.shape[1]
    rows = input if input.ndim == 2 else input.permute(0, *range(2, input.ndim), 1).reshape(-1, classes)
    losses = CrossEntropy.apply(rows, targets=target.reshape(-1).data, ignore_index=ignore_index,
                                label_smoothing=float(label_smoothing))
    counted = (target != ignore_index).to(input.dtype)
    return _reduce_weighted(losses.reshape(target.shape), counted, reduction)


def _cross_entropy_weighted(input, target, weight, ignore_index, reduction, label_smoothing) -> Tensor:
    """Index targets with class weights w, as PyTorch: (1 - ls) * -w[y] logp[y] + ls / C * -sum_c w[c]
    logp[c] per counted element; 'mean' divides by the sum of w[y] over the counted elements."""
    logp = log_softmax(input, dim=1)
    loss, weights = _nll_terms(logp, target, weight, ignore_index)
    if label_smoothing:
        smooth = -(logp * _along_classes(weight, input.ndim)).sum(1)
        smooth = where(target != ignore_index, smooth, 0.0)
        loss = (1 - label_smoothing) * loss + (label_smoothing / input.shape[1]) * smooth
    return _reduce_weighted(loss, weights, reduction)


def _cross_entropy_probabilities(input, target, weight, ignore_index, reduction, label_smoothing) -> Tensor:
    """Class-probability targets q: -sum_c w[c] q[c] logp[c] per element, with q smoothed to
    (1 - ls) q + ls / C; 'mean' averages over the elements (the class weights do not divide)."""
    fn = "cross_entropy"
    if not target.dtype.is_floating_point:
        raise TypeError(f"{fn}: a target of the input's shape {input.shape} holds class probabilities and must "
                        f"be floating point, got {target.dtype}")
    if ignore_index >= 0:
        raise ValueError(f"{fn}: ignore_index ({ignore_index}) is not supported for class-probability targets")
    classes = input.shape[1]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    logp = log_softmax(input, dim=1)
    if weight is not None:
        logp = logp * _along_classes(weight, input.ndim)
    return _reduce(-(logp * target).sum(1), reduction)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood -weight[y] * input[y] of log-probabilities input (N, C), (N, C, d1, ..., dk)
    or (C,), for class indices target (N, d1, ..., dk) int64. Elements whose target is ignore_index count
    for nothing; 'mean' divides by the summed weights of the counted targets (their number without
    `weight`), as PyTorch. 'none' returns (N, d1, ..., dk)."""
    fn = "nll_loss"
    input, target, weight = autocast_inputs(fn, input, target, weight)
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_args(fn, input, target, reduction)
    _check_class_input(fn, input, weight)
    if input.ndim == 1:
        return _batch_of_one(nll_loss, input, target, reduction, weight=weight, ignore_index=ignore_index)
    _check_class_targets(fn, input, target, ignore_index)
    return _reduce_weighted(*_nll_terms(input, target, weight, ignore_index), reduction)


# ---- elementwise losses ------------------------------------------------------------------------------

def _error_loss(fn: str, error, input, target, size_average, reduce, reduction, weight) -> Tensor:
    """An elementwise error (input, target) -> loss, reduced; with `weight` (the input's shape) the
    weighted sum, and for 'mean' divided by sum(weight), as PyTorch's mse_loss and l1_loss."""
    input, target, weight = autocast_inputs(fn, input, target, weight)
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_args(fn, input, target, reduction)
    _check_broadcast(fn, input, target)
    if weight is None:
        return _reduce(error(input - target), reduction)
    _check_weight(fn, "weight", weight, input.shape, broadcast=False)
    return _reduce_weighted(error(input - target) * weight, weight, reduction)


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Squared error (input - target)^2 per element, any shape (a different target shape broadcasts, with
    a warning). `weight`: per-element weights of the input's shape ('mean' divides by their sum)."""
    return _error_loss("mse_loss", lambda d: d * d, input, target, size_average, reduce, reduction, weight)


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """Absolute error |input - target| per element, any shape (a different target shape broadcasts, with
    a warning). `weight`: per-element weights of the input's shape ('mean' divides by their sum)."""
    return _error_loss("l1_loss", lambda d: d.abs(), input, target, size_average, reduce, reduction, weight)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                         reduce=None, reduction: str = "mean") -> Tensor:
    """-weight * (t log(x) + (1 - t) log(1 - x)) for probabilities x = input in [0, 1] and targets t of the
    same shape. Each log is clamped to >= -100, as in PyTorch, so x = 0 or 1 gives a finite loss; where a
    log is clamped it passes no gradient (PyTorch's kernel instead divides by max(x (1 - x), 1e-12)).
    `weight` broadcasts to the input's shape and rescales each element ('mean' divides by the count)."""
    fn = "binary_cross_entropy"
    input, target, weight = autocast_inputs(fn, input, target, weight)
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_args(fn, input, target, reduction)
    _check_same_shape(fn, input, target)
    _check_weight(fn, "weight", weight, input.shape)
    if input.numel() and ((input < 0) | (input > 1)).any().item():
        raise ValueError(f"{fn}: all elements of input must be probabilities in [0, 1]; for logits use "
                         f"binary_cross_entropy_with_logits")
    loss = -(target * _clamped_log(input) + (1 - target) * _clamped_log(1 - input))
    return _reduce(loss if weight is None else loss * weight, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of sigmoid(input) for logits x and targets t of the same shape:
    -weight * (pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))), computed stably (any
    |x|) as weight * ((1 - t) x + (1 + (pos_weight - 1) t) * softplus(-x)). `pos_weight` weighs the positive
    term, e.g. one value per class (C,) broadcast along the last dim; `weight` rescales each element."""
    fn = "binary_cross_entropy_with_logits"
    input, target, weight, pos_weight = autocast_inputs(fn, input, target, weight, pos_weight)
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_args(fn, input, target, reduction)
    _check_same_shape(fn, input, target)
    _check_weight(fn, "weight", weight, input.shape)
    _check_weight(fn, "pos_weight", pos_weight, input.shape)
    log_weight = 1.0 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * input + log_weight * _softplus(-input)
    return _reduce(loss if weight is None else loss * weight, reduction)
