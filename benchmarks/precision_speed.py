"""Training and scoring throughput at precision=32 against bf16-mixed, interleaved in one process.

    python benchmarks/precision_speed.py --out benchmarks/results/precision/speed.json [--threads 1] [--rounds 4]

Fashion-MNIST one-class (class 0, 28x28), each method with its small budget's networks and batch
size, one epoch over ``--rows`` training images per timed fit; then scoring ``--score-rows`` test
images. Each round runs both precisions in alternating order (ABBA) from the same seed; the first
fit and score of each precision are warm-up (oneDNN primitive caches) and not counted. Reported per
method: median seconds per precision (wall and this process's CPU time), the speed-up as the median
of the per-round ratios, and samples/s. The machine's CPU and its bfloat16 hardware are recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import anomalykit
from anomalykit.data import make_split
from anomalykit.precision import cpu_bf16_units

METHODS = ("ama", "mae-simplex", "adgan", "csi-aae")


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--score-rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split = make_split("one-class", "fashion-mnist", normal_class=0, max_train=args.rows, seed=0)
    X, Xs = split.X_train[: args.rows], split.X_test[: args.score_rows]
    results = {}
    for method in args.methods.split(","):
        base = dict(type(anomalykit.load_method(method)).budgets.get("small", {}))
        base.update(epochs=1, max_steps=None, seed=0, device="cpu")
        runs = {p: {"fit": [], "fit_cpu": [], "score": [], "score_cpu": []} for p in ("32", "bf16-mixed")}
        for r in range(args.rounds + 1):
            order = ("32", "bf16-mixed") if r % 2 == 0 else ("bf16-mixed", "32")
            for precision in order:
                det = anomalykit.load_method(method, **base, precision=precision)
                fw, fc, _ = timed(lambda: det.fit(X, progress=False))
                sw, sc, _ = timed(lambda: det.score_samples(Xs))
                if r == 0:
                    continue  # warm-up round
                for key, v in (("fit", fw), ("fit_cpu", fc), ("score", sw), ("score_cpu", sc)):
                    runs[precision][key].append(v)
        ratio = lambda key: statistics.median(a / b for a, b in zip(runs["32"][key], runs["bf16-mixed"][key]))  # noqa: E731
        results[method] = {
            "batch_size": base.get("batch_size", 64),
            "seconds": {p: {k: statistics.median(v) for k, v in runs[p].items()} for p in runs},
            "speedup": {k: ratio(k) for k in ("fit", "fit_cpu", "score", "score_cpu")},
            "train_samples_per_second": {p: args.rows / statistics.median(runs[p]["fit"]) for p in runs},
            "score_samples_per_second": {p: len(Xs) / statistics.median(runs[p]["score"]) for p in runs},
            "rounds": runs,
        }
        print(method, {k: round(v, 2) for k, v in results[method]["speedup"].items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "bf16_units": cpu_bf16_units() or "none (emulated)",
        "threads": args.threads, "torch": torch.__version__, "rows": args.rows, "score_rows": len(Xs),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "load_avg_1min": round(os.getloadavg()[0], 2),
        "methods": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
