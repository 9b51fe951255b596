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
    assert np.isnan(M.psnr_foreground(t, p, np.zeros_like(mask)))
    assert np.isnan(M.ssim_foreground(t, p, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="mask"):
        M.psnr_foreground(t, p, mask[:, :5])


def test_psnr_and_ssim_equal_cubic(pair):
    """cubic (the Spotlight authors' library) agrees on PSNR, foreground PSNR and SSIM."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cubic.metrics as cm

    t, p = pair
    r = t.max() - t.min()
    mask = t >= 320
    assert M.psnr(t, p) == pytest.approx(cm.psnr(t, p, data_range=r), rel=1e-12)
    assert M.psnr_foreground(t, p, mask) == pytest.approx(cm.psnr(t, p, data_range=r, mask=mask),
                                                          rel=1e-12)
    assert M.ssim(t, p) == pytest.approx(cm.ssim(t, p, data_range=r), rel=1e-12)


def test_ssim_foreground_is_cubics_masked_ssim(pair):
    """cubic averages only windows wholly inside the mask; so does ssim_foreground."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cubic.metrics as cm

    t, p = pair
    mask = np.zeros(t.shape, bool)
    mask[2:11, 5:30, 4:33] = True
    mask[:, 18:22, 10:14] = False  # a hole: windows around it are out
    r = t.max() - t.min()
    ref = cm.ssim(t, p, data_range=r, mask=mask)
    assert M.ssim_foreground(t, p, mask, data_range=r) == pytest.approx(ref, rel=1e-9)
    # the other quantity (the map averaged over every mask voxel) differs
    _, full = structural_similarity(t, p, data_range=r, full=True)
    assert abs(full[mask].mean() - ref) > 1e-3
    assert np.isnan(M.ssim_foreground(t, p, np.zeros_like(mask)))


def test_micro_ms3im_equals_microssim(pair):
    """Against juglab's microssim (torchmetrics MS-SSIM inside, float32): 1e-5."""
    from microssim import MicroMS3IM

    t, p = pair
    ref = MicroMS3IM()
    ref.fit(t, p)  # fitted on all slices, as ours
    betas = M._ms_betas(t.shape[1:])
    expected = np.mean([float(ref.score(a, b, betas=betas)) for a, b in zip(t, p)])
    assert M.micro_ms3im(t, p) == pytest.approx(expected, abs=1e-5)


def test_micro_ms3im_foreground_is_the_metric_on_the_box(pair):
    t, p = pair
    mask = np.zeros(t.shape, bool)
    mask[3:9, 2:35, 1:34] = True
    mask[5, 10, 10] = False
    box = M.foreground_box(mask)
    assert box == (slice(3, 9), slice(2, 35), slice(1, 34))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cubic.metrics as cm
    ref = cm.MicroMS3IM().fit(t, p)  # fitted on the whole field, scored on the box
    betas = M._ms_betas((33, 33))
    expected = np.mean([ref.score(a, b, betas=betas) for a, b in zip(t[box], p[box])])
    assert M.micro_ms3im_foreground(t, p, mask) == pytest.approx(expected)
    assert M.micro_ms3im_foreground(t, p, mask) != pytest.approx(M.micro_ms3im(t, p))
    assert M.ms3im_scales((33, 33)) == 2 and M.ms3im_scales((128, 128)) == 4
    assert M.ms3im_scales((176, 176)) == 5
    assert np.isnan(M.micro_ms3im_foreground(t, p, np.zeros_like(mask)))


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


def cubic_frc():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cubic.metrics.spectral import frc
    return frc


@pytest.mark.parametrize("fc", [0.1, 0.2, 0.3])
def test_two_image_frc_finds_a_known_cutoff(fc):
    """Band-limited signal plus independent noise in two images: the correlation falls at
    the band limit. cubic's crossing (Hamming window, spline fit) sits up to 1.5 rings
    (bin_delta 5 samples of 1/N) above the cut-off: measured 0.9-1.3 rings here."""
    rng = np.random.default_rng(1)
    s = band_limited((128, 128), fc, rng)
    a, b = (s + 0.7 * rng.normal(size=s.shape) for _ in range(2))
    spacing = 0.5  # physical units: the result scales with the pixel size
    res = M.frc_resolution(a, b, spacing=spacing)
    f = spacing / res  # cycles per pixel
    ring = 5 / 128
    assert 0 <= f - fc <= 1.5 * ring, (f, fc)
    assert M.frc_resolution(a, b, spacing=2 * spacing) == pytest.approx(2 * res)


def test_frc_equals_cubic_on_fixed_inputs():
    """Single- and two-image FRC are cubic's, curve and resolution (float32 inside cubic)."""
    rng = np.random.default_rng(2)
    s = band_limited((96, 112), 0.12, rng)
    a, b = (s + 0.5 * rng.normal(size=s.shape) for _ in range(2))
    for args in ((a,), (a, b)):
        ref = cubic_frc().calculate_frc(*[x.astype(np.float64) for x in args], bin_delta=5,
                                        spacing=[0.29, 0.29])
        f, c, r = M.fourier_correlation(*args, spacing=0.29)
        np.testing.assert_allclose(c, ref.correlation["correlation"], rtol=1e-6)
        np.testing.assert_allclose(f, ref.correlation["frequency"] / (2 * 0.29), rtol=1e-6)
        assert r == pytest.approx(ref.resolution["resolution"], rel=1e-9)
        assert np.isfinite(r)
    # miplib's axis: the single-image halves keep the original pixel size (Nyquist 1/(2*0.29))
    f, _, _ = M.fourier_correlation(a, spacing=0.29)
    assert f[-1] == pytest.approx(1 / (2 * 0.29), rel=0.05)


def test_frc_that_cannot_cross_is_nan():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 64))
    f, c, r = M.fourier_correlation(x, x)
    np.testing.assert_allclose(c, 1.0, rtol=1e-5)  # identical images never fall below 1/7
    assert np.isnan(r) and np.isnan(M.frc_resolution(x, x))
    # a noise-free smooth image: both checkerboard halves agree at every ring
    smooth = band_limited((64, 64), 0.45, rng)
    from scipy.ndimage import gaussian_filter

    assert np.isnan(M.frc_resolution(gaussian_filter(smooth, 3)))
    # pure noise: the curve starts below 1/7, nothing to resolve either
    assert np.isnan(M.frc_resolution(rng.normal(size=(64, 64))))
    with pytest.raises(ValueError, match="2-D"):
        M.frc_resolution(np.zeros((4, 16, 16)))


def test_frc_orders_resolution():
    rng = np.random.default_rng(5)
    s1, s2 = band_limited((128, 128), 0.05, rng), band_limited((128, 128), 0.2, rng)
    coarse = [s1 + 0.5 * rng.normal(size=s1.shape) for _ in range(2)]
    fine = [s2 + 0.5 * rng.normal(size=s2.shape) for _ in range(2)]
    assert M.frc_resolution(*coarse) > 2 * M.frc_resolution(*fine)


def test_fsc_equals_cubic_and_finds_the_band_limit():
    rng = np.random.default_rng(3)
    s = band_limited((32, 64, 64), 0.15, rng)
    a, b = (s + 0.7 * rng.normal(size=s.shape) for _ in range(2))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cubic_frc().fsc_resolution(a, b, bin_delta=5, spacing=[0.29] * 3)
    xy, z = M.fsc_resolution(a, b, spacing=0.29)
    assert (xy, z) == pytest.approx((ref["xy"], ref["z"]), rel=1e-9)
    # isotropic band limit 0.15 cycles/voxel: the crossing sits within 1.5 shells of it
    # (shells are 5 samples of 1/32 wide here; measured 0.7 shells above for xy and z)
    for r in (xy, z):
        assert 0 <= 0.29 / r - 0.15 <= 1.5 * 5 / 32, (xy, z)
    assert all(np.isnan(M.fsc_resolution(a, a, spacing=0.29)))


def test_soft_mask_edges():
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    w = M.soft_mask(m, 2.0)
    assert w[16, 16] == pytest.approx(1.0, abs=1e-3) and w[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert 0.3 < w[8, 16] < 0.7  # the edge is soft


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




def test_frc_on_a_synthetic_field_and_a_noise_free_prediction():
    """Like the demo: a noisy synthetic target and a smooth (noise-free) prediction of it.

    Values equal cubic's; the smooth prediction's halves agree at every ring, so its
    single-image FRC is not resolved (NaN) rather than the sampling limit."""
    from scipy.ndimage import gaussian_filter

    from spotlight_scale.core.synth import synth_field

    f = synth_field((16, 128, 128), (0.87, 0.29, 0.29), np.random.default_rng(4))
    target = f["target"].astype(np.float64)
    z = int(np.argmax(target.sum(axis=(1, 2))))
    pred = gaussian_filter(target, (0.5, 2.0, 2.0))
    frc = cubic_frc()
    for args in ((target[z],), (pred[z], target[z])):
        ref = frc.calculate_frc(*args, bin_delta=5, spacing=[0.29, 0.29])
        assert M.frc_resolution(*args, spacing=0.29) == pytest.approx(
            ref.resolution["resolution"], rel=1e-9, nan_ok=True)
    assert np.isnan(M.frc_resolution(pred[z], spacing=0.29))
    # a prediction with its own noise decorrelates from the target at high frequencies
    noisy = pred[z] + np.random.default_rng(5).normal(0, target.std(), pred[z].shape)
    res = M.frc_resolution(noisy, target[z], spacing=0.29)
    assert res == pytest.approx(frc.calculate_frc(noisy, target[z], bin_delta=5, spacing=[
        0.29, 0.29]).resolution["resolution"], rel=1e-9)
    assert 2 * 0.29 < res < 128 * 0.29 / 2


# ----------------------------------------------------------------- 2D fields (one plane)
@pytest.fixture
def pair2d():
    """A 2D field's plane as evaluate scores it (YX, squeezed once via core.dims)."""
    rng = np.random.default_rng(11)
    t = rng.normal(300, 60, (96, 80)).clip(0)
    p = t + rng.normal(5, 25, t.shape)
    mask = np.zeros(t.shape, bool)
    mask[10:60, 8:50] = True
    mask[30:34, 20:24] = False  # a hole: windows around it are out
    return t, p, mask


def _cubic():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cubic.metrics as cm
    return cm


def test_2d_psnr_ssim_and_foreground_variants_equal_cubic(pair2d):
    """On a plane: PSNR (+fg) and SSIM with a 2D 7x7 window, foreground SSIM in cubic's
    definition (windows wholly inside the mask), all equal to cubic's."""
    cm = _cubic()
    t, p, mask = pair2d
    r = t.max() - t.min()
    assert M.psnr(t, p) == pytest.approx(cm.psnr(t, p, data_range=r), rel=1e-12)
    assert M.psnr_foreground(t, p, mask) == pytest.approx(cm.psnr(t, p, data_range=r, mask=mask),
                                                          rel=1e-12)
    assert M.ssim(t, p) == pytest.approx(cm.ssim(t, p, data_range=r), rel=1e-12)
    assert M.ssim(t, p) == pytest.approx(structural_similarity(t, p, data_range=r, win_size=7),
                                         rel=1e-12)
    ref = cm.ssim(t, p, data_range=r, mask=mask)
    assert np.isfinite(ref)
    assert M.ssim_foreground(t, p, mask, data_range=r) == pytest.approx(ref, rel=1e-9)
    # a (1, Y, X) stack would be a 3D field one plane deep: evaluate squeezes it first, the
    # 3D window cannot fit it
    with pytest.raises(ValueError, match="too small for SSIM"):
        M.ssim(t[None], p[None])


def test_2d_micro_ssim_and_ms3im_equal_microssim(pair2d):
    """MicroSSIM / MicroMS3IM fitted and scored on the one plane, as juglab's microssim does
    with a 2D image; the MS-SSIM scales are those that fit 80 px (3: 2**2 * 11 <= 80)."""
    from microssim import MicroMS3IM, MicroSSIM

    t, p, mask = pair2d
    ref = MicroSSIM()
    ref.fit(t, p)
    assert M.micro_ssim(t, p) == pytest.approx(float(ref.score(t, p)), abs=1e-5)
    assert M.ms3im_scales(t.shape) == 3
    ref = MicroMS3IM()
    ref.fit(t, p)
    betas = M._ms_betas(t.shape)
    assert M.micro_ms3im(t, p) == pytest.approx(float(ref.score(t, p, betas=betas)), abs=1e-5)
    # foreground: fitted on the plane, scored on the mask's bounding box (50 x 42 px: 2 scales)
    box = M.foreground_box(mask)
    assert box == (slice(10, 60), slice(8, 50))
    fitted = _cubic().MicroMS3IM().fit(t, p)
    expected = fitted.score(t[box], p[box], betas=M._ms_betas((50, 42)))
    whole, fg = M.micro_ms3im_both(t, p, mask)
    assert whole == pytest.approx(M.micro_ms3im(t, p))
    assert fg == pytest.approx(float(expected))


def test_2d_frc_and_foreground_frc_equal_cubic(pair2d):
    """FRC of the plane and of the plane weighted by the soft foreground mask, as cubic
    computes them on those images; FSC needs a volume."""
    t, p, mask = pair2d
    frc = cubic_frc()
    for img in (p, p * M.soft_mask(mask)):
        ref = frc.calculate_frc(img, None, bin_delta=5, spacing=[0.65, 0.65])
        f, c, r = M.fourier_correlation(img, spacing=0.65)
        np.testing.assert_allclose(c, ref.correlation["correlation"], rtol=1e-6)
        assert r == pytest.approx(ref.resolution["resolution"], rel=1e-9, nan_ok=True)
    ref = frc.calculate_frc(p, t, bin_delta=5, spacing=[0.65, 0.65])
    assert M.frc_resolution(p, t, spacing=0.65) == pytest.approx(
        ref.resolution["resolution"], rel=1e-9, nan_ok=True)
    with pytest.raises(ValueError, match="3-D"):
        M.fsc_resolution(p)


@pytest.mark.parametrize("shape", [(6, 10, 12), (10, 12)])
def test_background_spread_by_hand(shape):
    """std of the prediction over the target's background / the target's foreground mean,
    in 3D and 2D alike."""
    rng = np.random.default_rng(4)
    t = rng.uniform(0, 100, shape)
    fg = t >= 60
    p = t + rng.normal(0, 7, shape)
    bg_vals = p[~fg]
    mean = sum(bg_vals) / bg_vals.size
    std = (sum((v - mean) ** 2 for v in bg_vals) / bg_vals.size) ** 0.5
    fg_mean = sum(t[fg]) / fg.sum()
    assert M.background_spread(t, p, fg) == pytest.approx(std / fg_mean, rel=1e-12)
    # a flat background scores 0 at any level; a spread one scales with its spread
    flat = np.where(fg, p, 42.0)
    assert M.background_spread(t, flat, fg) == 0.0
    assert M.background_spread(t, np.where(fg, p, 3 * p), fg) == pytest.approx(
        3 * std / fg_mean, rel=1e-9)
    assert np.isnan(M.background_spread(t, p, np.zeros(shape, bool)))
    assert np.isnan(M.background_spread(t, p, np.ones(shape, bool)))
