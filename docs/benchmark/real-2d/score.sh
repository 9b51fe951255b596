#!/usr/bin/env bash
# Scores every snapshot trained so far (run.sh) and writes WORKDIR/work/report.md.
cd "${1:?usage: score.sh WORKDIR (holding store/)}"
export OMP_NUM_THREADS=1  # the project venv on PATH
spotlight-scale benchmark work --store store --models fnet-torch,spotlight,fnet,spotlight-clamp,spotlight-mse-all \
  --one-seed fnet,spotlight-clamp,spotlight-mse-all --seeds 0,1,2 --checkpoints 1000,3000,10000,20000 \
  --score-only --workers 1 >> log-score.txt 2>&1
