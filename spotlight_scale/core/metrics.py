"""Image-quality and feature metrics used by ``evaluate`` (pure: arrays in, numbers out).

Conventions (the paper's, Kalinin et al. 2025):

- **Data range.** PSNR and SSIM use the *target's* range, ``target.max() - target.min()``
  over the whole field. Predictions are assumed to be already rescaled into the target's
  intensity range (``predict`` does this with the training set's target range), so the
  same range applies to them.
- **Foreground variants.** The foreground is ``target >= otsu`` (the one definition of
  :mod:`spotlight_scale.core` foreground; the caller passes the mask). ``psnr_foreground``
  is the PSNR of the voxels inside the mask (mean squared error over the mask, the same
  whole-field data range). ``ssim_foreground`` is ``cubic.metrics.ssim(..., mask=M)``'s
  quantity: the mean of the SSIM map over the voxels whose whole window lies inside the
  mask (the mask eroded by the window), so no window reaches into the background.
- **MicroSSIM / MicroMS3IM** come from ``cubic.metrics`` (the Spotlight authors' port of
  ``juglab/microssim``): we wrap them, we do not reimplement them; tested against
  ``microssim`` itself. Neither library takes a mask: the foreground MicroMS3IM is the
  same metric, fitted on the field, scored on the bounding box of the target foreground.
- **FRC / FSC** come from ``cubic.metrics.spectral`` (the authors' maintained port of
  miplib, Koho et al. 2019, which the paper used): rings ``bin_delta`` frequency samples
  wide (the paper: 5), zero padding to a square, Hamming window, the fixed 1/7
  threshold on a smoothing-spline fit of the curve; single-image FRC splits the image on
  a checkerboard (both diagonals averaged), keeps the original pixel size on the
  frequency axis and applies miplib's calibration to the crossing. A curve that never
  falls below 1/7 (or starts below it) has no measurable resolution: ``nan``, reported
  as "not resolved at this sampling". FSC is cubic's sectioned FSC, which gives an XY
  and a Z resolution.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

#: miplib's fixed FRC/FSC threshold (1/7, van Heel & Schatz 2005).
FRC_THRESHOLD = 1.0 / 7.0


# --------------------------------------------------------------------------- helpers
def _pair(target, prediction) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"target {t.shape} and prediction {p.shape} differ in shape")
    if t.size == 0:
        raise ValueError("empty images")
    return t, p


def data_range(target) -> float:
    """The target's intensity range ``max - min`` (the PSNR/SSIM data range)."""
    t = np.asarray(target)
    return float(t.max()) - float(t.min())


def _mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"mask {m.shape} and images {tuple(shape)} differ in shape")
    return m


# --------------------------------------------------------------------------- PSNR
def psnr(target, prediction, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(R^2 / MSE)``.

    Parameters
    ----------
    target, prediction : array_like
        Same shape; the prediction is assumed rescaled into the target's intensity range.
    data_range : float, optional
        ``R``; default the target's range ``max - min`` (the paper's convention).

    Returns
    -------
    float
        PSNR in dB; ``inf`` for identical images, ``nan`` for a constant target.
    """
    t, p = _pair(target, prediction)
    r = float(t.max() - t.min()) if data_range is None else float(data_range)
    return _psnr_from_mse(float(np.mean((t - p) ** 2)), r)


def _psnr_from_mse(mse: float, r: float) -> float:
    if r <= 0:
        return float("nan")
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(r * r / mse))


def psnr_foreground(target, prediction, mask, *, data_range: float | None = None) -> float:
    """PSNR over the voxels of ``mask`` (foreground, e.g. ``target >= otsu``).

    The mean squared error is taken over the mask only; the data range stays the
    target's whole-field range (so foreground and whole-image PSNR share one scale).
    An empty mask gives ``nan``.
    """
    t, p = _pair(target, prediction)
    m = _mask(mask, t.shape)
    if not m.any():
        return float("nan")
    r = float(t.max() - t.min()) if data_range is None else float(data_range)
    return _psnr_from_mse(float(np.mean((t[m] - p[m]) ** 2)), r)


def background_below(prediction, foreground, threshold: float) -> float:
    """Fraction of the target's background voxels (``~foreground``) that the prediction puts
    below ``threshold`` (the target's Otsu threshold): 1 when a virtual stain keeps the whole
    background below the threshold, as the Spotlight loss intends. ``nan`` without background.
    """
    p = np.asarray(prediction)
    bg = ~_mask(foreground, p.shape)
    if not bg.any():
        return float("nan")
    return float(np.mean(p[bg] < threshold))


def background_spread(target, prediction, foreground) -> float:
    """Spread of the prediction over the target's background, relative to the foreground.

    ``std(prediction[~foreground]) / mean(target[foreground])``: how much a virtual stain
    varies where the target is background (``target < otsu``), in units of the target's
    mean foreground intensity. 0 for a flat background whatever its level (a constant
    offset is PSNR's and ``background_below``'s business); F-net's structured haze raises
    it. ``nan`` without background or foreground, or for a foreground mean of 0.
    """
    t, p = _pair(target, prediction)
    fg = _mask(foreground, t.shape)
    if fg.all() or not fg.any():
        return float("nan")
    fg_mean = float(t[fg].mean())
    if fg_mean == 0:
        return float("nan")
    return float(p[~fg].std() / fg_mean)


# --------------------------------------------------------------------------- SSIM
def _auto_win(shape) -> int:
    """skimage's 7-voxel window, shrunk to the largest odd size that fits every axis."""
    smallest = min(shape)
    win = min(7, smallest if smallest % 2 else smallest - 1)
    if win < 3:
        raise ValueError(f"images {tuple(shape)} too small for SSIM (an axis shorter than 3)")
    return win


def _ssim(target, prediction, data_range, win_size):
    from skimage.metrics import structural_similarity

    t, p = _pair(target, prediction)
    r = float(t.max() - t.min()) if data_range is None else float(data_range)
    if r <= 0:
        return float("nan"), np.full(t.shape, np.nan)
    return structural_similarity(t, p, data_range=r, win_size=win_size or _auto_win(t.shape),
                                 full=True)


def ssim_map(target, prediction, *, data_range: float | None = None,
             win_size: int | None = None) -> np.ndarray:
    """The SSIM map of :func:`skimage.metrics.structural_similarity` (uniform 7-voxel window).

    ``win_size`` shrinks (to the largest odd size that fits) when an axis is shorter than 7.
    """
    return _ssim(target, prediction, data_range, win_size)[1]


def ssim(target, prediction, *, data_range: float | None = None,
         win_size: int | None = None) -> float:
    """Mean structural similarity, as :func:`skimage.metrics.structural_similarity`.

    2-D or 3-D (a 3-D field is one 3-D SSIM with cubic windows), data range from the
    target (see module notes); skimage crops a ``(win_size - 1) // 2`` border before
    averaging the map.
    """
    return float(_ssim(target, prediction, data_range, win_size)[0])


def ssim_foreground(target, prediction, mask, *, data_range: float | None = None,
                    win_size: int | None = None) -> float:
    """Mean SSIM over the windows that lie wholly inside ``mask`` (cubic's definition).

    The SSIM map is :func:`ssim_map`'s; it is averaged over the voxels of ``mask``
    eroded by the window (a voxel counts when its whole ``win_size`` cube is
    foreground), as ``cubic.metrics.ssim(target, prediction, mask=mask)`` does. ``nan``
    when no window fits inside the mask.
    """
    from scipy.ndimage import binary_erosion

    t, p = _pair(target, prediction)
    m = _mask(mask, t.shape)
    win = win_size or _auto_win(t.shape)
    inside = binary_erosion(m, structure=np.ones((win,) * t.ndim, bool), border_value=0)
    if not inside.any():
        return float("nan")
    full = ssim_map(t, p, data_range=data_range, win_size=win)
    return float(full[inside].mean(dtype=np.float64))


# --------------------------------------------------------------------------- MicroSSIM
def _ms_betas(shape_yx, kernel_size: int = 11) -> tuple[float, ...]:
    """MS-SSIM scale weights that fit ``shape_yx``: torchmetrics' 5 weights, truncated.

    MS-SSIM halves the image between scales and needs ``2**(n-1) * kernel_size`` pixels
    per axis for ``n`` scales (176 for the standard 5). Smaller images use the first
    ``n`` weights, renormalised to sum to 1 (the same convention as for a full pyramid).
    """
    from cubic.metrics.ms_ssim import DEFAULT_BETAS

    n = len(DEFAULT_BETAS)
    while n > 0 and min(shape_yx) < 2 ** (n - 1) * kernel_size:
        n -= 1
    if n == 0:
        return ()
    b = np.asarray(DEFAULT_BETAS[:n], dtype=np.float64)
    return tuple(float(v) for v in b / b.sum())


def _micro(cls_name: str, target, prediction, *, bg_percentile: float, boxes=(None,)
           ) -> list[float]:
    """Fit ``cls_name`` on the whole field once; score the XY slices of each box.

    ``boxes``: ``None`` (every slice) or (Z, Y, X) slices; one score per box.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cubic warns once that it falls back to CPU
        import cubic.metrics as cm

    t, p = _pair(target, prediction)
    if t.ndim not in (2, 3):
        raise ValueError(f"MicroSSIM needs 2-D or 3-D (Z, Y, X) images, got {t.ndim}-D")
    stack_t = t[None] if t.ndim == 2 else t
    stack_p = p[None] if p.ndim == 2 else p
    metric = getattr(cm, cls_name)(bg_percentile=bg_percentile)
    with np.errstate(all="ignore"):
        metric.fit(stack_t, stack_p)
    out = []
    for box in boxes:
        score_t, score_p = (stack_t, stack_p) if box is None else (stack_t[box], stack_p[box])
        kwargs = {}
        if cls_name == "MicroMS3IM":
            betas = _ms_betas(score_t.shape[-2:])
            if not betas:
                out.append(float("nan"))
                continue
            kwargs["betas"] = betas
        with np.errstate(all="ignore"):
            scores = [metric.score(a, b, **kwargs) for a, b in zip(score_t, score_p)
                      if np.ptp(a) > 0]
        out.append(float(np.mean(scores)) if scores else float("nan"))
    return out


def micro_ssim(target, prediction, *, bg_percentile: float = 3) -> float:
    """MicroSSIM (Ashesh et al. 2025) via ``cubic.metrics.MicroSSIM``.

    Fitted on this field (its XY slices pooled: background offsets at the
    ``bg_percentile``-th percentile, one range-invariance factor), then the mean of the
    per-slice scores. Constant target slices are skipped.
    """
    return _micro("MicroSSIM", target, prediction, bg_percentile=bg_percentile)[0]


def micro_ms3im(target, prediction, *, bg_percentile: float = 3) -> float:
    """MicroMS3IM (multi-scale MicroSSIM) via ``cubic.metrics.MicroMS3IM``.

    Fitted and averaged over XY slices like :func:`micro_ssim`. Slices smaller than
    176 pixels use fewer MS-SSIM scales (see :func:`_ms_betas`); below 11 pixels: ``nan``.
    """
    return _micro("MicroMS3IM", target, prediction, bg_percentile=bg_percentile)[0]


def foreground_box(mask) -> tuple[slice, ...]:
    """The bounding box (slices) of the ``True`` voxels of ``mask``; empty slices if none."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return tuple(slice(0, 0) for _ in m.shape)
    out = []
    for ax in range(m.ndim):
        hit = np.nonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != ax)))[0]
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def micro_ms3im_foreground(target, prediction, mask, *, bg_percentile: float = 3) -> float:
    """:func:`micro_ms3im` scored on the bounding box of ``mask`` (MicroMS3IM takes no mask).

    The metric is fitted on the whole field, as MicroSSIM's authors advise (background
    offsets need background), then the XY slices of the box are scored: the box keeps
    the windows on the region of the nuclei. The MS-SSIM scales are those that fit the
    box (:func:`ms3im_scales`). ``nan`` for an empty mask or a box too small for one
    scale.
    """
    return micro_ms3im_both(target, prediction, mask, bg_percentile=bg_percentile)[1]


def micro_ms3im_both(target, prediction, mask, *, bg_percentile: float = 3
                     ) -> tuple[float, float]:
    """``(micro_ms3im, micro_ms3im_foreground)`` from one fit (the fit is the slow part)."""
    t, p = _pair(target, prediction)
    box = foreground_box(_mask(mask, t.shape))
    empty = any(sl.stop - sl.start == 0 for sl in box)
    if t.ndim == 2:
        box = (slice(0, 1), *box)
    scores = _micro("MicroMS3IM", t, p, bg_percentile=bg_percentile,
                    boxes=(None,) if empty else (None, box))
    return scores[0], (float("nan") if empty else scores[1])


def ms3im_scales(shape_yx) -> int:
    """Number of MS-SSIM scales MicroMS3IM uses on XY slices of ``shape_yx`` (5 at most)."""
    return len(_ms_betas(shape_yx))


# --------------------------------------------------------------------------- FRC / FSC
def _spacing(spacing, ndim: int) -> list[float]:
    s = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64),
                        (ndim,)).copy()
    if np.any(s <= 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return [float(v) for v in s]


#: cubic fits a cubic smoothing spline to the curve: it needs more rings than its degree.
_MIN_RINGS = 4


def _check_rings(shape, bin_delta: float, what: str) -> None:
    """Refuse an image whose curve would have too few rings for cubic's spline fit."""
    n = -(-(int(min(shape)) // 2) // max(1, int(round(bin_delta))))  # rings 0, bd, 2 bd, ...
    if n < _MIN_RINGS:
        raise ValueError(f"image {tuple(shape)} too small for {what} with bin_delta "
                         f"{bin_delta:g}: {n} rings (at least {_MIN_RINGS})")


def _cubic_spectral():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cubic warns once that it falls back to CPU
        from cubic.metrics.spectral import frc as cubic_frc
    return cubic_frc


def _image2d(image, image2):
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"FRC needs a 2-D image, got {x.ndim}-D (use fsc_resolution for 3-D)")
    if image2 is not None:
        x, y = _pair(x, image2)
        return x, y
    if min(x.shape) < 8:
        raise ValueError(f"image {x.shape} too small for a single-image FRC")
    return x, None


def fourier_correlation(image1, image2=None, *, bin_delta: float = 5, spacing=None):
    """Fourier ring correlation curve and resolution of a 2-D image, via cubic (miplib).

    Parameters
    ----------
    image1 : array_like
        2-D image.
    image2 : array_like, optional
        Second image of the same object (two-image FRC, e.g. prediction vs target).
        Without it: single-image FRC of checkerboard halves of ``image1``.
    bin_delta : float
        Ring width in frequency samples; the paper used 5.
    spacing : float or (y, x), optional
        Pixel size (default 1: results in pixels).

    Returns
    -------
    freq : ndarray
        Ring frequencies in cycles per ``spacing`` unit, miplib's axis: the ring radius
        as a fraction of the largest one, times the Nyquist frequency ``1 / (2 spacing)``
        of the *original* pixel size (also for the single-image halves).
    corr : ndarray
        Correlation per ring.
    resolution : float
        cubic's resolution (smoothing-spline crossing of 1/7; single-image values
        calibrated as in miplib), in ``spacing`` units; ``nan`` when the curve does not
        cross 1/7 from above.
    """
    x, y = _image2d(image1, image2)
    # cubic pads the image to a square first: the largest side sets the ring count
    _check_rings([max(x.shape) // (1 if y is not None else 2)], bin_delta, "an FRC")
    sp = _spacing(spacing, 2)
    res = _cubic_spectral().calculate_frc(x, y, bin_delta=int(round(bin_delta)), spacing=sp)
    freq = np.asarray(res.correlation["frequency"], dtype=np.float64) / (2.0 * sp[0])
    corr = np.asarray(res.correlation["correlation"], dtype=np.float64)
    resolution = float(res.resolution["resolution"])
    return freq, corr, (resolution if np.isfinite(resolution) else float("nan"))


def frc_resolution(image, image2=None, *, bin_delta: float = 5, spacing=None) -> float:
    """FRC resolution (um if ``spacing`` is) of a 2-D image: ``nan`` when not resolved.

    Single-image (checkerboard split) without ``image2``, two-image with it; see
    :func:`fourier_correlation`. A noise-free image (such as many predictions) has no
    independent noise between its halves, its curve stays above 1/7: ``nan``.
    """
    return fourier_correlation(image, image2, bin_delta=bin_delta, spacing=spacing)[2]


def fsc_resolution(volume, volume2=None, *, bin_delta: float = 5, spacing=None
                   ) -> tuple[float, float]:
    """FSC resolution ``(xy, z)`` of a ZYX volume via ``cubic`` (sectioned FSC, miplib).

    Single-image (checkerboard split) without ``volume2``. ``nan`` where the curve of a
    section does not cross 1/7.
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"FSC needs a 3-D (Z, Y, X) volume, got {v.ndim}-D")
    if volume2 is not None:
        v, w = _pair(v, volume2)
    else:
        w = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = _cubic_spectral().fsc_resolution(v, w, bin_delta=int(round(bin_delta)),
                                                   spacing=_spacing(spacing, 3))
        except Exception as exc:  # scipy's fitpack error: too few shells for cubic's spline
            raise ValueError(f"volume {v.shape} too small for an FSC with bin_delta "
                             f"{bin_delta:g} ({type(exc).__name__}: {exc})") from exc
    xy, z = float(out["xy"]), float(out["z"])
    return (xy if np.isfinite(xy) else float("nan"), z if np.isfinite(z) else float("nan"))


def soft_mask(mask, sigma: float = 2.0) -> np.ndarray:
    """``mask`` as weights in [0, 1] with Gaussian edges (``sigma`` pixels).

    Foreground FRC weights the image by it: a hard edge would add the mask's own
    outline, identical in both halves, as correlated signal up to the Nyquist frequency;
    a soft edge keeps the outline below ``1 / (2 pi sigma)`` cycles per pixel.
    """
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(np.asarray(mask, dtype=np.float64), sigma), 0.0, 1.0)


# --------------------------------------------------------------------------- features
def cosine_distance(u, v) -> float:
    """``1 - u.v / (|u| |v|)`` of two feature vectors (NaN entries dropped pairwise).

    ``nan`` when a vector is zero or nothing is left after dropping NaNs.
    """
    a = np.asarray(u, dtype=np.float64).ravel()
    b = np.asarray(v, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"feature vectors differ in length: {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if a.size == 0 or na == 0 or nb == 0:
        return float("nan")
    return float(1.0 - np.dot(a, b) / (na * nb))


def cosine_distances(U, V) -> np.ndarray:
    """Row-wise :func:`cosine_distance` of two ``(N, F)`` feature matrices."""
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if U.shape != V.shape:
        raise ValueError(f"feature matrices differ in shape: {U.shape} and {V.shape}")
    return np.array([cosine_distance(u, v) for u, v in zip(U, V)], dtype=np.float64)


def minmax_scale(X, lo, hi) -> np.ndarray:
    """Scale feature columns into ``[0, 1]`` by reference ``lo``/``hi`` (``cubic``'s
    ``feature_ranges`` convention); constant reference features map to 0."""
    X = np.asarray(X, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    span = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (X - lo) / np.where(span > 0, span, 1.0)
    return np.where(span > 0, out, 0.0)


def threshold_below(image, threshold: float, *, fill: float = 0.0) -> np.ndarray:
    """The paper's post-thresholding: intensities below ``threshold`` set to ``fill`` (0).

    The same operation as ``segment --threshold T``, so the thresholded image scored
    by PSNR is the one that was segmented.
    """
    x = np.asarray(image)
    out = x.astype(np.float64, copy=True)
    out[x < threshold] = fill
    return out


__all__: Sequence[str] = (
    "FRC_THRESHOLD", "data_range", "psnr", "psnr_foreground", "background_below",
    "background_spread", "ssim", "ssim_map",
    "ssim_foreground", "micro_ssim", "micro_ms3im", "micro_ms3im_foreground",
    "micro_ms3im_both", "ms3im_scales",
    "foreground_box", "fourier_correlation", "frc_resolution", "fsc_resolution", "soft_mask",
    "cosine_distance", "cosine_distances", "minmax_scale", "threshold_below",
)
