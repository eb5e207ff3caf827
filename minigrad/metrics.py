"""Classification metrics: accuracy, precision, recall, F1 and the confusion matrix.

Each takes `pred` and `target` as minigrad tensors, NumPy arrays or lists. `target` holds integer
class labels in [0, num_classes); `pred` holds labels of the same shape, or scores (logits or
probabilities) with one more trailing dim of size num_classes, whose argmax is the predicted label:

    accuracy(model(x), y)                                   # logits (N, C), labels (N,)
    f1_score(pred, y, average="macro")                      # a Python float
    precision(pred, y, average=None)                        # a float64 tensor (C,), one value per class
    confusion_matrix(pred, y)                               # an int64 tensor (C, C): rows true, columns predicted

Classes are 0 .. num_classes - 1 (by default the largest label seen, plus one). A ratio with a zero
denominator (a class never predicted, for precision) is `zero_division` (0, 1 or nan); averages skip
nan values, as scikit-learn's do. Metrics are not differentiable: they run on the host in NumPy.
"""
from __future__ import annotations

import numpy as np

from minigrad.creation import from_numpy
from minigrad.tensor import Tensor

__all__ = ["accuracy", "precision", "recall", "f1_score", "confusion_matrix"]

_AVERAGES = ("macro", "micro", "weighted", None)


def _as_array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _labels(pred, target, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat int64 label arrays (pred, target) and the number of classes, after validation."""
    pred, target = _as_array(pred), _as_array(target)
    if pred.ndim == target.ndim + 1:  # scores: the predicted class is the argmax of the last dim
        if num_classes is not None and pred.shape[-1] != num_classes:
            raise ValueError(f"pred holds scores for {pred.shape[-1]} classes but num_classes is {num_classes}")
        num_classes = pred.shape[-1]
        pred = pred.argmax(axis=-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred of shape {pred.shape} does not match target of shape {target.shape} "
                         f"(pred holds labels of the target's shape, or scores with one more dim)")
    for name, labels in (("pred", pred), ("target", target)):
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    pred, target = pred.reshape(-1).astype(np.int64), target.reshape(-1).astype(np.int64)
    if num_classes is None:
        num_classes = int(max(pred.max(initial=-1), target.max(initial=-1))) + 1
    for name, labels in (("pred", pred), ("target", target)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {labels.min()}, max {labels.max()}")
    return pred, target, num_classes


def _confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    # Each (true, predicted) pair is one cell of the flattened C x C matrix: count them all at once.
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def confusion_matrix(pred, target, num_classes: int | None = None) -> Tensor:
    """(C, C) int64 tensor whose [i, j] entry counts samples of true class i predicted as class j."""
    return from_numpy(_confusion(*_labels(pred, target, num_classes)))


def accuracy(pred, target) -> float:
    """The fraction of samples whose predicted label equals the target (nan for no samples)."""
    pred, target, _ = _labels(pred, target)
    return float(np.mean(pred == target)) if target.size else float("nan")


def _ratio(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    safe = np.where(denominator == 0, 1, denominator)
    return np.where(denominator == 0, zero_division, numerator / safe)


def _average(values: np.ndarray, average, support: np.ndarray):
    """Per-class values reduced by `average` ('macro', 'weighted'; None keeps them), skipping nan."""
    if average is None:
        return from_numpy(values.astype(np.float64))
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    weights = support[keep] if average == "weighted" and support[keep].sum() > 0 else None
    return float(np.average(values[keep], weights=weights))


def _scores(pred, target, average, num_classes, zero_division, which: str):
    """Precision, recall or F1 from the per-class counts of true positives, false positives and
    false negatives: precision = tp / (tp + fp), recall = tp / (tp + fn),
    F1 = 2 tp / (2 tp + fp + fn). 'micro' pools the counts of all classes first."""
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    matrix = _confusion(*_labels(pred, target, num_classes))
    tp = np.diag(matrix)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    numerator, denominator = {"precision": (tp, tp + fp), "recall": (tp, tp + fn),
                              "f1": (2 * tp, 2 * tp + fp + fn)}[which]
    values = _ratio(numerator, denominator, zero_division)
    return float(values[0]) if average == "micro" else _average(values, average, support=tp + fn)


def precision(pred, target, average="macro", num_classes: int | None = None, zero_division: float = 0):
    """Of the samples predicted as each class, the fraction that belong to it, averaged by `average`:
    'macro' (mean over classes), 'weighted' (by class support), 'micro' (pooled counts) or None
    (a per-class float64 tensor)."""
    return _scores(pred, target, average, num_classes, zero_division, "precision")


def recall(pred, target, average="macro", num_classes: int | None = None, zero_division: float = 0):
    """Of the samples of each class, the fraction predicted as it, averaged as in `precision`."""
    return _scores(pred, target, average, num_classes, zero_division, "recall")


def f1_score(pred, target, average="macro", num_classes: int | None = None, zero_division: float = 0):
    """The harmonic mean of precision and recall per class, averaged as in `precision`."""
    return _scores(pred, target, average, num_classes, zero_division, "f1")
