"""The synthetic screen carries the physics that makes the problem real."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from skimage.filters import threshold_otsu

from spotlight_scale.cli import cli
from spotlight_scale.core.synth import assign_splits, synth_field
from spotlight_scale.io.tiff import read_volume

VOXEL = (0.87, 0.29, 0.29)


@pytest.fixture(scope="module")
def field():
    return synth_field((16, 96, 96), VOXEL, np.random.default_rng(3))


def test_target_foreground_matches_true_nuclei(field):
    m, t = field["mask"] > 0, field["target"]
    assert field["mask"].max() >= 3
    fg = t >= threshold_otsu(t)
    dice = 2 * (fg & m).sum() / (fg.sum() + m.sum())
    assert dice > 0.6, dice


def _axial_std(profile):
    w = np.clip(profile, 0, None)
    z = np.arange(len(w))
    mu = (w * z).sum() / w.sum()
    return np.sqrt((w * (z - mu) ** 2).sum() / w.sum())


def test_axial_halo_extends_nuclei_in_target(field):
    """The PSF spreads each nucleus along z: its target profile is wider than its mask."""
    m, t = field["mask"], field["target"].astype(float)
    bg = np.median(t[:, ~(m > 0).any(0)])
    ratios = []
    for lab in range(1, m.max() + 1):
        column = (m == lab).any(0)
        true = _axial_std((m == lab)[:, column].sum(1).astype(float))
        seen = _axial_std(t[:, column].mean(1) - bg)
        ratios.append(seen / true)
    assert np.median(ratios) > 1.15, ratios


def test_debris_in_target_not_in_signal(field):
    from dataclasses import replace

    from spotlight_scale.core.synth import SynthParams

    d = field["debris"] & (field["mask"] == 0)
    bg = (field["mask"] == 0) & ~field["debris"]
    assert d.sum() > 0
    assert field["target"][d].mean() > 1.5 * field["target"][bg].mean()
    clean = synth_field((16, 96, 96), VOXEL, np.random.default_rng(3),
                        replace(SynthParams(), debris_per_100um2=0.0))
    np.testing.assert_array_equal(clean["signal"], field["signal"])  # no trace in the signal
    np.testing.assert_array_equal(clean["mask"], field["mask"])
    assert clean["target"][d].mean() < field["target"][d].mean()


def test_transmitted_contrast_flips_through_focus(field):
    s, m = field["signal"].astype(float), field["mask"] > 0
    zf = int(field["z_focus_um"] / VOXEL[0])
    centre, empty = m.any(0), ~m.any(0)
    below = s[max(zf - 4, 0)][centre].mean() - s[max(zf - 4, 0)][empty].mean()
    above = s[min(zf + 4, 15)][centre].mean() - s[min(zf + 4, 15)][empty].mean()
    assert below * above < 0 and min(abs(below), abs(above)) > 20


def test_splits():
    labels = assign_splits(8, 0.25, 0.1, np.random.default_rng(0))
    assert labels.count("test") == 2 and labels.count("val") == 1 and labels.count("train") == 5
    assert assign_splits(1, 0.5, 0.5, np.random.default_rng(0)) == ["train"]


def test_cli_writes_deterministic_imagej_screen(tmp_path):
    runner = CliRunner()
    for d in ("a", "b"):
        r = runner.invoke(cli, ["synth", str(tmp_path / d), "--wells", "2", "--fields", "2",
                                "--shape", "8,48,48", "--seed", "5"])
        assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "a" / "manifest.csv")))
    assert [(r["well"], r["field"]) for r in rows] == [("B02", "0"), ("B02", "1"), ("B03", "0"),
                                                       ("B03", "1")]
    assert {r["split"] for r in rows} <= {"train", "val", "test"} and "train" in {
        r["split"] for r in rows}
    for r in rows:
        for col in ("path_signal", "path_target", "path_mask"):
            a, voxel = read_volume(tmp_path / "a" / r[col])
            b, _ = read_volume(tmp_path / "b" / r[col])
            np.testing.assert_array_equal(a, b)
            assert a.shape == (8, 48, 48) and voxel == pytest.approx(VOXEL)
