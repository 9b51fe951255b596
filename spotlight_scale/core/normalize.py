"""Intensity normalisation and the one definition of foreground.

- ``fnet`` mode (Ounkomol et al.): ``(x - mean) / std`` per field, for signal and target.
- ``spotlight`` mode (Kalinin et al.): the target is ``(x - otsu) / std``, so the
  Otsu threshold sits at 0; the signal is normalised as in ``fnet`` mode.

Foreground is ``target >= otsu`` in raw intensities, i.e. the normalised target
``>= foreground_threshold(stats, mode)``: the mask of the loss, the sampler and
the patch index all come from here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MODES = ("fnet", "spotlight")


def _check(mode: str, stats: dict, where: str = "") -> None:
    if mode not in MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {MODES}")
    if not stats.get("std", 0) > 0:
        raise ValueError(f"{where}standard deviation is {stats.get('std')!r}: a constant field "
                         "cannot be normalised")


def offset(stats: dict, mode: str, channel: str) -> float:
    """The value subtracted before dividing by std."""
    return float(stats["otsu"] if (mode == "spotlight" and channel == "target") else stats["mean"])


def normalize(x: Any, stats: dict, mode: str, channel: str) -> Any:
    """Normalise ``x`` (numpy array or torch tensor) of ``channel`` with per-field ``stats``."""
    _check(mode, stats, f"{channel}: ")
    out = (x - offset(stats, mode, channel)) / float(stats["std"])
    return out.astype(np.float32, copy=False) if isinstance(out, np.ndarray) else out


def foreground_threshold(stats: dict, mode: str) -> float:
    """The normalised value of the target's Otsu threshold (0 in spotlight mode)."""
    _check(mode, stats, "target: ")
    return (float(stats["otsu"]) - offset(stats, mode, "target")) / float(stats["std"])


def foreground_mask(target_norm: Any, stats: dict, mode: str) -> Any:
    """``target >= otsu``, evaluated on the normalised target."""
    return target_norm >= foreground_threshold(stats, mode)


def target_range(stats_list: Sequence[dict], mode: str) -> dict[str, float]:
    """The training set's target range, raw and normalised (recorded in the model file).

    ``raw_min``/``raw_max`` are the smallest 0.1 and largest 99.9 percentile over
    the training fields; ``norm_min``/``norm_max`` are the same per-field
    percentiles in normalised units.

    ``norm_threshold`` is the level, in normalised units, at which the model was trained
    to put the foreground boundary (the target's Otsu threshold): exactly 0 in
    ``spotlight`` mode; in ``fnet`` mode each field's ``(otsu - mean) / std`` differs, and
    the *median* over the training fields is recorded (:data:`THRESHOLD_RULE`).
    ``predict`` maps it into stored units for ``segment --foreground model``.
    """
    if not stats_list:
        raise ValueError("no training fields to take the target range from")
    lo = [normalize(np.float64(s["p0_1"]), s, mode, "target") for s in stats_list]
    hi = [normalize(np.float64(s["p99_9"]), s, mode, "target") for s in stats_list]
    return {"raw_min": float(min(s["p0_1"] for s in stats_list)),
            "raw_max": float(max(s["p99_9"] for s in stats_list)),
            "norm_min": float(min(lo)), "norm_max": float(max(hi)),
            "norm_threshold": float(np.median([foreground_threshold(s, mode)
                                               for s in stats_list]))}


#: How ``norm_threshold`` was obtained, per normalisation mode (written with predictions).
THRESHOLD_RULE = {
    "spotlight": "0: the target is normalised around its Otsu threshold",
    "fnet": "median over the training fields of (otsu - mean) / std",
}


def denormalize_to_range(y: Any, rng: dict) -> Any:
    """Map ``y`` linearly from [norm_min, norm_max] to [raw_min, raw_max] (paper: predictions
    rescaled into the training target's intensity range)."""
    scale = (rng["raw_max"] - rng["raw_min"]) / max(rng["norm_max"] - rng["norm_min"], 1e-12)
    return (y - rng["norm_min"]) * scale + rng["raw_min"]
