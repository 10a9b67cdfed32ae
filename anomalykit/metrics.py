"""Detection metrics, all from scikit-learn. Labels: 1 = anomaly (the positive class)."""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from .errors import InputError


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if s.shape != y.shape:
        raise InputError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN/inf; cannot compute metrics")
    if len(np.unique(y)) != 2:
        raise InputError("labels must contain both normal (0) and anomalous (1) samples")
    return s, y


def detection_metrics(scores, labels, threshold: float) -> dict[str, float]:
    """AUROC, AUPR (average precision) and precision/recall/F1 of ``scores > threshold``."""
    s, y = _check(scores, labels)
    pred = (s > threshold).astype(np.int64)
    p, r, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f1),
    }


def topk_metrics(scores, labels, ratio: float | None = None) -> dict[str, float]:
    """Flag the top ``ratio`` of scores (default: the true anomaly ratio) and report P/R/F1.

    This is the top-k% protocol of the tabular experiments (MAE-simplex paper, sec. 4).
    """
    s, y = _check(scores, labels)
    ratio = float(y.mean()) if ratio is None else ratio
    k = max(1, int(math.ceil(ratio * len(s))))
    pred = np.zeros_like(y)
    pred[np.argsort(-s, kind="stable")[:k]] = 1
    p, r, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return {"topk_ratio": ratio, "topk_precision": float(p), "topk_recall": float(r), "topk_f1": float(f1)}
