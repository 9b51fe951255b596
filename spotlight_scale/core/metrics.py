"""Image-quality and feature metrics used by ``evaluate`` (pure: arrays in, numbers out).

Conventions (the paper's, Kalinin et al. 2025):

- **Data range.** PSNR and SSIM use the *target's* range, ``target.max() - target.min()``
  over the whole field. Predictions are assumed to be already rescaled into the target's
  intensity range (``predict`` does this with the training set's target range), so the
  same range applies to them.
- **Foreground variants.** The foreground is ``target >= otsu`` (the one definition of
  :mod:`spotlight_scale.core` foreground; the caller passes the mask). ``psnr_foreground``
  is the PSNR of the voxels inside the mask (mean squared error over the mask, the same
  whole-field data range). ``ssim_foreground`` is the mean of the full SSIM map (the same
  map :func:`ssim` averages everywhere) over the mask voxels: windows centred on
  foreground voxels, so their local statistics may include nearby background.
- **MicroSSIM / MicroMS3IM** come from ``cubic.metrics`` (the Spotlight authors' port of
  ``juglab/microssim``): we wrap them, we do not reimplement them.
- **FRC / FSC.** Our own Fourier ring/shell correlation (written out below so it can be
  tested against a known cut-off), with the choices of miplib (Koho et al. 2019) that the
  paper used through miplib: rings ``bin_delta`` frequency samples wide (the paper: 5), a
  Hamming window, the fixed 1/7 threshold. The single-image form splits the image on a
  checkerboard like miplib, but corrects the half-pixel shift between the two halves
  exactly in Fourier space instead of with miplib's empirical calibration curve.
  ``cubic.metrics.frc_resolution`` is the authors' maintained miplib equivalent; see the
  notes of :func:`frc_resolution` for how the two differ.
"""

from __future__ import annotations

import itertools
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
    """Mean of the SSIM map over ``mask`` voxels (every voxel, border included); ``nan`` if empty."""
    t, p = _pair(target, prediction)
    m = _mask(mask, t.shape)
    if not m.any():
        return float("nan")
    full = ssim_map(t, p, data_range=data_range, win_size=win_size)
    return float(full[m].mean(dtype=np.float64))


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


def _micro(cls_name: str, target, prediction, *, bg_percentile: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cubic warns once that it falls back to CPU
        import cubic.metrics as cm

    t, p = _pair(target, prediction)
    if t.ndim not in (2, 3):
        raise ValueError(f"MicroSSIM needs 2-D or 3-D (Z, Y, X) images, got {t.ndim}-D")
    stack_t = t[None] if t.ndim == 2 else t
    stack_p = p[None] if p.ndim == 2 else p
    kwargs = {}
    if cls_name == "MicroMS3IM":
        betas = _ms_betas(stack_t.shape[-2:])
        if not betas:
            return float("nan")
        kwargs["betas"] = betas
    metric = getattr(cm, cls_name)(bg_percentile=bg_percentile)
    with np.errstate(all="ignore"):
        metric.fit(stack_t, stack_p)
        scores = [metric.score(a, b, **kwargs) for a, b in zip(stack_t, stack_p)
                  if np.ptp(a) > 0]
    return float(np.mean(scores)) if scores else float("nan")


def micro_ssim(target, prediction, *, bg_percentile: float = 3) -> float:
    """MicroSSIM (Ashesh et al. 2025) via ``cubic.metrics.MicroSSIM``.

    Fitted on this field (its XY slices pooled: background offsets at the
    ``bg_percentile``-th percentile, one range-invariance factor), then the mean of the
    per-slice scores. Constant target slices are skipped.
    """
    return _micro("MicroSSIM", target, prediction, bg_percentile=bg_percentile)


def micro_ms3im(target, prediction, *, bg_percentile: float = 3) -> float:
    """MicroMS3IM (multi-scale MicroSSIM) via ``cubic.metrics.MicroMS3IM``.

    Fitted and averaged over XY slices like :func:`micro_ssim`. Slices smaller than
    176 pixels use fewer MS-SSIM scales (see :func:`_ms_betas`); below 11 pixels: ``nan``.
    """
    return _micro("MicroMS3IM", target, prediction, bg_percentile=bg_percentile)


# --------------------------------------------------------------------------- FRC / FSC
def _spacing(spacing, ndim: int) -> np.ndarray:
    s = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64),
                        (ndim,)).copy()
    if np.any(s <= 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return s


def _hamming(shape) -> np.ndarray:
    w = np.ones(shape)
    for ax, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[ax] = n
        w = w * np.hamming(n).reshape(sh)
    return w


def _freq_grid(shape, spacing):
    """Per-axis frequency coordinates (cycles per unit of ``spacing``), broadcastable."""
    out = []
    for ax, (n, d) in enumerate(zip(shape, spacing)):
        sh = [1] * len(shape)
        sh[ax] = n
        out.append(np.fft.fftfreq(n, d=d).reshape(sh))
    return out


def _bins(shape, spacing, bin_delta: float):
    """Ring/shell index of every frequency sample, bin width, and the last full bin edge."""
    freqs = _freq_grid(shape, spacing)
    r = np.sqrt(sum(f * f for f in freqs))
    step = min(1.0 / (n * d) for n, d in zip(shape, spacing))  # finest frequency sample
    width = bin_delta * step
    r_max = min(0.5 / d for d in spacing)  # the largest sphere fully sampled on every axis
    idx = np.floor(r / width).astype(np.int64)
    nbins = int(np.floor(r_max / width + 1e-9))
    idx[(r == 0) | (idx >= nbins)] = -1  # drop DC and the corners beyond the sphere
    return r, idx, nbins, width


def fourier_correlation(image1, image2=None, *, bin_delta: float = 5, spacing=None,
                        window: bool = True):
    """Fourier ring (2-D) or shell (3-D) correlation curve.

    Parameters
    ----------
    image1 : array_like
        2-D or 3-D image.
    image2 : array_like, optional
        Second image of the same shape (two-image FRC). Without it the curve is the
        single-image one of :func:`frc_resolution` (checkerboard halves of ``image1``,
        shift undone), whose frequencies reach half the Nyquist frequency.
    bin_delta : float
        Ring width in frequency samples (``1 / (N * spacing)``, the finest axis); the
        paper used 5.
    spacing : float or sequence, optional
        Voxel size per axis (default 1: frequencies in cycles per voxel).
    window : bool
        Multiply by a separable Hamming window first (miplib does), so the image
        borders do not leak correlated power to high frequencies.

    Returns
    -------
    freq : ndarray
        Mean radial frequency of each ring (cycles per spacing unit).
    corr : ndarray
        ``Re sum(F1 conj F2) / sqrt(sum |F1|^2 sum |F2|^2)`` per ring.
    counts : ndarray
        Frequency samples per ring.
    """
    x = np.asarray(image1, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"FRC/FSC needs a 2-D or 3-D image, got {x.ndim}-D")
    d = _spacing(spacing, x.ndim)
    if image2 is not None:
        a, b = _pair(x, image2)
        pairs, sp = [(a, b, None)], d
    else:
        pairs, sp = _checkerboard_pairs(x, d), 2 * d
    return _correlation_pooled(pairs, bin_delta=bin_delta, spacing=sp, window=window)


def _correlation_pooled(pairs, *, bin_delta, spacing, window):
    """Correlation curve pooled over image pairs; ``shift`` (physical, per axis) is undone."""
    shape = pairs[0][0].shape
    r, idx, nbins, _ = _bins(shape, spacing, bin_delta)
    keep = idx >= 0
    ids = idx[keep]
    num = np.zeros(nbins)
    p1 = np.zeros(nbins)
    p2 = np.zeros(nbins)
    w = _hamming(shape) if window else 1.0
    freqs = _freq_grid(shape, spacing)
    for a, b, shift in pairs:
        fa = np.fft.fftn((a - a.mean()) * w)
        fb = np.fft.fftn((b - b.mean()) * w)
        if shift is not None:
            # b(x) = a(x + shift): F_b = F_a * exp(+2 pi i k.shift); undo it
            phase = sum(f * s for f, s in zip(freqs, shift))
            fb = fb * np.exp(-2j * np.pi * phase)
        cross = (fa * np.conj(fb)).real
        num += np.bincount(ids, cross[keep], nbins)
        p1 += np.bincount(ids, (np.abs(fa) ** 2)[keep], nbins)
        p2 += np.bincount(ids, (np.abs(fb) ** 2)[keep], nbins)
    counts = np.bincount(ids, minlength=nbins).astype(np.int64)
    freq = np.bincount(ids, r[keep], nbins) / np.maximum(counts, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = num / np.sqrt(p1 * p2)
    corr = np.where(np.isfinite(corr), corr, 0.0)
    ok = counts > 0
    return freq[ok], corr[ok], counts[ok]


def _checkerboard_pairs(x: np.ndarray, spacing: np.ndarray):
    """Complementary sub-sampled halves of ``x`` and the physical shift between them."""
    half = tuple((n // 2) for n in x.shape)
    if min(half) < 4:
        raise ValueError(f"image {x.shape} too small for a single-image FRC/FSC")
    pairs = []
    for parity in itertools.product((0, 1), repeat=x.ndim):
        if parity[0] == 1:
            continue  # each pair once: p and its complement 1 - p
        comp = tuple(1 - p for p in parity)
        a = x[tuple(slice(p, p + 2 * h, 2) for p, h in zip(parity, half))]
        b = x[tuple(slice(p, p + 2 * h, 2) for p, h in zip(comp, half))]
        shift = tuple((c - p) * d for p, c, d in zip(parity, comp, spacing))
        pairs.append((a, b, shift))
    return pairs


def resolution_from_curve(freq, corr, *, threshold: float = FRC_THRESHOLD) -> float:
    """``1 / f`` at the first downward crossing of ``threshold`` (linear between rings).

    ``nan`` when the first ring is already below the threshold (no correlated signal);
    the finest sampled period ``1 / freq[-1]`` when the curve never falls below it.
    """
    freq = np.asarray(freq, dtype=np.float64)
    corr = np.asarray(corr, dtype=np.float64)
    if freq.size == 0 or corr[0] < threshold:
        return float("nan")
    below = np.nonzero(corr < threshold)[0]
    if below.size == 0:
        return float(1.0 / freq[-1])
    i = int(below[0])
    f0, f1, c0, c1 = freq[i - 1], freq[i], corr[i - 1], corr[i]
    f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1)
    return float(1.0 / f)


def frc_resolution(image, image2=None, *, bin_delta: float = 5, spacing=None,
                   threshold: float = FRC_THRESHOLD, window: bool = True) -> float:
    """FRC (2-D) / FSC (3-D) resolution: the period ``1/f`` where the correlation drops below 1/7.

    Parameters
    ----------
    image : array_like
        2-D (Fourier ring correlation) or 3-D (Fourier shell correlation) image.
    image2 : array_like, optional
        A second, independent image of the same object: two-image FRC. Without it the
        single-image form is used: the image is split on a checkerboard into
        complementary sub-sampled halves (each parity pattern and its complement,
        pooled), whose independent noise decorrelates while the structure stays; the
        one-voxel shift between the halves is undone exactly in Fourier space. The
        single-image form measures up to half the original Nyquist frequency.
    bin_delta : float
        Ring width in frequency samples; the paper used 5 (with miplib).
    spacing : float or sequence, optional
        Voxel size; the result is in the same unit (e.g. um). Default 1 (voxels).
    threshold : float
        Correlation threshold (miplib's fixed 1/7).
    window : bool
        Hamming window before the FFT (as miplib).

    Returns
    -------
    float
        Resolution (same unit as ``spacing``); see :func:`resolution_from_curve` for
        ``nan`` and the sampling limit.

    Notes
    -----
    ``cubic.metrics.frc_resolution`` (the authors' maintained miplib equivalent) bins
    the same way but smooths the curve with a spline and, in single-image mode, rescales
    by miplib's empirical calibration; on band-limited noise its cut-off sits about 1.5
    rings above the true one, where this function's sits within one ring (tested).
    """
    freq, corr, _ = fourier_correlation(image, image2, bin_delta=bin_delta, spacing=spacing,
                                        window=window)
    return resolution_from_curve(freq, corr, threshold=threshold)


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
    "FRC_THRESHOLD", "data_range", "psnr", "psnr_foreground", "ssim", "ssim_map",
    "ssim_foreground", "micro_ssim", "micro_ms3im", "fourier_correlation",
    "resolution_from_curve", "frc_resolution", "cosine_distance", "cosine_distances",
    "minmax_scale", "threshold_below",
)
