#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine, writing everything under one folder.
#
#   bash benchmarks/gpu_check.sh [OUT]          # default OUT: gpu-check
#
# With a CUDA torch and nvcc: builds the extension with its CUDA kernels, runs the first-use gate
# for every op and dtype on the GPU, the op tests (the CUDA parity, gradcheck, gradgradcheck, opcheck,
# non-contiguous and torch.compile cases run there), the op benchmarks on CUDA (native vs eager vs
# torch.compile, GB/s and % of the device's memory bandwidth), and one Fashion-MNIST one-class
# class of AMA at the paper budget with the native kernels and with ANOMALYKIT_KERNELS=reference.
# Without a GPU it runs the CPU equivalents at small sizes (CI does, so the script is known to
# work before a GPU sees it), says what it skipped, and exits 0. Each step's output is in
# OUT/<step>.log; OUT/summary.md says what ran, what passed and what was skipped. The machine
# has no network: the data must travel with the repository (ANOMALYKIT_DATA, or .data/ beside it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
PY=${PYTHON:-python}
start=$(date +%s)
failures=0

note() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME TIMEOUT_S CMD...: run, log, record
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then note "- $name: ok (${dt} s)"; else note "- $name: FAILED (exit $rc after ${dt} s; $OUT/$name.log)"; failures=$((failures + 1)); fi
  return 0
}

CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
[ -d .data ] && export ANOMALYKIT_DATA=${ANOMALYKIT_DATA:-$(pwd)/.data}
note "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note ""
{
  $PY -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version()); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu only')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -1
  grep -m1 'model name' /proc/cpuinfo 2>/dev/null; nproc
} >"$OUT/environment.txt" 2>&1
note "environment: $(head -2 "$OUT/environment.txt" | tr '\n' ' ')"
note ""

if [ "$CUDA" = "1" ] && command -v nvcc >/dev/null; then
  # the CUDA kernels: built in place with nvcc (no network: no build isolation, no dependencies)
  step build 900 env ANOMALYKIT_REQUIRE_EXTENSION=1 MAX_JOBS=8 $PY setup.py build_ext --inplace
  DEV=cuda
else
  note "- build: skipped (no CUDA device or no nvcc; the CPU extension as installed)"
  DEV=cpu
fi

# the first-use gate: every op and dtype checked on the device (on the CPU through ANOMALYKIT_KERNEL_GATE=all)
step gate 300 env ANOMALYKIT_KERNEL_GATE=all $PY - "$DEV" "$OUT/gate.json" <<'PY'
import json, sys, torch
from anomalykit.ops import _native, gate
device = torch.device(sys.argv[1])
out = {}
for op in _native.NATIVE_OPS:
    if not _native.has_kernel(op, device.type):
        out[op] = "no native kernel"
        continue
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        out[f"{op} {dtype}"] = gate.check(op, device, dtype) or "passed"
json.dump({"device": str(device), "verdicts": out}, open(sys.argv[2], "w"), indent=1)
print(json.dumps(out, indent=1))
sys.exit(1 if any(v not in ("passed", "no native kernel") for v in out.values()) else 0)
PY

if [ "$DEV" = "cuda" ]; then
  step op-tests 900 $PY -m pytest -q -p no:cacheprovider tests/test_ops_pair_feature_l1.py tests/test_ops_simplex_mix.py \
      tests/test_ops_annulus_sample.py tests/test_ops_frontend.py tests/test_ops_gate.py --junitxml="$OUT/op-tests.xml"
  step op-benchmarks 900 $PY -m pytest -q -p no:cacheprovider benchmarks/test_bench_ops.py --benchmark-only \
      -k cuda --benchmark-json="$OUT/bench-ops.json"
else
  step op-tests 600 $PY -m pytest -q -p no:cacheprovider tests/test_ops_gate.py tests/test_ops_pair_feature_l1.py \
      -k "gate or wrong or reference_hand or reduced_precision" --junitxml="$OUT/op-tests.xml"
  note "  (CUDA op tests skipped: no GPU)"
  step op-benchmarks 600 $PY -m pytest -q -p no:cacheprovider benchmarks/test_bench_ops.py --benchmark-only \
      -k "pair_feature_l1 and 256 and not compiled" --benchmark-min-rounds=1 --benchmark-max-time=0.05 --benchmark-json="$OUT/bench-ops.json"
  note "  (CUDA benchmarks skipped: no GPU; a small CPU benchmark ran instead)"
fi
[ -f "$OUT/bench-ops.json" ] && $PY - "$OUT/bench-ops.json" "$OUT/bench-ops-bandwidth.md" <<'PY' >>"$OUT/op-benchmarks.log" 2>&1
import json, sys
PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}  # HBM bandwidth by device name (vendor figures)
data = json.load(open(sys.argv[1]))
rows = ["| benchmark | median s | GB/s | % of the device's memory bandwidth |", "|---|---:|---:|---:|"]
for b in data["benchmarks"]:
    info = b.get("extra_info", {})
    gbs = info.get("gb_per_s") or (info.get("bytes_read", 0) / b["stats"]["median"] / 1e9 if info.get("bytes_read") else None)
    peak = next((v for k, v in PEAK_GBS.items() if k in str(info.get("gpu") or "")), None)
    share = f"{100 * gbs / peak:.0f}%" if gbs and peak else ""
    rows.append(f"| {b['name']} | {b['stats']['median']:.3g} | {gbs:.1f} | {share} |" if gbs else f"| {b['name']} | {b['stats']['median']:.3g} | | |")
open(sys.argv[2], "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY

# one AMA class, native kernels and the reference ops
if [ "$DEV" = "cuda" ] && $PY -c "from anomalykit.data import load_dataset; load_dataset('fashion-mnist')" >/dev/null 2>&1; then
  for kernels in auto reference; do
    step "ama-paper-$kernels" 600 env ANOMALYKIT_KERNELS=$kernels anomalykit bench --protocol one-class --data fashion-mnist \
        --classes 0 --seeds 0 --methods ama --budget paper --device cuda --out "$OUT/ama-paper-$kernels"
  done
else
  note "- ama-paper: skipped ($([ "$DEV" = cuda ] && echo 'Fashion-MNIST not found: put it under .data/fashion-mnist' || echo 'no GPU')); a one-epoch AMA run on digits instead"
  step ama-small 300 anomalykit run ama --data digits --epochs 1 --device "$DEV" --out "$OUT/ama-small" -q
fi
if $PY -c "import anomalykit; assert 'precision' in anomalykit.COMMON_PARAMS.__repr__()" >/dev/null 2>&1; then
  step ama-bf16 300 anomalykit run ama --data digits --epochs 2 --device "$DEV" --set precision=bf16-mixed --out "$OUT/ama-bf16" -q
else
  note "- bf16-mixed training: skipped (this build has no precision parameter)"
fi

note ""
note "finished in $(( $(date +%s) - start )) s with $failures failed step(s) on $DEV"
# on a CPU-only machine the script's job is to run; on a GPU the summary carries the verdicts
if [ "$DEV" = "cpu" ] && [ $failures -gt 0 ]; then exit 1; fi
exit 0
