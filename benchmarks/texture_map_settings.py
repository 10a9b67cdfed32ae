"""Scoring-time settings of patch mode on the texture sets' validation twins: the scoring
windows' stride and the maps' Gaussian smoothing, for every method and map baseline, each fitted
once with the MVTec-layout defaults (seed 0); the settings that need no retraining are measured
on the same fitted model. Validation twins only: the test sets are for the final tables.

    python benchmarks/texture_map_settings.py --out benchmarks/results/textures-val/map-settings.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import anomalykit
from anomalykit.data import make_split
from anomalykit.metrics import aupro, detection_metrics, pixel_auroc
from anomalykit.pipeline import data_defaults

METHODS = ["ama", "mae-simplex", "adgan", "csi-aae", "patch-ae", "patch-knn"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".data/textures")
    ap.add_argument("--sets", default="moon-val,tissue-val,hubble-val,cells-val")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--strides", default="8,4")
    ap.add_argument("--sigmas", default="0,1,2,4")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"command": "", "rows": []}
    results["command"] = "python benchmarks/texture_map_settings.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "out") + f" --out {args.out}"
    done = {(r["set"], r["method"]) for r in results["rows"]}
    for name in args.sets.split(","):
        path = f"{args.data}/{name}"
        split = make_split("one-class", path, seed=0)
        for method in args.methods.split(","):
            if (name, method) in done:
                continue
            t0 = time.perf_counter()
            det = anomalykit.load_method(method, **data_defaults(path, {}), seed=0).fit(split.X_train)
            fit_s = time.perf_counter() - t0
            for stride in map(int, args.strides.split(",")):
                det.set_params(patch_stride=stride)
                scores = det.score_samples(split.X_test)
                raw = det.anomaly_map(split.X_test, sigma=0)
                for sigma in map(float, args.sigmas.split(",")):
                    maps = raw if sigma == 0 else anomalykit.detector.gaussian_smooth(torch.from_numpy(raw), sigma).double().numpy()
                    results["rows"].append({
                        "set": name, "method": method, "stride": stride, "sigma": sigma, "fit_seconds": round(fit_s, 1),
                        "image_auroc": detection_metrics(scores, split.y_test, 0.0)["auroc"],
                        "pixel_auroc": pixel_auroc(maps, split.masks_test), "aupro": aupro(maps, split.masks_test),
                    })
            print(name, method, f"{fit_s:.0f} s", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
