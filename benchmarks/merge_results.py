"""Merge the results.csv of several `anomalykit bench` folders run on the same splits into one
summary (e.g. methods run in parallel processes, each with its own --out).

    python benchmarks/merge_results.py benchmarks/results/fmnist-oc-2k/{baselines,ama,csi-aae} \\
        --out benchmarks/results/fmnist-oc-2k
    python benchmarks/merge_results.py benchmarks/results/fmnist-vs-mnist:ama,iforest \\
        benchmarks/results/fmnist-vs-mnist-mae-gaussian --out benchmarks/results/fmnist-vs-mnist-current

``FOLDER:NAME,...`` takes only the rows of those methods / baselines from that folder (e.g. to
leave out a method whose default has changed since the folder was run).

Checks that the folders used the same protocol, data, eval split, classes, budget, max_train and
--set (bench.json), that every (class, seed) cell has one split fingerprint across all of them,
and that each method ran with the same parameters in every row (the ``params`` column, seed and
device aside; a parameter a row lacks, added since it ran, counts at its current default), so
folders run under different defaults are refused, naming the keys that differ;
the seeds may differ between folders (one method's seeds run in parallel folders): the summary
names their union. Writes results.csv, summary.md and auroc.png into --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import anomalykit
from anomalykit.bench import BenchConfig, read_results, write_results, write_summary


#: Parameters that may differ between the rows of one method: they identify the cell, not the method.
PER_CELL = ("seed", "device")


def current_defaults(method: str) -> dict:
    """The method's parameters at their defaults now: a row run before a parameter existed ran with
    what that parameter's default does (a new parameter's default keeps the old behaviour)."""
    try:
        return anomalykit.load_method(method).get_params()
    except anomalykit.AnomalyKitError:  # a method no longer installed: compare the rows as they are
        return {}


def check_params(rows: list[dict]) -> None:
    """Refuse rows of one method that ran with different parameters (naming the keys and folders)."""
    seen: dict[str, tuple[dict, str]] = {}
    defaults: dict[str, dict] = {}
    for r in rows:
        if r.get("kind") != "method" or not r.get("params"):
            continue
        if r["method"] not in defaults:
            defaults[r["method"]] = current_defaults(r["method"])
        params = {k: v for k, v in {**defaults[r["method"]], **json.loads(r["params"])}.items() if k not in PER_CELL}
        first = seen.setdefault(r["method"], (params, r["_folder"]))
        if params != first[0]:
            keys = sorted(k for k in set(params) | set(first[0]) if params.get(k) != first[0].get(k))
            diffs = ", ".join(f"{k}: {first[0].get(k)!r} vs {params.get(k)!r}" for k in keys)
            raise SystemExit(f"{r['method']} ran with different parameters in {first[1]} and {r['_folder']} ({diffs}); "
                             "merge only folders run with the same settings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="bench folders, each optionally FOLDER:NAME,... (only those methods/baselines)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    picks = [(Path(f.split(":")[0]), set(f.split(":")[1].split(",")) if ":" in f else None) for f in args.folders]
    args.folders = [f for f, _ in picks]
    settings = [json.loads((f / "bench.json").read_text()) for f in args.folders]
    fixed = ("protocol", "data", "ood_data", "eval_split", "classes", "budget", "max_train", "set")
    for key in fixed:
        values = {json.dumps(s.get(key, "test" if key == "eval_split" else None)) for s in settings}
        if len(values) > 1:
            raise SystemExit(f"the folders differ in {key}: {sorted(values)}")
    rows = [dict(r, _folder=str(f)) for f, names in picks for r in read_results(f / "results.csv")
            if r.get("status") == "ok" and (names is None or r["method"] in names)]
    check_params(rows)
    prints: dict[tuple, set] = {}
    for r in rows:
        prints.setdefault((r["normal_class"], r["seed"]), set()).add(r["split_fingerprint"])
    bad = {k: v for k, v in prints.items() if len(v) > 1}
    if bad:
        raise SystemExit(f"different splits for the same (class, seed): {bad}")
    cfg = BenchConfig(**{k: v for k, v in settings[0].items() if k in BenchConfig.__dataclass_fields__ and k != "set"},
                      set=tuple(settings[0].get("set", ())))
    cfg.seeds = ",".join(str(s) for s in sorted({int(r["seed"]) for r in rows}))
    kinds = {r["method"]: r["kind"] for r in rows}
    cfg.methods = ",".join(m for m in dict.fromkeys(r["method"] for r in rows) if kinds[m] == "method")
    cfg.baselines = ",".join(m for m in dict.fromkeys(r["method"] for r in rows) if kinds[m] == "baseline")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k != "_folder"} for r in rows]
    write_results(args.out / "results.csv", rows)
    write_summary(args.out, rows, cfg)
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
