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
    assert nodes[0].metadata["channel_names"] == ["signal", "target"]  # omero, as napari reads it
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
    assert list(table["Metadata_Site"]) == [0, 1, 0, 1] and "target_otsu" in table
    assert list(table.columns[:3]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]


def _block_mean_reference(x):
    """Brute force: each output voxel is the mean of the input voxels of its 2x2x2 block
    that exist (a trailing half block of an odd axis has fewer)."""
    out = np.empty([-(-n // 2) for n in x.shape], np.float64)
    for i, j, k in np.ndindex(*out.shape):
        out[i, j, k] = x[2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2].mean()
    return out


def test_downsample_mean_averages_what_exists():
    from spotlight_scale.io.omezarr import downsample_mean

    x = np.random.default_rng(0).uniform(0, 1000, size=(5, 7, 4)).astype(np.float32)
    np.testing.assert_allclose(downsample_mean(x), _block_mean_reference(x), rtol=1e-6)
    u16 = x.astype(np.uint16)
    np.testing.assert_array_equal(downsample_mean(u16),
                                  np.rint(_block_mean_reference(u16)).astype(np.uint16))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("shape", [(32, 64, 64), (5, 7, 4), (1, 9, 10), (3, 1, 2)])
def test_small_integer_downsample_is_bit_identical_to_block_reduce(dtype, shape):
    """The 8/16-bit fast path stores exactly what the float32 block_reduce path stored."""
    from skimage.measure import block_reduce

    from spotlight_scale.io.omezarr import downsample_mean

    info = np.iinfo(dtype)
    x = np.random.default_rng(3).integers(info.min, info.max, size=shape, endpoint=True
                                          ).astype(dtype)
    x.flat[:3] = [info.max, info.min, info.max]
    sums = block_reduce(x.astype(np.float32), (2, 2, 2), np.sum)
    counts = [np.where(np.arange(-(-n // 2)) == n // 2, 1, 2).astype(np.float32) for n in shape]
    ref = sums / (counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :])
    ref = np.clip(np.rint(ref), info.min, info.max).astype(dtype)
    got = downsample_mean(x)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("labels", [False, True])
def test_fill_pyramid_chunked_equals_in_memory(tmp_path, labels):
    """Levels computed chunk by chunk from level 0 (odd shape, uneven chunks) equal the
    in-memory pyramid."""
    from spotlight_scale.io.fields import build_pyramid
    from spotlight_scale.io.omezarr import fill_pyramid, pyramid_shapes

    rng = np.random.default_rng(1)
    shape = (13, 150, 133)
    vol = (rng.integers(0, 40, shape).astype(np.uint32) if labels
           else rng.normal(size=shape).astype(np.float32))
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    arrays = [group.create_array(f"s{i}", shape=(1, *s), chunks=(1, 5, 48, 40), dtype=vol.dtype)
              for i, s in enumerate(pyramid_shapes(shape))]
    assert len(arrays) >= 3
    arrays[0][0] = vol
    fill_pyramid(arrays, labels=labels)
    for arr, ref in zip(arrays, build_pyramid(vol, len(arrays), labels=labels)):
        np.testing.assert_array_equal(arr[0], ref)


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_image_tree_in_one_call_equals_the_node_by_node_writers(tmp_path, ngff):
    """write_image_tree (ingest's writer: the whole field's metadata documents written as
    plain files) leaves the same metadata documents, chunk files and values as creating the
    image and its labels node by node in an existing group (write_image_czyx +
    write_labels_zyx), every chunk stored (also the empty ones), and the result validates
    with ome-zarr-models; it refuses to write over an existing node."""
    import json

    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05
    from ome_zarr.format import FormatV04, FormatV05

    from spotlight_scale.io.fields import build_pyramid
    from spotlight_scale.io.omezarr import write_image_czyx, write_image_tree, write_labels_zyx

    fmt = FormatV05() if ngff == "0.5" else FormatV04()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 4000, (2, 20, 70, 66), dtype=np.uint16)
    levels = [image, image[:, ::2, ::2, ::2].copy()]
    labels = np.zeros((20, 70, 66), np.uint32)
    labels[3:9, 5:30, 40:60] = 4
    labels[12:19, 40:66, 2:20] = 9  # the last x chunk stays empty: it must still be stored
    lv = build_pyramid(labels, 2, labels=True)
    props = [{"label-value": 4, "volume_um3": 1.5}, {"label-value": 9, "volume_um3": 2.5}]
    common = dict(voxel_size=(0.5, 0.29, 0.29), channel_names=("signal", "target"),
                  chunks_zyx=(8, 32, 32), fmt=fmt, windows=[(1.0, 900.0), (2.0, 3000.0)])
    attrs = {"spotlight_scale": {"split": "train", "stats": {"otsu": 12.5}}}

    write_image_tree(tmp_path / "tree", levels, labels={"gt": (lv, props)}, attributes=attrs,
                     **common)
    ref = zarr.open_group(str(tmp_path / "ref"), mode="w", zarr_format=fmt.zarr_format)
    write_image_czyx(ref, levels, **common)
    write_labels_zyx(ref, "gt", lv, voxel_size=common["voxel_size"], chunks_zyx=(8, 32, 32),
                     fmt=fmt, properties=props)
    ref.attrs.update(attrs)

    def files(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    names = files(tmp_path / "ref")
    assert files(tmp_path / "tree") == names
    meta = {"zarr.json", ".zarray", ".zattrs", ".zgroup"}
    for name in names:
        a, b = (tmp_path / "tree" / name).read_bytes(), (tmp_path / "ref" / name).read_bytes()
        if name.rsplit("/", 1)[-1] in meta:
            assert json.loads(a) == json.loads(b), name
    tree = zarr.open_group(str(tmp_path / "tree"), mode="r")
    for path, want in [("s0", levels[0]), ("s1", levels[1]), ("labels/gt/s0", lv[0]),
                       ("labels/gt/s1", lv[1])]:
        np.testing.assert_array_equal(tree[path][...], want)
        assert tree[path].nchunks_initialized == tree[path].nchunks, path
    (v05 if ngff == "0.5" else v04).Image.from_zarr(tree)
    (v05 if ngff == "0.5" else v04).Labels.from_zarr(tree["labels"])
    with pytest.raises(FileExistsError):
        write_image_tree(tmp_path / "ref", levels, **common)


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_rewritten_labels_are_listed_once_and_validate(make_store, ngff):
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    from spotlight_scale.io.fields import build_pyramid
    from spotlight_scale.io.omezarr import write_labels_zyx

    store = make_store(ngff=ngff, shape=(12, 80, 72), fields=(("P1", "B03", 0, "train"),))
    key = store.fields()[0]
    group = store.open_field(key, mode="a")
    labels = np.zeros((12, 80, 72), np.uint32)
    for value in (3, 7):  # write "seg" twice: the second replaces the first
        labels[2:6, 10:30, 5:25] = value
        write_labels_zyx(group, "seg", build_pyramid(labels, 2, labels=True),
                         voxel_size=(0.29,) * 3, chunks_zyx=(8, 32, 32), fmt=store.ngff_format())
    assert store.labels_names(key) == ["gt", "seg"]
    assert store.read_named(key, "labels:seg").max() == 7
    (v05 if ngff == "0.5" else v04).Labels.from_zarr(group["labels"])


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_create_well_groups_adds_only_missing_wells(tmp_path, ngff):
    """create_well_groups (ingest and predict, before the workers start) makes the missing
    plate, row and well groups of many keys, leaves existing groups and their attributes as
    they were, and gets past a row whose metadata no longer parses."""
    from spotlight_scale.io.fields import create_well_groups
    from spotlight_scale.io.store import FieldKey, Store

    store = Store(tmp_path / "s", create=True, ngff=ngff)
    fmt = store.zarr_format
    plate = zarr.open_group(str(store.plate_path("P1")), mode="w", zarr_format=fmt)
    plate.attrs["kept"] = "plate"
    plate.require_group("B").require_group("03").attrs["kept"] = "well"
    keys = [FieldKey("P1", w, f) for w, f in (("B03", 0), ("B03", 1), ("B04", 0), ("C01", 2))]
    create_well_groups(store, keys + [FieldKey("P2", "D07", 0)])
    again = zarr.open_group(str(store.plate_path("P1")), mode="r", zarr_format=fmt)
    assert again.attrs["kept"] == "plate" and again["B/03"].attrs["kept"] == "well"
    for plate_name, well in (("P1", "B/04"), ("P1", "C/01"), ("P2", "D/07")):
        assert isinstance(zarr.open_group(str(store.plate_path(plate_name)), mode="r",
                                          zarr_format=fmt)[well], zarr.Group)
    meta = store.plate_path("P1") / "C" / ("zarr.json" if fmt == 3 else ".zgroup")
    meta.write_text(meta.read_text()[:10])  # an interrupted write
    create_well_groups(store, [FieldKey("P1", "C02", 0)])
    assert isinstance(zarr.open_group(str(store.plate_path("P1") / "C" / "02"), mode="r",
                                      zarr_format=fmt), zarr.Group)


def test_tables_share_one_key_convention_and_read_version_1(tmp_path):
    """fields and metrics tables written before the Metadata_ keys (schema 1) are read with
    the current keys; an unknown version is refused by name."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spotlight_scale.io.tables import FIELD_KEYS, read_table, write_table
    from spotlight_scale.versioning import VersionError

    old = pd.DataFrame({"plate": ["P"], "well": ["B03"], "row": ["B"], "column": ["03"],
                        "field": [1], "target_otsu": [7.0]})

    def write_v(version, path):
        tab = pa.Table.from_pandas(old, preserve_index=False)
        meta = {b"spotlight_scale.table": b"fields",
                b"spotlight_scale.schema_version": str(version).encode()}
        pq.write_table(tab.replace_schema_metadata(meta), path)

    write_v(1, tmp_path / "f1.parquet")
    got = read_table(tmp_path / "f1.parquet", "fields")
    assert list(got.columns) == [*FIELD_KEYS[:2], "Metadata_Row", "Metadata_Column",
                                 FIELD_KEYS[2], "target_otsu"]
    assert got.loc[0, "Metadata_Site"] == 1 and got.loc[0, "Metadata_Well"] == "B03"
    write_v(99, tmp_path / "f99.parquet")
    with pytest.raises(VersionError, match="version 99"):
        read_table(tmp_path / "f99.parquet", "fields")
    write_table(got, tmp_path / "f2.parquet", "fields")
    pd.testing.assert_frame_equal(read_table(tmp_path / "f2.parquet", "fields"), got)
