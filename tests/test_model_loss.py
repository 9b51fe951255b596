"""F-net architecture, model file, losses and normalisation against independent references."""

import numpy as np
import pytest
import torch

from spotlight_scale.core import losses as L
from spotlight_scale.core.normalize import (denormalize_to_range, foreground_mask,
                                            foreground_threshold, normalize, target_range)
from spotlight_scale.models.fnet import FNet
from spotlight_scale.models.io import ModelFileError, load_model_file, save_model_file


def reference_fnet_params(depth=4, c=32, cin=1, cout=1):
    """Count parameters from the layer list of pytorch_fnet's fnet_nn_3d, written out by hand."""
    conv = lambda i, o, k: i * o * k**3 + o
    bn = lambda n: 2 * n
    total, n_in = 0, cin
    for level in range(depth + 1):
        n = c * 2**level
        total += conv(n_in, n, 3) + bn(n) + conv(n, n, 3) + bn(n)  # SubNet2Conv (more)
        if level < depth:
            total += conv(n, n, 2) + bn(n)                  # conv_down + bn0
            total += conv(2 * n, n, 2) + bn(n)              # convt (same count) + bn1
            total += conv(2 * n, n, 3) + bn(n) + conv(n, n, 3) + bn(n)  # SubNet2Conv (less)
        n_in = n
    return total + conv(c, cout, 3)                         # conv_out


def test_default_fnet_parameter_count_matches_reference():
    n = sum(p.numel() for p in FNet().parameters())
    assert n == reference_fnet_params()
    assert 20e6 < n < 30e6  # about 23 M, as measured for pytorch_fnet's default
    assert [m.out_channels for m in FNet().modules() if isinstance(m, torch.nn.Conv3d)][:2] == [32, 32]


def test_fnet_reference_initialisation():
    """pytorch_fnet's _weights_init: conv weights N(0, 0.02), BatchNorm N(1, 0.02) and 0."""
    torch.manual_seed(0)
    net = FNet(depth=2, channels=8)  # init="fnet" by default
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(float(w.mean())) < 2e-3 and float(w.std()) == pytest.approx(0.02, rel=0.05)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    g = torch.cat([m.weight.detach() for m in bns])
    assert float(g.mean()) == pytest.approx(1.0, abs=0.01) and float(g.std()) < 0.03
    assert all(float(m.bias.detach().abs().max()) == 0 for m in bns)
    first = lambda n: float(next(m for m in n.modules() if isinstance(m, torch.nn.Conv3d))
                            .weight.detach().std())
    assert first(net) == pytest.approx(0.02, rel=0.2)
    # PyTorch's default: U(+-1/sqrt(fan_in)), fan_in 27 for the first convolution
    assert first(FNet(depth=2, channels=8, init="torch")) == pytest.approx(1 / 9, rel=0.2)
    with pytest.raises(ValueError, match="initialisation"):
        FNet(depth=1, channels=2, init="xavier")


def test_fnet_shapes_and_divisibility():
    net = FNet(depth=2, channels=4).eval()
    x = torch.randn(2, 1, 8, 12, 16)
    assert net(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 8, 10, 16))


def test_model_file_roundtrip_and_errors(tmp_path):
    net = FNet(depth=2, channels=4).eval()
    rng = {"raw_min": 0, "raw_max": 100, "norm_min": -1, "norm_max": 3}
    p = save_model_file(tmp_path / "m.pt", net, normalization="spotlight", target_range=rng,
                        train_config={"lr": 1e-3}, iteration=5, loss="spotlight")
    loaded, meta = load_model_file(p)
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(loaded(x), net(x))
    assert meta["normalization"] == "spotlight" and meta["iteration"] == 5
    with pytest.raises(ModelFileError, match="channels"):
        load_model_file(p, expect_config={**net.config(), "channels": 8})
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_model_file(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a spotlight-scale model"):
        load_model_file(tmp_path / "other.pt")


def test_losses_against_hand_values():
    pred = torch.tensor([0.0, 1.0, -1.0, 2.0])
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False, False])
    assert L.mse_loss(pred, target).item() == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert L.masked_mse(pred, target, mask).item() == pytest.approx((1 + 0) / 2)
    k = -0.95
    sig = lambda x: (x - k * x) / (k - 2 * k * abs(x) + 1)
    assert L.tunable_sigmoid(pred).tolist() == pytest.approx([sig(v) for v in [0, 1, -1, 2]])
    p = [min(max((sig(v) + 1) / 2, 0), 1) for v in [0, 1, -1, 2]]
    dice = 1 - (2 * (p[0] + p[1]) + 1e-6) / (sum(p) + 2 + 1e-6)
    assert L.dice_loss(L.soft_foreground(pred), mask).item() == pytest.approx(dice, rel=1e-6)
    assert L.spotlight_loss(pred, target, mask, dice_denominator="linear",
                            mse_denominator="foreground").item() == pytest.approx(
        0.5 * 0.5 + 0.5 * dice, rel=1e-6)
    # the defaults (the authors' code): V-Net Dice, squared error over M divided by all voxels
    vnet = 1 - (2 * (p[0] + p[1]) + 1e-6) / (sum(v * v for v in p) + 2 + 1e-6)
    assert L.spotlight_loss(pred, target, mask).item() == pytest.approx(
        0.5 * (1 + 0) / 4 + 0.5 * vnet, rel=1e-6)
    assert L.masked_mse(pred, target, torch.zeros(4, dtype=torch.bool)).item() == 0


def test_sigmoid_range_choice():
    x = torch.tensor([-1e6, -3.0, -1.0, 0.0, 1.0, 3.0, 1e6])
    s = L.tunable_sigmoid(x)
    assert s.abs().max() <= 1.95 / 1.9 + 1e-6  # bounded beyond [-1, 1]
    p = L.soft_foreground(x)
    assert p.min() >= 0 and p.max() <= 1 and p[3] == 0.5  # Otsu (x=0) -> 0.5
    assert torch.all(p[1:] >= p[:-1])


def _reference_spotlight(pred, target, mask, *, probability, reduction, dice_den, mse_den,
                         lam=0.5, k=-0.95, eps=1e-6, mse_region="foreground"):
    """The Spotlight loss written out in numpy, one patch at a time (``mse_region="all"``:
    the squared error over every voxel, Dice still over the mask)."""
    pred, target, mask = (np.asarray(a, np.float64) for a in (pred, target, mask))
    sq_mask = mask if mse_region == "foreground" else np.ones_like(mask)
    s = (pred - k * pred) / (k - 2 * k * np.abs(pred) + 1)
    p = np.clip(s if probability == "clamp" else (s + 1) / 2, 0, 1)
    groups = [slice(i, i + 1) for i in range(len(pred))] if reduction == "patch" else [slice(None)]
    mse, dice = [], []
    for g in groups:
        sq = ((pred[g] - target[g]) ** 2 * sq_mask[g]).sum()
        n = sq_mask[g].sum() if mse_den == "foreground" else sq_mask[g].size
        if n:
            mse.append(sq / n)
        den = (p[g].sum() + mask[g].sum()) if dice_den == "linear" else (
            (p[g] ** 2).sum() + mask[g].sum())
        dice.append(1 - (2 * (p[g] * mask[g]).sum() + eps) / (den + eps))
    return lam * (np.mean(mse) if mse else 0.0) + (1 - lam) * np.mean(dice)


@pytest.mark.parametrize("probability", L.PROBABILITIES)
@pytest.mark.parametrize("reduction", L.REDUCTIONS)
@pytest.mark.parametrize("dice_den", L.DICE_DENOMINATORS)
@pytest.mark.parametrize("mse_den", L.MSE_DENOMINATORS)
def test_spotlight_variants_against_numpy(probability, reduction, dice_den, mse_den):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64) * 2
    target = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64)
    mask = target > 0.2
    mask[1] = False  # a patch without foreground
    got = L.spotlight_loss(pred, target, mask, probability=probability, reduction=reduction,
                           dice_denominator=dice_den, mse_denominator=mse_den)
    ref = _reference_spotlight(pred, target, mask, probability=probability,
                               reduction=reduction, dice_den=dice_den, mse_den=mse_den)
    assert got.item() == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="Dice probability"):
        L.soft_foreground(pred, probability="sigmoid")


def test_mse_region_all_is_plain_mse_beside_dice():
    """The ablation `mse_region="all"`: lam * MSE over every voxel + (1 - lam) * Dice, and the
    background now changes the loss (it does not with the paper's masked MSE)."""
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64)
    mask = target > 0.2
    got = L.spotlight_loss(pred, target, mask, mse_region="all", lam=0.3)
    ref = _reference_spotlight(pred, target, mask, probability="shifted", reduction="batch",
                               dice_den="squared", mse_den="all", lam=0.3, mse_region="all")
    assert got.item() == pytest.approx(ref, rel=1e-12)
    dice = L.dice_loss(L.soft_foreground(pred), mask, denominator="squared").item()
    mse = float(((pred - target) ** 2).mean())
    assert got.item() == pytest.approx(0.3 * mse + 0.7 * dice, rel=1e-12)
    other = target.clone()
    other[~mask] -= 3
    assert (L.spotlight_loss(pred, other, mask, mse_region="all").item()
            != L.spotlight_loss(pred, target, mask, mse_region="all").item())
    assert (L.spotlight_loss(pred, other, mask).item()
            == L.spotlight_loss(pred, target, mask).item())
    with pytest.raises(ValueError, match="MSE region"):
        L.spotlight_loss(pred, target, mask, mse_region="background")


def test_background_does_not_change_masked_mse_and_dice_has_gradients():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 1, 4, 6, 6, generator=g, requires_grad=True)
    target = torch.randn(2, 1, 4, 6, 6, generator=g)
    mask = target > 0.3
    other = target.clone()
    other[~mask] = torch.randn(int((~mask).sum()), generator=g) - 5
    assert L.masked_mse(pred, target, mask).item() == L.masked_mse(pred, other, mask).item()
    L.dice_loss(L.soft_foreground(pred), mask).backward()
    assert pred.grad.abs().sum() > 0
    assert pred.grad[~mask].abs().sum() > 0  # background voxels get a push too


def test_normalisation_and_foreground():
    stats = {"mean": 100.0, "std": 20.0, "otsu": 140.0, "p0_1": 60.0, "p99_9": 300.0}
    x = np.array([60.0, 140.0, 300.0])
    np.testing.assert_allclose(normalize(x, stats, "fnet", "target"), [-2, 2, 10])
    np.testing.assert_allclose(normalize(x, stats, "spotlight", "target"), [-4, 0, 8])
    np.testing.assert_allclose(normalize(x, stats, "spotlight", "signal"), [-2, 2, 10])
    assert foreground_threshold(stats, "spotlight") == 0 and foreground_threshold(stats, "fnet") == 2
    for mode in ("fnet", "spotlight"):
        assert foreground_mask(normalize(x, stats, mode, "target"), stats, mode).tolist() == [
            False, True, True]
    r = target_range([stats, {**stats, "p99_9": 500.0}], "spotlight")
    assert r == {"raw_min": 60.0, "raw_max": 500.0, "norm_min": -4.0, "norm_max": 18.0,
                 "norm_threshold": 0.0}
    # fnet mode: the median of the per-field (otsu - mean) / std: 2, 3 and 7 -> 3
    three = [stats, {**stats, "otsu": 160.0}, {**stats, "mean": 0.0}]
    assert target_range(three, "fnet")["norm_threshold"] == 3.0
    np.testing.assert_allclose(denormalize_to_range(np.array([-4.0, 18.0]), r), [60, 500])
    with pytest.raises(ValueError, match="standard deviation"):
        normalize(x, {**stats, "std": 0.0}, "fnet", "signal")
