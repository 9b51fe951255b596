"""Microscope files in (spotlight_scale.io.images): OME-TIFF with several series, CZI,
channels and scenes by name or index, voxel sizes from the file's metadata.

bioio and its plugins (the ``microscopy`` extra, in ``dev``) are the field's readers:
the real OME-TIFF read through bioio must equal tifffile's reading of it; files that
tifffile and pylibCZIrw write (OME-XML, CZI metadata) are ingested through the
manifest and the real CLI, and what lands in the store is compared with the file.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from conftest import blob_field
from spotlight_scale.io.images import ImageError, missing_reader_message, read_header, read_image
from spotlight_scale.io.manifest import ManifestError, read_manifest

pytest.importorskip("bioio")
pytest.importorskip("bioio_ome_tiff")


def _manifest(path, rows):
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    return path


def _real():
    from spotlight_scale.sampledata import scratch_assay_path

    try:
        return scratch_assay_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _field(shape, seed):
    """signal, target, labels of a blob field, stacked as channels BF, DAPI, nuclei."""
    rng = np.random.default_rng(seed)
    s, t, m = blob_field(shape, 4, rng, radius=(2, 5, 5))
    return np.stack([s, t, m.astype(np.uint16)])


def _write_scenes(path):
    """An OME-TIFF with three series (scenes) ``A1``, ``B2``, ``C3``: CZYX, channels
    named, different content; B2 has other voxel sizes (z in nm, to check unit
    conversion), C3 those of A1."""
    scenes = {"A1": (_field((16, 40, 44), 1), (1.2, 0.4, 0.4), "µm"),
              "B2": (_field((16, 40, 44), 2), (900.0, 0.3, 0.3), "nm"),
              "C3": (_field((16, 40, 44), 3), (1.2, 0.4, 0.4), "µm")}
    with tifffile.TiffWriter(path, ome=True) as w:
        for name, (arr, (z, y, x), zunit) in scenes.items():
            w.write(arr, metadata={"axes": "CZYX", "Name": name, "PhysicalSizeZ": z,
                                   "PhysicalSizeZUnit": zunit, "PhysicalSizeY": y,
                                   "PhysicalSizeX": x,
                                   "Channel": {"Name": ["BF", "DAPI", "nuclei"]}})
    return {k: v[0] for k, v in scenes.items()}


def test_real_ome_tiff_through_bioio_equals_tifffile():
    """The real 2D pair (CTYX, channels H3342, oblique, nuclei, cyto): channel by name
    and time point through bioio give tifffile's planes, and the same pixel size."""
    path = _real()
    ref = tifffile.imread(path)  # C, T, Y, X
    head_t, head_b = read_header(path), read_header(path, reader="bioio")
    assert head_t.reader == "tifffile" and head_b.reader == "bioio_ome_tiff"
    assert head_t.channel_names == head_b.channel_names == ("H3342", "oblique", "nuclei", "cyto")
    assert head_t.voxel_size[1:] == head_b.voxel_size[1:] == pytest.approx((0.619, 0.619))
    for t in (0, 7):
        for name, c in (("oblique", 1), ("H3342", 0), ("nuclei", 2)):
            got, voxel = read_image(path, name, t, reader="bioio")
            assert got.shape == (1, 210, 576) and got.dtype == ref.dtype
            np.testing.assert_array_equal(got[0], ref[c, t])
            np.testing.assert_array_equal(read_image(path, name, t)[0], got)  # tifffile, by name
            np.testing.assert_array_equal(read_image(path, c, t)[0], got)  # tifffile, by index
            assert voxel[1:] == pytest.approx((0.619, 0.619))


def test_real_ome_tiff_manifest_channels_by_name(tmp_path):
    """Names in the channel columns become the file's indices: the rows equal those
    written with indices, and a name the file lacks is refused naming line, file and
    the file's channels."""
    path = _real()
    base = {"path_signal": str(path), "path_target": str(path), "path_mask": str(path)}
    by_name = [{**base, "channel_signal": "oblique", "channel_target": "H3342",
                "channel_mask": "nuclei", "t": t, "plate": "P", "well": f"B0{t + 2}", "field": 0}
               for t in (1, 6)]
    by_index = [{**r, "channel_signal": 1, "channel_target": 0, "channel_mask": 2}
                for r in by_name]
    rows_n, _ = read_manifest(_manifest(tmp_path / "n.csv", by_name))
    rows_i, _ = read_manifest(_manifest(tmp_path / "i.csv", by_index))
    for a, b in zip(rows_n, rows_i):
        assert (a.channel_signal, a.channel_target, a.channel_mask) == (1, 0, 2)
        assert (a.shape, a.voxel_size, a.t, a.key) == (b.shape, b.voxel_size, b.t, b.key)
    by_name[1]["channel_signal"] = "GFP"
    with pytest.raises(ManifestError) as err:
        read_manifest(_manifest(tmp_path / "bad.csv", by_name))
    (msg,) = err.value.errors
    assert msg.startswith("line 3: path_signal ") and str(path) in msg
    assert "no channel named 'GFP'" in msg
    assert "0 'H3342', 1 'oblique', 2 'nuclei', 3 'cyto'" in msg


def _ingest_cli(man, store, *extra):
    cmd = [sys.executable, "-m", "spotlight_scale", "ingest", str(man), str(store),
           "--workers", "1", "--no-resample", "--chunks", "4,32,32", "--patch", "4,16,16",
           "--patch-stride", "2,8,8", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_multi_scene_ome_tiff_ingests_the_chosen_scene_by_cli(tmp_path):
    """An OME-TIFF with several series: each row picks a scene (by name, by index) and
    channels by name; voxel sizes (z in nm in one scene) come from its OME metadata;
    what the CLI stores is that scene's channels, as bioio reads them too."""
    from spotlight_scale.io.store import FieldKey, Store

    path = tmp_path / "plate.ome.tif"
    data = _write_scenes(path)
    name = path.name
    rows = [{"path_signal": name, "path_target": name, "path_mask": name, "plate": "P",
             "well": well, "field": 0, "scene": scene, "channel_signal": "BF",
             "channel_target": "DAPI", "channel_mask": "nuclei"}
            for well, scene in (("B02", "B2"), ("B03", 0))]
    man = _manifest(tmp_path / "m.csv", rows)
    got, _ = read_manifest(man)
    assert [r.voxel_size for r in got] == [pytest.approx((0.9, 0.3, 0.3)),
                                           pytest.approx((1.2, 0.4, 0.4))]
    res = _ingest_cli(man, tmp_path / "store")
    assert res.returncode == 0, res.stderr
    store = Store(tmp_path / "store")
    for well, scene, voxel in (("B02", "B2", (0.9, 0.3, 0.3)), ("B03", "A1", (1.2, 0.4, 0.4))):
        key = FieldKey("P", well, 0)
        ref = data[scene]
        assert store.voxel_size(key) == pytest.approx(voxel)
        np.testing.assert_array_equal(store.read(key, "signal"), ref[0])
        np.testing.assert_array_equal(store.read(key, "target"), ref[1])
        np.testing.assert_array_equal(store.read_named(key, "labels:gt"), ref[2])
        # bioio reads the same scene (its scene ids are the OME Image IDs)
        idx = "Image:1" if scene == "B2" else "Image:0"
        for ch, c in (("BF", 0), ("DAPI", 1)):
            arr, vox = read_image(path, ch, scene=idx, reader="bioio")
            np.testing.assert_array_equal(arr, ref[c])
            assert vox == pytest.approx(voxel)
    assert store.field_meta(FieldKey("P", "B02", 0))["source"]["scene"] == "B2"

    # another scene of the same file, same voxel size and channels, is other content:
    # that field is re-ingested, the other kept
    rows[1]["scene"] = "C3"
    _manifest(man, rows)
    res = _ingest_cli(man, tmp_path / "store")
    assert res.returncode == 0, res.stderr
    assert "1 field(s) written, 1 already done" in res.stdout, res.stdout
    np.testing.assert_array_equal(store.read(FieldKey("P", "B03", 0), "target"), data["C3"][1])


def test_scene_errors_name_line_file_and_scenes(tmp_path):
    path = tmp_path / "plate.ome.tif"
    _write_scenes(path)
    row = {"path_signal": path.name, "path_target": path.name, "channel_signal": "BF",
           "channel_target": "DAPI"}
    for scene, words in (("C9", "no scene named 'C9'"), ("3", "scene 3 out of range"),
                         ("-1", "must be an index")):
        with pytest.raises(ManifestError) as err:
            read_manifest(_manifest(tmp_path / "m.csv", [{**row, "scene": scene}]))
        msg = str(err.value)
        assert "line 2" in msg and words in msg, msg
        if scene != "-1":
            assert str(path) in msg and "0 'Image:0 / A1', 1 'Image:1 / B2'" in msg, msg


def test_3d_ome_tiff_voxel_size_from_metadata_both_readers(tmp_path):
    """A single-series ZYX OME-TIFF (no channel axis): voxel size with PhysicalSizeZ in
    the manifest row, from tifffile and bioio alike; a length unit other than um is
    converted, a non-length unit gives no voxel size (then the manifest asks for one)."""
    rng = np.random.default_rng(3)
    s, t, _ = blob_field((5, 32, 36), 3, rng, radius=(2, 4, 4))
    meta = {"axes": "ZYX", "PhysicalSizeZ": 0.0008, "PhysicalSizeZUnit": "mm",
            "PhysicalSizeY": 210.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 0.21}
    for name, arr in (("s.ome.tif", s), ("t.ome.tif", t)):
        tifffile.imwrite(tmp_path / name, arr, ome=True, metadata=meta)
    for reader in ("tifffile", "bioio"):
        head = read_header(tmp_path / "s.ome.tif", reader=reader)
        assert head.voxel_size == pytest.approx((0.8, 0.21, 0.21)), reader
        got, _ = read_image(tmp_path / "s.ome.tif", reader=reader)
        np.testing.assert_array_equal(got, s)
    rows, _ = read_manifest(_manifest(tmp_path / "m.csv", [
        {"path_signal": "s.ome.tif", "path_target": "t.ome.tif"}]))
    assert rows[0].shape == (5, 32, 36) and rows[0].voxel_size == pytest.approx((0.8, 0.21, 0.21))
    for name, arr in (("px_s.ome.tif", s), ("px_t.ome.tif", t)):
        tifffile.imwrite(tmp_path / name, arr, ome=True,
                         metadata={**meta, "PhysicalSizeZUnit": "pixel"})
    assert read_header(tmp_path / "px_s.ome.tif").voxel_size[0] is None
    with pytest.raises(ManifestError, match="no voxel size"):
        read_manifest(_manifest(tmp_path / "m2.csv", [
            {"path_signal": "px_s.ome.tif", "path_target": "px_t.ome.tif"}]))


def test_czi_ingests_through_bioio(tmp_path):
    """A CZI (written by pylibCZIrw, read by bioio-czi): channels by name, voxel size
    from the CZI scaling (metres there, um here), the stored field equals the file's."""
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    pytest.importorskip("bioio_czi")
    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    arr = _field((16, 32, 40), 5)  # C (BF, DAPI, nuclei), Z, Y, X
    path = tmp_path / "field.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for c in range(3):
            for z in range(arr.shape[1]):
                w.write(arr[c, z], plane={"C": c, "Z": z})
        w.write_metadata(document_name="f", channel_names={0: "BF", 1: "DAPI", 2: "nuclei"},
                         scale_x=0.25e-6, scale_y=0.25e-6, scale_z=0.7e-6)
    head = read_header(path)
    assert head.reader == "bioio_czi" and head.channel_names == ("BF", "DAPI", "nuclei")
    man = _manifest(tmp_path / "m.csv", [{
        "path_signal": path.name, "path_target": path.name, "path_mask": path.name,
        "channel_signal": "BF", "channel_target": "DAPI", "channel_mask": "nuclei"}])
    (row,), _ = read_manifest(man)
    assert row.voxel_size == pytest.approx((0.7, 0.25, 0.25)) and row.shape == (16, 32, 40)
    res = ingest(man, tmp_path / "store", IngestSettings(
        isotropic_um=None, chunks=(4, 32, 32), patch=(4, 16, 16), patch_stride=(2, 8, 8)),
        workers=1)
    assert res["done"] == 1
    store = Store(tmp_path / "store")
    (key,) = store.fields()
    np.testing.assert_array_equal(store.read(key, "signal"), arr[0])
    np.testing.assert_array_equal(store.read(key, "target"), arr[1])
    np.testing.assert_array_equal(store.read_named(key, "labels:gt"), arr[2])
    assert store.voxel_size(key) == pytest.approx((0.7, 0.25, 0.25))


def test_a_format_without_reader_names_file_line_and_what_to_install(tmp_path):
    """A suffix no installed bioio plugin reads: the manifest names line and file and
    says what to install; the message for a known format names its plugin."""
    (tmp_path / "scan.xyz").write_bytes(b"not an image")
    tifffile.imwrite(tmp_path / "t.tif", np.ones((8, 8), np.uint16))
    with pytest.raises(ManifestError) as err:
        read_manifest(_manifest(tmp_path / "m.csv", [
            {"path_signal": "scan.xyz", "path_target": "t.tif", "voxel_y": 1, "voxel_x": 1}]))
    msg = str(err.value)
    assert f"line 2: path_signal {tmp_path / 'scan.xyz'}: no installed reader for .xyz" in msg
    assert "pip install 'spotlight-scale[microscopy]'" in msg
    with pytest.raises(ImageError, match="scan.xyz: no installed reader"):
        read_image(tmp_path / "scan.xyz")
    text = missing_reader_message(tmp_path / "a.nd2", "bioio is not installed")
    assert text.startswith(f"{tmp_path / 'a.nd2'}: no installed reader for .nd2 files "
                           "(bioio is not installed)")
    assert "spotlight-scale[microscopy]" in text and "bioio-nd2" in text


def test_tiff_reads_without_importing_bioio(tmp_path):
    """TIFF stays on tifffile: reading a TIFF (by channel name too) never imports bioio."""
    path = tmp_path / "two.ome.tif"
    data = _write_scenes(path)
    code = ("import sys, numpy as np\n"
            "from spotlight_scale.io.images import read_image\n"
            f"a, v = read_image({str(path)!r}, 'DAPI', scene='B2')\n"
            "assert 'bioio' not in sys.modules, 'bioio imported'\n"
            "np.save(sys.argv[1], a)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.npy")], check=True,
                   timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), data["B2"][1])
