"""NGFF labels that viewers understand: source image, colors, per-nucleus properties, checked
with ome-zarr-models and ome-zarr-py's reader; a prediction's segmentation lives with it."""

import logging

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_gt_labels_have_source_colors_and_properties(make_store, ngff, caplog):
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    store = make_store(ngff=ngff, shape=(12, 64, 64), fields=(("P1", "B03", 0, "train"),))
    key = store.fields()[0]
    field = zarr.open_group(str(store.field_url(key)), mode="r")
    mod = v05 if ngff == "0.5" else v04
    mod.Labels.from_zarr(field["labels"])
    mod.ImageLabel.from_zarr(field["labels/gt"])  # image-label with colors and properties
    attrs = field["labels/gt"].attrs.asdict()
    meta = (attrs["ome"] if ngff == "0.5" else attrs)["image-label"]
    assert meta["source"] == {"image": "../../"}
    lab, target = store.read_named(key, "labels:gt"), store.read(key, "target")
    ids = np.unique(lab[lab > 0]).tolist()
    assert [c["label-value"] for c in meta["colors"]] == ids
    assert len({tuple(c["rgba"]) for c in meta["colors"]}) == len(ids)  # distinct colors
    props = {p["label-value"]: p for p in meta["properties"]}
    assert sorted(props) == ids
    vox = np.prod(store.voxel_size(key))
    counts = ndi.sum_labels(np.ones_like(lab), lab, ids)
    means = ndi.mean(target.astype(np.float64), lab, ids)
    for i, n, m in zip(ids, counts, means):
        assert props[i]["voxels"] == n
        assert props[i]["volume_um3"] == pytest.approx(n * vox, abs=1e-4)
        assert props[i]["mean_intensity"] == pytest.approx(m, abs=1e-4)
    # ome-zarr-py finds the parent image from source.image and hands the properties on
    with caplog.at_level(logging.WARNING, logger="ome_zarr"):
        nodes = list(Reader(parse_url(str(store.field_url(key) / "labels" / "gt")))())
    assert "no parent found" not in caplog.text
    label_node = next(n for n in nodes if "properties" in n.metadata)
    assert label_node.metadata["properties"][ids[0]]["voxels"] == counts[0]
    assert label_node.metadata["color"][ids[0]][3] == 1.0
    assert any(n.metadata.get("channel_names") == ["signal", "target"] for n in nodes)


def add_prediction(store, key, name, volume):
    """A stand-in for `predict`: a prediction field (as predict lays it out) and its marker."""
    from spotlight_scale.io.fields import open_well_group
    from spotlight_scale.io.omezarr import write_image_czyx

    well = open_well_group(store, key, prediction=name)
    if str(key.field) in well:
        del well[str(key.field)]  # predict --overwrite replaces the whole field group
    group = well.require_group(str(key.field))
    write_image_czyx(group, [volume[None].astype(np.float32)], voxel_size=store.voxel_size(key),
                     channel_names=["prediction"], chunks_zyx=(8, 32, 32),
                     fmt=store.ngff_format())
    store.mark_done("predict", key, {"fingerprint": "test"}, name=name)


def test_prediction_segmentation_is_stored_with_the_prediction(make_store):
    import ome_zarr_models.v05 as v05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from spotlight_scale.io.omezarr import write_labels_zyx
    from spotlight_scale.pipelines.segment import segment

    store = make_store(shape=(16, 64, 64), fields=(("P1", "B03", 0, "test"),
                                                   ("P1", "C04", 0, "test")))
    keys = store.fields()
    for k in keys:
        add_prediction(store, k, "p", store.read(k, "target").astype(np.float32))
    res = segment(store.root, image="prediction:p", name="seg-p", workers=1, progress_stream=None)
    assert res["done"] == 2
    key = keys[0]
    pred_field = store.field_url(key, "p")
    assert (pred_field / "labels" / "seg-p").is_dir()
    assert "seg-p" not in store.labels_names(key)  # not in the raw field
    lab = store.read_named(key, "labels:seg-p")
    assert lab.max() > 0 and store.labels_prediction(key, "seg-p") == "p"
    grp = zarr.open_group(str(pred_field), mode="r")
    v05.Image.from_zarr(grp)
    v05.Labels.from_zarr(grp["labels"])
    v05.ImageLabel.from_zarr(grp["labels/seg-p"])
    props = grp["labels/seg-p"].attrs["ome"]["image-label"]["properties"]
    assert sorted(p["label-value"] for p in props) == np.unique(lab[lab > 0]).tolist()
    # opening the prediction field shows its labels (ome-zarr-py walks labels/)
    nodes = list(Reader(parse_url(str(pred_field)))())
    assert any(n.metadata.get("name") == "seg-p" for n in nodes)
    # the prediction is made again (its field group replaced, labels gone): segment redoes
    # the field instead of skipping it on its marker
    add_prediction(store, key, "p", store.read(key, "target").astype(np.float32))
    assert not store.has_labels(key, "seg-p")
    res = segment(store.root, image="prediction:p", name="seg-p", workers=1, progress_stream=None)
    assert (res["done"], res["skipped"]) == (1, 1)
    np.testing.assert_array_equal(store.read_named(key, "labels:seg-p"), lab)
    # stores written before kept a prediction's labels in the raw field: still read there
    old = np.zeros_like(lab)
    old[2:5, 3:9, 4:8] = 5
    write_labels_zyx(store.open_field(keys[1], mode="a"), "seg-old", [old],
                     voxel_size=store.voxel_size(keys[1]), chunks_zyx=(8, 32, 32),
                     fmt=store.ngff_format())
    store.mark_done("segment", keys[1], {"image": "prediction:p"}, name="seg-old")
    np.testing.assert_array_equal(store.read_named(keys[1], "labels:seg-old"), old)
