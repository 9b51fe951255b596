"""Train stage: resolve the config, guard the run directory, run the trainer."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from ..config import resolve_config, save_config
from ..io.store import Store
from ..train.config import TrainConfig

log = logging.getLogger(__name__)


def resolve_train_config(config_file=None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Paper defaults <- YAML file <- CLI overrides (unknown keys name themselves)."""
    return resolve_config(TrainConfig, config_file, overrides or {})


def train(store: str | Path, run_dir: str | Path, cfg: TrainConfig, *,
          resume: bool | str = False, overwrite: bool = False,
          progress_stream=sys.stderr) -> Path | None:
    """Train a model from ``store`` into ``run_dir``; returns ``run_dir/model.pt``.

    A run directory that already holds a model is refused unless ``resume``
    (continue from ``checkpoints/latest.pt``, e.g. to more iterations) or
    ``overwrite`` (start again). ``resume="auto"`` resumes when a checkpoint
    exists and starts otherwise: what a requeued job passes.
    """
    from ..train import distributed as ddp
    from ..train.checkpoint import latest_path
    from ..train.trainer import run_training

    run_dir = Path(run_dir)
    Store(store)  # fail early, naming the store, if it is not one
    main = ddp.detect().is_main
    if overwrite and resume:
        raise ValueError("--resume and --overwrite exclude each other")
    if resume == "auto":
        resume = latest_path(run_dir).exists()
        log.info("--resume auto: %s", f"continuing {latest_path(run_dir)}" if resume
                 else "no checkpoint yet, starting")
    has_run = (run_dir / "model.pt").exists() or latest_path(run_dir).exists()
    if has_run and not (resume or overwrite):
        raise FileExistsError(f"{run_dir}: already holds a training run; use --resume to continue "
                              "it or --overwrite to start again")
    if resume and not latest_path(run_dir).exists():
        raise FileNotFoundError(f"{latest_path(run_dir)}: no checkpoint to resume from")
    if overwrite and main and run_dir.exists():
        for name in ("model.pt", "loss.csv", "config.yaml", "checkpoints"):
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    return run_training(store, run_dir, cfg, resume=bool(resume), progress_stream=progress_stream)
