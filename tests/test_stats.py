"""Chunked statistics equal their in-memory references."""

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from conftest import reference_patch_index, reference_stats
from spotlight_scale.core.patches import foreground_patch_origins
from spotlight_scale.core.resample import isotropic_shape, resample
from spotlight_scale.core.stats import channel_statistics

BLOCKS = [(32, 128, 128), (5, 7, 11), (3, 64, 9)]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("shape", [(13, 37, 29), (8, 50, 61)])
def test_chunked_stats_uint16_equal_whole_array(shape, block):
    rng = np.random.default_rng(1)
    x = (rng.gamma(2.0, 200.0, shape) + 300 * (rng.random(shape) > 0.8)).astype(np.uint16)
    got = channel_statistics(x, block_shape=block)
    ref = reference_stats(x)
    assert got["otsu"] == threshold_otsu(x)
    for k in ("min", "max", "p0_1", "p99_9", "fg_fraction"):
        assert got[k] == ref[k], k
    np.testing.assert_allclose([got["mean"], got["std"]], [x.mean(), x.std()], rtol=1e-10)


@pytest.mark.parametrize("block", BLOCKS)
def test_chunked_otsu_float_equal_whole_array(block):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (6, 31, 17)), rng.normal(5, 2, (5, 31, 17))]).astype(
        np.float32)
    got = channel_statistics(x, block_shape=block, nbins=256)
    assert got["otsu"] == pytest.approx(float(threshold_otsu(x, nbins=256)), rel=1e-6)
    assert got["fg_fraction"] == pytest.approx(float((x >= got["otsu"]).mean()))
    np.testing.assert_allclose(got["mean"], x.astype(np.float64).mean(), rtol=1e-9)


def test_constant_volume():
    got = channel_statistics(np.full((4, 5, 6), 7, np.uint16), block_shape=(2, 2, 2))
    assert got["otsu"] == 7 and got["std"] == 0 and got["fg_fraction"] == 1.0


@pytest.mark.parametrize("shape,patch,stride", [((11, 40, 37), (4, 8, 8), (2, 5, 3)),
                                                ((9, 16, 16), (9, 16, 16), (1, 1, 1)),
                                                ((12, 33, 20), (5, 7, 9), (5, 7, 9))])
def test_patch_index_matches_brute_force(shape, patch, stride):
    rng = np.random.default_rng(3)
    fg = np.zeros(shape, bool)
    fg[rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6), rng.integers(0, shape[2], 6)] = 1
    for frac in (0.001, 0.01):
        o, f = foreground_patch_origins(fg, patch, stride, frac)
        ro, rf = reference_patch_index(fg, patch, stride, frac)
        np.testing.assert_array_equal(o, ro)
        np.testing.assert_allclose(f, rf, rtol=1e-6)
        for (a, b, c) in o:  # every yielded origin satisfies the rule
            assert fg[a:a + patch[0], b:b + patch[1], c:c + patch[2]].mean() >= frac


def test_patch_larger_than_field():
    with pytest.raises(ValueError, match="along y"):
        foreground_patch_origins(np.ones((8, 8, 8), bool), (4, 16, 4), (1, 1, 1))


def test_resample_shapes_dtypes_and_labels():
    rng = np.random.default_rng(4)
    img = rng.integers(100, 4000, (6, 20, 22)).astype(np.uint16)
    out = resample(img, (0.87, 0.29, 0.29), 0.29, order=3)
    assert out.shape == isotropic_shape(img.shape, (0.87, 0.29, 0.29), 0.29) == (18, 20, 22)
    assert out.dtype == np.uint16
    const = resample(np.full((5, 9, 9), 1234, np.uint16), (1.0, 0.5, 0.5), 0.29, order=3)
    assert np.all(const == 1234)
    lab = np.zeros((6, 20, 22), np.uint32)
    lab[1:4, 2:9, 3:12] = 7
    lab[3:6, 10:18, 10:20] = 9
    lo = resample(lab, (0.87, 0.29, 0.29), 0.29, order=0)
    assert set(np.unique(lo)) == {0, 7, 9} and lo.dtype == np.uint32
    assert resample(img, (0.29,) * 3, 0.29, order=3) is img
