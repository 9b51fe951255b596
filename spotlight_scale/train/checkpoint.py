"""The ``latest`` checkpoint: everything needed to continue a run exactly.

Written atomically (temporary file + rename) by rank 0 every
``checkpoint_interval`` iterations. The sampler needs no state: sample ``i``
has its own seeded RNG (see :mod:`spotlight_scale.train.sampler`).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..io.atomic import atomic_write_bytes
from ..models.io import ModelFileError, load_torch_payload

CKPT_FORMAT = "spotlight-scale-checkpoint"


def latest_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "latest.pt"


def save_checkpoint(run_dir: Path, *, model, optimizer, iteration: int, config: dict) -> Path:
    module = getattr(model, "module", model)
    payload = {"format": CKPT_FORMAT, "version": 1, "iteration": int(iteration),
               "model": module.state_dict(), "optimizer": optimizer.state_dict(),
               "config": config}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = latest_path(run_dir)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(run_dir: Path) -> dict:
    path = latest_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    payload = load_torch_payload(path, "checkpoint")
    if payload.get("format") != CKPT_FORMAT:
        raise ModelFileError(f"{path}: not a spotlight-scale checkpoint")
    return payload
