"""The store writer produces NGFF that independent readers accept, and reads back exactly."""

import numpy as np
import pytest
import zarr


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_written_store_validates_and_reads_back(make_store, ngff):
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    store = make_store(ngff=ngff, shape=(12, 80, 72))
    keys = store.fields()
    assert [k.id for k in keys] == ["P1/B03/0", "P1/B03/1", "P1/C04/0", "P1/C04/1"]
    assert [k.id for k in store.fields("train")] == ["P1/B03/0", "P1/B03/1"]
    mod = v05 if ngff == "0.5" else v04
    plate = zarr.open_group(str(store.plate_path("P1")), mode="r")
    mod.HCS.from_zarr(plate)  # raises on invalid metadata
    mod.Image.from_zarr(plate["B/03/0"])
    mod.Labels.from_zarr(plate["B/03/0/labels"])
    nodes = list(Reader(parse_url(str(store.field_url(keys[0]))))())
    assert nodes[0].data[0].shape == (2, 12, 80, 72)
    assert nodes[0].data[1].shape == (2, 6, 40, 36)  # z is downsampled too
    key = keys[0]
    full = store.read(key, "target")
    assert full.shape == (12, 80, 72)
    region = (slice(2, 7), slice(5, 30), slice(1, 2))
    np.testing.assert_array_equal(store.read(key, "target", region), full[region])
    assert store.read_named(key, "labels:gt").max() > 0
    st = store.stats(key, "target")
    assert st["min"] <= st["otsu"] <= st["max"]
    idx = store.patch_index(key)
    assert idx.origins.dtype == np.int32 and len(idx) > 0
    assert idx.patch_shape == (8, 16, 16)
    table = store.fields_table()
    assert list(table["field"]) == [0, 1, 0, 1] and "target_otsu" in table
