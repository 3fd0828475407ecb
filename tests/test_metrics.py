"""dl1.metrics against hand-computed confusion matrices, precision, recall and F-β."""

from __future__ import annotations

import numpy as np
import pytest

from dl1.metrics import confusion_matrix, confusion_matrix_to_metrics, f_beta, per_class_report


def one_hot_scores(classes, C):
    return np.eye(C)[classes] + 0.01  # (S, C) scores whose argmax is `classes`


def test_confusion_matrix_by_hand():
    targets = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(one_hot_scores(predicted, 3), targets)
    expected = np.array([[1, 1, 0],    # true 0: one right, one called 1
                         [0, 1, 0],    # true 1: right
                         [1, 0, 2]])   # true 2: two right, one called 0
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.float64
    np.testing.assert_array_equal(confusion_matrix(predicted, targets, num_classes=3), expected)


def test_confusion_matrix_keeps_absent_classes():
    # classes 1 and 3 of 4 never occur as targets and 3 is never predicted: the matrix is still 4x4
    targets = np.array([0, 2, 2])
    cm = confusion_matrix(one_hot_scores(np.array([0, 2, 1]), 4), targets)
    assert cm.shape == (4, 4)
    np.testing.assert_array_equal(cm.sum(axis=1), [1, 0, 2, 0])
    np.testing.assert_array_equal(cm.sum(axis=0), [1, 1, 1, 0])
    assert cm[2, 1] == 1 and cm[2, 2] == 1
    assert confusion_matrix(np.zeros((0, 3)), np.zeros(0, dtype=int)).shape == (3, 3)


def test_metrics_by_hand():
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 8]])
    m = confusion_matrix_to_metrics(cm)
    assert m["accuracy"] == pytest.approx(16 / 20)
    np.testing.assert_allclose(m["precision"], [5 / 7, 3 / 4, 8 / 9])
    np.testing.assert_allclose(m["recall"], [5 / 6, 3 / 6, 8 / 8])
    p, r = np.array([5 / 7, 3 / 4, 8 / 9]), np.array([5 / 6, 1 / 2, 1.0])
    np.testing.assert_allclose(m["f1_beta"], 2 * p * r / (p + r))
    f2 = confusion_matrix_to_metrics(cm, beta=2.0)["f1_beta"]
    np.testing.assert_allclose(f2, 5 * p * r / (4 * p + r))
    # beta -> 0 weighs precision only, beta -> inf recall only
    np.testing.assert_allclose(confusion_matrix_to_metrics(cm, beta=1e-4)["f1_beta"], p, rtol=1e-6)
    np.testing.assert_allclose(confusion_matrix_to_metrics(cm, beta=1e4)["f1_beta"], r, rtol=1e-6)


def test_zero_over_zero_is_zero():
    cm = np.array([[3, 0, 0],
                   [1, 0, 0],   # class 1 never predicted correctly, never predicted at all
                   [0, 0, 0]])  # class 2 absent
    m = confusion_matrix_to_metrics(cm)
    np.testing.assert_allclose(m["precision"], [3 / 4, 0, 0])
    np.testing.assert_allclose(m["recall"], [1, 0, 0])
    np.testing.assert_allclose(m["f1_beta"], [2 * 0.75 / 1.75, 0, 0])
    assert np.all(np.isfinite(m["f1_beta"]))
    assert confusion_matrix_to_metrics(np.zeros((2, 2)))["accuracy"] == 0.0
    assert f_beta(np.array([0.0]), np.array([0.0]), 10.0)[0] == 0.0


def test_metrics_independent_of_batching():
    rng = np.random.default_rng(0)
    scores, targets = rng.standard_normal((100, 5)), rng.integers(0, 5, 100)
    whole = confusion_matrix(scores, targets)
    parts = sum(confusion_matrix(scores[i:i + 7], targets[i:i + 7]) for i in range(0, 100, 7))
    np.testing.assert_array_equal(whole, parts)
    assert confusion_matrix_to_metrics(whole)["accuracy"] == pytest.approx((scores.argmax(1) == targets).mean())


def test_per_class_report_and_errors():
    cm = np.array([[2, 0], [1, 1]])
    report = per_class_report(cm, ["a", "b"])
    assert report["classes"] == ["a", "b"] and report["confusion_matrix"] == [[2, 0], [1, 1]]
    assert set(report["f_beta"]) == {"0.1", "1", "10"}
    assert report["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0, 1]))  # integer predictions need num_classes
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((3, 2)), np.array([0, 1, 2]))  # label 2 with 2 classes
    with pytest.raises(ValueError):
        confusion_matrix_to_metrics(np.zeros((2, 3)))


def test_per_class_report_uses_each_beta():
    """F0.1, F1 and F10 by hand: each β weighs precision and recall differently, so the three lists differ."""
    cm = np.array([[8, 2, 0],     # class 0: P = 8/9,  R = 8/10
                   [1, 3, 4],     # class 1: P = 3/5,  R = 3/8
                   [0, 0, 2]])    # class 2: P = 2/6,  R = 2/2
    p, r = np.array([8 / 9, 3 / 5, 2 / 6]), np.array([8 / 10, 3 / 8, 1.0])
    report = per_class_report(cm, ["a", "b", "c"])
    for key, beta in (("0.1", 0.1), ("1", 1.0), ("10", 10.0)):
        b2 = beta * beta
        np.testing.assert_allclose(report["f_beta"][key], (1 + b2) * p * r / (b2 * p + r), rtol=1e-12, err_msg=key)
    # β = 0.1 is close to precision, β = 10 close to recall: F1 reported under either key would be far off
    np.testing.assert_allclose(report["f_beta"]["0.1"], p, atol=0.03)
    np.testing.assert_allclose(report["f_beta"]["10"], r, atol=0.03)
    assert max(abs(a - b) for a, b in zip(report["f_beta"]["0.1"], report["f_beta"]["1"], strict=True)) > 0.1
    assert max(abs(a - b) for a, b in zip(report["f_beta"]["10"], report["f_beta"]["1"], strict=True)) > 0.1
    np.testing.assert_allclose(report["precision"], p)
    np.testing.assert_allclose(report["recall"], r)
    custom = per_class_report(cm, ["a", "b", "c"], betas=(2.0,))
    assert set(custom["f_beta"]) == {"2"}
    np.testing.assert_allclose(custom["f_beta"]["2"], 5 * p * r / (4 * p + r), rtol=1e-12)
