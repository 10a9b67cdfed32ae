"""Image-level metrics (anomalykit.metrics) on hand-counted cases: AUROC, AUPR, precision/recall/F1
of a threshold, the top-k% protocol, and the one-line errors. Pixel metrics: tests/test_anomaly_maps.py."""
from __future__ import annotations

import numpy as np
import pytest

from anomalykit import InputError
from anomalykit.metrics import aupro, detection_metrics, pixel_auroc, topk_metrics

# eight rows: three anomalies (1); scores rank two anomalies first, one anomaly below two normals
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
LABELS = np.array([1, 1, 0, 0, 1, 0, 0, 0])


def test_detection_metrics_by_hand():
    """AUROC: of the 3 x 5 anomaly/normal pairs, 13 are ordered right (the anomaly at 0.5 is below
    two normals): 13/15. AP: precision at each anomaly's rank, 1/1, 2/2, 3/5, averaged: (1 + 1 + 0.6)/3.
    Threshold 0.55: flagged 0.9, 0.8, 0.7, 0.6: TP 2, FP 2, FN 1 -> P 0.5, R 2/3, F1 4/7."""
    m = detection_metrics(SCORES, LABELS, threshold=0.55)
    assert m["auroc"] == pytest.approx(13 / 15)
    assert m["aupr"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert (m["precision"], m["recall"], m["f1"]) == (pytest.approx(0.5), pytest.approx(2 / 3), pytest.approx(4 / 7))


def test_a_score_equal_to_the_threshold_is_not_flagged():
    m = detection_metrics(SCORES, LABELS, threshold=0.8)  # only 0.9 is above
    assert (m["precision"], m["recall"]) == (pytest.approx(1.0), pytest.approx(1 / 3))


def test_nothing_flagged_gives_zero_precision_not_an_error():
    m = detection_metrics(SCORES, LABELS, threshold=5.0)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_topk_flags_the_true_anomaly_ratio_by_default():
    """Ratio 3/8 -> the top 3 (0.9, 0.8, 0.7): TP 2 of 3 flagged, 2 of 3 anomalies."""
    m = topk_metrics(SCORES, LABELS)
    assert m == {"topk_ratio": 3 / 8, "topk_precision": pytest.approx(2 / 3), "topk_recall": pytest.approx(2 / 3),
                 "topk_f1": pytest.approx(2 / 3)}
    # ratio 0.25 of 8 rows -> ceil(2) = 2 flagged: both anomalies; ratio 0.3 -> ceil(2.4) = 3
    assert topk_metrics(SCORES, LABELS, ratio=0.25)["topk_precision"] == pytest.approx(1.0)
    assert topk_metrics(SCORES, LABELS, ratio=0.3)["topk_precision"] == pytest.approx(2 / 3)
    # a tiny ratio still flags one row
    assert topk_metrics(SCORES, LABELS, ratio=1e-6)["topk_recall"] == pytest.approx(1 / 3)


def test_topk_ties_keep_the_first_rows():
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    labels = np.array([0, 1, 0, 1])
    # two flagged of four tied-first rows: a stable sort keeps rows 0 and 1 (one anomaly)
    assert topk_metrics(scores, labels)["topk_precision"] == pytest.approx(0.5)


@pytest.mark.parametrize("scores, labels, match", [
    (SCORES[:7], LABELS, "7 scores but 8 labels"),
    (np.r_[SCORES[:7], np.nan], LABELS, "scores contain NaN/inf"),
    (SCORES, np.zeros(8), "both normal \\(0\\) and anomalous \\(1\\)"),
    (SCORES, np.ones(8), "both normal \\(0\\) and anomalous \\(1\\)"),
])
def test_bad_inputs_are_one_line_errors(scores, labels, match):
    with pytest.raises(InputError, match=match):
        detection_metrics(scores, labels, 0.5)
    with pytest.raises(InputError, match=match):
        topk_metrics(scores, labels)


def test_pixel_metric_inputs_are_checked():
    maps, masks = np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool)
    masks[0, 0, 0] = True
    with pytest.raises(InputError, match=r"must both be \(N, H, W\)"):
        pixel_auroc(maps[0], masks[0])
    with pytest.raises(InputError, match=r"must both be \(N, H, W\)"):
        aupro(maps, masks[:1])
    bad = maps.copy()
    bad[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="anomaly maps contain NaN/inf"):
        pixel_auroc(bad, masks)
    with pytest.raises(InputError, match="both anomalous and normal pixels"):
        pixel_auroc(maps, np.ones_like(masks))


def test_aupro_interpolates_the_curve_at_the_fpr_limit():
    """Two images of four pixels; region: image 0 pixels 0-1. Scores: region 4, 1; normal 3, 2 in
    image 0 and 0, 0, 0, 0 in image 1 (six normal pixels). Thresholds down: 4 -> PRO 0.5, FPR 0;
    3 -> FPR 1/6; 2 -> FPR 2/6; 1 -> PRO 1. Up to FPR 0.25: PRO 0.5 all the way: area 0.125,
    normalised 0.5. Up to FPR 0.5 the PRO rises linearly from 0.5 at 1/3 to 1 at 1/3 (a vertical
    step) and stays: area 0.5/3 + 1 * (0.5 - 1/3) -> normalised 2/3."""
    maps = np.array([[[4.0, 1.0], [3.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], bool)
    assert aupro(maps, masks, fpr_limit=0.25) == pytest.approx(0.5)
    assert aupro(maps, masks, fpr_limit=0.5) == pytest.approx(2 / 3)
