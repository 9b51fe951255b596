"""Nuclei segmentation: the Otsu + watershed recipe used to score virtual stains.

Following the paper (CellProfiler's 3D monolayer recipe), on a ZYX image:

1. optional post-thresholding: intensities below ``threshold`` set to 0 (Fig. 3b);
2. downscale by ``downscale`` (2) in every axis (block mean);
3. rescale to [0, 1] between the 0.1 and 99.9 percentiles, then CLAHE
   (``equalize_adapthist``, kernel ``clahe_kernel`` voxels, ``clip_limit``);
4. Gaussian smoothing (``smoothing_sigma``), Otsu threshold (times
   ``threshold_correction``), fill holes (3D);
5. Euclidean distance transform; seeds at its local maxima at least
   ``min_distance`` voxels apart and ``min_seed_distance`` deep;
6. watershed of the negated distance from the seeds inside the mask;
7. remove objects touching the XY borders (they are cut by the field of view);
8. fill holes per object, drop objects outside [``min_volume``, ``max_volume``]
   (voxels at the downscaled resolution), relabel 1..N;
9. upsample the labels (nearest) back to the input shape.

CPU or GPU is chosen in :mod:`spotlight_scale.backend` from the array type:
a cupy input runs on cucim / cupyx, a numpy input on scikit-image / scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend


@dataclass
class WatershedConfig:
    """Parameters of :func:`watershed_nuclei` (YAML keys of ``segment --config``)."""

    downscale: int = 2
    clahe_kernel: int = 16  # voxels at the downscaled resolution
    clip_limit: float = 0.01
    smoothing_sigma: float = 1.0
    threshold_correction: float = 1.5  # chosen on synthetic *targets* (haze inflates Otsu masks)
    min_distance: int = 5
    min_seed_distance: float = 1.5
    min_volume: int = 60
    max_volume: int = 0  # 0: no upper bound
    remove_border: bool = True

    def validate(self) -> None:
        if self.downscale < 1:
            raise ValueError(f"config key 'downscale' must be >= 1, got {self.downscale}")
        if self.min_distance < 1:
            raise ValueError(f"config key 'min_distance' must be >= 1, got {self.min_distance}")
        if not 0 < self.clip_limit <= 1:
            raise ValueError(f"config key 'clip_limit' must be in (0, 1], got {self.clip_limit}")


def _downscale(x, f: int):
    if f == 1:
        return x
    xp = backend.array_module(x)
    shape = [max(1, s // f) * f for s in x.shape]
    x = x[tuple(slice(0, s) for s in shape)]
    if any(s < f for s in x.shape):
        return x
    return x.reshape(shape[0] // f, f, shape[1] // f, f, shape[2] // f, f).mean(axis=(1, 3, 5),
                                                                              dtype=xp.float32)


def _upsample_nearest(lab, shape):
    xp = backend.array_module(lab)
    idx = [xp.minimum((xp.arange(n) * lab.shape[a]) // n, lab.shape[a] - 1)
           for a, n in enumerate(shape)]
    return lab[xp.ix_(*idx)]


def watershed_nuclei(image, config: WatershedConfig | None = None, *, threshold: float | None = None):
    """Segment nuclei in a ZYX image; returns uint32 labels of the image's shape."""
    cfg = config or WatershedConfig()
    cfg.validate()
    xp = backend.array_module(image)
    ndi = backend.ndimage_module(image)
    exposure = backend.skimage_module("exposure", image)
    filters = backend.skimage_module("filters", image)
    segmentation = backend.skimage_module("segmentation", image)
    feature = backend.skimage_module("feature", image)

    x = image.astype(xp.float32)
    if threshold is not None:
        x = xp.where(x < threshold, 0, x)
    small = _downscale(x, cfg.downscale)
    lo, hi = (float(v) for v in xp.percentile(small, [0.1, 99.9]))
    if hi <= lo:
        return xp.zeros(image.shape, xp.uint32)
    norm = xp.clip((small - lo) / (hi - lo), 0, 1)
    kernel = tuple(max(2, min(cfg.clahe_kernel, s)) for s in norm.shape)
    eq = exposure.equalize_adapthist(norm, kernel_size=kernel, clip_limit=cfg.clip_limit)
    smooth = ndi.gaussian_filter(eq, cfg.smoothing_sigma) if cfg.smoothing_sigma > 0 else eq
    t = filters.threshold_otsu(smooth) * cfg.threshold_correction
    mask = ndi.binary_fill_holes(smooth >= t)
    if not mask.any():
        return xp.zeros(image.shape, xp.uint32)
    dist = ndi.distance_transform_edt(mask)
    cc, _ = ndi.label(mask)
    peaks = feature.peak_local_max(dist, min_distance=cfg.min_distance,
                                   threshold_abs=cfg.min_seed_distance, labels=cc,
                                   exclude_border=False)
    markers = xp.zeros(mask.shape, xp.int32)
    markers[tuple(peaks.T)] = xp.arange(1, len(peaks) + 1, dtype=xp.int32)
    lab = segmentation.watershed(-dist, markers, mask=mask)
    if cfg.remove_border:
        border = xp.unique(xp.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(),
                                           lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
        lab[xp.isin(lab, border[border > 0])] = 0
    lab = _fill_holes_per_object(lab, ndi, xp)
    sizes = xp.bincount(lab.ravel())
    bad = sizes < cfg.min_volume
    if cfg.max_volume:
        bad |= sizes > cfg.max_volume
    bad[0] = False
    lab[bad[lab]] = 0
    lab = relabel_sequential(lab)
    return _upsample_nearest(lab.astype(xp.uint32), image.shape)


def _fill_holes_per_object(lab, ndi, xp):
    """Holes inside an object (background fully enclosed by it) become that object."""
    holes = ndi.binary_fill_holes(lab > 0) & (lab == 0)
    if not holes.any():
        return lab
    hole_lab, n = ndi.label(holes)
    # each hole takes the label of the object touching it most
    grown = ndi.grey_dilation(lab, size=3)
    for i in range(1, n + 1):
        vals = grown[hole_lab == i]
        vals = vals[vals > 0]
        if vals.size:
            lab[hole_lab == i] = xp.bincount(vals).argmax()
    return lab


def relabel_sequential(lab):
    """Labels 1..N in order of first appearance of the sorted ids (0 stays 0)."""
    xp = backend.array_module(lab)
    ids = xp.unique(lab)
    ids = ids[ids > 0]
    lut = xp.zeros(int(lab.max()) + 1 if lab.size else 1, dtype=xp.uint32)
    lut[ids] = xp.arange(1, len(ids) + 1, dtype=xp.uint32)
    return lut[lab]
