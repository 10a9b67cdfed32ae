"""Running ``anomalykit bench``: one cell on its split (``run_cell``) and every planned cell not
yet finished in the output folder (``run_bench``), results and summary rewritten after each.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import atomic_write_text
from ..detector import COMMON_PARAMS, threshold_from_scores
from ..errors import AnomalyKitError, ConfigError, first_line
from ..pipeline import RunConfig, anomaly_maps, build_detector, evaluate, fit_and_score, load_split, pixel_metrics
from .baselines import _pyod, baseline_inputs
from .plan import BenchConfig, Cell, _split_list, for_data, method_params, parse_classes, plan
from .store import _row_key, read_results, write_results
from .summary import write_summary


def cell_checkpoint_dir(checkpoints: Path, cell: Cell) -> Path:
    """Where a method cell's training checkpoints live while it runs: ``checkpoints/METHOD-classC-seedS``."""
    klass = "" if cell.normal_class is None else f"-class{cell.normal_class}"
    return checkpoints / f"{cell.name}{klass}-seed{cell.seed}"


def run_cell(cell: Cell, cfg: BenchConfig, split_cache: dict, progress: bool = False, *,
             checkpoints: Path | None = None, checkpoint_every: int = 0) -> dict[str, Any]:
    """One method or baseline on one split: the same pipeline steps as ``anomalykit run``.

    With ``checkpoints`` a method cell checkpoints its training there (every ``checkpoint_every``
    steps, 0 = each epoch) and continues from a checkpoint an interrupted run left; the folder is
    removed once the cell has a result."""
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
        det, _ = build_detector(cell.name, method_params(cell.name, cfg, cell.seed), cfg.data)
        fit_options: dict[str, Any] = {"progress": progress}
        resumed = False
        if checkpoints is not None:
            ckdir = cell_checkpoint_dir(checkpoints, cell)
            resumed = any(ckdir.glob("train_state-*.pt"))
            fit_options.update(checkpoint_dir=ckdir, checkpoint_every=checkpoint_every, resume=True)
        outcome = fit_and_score(det, split, **fit_options)
        scores, threshold, fit_s, score_s = outcome.scores, outcome.threshold, outcome.train_seconds, outcome.score_seconds
        row.update(device=str(det.device), params=json.dumps(det.get_params(), sort_keys=True), epochs_trained=det.epochs_,
                   steps_trained=det.steps_, resumed="yes" if resumed else "")
        maps = anomaly_maps(det, split) if split.masks_test is not None else None
        if maps is not None:  # images with defect masks: the maps' measures, per defect type too
            pixel = pixel_metrics(maps[1], split, scores)
            row.update(pixel_auroc=pixel["pixel_auroc"], aupro=pixel["aupro"],
                       per_defect_type=json.dumps(pixel.get("per_defect_type", {}), sort_keys=True))
    m = evaluate(scores, split, threshold, cfg.protocol)
    row.update(auroc=m["auroc"], aupr=m["aupr"], f1=m["f1"], train_seconds=round(fit_s, 2), score_seconds=round(score_s, 2))
    if cfg.protocol == "tabular-topk":
        row["topk_f1"] = m["topk_f1"]
    return row


def run_bench(cfg: BenchConfig, out: Path, *, echo: Callable[[str], None] = print, progress: bool = False,
              checkpoints: bool = True, checkpoint_every: int = 0, map_baselines: bool = True) -> list[dict]:
    """Run every planned cell not yet finished in ``out/results.csv``; returns all rows.

    ``checkpoints``: each method cell checkpoints its training under ``out/checkpoints/`` (every
    ``checkpoint_every`` steps, 0 = each epoch), so a rerun after an interruption continues the
    cell it stopped in from its last checkpoint (its ``resumed`` column says so, and its
    ``train_seconds`` then count the last attempt only). On MVTec-layout data the methods declaring
    ``map_baseline`` run too unless ``map_baselines`` is False (:func:`~anomalykit.bench.plan.for_data`)."""
    cfg = for_data(cfg, map_baselines=map_baselines)
    cells = plan(cfg)
    out.mkdir(parents=True, exist_ok=True)
    ckroot = None
    if checkpoints:
        ckroot = out / "checkpoints"
        ckroot.mkdir(exist_ok=True)
        (ckroot / ".gitignore").write_text("# training checkpoints of unfinished cells (anomalykit bench)\n*\n")
    settings = out / "bench.json"
    current = {k: v for k, v in cfg.__dict__.items()}
    current["set"] = list(cfg.set)
    if settings.is_file():
        # the splits and budgets must match; methods, baselines and seeds may be added to a folder
        # (a seed's cells do not depend on the other seeds)
        previous = {"eval_split": "test", **json.loads(settings.read_text())}  # folders from before --eval-split
        changed = sorted(k for k in current if k not in ("methods", "baselines", "seeds") and previous.get(k) != current[k])
        if changed:
            raise ConfigError(f"{out} holds a benchmark with other settings ({', '.join(changed)}); use another --out")
        for key in ("methods", "baselines"):
            names = _split_list(previous.get(key)) + [n for n in _split_list(current[key]) if n not in _split_list(previous.get(key))]
            current[key] = ",".join(names)
        seeds = sorted(set(parse_classes(previous.get("seeds") or current["seeds"])) | set(parse_classes(current["seeds"])))
        current["seeds"] = ",".join(map(str, seeds))
    atomic_write_text(settings, json.dumps(current, indent=2) + "\n")
    rows = read_results(out / "results.csv")  # failed cells stay listed until a rerun replaces them
    done = {_row_key(r) for r in rows if r.get("status") == "ok"}
    todo = [c for c in cells if c.key not in done]
    echo(f"benchmark: {len(cells)} cells, {len(cells) - len(todo)} already done, results in {out}")
    cache: dict = {}
    for i, cell in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {cell.name}" + (f" class {cell.normal_class}" if cell.normal_class is not None else "") + f" seed {cell.seed}"
        try:
            row = run_cell(cell, cfg, cache, progress=progress, checkpoints=ckroot, checkpoint_every=checkpoint_every)
            row["status"] = "ok"
            echo(f"{label}: auroc {row['auroc']:.4f}  train {row['train_seconds']:.1f}s  score {row['score_seconds']:.1f}s")
        except (AnomalyKitError, Exception) as exc:  # one failing cell must not stop the benchmark
            if isinstance(exc, ConfigError) and "PyOD" in str(exc):
                raise
            row = {"method": cell.name, "kind": cell.kind, "normal_class": "" if cell.normal_class is None else cell.normal_class,
                   "seed": cell.seed, "protocol": cfg.protocol, "dataset": cfg.data, "budget": cfg.budget,
                   "status": "failed", "error": f"{type(exc).__name__}: {first_line(exc, default='')}"}
            echo(f"{label}: FAILED {row['error']}")
        if ckroot is not None:  # a result (or a failure, retried from scratch) ends the cell's checkpoints
            shutil.rmtree(cell_checkpoint_dir(ckroot, cell), ignore_errors=True)
        rows = [r for r in rows if _row_key(r) != _row_key(row)] + [row]
        write_results(out / "results.csv", rows)
        # the summary follows every cell, so an interrupted benchmark still has an up-to-date one
        write_summary(out, rows, cfg)
    if not todo:  # nothing ran: (re)write the summary of the finished folder
        write_summary(out, rows, cfg)
    return [r for r in rows if r.get("status") == "ok"]
