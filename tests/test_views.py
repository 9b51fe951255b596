"""Readers: a field as a labelled array in micrometres; label names as ome-zarr-py reads them."""

import numpy as np
import pytest


def test_open_field_is_a_labelled_array_in_micrometres(make_store):
    import xarray as xr

    from spotlight_scale.io.views import open_field

    store = make_store(voxel_size=(0.5, 0.25, 0.25), shape=(16, 64, 64))  # 2 levels
    key = store.fields()[0]
    field = store.field_url(key)
    # why a helper: xarray reads the pyramid group as one Dataset, and the levels' sizes clash
    with pytest.raises(ValueError, match="conflicting sizes"):
        xr.open_zarr(field)
    img = open_field(field)  # the README's one-liner
    assert img.dims == ("c", "z", "y", "x") and img.coords["c"].values.tolist() == [
        "signal", "target"]
    assert img.attrs["units"] == {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    np.testing.assert_allclose(img["z"].values, 0.5 * np.arange(img.sizes["z"]))
    np.testing.assert_allclose(img["x"].values, 0.25 * np.arange(img.sizes["x"]))
    target = store.read(key, "target")
    np.testing.assert_array_equal(img.sel(c="target").values, target)
    plane = img.sel(c="target").sel(z=2.0, method="nearest")  # 2 um deep = plane 4
    np.testing.assert_array_equal(plane.values, target[4])
    low = open_field(field, level=1)
    assert low.sizes["z"] == (img.sizes["z"] + 1) // 2
    assert float(low["z"][1] - low["z"][0]) == pytest.approx(1.0)  # twice the spacing
    np.testing.assert_array_equal(low.values, np.asarray(store.image(key, 1)))
    lab = open_field(field / "labels" / "gt")
    assert lab.dims == ("z", "y", "x") and lab.name == "gt"
    np.testing.assert_array_equal(lab.values, store.read_named(key, "labels:gt"))
    with pytest.raises(ValueError, match="no pyramid level 9"):
        open_field(field, level=9)


def test_ome_zarr_names_label_layers_by_their_labels_name(make_store):
    """napari-ome-zarr names a labels layer by ome-zarr-py's ``OMEZarrLabels.name`` (its
    current reader; older ones by the ``Reader`` node's name), in the field view and, from
    the first field, in the plate view: both are the labels name we write, not a path."""
    import zarr
    from ome_zarr import OMEZarrLabels, OMEZarrMultiscale
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    store = make_store()
    key = store.fields()[0]
    field = zarr.open_group(str(store.field_url(key)), mode="r")
    assert list(OMEZarrMultiscale.from_ome_zarr(field).labels.keys()) == ["gt"]
    assert OMEZarrLabels.from_ome_zarr(field["labels/gt"]).name == "gt"
    nodes = list(Reader(parse_url(str(store.field_url(key))))())
    assert [n.metadata["name"] for n in nodes if n.load(Label)] == ["gt"]
