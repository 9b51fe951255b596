"""Ingest: manifest validation, NGFF validity, statistics, skip/resume, and a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import blob_field
from spotlight_scale.core.stats import channel_statistics
from spotlight_scale.io.manifest import ManifestError, read_manifest
from spotlight_scale.io.store import Store
from spotlight_scale.io.tiff import write_imagej
from spotlight_scale.pipelines.ingest import IngestSettings, ingest

VOXEL = (0.58, 0.29, 0.29)
SETTINGS = IngestSettings(chunks=(8, 32, 32), patch=(8, 16, 16), patch_stride=(4, 8, 8))


def make_raw(root: Path, n=4, shape=(8, 40, 44), seed=0, header=None, extra_rows=()):
    """Write ``n`` fields of TIFFs + manifest.csv (voxel size from ImageJ metadata)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = [header or "path_signal,path_target,path_mask,plate,well,field,split"]
    wells = ["B02", "B02", "B03", "C03", "C04", "C05"]
    splits = ["train", "train", "val", "test", "train", "train"]
    for i in range(n):
        s, t, m = blob_field(shape, 4, rng, radius=(2, 5, 5))
        for tag, a in (("s", s), ("t", t), ("m", m)):
            write_imagej(root / f"{tag}{i}.tif", a, VOXEL)
        lines.append(f"s{i}.tif,t{i}.tif,m{i}.tif,P1,{wells[i]},{i % 2},{splits[i]}")
    lines.extend(extra_rows)
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_manifest_errors_name_line_and_file(tmp_path):
    man = make_raw(tmp_path, n=2)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 this is not a tiff")
    write_imagej(tmp_path / "small.tif", np.zeros((8, 40, 40), np.uint16), VOXEL)
    write_imagej(tmp_path / "flat.tif", np.zeros((1, 40, 44), np.uint16)[0:1], VOXEL)
    rows = [
        "missing.tif,t0.tif,,P1,D02,0,train",      # 4: missing file
        "bad.tif,t0.tif,,P1,D03,0,train",          # 5: corrupt TIFF
        "s0.tif,small.tif,,P1,D04,0,train",        # 6: shape mismatch
        "s0.tif,t0.tif,,P1,B02,0,train",           # 7: duplicate key of line 2
        "s0.tif,t0.tif,,P1,3B,0,train",            # 8: bad well
        "s0.tif,t0.tif,,P1,D05,0,holdout",         # 9: unknown split
    ]
    with open(man, "a") as fh:
        fh.write("\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(man)
    text = str(err.value)
    for line, words in [(4, "missing.tif"), (5, "bad.tif"), (6, "small.tif"), (7, "duplicate"),
                        (8, "3B"), (9, "holdout")]:
        assert f"line {line}" in text and words in text, (line, text)
    good, failures = read_manifest(man, on_error="skip")
    assert [r.line for r in good] == [2, 3] and len(failures) == 6


def test_manifest_columns_and_voxel_size(tmp_path):
    man = make_raw(tmp_path, n=1, header="path_signal,path_target,path_mask,plate,well,field,split")
    text = man.read_text().replace("split", "split,colour", 1)
    (tmp_path / "m2.csv").write_text(text)
    with pytest.raises(ManifestError, match="unknown column 'colour'"):
        read_manifest(tmp_path / "m2.csv")
    (tmp_path / "m3.csv").write_text("path_target\nt0.tif\n")
    with pytest.raises(ManifestError, match="missing required column 'path_signal'"):
        read_manifest(tmp_path / "m3.csv")
    import tifffile

    tifffile.imwrite(tmp_path / "plain_s.tif", np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "plain_t.tif", np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    (tmp_path / "m4.csv").write_text("path_signal,path_target\nplain_s.tif,plain_t.tif\n")
    with pytest.raises(ManifestError, match="no voxel size"):
        read_manifest(tmp_path / "m4.csv")
    rows, _ = read_manifest(tmp_path / "m4.csv", default_voxel_size=(1, 0.5, 0.5))
    assert rows[0].voxel_size == (1, 0.5, 0.5) and rows[0].key.id == "m4/B02/0"
    rows, _ = read_manifest(man)
    assert rows[0].voxel_size == pytest.approx(VOXEL)  # from ImageJ metadata


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ing")
    man = make_raw(root / "raw")
    res = ingest(man, root / "store", SETTINGS, workers=2)
    return man, root / "store", res


def test_ingest_store_is_valid_ngff_with_stats(ingested):
    import ome_zarr_models.v05 as v05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from spotlight_scale.core.resample import isotropic_shape

    man, root, res = ingested
    assert res["done"] == 4 and res["failed"] == 0
    store = Store(root)
    plate = zarr.open_group(str(store.plate_path("P1")), mode="r")
    v05.HCS.from_zarr(plate)
    keys = store.fields()
    assert [k.id for k in keys] == ["P1/B02/0", "P1/B02/1", "P1/B03/0", "P1/C03/1"]
    assert [k.id for k in store.fields("val")] == ["P1/B03/0"]
    shape = isotropic_shape((8, 40, 44), VOXEL, 0.29)
    for key in keys:
        v05.Image.from_zarr(plate[key.path])
        v05.Labels.from_zarr(plate[key.path]["labels"])
        target = store.read(key, "target")
        assert target.shape == shape and store.voxel_size(key) == (0.29,) * 3
        assert store.stats(key, "target") == channel_statistics(target, block_shape=(8, 32, 32))
        idx = store.patch_index(key)
        fg = target >= store.stats(key, "target")["otsu"]
        for (z, y, x) in idx.origins:
            assert fg[z:z + 8, y:y + 16, x:x + 16].mean() >= 0.001
    nodes = list(Reader(parse_url(str(store.field_url(keys[0]))))())
    assert nodes[0].data[0].shape == (2, *shape)
    table = store.fields_table()
    assert len(table) == 4 and set(table["split"]) == {"train", "val", "test"}
    assert table["target_otsu"].tolist() == [store.stats(k, "target")["otsu"] for k in keys]


def test_rerun_skips_done_fields(ingested):
    man, root, _ = ingested
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "_done" in p.parts}
    res = ingest(man, root, SETTINGS, workers=1)
    assert res["done"] == 0 and res["skipped"] == 4
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "_done" in p.parts}
    assert before == after
    with pytest.raises(ValueError, match="patch"):
        ingest(man, root, IngestSettings(chunks=(8, 32, 32), patch=(8, 8, 8)), workers=1)


def test_ngff_04_and_skip_mode_keeps_existing(tmp_path):
    import ome_zarr_models.v04 as v04

    man = make_raw(tmp_path / "raw", n=2)
    settings = IngestSettings(chunks=(8, 32, 32), patch=(8, 16, 16), ngff="0.4")
    ingest(man, tmp_path / "store", settings, workers=1)
    store = Store(tmp_path / "store")
    v04.HCS.from_zarr(zarr.open_group(str(store.plate_path("P1")), mode="r"))
    before = store.read(store.fields()[0], "target")
    # a later run with a broken row: fail mode writes nothing new; skip mode adds the rest
    (tmp_path / "raw" / "bad.tif").write_bytes(b"II*\x00 junk")
    with open(man, "a") as fh:
        fh.write("bad.tif,t0.tif,,P1,D02,0,train\ns1.tif,t1.tif,,P1,D03,0,test\n")
    with pytest.raises(ManifestError, match="line 4"):
        ingest(man, tmp_path / "store", settings, workers=1)
    assert len(Store(tmp_path / "store").fields()) == 2
    res = ingest(man, tmp_path / "store", settings, workers=1, on_error="skip")
    assert res["failed"] == 1 and res["done"] == 1
    store = Store(tmp_path / "store")
    assert len(store.fields()) == 3
    np.testing.assert_array_equal(store.read(store.fields()[0], "target"), before)
    from spotlight_scale.io.tables import read_table

    fails = read_table(store.table_path("failures"), "failures")
    assert fails["line"].tolist() == [4] and "bad.tif" in fails["file"][0]


def _snapshot(root: Path):
    store = Store(root)
    out = {}
    for key in store.fields():
        meta = store.field_meta(key)
        out[key.id] = (store.read(key, "signal"), store.read(key, "target"),
                       store.read_named(key, "labels:gt"), meta["stats"],
                       store.patch_index(key).origins)
    return out


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path):
    man = make_raw(tmp_path / "raw", n=5, shape=(10, 64, 64))
    cmd = [sys.executable, "-m", "spotlight_scale", "ingest", str(man), str(tmp_path / "killed"),
           "--workers", "1", "--chunks", "8,32,32", "--patch", "8,16,16",
           "--patch-stride", "4,8,8"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker_dir = tmp_path / "killed" / "_done" / "ingest"
    deadline = time.time() + 120
    while time.time() < deadline and not list(marker_dir.rglob("*.json")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = sorted(p for p in marker_dir.rglob("*.json"))
    assert 1 <= len(done_at_kill) < 5, "the kill should land mid-run"
    store = Store(tmp_path / "killed")
    for key in store.fields():  # every field reported done is complete and readable
        assert store.read(key, "target").shape == (20, 64, 64)
        store.patch_index(key)
    ingest(man, tmp_path / "killed", IngestSettings(chunks=(8, 32, 32), patch=(8, 16, 16),
                                                    patch_stride=(4, 8, 8)), workers=2)
    ingest(man, tmp_path / "clean", IngestSettings(chunks=(8, 32, 32), patch=(8, 16, 16),
                                                   patch_stride=(4, 8, 8)), workers=2)
    a, b = _snapshot(tmp_path / "killed"), _snapshot(tmp_path / "clean")
    assert sorted(a) == sorted(b) and len(a) == 5
    for k in a:
        for x, y in zip(a[k], b[k]):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y)
            else:
                assert x == y
    assert Store(tmp_path / "killed").fields_table().drop(columns="path").equals(
        Store(tmp_path / "clean").fields_table().drop(columns="path"))


def test_cluster_runs_one_task_per_field(tmp_path):
    """Workers write arrays themselves: no dask graph of image or label data goes back
    through the scheduler (ome-zarr-py's writers, called in a worker, did that)."""
    from distributed import Client, LocalCluster, get_task_stream

    man = make_raw(tmp_path / "raw")
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        with get_task_stream(client) as ts:
            res = ingest(man, tmp_path / "store", SETTINGS, cluster=lc.scheduler_address,
                         progress_stream=None)
    keys = [t["key"] for t in ts.data]
    assert res["done"] == 4 and len(keys) == 4
    assert all(str(k).startswith("ingest-") for k in keys), keys
    store = Store(tmp_path / "store")
    assert store.labels_names(store.fields()[0]) == ["gt"]
