"""The summary of ``anomalykit bench``: ``summary.md`` (mean ± std per method, best per column in
bold, a per-class AUROC table, the failed cells) and ``auroc.png`` (per-class heat map).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write_text
from .plan import BenchConfig


#: The columns summarised per method, in the table's order.
METRICS = ("auroc", "aupr", "f1", "topk_f1", "pixel_auroc", "aupro", "train_seconds", "score_seconds")


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
        for key in METRICS:
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
    keys = [k for k in METRICS if any(s[k] for s in stats)]
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
    lines += _defect_type_lines(rows, stats)
    if failed:
        lines += ["", *_failed_lines(failed)]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    _plot(out / "auroc.png", rows, stats, classes, head[2:])


def defect_type_table(rows: list[dict]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """``{method: {defect type: {measure: (mean, std, n)}}}`` over the cells (seeds) of each method
    that have per-defect-type measures (image AUROC, pixel AUROC, AUPRO; std with ddof=0)."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        if not r.get("per_defect_type"):
            continue
        per = json.loads(r["per_defect_type"]) if isinstance(r["per_defect_type"], str) else r["per_defect_type"]
        for t, measures in per.items():
            for k, v in measures.items():
                if k != "images":
                    acc.setdefault(r["method"], {}).setdefault(t, {}).setdefault(k, []).append(float(v))
    return {m: {t: {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in ms.items()} for t, ms in ts.items()}
            for m, ts in acc.items()}


def _defect_type_lines(rows, stats) -> list[str]:
    table = defect_type_table(rows)
    if not table:
        return []
    methods = [s["method"] for s in stats if s["method"] in table]
    types = sorted({t for m in methods for t in table[m]})
    lines = ["", "Per defect type (the good images plus that type's; mean ± std over seeds; best per row in bold):", "",
             "| defect type | measure | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for t in types:
        for k in ("image_auroc", "pixel_auroc", "aupro"):
            vals = [table[m].get(t, {}).get(k) for m in methods]
            if not any(vals):
                continue
            best = max(range(len(vals)), key=lambda i: -1.0 if vals[i] is None else vals[i][0])
            cells = ["" if v is None else (f"**{v[0]:.3f} ± {v[1]:.3f}**" if i == best else f"{v[0]:.3f} ± {v[1]:.3f}")
                     for i, v in enumerate(vals)]
            lines.append(f"| {t} | {k.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines


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
