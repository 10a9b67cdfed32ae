"""Plant the hand-written mutants of benchmarks/mutation/cpp_mutants.toml in the native CPU kernels,
one at a time, rebuild the extension and run the op tests (not part of CI: about a minute each).

    python benchmarks/mutation/cpp_mutants.py              # every mutant
    python benchmarks/mutation/cpp_mutants.py pair_l1_tail

Works in a copy of the repository (``.mutation/cpp``), so the checkout and its built extension are
never touched; the copy's extension is built in place with ninja (only the mutated file
recompiles). A mutant is *killed* when the op tests fail against it; the unmutated build must
pass them first. Writes ``benchmarks/results/mutation/cpp.json`` and prints one line per mutant.
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
WORK = ROOT / ".mutation" / "cpp"
OUT = ROOT / "benchmarks" / "results" / "mutation" / "cpp.json"
TESTS = ["tests/test_ops_pair_feature_l1.py", "tests/test_ops_simplex_mix.py", "tests/test_ops_annulus_sample.py",
         "tests/test_ops_outer_adam_step.py", "tests/test_ops_frontend.py"]


def prepare() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for raw in filter(None, files):
        src, dst = ROOT / raw.decode(), WORK / raw.decode()
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def build() -> tuple[bool, str]:
    env = dict(os.environ, ANOMALYKIT_USE_CUDA="0", ANOMALYKIT_REQUIRE_EXTENSION="1", MAX_JOBS="2")
    res = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=WORK, env=env,
                         capture_output=True, text=True)
    return res.returncode == 0, (res.stdout + res.stderr)[-2000:]


def run_tests() -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=str(WORK), ANOMALYKIT_KERNELS="auto", OMP_NUM_THREADS="1")
    probe = subprocess.run([sys.executable, "-c", "import anomalykit.ops._native as n, anomalykit; "
                            "print(anomalykit.__file__, n.loaded())"], cwd=WORK, env=env, capture_output=True, text=True)
    if str(WORK) not in probe.stdout or "True" not in probe.stdout:
        raise SystemExit(f"the copy's extension is not the one imported: {probe.stdout}{probe.stderr}")
    res = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS], cwd=WORK,
                         env=env, capture_output=True, text=True)
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-300:]
    return res.returncode == 0, tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    mutants = tomllib.loads((HERE / "cpp_mutants.toml").read_text())
    names = args.names or list(mutants)
    prepare()
    ok, log = build()
    if not ok:
        raise SystemExit(f"the unmutated extension does not build:\n{log}")
    passed, tail = run_tests()
    if not passed:
        raise SystemExit(f"the op tests fail on the unmutated build: {tail}")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names:
        m = mutants[name]
        path = WORK / m["file"]
        original = (ROOT / m["file"]).read_text()
        if original.count(m["old"]) != 1:
            raise SystemExit(f"{name}: the text to replace occurs {original.count(m['old'])} times in {m['file']}")
        t0 = time.time()
        path.write_text(original.replace(m["old"], m["new"]))
        try:
            built, log = build()
            if not built:
                status, detail = "build failed", log.strip().splitlines()[-1] if log.strip() else ""
            else:
                passed, detail = run_tests()
                status = "survived" if passed else "killed"
        finally:
            path.write_text(original)
        if status == "survived" and "equivalent" in m:
            status = "equivalent"
        results[name] = {"file": m["file"], "what": m["what"], "status": status, "detail": detail,
                         "equivalent": m.get("equivalent", ""), "seconds": round(time.time() - t0)}
        print(f"{name}: {status} ({detail}) {results[name]['seconds']} s", flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1) + "\n")
    build()  # leave the copy unmutated


if __name__ == "__main__":
    main()
