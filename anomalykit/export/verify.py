"""The parity check of an export: the written file, loaded back, must reproduce ``score_samples``
at batch sizes other than the traced one, deterministically (see :mod:`anomalykit.export`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnomalyKitError, ExportError, first_line
from .graph import example_rows
from .scorer import ExportedScorer, scorer_format

#: A fitted :class:`anomalykit.Detector` (not imported here: detector.py imports this package).
Detector = Any

#: Largest allowed deviation of exported scores from ``score_samples``, relative to the
#: largest score of the check (a per-row relative error is meaningless for scores near 0,
#: e.g. AMA's −log A-score, which crosses 0).
PARITY_RTOL = 1e-4
_CHECK_ROWS = (1, 7)  # batch sizes of the parity check (neither is the traced one)


def _verify(det: Detector, path: Path, fixed: int | None) -> tuple[float, tuple[int, ...]]:
    """Load the written file back and compare its scores with ``score_samples`` (see :mod:`anomalykit.export`)."""
    sizes = (fixed, fixed) if fixed else _CHECK_ROWS
    rows = example_rows(det, sum(sizes), seed=2)
    reference = det.score_samples(rows)
    try:
        scorer = ExportedScorer(path)
        parts, p_parts, lo = [], [], 0
        for size in sizes:
            outputs = scorer.run_graph_outputs(rows[lo : lo + size])
            parts.append(outputs[0])
            p_parts.append(outputs[1] if len(outputs) > 1 else None)
            lo += size
        again = scorer.run_graph(rows[: sizes[0]])
    except AnomalyKitError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{det.name}: the exported {scorer_format(path)} graph failed when loaded back and run on batches "
                          f"of {' and '.join(map(str, sizes))} rows ({type(exc).__name__}: {first_line(exc)}); the traced "
                          "score depends on the batch size") from exc
    for size, part in zip(sizes, parts):
        if np.shape(part) != (size,):
            raise ExportError(f"{det.name}: the exported graph returns scores of shape {tuple(np.shape(part))} for {size} "
                              "row(s); the traced score depends on the traced batch size (a tensor made from Python values "
                              "or numpy inside _score?)")
    got = np.concatenate(parts).astype(np.float64)
    scale = max(float(np.abs(reference).max()), 1e-12)
    deviation = float(np.abs(got - reference).max()) / scale
    if not np.array_equal(again, parts[0]):
        raise ExportError(f"{det.name}: the exported graph gives different scores for the same rows on a second call; "
                          "scoring must be deterministic")
    if det.calibration_scores_ is not None:  # the graph's p-values are those of its own scores
        from ..calibration import p_values

        got_p = np.concatenate([np.asarray(p, dtype=np.float64) for p in p_parts]) if all(p is not None for p in p_parts) else None
        if got_p is None or not np.array_equal(got_p, p_values(det.calibration_scores_, got)):
            raise ExportError(f"{det.name}: the exported graph's p-values are not the conformal p-values of its scores "
                              "against the calibration scores")
    if not deviation <= PARITY_RTOL:
        raise ExportError(f"{det.name}: the exported graph's scores differ from score_samples by {deviation:.1e} of the "
                          f"largest score (allowed {PARITY_RTOL:.0e}) at batch sizes {sizes}; the traced score is not "
                          "the same computation (a branch on tensor values or a batch-size-dependent step?)")
    return deviation, tuple(sizes)
