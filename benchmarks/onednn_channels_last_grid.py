"""Which channels-last convolutions does oneDNN get wrong? A grid, one subprocess per shape.

oneDNN (PyTorch's CPU convolution library) corrupts the heap on AVX2 CPUs in the backward pass of
some channels-last convolutions (upstream bug; ../shared/notes/avx2-channels-last.md has the first
measurements). This script measures, for each convolution shape of the grid, in a fresh process:

- ``crash``: the process died (abort, segfault; glibc's heap checks are on through
  ``libc_malloc_debug.so`` where it exists, so corruption is caught closer to where it happens);
- ``wrong``: it ran, but the output or a gradient differs from the same convolution with
  contiguous (NCHW) tensors by more than 1e-4 relative;
- ``ok``.

``--via-guard`` lays each convolution out with ``anomalykit.nn.channels_last_`` (speed-ups on)
instead: the shapes the guard excludes then run contiguous, the others channels-last.

The environment decides which oneDNN kernels run: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` makes an AVX-512 machine take the paths an AVX2-only CPU takes.

    python benchmarks/onednn_channels_last_grid.py --isa AVX2 --out benchmarks/results/avx2-channels-last/grid-avx2.json

The JSON holds the machine, torch version, environment and one row per shape; the guard in
``anomalykit.nn.channels_last_safe`` is the rule these rows support.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[8]))
ic, oc, k, s, p, side, batch = (int(a) for a in sys.argv[1:8])
via_guard = sys.argv[9] == "1"
torch.manual_seed(0)
conv = torch.nn.Conv2d(ic, oc, k, stride=s, padding=p, bias=False)
ref_w = conv.weight.detach().clone()
if via_guard:  # the layout anomalykit.nn.channels_last_ chooses (with its guard)
    from anomalykit.nn import channels_last_
    channels_last_(conv)
worst = 0.0
for it in range(10):
    x = torch.randn(batch, ic, side, side)
    # the input channels-last, as a channels-last layer before it leaves it
    xc = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    if via_guard:
        conv.zero_grad()
        y = conv(xc)
        y.square().sum().backward()
        wgrad = conv.weight.grad
    else:  # the bare channels-last convolution
        w = ref_w.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        y = torch.nn.functional.conv2d(xc, w, stride=s, padding=p)
        y.square().sum().backward()
        wgrad = w.grad
    # the same convolution, contiguous
    w0 = ref_w.clone().requires_grad_()
    x0 = x.clone().requires_grad_()
    y0 = torch.nn.functional.conv2d(x0, w0, stride=s, padding=p)
    y0.square().sum().backward()
    for a, b in ((y, y0), (xc.grad, x0.grad), (wgrad, w0.grad)):
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
print(worst)
"""


def malloc_debug() -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64"):
        f = Path(d) / "libc_malloc_debug.so.0"
        if f.exists():
            return str(f)
    return None


def run_one(cfg: dict, env: dict, via_guard: bool) -> dict:
    args = [str(cfg[k]) for k in ("ic", "oc", "k", "stride", "pad", "side", "batch", "threads")] + ["1" if via_guard else "0"]
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=300)
    row = dict(cfg, seconds=round(time.perf_counter() - t, 2), returncode=r.returncode)
    if r.returncode != 0:
        row["result"] = "crash"
        row["stderr"] = (r.stderr.strip().splitlines() or [""])[-1][:200]
    else:
        err = float(r.stdout.strip().splitlines()[-1])
        row["max_rel_diff"] = err
        row["result"] = "wrong" if err > 1e-4 else "ok"
    return row


def grid(kind: str) -> list[dict]:
    rows = []
    if kind == "full":
        for k, stride, ic, oc, side in itertools.product((1, 3, 4), (1, 2), (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32),
                                                         (4, 16), (8, 14)):
            rows.append(dict(ic=ic, oc=oc, k=k, stride=stride, pad=0 if k == 1 else 1, side=side, batch=256, threads=1))
        # wider outputs, smaller batches and two threads around the 1x1 stride-2 case
        for ic, oc, batch, threads in itertools.product((2, 4, 6, 8, 10, 20), (8, 64, 128), (16, 64), (1, 2)):
            rows.append(dict(ic=ic, oc=oc, k=1, stride=2, pad=0, side=8, batch=batch, threads=threads))
        # 2x2 and 1x1 with stride 3 / 4
        for k, stride, ic in itertools.product((1, 2), (3, 4), (2, 4, 8)):
            rows.append(dict(ic=ic, oc=8, k=k, stride=stride, pad=0, side=12, batch=256, threads=1))
    else:  # quick: the shapes of the first report
        for ic in (1, 2, 4, 6, 8, 12, 16):
            rows.append(dict(ic=ic, oc=2 * ic if ic > 1 else 8, k=1, stride=2, pad=0, side=8, batch=256, threads=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", default="", help="ONEDNN_MAX_CPU_ISA for the children (e.g. AVX2); empty: the machine's own")
    ap.add_argument("--grid", choices=("full", "quick"), default="full")
    ap.add_argument("--via-guard", action="store_true",
                    help="lay each convolution out with anomalykit.nn.channels_last_ (the guard) instead of channels-last as is")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch  # for the record only; the children import their own

    env = dict(os.environ)
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
        env["ATEN_CPU_CAPABILITY"] = args.isa.lower() if args.isa.upper() in ("AVX2", "AVX512") else "default"
    lib = malloc_debug()
    if lib:
        env["LD_PRELOAD"] = lib
        env["GLIBC_TUNABLES"] = "glibc.malloc.check=3"
    rows = []
    for cfg in grid(args.grid):
        row = run_one(cfg, env, args.via_guard)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": cpu, "cpu_has_avx512f": " avx512f" in flags, "torch": torch.__version__,
        "torch_cpu_capability_of_parent": torch.backends.cpu.get_cpu_capability(),
        "via_guard": args.via_guard,
        "env": {k: env[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LD_PRELOAD", "GLIBC_TUNABLES") if k in env},
        "counts": {r: sum(row["result"] == r for row in rows) for r in ("ok", "wrong", "crash")},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["counts"]))


if __name__ == "__main__":
    main()
