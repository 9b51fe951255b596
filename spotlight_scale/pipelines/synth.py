"""Write a synthetic screen: ImageJ TIFFs (with voxel size) and ``manifest.csv``."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ..core.synth import SynthParams, assign_splits, synth_field
from ..io.store import check_name

log = logging.getLogger(__name__)


def well_names(n: int) -> list[str]:
    """B02, B03, ..., B11, C02, ... (the inner wells of a 96-well plate first)."""
    rows = "BCDEFG"
    return [f"{rows[(i // 10) % len(rows)]}{(i % 10) + 2:02d}" for i in range(n)]


def synth_screen(out_dir, *, plate: str = "DEMO", wells: int = 2, fields: int = 2,
                 shape=(16, 128, 128), voxel_size=(0.87, 0.29, 0.29), test_fraction: float = 0.25,
                 val_fraction: float = 0.1, seed: int = 0,
                 params: SynthParams = SynthParams()) -> Path:
    """Simulate ``wells x fields`` fields into ``out_dir``; returns the manifest path.

    Files: ``<plate>_<well>_f<field>_{signal,target,mask}.tif`` (ImageJ, voxel size
    in um) and ``manifest.csv`` with relative paths, keys, split and voxel size.
    """
    check_name(plate, "plate name")
    if wells < 1 or fields < 1:
        raise ValueError("--wells and --fields must be at least 1")
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"--shape must be three sizes >= 4, got {shape}")
    from ..io.tiff import write_imagej

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = [(w, f) for w in well_names(wells) for f in range(fields)]
    splits = assign_splits(len(keys), test_fraction, val_fraction, rng)
    rows = []
    for (well, field), split in zip(keys, splits):
        sim = synth_field(shape, voxel_size, np.random.default_rng([seed, len(rows)]), params)
        stem = f"{plate}_{well}_f{field}"
        paths = {}
        for channel in ("signal", "target", "mask"):
            name = f"{stem}_{channel}.tif"
            write_imagej(out / name, sim[channel], voxel_size)
            paths[channel] = name
        rows.append({"path_signal": paths["signal"], "path_target": paths["target"],
                     "path_mask": paths["mask"], "plate": plate, "well": well, "field": field,
                     "split": split, "voxel_z": voxel_size[0], "voxel_y": voxel_size[1],
                     "voxel_x": voxel_size[2]})
        log.info("synth: %s/%s/%d (%s), %d nuclei", plate, well, field, split,
                 int(sim["mask"].max()))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
