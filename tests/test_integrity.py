"""Store integrity (issue 14): file modes, the store lock, reads that cannot lie, content
fingerprints, and per-field failures. Each test reproduces one finding of the issue."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest


def error_line(output: str) -> str:
    """The one ``Error:`` line of a failed command's output (progress lines may precede it)."""
    lines = [ln for ln in output.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_follow_the_umask(make_store, make_model_file, tmp_path, umask):
    """Finding 7: spotlight.json, markers, tables and model.pt were 0600 whatever the umask
    (tempfile.mkstemp), zarr chunks 0644: a colleague could not read a shared store."""
    old = os.umask(umask)
    try:
        store = make_store(fields=(("P1", "B03", 0, "train"),), root=tmp_path / f"s{umask:o}")
        make_model_file(store, tmp_path / f"model{umask:o}.pt")
    finally:
        os.umask(old)
    files = [p for p in store.root.rglob("*") if p.is_file()] + [tmp_path / f"model{umask:o}.pt"]
    kinds = {p.name for p in files}
    assert {"spotlight.json", "0.json", "fields.parquet", "zarr.json"} <= kinds
    want = 0o666 & ~umask
    bad = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
           if stat.S_IMODE(p.stat().st_mode) != want}
    assert not bad, f"expected {oct(want)}: {bad}"
    assert not [p for p in store.root.rglob("*.tmp")]


# --------------------------------------------------------------------------- damaged chunks
def _damage(path, how):
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))  # zstd magic, garbage frame


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_damaged_chunk_is_named_and_skippable(make_store, make_model_file, tmp_path, cluster, how):
    """Findings 2 and 3: a missing chunk read as zeros and the field was marked done; a corrupt
    chunk stopped the stage without naming the field (segment: "Zstd decompression error",
    profile: a traceback), and predict/segment/profile had no --on-error skip."""
    from click.testing import CliRunner

    from spotlight_scale.cli import cli
    from spotlight_scale.io.chunks import ChunkError
    from spotlight_scale.io.store import FieldKey
    from spotlight_scale.io.tables import read_table
    from spotlight_scale.pipelines.fieldrun import FieldError
    from spotlight_scale.pipelines.predict import predict

    store = make_store()
    bad = FieldKey("P1", "C04", 1)
    chunk = store.field_url(bad) / "s0" / "c" / "1" / "0" / "0" / "0"  # target, first chunk
    assert chunk.is_file()
    _damage(chunk, how)
    with pytest.raises(ChunkError, match=f"field {bad}.*{chunk}"):
        store.read(bad, "target")
    store.read(bad, "signal")  # the other channel's chunks are intact

    # segment: fail names the field and the chunk; skip does the rest and lists the failure
    runner = CliRunner()
    args = ["segment", str(store.root), "--image", "target", "--name", "seg",
            "--cluster", cluster]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1
    line = error_line(r.output)
    assert f"field {bad}" in line and str(chunk) in line
    assert ("is missing" if how == "missing" else "cannot be read") in line
    r = runner.invoke(cli, args + ["--on-error", "skip"])
    assert r.exit_code == 0, r.output
    assert "1 failed" in r.output
    done = store.done_fields("segment", "seg")
    assert sorted(done) == sorted(k for k in store.fields() if k != bad)
    fails = read_table(store.table_path("failures_segment_seg"), "field_failures")
    assert fails[["plate", "well", "field"]].values.tolist() == [["P1", "C04", 1]]
    assert str(chunk) in fails["error"][0]

    # profile of the ground truth reads the target too
    out = tmp_path / "prof"
    r = runner.invoke(cli, ["profile", str(store.root), "--labels", "gt", "--out", str(out),
                            "--cluster", cluster])
    assert r.exit_code == 1 and f"field {bad}" in error_line(r.output)
    r = runner.invoke(cli, ["profile", str(store.root), "--labels", "gt", "--out", str(out),
                            "--cluster", cluster, "--on-error", "skip"])
    assert r.exit_code == 0 and "1 failed" in r.output, r.output
    assert read_table(out / "_failures.parquet", "field_failures")["field"].tolist() == [1]

    # predict reads the signal: damage it too
    sig = store.field_url(bad) / "s0" / "c" / "0" / "1" / "0" / "0"
    _damage(sig, how)
    model = make_model_file(store, tmp_path / "model.pt")
    with pytest.raises(FieldError, match=f"field {bad}"):
        predict(store.root, model, "p", split="all", tile=(8, 32, 32), overlap=(4, 8, 8),
                cluster=cluster, progress_stream=None)
    assert not store.is_done("predict", bad, name="p")
    res = predict(store.root, model, "p", split="all", tile=(8, 32, 32), overlap=(4, 8, 8),
                  cluster=cluster, progress_stream=None, on_error="skip")
    assert res["failed"] == 1 and not store.is_done("predict", bad, name="p")
    assert sorted(store.done_fields("predict", "p")) == sorted(k for k in store.fields() if k != bad)
    assert str(sig) in read_table(store.table_path("failures_predict_p"), "field_failures")["error"][0]


# --------------------------------------------------------------------------- identity by content
def _segment(store, cluster, name="seg"):
    from spotlight_scale.pipelines.segment import segment

    return segment(store.root, image="target", name=name, cluster=cluster, progress_stream=None)


def test_reingest_by_content_not_position(tmp_path, make_model_file, cluster):
    """Finding 1: reordering the manifest, prepending a row or reaching the same files by
    another path re-ingested every field, deleting its labels while the segment markers
    stayed ("already done", then "run segment"). Now identity is (plate, well, field) +
    the files' content; a changed file invalidates exactly that field's derived work."""
    import shutil

    from test_ingest import SETTINGS, make_raw

    from spotlight_scale.io.store import FieldKey, Store
    from spotlight_scale.pipelines.ingest import ingest
    from spotlight_scale.pipelines.predict import predict
    from spotlight_scale.pipelines.profile import profile

    man = make_raw(tmp_path / "raw", n=3)
    run = lambda m: ingest(m, tmp_path / "store", SETTINGS, cluster=cluster, progress_stream=None)
    assert run(man)["done"] == 3
    store = Store(tmp_path / "store")
    keys = store.fields()
    assert _segment(store, cluster)["done"] == 3
    model = make_model_file(store, tmp_path / "model.pt")
    predict(store.root, model, "p", split="all", tile=(16, 32, 32), overlap=(4, 8, 8),
            cluster=cluster, progress_stream=None)
    prof = tmp_path / "prof"
    assert profile(store.root, labels="seg", out=prof, cluster=cluster,
                   progress_stream=None)["done"] == 3
    labels = {k: store.read_named(k, "labels:seg") for k in keys}

    header, *lines = man.read_text().splitlines()
    (tmp_path / "raw" / "reordered.csv").write_text("\n".join([header, *lines[::-1]]) + "\n")
    # prepend a new field, and reach the old files through another folder (a symlink)
    (tmp_path / "alias").symlink_to(tmp_path / "raw")
    moved = [ln.replace("s0.tif", str(tmp_path / "alias" / "s0.tif"))
             .replace("t0.tif", str(tmp_path / "alias" / "t0.tif")) for ln in lines]
    new_row = "s0.tif,t0.tif,m0.tif,P1,D05,0,train"
    (tmp_path / "raw" / "prepended.csv").write_text("\n".join([header, new_row, *moved]) + "\n")
    for name, expect_done in (("reordered.csv", 0), ("prepended.csv", 1)):
        res = run(tmp_path / "raw" / name)
        assert (res["done"], res["skipped"]) == (expect_done, 3), (name, res)
        assert res["changed"] == {}
    # a copy of the files elsewhere (new path, new mtime, same bytes) is still the same field
    shutil.copytree(tmp_path / "raw", tmp_path / "copy", symlinks=True)
    assert run(tmp_path / "copy" / "manifest.csv")["skipped"] == 3
    for k in keys:
        assert store.is_done("segment", k, name="seg")
        np.testing.assert_array_equal(store.read_named(k, "labels:seg"), labels[k])
    res = _segment(store, cluster)
    assert (res["done"], res["skipped"]) == (1, 3)  # only the new field D05

    # change one field's target: that field alone is re-ingested, its derived work removed
    from test_ingest import VOXEL

    from conftest import blob_field
    from spotlight_scale.io.tiff import write_imagej

    changed = FieldKey("P1", "B02", 1)  # row 2 of make_raw: t1.tif
    s, t, m = blob_field((8, 40, 44), 4, np.random.default_rng(99), radius=(2, 5, 5))
    write_imagej(tmp_path / "copy" / "t1.tif", t, VOXEL)
    res = run(tmp_path / "copy" / "manifest.csv")
    assert (res["done"], res["skipped"]) == (1, 2)
    assert res["changed"] == {changed.id: {"segment": ["seg"], "predict": ["p"]}}
    assert not store.is_done("segment", changed, name="seg")
    assert not store.is_done("predict", changed, name="p")
    assert not (store.root / "predictions" / "p" / "P1.zarr" / changed.path).exists()
    assert "seg" not in store.labels_names(changed)
    for k in keys:
        if k != changed:
            assert store.is_done("segment", k, name="seg") and store.is_done("predict", k, name="p")
            np.testing.assert_array_equal(store.read_named(k, "labels:seg"), labels[k])
    res = _segment(store, cluster)
    assert (res["done"], res["skipped"]) == (1, 3)
    # the profiles (outside the store) notice through the input stamps: only that field
    res = profile(store.root, labels="seg", out=prof, cluster=cluster, progress_stream=None)
    assert (res["done"], res["skipped"]) == (2, 2)  # the changed field and the new D05


def test_ingest_repairs_a_field_marked_done_without_arrays(tmp_path, cluster):
    """Finding 4 (aftermath): a field left marked done with no arrays made every later ingest
    and train fail with "re-run ingest" until --overwrite. Ingest now redoes such a field."""
    import shutil

    from test_ingest import SETTINGS, make_raw

    from spotlight_scale.io.store import Store, StoreError
    from spotlight_scale.pipelines.ingest import ingest

    man = make_raw(tmp_path / "raw", n=2)
    ingest(man, tmp_path / "store", SETTINGS, cluster=cluster, progress_stream=None)
    store = Store(tmp_path / "store")
    key = store.fields()[0]
    before = store.read(key, "target")
    shutil.rmtree(store.field_url(key))
    with pytest.raises(StoreError, match=str(key)):
        store.read(key, "target")
    res = ingest(man, tmp_path / "store", SETTINGS, cluster=cluster, progress_stream=None)
    assert (res["done"], res["skipped"]) == (1, 1)
    np.testing.assert_array_equal(store.read(key, "target"), before)


# --------------------------------------------------------------------------- the store lock
def test_lock_names_its_owner_and_detects_stale_locks(tmp_path):
    """Finding 4: no lock on a store. A second writer now fails at once naming the first."""
    import json
    import socket
    import subprocess
    import sys

    from spotlight_scale.io.lock import LOCK_NAME, LockError, exclusive

    with exclusive(tmp_path, "ingest"):
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(LockError, match=rf"locked by ingest .*pid {os.getpid()}"):
            with exclusive(tmp_path, "segment seg"):
                pass
    assert not (tmp_path / LOCK_NAME).exists()  # released
    with pytest.raises(RuntimeError):
        with exclusive(tmp_path, "ingest"):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()  # released on error too

    # a lock left by a killed process on this host is stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"command": "ingest", "host": socket.gethostname(),
                                "pid": dead.pid, "since": "then"}))
    with exclusive(tmp_path, "predict p"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # another host: held while its heartbeat is fresh, stale once it stops
    lock.write_text(json.dumps({"command": "ingest", "host": "elsewhere", "pid": 1}))
    with pytest.raises(LockError, match="host elsewhere"):
        with exclusive(tmp_path, "segment s", stale_after=60):
            pass
    old = lock.stat().st_mtime - 3600
    os.utime(lock, (old, old))
    with exclusive(tmp_path, "segment s", stale_after=60):
        pass


def test_heartbeat_keeps_a_long_lock_fresh(tmp_path):
    import time

    from spotlight_scale.io.lock import LOCK_NAME, exclusive

    with exclusive(tmp_path, "ingest", heartbeat=0.05):
        lock = tmp_path / LOCK_NAME
        os.utime(lock, (0, 0))
        time.sleep(0.3)
        assert time.time() - lock.stat().st_mtime < 5


def test_concurrent_ingest_second_writer_fails_at_once(tmp_path):
    """Finding 4: two concurrent ingests wrote every field twice and one crashed. Now the
    second fails at once with a clear message; the first completes; readers are not blocked."""
    import subprocess
    import sys
    import time

    from click.testing import CliRunner
    from test_ingest import make_raw

    from spotlight_scale.cli import cli
    from spotlight_scale.io.lock import LOCK_NAME
    from spotlight_scale.io.store import Store

    man = make_raw(tmp_path / "raw", n=4, shape=(10, 64, 64))
    store_dir = tmp_path / "store"
    args = ["ingest", str(man), str(store_dir), "--workers", "1", "--chunks", "8,32,32",
            "--patch", "8,16,16", "--patch-stride", "4,8,8"]
    first = subprocess.Popen([sys.executable, "-m", "spotlight_scale", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((store_dir / "_done").rglob("*.json")):
        time.sleep(0.05)
    assert (store_dir / LOCK_NAME).exists()
    Store(store_dir).fields()  # a reader is not blocked
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, args)
    assert time.perf_counter() - t0 < 10 and r.exit_code == 1
    line = error_line(r.output)
    assert "locked by ingest" in line and f"pid {first.pid}" in line and "Wait" in line
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    store = Store(store_dir)
    assert len(store.fields()) == 4 and not (store_dir / LOCK_NAME).exists()
    for key in store.fields():
        assert store.read(key, "target").shape == (20, 64, 64)


def test_evaluate_names_the_field_with_a_damaged_chunk(make_store, make_model_file, tmp_path,
                                                       cluster):
    """Every stage names the field that failed: evaluate too."""
    from spotlight_scale.io.store import FieldKey
    from spotlight_scale.pipelines.evaluate import evaluate
    from spotlight_scale.pipelines.fieldrun import FieldError
    from spotlight_scale.pipelines.predict import predict

    store = make_store()
    model = make_model_file(store, tmp_path / "model.pt")
    predict(store.root, model, "p", split="test", tile=(16, 32, 32), overlap=(4, 8, 8),
            cluster=cluster, progress_stream=None)
    bad = FieldKey("P1", "C04", 1)  # the test field
    (store.field_url(bad) / "s0" / "c" / "1" / "0" / "1" / "1").unlink()
    with pytest.raises(FieldError, match=f"evaluate failed on field {bad}: ChunkError: .*missing"):
        evaluate(store, ["p"], out=tmp_path / "report", split="test", cluster=cluster,
                 report=False)


# --------------------------------------------------------------------------- issue 23: repair
def _truncate(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep is not None else len(data) // 2])


def test_plain_ingest_rerun_repairs_exactly_the_damaged_fields(tmp_path, cluster):
    """Issue 23, 3: "re-run ingest (it redoes damaged fields)" was printed for a missing or
    truncated chunk, a deleted s0 array and a missing patch index, but a re-run answered
    "0 field(s) written, 6 already done" and the field stayed broken. A re-run now checks
    each done field (files and sizes recorded in its marker, metadata, patch index) and
    redoes exactly the damaged ones, identical to before; segment then runs."""
    import shutil

    from click.testing import CliRunner
    from test_ingest import make_raw

    from spotlight_scale.cli import cli
    from spotlight_scale.io.store import Store

    man = make_raw(tmp_path / "raw", n=6)
    root = tmp_path / "store"
    args = ["ingest", str(man), str(root), "--chunks", "8,32,32", "--patch", "8,16,16",
            "--patch-stride", "4,8,8", "--cluster", cluster]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    store = Store(root)
    keys = store.fields()
    before = {k: (store.read(k, "signal"), store.read(k, "target"), store.labels(k, "gt")[...],
                  store.patch_index(k).origins) for k in keys}
    seg = ["segment", str(root), "--image", "target", "--name", "seg", "--cluster", cluster]
    assert runner.invoke(cli, seg).exit_code == 0

    chunk = lambda k, *c: store.field_url(k) / "s0" / "c" / "/".join(map(str, c))
    damage = {
        keys[0]: lambda k: chunk(k, 1, 0, 0, 0).unlink(),             # a deleted chunk
        keys[1]: lambda k: _truncate(chunk(k, 0, 1, 1, 0)),           # a truncated chunk
        keys[2]: lambda k: shutil.rmtree(store.field_url(k) / "s0"),  # a deleted array
        keys[3]: lambda k: store.patch_index_path(k).unlink(),        # no patch index
        keys[4]: lambda k: _truncate(store.field_url(k) / "zarr.json", 50),  # metadata
    }
    for key, how in damage.items():
        how(key)
    # what each read says is a command that works: this very re-run
    r = runner.invoke(cli, seg + ["--name", "seg2"])
    assert r.exit_code == 1
    line = error_line(r.output)
    assert f"spotlight-scale ingest {man.resolve()} {root} --chunks 8,32,32 --patch 8,16,16 " \
           "--patch-stride 4,8,8` (it redoes damaged fields)" in line, line

    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "5 field(s) written, 1 already done" in r.output
    for key in damage:
        assert f"field {key} was damaged" in r.output
    for k in keys:
        s, t, gt, origins = before[k]
        np.testing.assert_array_equal(store.read(k, "signal"), s)
        np.testing.assert_array_equal(store.read(k, "target"), t)
        np.testing.assert_array_equal(store.labels(k, "gt")[...], gt)
        np.testing.assert_array_equal(store.patch_index(k).origins, origins)
    # the intact field kept its segmentation; the repaired ones are segmented again
    assert store.is_done("segment", keys[5], name="seg")
    r = runner.invoke(cli, seg)
    assert r.exit_code == 0 and "5 field(s)" in r.output and "1 already done" in r.output, r.output
    r = runner.invoke(cli, args)  # and now nothing is damaged
    assert "0 field(s) written, 6 already done" in r.output, r.output


def test_unparsable_metadata_names_the_file_and_is_recovered(tmp_path, cluster):
    """Issue 23, 5: a truncated field zarr.json gave `Error: ... JSONDecodeError: Expecting
    property name ...` naming no file and blocked ingest even with --overwrite; a truncated
    spotlight.json the same. Both now name the file; a plain ingest re-run rebuilds them (the
    store manifest from the fields' markers, keeping the fields), and so does --overwrite."""
    from click.testing import CliRunner
    from test_ingest import make_raw

    from spotlight_scale.cli import cli
    from spotlight_scale.io.store import Store

    man = make_raw(tmp_path / "raw", n=2)
    root = tmp_path / "store"
    args = ["ingest", str(man), str(root), "--chunks", "8,32,32", "--patch", "8,16,16",
            "--patch-stride", "4,8,8", "--cluster", cluster]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    store = Store(root)
    key = store.fields()[0]
    before = store.read(key, "target")
    meta = store.field_url(key) / "zarr.json"
    _truncate(meta, 50)
    seg = ["segment", str(root), "--image", "target", "--name", "seg", "--cluster", cluster]
    r = runner.invoke(cli, seg)
    line = error_line(r.output)
    assert f"{meta}: cannot be parsed (JSONDecodeError" in line and f"field {key}" in line, line
    r = runner.invoke(cli, args + ["--overwrite"])  # --overwrite recovers (it was blocked)
    assert r.exit_code == 0 and "2 field(s) written" in r.output, r.output
    np.testing.assert_array_equal(store.read(key, "target"), before)

    manifest = root / "spotlight.json"
    good = manifest.read_text()
    for recover in ([], ["--overwrite"]):
        _truncate(manifest, 30)
        for cmd in (seg, ["train", str(root), str(tmp_path / "run")]):
            r = runner.invoke(cli, cmd)
            line = error_line(r.output)
            assert f"{manifest}: cannot be parsed" in line and \
                f"spotlight-scale ingest {man.resolve()} {root} --chunks 8,32,32" in line, line
        r = runner.invoke(cli, args + recover)
        assert r.exit_code == 0, r.output
        assert f"{'2' if recover else '0'} field(s) written" in r.output, r.output
        assert json.loads(manifest.read_text())["settings"] == json.loads(good)["settings"]
        np.testing.assert_array_equal(Store(root).read(key, "target"), before)
    assert runner.invoke(cli, seg).exit_code == 0


def test_a_damaged_marker_counts_as_not_done(tmp_path, make_store):
    """A completion marker that does not parse is not "done" (it made every command fail)."""
    store = make_store()
    key = store.fields()[0]
    _truncate(store.marker_path("ingest", key), 20)
    assert key not in store.fields() and store.is_done("ingest", key) is None


# --------------------------------------------------------------------------- issue 23: predict
def test_two_models_racing_into_one_prediction_name_do_not_both_succeed(
        make_store, make_model_file, tmp_path, cluster):
    """Issue 23, 2: `predict --shard 0/2` with one model and `--shard 1/2` with another into a
    new `--name mix`, started at the same time, both exited 0 and the markers alternated
    between the two models. The first to claim the name (predictions/mix/model.json, created
    exclusively) wins; the other is refused, and every marker names the winner's model."""
    import subprocess
    import sys

    from spotlight_scale.models.io import model_sha256
    from spotlight_scale.pipelines.predict import claim_path

    store = make_store()
    models = [make_model_file(store, tmp_path / f"model{i}.pt", seed=i) for i in range(2)]
    shas = [model_sha256(m) for m in models]
    assert shas[0] != shas[1]
    runs = [subprocess.Popen(
        [sys.executable, "-m", "spotlight_scale", "predict", str(store.root), str(models[i]),
         "--name", "mix", "--shard", f"{i}/2", "--split", "all", "--tile", "8,32,32",
         "--overlap", "4,8,8", "--cluster", cluster],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [r.communicate(timeout=300)[0] for r in runs]
    codes = [r.returncode for r in runs]
    assert sorted(codes) == [0, 1], outs
    winner = codes.index(0)
    line = error_line(outs[1 - winner])
    # refused at the claim (or, had the winner finished first, by its markers)
    assert "another model" in line and str(models[winner]) in line, line
    import json as _json

    assert _json.loads(claim_path(store, "mix").read_text())["model_sha256"] == shas[winner]
    markers = store.done_fields("predict", "mix")
    assert markers and {m["model_sha256"] for m in markers.values()} == {shas[winner]}

    # run one after the other: refused too, unless --overwrite (which replaces every field)
    from click.testing import CliRunner

    from spotlight_scale.cli import cli

    args = ["predict", str(store.root), str(models[1 - winner]), "--name", "mix", "--split",
            "all", "--tile", "8,32,32", "--overlap", "4,8,8", "--cluster", cluster]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "another model" in error_line(r.output)
    r = CliRunner().invoke(cli, args + ["--overwrite"])
    assert r.exit_code == 0, r.output
    markers = store.done_fields("predict", "mix")
    assert {m["model_sha256"] for m in markers.values()} == {shas[1 - winner]}
    assert len(markers) == 4


def test_a_field_task_refuses_a_name_taken_over_meanwhile(make_store, make_model_file,
                                                          tmp_path):
    """The claim is checked again by each field task: a run whose name was taken by another
    model (`--overwrite` of a concurrent run) marks nothing done."""
    from spotlight_scale.models.io import model_sha256
    from spotlight_scale.pipelines.predict import (PredictError, claim_prediction,
                                                   predict_field)

    store = make_store()
    a, b = (make_model_file(store, tmp_path / f"m{i}.pt", seed=i) for i in range(2))
    claim_prediction(store, "p", model_sha256(a), a)
    with pytest.raises(ValueError, match="belongs to another model"):
        claim_prediction(store, "p", model_sha256(b), b)
    claim_prediction(store, "p", model_sha256(b), b, overwrite=True)
    key = store.fields()[0]
    with pytest.raises(PredictError, match="no longer belongs to this run's model"):
        predict_field(str(store.root), key, str(a), model_sha256(a), "p", tile=(8, 32, 32),
                      overlap=(4, 8, 8), device="cpu")
    assert not store.is_done("predict", key, name="p")


def test_predict_rerun_redoes_damaged_predictions(make_store, make_model_file, tmp_path,
                                                  cluster):
    """Issue 23, 4: with a truncated prediction chunk or corrupt prediction metadata a re-run
    reported "0 predicted, 6 already done", and the printed fix used the default --split test,
    so a damaged train field stayed unreadable. A re-run now checks each done prediction and
    redoes exactly the damaged ones; the printed fix names the field's split."""
    from click.testing import CliRunner

    from spotlight_scale.cli import cli
    from spotlight_scale.io.store import StoreError

    store = make_store()
    model = make_model_file(store, tmp_path / "model.pt")
    args = ["predict", str(store.root), str(model), "--name", "p", "--split", "all",
            "--tile", "8,32,32", "--overlap", "4,8,8", "--cluster", cluster]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    keys = store.fields()
    before = {k: store.read_named(k, "prediction:p") for k in keys}
    train = [k for k in keys if store.field_meta(k)["split"] == "train"]
    chunk = store.field_url(train[0], "p") / "s0" / "c" / "0" / "0" / "1" / "0"
    _truncate(chunk)
    meta = store.field_url(train[1], "p") / "zarr.json"
    _truncate(meta, 40)
    with pytest.raises(StoreError) as err:
        store.read_named(train[0], "prediction:p")
    fix = f"spotlight-scale predict {store.root} {model} --name p --split train"
    assert str(chunk) in str(err.value) and fix in str(err.value), err.value
    with pytest.raises(StoreError) as err:
        store.read_named(train[1], "prediction:p")
    assert f"{meta}: cannot be parsed" in str(err.value) and fix in str(err.value), err.value

    _truncate(store.plate_path("P1", "p") / "zarr.json", 30)  # HCS metadata, rewritten
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "2 field(s) predicted, 2 already done" in r.output, r.output
    assert f"the prediction of field {train[0]} is damaged" in r.output
    for k in keys:
        np.testing.assert_array_equal(store.read_named(k, "prediction:p"), before[k])
    import ome_zarr_models.v05 as v05
    import zarr

    v05.HCS.from_zarr(zarr.open_group(str(store.plate_path("P1", "p")), mode="r"))
    r = runner.invoke(cli, args)
    assert "0 field(s) predicted, 4 already done" in r.output, r.output


def test_segment_and_profile_reruns_redo_damaged_fields(make_store, tmp_path, cluster):
    """Every stage checks what it marked done before skipping it: segment its labels (files
    and sizes recorded in the marker), profile its Parquet file (size recorded)."""
    from spotlight_scale.io.store import FieldKey
    from spotlight_scale.pipelines.profile import profile

    store = make_store()
    assert _segment(store, cluster)["done"] == 4
    keys = store.fields()
    labels = {k: store.read_named(k, "labels:seg") for k in keys}
    lab_chunk = next(p for p in (store.field_url(keys[1]) / "labels" / "seg" / "s0").rglob("*")
                     if p.is_file() and p.name != "zarr.json")
    _truncate(lab_chunk)
    res = _segment(store, cluster)
    assert (res["done"], res["skipped"]) == (1, 3)
    for k in keys:
        np.testing.assert_array_equal(store.read_named(k, "labels:seg"), labels[k])

    out = tmp_path / "prof"
    assert profile(store.root, labels="seg", out=out, cluster=cluster,
                   progress_stream=None)["done"] == 4
    from spotlight_scale.io import profiles as P

    part = P.part_path(out, FieldKey("P1", "C04", 0))
    _truncate(part)
    res = profile(store.root, labels="seg", out=out, cluster=cluster, progress_stream=None)
    assert (res["done"], res["skipped"]) == (1, 3)
    import pandas as pd

    assert len(pd.read_parquet(part)) > 0


def test_profile_of_labels_being_rewritten_says_so(make_store, tmp_path, cluster):
    """Smaller finding: `profile` during a `segment --overwrite` reported a chunk as "lost"
    that was only being written. Labels whose segment marker is absent (a segment run is
    writing them) are named as such."""
    from spotlight_scale.io.chunks import ChunkError
    from spotlight_scale.io.store import StoreError
    from spotlight_scale.pipelines.profile import _read_labels

    store = make_store()
    _segment(store, cluster)
    key = store.fields()[0]
    # what segment --overwrite does first: the marker goes, then the chunks are rewritten
    store.clear_done("segment", key, name="seg")
    with pytest.raises(StoreError, match="are not complete: a `segment --name seg` is writing"):
        _read_labels(store, key, "seg")
    # a chunk lost under done labels is still lost data
    _segment(store, cluster)
    next(p for p in (store.field_url(key) / "labels" / "seg" / "s0").rglob("*")
         if p.is_file() and p.name != "zarr.json").unlink()
    with pytest.raises(ChunkError, match="is missing"):
        _read_labels(store, key, "seg")


# --------------------------------------------------------------------------- issue 23: output
FOREIGN = r"distributed\.|tornado|asyncio|resource_tracker|Traceback|Warning|Port \d+ is|Aborted"


def _foreign_lines(output: str) -> list[str]:
    """Lines that spotlight-scale did not write (Dask's, multiprocessing's, Python's)."""
    import re

    return [ln for ln in output.splitlines() if re.search(FOREIGN, ln)]


@pytest.fixture
def port_8787_taken():
    """Dask's default dashboard port held by someone else (another user's cluster)."""
    import socket

    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 8787))
        sock.listen()
    except OSError:
        pass  # already taken: just as good
    yield
    sock.close()


def _cli(*args):
    import sys

    return [sys.executable, "-m", "spotlight_scale", *map(str, args)]


@pytest.mark.slow  # two real command runs, each starting its own Dask workers
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_sigterm_says_what_was_kept_and_releases_the_lock(make_store, make_model_file, tmp_path,
                                                          port_8787_taken, how):
    """Smaller findings: SIGTERM of `predict` exited 143 with no message and left the lock;
    users saw Dask's "Port 8787 is already in use" and the resource tracker's "leaked
    semaphore objects". Now: one `Error:` line saying what was kept, the lock released, no
    line that is not ours, and a re-run resumes. SIGTERM goes to the command (as `kill`
    sends it); Ctrl-C to its whole process group (as a terminal sends it), workers
    included, once they run fields."""
    import signal
    import subprocess
    import time

    from spotlight_scale.io.lock import LOCK_NAME

    fields = [("P1", w, f, "train") for w in ("B03", "C04") for f in range(3)]
    store = make_store(fields=fields, shape=(16, 48, 48))
    model = make_model_file(store, tmp_path / "model.pt")
    args = _cli("predict", store.root, model, "--name", "p", "--split", "all", "--tile",
                "8,32,32", "--overlap", "4,8,8", "--workers", "1")
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    deadline = time.time() + 120
    if how == "SIGTERM":
        while time.time() < deadline and not (store.root / LOCK_NAME).exists():
            time.sleep(0.05)
        time.sleep(1.0)  # inside the run: the cluster is starting or fields are predicted
        run.send_signal(signal.SIGTERM)
    else:
        while time.time() < deadline and not store.done_fields("predict", "p"):
            time.sleep(0.02)
        os.killpg(run.pid, signal.SIGINT)
    out, _ = run.communicate(timeout=120)
    code, name = (143, "SIGTERM") if how == "SIGTERM" else (130, "SIGINT")
    assert run.returncode == code, out
    line = error_line(out)
    assert line.startswith(f"Error: interrupted ({name}): what was done is kept"), out
    assert "lock is released" in line and "re-run the same command" in line
    assert not (store.root / LOCK_NAME).exists()
    assert not _foreign_lines(out), out
    done = len(store.done_fields("predict", "p"))
    assert done < len(fields)
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(fields) - done} field(s) predicted, {done} already done" in rerun.stdout
    assert not _foreign_lines(rerun.stdout + rerun.stderr), rerun.stderr


def test_a_failing_stage_prints_only_its_error(make_store, tmp_path, port_8787_taken):
    """Smaller finding: besides the `Error:` line users saw Dask's `Async instruction ...
    ended with CancelledError` (the other fields' tasks, cancelled) and the dashboard port
    warning."""
    import subprocess

    store = make_store()
    (store.field_url(store.fields()[0]) / "s0" / "c" / "1" / "0" / "0" / "0").unlink()
    r = subprocess.run(_cli("segment", store.root, "--image", "target", "--name", "seg",
                            "--workers", "2"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "is missing" in error_line(r.stderr)
    assert not _foreign_lines(r.stdout + r.stderr), r.stderr


def test_evaluate_refuses_a_prediction_of_two_models(make_store, make_model_file, tmp_path,
                                                     cluster):
    """Issue 23, 2 (aftermath): `evaluate --prediction mix` scored a mixture of two models as
    one. A store written before names were claimed may hold one: evaluate refuses it."""
    import shutil

    from spotlight_scale.pipelines.evaluate import evaluate
    from spotlight_scale.pipelines.predict import predict

    store = make_store()
    kw = dict(split="all", tile=(8, 32, 32), overlap=(4, 8, 8), cluster=cluster,
              progress_stream=None)
    a, b = (make_model_file(store, tmp_path / f"m{i}.pt", seed=i) for i in range(2))
    predict(store.root, a, "mix", **kw)
    predict(store.root, b, "other", **kw)
    key = store.fields()[-1]  # the test field: b's prediction and marker, under "mix"
    shutil.rmtree(store.field_url(key, "mix"))
    shutil.copytree(store.field_url(key, "other"), store.field_url(key, "mix"))
    shutil.copy(store.marker_path("predict", key, "other"), store.marker_path("predict", key, "mix"))
    with pytest.raises(ValueError, match=r"prediction 'mix' holds fields of 2 models .*m1\.pt"):
        evaluate(store, ["mix"], out=tmp_path / "report", split="all", cluster=cluster,
                 report=False)


def _stderr_plain_and_quiet(script: str, timeout: float) -> dict[str, str]:
    """stderr of ``python -c script plain`` and ``... quiet`` (the script calls
    ``quiet_children()`` when given ``quiet``), without a PYTHONWARNINGS of the caller's."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return {how: subprocess.run([sys.executable, "-c", script, how], capture_output=True,
                                text=True, env=env, timeout=timeout).stderr
            for how in ("plain", "quiet")}


def test_resource_tracker_warning_is_not_shown(tmp_path):
    """Smaller finding: `resource_tracker: There appear to be N leaked semaphore objects`
    (multiprocessing's tracker, a child process, about semaphores of stopped Dask workers)
    reached the user. The command's entry point filters it for its children."""
    script = ("import multiprocessing as mp, os, sys\n"
              "if sys.argv[1] == 'quiet':\n"
              "    from spotlight_scale.cli import quiet_children; quiet_children()\n"
              "s = mp.get_context('spawn').Semaphore()\n"
              "os._exit(0)\n")
    out = _stderr_plain_and_quiet(script, timeout=60)
    assert "leaked semaphore" in out["plain"]  # the check can see the line
    assert "leaked semaphore" not in out["quiet"], out["quiet"]


def test_damaged_plate_and_well_metadata_are_rebuilt_by_a_plain_rerun(tmp_path, cluster):
    """A truncated plate or well `zarr.json` (HCS metadata, rewritten at the end of every
    ingest) made the next ingest fail with a bare JSONDecodeError. A plain re-run replaces
    them; the plate validates again and its fields are untouched."""
    import ome_zarr_models.v05 as v05
    import zarr
    from click.testing import CliRunner
    from test_ingest import make_raw

    from spotlight_scale.cli import cli
    from spotlight_scale.io.store import Store

    man = make_raw(tmp_path / "raw", n=2)
    root = tmp_path / "store"
    args = ["ingest", str(man), str(root), "--chunks", "8,32,32", "--patch", "8,16,16",
            "--patch-stride", "4,8,8", "--cluster", cluster]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    store = Store(root)
    key = store.fields()[0]
    before = store.read(key, "target")
    plate = store.plate_path("P1")
    for meta in (plate / "zarr.json", plate / "B" / "02" / "zarr.json"):
        _truncate(meta, 30)
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "0 field(s) written, 2 already done" in r.output, r.output
    assert f"{plate / 'zarr.json'} did not parse: replaced" in r.output
    v05.HCS.from_zarr(zarr.open_group(str(plate), mode="r"))
    np.testing.assert_array_equal(store.read(key, "target"), before)


def test_cubic_cpu_notice_is_not_shown(tmp_path):
    """`UserWarning: CuPy or CuCIM is not installed. Falling back to CPU.` (cubic, imported
    by evaluate in the process and in Dask workers) reached the demo's user. The entry point
    filters it there and for its children; the plain run shows the check can see it."""
    script = ("import subprocess, sys\n"
              "if sys.argv[1] == 'quiet':\n"
              "    from spotlight_scale.cli import quiet_children; quiet_children()\n"
              "import cubic.metrics\n"
              "subprocess.run([sys.executable, '-c', 'import cubic.metrics'])\n")
    out = _stderr_plain_and_quiet(script, timeout=120)
    assert out["plain"].count("UserWarning: CuPy or CuCIM is not installed") == 2
    assert "CuPy" not in out["quiet"], out["quiet"]
