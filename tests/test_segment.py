"""Segmentation recipe, chunked stitching and the segment stage."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from scipy import ndimage as ndi

from spotlight_scale.chunked.labels import label_chunked, segment_chunked
from spotlight_scale.cli import cli
from spotlight_scale.core.matching import average_precision
from spotlight_scale.core.resample import resample
from spotlight_scale.core.segment import (WatershedConfig, clear_xy_border, estimate_diameter,
                                          watershed_nuclei)
from spotlight_scale.core.synth import synth_field

VOXEL = (0.29, 0.29, 0.29)


def same_partition(a, b):
    """True when a and b group the voxels identically (ids may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def equivalent_diameters(lab, voxel):
    """Equivalent diameter (um) of each object's largest XY section."""
    from skimage.measure import regionprops

    return np.array([2 * np.sqrt((lab[r.slice] == r.label).sum(axis=(1, 2)).max()
                                 * voxel * voxel / np.pi) for r in regionprops(lab)])


@pytest.fixture(scope="module")
def synthetic():
    f = synth_field((16, 128, 128), (0.87, 0.29, 0.29), np.random.default_rng(11))
    voxel = (0.87, 0.29, 0.29)
    return (resample(f["target"], voxel, 0.29, order=3),
            resample(f["mask"], voxel, 0.29, order=0))


def test_watershed_on_synthetic_target_reaches_ap_floor(synthetic):
    target, gt = synthetic
    lab = watershed_nuclei(target, voxel_size=VOXEL)
    assert lab.shape == target.shape and lab.dtype == np.uint32
    ap = average_precision(clear_xy_border(gt), lab, [0.5])[0]
    # measured 0.7-0.9 on such fields; a broken recipe (no seeds, no threshold) scores < 0.3
    assert ap > 0.5, ap
    broken = watershed_nuclei(target, WatershedConfig(seed_distance=0.01, min_volume=0,
                                                      smoothing=0), voxel_size=VOXEL)
    assert average_precision(clear_xy_border(gt), broken, [0.5])[0] < ap


def test_estimated_diameter_is_the_nuclei_size(synthetic):
    target, gt = synthetic
    true = np.median(equivalent_diameters(clear_xy_border(gt), 0.29))
    est = estimate_diameter(target, voxel_size=VOXEL)
    assert abs(est - true) < 0.15 * true, (est, true)
    # the same field twice as large on a grid twice as fine: the same diameter in um
    from scipy.ndimage import zoom

    fine = zoom(target, 2, order=1)
    assert estimate_diameter(fine, voxel_size=0.145) == pytest.approx(est, rel=0.1)
    # a diameter far from the truth makes the recipe fail (sizes follow the diameter)
    good = average_precision(clear_xy_border(gt), watershed_nuclei(target, voxel_size=VOXEL),
                             [0.5])[0]
    wrong = watershed_nuclei(target, WatershedConfig(diameter_um=4 * est), voxel_size=VOXEL)
    assert average_precision(clear_xy_border(gt), wrong, [0.5])[0] < good - 0.2
    assert np.isnan(estimate_diameter(np.zeros((8, 32, 32)), voxel_size=VOXEL))
    with pytest.raises(ValueError, match="voxel_size"):
        watershed_nuclei(target, voxel_size=None)
    with pytest.raises(ValueError, match="diameter_um"):
        WatershedConfig(diameter_um=-1).validate()


def test_post_threshold_and_border_removal(synthetic):
    target, _ = synthetic
    lab = watershed_nuclei(target, threshold=float(target.max()) + 1, voxel_size=VOXEL)
    assert lab.max() == 0  # everything zeroed -> nothing found
    lab = watershed_nuclei(target, voxel_size=VOXEL)
    for face in (lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        assert face.max() == 0


@pytest.mark.parametrize("chunks", [(7, 13, 9), (20, 8, 31), (3, 50, 50)])
def test_label_chunked_same_partition_as_whole(chunks):
    rng = np.random.default_rng(0)
    mask = ndi.gaussian_filter(rng.random((19, 45, 37)), 1.5) > 0.52
    whole, _ = ndi.label(mask)
    assert same_partition(label_chunked(mask, chunks), whole)


def test_segment_chunked_same_partition_as_single_block(synthetic):
    """Block-wise segmentation + stitching == whole-field segmentation when the
    segmentation is local (a fixed threshold) and objects are smaller than the overlap."""
    target, _ = synthetic
    level = float(np.percentile(target, 93))
    seg = lambda x: ndi.label(x > level)[0]
    single = seg(target)
    chunked = segment_chunked(target, seg, (target.shape[0], 48, 40), (0, 40, 40))
    assert single.max() >= 3 and same_partition(chunked, single)


def test_segment_stage(make_store):
    import ome_zarr_models.v05 as v05

    store = make_store(shape=(16, 64, 64))
    runner = CliRunner()
    args = ["segment", str(store.root), "--image", "target", "--name", "seg", "--workers", "1"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    key = store.fields()[0]
    lab = store.read_named(key, "labels:seg")
    assert lab.shape == store.read(key, "target").shape and lab.max() > 0
    v05.Labels.from_zarr(zarr.open_group(str(store.field_url(key) / "labels"), mode="r"))
    assert store.is_done("segment", key, name="seg")["n_objects"] == len(np.unique(lab)) - 1
    info = dict(store.open_field(key)["labels"]["seg"].attrs)["spotlight_scale_segmentation"]
    assert info["diameter_estimated"] is True and info["diameter_um"] > 0
    assert info["voxel_size_um"] == pytest.approx(store.voxel_size(key))
    # any other image of the field is segmented with the diameter measured on its target
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "signal", "--name", "seg-s",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    info_s = dict(store.open_field(key)["labels"]["seg-s"].attrs)["spotlight_scale_segmentation"]
    assert info_s["diameter_source"] == "target"
    assert info_s["diameter_um"] == info["diameter_um"]
    # a given diameter is used as given and recorded so
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "seg-d",
                            "--workers", "1", "--diameter", "3.5"])
    assert r.exit_code == 0, r.output
    info = dict(store.open_field(key)["labels"]["seg-d"].attrs)["spotlight_scale_segmentation"]
    assert info["diameter_um"] == 3.5 and info["diameter_estimated"] is False
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "seg-d",
                            "--diameter", "-2"])
    assert r.exit_code != 0 and "--diameter" in r.output
    assert "already done" in runner.invoke(cli, args).output
    r = runner.invoke(cli, args[:-2] + ["--threshold", "500"])
    assert r.exit_code != 0 and "other settings" in r.output
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "gt"])
    assert r.exit_code != 0 and "reserved" in r.output
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "prediction:none", "--name", "x"])
    assert r.exit_code != 0 and "prediction 'none' missing" in r.output


def test_segment_and_export_2d_fields(make_store, tmp_path):
    """A store of 2D fields (one z plane): the stage writes (1, Y, X) labels equal to the
    recipe run on the plane; export writes a YX ImageJ TIFF with the pixel size, no z."""
    import tifffile

    store = make_store(fields=(("P1", "B03", 0, "test"),), shape=(1, 64, 64),
                       patch=(1, 16, 16), stride=(1, 8, 8), chunks=(1, 32, 32),
                       voxel_size=(0.29, 0.29, 0.29))
    key = store.fields()[0]
    runner = CliRunner()
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "seg",
                            "--workers", "1", "--diameter", "3"])
    assert r.exit_code == 0, r.output
    lab = store.read_named(key, "labels:seg")
    target = store.read(key, "target")
    assert lab.shape == target.shape == (1, 64, 64) and lab.max() > 0
    np.testing.assert_array_equal(lab, watershed_nuclei(
        target, WatershedConfig(diameter_um=3), voxel_size=store.voxel_size(key)))
    attrs = dict(store.open_field(key)["labels"]["seg"].attrs)
    props = (attrs.get("ome", attrs))["image-label"]["properties"]
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    assert [p["label-value"] for p in props] == ids.tolist()
    assert [p["area_um2"] for p in props] == pytest.approx(counts * 0.29 * 0.29, abs=1e-4)
    assert not any("volume_um3" in p for p in props)
    for image in ("labels:seg", "target"):
        out = tmp_path / f"{image.replace(':', '_')}.tif"
        r = runner.invoke(cli, ["export", str(store.root), str(out), "--well", "B03",
                                "--field", "0", "--image", image])
        assert r.exit_code == 0, r.output
        with tifffile.TiffFile(out) as tif:
            assert tif.series[0].axes == "YX" and len(tif.pages) == 1
            np.testing.assert_array_equal(tif.asarray(), store.read_named(key, image)[0])
            assert "spacing" not in tif.imagej_metadata and tif.imagej_metadata["unit"] == "um"
            xres = tif.pages[0].tags["XResolution"].value
            assert xres[1] / xres[0] == pytest.approx(0.29, rel=1e-6)
