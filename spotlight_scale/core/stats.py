"""Per-volume statistics from summable per-block pieces (chunked Otsu).

The volume is visited block by block; each block contributes a histogram,
a count, a sum and a sum of squares, which add up exactly. Otsu's threshold
is then taken on the summed histogram, as ``skimage.filters.threshold_otsu``
does on the whole array (STYLE lesson 3):

- integer images: one bin per integer value between the global min and max
  (scikit-image uses ``bincount`` for integer images, whatever ``nbins``), so
  the chunked threshold is *equal* to ``threshold_otsu(volume)``;
- floating-point images: ``nbins`` equal bins over [global min, global max]
  with bin centres, as scikit-image does, found in a first min/max pass.

Percentiles are read off the same histogram by the inverted CDF: the
smallest value (integer) or bin centre (float) with at least a fraction ``q``
of the voxels at or below it. ``fg_fraction`` is the fraction of voxels
``>= otsu`` (the one definition of foreground, Spotlight's mask M).
"""

from __future__ import annotations

from itertools import product
from typing import Iterator

import numpy as np

STAT_KEYS = ("otsu", "mean", "std", "min", "max", "p0_1", "p99_9", "fg_fraction")


def iter_blocks(shape, block_shape) -> Iterator[tuple[slice, ...]]:
    """Slices of a regular block grid covering ``shape`` (edge blocks may be smaller)."""
    ranges = [range(0, n, max(1, int(b))) for n, b in zip(shape, block_shape)]
    for origin in product(*ranges):
        yield tuple(slice(o, min(o + int(b), n)) for o, b, n in zip(origin, block_shape, shape))


def block_histogram(block: np.ndarray, *, lo: float, hi: float, nbins: int,
                    integer: bool) -> np.ndarray:
    """Histogram of one block on the global bin grid (summable across blocks).

    Integer data: counts of each value ``lo..hi`` (length ``hi - lo + 1``).
    Float data: ``np.histogram`` with ``nbins`` bins over ``[lo, hi]``.
    """
    if integer:
        lo, hi = int(lo), int(hi)
        return np.bincount((block.ravel().astype(np.int64) - lo), minlength=hi - lo + 1)
    return np.histogram(block, bins=nbins, range=(lo, hi))[0]


def bin_centers(lo: float, hi: float, nbins: int, integer: bool) -> np.ndarray:
    """Centres of the global bins used by :func:`block_histogram`."""
    if integer:
        return np.arange(int(lo), int(hi) + 1)
    edges = np.histogram_bin_edges(np.array([lo, hi], dtype=np.float64), bins=nbins,
                                   range=(lo, hi))
    return (edges[:-1] + edges[1:]) / 2.0


def otsu_from_histogram(counts: np.ndarray, centers: np.ndarray) -> float:
    """Otsu's threshold of a histogram (the maths of ``threshold_otsu(hist=...)``)."""
    counts = np.asarray(counts, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    nz = np.flatnonzero(counts)
    if nz.size <= 1:  # a constant volume: its value is the threshold
        return float(centers[nz[0]] if nz.size else centers[0])
    w1 = np.cumsum(counts)
    w2 = np.cumsum(counts[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = np.cumsum(counts * centers) / w1
        m2 = (np.cumsum((counts * centers)[::-1]) / w2[::-1])[::-1]
    var12 = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[int(np.nanargmax(var12))])


def _percentile_from_hist(counts: np.ndarray, centers: np.ndarray, q: float) -> float:
    cdf = np.cumsum(counts)
    rank = max(1, int(np.ceil(q * cdf[-1])))
    return float(centers[int(np.searchsorted(cdf, rank))])


def channel_statistics(x: np.ndarray, *, block_shape=(32, 128, 128), nbins: int = 256
                       ) -> dict[str, float]:
    """Otsu threshold, mean, std, min, max, 0.1/99.9 percentiles and foreground fraction.

    Parameters
    ----------
    x : array-like (Z, Y, X)
        A numpy array, or anything sliceable into numpy blocks (a zarr array).
    block_shape : tuple of int
        Blocks visited one at a time; memory is one block plus the histogram.
    nbins : int
        Bins for floating-point data (integer data uses exact integer bins).

    Returns
    -------
    dict
        Keys ``otsu, mean, std, min, max, p0_1, p99_9, fg_fraction`` (floats).
    """
    shape = tuple(x.shape)
    integer = np.issubdtype(np.dtype(x.dtype), np.integer)
    blocks = list(iter_blocks(shape, block_shape))
    if np.dtype(x.dtype) in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return _small_uint_statistics(x, blocks)
    lo, hi = np.inf, -np.inf
    for sl in blocks:  # pass 1: the global range that fixes the bins
        b = np.asarray(x[sl])
        lo, hi = min(lo, b.min()), max(hi, b.max())
    n, s, ss, counts = 0, 0.0, 0.0, None
    for sl in blocks:  # pass 2: summable pieces
        b = np.asarray(x[sl])
        h = block_histogram(b, lo=lo, hi=hi, nbins=nbins, integer=integer)
        counts = h if counts is None else counts + h
        bf = b.astype(np.float64)
        n += b.size
        s += float(bf.sum())
        ss += float(np.square(bf).sum())
    centers = bin_centers(lo, hi, nbins, integer)
    otsu = otsu_from_histogram(counts, centers) if hi > lo else float(lo)
    mean = s / n
    var = max(ss / n - mean * mean, 0.0)
    if integer:
        fg = float(counts[centers >= otsu].sum()) / n
    else:  # exact count against the threshold value, a third cheap pass
        fg = sum(int(np.count_nonzero(np.asarray(x[sl]) >= otsu)) for sl in blocks) / n
    return {"otsu": float(otsu), "mean": float(mean), "std": float(np.sqrt(var)),
            "min": float(lo), "max": float(hi),
            "p0_1": _percentile_from_hist(counts, centers, 0.001),
            "p99_9": _percentile_from_hist(counts, centers, 0.999),
            "fg_fraction": fg}


def _small_uint_statistics(x, blocks) -> dict[str, float]:
    """One pass for 8/16-bit unsigned data: a full-range bincount per block is the only
    summable piece; min, max, moments, percentiles, Otsu and the foreground fraction
    all follow exactly from the summed histogram."""
    nvals = 256 if np.dtype(x.dtype) == np.uint8 else 65536
    counts = np.zeros(nvals, np.int64)
    for sl in blocks:
        counts += np.bincount(np.asarray(x[sl]).ravel(), minlength=nvals)
    nz = np.flatnonzero(counts)
    lo, hi = int(nz[0]), int(nz[-1])
    counts = counts[lo:hi + 1]
    centers = np.arange(lo, hi + 1)
    n = int(counts.sum())
    cf = counts.astype(np.float64)
    mean = float((cf * centers).sum() / n)
    var = float((cf * (centers - mean) ** 2).sum() / n)
    otsu = otsu_from_histogram(counts, centers) if hi > lo else float(lo)
    return {"otsu": float(otsu), "mean": mean, "std": float(np.sqrt(var)),
            "min": float(lo), "max": float(hi),
            "p0_1": _percentile_from_hist(counts, centers, 0.001),
            "p99_9": _percentile_from_hist(counts, centers, 0.999),
            "fg_fraction": float(counts[centers >= otsu].sum()) / n}
