"""Run the torchrun tests' commands N times and count aborts at process teardown.

    python benchmarks/torchrun_teardown_loop.py --runs 30                  # the CLI under torchrun
    python benchmarks/torchrun_teardown_loop.py --runs 30 --target worker  # tests/distributed_worker.py
    python benchmarks/torchrun_teardown_loop.py --runs 20 --target minimal-unfixed  # the abort itself

``cli`` is tests/test_distributed.py::test_cli_under_torchrun_writes_one_report's command
(`python -m anomalykit run ama --nproc 2 ...`, 2 CPU processes, gloo); ``worker`` is the
data-parallel worker script of the same module. ``minimal`` is a few all_reduce calls on fresh
tensors between anomalykit.distributed.init_from_env and shutdown; ``minimal-unfixed`` is the same
with a plain init_process_group and no shutdown, which leaves the group to interpreter teardown: a
gloo worker thread that drops a finished collective's tensors then needs the GIL, Python ends it
with pthread_exit, and the unwinding through a noexcept destructor aborts the process
("terminate called without an active exception"; see anomalykit.distributed.shutdown).

A run counts as an abort when a process printed "terminate called" or torchrun reports a signal
(e.g. SIGABRT, exit code -6), as a failure when it exits non-zero otherwise. Prints one line per
run and a summary; exits 1 unless every run was clean. Plain script (no pytest-benchmark): the
interesting number is a count, not a time.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABORT_MARKERS = re.compile(r"terminate called|Signal \d+ \(SIG\w+\)|exitcode\s*:\s*-\d+|SIGABRT|core dumped")


MINIMAL = """
import sys
import torch
import torch.distributed as dist
from anomalykit import distributed as D

fixed = sys.argv[1] == "fixed"
if fixed:
    D.init_from_env("cpu")
else:
    dist.init_process_group("gloo")
import torch._dynamo  # noqa: F401,E402  (torch.optim imports it lazily, and with it torch.distributed.nn)

for _ in range(20):
    t = torch.randn(10000)
    dist.all_reduce(t)
    del t
if fixed:
    assert D.shutdown()
"""


def command(target: str, folder: Path) -> list[str]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if target == "cli":
        return [sys.executable, "-m", "anomalykit", "run", "ama", "--nproc", "2", "--epochs", "1", "-q",
                "--set", "width=8", "--set", "n_critic=1", "--out", str(folder / "run")]
    if target == "worker":
        return [*torchrun, str(ROOT / "tests" / "distributed_worker.py"), str(folder)]
    script = folder / "minimal.py"
    script.write_text(MINIMAL)
    return [*torchrun, str(script), "unfixed" if target == "minimal-unfixed" else "fixed"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--target", choices=["cli", "worker", "minimal", "minimal-unfixed"], default="cli")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--logs", type=Path, default=None, help="keep each run's output here (default: only failed runs, printed)")
    parser.add_argument("--json", type=Path, default=None,
                        help="add this target's counts as a row of a table JSON (columns/rows, for benchmarks/readme_tables.py)")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    counts = {"ok": 0, "abort": 0, "failed": 0}
    start = time.perf_counter()
    for i in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="teardown-") as tmp:
            t = time.perf_counter()
            try:
                res = subprocess.run(command(args.target, Path(tmp)), capture_output=True, text=True,
                                     timeout=args.timeout, cwd=tmp, env=env)
                rc, output = res.returncode, res.stdout + res.stderr
            except subprocess.TimeoutExpired as exc:
                rc, output = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        verdict = "abort" if ABORT_MARKERS.search(output) else ("ok" if rc == 0 else "failed")
        counts[verdict] += 1
        print(f"run {i:3d}/{args.runs}: {verdict:<6} rc={rc}  {time.perf_counter() - t:5.1f} s", flush=True)
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            (args.logs / f"run{i:03d}-{verdict}.log").write_text(output)
        elif verdict != "ok":
            print(output[-4000:], flush=True)
    print(f"{args.target}: {args.runs} runs, {counts['ok']} clean, {counts['abort']} aborts, {counts['failed']} other failures "
          f"({time.perf_counter() - start:.0f} s)")
    if args.json is not None:
        import json
        import platform

        table = json.loads(args.json.read_text()) if args.json.exists() else {
            "what": "aborts at process teardown under torchrun (benchmarks/torchrun_teardown_loop.py)",
            "columns": ["target", "runs", "clean", "aborts", "other failures", "command"],
            "align": ["---", "---:", "---:", "---:", "---:", "---"], "rows": []}
        cmd = f"python benchmarks/torchrun_teardown_loop.py --runs {args.runs} --target {args.target}"
        table["rows"] = [r for r in table["rows"] if r[0] != args.target] + [
            [args.target, args.runs, counts["ok"], counts["abort"], counts["failed"], f"`{cmd}`"]]
        table["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0 if counts["ok"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
