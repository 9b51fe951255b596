#!/usr/bin/env bash
# Issue 20's Done-when check on the real pair: F-net (MSE), 600 iterations, depth 3, 16 channels,
# batch 8, 64x64 patches, PyTorch's initialisation; the held-out frames (7-9) scored
# independently of spotlight-scale's evaluate (zarr + tifffile + scipy's pearsonr).
# Usage: bash docs/benchmark/real-2d/check600.sh WORKDIR   (from the repo root, venv on PATH)
set -euo pipefail
W=${1:?usage: check600.sh WORKDIR}
mkdir -p "$W" && cd "$W"
export OMP_NUM_THREADS=1
rm -rf raw store runs
python -c "from spotlight_scale.sampledata import write_scratch_assay_screen as w; w('raw')"
spotlight-scale ingest raw/manifest.csv store --workers 1 -q
spotlight-scale train store runs/fnet --loss mse --depth 3 --channels 16 --patch 64,64 \
    --batch-size 8 --iterations 600 --init torch --seed 0 -q
spotlight-scale predict store runs/fnet --name fnet --split test --workers 1 -q
python - <<'PY'
import json, numpy as np, tifffile, zarr
from scipy.stats import pearsonr
out = {}
for t in (7, 8, 9):
    pred = zarr.open_array(f"store/predictions/fnet/SCRATCH.zarr/B/02/{t}/s0", mode="r")[0, 0]
    tgt = tifffile.imread(f"raw/target_t{t:02d}.tif").astype(float)
    out[t] = float(pearsonr(pred.ravel(), tgt.ravel()).statistic)
out["mean"] = float(np.mean([out[t] for t in (7, 8, 9)]))
print(json.dumps(out))
PY
