"""Tiled prediction equals one whole-volume forward pass; the stream writes each chunk once
and holds overlap strips, not the field."""

import numpy as np
import pytest
import torch
import zarr

from spotlight_scale.core.tiling import (axis_window, pad_volume, plan_tiles, predict_stream,
                                         predict_tiled)
from spotlight_scale.models.fnet import FNet

MARGIN = (12, 12, 12)  # >= the receptive-field radius of a depth-1 F-net (11)


def _model(depth=1):
    torch.manual_seed(0)
    model = FNet(depth=depth, channels=4, init="torch")  # N(0, 0.02) gives ~0 here
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model(torch.randn(2, 1, 16, 16, 16) * 3 + 1)
        model.head.weight *= 100  # outputs of order 0.1-1, so tolerances mean something
    return model.eval()


def _forward(model):
    def f(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)[:, None]).numpy()[:, 0]
    return f


def _whole(forward, vol, plan):
    """The reference: one forward pass over the whole (divisor-padded) volume, cropped."""
    return forward(pad_volume(vol, plan.pad)[None])[0][tuple(slice(0, n) for n in vol.shape)]


@pytest.mark.parametrize("shape", [(21, 37, 45), (16, 53, 16), (41, 19, 23)])
@pytest.mark.parametrize("tile,overlap", [((32, 32, 32), (24, 24, 24)),
                                          ((28, 48, 32), (24, 24, 24)),
                                          ((26, 26, 26), (24, 24, 24))])
def test_tiled_equals_whole_volume_forward(shape, tile, overlap):
    model = _model()
    forward = _forward(model)
    vol = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    got = predict_tiled(vol, forward, tile=tile, overlap=overlap, divisor=2, margin=MARGIN,
                        batch_size=2)
    assert got.shape == shape and got.dtype == np.float32
    plan = plan_tiles(shape, tile=tile, overlap=overlap, divisor=2, margin=MARGIN)
    assert plan.n_tiles > 1  # really tiled
    ref = _whole(forward, vol, plan)
    assert ref.std() > 0.05
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_small_margin_is_not_exact():
    """The check above is sharp: with too small a margin, tile borders show."""
    forward = _forward(_model())
    vol = np.random.default_rng(1).normal(size=(16, 40, 40)).astype(np.float32)
    tile, overlap, margin = (16, 16, 16), (8, 8, 8), (0, 0, 0)
    got = predict_tiled(vol, forward, tile=tile, overlap=overlap, divisor=2, margin=margin)
    ref = _whole(forward, vol, plan_tiles(vol.shape, tile=tile, overlap=overlap, divisor=2,
                                          margin=margin))
    assert np.abs(got - ref).max() > 0.05 * ref.std() > 1e-3


def test_plan_computes_only_overlap_and_divisor_padding():
    plan = plan_tiles((33, 200, 70), tile=(64, 96, 64), overlap=(16, 32, 16), divisor=8)
    assert plan.padded == (40, 200, 72)
    assert plan.counts == (1, 3, 2)  # z fits one tile; y: 0, 64, 128 (last 72 long)
    assert [plan.tile_span(1, i) for i in range(3)] == [(0, 96), (64, 160), (128, 200)]
    assert [plan.box_span(1, i) for i in range(3)] == [(0, 64), (64, 128), (128, 200)]
    assert plan.computed_voxels == 40 * (200 + 2 * 32) * (72 + 16)
    assert plan.chunks == (33, 64, 48)
    one = plan_tiles((30, 60, 60), tile=(32, 64, 64), overlap=(8, 16, 16), divisor=4)
    assert one.n_tiles == 1 and one.computed_voxels == 32 * 60 * 60


def test_stream_from_zarr_equals_in_memory_and_writes_each_chunk_once(tmp_path):
    forward = _forward(_model())
    shape, tile, overlap = (23, 70, 51), (16, 32, 32), (8, 16, 16)
    vol = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    plan = plan_tiles(shape, tile=tile, overlap=overlap, divisor=2)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=shape, chunks=(8, 16, 16),
                          dtype="f4")
    src[...] = vol
    dst = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=shape,
                          chunks=plan.chunks, dtype="f4", fill_value=np.nan)
    written = np.zeros(shape, np.int32)

    def write(region, block):
        for s, c, n in zip(region, plan.chunks, shape):  # whole chunks only
            assert s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
        written[region] += 1
        dst[region] = block

    stats = predict_stream(lambda r: np.asarray(src[r]), forward, write, plan, batch_size=2)
    assert np.all(written == 1)
    ref = predict_tiled(vol, forward, tile=tile, overlap=overlap, divisor=2, batch_size=2)
    np.testing.assert_array_equal(dst[...], ref)
    assert stats["tiles"] == plan.n_tiles and stats["computed_voxels"] == plan.computed_voxels
    assert stats["max_tile_voxels"] == int(np.prod(plan.tile))


def test_stream_memory_does_not_grow_with_field_length():
    """Held voxels are overlap strips across the two shorter extents: a field 4x longer
    holds exactly as much as the short one, far less than either field."""
    forward = lambda b: b * 2.0

    def held(shape):
        vol = np.ones(shape, np.float32)
        plan = plan_tiles(shape, tile=(32, 64, 64), overlap=(8, 16, 16), divisor=4)
        out = np.zeros(shape, np.float32)

        def write(region, block):
            out[region] = block
        stats = predict_stream(lambda r: vol[r], forward, write, plan)
        np.testing.assert_allclose(out, 2.0)  # constant in, constant out: weights normalised
        return stats["peak_pending_voxels"], plan

    for short, longer in (((40, 160, 144), (40, 640, 144)), ((40, 144, 160), (40, 144, 640)),
                          ((160, 72, 64), (640, 72, 64))):
        small, plan_small = held(short)
        large, plan_large = held(longer)
        assert plan_large.n_tiles >= 3 * plan_small.n_tiles
        assert 0 < large == small  # the longest axis runs slowest: its length costs nothing
        assert large < np.prod(longer) / 4


def test_forward_with_wrong_shape_is_refused():
    vol = np.zeros((8, 16, 16), np.float32)
    with pytest.raises(ValueError, match="forward returned shape"):
        predict_tiled(vol, lambda b: b[:, :4], tile=(8, 16, 16), overlap=(4, 8, 8), divisor=4)


def test_window_and_plan_checks():
    w = axis_window(32, 16, 4, at_start=False, at_end=False)
    assert w[:4].sum() == 0 and w[-4:].sum() == 0 and w[16] == 1 and np.all(np.diff(w[:16]) >= 0)
    assert axis_window(32, 16, 4, at_start=True, at_end=True).min() == 1
    # neighbours' ramps are mirror images over the same voxels: they sum to one there
    left, right = axis_window(32, 16, 4, True, False), axis_window(32, 16, 4, False, True)
    np.testing.assert_allclose(left[-12:-4] + right[4:12], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        plan_tiles((10, 10, 10), tile=(10, 16, 16), overlap=(4, 4, 4), divisor=4)
    with pytest.raises(ValueError, match="twice the margin"):
        plan_tiles((10, 10, 10), tile=(16, 16, 16), overlap=(4, 4, 4), divisor=4, margin=(4, 4, 4))
    with pytest.raises(ValueError, match="tile - overlap"):
        plan_tiles((10, 10, 10), tile=(16, 16, 16), overlap=(16, 4, 4), divisor=4)
