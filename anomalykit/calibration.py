"""Calibrated alarms: split-conformal p-values, a false-alarm rate the user sets, Benjamini-Hochberg
across a batch, and a drift check (the ``calibration`` parameter; one home for the policy).

With ``calibration`` > 0, ``fit`` holds out a seeded part of the normal training rows
(:func:`hold_out`), never trains on them (nor fits the input scaling on them), and scores them
after training like new rows; their sorted scores are saved with the model. For a new row with
score s, its conformal p-value is

    p(x) = (1 + #{calibration scores >= s}) / (n + 1)                 (Bates et al. 2023, eq. 2)

If the calibration rows and a new normal row are exchangeable (drawn from the same distribution,
independently of the training rows), P(p(x) <= alpha) <= alpha for every alpha: flagging
``p <= alpha`` has a marginal false-alarm rate of at most alpha. Benjamini-Hochberg on the
p-values of a batch (:func:`benjamini_hochberg`) controls the false discovery rate of the
flags at q (Bates, Candes, Lei, Romano, Sesia, "Testing for outliers with conformal p-values",
Annals of Statistics 2023: the conformal p-values are PRDS, so BH applies). What is not
guaranteed: a false-alarm rate conditional on a kind of input, calibration rows that hold
anomalies, or data that drifted since calibration (:func:`drift_test` looks for the last).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, InputError
from .seeds import stream_seed


def calibration_count(calibration: float, n_normal: int) -> int:
    """How many of ``n_normal`` normal rows ``calibration`` holds out: a fraction in (0, 1) of
    them (rounded, at least 1), or a count >= 1; 0 = none. Leaves at least one row to train on."""
    if calibration <= 0:
        return 0
    if calibration < 1:
        count = max(1, int(round(calibration * n_normal)))
    elif float(calibration).is_integer():
        count = int(calibration)
    else:
        raise ConfigError(f"calibration must be a fraction in (0, 1) or a whole number of rows; got {calibration}")
    if count >= n_normal:
        raise InputError(f"calibration={calibration} holds out {count} of the {n_normal} normal rows, leaving none to "
                         "train on; lower it")
    return count


def hold_out(X, labels, calibration: float, seed: int):
    """``(X_train, labels_train, X_calibration)``: a seeded random ``calibration`` share of the normal
    rows (``labels == 0``, or every row without labels) taken out of ``X``. ``X`` a validated tensor
    or lazy rows (the calibration rows stay lazy too); the rows keep their order."""
    n = X.shape[0]
    normal = np.arange(n) if labels is None else np.flatnonzero(labels.numpy() == 0)
    count = calibration_count(calibration, len(normal))
    g = torch.Generator().manual_seed(stream_seed(seed, "calibration"))
    chosen = np.sort(normal[torch.randperm(len(normal), generator=g)[:count].numpy()])
    keep = np.setdiff1d(np.arange(n), chosen)
    return _take(X, keep), (None if labels is None else labels[torch.from_numpy(keep)]), _take(X, chosen)


def _take(X, index: np.ndarray):
    from .lazy_rows import take_rows

    return take_rows(X, index)


def p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values (N,) of ``scores`` against the sorted ``calibration_scores`` (n,):
    (1 + #{calibration >= s}) / (n + 1); higher score -> smaller p-value."""
    cal = np.asarray(calibration_scores, dtype=np.float64)
    n_at_least = len(cal) - np.searchsorted(cal, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + n_at_least) / (len(cal) + 1.0)


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Flags (N,) int64 of the Benjamini-Hochberg procedure at level ``q``: with p-values sorted,
    k = the largest i such that p_(i) <= i q / N; the k smallest p-values are flagged."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    flags = np.zeros(m, dtype=np.int64)
    if m == 0:
        return flags
    order = np.argsort(p, kind="stable")
    below = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m)
    if len(below):
        flags[order[: below[-1] + 1]] = 1
    return flags


def check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0 < value < 1:
        raise ConfigError(f"{name} must be in (0, 1); got {value}")
    return value


@dataclass(frozen=True)
class DriftResult:
    """A two-sample Kolmogorov-Smirnov test of a batch's scores against the calibration scores:
    ``statistic`` (the largest gap between their distribution functions), ``p_value`` (small: the
    batch does not look like the calibration data), the sizes, and ``mean_p_value`` of the batch's
    conformal p-values (about 0.5 for data like the calibration rows)."""

    statistic: float
    p_value: float
    n: int
    n_calibration: int
    mean_p_value: float

    def drifted(self, level: float = 0.01) -> bool:
        return self.p_value < level


def drift_test(calibration_scores: np.ndarray, scores: np.ndarray) -> DriftResult:
    """:class:`DriftResult` of ``scores`` (a batch of presumed-normal rows) against the calibration scores."""
    from scipy.stats import ks_2samp

    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        raise InputError(f"drift needs a batch of at least 2 rows; got {len(scores)}")
    result = ks_2samp(scores, calibration_scores)
    return DriftResult(float(result.statistic), float(result.pvalue), len(scores), len(calibration_scores),
                       float(p_values(calibration_scores, scores).mean()))


def not_calibrated(method: str, what: str) -> ConfigError:
    return ConfigError(f"{method}: {what} needs calibration scores, and this detector was fitted without them; create it "
                       "with calibration=0.2 (a held-out share of the normal training rows) and fit again")
