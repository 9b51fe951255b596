"""The model file: weights plus everything prediction needs (versioned).

``RUN_DIR/model.pt`` is a ``torch.save`` dict::

    {"format": "spotlight-scale-model", "version": 1,
     "model_config": {"depth", "channels", "in_channels", "out_channels"},
     "state_dict": ..., "normalization": "fnet" | "spotlight",
     "target_range": {"raw_min", "raw_max", "norm_min", "norm_max"},
     "train_config": {...}, "iteration": int, "loss": "mse" | "spotlight",
     "loss_settings": {"loss", "normalization", "sampling", and for spotlight "lam", "k",
                       "eps", "dice_probability", "loss_reduction", "dice_denominator",
                       "mse_denominator", "lambda_ramp"}}

``loss_settings`` (which variant of the loss trained the model) is absent from files
written before it existed.

Only plain types and tensors are stored, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_write_bytes
from ..versioning import MODEL_FILE_VERSION
from .fnet import FNet

MODEL_FORMAT = "spotlight-scale-model"


class ModelFileError(RuntimeError):
    """A model file is missing, corrupt, of another format, or of another configuration."""


def save_model_file(path, model: FNet, *, normalization: str, target_range: dict,
                    train_config: dict, iteration: int, loss: str,
                    loss_settings: dict | None = None) -> Path:
    """Write ``model`` and its metadata atomically to ``path``."""
    module = getattr(model, "module", model)  # unwrap DDP
    payload = {
        "format": MODEL_FORMAT, "version": MODEL_FILE_VERSION,
        "model_config": module.config(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "normalization": str(normalization),
        "target_range": {k: float(v) for k, v in target_range.items()},
        "train_config": train_config, "iteration": int(iteration), "loss": str(loss),
        "loss_settings": dict(loss_settings or {"loss": str(loss)}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def model_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_torch_payload(path: Path, what: str, error: type[Exception] = ModelFileError):
    """``torch.load`` (weights only, to CPU) raising ``error`` naming ``path`` if unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"{path}: corrupt or unreadable {what} ({type(exc).__name__}: {exc})") from None


def read_model_meta(path) -> dict[str, Any]:
    """The model file's dict (with ``state_dict``), checked for format and version."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no model file (train first: spotlight-scale train ...)")
    payload = load_torch_payload(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a spotlight-scale model file")
    if payload.get("version") != MODEL_FILE_VERSION:
        raise ModelFileError(f"{path}: model file version {payload.get('version')} is not "
                             f"supported (expects {MODEL_FILE_VERSION})")
    return payload


def load_model_file(path, device: str = "cpu", expect_config: dict | None = None):
    """Load a model file. Returns ``(model in eval mode, meta without state_dict)``.

    Raises :class:`ModelFileError` naming the file (and the differing keys when
    ``expect_config`` is given and differs, or the weights do not fit the config).
    """
    path = Path(path)
    payload = read_model_meta(path)
    cfg = dict(payload["model_config"])
    if expect_config is not None:
        diff = sorted(k for k in set(cfg) | set(expect_config)
                      if cfg.get(k) != expect_config.get(k))
        if diff:
            raise ModelFileError(
                f"{path}: model configuration differs in {', '.join(diff)}: file has "
                f"{ {k: cfg.get(k) for k in diff} }, expected { {k: expect_config.get(k) for k in diff} }")
    model = FNet(**cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the recorded model configuration "
                             f"{cfg}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
