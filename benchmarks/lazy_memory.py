"""Peak memory of scoring image folders of 10,000 and 100,000 64x64x3 PNGs: `anomalykit score`
(which reads a folder a batch at a time) against the same rows loaded into memory first
(`score_samples(open_rows(folder).materialize())`; the committed score and fit files were
measured when this mode was the in-memory folder loader, which `load_dataset` then was).

    python benchmarks/lazy_memory.py --work /tmp/lazy-memory --out benchmarks/results/lazy-memory/score-64x64x3.json
    python benchmarks/lazy_memory.py --work /tmp/lazy-memory --fit --out benchmarks/results/lazy-memory/fit-64x64x3.json
    python benchmarks/lazy_memory.py --work /tmp/lazy-memory --run --out benchmarks/results/lazy-memory/run-64x64x3.json

With ``--fit`` it times training instead: one epoch of a narrow AMA (width 4, hidden 16,
feature_dim 16, batch 256; the model's size does not change what the data path holds) on the
whole folder, streamed (``fit(open_rows(folder))``) at every size, and loaded first (the
in-memory loader) at ``--fit-loaded-sizes`` only (default 10,000: at 100,000 the loaded copy is
1.2 GB of uint8 plus 4.9 GB of float32 model-space rows, and the epoch takes a quarter of an hour).

With ``--run`` it measures the whole `anomalykit run` (OOD protocol, the folder against itself:
70% of the images the training pool, the other 30% plus 20% of that drawn again the evaluation
rows), training the narrow AMA for one epoch on ``--max-train`` (default 2,000) of the pool, then
scoring every evaluation image and writing the report, ``--repeats`` times per size (median and
range). The split is lazy views, so what grows with the folder is the index and one score per
evaluation row.

Writes the PNG folders under --work (about 1.3 GB for 100,000 images; kept for reruns), fits one
AMA model (small budget widths, 1 epoch) on 1,000 generated images, then runs each command in a
fresh process and samples the resident memory of its whole process tree (the command and its
DataLoader workers) every 50 ms from /proc: the peak of that sum is the column "peak RSS, tree";
"peak RSS, largest process" is the kernel's ru_maxrss. Pages a DataLoader worker shares with
the process that forked it count in both, so the tree sum overstates what the workers add. Writes a ``rows`` table JSON for
benchmarks/readme_tables.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def images(n: int, seed: int) -> np.ndarray:
    """n smooth random 64x64x3 uint8 images (8x8 noise upsampled, plus a little pixel noise)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32)
    up = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)
    return np.clip(up + rng.normal(0, 8, size=up.shape), 0, 255).astype(np.uint8)


def write_folder(folder: Path, n: int) -> None:
    from PIL import Image

    done = folder / ".complete"
    if done.exists():
        return
    (folder / "normal").mkdir(parents=True, exist_ok=True)
    for lo in range(0, n, 5000):
        for i, im in enumerate(images(min(5000, n - lo), seed=lo)):
            Image.fromarray(im).save(folder / "normal" / f"{lo + i:06d}.png")
    done.write_text(str(n))


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, from /proc."""
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as fh:
                    parents[int(p)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    tree, frontier = {root}, [root]
    while frontier:
        kids = [c for c, pp in parents.items() if pp in frontier and c not in tree]
        tree.update(kids)
        frontier = kids
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` in a wrapper process; peak tree RSS sampled here, ru_maxrss from the wrapper."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], stdout=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    maxrss_kb, rc = (int(v) for v in proc.stdout.read().split()[-2:])
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}")
    return {"peak_tree_mb": peak / 2**20, "maxrss_mb": maxrss_kb / 1024, "seconds": time.perf_counter() - t}


FIT = ("import sys, torch, anomalykit; from anomalykit.lazy_rows import open_rows; "
       "torch.set_num_threads(int(sys.argv[3])); "
       "X = open_rows(sys.argv[1]) if sys.argv[2] == 'lazy' else open_rows(sys.argv[1]).materialize(); "
       "anomalykit.load_method('ama', epochs=1, width=4, hidden=16, feature_dim=16, n_critic=1, batch_size=256).fit(X, progress=False)")


def fit_rows(n: int, folder: Path, args, env) -> list[list[str]]:
    out = []
    loaded = {int(s) for s in args.fit_loaded_sizes.split(",") if s}
    ways = [(f"`fit(open_rows(FOLDER))` (batches read as drawn, {w} decoding worker{'s' * (w != '1')})", "lazy", w)
            for w in args.workers.split(",")] + [("all loaded first", "eager", "0")]
    for how, mode, workers in ways:
        if mode == "eager" and n not in loaded:
            continue
        m = measure([sys.executable, "-c", FIT, str(folder), mode, str(args.threads)], dict(env, ANOMALYKIT_DATA_WORKERS=workers))
        print(n, how, {k: round(v, 1) for k, v in m.items()}, flush=True)
        out.append([f"{n:,}", how, f"{m['peak_tree_mb']:.0f}", f"{m['maxrss_mb']:.0f}", f"{m['seconds']:.0f}"])
    return out


def run_row(n: int, folder: Path, args) -> list[str]:
    """One `anomalykit run` on the folder (OOD against itself), its report in WORK/run-N."""
    import shutil

    out = args.work / f"run-{n}"
    cmd = [sys.executable, "-m", "anomalykit.cli", "run", "ama", "--data", str(folder), "--protocol", "ood", "--ood-data",
           str(folder), "--max-train", str(args.max_train), "--epochs", "1", "--set", "width=4", "--set", "hidden=16",
           "--set", "feature_dim=16", "--set", "n_critic=1", "--batch-size", "256", "--threads", str(args.threads),
           "--out", str(out), "-q"]
    runs = []
    for _ in range(args.repeats):  # the training peak varies by about 100 MB from run to run
        shutil.rmtree(out, ignore_errors=True)
        runs.append(measure(cmd))
        print(n, runs[-1], flush=True)
    metrics = json.loads((out / "metrics.json").read_text())
    how = f"`anomalykit run` (train {metrics['n_train']:,}, score {metrics['n_test']:,}), {args.repeats} runs"

    def spread(key: str) -> str:
        v = sorted(r[key] for r in runs)
        return f"{v[len(v) // 2]:.0f}" + (f" ({v[0]:.0f}-{v[-1]:.0f})" if len(v) > 1 else "")

    return [f"{n:,}", how, spread("peak_tree_mb"), spread("maxrss_mb"), spread("seconds")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit", action="store_true", help="measure fit (one epoch) instead of score")
    ap.add_argument("--fit-loaded-sizes", default="10000")
    ap.add_argument("--workers", default="1", help="--fit: streamed fits with these ANOMALYKIT_DATA_WORKERS counts (e.g. 0,1)")
    ap.add_argument("--run", action="store_true", help="measure `anomalykit run` (OOD, the folder against itself)")
    ap.add_argument("--max-train", type=int, default=2000, help="training images of --run")
    ap.add_argument("--repeats", type=int, default=3, help="--run: runs per size (the median, and the range, are reported)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    model = args.work / "model.pt"
    if not model.exists():
        fit = ("import numpy as np, sys; sys.path.insert(0, sys.argv[2]); import anomalykit, lazy_memory as L; "
               "anomalykit.load_method('ama', epochs=1, width=16, hidden=64, feature_dim=64).fit(L.images(1000, 123).transpose(0, 3, 1, 2), progress=False)"
               ".save(sys.argv[1])")
        subprocess.run([sys.executable, "-c", fit, str(model), str(Path(__file__).parent)], check=True, env=env)
    ak = [sys.executable, "-m", "anomalykit.cli", "score", str(model)]
    eager = ("import sys, numpy as np, anomalykit; from anomalykit.lazy_rows import open_rows; "
             "np.save(sys.argv[3], anomalykit.load(sys.argv[1]).score_samples(open_rows(sys.argv[2]).materialize()))")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"png-{n}"
        t = time.perf_counter()
        write_folder(folder, n)
        print(f"{n} images ready in {time.perf_counter() - t:.0f} s", flush=True)
        if args.fit:
            rows += fit_rows(n, folder, args, env)
            continue
        if args.run:
            rows.append(run_row(n, folder, args))
            continue
        lazy_out, eager_out = args.work / f"scores-{n}-lazy.npy", args.work / f"scores-{n}-eager.npy"
        for how, cmd in (("`anomalykit score MODEL FOLDER` (a batch at a time)", [*ak, str(folder), "--out", str(lazy_out)]),
                         ("all loaded first", [sys.executable, "-c", eager, str(model), str(folder), str(eager_out)])):
            m = measure(cmd)
            print(n, how, {k: round(v, 1) for k, v in m.items()}, flush=True)
            rows.append([f"{n:,}", how, f"{m['peak_tree_mb']:.0f}", f"{m['maxrss_mb']:.0f}", f"{m['seconds']:.0f}"])
        if not np.array_equal(np.load(lazy_out), np.load(eager_out)):
            raise SystemExit(f"{n} images: the lazy and in-memory scores differ")
    out = {
        "command": "python benchmarks/lazy_memory.py --work WORK " + (f"--fit --workers {args.workers} " if args.fit else "")
                   + (f"--run --max-train {args.max_train} --repeats {args.repeats} " if args.run else "") + "--out " + str(args.out)
                   + f" --threads {args.threads}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average at the end "
                   f"{os.getloadavg()[0]:.1f}",
        "columns": ["images (64x64x3 PNG)", "how they are trained on" if args.fit else "what runs" if args.run else "how they are scored",
                    "peak RSS, tree (MB)",
                    "peak RSS, largest process (MB)", "wall s"],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
