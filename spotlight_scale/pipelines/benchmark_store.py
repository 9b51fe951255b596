"""Benchmark on any store: F-net against Spotlight with learning curves, several seeds.

``spotlight-scale benchmark WORK --store STORE`` trains every model variant of
:data:`MODELS` once per seed on the store's training fields and keeps a snapshot of
each run at every budget of ``checkpoints`` (``WORK/runs/<model>/seed-<S>/model-<N>.pt``):
one run per seed, scored at several iterations, so a learning curve is one training,
not one per budget. Training goes breadth-first (every run to the first budget, then
every run to the next), so an interrupted benchmark has complete low budgets; it is
resumable at any point (a run continues from its last checkpoint, a snapshot that
exists is not trained again).

Scoring (:func:`score_snapshots`) predicts the test fields with each snapshot,
segments each prediction twice (Otsu recomputed on the prediction, and at the
model's own threshold, ``segment --threshold model``), and evaluates; the report
(:func:`write_curve_report`) gives mean +- s.d. over seeds per model and budget, and
compares Spotlight with the stronger F-net at each budget.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: Model variants: train config keys over the common settings.
MODELS: dict[str, dict[str, Any]] = {
    "fnet": {"loss": "mse", "init": "fnet"},  # F-net with the reference initialisation
    "fnet-torch": {"loss": "mse", "init": "torch"},  # F-net with PyTorch's initialisation
    "spotlight": {"loss": "spotlight"},  # the shipped default (the authors' loss)
    # the first loss this project shipped: clamp mapping, Sorensen Dice, foreground MSE
    "spotlight-clamp": {"loss": "spotlight", "dice_probability": "clamp",
                        "dice_denominator": "linear", "mse_denominator": "foreground"},
}

#: Common training settings of the store benchmark (a 2D F-net small enough for a CPU:
#: depth 3, 16 channels, 64x64 patches, batch 8; Adam at the paper's settings).
COMMON = {"depth": 3, "channels": 16, "patch": (64, 64), "batch_size": 8, "device": "cpu",
          "num_workers": 0, "val_interval": 1000, "checkpoint_interval": 500}


def snapshot_path(workdir: Path, model: str, seed: int, iteration: int) -> Path:
    return Path(workdir) / "runs" / model / f"seed-{seed}" / f"model-{iteration}.pt"


def plan_jobs(models: Sequence[str], seeds: Sequence[int], checkpoints: Sequence[int],
              one_seed: Sequence[str] = ()) -> list[tuple[int, int, str]]:
    """``(iteration, seed, model)`` in the order they are trained: breadth-first over
    budgets; models in ``one_seed`` run with the first seed only."""
    unknown = [m for m in list(models) + list(one_seed) if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown benchmark model(s) {', '.join(unknown)}; known: "
                         f"{', '.join(MODELS)}")
    if sorted(set(checkpoints)) != list(checkpoints) or min(checkpoints) < 1:
        raise ValueError(f"--checkpoints must be increasing positive iterations, got "
                         f"{list(checkpoints)}")
    jobs = []
    for n in checkpoints:
        for s in seeds:
            for m in models:
                if m in one_seed and s != seeds[0]:
                    continue
                jobs.append((int(n), int(s), m))
    return jobs


def train_config(model: str, seed: int, iteration: int, common: dict | None = None):
    from ..config import config_from_mapping

    from ..train.config import TrainConfig

    data = {**COMMON, **(common or {}), **MODELS[model], "seed": int(seed),
            "iterations": int(iteration)}
    return config_from_mapping(TrainConfig, data, f"benchmark model {model!r}")


def train_snapshots(store, workdir, *, models: Sequence[str], seeds: Sequence[int],
                    checkpoints: Sequence[int], one_seed: Sequence[str] = (),
                    common: dict | None = None, progress_stream=sys.stderr) -> list[Path]:
    """Train every (model, seed) run to every budget, keeping a snapshot at each; returns
    the snapshots in training order (existing ones are kept, not trained again)."""
    from ..train.checkpoint import latest_path, load_checkpoint
    from .train import train

    out = []
    for n, s, m in plan_jobs(models, seeds, checkpoints, one_seed):
        snap = snapshot_path(workdir, m, s, n)
        out.append(snap)
        if snap.exists():
            continue
        run = snap.parent
        resume = latest_path(run).exists()
        if resume:
            at = int(load_checkpoint(run)["iteration"])
            if at > n:
                raise RuntimeError(f"{run}: its checkpoint is at iteration {at}, past the budget "
                                   f"{n} whose snapshot is missing; remove the run to redo it")
        print(f"== train {m} seed {s} to {n} iterations", file=progress_stream, flush=True)
        train(store, run, train_config(m, s, n, common), resume=resume, overwrite=not resume,
              progress_stream=progress_stream)
        tmp = snap.with_suffix(".tmp")
        shutil.copyfile(run / "model.pt", tmp)
        tmp.replace(snap)
    return out


def run_store_benchmark(store, workdir, *, models: Sequence[str], seeds: Sequence[int],
                        checkpoints: Sequence[int], one_seed: Sequence[str] = (),
                        common: dict | None = None, workers: int = 2, train_only: bool = False,
                        progress_stream=sys.stderr) -> dict[str, Any]:
    """Train (and unless ``train_only``, score and report) the store benchmark."""
    from ..io.store import Store

    Store(store)  # fail early, naming the store
    for m in models:  # every config is checked before anything trains
        train_config(m, seeds[0], checkpoints[-1], common)
    snaps = train_snapshots(store, workdir, models=models, seeds=seeds, checkpoints=checkpoints,
                            one_seed=one_seed, common=common, progress_stream=progress_stream)
    if train_only:
        return {"message": f"{len(snaps)} snapshot(s) trained under {Path(workdir) / 'runs'}"}
    report = score_and_report(store, workdir, models=models, seeds=seeds,
                              checkpoints=checkpoints, one_seed=one_seed, workers=workers,
                              progress_stream=progress_stream)
    return {"message": f"report at {report}", "report": str(report)}
