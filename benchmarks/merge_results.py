"""Merge the results.csv of several `anomalykit bench` folders run on the same splits into one
summary (e.g. methods run in parallel processes, each with its own --out).

    python benchmarks/merge_results.py benchmarks/results/fmnist-oc-2k/{baselines,ama,csi-aae} \\
        --out benchmarks/results/fmnist-oc-2k

Checks that the folders used the same protocol, data, eval split, classes, budget, max_train and
--set (bench.json) and that every (class, seed) cell has one split fingerprint across all of them;
the seeds may differ between folders (one method's seeds run in parallel folders): the summary
names their union. Writes results.csv, summary.md and auroc.png into --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from anomalykit.bench import BenchConfig, read_results, write_results, write_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    settings = [json.loads((f / "bench.json").read_text()) for f in args.folders]
    fixed = ("protocol", "data", "ood_data", "eval_split", "classes", "budget", "max_train", "set")
    for key in fixed:
        values = {json.dumps(s.get(key, "test" if key == "eval_split" else None)) for s in settings}
        if len(values) > 1:
            raise SystemExit(f"the folders differ in {key}: {sorted(values)}")
    rows = [r for f in args.folders for r in read_results(f / "results.csv") if r.get("status") == "ok"]
    prints: dict[tuple, set] = {}
    for r in rows:
        prints.setdefault((r["normal_class"], r["seed"]), set()).add(r["split_fingerprint"])
    bad = {k: v for k, v in prints.items() if len(v) > 1}
    if bad:
        raise SystemExit(f"different splits for the same (class, seed): {bad}")
    cfg = BenchConfig(**{k: v for k, v in settings[0].items() if k in BenchConfig.__dataclass_fields__ and k != "set"},
                      set=tuple(settings[0].get("set", ())))
    cfg.seeds = ",".join(str(s) for s in sorted({int(r["seed"]) for r in rows}))
    cfg.methods = ",".join(dict.fromkeys(m for s in settings for m in s.get("methods", "").split(",") if m))
    cfg.baselines = ",".join(dict.fromkeys(b for s in settings for b in s.get("baselines", "").split(",") if b))
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out / "results.csv", rows)
    write_summary(args.out, rows, cfg)
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
