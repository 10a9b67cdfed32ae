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


# -- pixel level (anomaly maps) ------------------------------------------------------------------------
def _check_maps(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(maps, dtype=np.float64)
    g = np.asarray(masks).astype(bool)
    if m.shape != g.shape or m.ndim != 3:
        raise InputError(f"anomaly maps {m.shape} and masks {g.shape} must both be (N, H, W)")
    if not np.isfinite(m).all():
        raise InputError("anomaly maps contain NaN/inf; cannot compute pixel metrics")
    if not g.any() or g.all():
        raise InputError("pixel metrics need masks with both anomalous and normal pixels")
    return m, g


def pixel_auroc(maps, masks) -> float:
    """AUROC of the anomaly maps over all pixels of all images (anomalib's pixel AUROC): (N, H, W) each."""
    m, g = _check_maps(maps, masks)
    return float(roc_auc_score(g.reshape(-1), m.reshape(-1)))


def pro_curve(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve (Bergmann et al., MVTec AD; anomalib's PRO): for every threshold,
    the false-positive rate over all normal pixels (mask 0, in every image) and the mean over the
    connected regions of the masks (8-connectivity, per image) of the fraction of each region above
    the threshold. Returns (fpr, pro), both starting at 0, one point per distinct score."""
    from scipy import ndimage

    m, g = _check_maps(maps, masks)
    labels = np.zeros(g.shape, dtype=np.int64)
    n_regions = 0
    for i in range(g.shape[0]):
        lab, n = ndimage.label(g[i], structure=np.ones((3, 3)))
        labels[i][lab > 0] = lab[lab > 0] + n_regions
        n_regions += n
    flat, lab = m.reshape(-1), labels.reshape(-1)
    sizes = np.bincount(lab, minlength=n_regions + 1)
    weight = np.zeros(flat.shape[0])
    weight[lab > 0] = 1.0 / (n_regions * sizes[lab[lab > 0]])  # each region counts once, whatever its size
    negative = (lab == 0).astype(np.float64)
    order = np.argsort(-flat, kind="stable")
    fpr = np.cumsum(negative[order]) / negative.sum()
    pro = np.cumsum(weight[order])
    last = np.r_[np.flatnonzero(np.diff(flat[order]) != 0), flat.shape[0] - 1]  # ties: one point per score
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit`` (0.3, as in MVTec AD and anomalib), divided by
    ``fpr_limit`` so a perfect map scores 1; the curve is cut at the limit by linear interpolation."""
    fpr, pro = pro_curve(maps, masks)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:
        i = int(np.searchsorted(fpr, fpr_limit))
        t = (fpr_limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, pro[i - 1] + t * (pro[i] - pro[i - 1])]
    return float(np.trapezoid(y, x) / fpr_limit)
