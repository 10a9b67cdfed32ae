"""CSI-AAE's two scores on the same trained networks: eq. 11 (``score=nearest``) and the per-shift
Gaussian (``score=gaussian``), paired, so the difference between them is the score's alone.

Two bench runs of the two scores train two networks each (and on two machines two different ones),
so their difference mixes the score's effect with training noise. Here each cell is trained once,
exactly as ``anomalykit bench ... --methods csi-aae --set csi-aae.score=gaussian`` trains it (the same
split, budget, seed and parameters), scored with the Gaussian, saved, and loaded again with
``score=nearest`` (the stored training features are eq. 11's bank) to be scored by eq. 11.

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


def paired_cell(cfg: BenchConfig, normal_class: int, seed: int) -> dict:
    run = RunConfig(method="", data=cfg.data, protocol=cfg.protocol, ood_data=cfg.ood_data, max_train=cfg.max_train,
                    eval_split=cfg.eval_split, normal_class=normal_class)
    split = load_split(run, seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    det, _ = build_detector("csi-aae", method_params("csi-aae", cfg, seed))
    outcome = fit_and_score(det, split, progress=False)  # as the bench's run_cell trains and scores
    gaussian, train_s = outcome.scores, outcome.train_seconds
    with tempfile.TemporaryDirectory() as tmp:
        nearest = anomalykit.load(det.save(Path(tmp) / "csi.pt"), score="nearest").score_samples(split.X_test)
    auroc = {name: evaluate(s, split, det.threshold_, cfg.protocol)["auroc"] for name, s in
             (("nearest", nearest), ("gaussian", gaussian))}
    return {"normal_class": normal_class, "seed": seed, "auroc_nearest": auroc["nearest"],
            "auroc_gaussian": auroc["gaussian"], "gaussian_minus_nearest": auroc["gaussian"] - auroc["nearest"],
            "train_seconds": round(train_s, 2), "n_train": split.X_train.shape[0], "n_test": split.X_test.shape[0],
            "split_fingerprint": split.info["split_fingerprint"], "params": json.dumps(det.get_params(), sort_keys=True)}


def summary(rows: list[dict]) -> str:
    lines = ["| class | seed | eq. 11 (nearest) | gaussian | gaussian - nearest |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['normal_class']} | {r['seed']} | {float(r['auroc_nearest']):.3f} | {float(r['auroc_gaussian']):.3f} | "
                     f"{float(r['gaussian_minus_nearest']):+.3f} |")
    d = np.array([float(r["gaussian_minus_nearest"]) for r in rows])
    n = np.array([float(r["auroc_nearest"]) for r in rows])
    g = np.array([float(r["auroc_gaussian"]) for r in rows])
    lines.append(f"| mean | | {n.mean():.3f} | {g.mean():.3f} | {d.mean():+.3f} |")
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = BenchConfig(data=args.data, eval_split=args.eval_split, classes=args.classes, methods="csi-aae",
                      seeds=args.seeds, budget=args.budget, max_train=args.max_train, device="cpu",
                      set=("csi-aae.score=gaussian",))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.json").write_text(json.dumps({"argv": vars(args) | {"out": str(args.out)}}, indent=1) + "\n")
    path = args.out / "results.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(int(r["normal_class"]), int(r["seed"])) for r in rows}
    for seed in (int(s) for s in args.seeds.split(",")):
        for c in (int(k) for k in args.classes.split(",")):
            if (c, seed) in done:
                continue
            row = paired_cell(cfg, c, seed)
            rows.append(row)
            with path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(rows)
            print(f"class {c} seed {seed}: nearest {row['auroc_nearest']:.4f}  gaussian {row['auroc_gaussian']:.4f}  "
                  f"train {row['train_seconds']:.0f}s", flush=True)
    (args.out / "summary.md").write_text(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
