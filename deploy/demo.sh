#!/usr/bin/env bash
# The README's main job: a synthetic screen through every stage on a local Dask cluster
# (2 workers), F-net (MSE) vs Spotlight with a CPU-sized budget (200 iterations each; too few
# for the Spotlight effect to show on this screen: see the README). About 5 minutes on 2 cores
# (plus the install on a fresh machine).
# Usage: deploy/demo.sh [WORKDIR]   (default: demo/)
set -euo pipefail
W="${1:-demo}"
IT="${DEMO_ITERATIONS:-200}"
mkdir -p "$W"
S="$W/store"
echo "== spotlight-scale $(spotlight-scale --version | awk '{print $NF}') demo in $W =="
spotlight-scale synth "$W/raw" --plate DEMO --wells 2 --fields 3 --seed 0
printf 'well,Treatment\nB02,DMSO\nB03,drug\n' > "$W/platemap.csv"   # a plate map: every table gets it
spotlight-scale ingest "$W/raw/manifest.csv" "$S" --workers 2 --patch 16,32,32 --patch-stride 4,8,8 \
    --platemap "$W/platemap.csv" --stain DNA
for m in mse spotlight; do
  name=$([ "$m" = mse ] && echo fnet || echo spotlight)
  spotlight-scale train "$S" "$W/runs/$name" --loss "$m" --depth 3 --channels 8 \
      --patch 16,32,32 --batch-size 8 --iterations "$IT" --val-interval 50 \
      --checkpoint-interval 50 --num-workers 1 --seed 0 --overwrite
  spotlight-scale predict "$S" "$W/runs/$name" --name "$name" --split all --workers 2 --overwrite
  spotlight-scale segment "$S" --image "prediction:$name" --name "seg-$name" --workers 2 --overwrite
done
spotlight-scale segment "$S" --image target --name seg-target --workers 2 --overwrite
for n in target fnet spotlight; do
  img=$([ "$n" = target ] && echo target || echo "prediction:$n")
  spotlight-scale profile "$S" --labels "seg-$n" --image "$img" --out "$W/profiles/$n" \
      --workers 2 --overwrite
done
spotlight-scale evaluate "$S" --prediction fnet --prediction spotlight --profiles "$W/profiles" \
    --split all --out "$W/report"
spotlight-scale export "$S" --well B02 --field 0 --image prediction:spotlight "$W/B02_0_spotlight.tif"
echo "== done =="
echo "store:   $S   (napari --plugin napari-ome-zarr $S/DEMO.zarr)"
echo "report:  $W/report/report.md"
