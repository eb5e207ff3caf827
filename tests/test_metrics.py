"""minigrad.metrics against scikit-learn: accuracy, precision, recall, F1 (every average and
zero_division) and the confusion matrix, on tensors, arrays and lists, labels and scores."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import metrics

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn (test extra) is not installed")

METRICS = [(metrics.precision, sk.precision_score), (metrics.recall, sk.recall_score),
           (metrics.f1_score, sk.f1_score)]


@st.composite
def labelled(draw, max_classes=6, max_n=30):
    """(pred, target, num_classes): random labels, often with classes absent from one side or both."""
    num_classes = draw(st.integers(1, max_classes))
    n = draw(st.integers(1, max_n))
    labels = st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)
    return np.array(draw(labels), dtype=np.int64), np.array(draw(labels), dtype=np.int64), num_classes


def as_value(result):
    return result.numpy() if isinstance(result, mg.Tensor) else result


@pytest.mark.parametrize("ours, theirs", METRICS, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
@pytest.mark.parametrize("zero_division", [0, 1, np.nan], ids=["0", "1", "nan"])
@given(data=labelled())
def test_scores_match_sklearn(ours, theirs, average, zero_division, data):
    pred, target, num_classes = data
    expected = theirs(target, pred, average=average, labels=np.arange(num_classes), zero_division=zero_division)
    got = ours(mg.tensor(pred), mg.tensor(target), average=average, num_classes=num_classes,
               zero_division=zero_division)
    if average is None:
        assert isinstance(got, mg.Tensor) and got.dtype is mg.float64 and got.shape == (num_classes,)
    else:
        assert type(got) is float
    np.testing.assert_allclose(as_value(got), expected, rtol=1e-12, equal_nan=True)


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")  # sklearn's, about its own API
@given(data=labelled())
def test_accuracy_and_confusion_matrix_match_sklearn(data):
    pred, target, num_classes = data
    assert metrics.accuracy(pred, target) == pytest.approx(sk.accuracy_score(target, pred), rel=1e-12)
    matrix = metrics.confusion_matrix(mg.tensor(pred), mg.tensor(target), num_classes=num_classes)
    assert isinstance(matrix, mg.Tensor) and matrix.dtype is mg.int64
    np.testing.assert_array_equal(matrix.numpy(), sk.confusion_matrix(target, pred, labels=np.arange(num_classes)))


def test_num_classes_defaults_to_largest_label_plus_one():
    pred, target = [0, 2, 2, 4], [0, 2, 1, 4]
    assert metrics.confusion_matrix(pred, target).shape == (5, 5)
    assert metrics.f1_score(pred, target) == pytest.approx(
        sk.f1_score(target, pred, average="macro", labels=np.arange(5), zero_division=0))


def test_scores_are_argmaxed():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 5)).astype(np.float32)
    target = rng.integers(0, 5, 40)
    pred = logits.argmax(axis=1)
    assert metrics.accuracy(mg.tensor(logits), mg.tensor(target)) == sk.accuracy_score(target, pred)
    assert metrics.precision(logits, target, average="weighted") == pytest.approx(
        sk.precision_score(target, pred, average="weighted", labels=np.arange(5), zero_division=0))
    np.testing.assert_array_equal(metrics.confusion_matrix(logits, target).numpy(),
                                  sk.confusion_matrix(target, pred, labels=np.arange(5)))


def test_multidimensional_labels_are_flattened():
    rng = np.random.default_rng(1)
    pred, target = rng.integers(0, 3, (4, 6)), rng.integers(0, 3, (4, 6))
    assert metrics.accuracy(pred, target) == pytest.approx(sk.accuracy_score(target.ravel(), pred.ravel()))
    assert metrics.recall(pred, target, average="micro") == pytest.approx(
        sk.recall_score(target.ravel(), pred.ravel(), average="micro"))


def test_requires_grad_scores_and_empty_input():
    logits = mg.randn(3, 4, requires_grad=True)
    assert 0.0 <= metrics.accuracy(logits, mg.tensor([0, 1, 2])) <= 1.0
    assert np.isnan(metrics.accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: metrics.accuracy([0, 1, 2], [0, 1]), ValueError, r"shape \(3,\).*shape \(2,\)"),
    (lambda: metrics.accuracy(np.array([0.0, 1.0]), [0, 1]), TypeError, "pred must hold integer.*float64"),
    (lambda: metrics.accuracy([0, 1], np.array([0.0, 1.0])), TypeError, "target must hold integer"),
    (lambda: metrics.confusion_matrix([0, 3], [0, 1], num_classes=3), ValueError, r"pred has labels outside \[0, 3\)"),
    (lambda: metrics.recall([0, 1], [-1, 1]), ValueError, "target has labels outside"),
    (lambda: metrics.precision(np.zeros((2, 4)), [0, 1], num_classes=3), ValueError, "scores for 4 classes"),
    (lambda: metrics.f1_score([0, 1], [0, 1], average="binary"), ValueError, "average must be one of"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
