"""How long CI takes, from the log of a `bash .ci/run` on a clean clone (its `== <stage> at N s` lines
and pytest's summary lines), as a table for the README.

    git clone . /tmp/ci && (cd /tmp/ci && bash .ci/run > /tmp/ci.log 2>&1)
    python benchmarks/ci_timing.py /tmp/ci.log --out benchmarks/results/ci/timing.json --note "loaded machine: ..."
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="", help="the conditions of the run (machine, load)")
    args = ap.parse_args()
    text = args.log.read_text(errors="replace")
    stages = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^== (.+?) at (\d+) s$", text, re.M)]
    total = re.search(r"^CI finished in (\d+) s$", text, re.M)
    suites = []
    for line in text.splitlines():
        m = re.search(r"\b(\d+) passed\b.* in ([\d.]+)s", line)
        if m:
            count = lambda word: int(next(iter(re.findall(rf"(\d+) {word}", line)), 0))  # noqa: E731
            suites.append({"passed": int(m.group(1)), "failed": count("failed"), "skipped": count("skipped"), "seconds": float(m.group(2))})
    rows, last = [], 0
    for name, at in stages:
        rows.append([name, at - last, at])
        last = at
    if total:
        rows.append(["CI finished", int(total.group(1)) - last, int(total.group(1))])
    table = {
        "what": "stages of bash .ci/run on a clean clone: seconds in the stage, seconds since the start",
        "command": "bash .ci/run (on a clean clone of main)",
        "note": args.note,
        "cpu_count": os.cpu_count(),
        "test_runs": suites,
        "columns": ["stage", "seconds", "at"],
        "align": ["---", "---:", "---:"],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
