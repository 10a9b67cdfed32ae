"""Mutation testing of the core and the plugins' losses and detectors with mutmut (not part of CI).

    python benchmarks/mutation/run.py                 # every target in targets.toml (hours on 2 cores)
    python benchmarks/mutation/run.py preprocess ama_losses
    python benchmarks/mutation/run.py --report        # only rebuild the report from the saved results

Each target (benchmarks/mutation/targets.toml) is one module and the test files that should catch
a bug in it. mutmut plants one mutant at a time (an operator, a constant, a name, an argument...)
and runs the tests of that list that execute the mutated function; a mutant is *killed* when one
fails. Lines that only raise a documented error are not mutated (``do_not_mutate_patterns``
below: their wording is user text; the condition that raises is on the line before and is
mutated). A target runs in its own copy of the repository under ``.mutation/NAME`` (mutmut's
cache there makes a rerun resume), and its result is saved to
``benchmarks/results/mutation/NAME.json``: every mutant's status, and the diff of each one that
survived; a rerun starts afresh unless ``--resume``. ``benchmarks/mutation/equivalent.toml`` lists the survivors that no test can kill
(equivalent mutants), each with a one-line reason; the report
(``benchmarks/results/mutation/report.md``) counts, per target, killed / (mutants - equivalent).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = ROOT / "benchmarks" / "results" / "mutation"
WORK = ROOT / ".mutation"
#: lines not mutated: statements that raise a documented anomalykit error (user-facing wording)
DO_NOT_MUTATE = [r"^\s*raise \w+Error\(", r"^\s*warnings\.warn\("]
TARGET = 80.0


def targets() -> dict[str, dict]:
    return tomllib.loads((HERE / "targets.toml").read_text())


def equivalent() -> dict[str, dict]:
    """``{target: {mutant key: reason}}`` plus ``equivalent_pattern`` and ``explained`` (lists of
    ``{match, reason[, targets]}``: a regular expression searched in the key); a key is
    ``FUNCTION: -OLD +NEW`` (stable across renumbering)."""
    path = HERE / "equivalent.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def verdict(equiv: dict, target: str, key: str) -> tuple[str, str] | None:
    """``("equivalent", reason)`` for a survivor no test can kill (it computes the same thing),
    ``("explained", reason)`` for one left alive on purpose (still counted as a survivor), else None."""
    import re

    if key in equiv.get(target, {}):
        return "equivalent", equiv[target][key]
    for kind in ("equivalent_pattern", "explained"):
        for rule in equiv.get(kind, []):
            if (not rule.get("targets") or target in rule["targets"]) and re.search(rule["match"], key):
                return ("equivalent" if kind == "equivalent_pattern" else "explained"), rule["reason"]
    return None


def _copy_repo(dest: Path) -> None:
    """The tracked files (and the built native extension) into ``dest``; a rerun refreshes them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src, dst = ROOT / rel, dest / rel
        if not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)
    for so in (ROOT / "anomalykit").glob("_C*.so"):
        shutil.copy2(so, dest / "anomalykit" / so.name)


def _mutmut_config(target: dict) -> str:
    def toml_list(items):
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["anomalykit", "anomalykit_plugins"]\n'
        f"only_mutate = {toml_list([target['module']])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(target['tests'])}\n"
        f'also_copy = ["tests", "benchmarks"]\n'
        f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE)}\n"
        f"pytest_add_cli_args = {toml_list(['-p', 'no:cacheprovider', '-q'] + (['-k', target['k']] if 'k' in target else []))}\n"
    )


def _key(function: str, diff: str) -> str:
    """A mutant's identity that survives renumbering: its function and its changed lines."""
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return f"{function}: " + " ".join(ln.strip() for ln in changed)


def run_target(name: str, target: dict, resume: bool = False) -> dict:
    work = WORK / name
    if not resume and (work / "mutants").exists():
        shutil.rmtree(work / "mutants")  # results of other code or tests would be stale
    work.mkdir(parents=True, exist_ok=True)
    _copy_repo(work)
    pyproject = work / "pyproject.toml"
    pyproject.write_text((ROOT / "pyproject.toml").read_text() + _mutmut_config(target))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    mutmut = [sys.executable, "-m", "mutmut"]
    t0 = time.time()
    with open(work / "mutmut.log", "w") as log:  # mutmut's own output, to see why a run checked nothing
        subprocess.run([*mutmut, "run"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        if ": " in line:
            mutant, status = line.strip().rsplit(": ", 1)
            statuses[mutant] = status
    survivors = {}
    for mutant, status in statuses.items():
        if status in ("survived", "no tests"):
            diff = subprocess.run([*mutmut, "show", mutant], cwd=work, env=env, capture_output=True, text=True).stdout
            function = mutant.split("__mutmut_")[0].split(".", 1)[-1].replace("xǁ", "").replace("ǁ", ".")
            survivors[mutant] = {"status": status, "key": _key(function, diff), "diff": diff.strip()}
    result = {"target": name, "module": target["module"], "tests": target["tests"], "seconds": round(seconds),
              "statuses": statuses, "survivors": survivors,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(),
              "mutmut": subprocess.run([*mutmut, "--version"], capture_output=True, text=True).stdout.strip()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def score(result: dict, equiv: dict) -> dict:
    statuses = list(result["statuses"].values())
    killed = sum(s in ("killed", "timeout", "segfault") for s in statuses)
    survived = [m for m, s in result["statuses"].items() if s in ("survived", "no tests")]
    eq = [m for m in survived if (verdict(equiv, result["target"], result["survivors"][m]["key"]) or ("",))[0] == "equivalent"]
    other = [s for s in statuses if s not in ("killed", "timeout", "segfault", "survived", "no tests")]
    considered = len(statuses) - len(eq) - len(other)
    return {"mutants": len(statuses), "killed": killed, "equivalent": len(eq), "survived": len(survived) - len(eq),
            "not run": len(other), "score": 100.0 * killed / considered if considered else 100.0}


def report() -> str:
    equiv = equivalent()
    rows, survivors = [], []
    for name in targets():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            rows.append(f"| {name} | | | | | | not run yet |")
            continue
        result = json.loads(path.read_text())
        s = score(result, equiv)
        status = "ok" if s["score"] >= TARGET else f"below {TARGET:.0f}%"
        rows.append(f"| {name} (`{result['module']}`) | {s['mutants']} | {s['killed']} | {s['equivalent']} | {s['survived']} "
                    f"| {s['score']:.1f}% | {status}; {result['seconds']} s at {result['commit']} |")
        for m, info in sorted(result["survivors"].items()):
            v = verdict(equiv, name, info["key"])
            text = f"**{info['status']}**" if v is None else (f"equivalent: {v[1]}" if v[0] == "equivalent"
                                                              else f"**{info['status']}**: {v[1]}")
            survivors.append(f"| {name} | {info['key'].replace('|', '/')} | {text} |")
    return "\n".join([
        "# Mutation testing report", "",
        "Generated by `python benchmarks/mutation/run.py --report` from the files in this folder "
        "(one JSON per target: every mutant's status, and the diff of each survivor). Score = killed / "
        "(mutants - equivalent); target >= 80% per module.", "",
        "| target | mutants | killed | equivalent | survived | score | |", "|---|---:|---:|---:|---:|---:|---|",
        *rows, "", "## Survivors", "", "| target | mutant (function: changed lines) | verdict |", "|---|---|---|",
        *survivors, "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="targets to run (default: all)")
    ap.add_argument("--report", action="store_true", help="only rebuild report.md from the saved results")
    ap.add_argument("--resume", action="store_true", help="keep mutmut's results from an interrupted run of the same code")
    args = ap.parse_args()
    all_targets = targets()
    unknown = sorted(set(args.names) - set(all_targets))
    if unknown:
        raise SystemExit(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(all_targets)}")
    if not args.report:
        for name in args.names or list(all_targets):
            result = run_target(name, all_targets[name], resume=args.resume)
            s = score(result, equivalent())
            print(f"{name}: {s['killed']}/{s['mutants']} killed, {s['equivalent']} equivalent, "
                  f"{s['survived']} survived: {s['score']:.1f}% ({result['seconds']} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.md").write_text(report())


if __name__ == "__main__":
    main()
