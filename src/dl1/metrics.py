"""Classification metrics from a confusion matrix (NumPy; shared by the NumPy and the PyTorch MLP).

``confusion_matrix`` has rows = true class and columns = predicted class; the other metrics are read off it, so they
describe a whole split regardless of how it was batched.  A 0/0 (a class never predicted, or absent) counts as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(predictions: np.ndarray, targets: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """C×C float matrix of counts, ``cm[t, p]`` = number of samples of true class t predicted as p.

    ``predictions`` are scores/probabilities (S, C) (argmax taken, C from their width) or integer classes (S,)
    (then ``num_classes`` is required).  Classes absent from the batch keep their (zero) row and column.
    """
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.ndim == 2:
        num_classes = num_classes or predictions.shape[1]
        predictions = predictions.argmax(axis=1)
    elif num_classes is None:
        raise ValueError("integer predictions need num_classes")
    if predictions.shape != targets.shape or targets.ndim != 1:
        raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must hold one entry per sample")
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}), got [{targets.min()}, {targets.max()}]")
    flat = targets.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.float64)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den element-wise with 0 wherever den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """``(1 + β²) P R / (β² P + R)`` per class (0 where P = R = 0)."""
    b2 = beta * beta
    return _safe_divide((1 + b2) * precision * recall, b2 * precision + recall)


def confusion_matrix_to_metrics(confusion: np.ndarray, beta: float = 1.0) -> dict[str, Any]:
    """``accuracy`` (trace / total) and per-class ``precision`` (diag / column sums), ``recall`` (diag / row sums)
    and ``f1_beta`` (the F-β score) as arrays of length C."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {cm.shape}")
    diag = np.diag(cm)
    precision = _safe_divide(diag, cm.sum(axis=0))
    recall = _safe_divide(diag, cm.sum(axis=1))
    return {"accuracy": float(_safe_divide(diag.sum(), cm.sum())), "precision": precision, "recall": recall,
            "f1_beta": f_beta(precision, recall, beta)}


def per_class_report(confusion: np.ndarray, classes: list[str], betas: tuple[float, ...] = (0.1, 1.0, 10.0)
                     ) -> dict[str, Any]:
    """JSON-ready accuracy, confusion matrix and per-class precision/recall/F-β for several β."""
    base = confusion_matrix_to_metrics(confusion)
    return {"accuracy": base["accuracy"], "classes": list(classes), "confusion_matrix": np.asarray(confusion).tolist(),
            "precision": base["precision"].tolist(), "recall": base["recall"].tolist(),
            "f_beta": {f"{b:g}": confusion_matrix_to_metrics(confusion, b)["f1_beta"].tolist() for b in betas}}


def test_report(probs: np.ndarray, targets: np.ndarray, loss: float, classes: list[str]) -> dict[str, Any]:
    """summary.json's ``test`` block of a classifier: loss, accuracy, confusion matrix, per-class precision/recall/F-β
    from the predicted probabilities ``(S, C)``."""
    cm = confusion_matrix(probs, targets, num_classes=len(classes))
    return {"loss": loss, **per_class_report(cm, classes)}
