"""Bad input (issue 14, findings 5 and 8): each case fails before anything is written, with
a message naming the file, line or channel; the store keeps what it had."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from test_ingest import SETTINGS, VOXEL, make_raw

from spotlight_scale.cli import cli
from spotlight_scale.io.manifest import ManifestError, read_manifest
from spotlight_scale.io.store import Store
from spotlight_scale.io.tiff import write_imagej
from spotlight_scale.pipelines.ingest import ingest


@pytest.fixture(autouse=True)
def _shared_cluster(cluster):
    _CLUSTER["address"] = cluster


_CLUSTER = {}


def _ingest(man, store, **kw):
    return ingest(man, store, SETTINGS, cluster=_CLUSTER["address"], progress_stream=None, **kw)


# --------------------------------------------------------------------------- finding 5: values
@pytest.mark.parametrize("case", ["nan_target", "inf_signal", "zero_target", "constant_signal"])
def test_bad_values_are_refused_naming_file_and_channel(tmp_path, case):
    """An all-zero or constant target was ingested (Otsu 0, every patch "foreground"); one NaN
    or inf crashed ingest with "max must be larger than min" naming the signal file."""
    man = make_raw(tmp_path / "raw", n=2)
    how, role = case.split("_")
    path = tmp_path / "raw" / f"{'t' if role == 'target' else 's'}1.tif"
    vol = np.full((8, 40, 44), 7, np.float32)
    if how in ("nan", "inf"):
        vol = np.random.default_rng(0).random((8, 40, 44)).astype(np.float32)
        vol[3, 4, 5] = math.nan if how == "nan" else math.inf
    elif how == "zero":
        vol[:] = 0
    write_imagej(path, vol, VOXEL)
    with pytest.raises(Exception) as err:
        _ingest(man, tmp_path / "store")
    text = str(err.value)
    assert str(path) in text and role in text and "line 3" in text, text
    assert ("non-finite" if how in ("nan", "inf") else "constant") in text, text
    store = Store(tmp_path / "store")
    assert [k.id for k in store.fields()] == ["P1/B02/0"]  # the good field is kept
    assert not store.field_url(store.fields()[0]).with_name("1").exists()  # nothing written
    res = _ingest(man, tmp_path / "store", on_error="skip")
    assert res["failed"] == 1
    from spotlight_scale.io.tables import read_table

    fails = read_table(store.table_path("failures"), "failures")
    assert fails["line"].tolist() == [3] and str(path) in fails["error"][0]


@pytest.mark.parametrize("case", ["bool_target", "complex_signal", "negative-int16_target",
                                  "huge-float64_signal"])
def test_types_that_are_not_images_are_refused(tmp_path, case):
    """Issue 23, 1: a target saved as bool (20 % True) was stored as all True in both channels
    (Otsu 1.0, foreground fraction 1.0) and marked done. Such types are refused, naming the
    file and the channel, and the failures table names that file (it named the signal)."""
    import tifffile

    from spotlight_scale.io.tables import read_table

    man = make_raw(tmp_path / "raw", n=2)
    how, role = case.split("_")
    path = tmp_path / "raw" / f"{'t' if role == 'target' else 's'}1.tif"
    rng = np.random.default_rng(0)
    vol, words = {
        "bool": (rng.random((8, 40, 44)) < 0.2, "has dtype bool"),
        "complex": ((rng.random((8, 40, 44)) + 1j).astype(np.complex64), "complex"),
        "negative-int16": ((rng.random((8, 40, 44)) * 100 - 50).astype(np.int16),
                           "negative values"),
        "huge-float64": (rng.random((8, 40, 44)) * 1e300, "beyond the float32 range"),
    }[how]
    tifffile.imwrite(path, vol)  # no ImageJ metadata: the voxel size comes from --voxel-size
    with pytest.raises(Exception) as err:
        _ingest(man, tmp_path / "store", voxel_size=VOXEL)
    text = str(err.value)
    assert f"{role} {path}" in text and words in text and "line 3" in text, text
    store = Store(tmp_path / "store")
    assert [k.id for k in store.fields()] == ["P1/B02/0"]  # nothing of line 3 is marked done
    assert _ingest(man, tmp_path / "store", voxel_size=VOXEL, on_error="skip")["failed"] == 1
    fails = read_table(store.table_path("failures"), "failures")
    assert fails["file"].tolist() == [str(path)]


def test_signed_and_float_images_within_range_are_accepted():
    """The rule is about types that cannot be images, not about signed or float types."""
    from spotlight_scale.core.validate import values_problem

    rng = np.random.default_rng(0)
    assert values_problem((rng.random((4, 8, 8)) * 1000).astype(np.int16)) is None
    assert values_problem(rng.random((4, 8, 8)) - 0.5) is None  # float64, negative: fine
    assert values_problem(rng.random((4, 8, 8)).astype(np.float16)) is None


def test_bad_new_input_keeps_the_old_field(tmp_path):
    """A changed file that fails validation leaves the field as it was (nothing lost)."""
    man = make_raw(tmp_path / "raw", n=1)
    _ingest(man, tmp_path / "store")
    store = Store(tmp_path / "store")
    key = store.fields()[0]
    before = store.read(key, "target")
    write_imagej(tmp_path / "raw" / "t0.tif", np.zeros((8, 40, 44), np.uint16), VOXEL)
    with pytest.raises(Exception, match="constant"):
        _ingest(man, tmp_path / "store")
    assert store.fields() == [key]
    np.testing.assert_array_equal(store.read(key, "target"), before)


@pytest.mark.parametrize("voxel, words", [
    ("0,0,0", "outside the plausible range"), ("nan,0.29,0.29", "outside the plausible range"),
    ("1e6,0.29,0.29", "outside the plausible range"), ("0.58,1e-6,0.29", "outside"),
    ("0.29,0.29,0.29", "fewer than 16"),  # 8 slices at 0.29 um: 8 voxels in z
])
def test_implausible_voxel_sizes_are_refused_before_writing(tmp_path, voxel, words):
    """`--voxel-size 0,0,0` or `voxel_y 1e-6` made a done field of shape (1,1,1) or (48,1,128);
    `nan` crashed; `1e6` tried to allocate 9.87 TiB."""
    man = make_raw(tmp_path / "raw", n=1)
    text = man.read_text().splitlines()
    z, y, x = voxel.split(",")
    text = [text[0] + ",voxel_z,voxel_y,voxel_x", text[1] + f",{z},{y},{x}"]
    (tmp_path / "raw" / "v.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(ManifestError) as err:
        _ingest(tmp_path / "raw" / "v.csv", tmp_path / "store")
    assert words in str(err.value) and "line 2" in str(err.value) and "s0.tif" in str(err.value)
    assert not (tmp_path / "store").exists()
    if words == "fewer than 16":
        return
    # a bad --voxel-size is refused even where the TIFF metadata would win over it
    r = CliRunner().invoke(cli, ["ingest", str(man), str(tmp_path / "s2"), "--voxel-size", voxel])
    assert r.exit_code == 1 and r.output.startswith("Error: --voxel-size"), r.output
    assert not (tmp_path / "s2").exists()


# --------------------------------------------------------------------------- finding 8: smaller
def test_excel_bom_manifest_is_read(tmp_path):
    man = make_raw(tmp_path / "raw", n=1)
    (tmp_path / "raw" / "bom.csv").write_bytes(b"\xef\xbb\xbf" + man.read_bytes())
    rows, _ = read_manifest(tmp_path / "raw" / "bom.csv")
    assert rows[0].key.id == "P1/B02/0"


@pytest.mark.parametrize("well, field, words", [("Z99", "0", "rows A-AF and columns 1-48"),
                                                 ("AG01", "0", "rows A-AF"),
                                                 ("B02", "-1", "'field' must be 0 or more")])
def test_impossible_wells_and_fields(tmp_path, well, field, words):
    man = make_raw(tmp_path / "raw", n=1)
    man.write_text(man.read_text().replace("P1,B02,0,", f"P1,{well},{field},"))
    with pytest.raises(ManifestError, match="line 2") as err:
        read_manifest(man)
    assert words in str(err.value)


def test_truncated_tiff_is_named_truncated(tmp_path):
    """A truncated TIFF was reported as "expected a 3D z-stack"."""
    man = make_raw(tmp_path / "raw", n=1)
    data = (tmp_path / "raw" / "t0.tif").read_bytes()
    (tmp_path / "raw" / "t0.tif").write_bytes(data[:len(data) // 2])
    with pytest.raises(ManifestError, match=r"line 2: path_target .*t0.tif: (truncated|damaged)"):
        read_manifest(man)


def test_quick_tiff_check_agrees_with_walking_every_page(tmp_path):
    """open_tiff takes an uncompressed ImageJ stack as whole from its first page and the chain
    of page headers alone: for the file cut at every length around each page header, at the
    data block's ends and through the data, it accepts and refuses exactly as walking every
    page first does (the check it skips), and whatever either accepts reads the original
    values."""
    import tifffile

    from spotlight_scale.io.tiff import _contiguous_imagej_complete, open_tiff, walk_pages

    volume = np.arange(6 * 20 * 24, dtype=np.uint16).reshape(6, 20, 24)
    write_imagej(tmp_path / "whole.tif", volume, VOXEL)
    data = (tmp_path / "whole.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "whole.tif") as tif:
        assert _contiguous_imagej_complete(tif)  # the quick check is what is tested here
        marks = [int(p.offset) for p in tif.pages] + [int(tif.series[0].dataoffset),
                                                      int(tif.series[0].dataoffset)
                                                      + int(tif.series[0].nbytes)]
    cuts = sorted({c for m in marks for c in range(m - 3, m + 16)} |
                  set(range(0, len(data), 97)) | {len(data) - 1})
    verdicts = {"accepted": 0, "refused": 0}
    cut_file = tmp_path / "cut.tif"
    for cut in (c for c in cuts if 0 < c < len(data)):
        cut_file.write_bytes(data[:cut])

        def verdict(check):
            try:
                check()
                return True
            except Exception:
                return False

        def quick():
            with open_tiff(cut_file) as tif:
                np.testing.assert_array_equal(tif.series[0].asarray(), volume)

        def walking():
            walk_pages(cut_file)
            with tifffile.TiffFile(cut_file) as tif:
                np.testing.assert_array_equal(tif.series[0].asarray(), volume)

        walked = verdict(walking)
        assert verdict(quick) == walked, f"cut at {cut} of {len(data)} bytes"
        verdicts["accepted" if walked else "refused"] += 1
    assert verdicts["refused"] > 20  # the cuts reach into the data and the header chain


def test_float_mask_must_hold_labels(tmp_path):
    """A float mask was silently cast to integers."""
    man = make_raw(tmp_path / "raw", n=2)
    m = np.zeros((8, 40, 44), np.float32)
    m[2:5, 10:20, 10:20] = 1.5
    write_imagej(tmp_path / "raw" / "m1.tif", m, VOXEL)
    with pytest.raises(Exception, match=r"line 3: mask .*m1.tif holds non-integer values"):
        _ingest(man, tmp_path / "store")
    m[m > 0] = 2.0  # integer-valued floats are labels
    write_imagej(tmp_path / "raw" / "m1.tif", m, VOXEL)
    assert _ingest(man, tmp_path / "store")["done"] == 1
    key = Store(tmp_path / "store").fields()[1]
    assert set(np.unique(Store(tmp_path / "store").read_named(key, "labels:gt"))) == {0, 2}


def test_ingest_refuses_a_folder_that_is_not_a_store(tmp_path):
    man = make_raw(tmp_path / "raw", n=1)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a spotlight-scale store .* not empty"):
        _ingest(man, tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.jpg"]
    (tmp_path / "empty").mkdir()
    assert _ingest(man, tmp_path / "empty")["done"] == 1


def test_verbose_and_quiet_after_the_command(tmp_path, cluster):
    """`-v` worked only before the subcommand, and there was no --quiet."""
    import subprocess
    import sys

    man = make_raw(tmp_path / "raw", n=1)

    def run(store, *flags):
        cmd = [sys.executable, "-m", "spotlight_scale", "ingest", str(man), str(tmp_path / store),
               "--cluster", cluster, "--chunks", "8,32,32", "--patch", "8,16,16", *flags]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stderr

    assert "ingest: 1/1 fields |" in run("a")  # progress by default
    assert "ingest: 1/1 fields |" not in run("b", "-q")
    assert "INFO spotlight_scale" in run("c", "-v")  # -v after the command
    r = CliRunner().invoke(cli, ["ingest", "--help"])
    assert "--quiet" in r.output and "--verbose" in r.output


def test_predict_overwrite_of_part_of_a_prediction_is_refused(make_store, make_model_file,
                                                              tmp_path, cluster):
    """`predict --overwrite --split test` with another model silently mixed two models under
    one name."""
    from spotlight_scale.pipelines.predict import predict

    store = make_store()
    a = make_model_file(store, tmp_path / "a.pt", seed=0)
    b = make_model_file(store, tmp_path / "b.pt", seed=1)
    kw = dict(tile=(16, 32, 32), overlap=(4, 8, 8), progress_stream=None, cluster=cluster)
    predict(store.root, a, "p", split="all", **kw)
    with pytest.raises(ValueError, match="outside --split test .* mix two models"):
        predict(store.root, b, "p", split="test", overwrite=True, **kw)
    shas = {m["model_sha256"] for m in store.done_fields("predict", "p").values()}
    assert len(shas) == 1  # untouched
    res = predict(store.root, b, "p", split="all", overwrite=True, **kw)
    assert res["done"] == 4
    assert len({m["model_sha256"] for m in store.done_fields("predict", "p").values()}) == 1
