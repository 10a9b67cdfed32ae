"""The threshold rule and PyOD's probability and confidence math, from a detector's training scores.

Pure functions of numpy arrays (``train`` = the training scores ``decision_scores_``, higher = more
anomalous), computed as PyOD computes them (tests/test_sklearn_interop.py compares with PyOD).
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

PROBA_METHODS = ("linear", "unify")


def threshold_from_scores(train_scores: np.ndarray, contamination: float) -> float:
    """The threshold rule (PyOD's): the (1 - contamination) quantile of the training scores."""
    return float(np.quantile(np.asarray(train_scores, dtype=np.float64), 1.0 - contamination))


def check_proba_method(method: str) -> None:
    """One-line ConfigError unless ``method`` is one of :data:`PROBA_METHODS`."""
    if method not in PROBA_METHODS:
        raise ConfigError(f"predict_proba method must be 'linear' or 'unify'; got {method!r}")


def outlier_probability(scores: np.ndarray, train: np.ndarray, method: str = "linear") -> np.ndarray:
    """(N, 2) probabilities of [normal, anomaly]. ``linear``: the scores min-max scaled by the training
    scores' range, clipped to [0, 1]; ``unify``: erf((s − mean) / (std √2)) of the training scores,
    clipped to [0, 1] (Kriegel et al., "Interpreting and unifying outlier scores")."""
    check_proba_method(method)
    if method == "linear":
        lo, hi = float(train.min()), float(train.max())
        p = (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
    else:
        from scipy.special import erf

        std = float(train.std())
        p = erf((scores - float(train.mean())) / (std * np.sqrt(2))) if std > 0 else np.zeros_like(scores)
    p = np.clip(p, 0.0, 1.0)
    return np.stack([1.0 - p, p], axis=1)


def prediction_confidence(scores: np.ndarray, train: np.ndarray, threshold: float, contamination: float) -> np.ndarray:
    """Confidence in each ``score > threshold`` label, in [0, 1] (PyOD's ExCeeD: Perini et al., 2020)."""
    from scipy.stats import binom

    train = np.sort(train)
    n = len(train)
    n_below = np.searchsorted(train, scores, side="right")  # training scores <= each score
    posterior = (1.0 + n_below) / (2.0 + n)
    confidence = 1.0 - binom.cdf(n - int(n * contamination), n, posterior)
    normal = scores <= threshold
    confidence[normal] = 1.0 - confidence[normal]
    return confidence
