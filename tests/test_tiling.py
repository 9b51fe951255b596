"""Tiled prediction equals one whole-volume forward pass."""

import numpy as np
import pytest
import torch

from spotlight_scale.core.tiling import axis_window, pad_volume, plan_tiles, predict_tiled
from spotlight_scale.models.fnet import FNet


def _model(depth=1):
    torch.manual_seed(0)
    model = FNet(depth=depth, channels=4)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model(torch.randn(2, 1, 16, 16, 16) * 3 + 1)
        model.head.weight *= 100  # outputs of order 0.1-1, so tolerances mean something
    return model.eval()


def _forward(model):
    def f(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)[:, None]).numpy()[:, 0]
    return f


@pytest.mark.parametrize("shape", [(21, 37, 45), (16, 33, 16)])
@pytest.mark.parametrize("tile,overlap", [((32, 32, 32), (24, 24, 24)),
                                          ((32, 48, 32), (24, 24, 24))])
def test_tiled_equals_whole_volume_forward(shape, tile, overlap):
    model = _model()
    vol = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    margin = (12, 12, 12)  # >= the receptive-field radius of a depth-1 F-net (11)
    got = predict_tiled(vol, _forward(model), tile=tile, overlap=overlap, divisor=2,
                        margin=margin, batch_size=2)
    assert got.shape == shape
    pad, _, origins, _ = plan_tiles(shape, tile=tile, overlap=overlap, divisor=2, margin=margin)
    assert sum(len(o) > 1 for o in origins) >= 1  # really tiled
    whole = _forward(model)(pad_volume(vol, pad)[None])[0]
    ref = whole[tuple(slice(b, b + n) for (b, _), n in zip(pad, shape))]
    assert ref.std() > 0.05
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_small_margin_is_not_exact():
    """The check above is sharp: with too small a margin, tile borders show."""
    model = _model()
    vol = np.random.default_rng(1).normal(size=(16, 40, 40)).astype(np.float32)
    tile, overlap, margin = (16, 16, 16), (8, 8, 8), (0, 0, 0)
    got = predict_tiled(vol, _forward(model), tile=tile, overlap=overlap, divisor=2, margin=margin)
    pad, *_ = plan_tiles(vol.shape, tile=tile, overlap=overlap, divisor=2, margin=margin)
    ref = _forward(model)(pad_volume(vol, pad)[None])[0][
        tuple(slice(b, b + n) for (b, _), n in zip(pad, vol.shape))]
    assert np.abs(got - ref).max() > 0.05 * ref.std() > 1e-3


def test_window_and_plan_checks():
    w = axis_window(32, 16, 4, at_start=False, at_end=False)
    assert w[:4].sum() == 0 and w[-4:].sum() == 0 and w[16] == 1 and np.all(np.diff(w[:16]) >= 0)
    assert axis_window(32, 16, 4, at_start=True, at_end=True).min() == 1
    with pytest.raises(ValueError, match="multiple of 4"):
        plan_tiles((10, 10, 10), tile=(10, 16, 16), overlap=(4, 4, 4), divisor=4)
    with pytest.raises(ValueError, match="twice the margin"):
        plan_tiles((10, 10, 10), tile=(16, 16, 16), overlap=(4, 4, 4), divisor=4, margin=(4, 4, 4))
