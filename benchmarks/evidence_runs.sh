#!/usr/bin/env bash
# The measurements behind the README's and docs' non-quality numbers (issue 24): each step writes a
# small file under benchmarks/results/ that benchmarks/readme_tables.py renders. Resumable per step
# (a step whose file exists is skipped; delete it to re-measure).
#   bash benchmarks/evidence_runs.sh [STEP ...]     (default: every step)
set -uo pipefail
cd "$(dirname "$0")/.."
R=${RESULTS:-benchmarks/results}
export ANOMALYKIT_BENCH_THREADS=${ANOMALYKIT_BENCH_THREADS:-1}
step() {
    case "$1" in
        ops)      [ -e $R/ops/ops-1thread.json ] || pytest benchmarks/test_bench_ops.py --benchmark-only -q \
                      --benchmark-json=$R/ops/ops-1thread.json ;;
        adgan-loop) [ -e $R/adgan-scoring/digits-256-1thread.json ] || pytest benchmarks/test_bench_adgan_scoring.py \
                      --benchmark-only -q -s -k "not fmnist" --benchmark-json=$R/adgan-scoring/digits-256-1thread.json ;;
        memory)   [ -e $R/memory/score-70k.json ] || pytest benchmarks/test_bench_memory.py --benchmark-only -q -s \
                      --benchmark-json=$R/memory/score-70k.json ;;
        export)   [ -e $R/export/latency-1thread.json ] || python benchmarks/bench_export.py --threads 1 --json $R/export/latency-1thread.json ;;
        demo)     [ -e $R/digits-demo/metrics.json ] || python benchmarks/digits_demo.py --out $R/digits-demo ;;
        teardown) for t in minimal-unfixed minimal cli worker; do
                      python benchmarks/torchrun_teardown_loop.py --runs $([ $t = minimal-unfixed ] && echo 20 || echo 30) \
                          --target $t --json $R/torchrun-teardown/counts.json
                  done ;;
        *) echo "unknown step $1" >&2; return 2 ;;
    esac
}
mkdir -p $R/ops $R/adgan-scoring $R/memory $R/export $R/digits-demo $R/torchrun-teardown
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(demo memory export ops adgan-loop teardown)
for s in "${steps[@]}"; do
    echo "== $s $(date -u +%FT%TZ)"
    step "$s" || echo "== step $s exited with status $?"
done
