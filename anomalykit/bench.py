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
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import atomic_write_text
from .detector import COMMON_PARAMS, threshold_from_scores
from .errors import AnomalyKitError, ConfigError, first_line
from .pipeline import RunConfig, build_detector, evaluate, fit_and_score, load_split
from .preprocess import Preprocessor
from .registry import get_registry
from .validation import as_input_tensor, source_is_uint8

COLUMNS = [
    "method", "kind", "protocol", "dataset", "ood_data", "eval_split", "normal_class", "seed", "budget", "status",
    "auroc", "aupr", "f1", "topk_f1", "train_seconds", "score_seconds", "n_train", "n_test",
    "device", "split_fingerprint", "params", "error",
]


# -- baselines (PyOD) ----------------------------------------------------------------------------------
def _pyod(name: str, n_features: int, seed: int):
    try:
        if name == "iforest":
            from pyod.models.iforest import IForest

            return IForest(random_state=seed)
        if name == "ocsvm":
            from pyod.models.ocsvm import OCSVM

            return OCSVM()
        if name == "autoencoder":
            from pyod.models.auto_encoder import AutoEncoder

            return AutoEncoder(random_state=seed, verbose=0)
        if name == "deepsvdd":
            from pyod.models.deep_svdd import DeepSVDD

            return DeepSVDD(n_features=n_features, random_state=seed, verbose=0)
        if name == "pca":
            from pyod.models.pca import PCA

            return PCA(random_state=seed)
        if name == "kde-pca":  # KDE on a 20-d PCA projection (ADGAN paper, Table 1)
            from pyod.models.kde import KDE
            from sklearn.decomposition import PCA as SkPCA
            from sklearn.pipeline import make_pipeline

            return _SklearnPipelineDetector(make_pipeline(SkPCA(n_components=min(20, n_features), random_state=seed)), KDE())
    except ImportError:
        raise ConfigError("baselines need PyOD: `pip install pyod` (or `pip install anomalykit[baselines]`)") from None
    raise ConfigError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")


class _SklearnPipelineDetector:
    """A PyOD detector applied after a fitted scikit-learn transform."""

    def __init__(self, transform, detector):
        self.transform, self.detector = transform, detector

    def fit(self, X):
        self.detector.fit(self.transform.fit_transform(X))
        return self

    def decision_function(self, X):
        return self.detector.decision_function(self.transform.transform(X))


BASELINES = ("iforest", "ocsvm", "autoencoder", "deepsvdd", "pca", "kde-pca")


def baseline_inputs(X_train: torch.Tensor, X_test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """What the PyOD baselines see, scaled by the same fitted preprocessor (``preprocess=auto``)
    our detectors use: images onto [-1, 1] (uint8 pixels x/127.5 - 1, other images their training
    range), then flattened to [0, 1] pixels (what the PyOD reference numbers used); rows by
    median / IQR of the training rows."""
    prep = Preprocessor.fit(as_input_tensor(X_train), "auto", uint8=source_is_uint8(X_train))
    scaled = lambda X: prep.transform(as_input_tensor(X)).reshape(X.shape[0], -1).numpy().astype(np.float64)  # noqa: E731
    if X_train.ndim == 4:
        return (scaled(X_train) + 1.0) / 2.0, (scaled(X_test) + 1.0) / 2.0
    return scaled(X_train), scaled(X_test)


# -- plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    name: str
    kind: str  # "method" or "baseline"
    normal_class: int | None
    seed: int

    @property
    def key(self) -> tuple:
        return (self.name, self.kind, "" if self.normal_class is None else str(self.normal_class), str(self.seed))


def parse_classes(spec: str) -> list[int]:
    """'0-9', '0,3,7' or '2' -> sorted unique ints."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                out.update(range(int(lo), int(hi) + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--classes expects e.g. 0-9 or 0,3,7; got {spec!r}") from None
    if not out:
        raise ConfigError("--classes is empty")
    return sorted(out)


def _split_list(spec: str | None) -> list[str]:
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


@dataclass
class BenchConfig:
    protocol: str = "one-class"
    data: str = "fashion-mnist"
    ood_data: str | None = None
    eval_split: str = "test"  # "val": held-out training rows only (for choosing defaults)
    classes: str = "0-9"
    methods: str = "ama"
    baselines: str = ""
    seeds: str = "0"
    budget: str = "small"
    max_train: int | None = None
    device: str = "auto"
    set: tuple[str, ...] = ()  # method params applied to every method (key=value or method.key=value)


def plan(cfg: BenchConfig) -> list[Cell]:
    reg = get_registry()
    methods = _split_list(cfg.methods)
    baselines = _split_list(cfg.baselines)
    for m in methods:
        reg.method(m)  # ConfigError for unknown names, before anything runs
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError(f"unknown baseline {b!r}; use one of {', '.join(BASELINES)}")
    if cfg.budget not in ("small", "paper", "default"):
        raise ConfigError("--budget must be small, paper or default")
    check_assignments(cfg.set, methods)
    seeds = parse_classes(cfg.seeds)
    classes: list[int | None] = parse_classes(cfg.classes) if cfg.protocol == "one-class" else [None]
    return [
        Cell(name, kind, c, s)
        for c in classes
        for s in seeds
        for kind, names in (("baseline", baselines), ("method", methods))
        for name in names
    ]


def check_assignments(assignments, methods: list[str]) -> None:
    """Refuse a ``--set`` that would be silently dropped, before anything runs: ``METHOD.KEY=VALUE``
    must name an installed method (a folder's settings may name methods benchmarked by an earlier
    command into it) and one of its parameters; a bare ``KEY=VALUE`` must be a parameter of at
    least one planned method (it applies to each method that has it)."""
    from .params import parse_assignments

    reg = get_registry()
    schemas = {m: reg.method(m).cls.param_schema() for m in methods}
    for key in parse_assignments(assignments):
        target, _, pkey = key.rpartition(".")
        if target:
            if target not in reg.methods:
                raise ConfigError(f"--set {key}: no installed method is called {target!r} (installed: {', '.join(sorted(reg.methods))})")
            schema = reg.method(target).cls.param_schema()
            if pkey not in schema:
                raise ConfigError(f"--set {key}: {target} has no parameter {pkey!r}; its parameters: {', '.join(schema)}")
        elif not any(pkey in schema for schema in schemas.values()):
            known = sorted({k for schema in schemas.values() for k in schema})
            raise ConfigError(f"--set {key}: no benchmarked method has a parameter {pkey!r}; known: {', '.join(known) or 'none'}")


def method_params(name: str, cfg: BenchConfig, seed: int) -> dict[str, Any]:
    from .params import parse_assignments

    cls = get_registry().method(name).cls
    params = dict(getattr(cls, "budgets", {}).get(cfg.budget, {})) if cfg.budget != "default" else {}
    for key, value in parse_assignments(cfg.set).items():
        target, _, pkey = key.rpartition(".")
        if not target or target == name:
            if pkey in cls.param_schema() or target == name:
                params[pkey] = value
    params.update(seed=seed, device=cfg.device)
    return params


# -- running -------------------------------------------------------------------------------------------
def run_cell(cell: Cell, cfg: BenchConfig, split_cache: dict, progress: bool = False) -> dict[str, Any]:
    """One method or baseline on one split: the same pipeline steps as ``anomalykit run``."""
    key = (cell.normal_class, cell.seed)
    if key not in split_cache:
        split_cache.clear()  # one split in memory at a time
        run = RunConfig(method="", data=cfg.data, protocol=cfg.protocol, ood_data=cfg.ood_data, max_train=cfg.max_train,
                        eval_split=cfg.eval_split, normal_class=cell.normal_class if cell.normal_class is not None else 0)
        split_cache[key] = load_split(run, seed=cell.seed)
    split = split_cache[key]
    row: dict[str, Any] = {
        "method": cell.name, "kind": cell.kind, "protocol": cfg.protocol, "dataset": cfg.data,
        "ood_data": cfg.ood_data or "", "eval_split": cfg.eval_split,
        "normal_class": "" if cell.normal_class is None else cell.normal_class,
        "seed": cell.seed, "budget": cfg.budget, "n_train": split.X_train.shape[0], "n_test": split.X_test.shape[0],
        "split_fingerprint": split.info["split_fingerprint"],
    }
    torch.manual_seed(cell.seed)
    np.random.seed(cell.seed)
    if cell.kind == "baseline":
        t0 = time.perf_counter()
        model = _pyod(cell.name, int(np.prod(split.X_train.shape[1:])), cell.seed)
        X_fit, X_eval = baseline_inputs(split.X_train, split.X_test)
        model.fit(X_fit)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores = np.asarray(model.decision_function(X_eval), dtype=np.float64)
        score_s = time.perf_counter() - t1
        contamination = {p.name: p for p in COMMON_PARAMS}["contamination"].default
        threshold = threshold_from_scores(model.decision_function(X_fit), contamination)
        row.update(device="cpu", params="{}")
    else:
        det, _ = build_detector(cell.name, method_params(cell.name, cfg, cell.seed))
        outcome = fit_and_score(det, split, progress=progress)
        scores, threshold, fit_s, score_s = outcome.scores, outcome.threshold, outcome.train_seconds, outcome.score_seconds
        row.update(device=str(det.device), params=json.dumps(det.get_params(), sort_keys=True))
    m = evaluate(scores, split, threshold, cfg.protocol)
    row.update(auroc=m["auroc"], aupr=m["aupr"], f1=m["f1"], train_seconds=round(fit_s, 2), score_seconds=round(score_s, 2))
    if cfg.protocol == "tabular-topk":
        row["topk_f1"] = m["topk_f1"]
    return row


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


def run_bench(cfg: BenchConfig, out: Path, *, echo: Callable[[str], None] = print, progress: bool = False) -> list[dict]:
    """Run every planned cell not yet finished in ``out/results.csv``; returns all rows."""
    cells = plan(cfg)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "bench.json"
    current = {k: v for k, v in cfg.__dict__.items()}
    current["set"] = list(cfg.set)
    if settings.is_file():
        # the splits and budgets must match; methods and baselines may be added to a folder
        previous = {"eval_split": "test", **json.loads(settings.read_text())}  # folders from before --eval-split
        changed = sorted(k for k in current if k not in ("methods", "baselines") and previous.get(k) != current[k])
        if changed:
            raise ConfigError(f"{out} holds a benchmark with other settings ({', '.join(changed)}); use another --out")
        for key in ("methods", "baselines"):
            names = _split_list(previous.get(key)) + [n for n in _split_list(current[key]) if n not in _split_list(previous.get(key))]
            current[key] = ",".join(names)
    atomic_write_text(settings, json.dumps(current, indent=2) + "\n")
    rows = read_results(out / "results.csv")  # failed cells stay listed until a rerun replaces them
    done = {_row_key(r) for r in rows if r.get("status") == "ok"}
    todo = [c for c in cells if c.key not in done]
    echo(f"benchmark: {len(cells)} cells, {len(cells) - len(todo)} already done, results in {out}")
    cache: dict = {}
    for i, cell in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {cell.name}" + (f" class {cell.normal_class}" if cell.normal_class is not None else "") + f" seed {cell.seed}"
        try:
            row = run_cell(cell, cfg, cache, progress=progress)
            row["status"] = "ok"
            echo(f"{label}: auroc {row['auroc']:.4f}  train {row['train_seconds']:.1f}s  score {row['score_seconds']:.1f}s")
        except (AnomalyKitError, Exception) as exc:  # one failing cell must not stop the benchmark
            if isinstance(exc, ConfigError) and "PyOD" in str(exc):
                raise
            row = {"method": cell.name, "kind": cell.kind, "normal_class": "" if cell.normal_class is None else cell.normal_class,
                   "seed": cell.seed, "protocol": cfg.protocol, "dataset": cfg.data, "budget": cfg.budget,
                   "status": "failed", "error": f"{type(exc).__name__}: {first_line(exc, default='')}"}
            echo(f"{label}: FAILED {row['error']}")
        rows = [r for r in rows if _row_key(r) != _row_key(row)] + [row]
        write_results(out / "results.csv", rows)
        # the summary follows every cell, so an interrupted benchmark still has an up-to-date one
        write_summary(out, rows, cfg)
    if not todo:  # nothing ran: (re)write the summary of the finished folder
        write_summary(out, rows, cfg)
    return [r for r in rows if r.get("status") == "ok"]


# -- summary -------------------------------------------------------------------------------------------
def _floats(rows, key):
    return np.array([float(r[key]) for r in rows if r.get(key) not in ("", None)], dtype=np.float64)


def summarise(rows: list[dict]) -> list[dict[str, Any]]:
    """Per method: mean and std over all its cells for each metric (ddof=0), and ``seed_auroc``:
    the mean and std over seeds of each seed's mean AUROC over the classes (when there are several
    seeds, each with the same classes), i.e. the spread of the number a one-seed run reports."""
    order: list[tuple[str, str]] = []
    for r in rows:
        if (r["method"], r["kind"]) not in order:
            order.append((r["method"], r["kind"]))
    out = []
    for name, kind in order:
        mine = [r for r in rows if r["method"] == name and r["kind"] == kind]
        entry = {"method": name, "kind": kind, "cells": len(mine)}
        for key in ("auroc", "aupr", "f1", "topk_f1", "train_seconds", "score_seconds"):
            vals = _floats(mine, key)
            entry[key] = (float(vals.mean()), float(vals.std())) if len(vals) else None
        by_seed: dict[str, dict[str, float]] = {}
        for r in mine:
            by_seed.setdefault(str(r["seed"]), {})[str(r["normal_class"])] = float(r["auroc"])
        same_classes = len({tuple(sorted(v)) for v in by_seed.values()}) == 1
        if len(by_seed) > 1 and same_classes:
            means = np.array([np.mean(list(v.values())) for v in by_seed.values()])
            entry["seed_auroc"] = (float(means.mean()), float(means.std()), len(means))
        out.append(entry)
    return out


def write_summary(out: Path, rows: list[dict], cfg: BenchConfig) -> None:
    """summary.md and auroc.png from the finished cells of ``rows``; cells that failed are listed
    with their one-line reason at the end (they count in no mean)."""
    failed = [r for r in rows if r.get("status") == "failed"]
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    if not rows and not failed:
        return
    if not rows:
        atomic_write_text(out / "summary.md", "\n".join(["# Benchmark: no finished cells", "", *_failed_lines(failed)]) + "\n")
        return
    stats = summarise(rows)
    keys = [k for k in ("auroc", "aupr", "f1", "topk_f1", "train_seconds", "score_seconds") if any(s[k] for s in stats)]
    best = {}
    for k in keys:
        vals = [(s[k][0], i) for i, s in enumerate(stats) if s[k]]
        best[k] = (min if k.endswith("seconds") else max)(vals)[1]
    head = (f"# Benchmark: {cfg.protocol} on {cfg.data}" + (f" vs {cfg.ood_data}" if cfg.ood_data else "")
            + (" (validation split: held-out training rows)" if cfg.eval_split == "val" else ""))
    lines = [head, "", f"budget `{cfg.budget}`, seeds `{cfg.seeds}`" + (f", classes `{cfg.classes}`" if cfg.protocol == "one-class" else "")
             + (f", max_train {cfg.max_train}" if cfg.max_train else "") + "; mean ± std over cells; best per column in bold."
             + (" *auroc over seeds*: each seed's mean over the classes, mean ± std over (n) seeds." if cfg.protocol == "one-class" else ""), ""]
    seeds_col = any(s.get("seed_auroc") for s in stats)
    lines.append("| method | kind | cells | " + ("auroc over seeds | " if seeds_col else "") + " | ".join(keys) + " |")
    lines.append("|---|---|---|" + ("---|" if seeds_col else "") + "---|" * len(keys))
    for i, s in enumerate(stats):
        cells = [(f"{s['seed_auroc'][0]:.3f} ± {s['seed_auroc'][1]:.3f} ({s['seed_auroc'][2]})" if s.get("seed_auroc") else "")] \
            if seeds_col else []
        for k in keys:
            if not s[k]:
                cells.append("")
                continue
            txt = f"{s[k][0]:.1f} ± {s[k][1]:.1f}" if k.endswith("seconds") else f"{s[k][0]:.3f} ± {s[k][1]:.3f}"
            cells.append(f"**{txt}**" if best[k] == i else txt)
        lines.append(f"| {s['method']} | {s['kind']} | {s['cells']} | " + " | ".join(cells) + " |")
    # rows read back from results.csv hold strings, rows of this run ints: one column per class either way
    classes = sorted({int(r["normal_class"]) for r in rows if str(r["normal_class"]) != ""})
    if classes:
        lines += ["", "Per-class AUROC (mean over seeds):", ""]
        lines.append("| method | " + " | ".join(str(c) for c in classes) + " |")
        lines.append("|---|" + "---|" * len(classes))
        table = _per_class(rows, stats, classes)
        col_best = [max(range(len(stats)), key=lambda i: -1 if math.isnan(table[i][j]) else table[i][j]) for j in range(len(classes))]
        for i, s in enumerate(stats):
            cells = ["" if math.isnan(v) else (f"**{v:.3f}**" if col_best[j] == i else f"{v:.3f}") for j, v in enumerate(table[i])]
            lines.append(f"| {s['method']} | " + " | ".join(cells) + " |")
    if failed:
        lines += ["", *_failed_lines(failed)]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    _plot(out / "auroc.png", rows, stats, classes, head[2:])


def _failed_lines(failed: list[dict]) -> list[str]:
    out = [f"**Failed cells ({len(failed)})**, not in any mean above (rerun the same command to retry them):", "",
           "| method | class | seed | reason |", "|---|---|---|---|"]
    for r in failed:
        reason = str(r.get("error", "")).replace("|", "\\|")
        out.append(f"| {r['method']} | {r.get('normal_class', '')} | {r.get('seed', '')} | {reason} |")
    return out


def _per_class(rows, stats, classes) -> list[list[float]]:
    table = []
    for s in stats:
        line = []
        for c in classes:
            vals = [float(r["auroc"]) for r in rows if r["method"] == s["method"] and r["kind"] == s["kind"] and str(r["normal_class"]) == str(c)]
            line.append(float(np.mean(vals)) if vals else float("nan"))
        table.append(line)
    return table


def _plot(path: Path, rows, stats, classes, title) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = [s["method"] for s in stats]
    if classes:
        table = np.array(_per_class(rows, stats, classes))
        fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.75 * len(classes)), 1.2 + 0.45 * len(names)), dpi=110)
        im = ax.imshow(table, vmin=max(0.5, np.nanmin(table)), vmax=1.0, cmap="viridis", aspect="auto")
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if not np.isnan(table[i, j]):
                    ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if table[i, j] > 0.85 else "white")
        ax.set_xticks(range(len(classes)), [str(c) for c in classes])
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("normal class")
        fig.colorbar(im, ax=ax, label="AUROC")
    else:
        fig, ax = plt.subplots(figsize=(6, 0.9 + 0.35 * len(names)), dpi=110)
        means = [s["auroc"][0] for s in stats]
        stds = [s["auroc"][1] for s in stats]
        ax.barh(names, means, xerr=stds, color=["tab:blue" if s["kind"] == "method" else "tab:grey" for s in stats])
        ax.set_xlim(max(0.0, min(means) - 0.05), 1.0)
        ax.set_xlabel("AUROC")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
