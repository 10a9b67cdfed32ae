"""CSI-AAE's two scores on the same trained networks: eq. 11 (``score=nearest``) and the per-shift
Gaussian (``score=gaussian``), paired, so the difference between them is the score's alone.

Two bench runs of the two scores train two networks each (and on two machines two different ones),
so their difference mixes the score's effect with training noise. Here each cell is trained once,
exactly as ``anomalykit bench ... --methods csi-aae --set csi-aae.score=gaussian`` trains it (the same
split, budget, seed and parameters), scored with the Gaussian, saved, and loaded again with
``score=nearest`` (the stored training features are eq. 11's bank) to be scored by eq. 11.
``--reload KEY=VALUE[+KEY=VALUE]`` (repeatable) scores the same saved model once more with those
scoring parameters, e.g. ``--reload score_neighbours=5`` (column ``auroc_score_neighbours-5``).

    python benchmarks/csi_score_paired.py --eval-split val --classes 0,2,4,6,8 --seeds 0 \\
        --out benchmarks/results/fmnist-val-full/csi-aae-score-paired

Writes ``OUT/results.csv`` (one row per class and seed: both AUROCs and their difference) and
``OUT/summary.md``; resumable (rerun the same command: finished rows are kept).
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import anomalykit
from anomalykit.bench.plan import BenchConfig, method_params
from anomalykit.pipeline import RunConfig, build_detector, evaluate, fit_and_score, load_split

COLUMNS = ["normal_class", "seed", "auroc_nearest", "auroc_gaussian", "gaussian_minus_nearest", "train_seconds",
           "n_train", "n_test", "split_fingerprint", "params"]


def reload_params(spec: str) -> dict:
    """``"k1=v1+k2=v2"`` -> {k1: v1, k2: v2}, values read as JSON where they parse (5, true), else strings."""
    out = {}
    for pair in spec.split("+"):
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def reload_column(spec: str) -> str:
    return "auroc_" + spec.replace("=", "-").replace("+", "-")


def paired_cell(cfg: BenchConfig, normal_class: int, seed: int, reloads: tuple[str, ...] = ()) -> dict:
    run = RunConfig(method="", data=cfg.data, protocol=cfg.protocol, ood_data=cfg.ood_data, max_train=cfg.max_train,
                    eval_split=cfg.eval_split, normal_class=normal_class)
    split = load_split(run, seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    det, _ = build_detector("csi-aae", method_params("csi-aae", cfg, seed))
    outcome = fit_and_score(det, split, progress=False)  # as the bench's run_cell trains and scores
    gaussian, train_s = outcome.scores, outcome.train_seconds
    with tempfile.TemporaryDirectory() as tmp:
        path = det.save(Path(tmp) / "csi.pt")
        scores = {"nearest": anomalykit.load(path, score="nearest").score_samples(split.X_test), "gaussian": gaussian}
        for spec in reloads:
            scores[spec] = anomalykit.load(path, **({"score": "nearest"} | reload_params(spec))).score_samples(split.X_test)
    auroc = {name: evaluate(s, split, det.threshold_, cfg.protocol)["auroc"] for name, s in scores.items()}
    return {**{reload_column(spec): auroc[spec] for spec in reloads},
            "normal_class": normal_class, "seed": seed, "auroc_nearest": auroc["nearest"],
            "auroc_gaussian": auroc["gaussian"], "gaussian_minus_nearest": auroc["gaussian"] - auroc["nearest"],
            "train_seconds": round(train_s, 2), "n_train": split.X_train.shape[0], "n_test": split.X_test.shape[0],
            "split_fingerprint": split.info["split_fingerprint"], "params": json.dumps(det.get_params(), sort_keys=True)}


def summary(rows: list[dict], reloads: tuple[str, ...] = ()) -> str:
    extra = [reload_column(spec) for spec in reloads]
    lines = ["| class | seed | eq. 11 (nearest) | gaussian | gaussian - nearest |" + "".join(f" {spec} |" for spec in reloads),
             "|---:|---:|---:|---:|---:|" + "---:|" * len(reloads)]
    for r in rows:
        lines.append(f"| {r['normal_class']} | {r['seed']} | {float(r['auroc_nearest']):.3f} | {float(r['auroc_gaussian']):.3f} | "
                     f"{float(r['gaussian_minus_nearest']):+.3f} |" + "".join(f" {float(r[c]):.3f} |" for c in extra))
    means = [np.mean([float(r[c]) for r in rows]) for c in ("auroc_nearest", "auroc_gaussian", "gaussian_minus_nearest", *extra)]
    lines.append(f"| mean | | {means[0]:.3f} | {means[1]:.3f} | {means[2]:+.3f} |" + "".join(f" {m:.3f} |" for m in means[3:]))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--eval-split", default="val", choices=("val", "test"))
    ap.add_argument("--classes", default="0,2,4,6,8")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", default="small")
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reload", action="append", default=[], metavar="KEY=VALUE[+KEY=VALUE]",
                    help="score the saved model again with these scoring parameters (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = BenchConfig(data=args.data, eval_split=args.eval_split, classes=args.classes, methods="csi-aae",
                      seeds=args.seeds, budget=args.budget, max_train=args.max_train, device="cpu",
                      set=("csi-aae.score=gaussian",))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.json").write_text(json.dumps({"argv": vars(args) | {"out": str(args.out)}}, indent=1) + "\n")
    path, reloads = args.out / "results.csv", tuple(args.reload)
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(int(r["normal_class"]), int(r["seed"])) for r in rows}
    for seed in (int(s) for s in args.seeds.split(",")):
        for c in (int(k) for k in args.classes.split(",")):
            if (c, seed) in done:
                continue
            row = paired_cell(cfg, c, seed, reloads)
            rows.append(row)
            with path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=COLUMNS + [reload_column(spec) for spec in reloads])
                w.writeheader()
                w.writerows(rows)
            print(f"class {c} seed {seed}: nearest {row['auroc_nearest']:.4f}  gaussian {row['auroc_gaussian']:.4f}  "
                  f"train {row['train_seconds']:.0f}s", flush=True)
    (args.out / "summary.md").write_text(summary(rows, reloads))
    print(summary(rows, reloads))


if __name__ == "__main__":
    main()
