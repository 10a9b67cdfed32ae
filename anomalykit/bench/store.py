"""The results of ``anomalykit bench`` on disk: ``results.csv`` (one row per cell), read back and
rewritten atomically, and the key that identifies a row's cell.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text

COLUMNS = [
    "method", "kind", "protocol", "dataset", "ood_data", "eval_split", "normal_class", "seed", "budget", "status",
    "auroc", "aupr", "f1", "topk_f1", "train_seconds", "score_seconds", "n_train", "n_test",
    "device", "split_fingerprint", "params", "error", "epochs_trained", "steps_trained",
    "resumed", "pixel_auroc", "aupro", "per_defect_type",
]


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _row_key(r: dict) -> tuple:
    return (r["method"], r["kind"], str(r["normal_class"]), str(r["seed"]))
