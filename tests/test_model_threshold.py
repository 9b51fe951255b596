"""Segmenting a prediction at its model's foreground threshold, and evaluate's AP both ways.

The model file records the normalised level at which the model was trained to put the
foreground boundary (``target_range["norm_threshold"]``); ``predict`` writes it in stored
units into the prediction's attributes; ``segment --foreground model`` uses it in place of
the recipe's Otsu step; ``evaluate`` scores labels named ``<LABELS>-model`` as the AP at
the model's threshold, beside the AP of the Otsu recipe.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage as ndi

from spotlight_scale.cli import cli
from spotlight_scale.core import matching
from spotlight_scale.core.segment import WatershedConfig, clear_xy_border, watershed_nuclei

from conftest import reference_patch_index, reference_stats

SHAPE = (12, 72, 96)
VOXEL = (0.6, 0.3, 0.3)
LEVEL = 600.0  # the model's foreground threshold in the fabricated prediction's units


def six_nuclei():
    """Six separated ellipsoids (16 px across in XY), two rows of three."""
    z, y, x = np.indices(SHAPE)
    gt = np.zeros(SHAPE, np.uint32)
    for i, (cy, cx) in enumerate([(cy, cx) for cy in (18, 54) for cx in (18, 48, 78)]):
        gt[((z - 6) / 4) ** 2 + ((y - cy) / 8) ** 2 + ((x - cx) / 8) ** 2 <= 1] = i + 1
    return gt


def drifting_prediction(gt, rng):
    """Nuclei at 1000; a background at 100 that steps up to 550 on the right third (x > 60),
    still below the model's level 600: a prediction whose background drifts."""
    x = np.indices(SHAPE)[2]
    bg = np.where(x > 60, 550.0, 100.0)
    return ndi.gaussian_filter(np.where(gt > 0, 1000.0, bg), 1.0) + rng.normal(0, 10, SHAPE)


def ap50(gt, lab):
    return float(np.asarray(matching.average_precision(clear_xy_border(gt),
                                                       clear_xy_border(lab), [0.5]))[0])


def test_foreground_threshold_level_replaces_otsu_on_a_drifting_background():
    """Otsu recomputed on the prediction (after CLAHE) takes the bright background plateau
    for foreground and loses the nuclei on it (merged with the plateau, which touches the
    border); the model's level keeps the plateau out and finds all six."""
    gt = six_nuclei()
    pred = drifting_prediction(gt, np.random.default_rng(0))
    cfg = WatershedConfig(diameter_um=16 * 0.3)
    otsu = watershed_nuclei(pred, cfg, voxel_size=VOXEL)
    model = watershed_nuclei(pred, cfg, voxel_size=VOXEL, level=LEVEL)
    assert ap50(gt, model) == 1.0
    assert ap50(gt, otsu) < 0.8
    # every nucleus on the plateau is missed by Otsu, found at the model's level
    right = np.unique(gt[:, :, 61:][gt[:, :, 61:] > 0])
    assert right.size == 2
    for i in right:
        assert not (otsu[gt == i] > 0).mean() > 0.5
        assert (model[gt == i] > 0).mean() > 0.8
    # the level is in image units: a level above the nuclei finds nothing
    assert watershed_nuclei(pred, cfg, voxel_size=VOXEL, level=2000.0).max() == 0


def write_store(root, rng):
    from spotlight_scale.io.fields import finalize_store, write_field
    from spotlight_scale.io.store import FieldKey, Store

    store = Store(root, create=True, ngff="0.5",
                  settings={"patch": [8, 16, 16], "patch_stride": [4, 8, 8], "min_fraction": 0.001})
    gt = six_nuclei()
    for field, split in ((0, "test"), (1, "train")):
        target = (100 + 800 * (gt > 0) + rng.normal(0, 20, SHAPE)).clip(0).astype(np.uint16)
        signal = (1000 + 150 * (gt > 0) + rng.normal(0, 30, SHAPE)).clip(0).astype(np.uint16)
        stats = {"signal": reference_stats(signal), "target": reference_stats(target)}
        index = reference_patch_index(target >= stats["target"]["otsu"], (8, 16, 16),
                                      (4, 8, 8), 0.001)
        write_field(store, FieldKey("P1", "B03", field), signal=signal, target=target, mask=gt,
                    voxel_size=VOXEL, chunks=(6, 36, 48), split=split, stats=stats,
                    source={"synthetic": True}, patch_index=index,
                    patch_settings={"patch_shape": (8, 16, 16), "stride": (4, 8, 8),
                                    "min_fraction": 0.001})
    finalize_store(store)
    return store, gt


def add_prediction(store, key, name, volume, model_attrs):
    """A prediction written as predict lays it out, with the model attributes given."""
    import zarr

    from spotlight_scale.io.omezarr import write_image_czyx

    plate = zarr.open_group(str(store.plate_path(key.plate, prediction=name)), mode="a",
                            zarr_format=store.zarr_format)
    group = plate.require_group(key.row).require_group(key.column).require_group(str(key.field))
    write_image_czyx(group, [volume[None].astype(np.float32)], voxel_size=store.voxel_size(key),
                     channel_names=["prediction"], chunks_zyx=(6, 36, 48),
                     fmt=store.ngff_format())
    group.attrs["spotlight_scale"] = {"kind": "prediction", "name": name, "model": model_attrs}
    store.mark_done("predict", key, {"fingerprint": "test"}, name=name)


def test_segment_and_evaluate_report_ap_at_both_thresholds(tmp_path, cluster):
    """segment --foreground model reads the level from the prediction's attributes and records
    it; evaluate reports the AP of Otsu-recomputed labels and of model-threshold labels."""
    from spotlight_scale.io.tables import read_table
    from spotlight_scale.pipelines.evaluate import evaluate

    rng = np.random.default_rng(0)
    store, gt = write_store(tmp_path / "store", rng)
    key = store.fields("test")[0]
    pred = drifting_prediction(gt, rng)
    for k in store.fields():
        add_prediction(store, k, "spot", pred, {"path": "/runs/spot/model.pt",
                                                "foreground_threshold": LEVEL})
        add_prediction(store, k, "old", pred, {"path": "/runs/old/model.pt"})
    runner = CliRunner()
    common = ["--workers", "1", "--diameter", "4.8", "--cluster", cluster]
    for name, extra in (("seg-spot", []), ("seg-spot-model", ["--foreground", "model"])):
        r = runner.invoke(cli, ["segment", str(store.root), "--image", "prediction:spot",
                                "--name", name, *extra, *common])
        assert r.exit_code == 0, r.output
    info = dict(store.open_field(key, prediction="spot")["labels"]["seg-spot-model"].attrs)[
        "spotlight_scale_segmentation"]
    assert info["foreground"] == "model" and info["foreground_level"] == LEVEL
    mark = store.is_done("segment", key, name="seg-spot-model")
    assert mark["foreground"] == "model" and mark["foreground_level"] == LEVEL
    assert store.is_done("segment", key, name="seg-spot")["foreground"] == "otsu"
    # the stored labels are the core function's at that level
    lab_model = store.read_named(key, "labels:seg-spot-model")
    np.testing.assert_array_equal(
        lab_model, watershed_nuclei(store.read_named(key, "prediction:spot"),
                                    WatershedConfig(diameter_um=4.8), voxel_size=VOXEL,
                                    level=LEVEL))
    # a number works the same way and is recorded as a value
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "prediction:spot",
                            "--name", "seg-spot-600", "--foreground", "600", *common])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(store.read_named(key, "labels:seg-spot-600"), lab_model)
    assert store.is_done("segment", key, name="seg-spot-600")["foreground"] == "value"

    # errors: an old model file (no threshold) is named; model needs a prediction; bad values
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "prediction:old",
                            "--name", "seg-old-model", "--foreground", "model", *common])
    assert r.exit_code != 0 and "/runs/old/model.pt" in r.output
    assert "no foreground threshold" in r.output
    assert "seg-old-model" not in store.done_names("segment")
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "x",
                            "--foreground", "model", *common])
    assert r.exit_code != 0 and "prediction:NAME" in r.output
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "target", "--name", "x",
                            "--foreground", "high", *common])
    assert r.exit_code != 0 and "--foreground 'high'" in r.output

    out = tmp_path / "report"
    summary = evaluate(store, ["spot"], out=out, cluster=cluster)
    assert summary["model_labels"] == {"spot": "seg-spot-model"}
    df = read_table(out / "metrics.parquet", "metrics")
    row = df[df["model"] == "spot"].iloc[0]
    assert row["ap50"] == pytest.approx(ap50(gt, store.read_named(key, "labels:seg-spot")))
    assert row["ap50_model"] == pytest.approx(ap50(gt, lab_model))
    assert row["ap50_model"] == 1.0 and row["ap50"] < 0.8
    md = (out / "report.md").read_text()
    assert "AP @ IoU 0.5, model threshold" in md and "`spot` -> `seg-spot-model`" in md

    # labels named <LABELS>-model that were not segmented at the model's level are refused
    r = runner.invoke(cli, ["segment", str(store.root), "--image", "prediction:spot",
                            "--name", "seg-spot-model", "--overwrite", *common])
    assert r.exit_code == 0, r.output
    with pytest.raises(Exception, match="not at the model's threshold"):
        evaluate(store, ["spot"], out=tmp_path / "r2", cluster=cluster, report=False)


def test_predict_records_the_model_threshold_in_stored_units(make_store, make_model_file,
                                                             tmp_path, cluster):
    """A real predict run writes the model's threshold (0 in spotlight units) mapped into
    the stored range; a model file without it writes None (segment then names the file)."""
    import torch

    from spotlight_scale.core.normalize import denormalize_to_range
    from spotlight_scale.models.io import read_model_meta, save_model_file
    from spotlight_scale.pipelines.predict import predict

    store = make_store(shape=(8, 32, 32))
    (tmp_path / "run").mkdir()
    path = make_model_file(store, tmp_path / "run" / "model.pt")
    rng = read_model_meta(path)["target_range"]
    assert rng["norm_threshold"] == 0.0  # spotlight normalisation: Otsu at 0
    predict(store.root, path, "tiny", split="all", tile=(8, 32, 32), overlap=(0, 0, 0),
            cluster=cluster, progress_stream=None)
    key = store.fields()[0]
    model = store.open_field(key, prediction="tiny").attrs.asdict()["spotlight_scale"]["model"]
    expected = denormalize_to_range(0.0, rng)
    assert model["foreground_threshold"] == pytest.approx(expected)
    assert rng["raw_min"] < expected < rng["raw_max"]
    assert "Otsu" in model["foreground_threshold_rule"]

    # a model file from before the threshold was recorded
    payload = torch.load(path, weights_only=True)
    old_rng = {k: v for k, v in payload["target_range"].items() if k != "norm_threshold"}
    from spotlight_scale.models.fnet import FNet

    net = FNet(**payload["model_config"])
    net.load_state_dict(payload["state_dict"])
    old = save_model_file(tmp_path / "old.pt", net, normalization="spotlight",
                          target_range=old_rng, train_config={}, iteration=0, loss="spotlight")
    predict(store.root, old, "old", split="all", tile=(8, 32, 32), overlap=(0, 0, 0),
            cluster=cluster, progress_stream=None)
    model = store.open_field(key, prediction="old").attrs.asdict()["spotlight_scale"]["model"]
    assert model["foreground_threshold"] is None
    r = CliRunner().invoke(cli, ["segment", str(store.root), "--image", "prediction:old",
                                 "--name", "s", "--foreground", "model", "--workers", "1",
                                 "--cluster", cluster])
    assert r.exit_code != 0 and str(old) in r.output
