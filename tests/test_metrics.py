"""Metrics against independent references: scikit-image, hand computations, known cut-offs."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from spotlight_scale.core import metrics as M


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    t = rng.normal(300, 60, (12, 40, 36)).clip(0)
    p = t + rng.normal(5, 25, t.shape)
    return t, p


# ----------------------------------------------------------------- PSNR / SSIM
def test_psnr_matches_skimage_with_target_range(pair):
    t, p = pair
    ref = peak_signal_noise_ratio(t, p, data_range=t.max() - t.min())
    assert M.psnr(t, p) == pytest.approx(ref, rel=1e-12)
    # an explicit range is honoured
    assert M.psnr(t, p, data_range=1000.0) == pytest.approx(
        peak_signal_noise_ratio(t, p, data_range=1000.0), rel=1e-12)
    assert M.psnr(t, t) == np.inf


def test_psnr_by_hand():
    t = np.array([[0.0, 10.0], [10.0, 10.0]])
    p = np.array([[1.0, 10.0], [10.0, 7.0]])
    mse = (1 + 9) / 4
    assert M.psnr(t, p) == pytest.approx(10 * np.log10(100 / mse))


def test_ssim_matches_skimage_3d_and_2d(pair):
    t, p = pair
    r = t.max() - t.min()
    assert M.ssim(t, p) == pytest.approx(structural_similarity(t, p, data_range=r), rel=1e-12)
    assert M.ssim(t[5], p[5]) == pytest.approx(
        structural_similarity(t[5], p[5], data_range=t[5].max() - t[5].min()), rel=1e-12)
    # the map is skimage's full map
    _, full = structural_similarity(t, p, data_range=r, full=True)
    np.testing.assert_allclose(M.ssim_map(t, p), full)


def test_ssim_small_axis_shrinks_window():
    rng = np.random.default_rng(2)
    t = rng.random((5, 20, 20))
    p = t + 0.1 * rng.random(t.shape)
    ref = structural_similarity(t, p, data_range=t.max() - t.min(), win_size=5)
    assert M.ssim(t, p) == pytest.approx(ref)


def test_foreground_variants_by_hand(pair):
    t, p = pair
    mask = t >= 320
    r = t.max() - t.min()
    mse_fg = np.mean((t[mask] - p[mask]) ** 2)
    assert M.psnr_foreground(t, p, mask) == pytest.approx(10 * np.log10(r * r / mse_fg))
    # foreground PSNR differs from the whole-image one when errors differ by region
    p2 = p.copy()
    p2[~mask] += 200
    assert M.psnr_foreground(t, p2, mask) == pytest.approx(M.psnr_foreground(t, p, mask))
    assert M.psnr(t, p2) < M.psnr(t, p) - 3
    _, full = structural_similarity(t, p, data_range=r, full=True)
    assert M.ssim_foreground(t, p, mask) == pytest.approx(full[mask].mean())
    assert np.isnan(M.psnr_foreground(t, p, np.zeros_like(mask)))
    assert np.isnan(M.ssim_foreground(t, p, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="mask"):
        M.psnr_foreground(t, p, mask[:, :5])


def test_shape_mismatch_is_an_error(pair):
    t, p = pair
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(t, p[:-1])


# ----------------------------------------------------------------- MicroSSIM (cubic)
def test_micro_ms3im_wraps_cubic(pair):
    import cubic.metrics as cm

    t, p = pair
    ref = cm.MicroMS3IM().fit(t, p)
    betas = M._ms_betas(t.shape[1:])
    assert len(betas) == 2  # 36 px: 2 scales of an 11-px kernel fit (2**1 * 11 <= 36 < 44)
    assert sum(betas) == pytest.approx(1.0)
    expected = np.mean([ref.score(a, b, betas=betas) for a, b in zip(t, p)])
    assert M.micro_ms3im(t, p) == pytest.approx(expected)
    ref2 = cm.MicroSSIM().fit(t, p)
    assert M.micro_ssim(t, p) == pytest.approx(np.mean([ref2.score(a, b) for a, b in zip(t, p)]))
    # a better prediction scores higher
    better = t + np.random.default_rng(3).normal(0, 5, t.shape)
    assert M.micro_ms3im(t, better) > M.micro_ms3im(t, p)


def test_ms_betas_full_pyramid_is_torchmetrics():
    from cubic.metrics.ms_ssim import DEFAULT_BETAS

    assert M._ms_betas((176, 200)) == pytest.approx(tuple(np.array(DEFAULT_BETAS) / sum(DEFAULT_BETAS)))
    assert M._ms_betas((10, 200)) == ()


# ----------------------------------------------------------------- FRC / FSC
def band_limited(shape, fc, rng):
    """White noise with every frequency at or above ``fc`` (cycles/voxel) removed."""
    spec = np.fft.fftn(rng.normal(size=shape))
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    spec[np.sqrt(sum(g * g for g in grids)) >= fc] = 0
    s = np.fft.ifftn(spec).real
    return s / s.std()


@pytest.mark.parametrize("shape,ring", [((128, 128), 2), ((128, 128), 4), ((96, 96), 3),
                                        ((32, 64, 64), 2)])
@pytest.mark.parametrize("single", [False, True])
def test_frc_finds_a_known_cutoff_within_one_ring(shape, ring, single):
    """Band-limited noise plus independent noise: the correlation falls at the band limit.

    The cut-off sits at the centre of ring ``ring`` (rings are bin_delta=5 samples of
    1/N wide); the reported resolution 1/f must put f within one ring of it. Single-image
    FRC measures up to half the Nyquist frequency, so the cut-offs stay below 0.25.
    """
    rng = np.random.default_rng(ring + len(shape))
    width = 5 / max(shape)
    fc = (ring + 0.5) * width
    assert fc < 0.25
    s = band_limited(shape, fc, rng)
    a = s + 0.7 * rng.normal(size=shape)
    b = s + 0.7 * rng.normal(size=shape)
    spacing = 0.5  # physical units: the result scales with the voxel size
    res = M.frc_resolution(a, spacing=spacing) if single else M.frc_resolution(a, b, spacing=spacing)
    f = spacing / res  # cycles per voxel
    assert abs(f - fc) <= width, (f, fc, width)


def test_frc_orders_resolution_and_rejects_noise():
    rng = np.random.default_rng(5)
    coarse = band_limited((128, 128), 0.05, rng) + 0.5 * rng.normal(size=(128, 128))
    fine = band_limited((128, 128), 0.2, rng) + 0.5 * rng.normal(size=(128, 128))
    assert M.frc_resolution(coarse) > 2 * M.frc_resolution(fine)
    # pure noise has no correlated structure at all
    assert np.isnan(M.frc_resolution(rng.normal(size=(64, 64))))


def test_fourier_correlation_identical_images_is_one():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 40))
    f, c, n = M.fourier_correlation(x, x)
    np.testing.assert_allclose(c, 1.0)
    assert np.all(np.diff(f) > 0) and n.sum() > 0
    # never crossing: the finest sampled period is reported
    assert M.frc_resolution(x, x) == pytest.approx(1 / f[-1])


def test_resolution_from_curve_interpolates_by_hand():
    freq = np.array([0.1, 0.2, 0.3, 0.4])
    corr = np.array([0.9, 0.5, 0.1, 0.0])
    t = 1 / 7
    f = 0.2 + (0.5 - t) * 0.1 / (0.5 - 0.1)
    assert M.resolution_from_curve(freq, corr) == pytest.approx(1 / f)


# ----------------------------------------------------------------- features
def test_cosine_distance_by_hand():
    assert M.cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert M.cosine_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)
    assert M.cosine_distance([1, 0], [-1, 0]) == pytest.approx(2.0)
    # cos(45 deg)
    assert M.cosine_distance([1, 0], [1, 1]) == pytest.approx(1 - 1 / np.sqrt(2))
    # NaN features dropped pairwise
    assert M.cosine_distance([1, np.nan, 0], [1, 5, 1]) == pytest.approx(1 - 1 / np.sqrt(2))
    assert np.isnan(M.cosine_distance([0, 0], [1, 1]))
    d = M.cosine_distances([[1, 0], [1, 1]], [[0, 1], [1, 1]])
    np.testing.assert_allclose(d, [1.0, 0.0], atol=1e-12)


def test_minmax_scale_and_threshold_below():
    X = np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 3.0]])
    out = M.minmax_scale(X, lo=[0, 5, 1], hi=[10, 5, 5])
    np.testing.assert_allclose(out, [[0, 0, 0], [1, 0, 0.5]])
    x = np.array([1.0, 5.0, 10.0])
    np.testing.assert_array_equal(M.threshold_below(x, 5.0), [0.0, 5.0, 10.0])


def test_single_image_curve_matches_theory_in_band():
    """Checkerboard halves of S + N: in-band correlation = S/(S + N) per frequency sample.

    Signal power 1 spread evenly over the disc |f| < fc; the halves' white noise (variance
    s2 each) spreads over their frequency square of area (1/2)^2. Undoing the half-pixel
    shift between the halves is what keeps the in-band curve at this level (without it
    the curve is damped by cos(2 pi f.shift)).
    """
    rng = np.random.default_rng(7)
    n, fc, s2 = 192, 0.2, 2.0
    x = band_limited((n, n), fc, rng) + np.sqrt(s2) * rng.normal(size=(n, n))
    f, c, _ = M.fourier_correlation(x)
    sig = 1 / (np.pi * fc**2)
    noise = s2 / 0.25
    expected = sig / (sig + noise)
    inband = c[(f > 0.02) & (f < fc - 5 / n)]
    assert inband.size >= 5
    assert np.mean(inband) == pytest.approx(expected, abs=0.05)
    assert np.all(c[f > fc + 5 / n] < 0.1)
