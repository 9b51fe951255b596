#!/usr/bin/env bash
# The real-2D store benchmark, training phase (two processes, one per loss family).
# First the shipped Spotlight default and the stronger F-net (PyTorch init) over 3 seeds;
# the one-seed variants (F-net's reference init, the clamp loss) after them, then the
# one-seed ablation spotlight-mse-all.
cd "${1:?usage: run.sh WORKDIR (holding store/)}"
export OMP_NUM_THREADS=1  # the project venv on PATH
CK=1000,3000,10000,20000
(nice -n 3 spotlight-scale benchmark work --store store --models fnet-torch --one-seed "" \
  --seeds 0,1,2 --checkpoints $CK --train-only > log-fnet.txt 2>&1
 nice -n 3 spotlight-scale benchmark work --store store --models fnet --one-seed "" \
  --seeds 0 --checkpoints $CK --train-only >> log-fnet.txt 2>&1) &
(nice -n 3 spotlight-scale benchmark work --store store --models spotlight --one-seed "" \
  --seeds 0,1,2 --checkpoints $CK --train-only > log-spotlight.txt 2>&1
 nice -n 3 spotlight-scale benchmark work --store store --models spotlight-clamp --one-seed "" \
  --seeds 0 --checkpoints $CK --train-only >> log-spotlight.txt 2>&1) &
wait
# the ablation (beyond the paper): the shipped loss with the MSE over every pixel, one seed
nice -n 3 spotlight-scale benchmark work --store store --models spotlight-mse-all --one-seed "" \
  --seeds 0 --checkpoints $CK --train-only > log-ablation.txt 2>&1
