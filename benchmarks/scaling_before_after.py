"""Do built-in dataset results move when the code changes? Scores of a fixed set of small runs,
saved from one checkout and compared with another.

    # in a checkout of the old commit (PYTHONPATH=that tree) and in this one:
    python benchmarks/scaling_before_after.py save /tmp/before.npz
    python benchmarks/scaling_before_after.py save /tmp/after.npz
    python benchmarks/scaling_before_after.py compare /tmp/before.npz /tmp/after.npz --out benchmarks/results/X/compare.json

The runs go through the same steps as ``anomalykit run`` / ``bench`` (``load_split``,
``build_detector``, ``fit_and_score``; the PyOD baselines through ``bench.run_cell``): every
method on digits (class 0, 3 epochs), AMA and CSI-AAE on Fashion-MNIST class 0 (1,000 training
images, 1 epoch), AMA on Fashion-MNIST vs MNIST-5k (1,000 images, 1 epoch), IForest and
AutoEncoder on the Fashion-MNIST split. ``compare`` writes the largest absolute and relative score
difference per run and whether the scores are bitwise equal (for methods: the test scores, the
training scores ``decision_scores_`` and ``threshold_``, one vector).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CASES = [
    # (key, method or baseline, data, protocol, ood_data, normal_class, max_train, params)
    ("digits/ama", "ama", "digits", "one-class", None, 0, None, {"epochs": 3}),
    ("digits/mae-simplex", "mae-simplex", "digits", "one-class", None, 0, None, {"epochs": 3}),
    ("digits/adgan", "adgan", "digits", "one-class", None, 0, None, {"epochs": 3, "n_seed": 2}),
    ("digits/csi-aae", "csi-aae", "digits", "one-class", None, 0, None, {"epochs": 3}),
    ("fmnist0/ama", "ama", "fashion-mnist", "one-class", None, 0, 1000, {"epochs": 1}),
    ("fmnist0/csi-aae", "csi-aae", "fashion-mnist", "one-class", None, 0, 1000, {"epochs": 1}),
    ("fmnist-vs-mnist/ama", "ama", "fashion-mnist", "ood", "mnist-5k", 0, 1000, {"epochs": 1}),
    ("fmnist0/iforest", "baseline:iforest", "fashion-mnist", "one-class", None, 0, 1000, {}),
    ("fmnist0/autoencoder", "baseline:autoencoder", "fashion-mnist", "one-class", None, 0, 1000, {}),
    ("breast-cancer/ama", "ama", "breast-cancer", "tabular-topk", None, 0, None, {"epochs": 3}),
]


def run_case(method, data, protocol, ood_data, normal_class, max_train, params) -> np.ndarray:
    import torch

    from anomalykit.pipeline import RunConfig, build_detector, fit_and_score, load_split

    torch.set_num_threads(1)
    cfg = RunConfig(method=method, data=data, protocol=protocol, ood_data=ood_data, normal_class=normal_class, max_train=max_train)
    if method.startswith("baseline:"):  # what bench.run_cell does for a baseline
        from anomalykit.bench import _pyod, baseline_inputs

        split = load_split(cfg, seed=0)
        torch.manual_seed(0)
        np.random.seed(0)
        model = _pyod(method.split(":")[1], int(np.prod(split.X_train.shape[1:])), 0)
        X_fit, X_eval = baseline_inputs(split.X_train, split.X_test)
        model.fit(X_fit)
        return np.asarray(model.decision_function(X_eval), dtype=np.float64)
    det, _ = build_detector(method, {"device": "cpu", **params})
    split = load_split(cfg, seed=det.hp.seed)
    out = fit_and_score(det, split, progress=False)
    # test scores, then the training scores and the threshold (what predict uses)
    return np.concatenate([out.scores, np.asarray(det.decision_scores_, dtype=np.float64), [float(det.threshold_)]])


def save(path: Path) -> None:
    out = {}
    for key, *args in CASES:
        # one process per case: nothing carries over between runs
        code = ("import sys, json, numpy as np; sys.path.insert(0, %r); from scaling_before_after import run_case; "
                "a = json.loads(sys.argv[1]); np.save(sys.stdout.buffer, run_case(*a))") % str(Path(__file__).parent)
        r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{key} failed:\n{r.stderr.decode()[-2000:]}")
        import io

        out[key] = np.load(io.BytesIO(r.stdout))
        print(key, out[key].shape, float(out[key][:3].sum()), flush=True)
    np.savez(path, **out)


def compare(a: Path, b: Path, out: Path | None) -> None:
    A, B = np.load(a), np.load(b)
    rows = []
    for key in A.files:
        x, y = A[key], B[key] if key in B.files else None
        if y is None or x.shape != y.shape:
            rows.append({"run": key, "bitwise_equal": False, "note": "missing or different shape"})
            continue
        diff = float(np.abs(x - y).max())
        rows.append({"run": key, "rows": int(x.size), "bitwise_equal": bool(np.array_equal(x, y)), "max_abs_diff": diff,
                     "max_rel_diff": diff / max(float(np.abs(x).max()), 1e-300)})
    text = json.dumps({"before": str(a), "after": str(b), "runs": rows}, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("path", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.cmd == "save":
        save(args.path)
    else:
        compare(args.a, args.b, args.out)


if __name__ == "__main__":
    main()
