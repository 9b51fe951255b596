"""predict + export end to end on a small store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.core.normalize import target_range
from spotlight_scale.io.tiff import read_volume
from spotlight_scale.models.fnet import FNet
from spotlight_scale.models.io import save_model_file

TILE, OVERLAP = (8, 32, 32), (4, 16, 16)


def _model_file(store, path, channels=4, seed=0):
    torch.manual_seed(seed)
    net = FNet(depth=2, channels=channels)
    rng = target_range([store.stats(k, "target") for k in store.fields("train")], "spotlight")
    return save_model_file(path, net, normalization="spotlight", target_range=rng,
                           train_config={}, iteration=0, loss="spotlight")


def _loads_on_worker():
    from spotlight_scale.pipelines.predict import LOADS

    return LOADS["count"]


@pytest.fixture
def setup(make_store, tmp_path):
    store = make_store(shape=(12, 40, 44))
    (tmp_path / "run").mkdir()
    _model_file(store, tmp_path / "run" / "model.pt")
    return store, tmp_path


def test_predict_export_roundtrip(setup):
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
    _model_file(store, tmp / "run2" / "model.pt", seed=1)
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
