"""Numbers in the prose of README.md and docs/, checked against the committed files they report.

    python benchmarks/prose_numbers.py               # check every marker; exit 1 naming each mismatch
    python benchmarks/prose_numbers.py --list FILE   # the measurement-like numbers of FILE without a marker
    python benchmarks/prose_numbers.py --ratchet     # record each file's count of unmarked numbers

Tables live in generated blocks (benchmarks/readme_tables.py). A number in a sentence carries a
marker right after it (an HTML comment, invisible on the rendered page)::

    AMA reaches 0.935<!--m: csv benchmarks/results/fmnist-oc-full/results.csv auroc mean method=ama seed=0 -->
    in 3,007 s<!--m: csv benchmarks/results/fmnist-oc-full/results.csv train_seconds max method=csi-aae -->

The marker's value, rounded to the decimals the text shows, must equal the number. Specs:

- ``csv FILE COLUMN AGG [FILTER...]``: AGG of COLUMN over the rows of a results.csv (or any CSV)
  that match every FILTER ``col=value`` (or ``col!=value``); AGG: mean, min, max, sum, count,
  sd (the population standard deviation, as every "±" in the docs), first;
- ``json FILE KEY.PATH [AGG]``: a value of a JSON file (``a.b.3.c``: keys and list indices;
  ``*`` takes every item of a list, then AGG reduces them, e.g. ``records.*.max_deviation max``);
- either may end with ``x100`` (AUROC points) or ``x1000`` (seconds -> ms) to scale the value.

Numbers that look like measurements (decimals with two or more places, thousands separators,
numbers with a unit such as s, ms, %, x, GB/s) and carry no marker are counted per file; the
counts in benchmarks/prose_numbers.json may only go down (``--ratchet`` after marking or removing
some), so no new unchecked number appears. tests/test_readme_tables.py runs both checks.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/*.md", "docs/methods/*.md"]
RATCHET = ROOT / "benchmarks" / "prose_numbers.json"
#: a number as prose writes it; a minus sign only where it cannot be a range's dash ("2,484-3,006.5")
NUMBER = r"(?:(?<![\w>)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e-?\d+)?"
MARK = re.compile(rf"(?P<num>{NUMBER})(?P<unit>\s?[A-Za-z%µ/]{{0,4}})<!--m: (?P<spec>[^>]*?) -->")
GENERATED = re.compile(r"<!-- generated: .*? -->\n.*?<!-- end generated -->", re.S)
FENCED = re.compile(r"```.*?```", re.S)
LOOKS_MEASURED = re.compile(
    rf"(?<![\w.\-/#])(?P<num>{NUMBER})(?P<unit>\s?(?:s|ms|µs|%|x|GB/s|MB|GB|MiB|GiB)\b)?(?![\w.]*<!--m:)")


def documents() -> list[Path]:
    return sorted({p for pattern in DOCS for p in ROOT.glob(pattern)})


AGGREGATES = {"mean": statistics.fmean, "min": min, "max": max, "sum": math.fsum, "sd": statistics.pstdev,
              "first": lambda v: v[0]}


def _rows(path: str, filters: list[str]) -> list[dict]:
    with open(ROOT / path, newline="") as f:
        rows = list(csv.DictReader(f))
    for flt in filters:
        if "!=" in flt:
            key, value = flt.split("!=", 1)
            rows = [r for r in rows if r.get(key) != value]
        else:
            key, value = flt.split("=", 1)
            rows = [r for r in rows if r.get(key) == value]
    return rows


def resolve(spec: str) -> float:
    """The value a marker's spec names (see the module docstring)."""
    parts = spec.split()
    scale = 1.0
    if parts and re.fullmatch(r"x\d+", parts[-1]):
        scale = float(parts.pop()[1:])
    kind, *args = parts
    if kind == "json":
        values, spread = [json.loads((ROOT / args[0]).read_text())], False
        for key in args[1].split("."):
            if key == "*":
                values, spread = [v for seq in values for v in (seq if isinstance(seq, list) else seq.values())], True
            elif spread:  # after a *: the items that have the key (and a value)
                values = [v[key] for v in values if isinstance(v, dict) and v.get(key) is not None]
            else:
                values = [v[int(key)] if isinstance(v, list) else v[key] for v in values]
        if len(args) > 2:
            return float(AGGREGATES[args[2]]([float(v) for v in values])) * scale
        (value,) = values
        return float(value) * scale
    if kind == "csv":
        path, column, agg, *filters = args
        rows = _rows(path, filters)
        if agg == "count":
            return float(len(rows)) * scale
        values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
        if not values:
            raise ValueError(f"no rows of {path} match {filters} with a value in {column!r}")
        return float(AGGREGATES[agg](values)) * scale
    raise ValueError(f"unknown marker kind {kind!r} (csv, json)")


def _shown(text: str) -> tuple[float, int]:
    """A number as written: its value and its decimals (``3,007`` -> (3007.0, 0))."""
    plain = text.replace(",", "")
    if "e" in plain:
        mantissa = plain.split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return float(plain), decimals - int(plain.split("e")[1])
    return float(plain), len(plain.split(".")[1]) if "." in plain else 0


def check_markers(text: str) -> list[str]:
    """Every marker of ``text`` whose value, rounded as shown, differs from its number."""
    problems = []
    for m in MARK.finditer(text):
        shown, decimals = _shown(m.group("num"))
        try:
            value = resolve(m.group("spec"))
        except (OSError, KeyError, IndexError, ValueError) as exc:
            problems.append(f"{m.group('num')} <!--m: {m.group('spec')} -->: {exc}")
            continue
        if abs(round(value, decimals) - shown) > 10 ** -(decimals + 6) * max(1.0, abs(shown)):
            problems.append(f"{m.group('num')} but the file gives {value:.{max(decimals, 0) + 2}f} "
                            f"(<!--m: {m.group('spec')} -->)")
    return problems


def unmarked(text: str) -> list[str]:
    """Measurement-like numbers of ``text`` outside generated blocks and code, without a marker."""
    prose = FENCED.sub("", GENERATED.sub("", text))
    prose = re.sub(r"`[^`]*`", "", prose)  # inline code: file names, commands, commit hashes
    out = []
    for m in LOOKS_MEASURED.finditer(prose):
        num, unit = m.group("num"), m.group("unit")
        if re.search(r"\.\d{2,}|,\d{3}", num) or unit:
            if prose[m.end():m.end() + 6] != "<!--m:":
                out.append(num + (unit or ""))
    return out


def counts() -> dict[str, int]:
    return {str(p.relative_to(ROOT)): len(unmarked(p.read_text())) for p in documents()}


def problems() -> list[str]:
    out = [f"{p.relative_to(ROOT)}: {msg}" for p in documents() for msg in check_markers(p.read_text())]
    allowed = json.loads(RATCHET.read_text()) if RATCHET.exists() else {}
    for name, n in counts().items():
        if n > allowed.get(name, 0):
            out.append(f"{name}: {n} measurement-like numbers without a marker, {allowed.get(name, 0)} allowed "
                       f"(mark the new ones: `python benchmarks/prose_numbers.py --list {name}`)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", metavar="FILE", help="print FILE's unmarked measurement-like numbers")
    ap.add_argument("--ratchet", action="store_true", help="record the current counts of unmarked numbers")
    args = ap.parse_args()
    if args.list:
        for n in unmarked((ROOT / args.list).read_text()):
            print(n)
        return
    if args.ratchet:
        RATCHET.write_text(json.dumps(counts(), indent=1, sort_keys=True) + "\n")
    found = problems()
    for p in found:
        print(p)
    if found:
        sys.exit(1)


if __name__ == "__main__":
    main()
