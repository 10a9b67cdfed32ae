"""The README's main job, measured: ``anomalykit run ama`` (defaults: digits, normal class 0).

    python benchmarks/digits_demo.py --out benchmarks/results/digits-demo

Runs the command in a fresh process with a temporary report folder, keeps its ``metrics.json``
(AUROC, AUPR, F1, timings, parameters, versions) and its console output (``stdout.txt``, progress
bars stripped), and writes ``table.json`` (the README's demo table, rendered by
benchmarks/readme_tables.py). The demo is a pipeline check, not a quality claim: every PyOD
baseline reaches AUROC 1.000 on digits class 0 too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "anomalykit", "run", "ama", "--out", str(run)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        args.out.mkdir(parents=True, exist_ok=True)
        metrics = json.loads((run / "metrics.json").read_text())
        shutil.copy(run / "metrics.json", args.out / "metrics.json")
    lines = [re.sub(r"/tmp/[^ ]*/run", "runs/ama-digits-<time>", line) for line in r.stdout.splitlines()]
    (args.out / "stdout.txt").write_text("\n".join(lines) + "\n")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    table = {
        "what": "anomalykit run ama (digits, normal class 0, AMA defaults)",
        "command": "anomalykit run ama",
        "columns": ["command", "AUROC", "AUPR", "F1", "training", "scoring", "training samples/s", "machine"],
        "align": ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---"],
        "rows": [["`anomalykit run ama`", f"{metrics['auroc']:.4f}", f"{metrics['aupr']:.4f}", f"{metrics['f1']:.4f}",
                  f"{metrics['train_seconds']:.1f} s", f"{metrics['score_seconds']:.1f} s", metrics["train_samples_per_second"],
                  f"{cpu}, {os.cpu_count()} cores, torch {metrics['torch_version']}"]],
    }
    (args.out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
