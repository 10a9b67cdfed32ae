"""Training and scoring speed of every method at three image shapes: 28x28x1, 32x32x3, 64x64x3.

    python benchmarks/shape_throughput.py --out benchmarks/results/shape-throughput/cpu-1thread.json [--threads 1]

For each method and shape, in a fresh process: ``ROWS`` random uint8 images (speed does not
depend on the content), the method's ``small`` budget parameters (what ``anomalykit bench --budget
small`` runs) with ``epochs=1``, one fit (timed: training samples/s = rows / fit seconds, which
includes the training-scores pass that sets the threshold) and one ``score_samples`` of ``ROWS``
rows (rows/s). Writes a ``rows`` table JSON for benchmarks/readme_tables.py with the machine,
torch version, thread count and load average at the start and end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
ROWS = 256
CHILD = r"""
import json, sys, time
import numpy as np, torch
import anomalykit
torch.set_num_threads(int(sys.argv[3]))
method, shape, rows = sys.argv[1], tuple(int(s) for s in sys.argv[2].split("x")), int(sys.argv[4])
cls = anomalykit.load_method(method).__class__
params = dict(getattr(cls, "budgets", {}).get("small", {}), epochs=1, device="cpu")
X = np.random.default_rng(0).integers(0, 256, size=(rows, *shape)).astype(np.uint8)
t = time.perf_counter(); det = cls(**params).fit(X, progress=False); fit_s = time.perf_counter() - t
t = time.perf_counter(); det.score_samples(X); score_s = time.perf_counter() - t
print(json.dumps({"fit_s": fit_s, "score_s": score_s, "params": {k: v for k, v in params.items() if k != "device"}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="ama,mae-simplex,adgan,csi-aae")
    args = ap.parse_args()
    import torch

    load_before = os.getloadavg()
    rows = []
    for method in args.methods.split(","):
        for shape in SHAPES:
            spec = "x".join(map(str, shape))
            r = subprocess.run([sys.executable, "-c", CHILD, method, spec, str(args.threads), str(ROWS)],
                               capture_output=True, text=True, timeout=3600)
            if r.returncode != 0:
                raise SystemExit(f"{method} {spec} failed:\n{r.stderr[-2000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append([method, f"{shape[1]}x{shape[2]}x{shape[0]}", ROWS, f"{ROWS / m['fit_s']:.1f}", f"{ROWS / m['score_s']:.1f}",
                         f"{m['fit_s']:.1f}", f"{m['score_s']:.1f}"])
            print(rows[-1], flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    table = {
        "what": "training samples/s (one epoch of the small budget, threshold pass included) and scoring rows/s per method "
                "and image shape, random uint8 images",
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} torch thread(s)",
        "load_average_start_end": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "columns": ["method", "image", "rows", "training samples/s", "scoring rows/s", "fit s", "score s"],
        "align": ["---", "---", "---:", "---:", "---:", "---:", "---:"],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
