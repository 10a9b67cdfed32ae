"""Quality benchmark: methods and PyOD baselines on exactly the same splits, in one run.

    anomalykit bench --data fashion-mnist --classes 0-9 --methods ama,mae-simplex \\
        --baselines iforest,ocsvm,autoencoder,deepsvdd --budget small --out bench-results/fmnist

Writes into ``--out``: ``results.csv`` (one row per method x class x seed; rewritten atomically
after every cell, so a killed run loses at most the cell in flight and a rerun with the same
``--out`` skips finished cells), ``summary.md`` (mean ± std per method, best per column in bold,
plus a per-class AUROC table) and ``auroc.png`` (per-class heat map).

Budgets: a method may declare ``budgets = {"small": {...}, "paper": {...}}`` (parameter
overrides) on its Detector class; ``small`` is sized for a 2-core CPU, ``paper`` follows the
paper (for GPUs). Baselines are PyOD detectors with their defaults on flattened inputs
(images mapped to [0, 1]); they are called, never reimplemented.

One job per module: ``baselines`` (the PyOD adapter), ``plan`` (settings, cells, method
parameters), ``runner`` (running cells), ``store`` (``results.csv``), ``summary``
(``summary.md`` and ``auroc.png``).
"""
from __future__ import annotations

from .baselines import BASELINES, baseline_inputs
from .baselines import _pyod, _SklearnPipelineDetector  # noqa: F401 -- used by benchmarks/scaling_before_after.py
from .plan import BenchConfig, Cell, check_assignments, for_data, method_params, parse_classes, plan
from .runner import run_bench, run_cell
from .store import COLUMNS, read_results, write_results
from .summary import summarise, write_summary

__all__ = [
    "BenchConfig", "Cell", "COLUMNS", "BASELINES", "run_bench", "run_cell", "plan", "parse_classes",
    "check_assignments", "for_data", "method_params", "baseline_inputs", "read_results", "write_results",
    "summarise", "write_summary",
]
