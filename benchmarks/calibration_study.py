"""How well calibrated alarms keep their promise, per method and dataset (docs/calibrated-alarms.md).

    python benchmarks/calibration_study.py --data digits --methods ama,mae-simplex,adgan,csi-aae --out benchmarks/results/calibration
    python benchmarks/calibration_study.py --data fashion-mnist --max-train 2000 --methods ama --out ...

For each method: fit once (the small budget, calibration off) on ``--train`` normal rows of class
``--normal-class`` from the training split; the other normal training rows are a pool the model
never saw. Then ``--resamplings`` times, seeded: split the pool in half, one half the calibration
rows, the other fresh normal rows, and measure

- the realised false-alarm rate of ``p <= alpha`` (conformal p-values against that half) for
  alpha in 0.01, 0.05, 0.1, with the band the guarantee allows (alpha - 1/(n + 1) <= E[rate] <=
  alpha; 2 standard errors of the mean over the resamplings, each rate's variance
  alpha (1 - alpha) (1/m + 1/(n + 2)));
- beside it, the realised false-alarm rate of the ``contamination`` threshold at the same nominal
  rate (the (1 - a) quantile of the training rows' own scores, ``decision_scores_``);
- Benjamini-Hochberg at q = 0.1 on batches of those fresh normal rows plus 10% rows of other
  classes (from the training split too): the realised false discovery proportion and the power.

This is what ``calibration`` > 0 does inside ``fit`` (held-out normal rows never trained on),
resampled without refitting: the guarantee holds for a fixed model over the draw of calibration
and test rows. Fashion-MNIST: its training split only; digits and MNIST-5k: all their rows (the
project chooses settings on those freely). Writes one JSON per method.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import anomalykit
from anomalykit.calibration import benjamini_hochberg, p_values
from anomalykit.data import load_dataset
from anomalykit.outlier_probability import threshold_from_scores

ALPHAS = (0.01, 0.05, 0.1)


#: datasets whose every row may be used (the project tunes on them freely); others: the training split only
ALL_ROWS = ("digits", "mnist-5k")


def study(method: str, data: str, normal_class: int, n_train: int, resamplings: int, seed: int, q: float = 0.1) -> dict:
    ds = load_dataset(data, seed=seed)
    if data in ALL_ROWS:
        X, y = ds.all_rows()
        X, y = (X if isinstance(X, torch.Tensor) else X.read_all()), np.asarray(y)
    else:
        X, y = ds.X_train, np.asarray(ds.y_train)
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(y == normal_class))
    others = rng.permutation(np.flatnonzero(y != normal_class))
    if len(normal) < n_train + 40:
        raise SystemExit(f"{data} class {normal_class} has {len(normal)} training rows; --train {n_train} leaves too few")
    train_idx, pool_idx = normal[:n_train], normal[n_train:]
    cls = anomalykit.load_method(method).__class__
    params = {**cls.budgets.get("small", {}), "seed": seed, "device": "cpu"}
    t0 = time.time()
    det = anomalykit.load_method(method, **params).fit(X[torch.from_numpy(train_idx)], progress=False)
    train_seconds = time.time() - t0
    pool = det.score_samples(X[torch.from_numpy(pool_idx)])
    half = len(pool) // 2
    n_anom = max(1, round(0.1 * half / 0.9))
    anomalies = det.score_samples(X[torch.from_numpy(others[: 4 * n_anom])])
    far = {a: [] for a in ALPHAS}
    far_contamination = {a: [] for a in ALPHAS}
    fdp, power = [], []
    for r in range(resamplings):
        order = np.random.default_rng(seed * 100_003 + r).permutation(len(pool))
        cal, fresh = np.sort(pool[order[:half]]), pool[order[half: 2 * half]]
        p_fresh = p_values(cal, fresh)
        for a in ALPHAS:
            far[a].append(float((p_fresh <= a).mean()))
            far_contamination[a].append(float((fresh > threshold_from_scores(det.decision_scores_, a)).mean()))
        chosen = np.random.default_rng(seed * 200_003 + r).choice(len(anomalies), n_anom, replace=False)
        flags = benjamini_hochberg(p_values(cal, np.r_[fresh, anomalies[chosen]]), q)
        fdp.append(float(flags[:half].sum() / max(flags.sum(), 1)))
        power.append(float(flags[half:].mean()))
    n, m = half, half
    rows = []
    for a in ALPHAS:
        mean = float(np.mean(far[a]))
        se = math.sqrt(a * (1 - a) * (1 / m + 1 / (n + 2)) / resamplings)
        floor = math.floor(a * (n + 1)) / (n + 1)
        rows.append({"alpha": a, "far": mean, "band": [floor - 2 * se, a + 2 * se], "within": floor - 2 * se <= mean <= a + 2 * se,
                     "far_contamination": float(np.mean(far_contamination[a]))})
    return {"method": method, "data": data, "normal_class": normal_class, "train_rows": n_train, "calibration_rows": n,
            "fresh_rows": m, "resamplings": resamplings, "seed": seed, "params": params, "train_seconds": round(train_seconds, 1),
            "alphas": rows, "bh": {"q": q, "anomaly_share": n_anom / (m + n_anom), "fdr": float(np.mean(fdp)),
                                   "power": float(np.mean(power))},
            "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
            "command": "python " + " ".join(sys.argv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--methods", default="ama,mae-simplex,adgan,csi-aae")
    ap.add_argument("--normal-class", type=int, default=0)
    ap.add_argument("--train", type=int, default=100, help="normal training rows the model is fitted on")
    ap.add_argument("--resamplings", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        path = args.out / f"{args.data}-{method}-seed{args.seed}.json"
        if path.exists():
            print(f"{path} exists; skipped")
            continue
        result = study(method, args.data, args.normal_class, args.train, args.resamplings, args.seed)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(method, [(r["alpha"], round(r["far"], 4), r["within"], round(r["far_contamination"], 4)) for r in result["alphas"]],
              result["bh"], f"{result['train_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
