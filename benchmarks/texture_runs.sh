#!/usr/bin/env bash
# Anomaly maps on real textures: every method and the two map baselines (patch-knn, patch-ae) on
# the MVTec-layout texture sets of benchmarks/make_texture_sets.py, with the defaults `anomalykit
# run`/`bench` pick for such folders. Resumable: rerun the same command after an interruption.
#
#   bash benchmarks/texture_runs.sh val    # the validation twins (choose settings here), seeds 0-2
#   bash benchmarks/texture_runs.sh test   # the test sets, once, for the final tables, seeds 0-2
set -euo pipefail
split=${1:?usage: texture_runs.sh val|test}
seeds=${SEEDS:-0-2}  # add seeds later with SEEDS=3-4: the folders grow
data=${TEXTURES:-.data/textures}
[ -f "$data/manifest.json" ] || python benchmarks/make_texture_sets.py --out "$data" > /dev/null
for set in moon tissue hubble cells; do
  name=$set; [ "$split" = val ] && name=$set-val
  anomalykit bench --data "$data/$name" --methods ama,mae-simplex,adgan,csi-aae --seeds "$seeds" --threads 2 \
    --out "benchmarks/results/textures-$split/$name" "${@:2}"
done
