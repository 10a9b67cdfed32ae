"""Scoring latency of a fitted detector: the checkpoint vs its TorchScript and ONNX exports.

    python benchmarks/bench_export.py --json bench-results/export.json     # prints the table in docs/exporting.md
    python benchmarks/bench_export.py --table bench-results/export.json    # the table again

Each method is fitted once on 512 Fashion-MNIST training images of class 0 (28x28,
``make_split("one-class", ...)``) with its default architecture and one epoch (latency does not
depend on training length; ADGAN with its ``small`` budget, n_seed = 8, as ``anomalykit bench``
runs it), saved, loaded back and exported to both formats. Then every runtime scores the same
1,000 test images, **interleaved**: round r runs checkpoint, TorchScript, onnxruntime one after
the other, so a change of load on a shared machine hits all three alike (separate timing runs
per runtime gave a 1.5x "difference" on this VM that interleaving showed to be load):

- checkpoint    ``anomalykit.load(model.pt).score_samples(X)`` (native kernels where built)
- torchscript   ``load_scorer(model.torchscript.pt).score_samples(X)`` (torch.jit.load)
- onnxruntime   ``load_scorer(model.onnx).score_samples(X)`` (CPUExecutionProvider)

All three validate the rows and score them in batches of the model's ``score_batch_size``, as
``anomalykit score`` does; one warm-up call each first. torch and onnxruntime run on ``--threads``
threads (default 1). Reported per runtime: best and median seconds per 1,000 rows, speed vs the
checkpoint (best times), file size, export time, and the largest deviation from the
checkpoint's scores relative to the largest score.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("ama", "mae-simplex", "csi-aae", "adgan")
RUNTIMES = ("checkpoint", "torchscript", "onnxruntime")


def prepare(method: str, X_train, folder: Path, threads: int) -> dict:
    """Fit, save, reload, export: {"scorers": {runtime: object with score_samples}, "bytes": ..., "export_seconds": ...}."""
    import anomalykit
    from anomalykit.export import export, load_scorer

    cls = type(anomalykit.load_method(method))
    params = dict(getattr(cls, "budgets", {}).get("small", {})) if method == "adgan" else {}
    params.update(epochs=1, device="cpu")
    start = time.perf_counter()
    path = anomalykit.load_method(method, **params).fit(X_train, progress=False).save(folder / f"{method}.pt")
    fit_seconds = time.perf_counter() - start
    det = anomalykit.load(path)
    out = {"scorers": {"checkpoint": det}, "bytes": {"checkpoint": path.stat().st_size}, "export_seconds": {},
           "fit_seconds": fit_seconds, "refused": {}}
    for fmt, runtime, suffix in (("torchscript", "torchscript", ".torchscript.pt"), ("onnx", "onnxruntime", ".onnx")):
        start = time.perf_counter()
        try:
            result = export(det, folder / f"{method}{suffix}", format=fmt)
        except anomalykit.ExportError as exc:
            out["refused"][runtime] = str(exc)
            continue
        out["export_seconds"][runtime] = time.perf_counter() - start
        out["bytes"][runtime] = result.bytes
        scorer = load_scorer(result.path)
        if fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
            scorer._session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
        out["scorers"][runtime] = scorer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (ADGAN: at most 2, tens of seconds each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the measurements here")
    parser.add_argument("--table", default=None, metavar="JSON", help="only print the table of a saved --json file")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return

    import onnxruntime

    from anomalykit.data import make_split

    torch.set_num_threads(args.threads)
    split = make_split("one-class", "fashion-mnist", normal_class=0, seed=0)
    X_train, X = split.X_train[:512], split.X_test[: args.rows]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            prep = prepare(method, X_train, Path(tmp), args.threads)
            scorers = prep["scorers"]
            reference = scorers["checkpoint"].score_samples(X)
            scores = {name: s.score_samples(X) for name, s in scorers.items()}  # warm-up
            times = {name: [] for name in scorers}
            loads = []
            for _ in range(min(args.rounds, 2) if method == "adgan" else args.rounds):
                for name, s in scorers.items():
                    start = time.perf_counter()
                    s.score_samples(X)
                    times[name].append(time.perf_counter() - start)
                loads.append(os.getloadavg()[0])
            for name in RUNTIMES:
                rec = {"method": method, "runtime": name, "rows": len(X)}
                if name in prep["refused"]:
                    rec["refused"] = prep["refused"][name]
                else:
                    rec.update(seconds=times[name], bytes=prep["bytes"][name], export_seconds=prep["export_seconds"].get(name),
                               max_deviation=float(np.abs(scores[name] - reference).max() / np.abs(reference).max()))
                records.append(rec | {"load_average": [round(x, 2) for x in loads]})
            print(f"{method}: done (load average {min(loads):.1f}-{max(loads):.1f})", flush=True)
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "records": records}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(info, indent=1))
    print_table(info)


def print_table(info: dict) -> None:
    print(f"\n{info['cores']} cores, torch {info['torch']}, onnxruntime {info['onnxruntime']}, {info['threads']} thread(s), "
          f"{info['records'][0]['rows']} rows per call\n")
    print("| method | runtime | best s / 1,000 rows | median | vs checkpoint | file | export | max deviation |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    best = {}
    for rec in info["records"]:
        if "seconds" in rec:
            best[rec["method"], rec["runtime"]] = min(rec["seconds"]) * 1000 / rec["rows"]
    for rec in info["records"]:
        method, runtime = rec["method"], rec["runtime"]
        if "refused" in rec:
            print(f"| {method} | {runtime} | refused | | | | | |")
            continue
        per = 1000 / rec["rows"]
        export = f"{rec['export_seconds']:.1f} s" if rec["export_seconds"] is not None else ""
        print(f"| {method} | {runtime} | {min(rec['seconds']) * per:.3f} | {float(np.median(rec['seconds'])) * per:.3f} | "
              f"{best[method, 'checkpoint'] / best[method, runtime]:.2f}x | {rec['bytes'] / 1e6:.2f} MB | {export} | "
              f"{rec['max_deviation']:.1e} |")


if __name__ == "__main__":
    main()
