"""predict + export end to end on a small store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.io.tiff import read_volume

TILE, OVERLAP = (8, 32, 32), (4, 16, 16)


def _loads_on_worker():
    from spotlight_scale.pipelines.predict import LOADS

    return LOADS["count"]


@pytest.fixture
def setup(make_store, make_model_file, tmp_path):
    store = make_store(shape=(12, 40, 44))
    (tmp_path / "run").mkdir()
    make_model_file(store, tmp_path / "run" / "model.pt")
    return store, tmp_path


def test_predict_export_roundtrip(setup, make_model_file):
    import ome_zarr_models.v05 as v05
    from distributed import Client, LocalCluster
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from spotlight_scale.pipelines.predict import LOADS, predict

    store, tmp = setup
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        res = predict(store.root, tmp / "run", "tiny", split="all", tile=TILE, overlap=OVERLAP,
                      cluster=lc.scheduler_address, progress_stream=None)
        assert res["done"] == 4
        assert list(client.run(_loads_on_worker).values()) == [1]  # once, not per field
        assert LOADS["count"] == 0  # the driver never loaded the model into its cache
    for key in store.fields():
        pred = store.read_named(key, "prediction:tiny")
        assert pred.shape == store.read(key, "target").shape and pred.dtype == np.float32
        attrs = store.open_field(key, prediction="tiny").attrs.asdict()["spotlight_scale"]
        assert attrs["model"]["sha256"] and attrs["model"]["model_config"]["depth"] == 2
    plate = zarr.open_group(str(store.plate_path("P1", "tiny")), mode="r")
    v05.HCS.from_zarr(plate)
    nodes = list(Reader(parse_url(str(store.field_url(store.fields()[0], "tiny"))))())
    assert nodes[0].data[0].shape == (1, 12, 40, 44)
    # re-run skips; a different model under the same name is refused, nothing written
    runner = CliRunner()
    again = runner.invoke(cli, ["predict", str(store.root), str(tmp / "run"), "--name", "tiny",
                                "--split", "all", "--tile", "8,32,32", "--overlap", "4,16,16"])
    assert again.exit_code == 0 and "4 already done" in again.output
    (tmp / "run2").mkdir()
    make_model_file(store, tmp / "run2" / "model.pt", seed=1)
    before = store.read_named(store.fields()[0], "prediction:tiny")
    other = runner.invoke(cli, ["predict", str(store.root), str(tmp / "run2"), "--name", "tiny",
                                "--split", "all"])
    assert other.exit_code != 0 and "another model" in other.output
    np.testing.assert_array_equal(before, store.read_named(store.fields()[0], "prediction:tiny"))
    # export prediction and labels to ImageJ TIFFs
    for image in ("prediction:tiny", "labels:gt", "signal"):
        out = tmp / f"{image.replace(':', '_')}.tif"
        r = runner.invoke(cli, ["export", str(store.root), str(out), "--well", "B03", "--field",
                                "1", "--image", image])
        assert r.exit_code == 0, r.output
        arr, voxel = read_volume(out)
        assert arr.shape == (12, 40, 44) and voxel == pytest.approx((0.29,) * 3)
        from spotlight_scale.io.store import FieldKey

        np.testing.assert_array_equal(arr, store.read_named(FieldKey("P1", "B03", 1), image))


def test_predict_bad_inputs(setup):
    store, tmp = setup
    runner = CliRunner()
    (tmp / "bad").mkdir()
    (tmp / "bad" / "model.pt").write_bytes(b"garbage")
    r = runner.invoke(cli, ["predict", str(store.root), str(tmp / "bad"), "--name", "x"])
    assert r.exit_code != 0 and "corrupt" in r.output and "bad" in r.output
    payload = torch.load(tmp / "run" / "model.pt", weights_only=True)
    payload["model_config"]["channels"] = 8  # weights from another configuration
    (tmp / "other").mkdir()
    torch.save(payload, tmp / "other" / "model.pt")
    r = runner.invoke(cli, ["predict", str(store.root), str(tmp / "other"), "--name", "x"])
    assert r.exit_code != 0 and "do not match" in r.output
    assert not (store.root / "predictions" / "x").exists()
    r = runner.invoke(cli, ["export", str(store.root), str(tmp / "o.tif"), "--well", "H09",
                            "--field", "0", "--image", "target"])
    assert r.exit_code != 0 and "no field P1/H09/0" in r.output and not (tmp / "o.tif").exists()
    r = runner.invoke(cli, ["export", str(store.root), str(tmp / "o.tif"), "--well", "B03",
                            "--field", "0", "--image", "prediction:nope"])
    assert r.exit_code != 0 and "no prediction 'nope'" in r.output


def _reference_prediction(store, key, model_path):
    """In memory: the whole normalised signal through ``predict_tiled``, rescaled."""
    from spotlight_scale.core.normalize import denormalize_to_range, normalize
    from spotlight_scale.core.tiling import predict_tiled
    from spotlight_scale.models.io import load_model_file

    model, meta = load_model_file(model_path)
    signal = normalize(store.read(key, "signal").astype(np.float32), store.stats(key, "signal"),
                       meta["normalization"], "signal")

    def forward(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)[:, None]).numpy()[:, 0]

    pred = predict_tiled(signal, forward, tile=TILE, overlap=OVERLAP, divisor=model.divisor)
    return denormalize_to_range(pred, meta["target_range"])


def test_streamed_prediction_equals_in_memory_and_resumes(make_store, make_model_file, tmp_path):
    """Worker output = the in-memory reference (level 0 and the streamed pyramid); a field
    that fails mid-run leaves the others done, and a re-run redoes only that field."""
    from distributed import Client, LocalCluster

    from spotlight_scale.io.fields import build_pyramid
    from spotlight_scale.pipelines.predict import PredictError, predict

    store, tmp = make_store(shape=(12, 72, 68)), tmp_path  # two pyramid levels
    (tmp / "run").mkdir()
    make_model_file(store, tmp / "run" / "model.pt")
    keys = store.fields()
    victim = keys[2]
    chunk = store.field_url(victim) / "s0" / "c" / "0" / "0" / "0" / "0"  # signal, first chunk
    original = chunk.read_bytes()
    chunk.write_bytes(b"not a zstd frame")
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc):
        with pytest.raises(PredictError, match=f"field {victim}"):
            predict(store.root, tmp / "run", "tiny", split="all", tile=TILE, overlap=OVERLAP,
                    cluster=lc.scheduler_address, progress_stream=None)
        done = store.done_fields("predict", "tiny")
        assert victim not in done and len(done) >= 1
        kept = {k: store.read_named(k, "prediction:tiny") for k in done}
        chunk.write_bytes(original)
        res = predict(store.root, tmp / "run", "tiny", split="all", tile=TILE, overlap=OVERLAP,
                      cluster=lc.scheduler_address, progress_stream=None)
    assert res["done"] == len(keys) - len(kept) and res["skipped"] == len(kept)
    assert res["computed_voxels"] > res["voxels"]  # tiles overlap: recomputed voxels are counted
    for key in keys:
        got = store.read_named(key, "prediction:tiny")
        if key in kept:
            np.testing.assert_array_equal(got, kept[key])  # untouched by the re-run
        ref = _reference_prediction(store, key, tmp / "run" / "model.pt")
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * scale)
        levels = build_pyramid(got, 2)
        np.testing.assert_allclose(store.read_named(key, "prediction:tiny", level=1), levels[1],
                                   rtol=1e-6)
