#!/usr/bin/env bash
# The README's main job: a synthetic screen through every stage on a local Dask cluster.
# Usage: deploy/demo.sh [WORKDIR]   (default: demo/)
set -euo pipefail
W="${1:-demo}"
mkdir -p "$W"
echo "== spotlight-scale demo in $W =="
spotlight-scale -v synth "$W/raw" --plate DEMO --wells 2 --fields 2 --seed 0
spotlight-scale -v ingest "$W/raw/manifest.csv" "$W/store" --workers 2
echo "== done: store at $W/store =="
