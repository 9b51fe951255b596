"""2D fields (single planes) through manifest, ingest, train and predict (issue 20).

A 2D field is stored CZYX with one z plane (:mod:`spotlight_scale.core.dims`); these
tests check that every 3D guarantee (sampler, cache, resume, DDP, tiling equals a
whole-field forward) holds for it, and that the dimensionality is refused where it
does not fit.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner
from conftest import assert_same_run

from spotlight_scale.cli import cli
from spotlight_scale.models.fnet import FNet
from spotlight_scale.train.config import TrainConfig

SMALL2D = dict(depth=2, channels=4, patch=(16, 16), batch_size=4, num_workers=0, lr=3e-3,
               val_interval=5, val_batches=1, checkpoint_interval=5)


@pytest.fixture
def store2d(make_store):
    return make_store(shape=(1, 64, 64), n_blobs=6, patch=(1, 16, 16), stride=(1, 8, 8),
                      chunks=(1, 32, 32), voxel_size=(0.5, 0.5, 0.5))


def test_2d_fnet_takes_planes_and_single_plane_stacks():
    torch.manual_seed(0)
    net = FNet(depth=2, channels=4, spatial_dims=2).eval()
    assert all(not isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d)) for m in net.modules())
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        a = net(x)
        b = net(x[:, :, None])
    assert a.shape == (2, 1, 32, 48) and b.shape == (2, 1, 1, 32, 48)
    torch.testing.assert_close(a, b[:, :, 0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="z-stack needs a 3D F-net"):
        net(torch.randn(1, 1, 4, 32, 32))
    with pytest.raises(ValueError, match="2D F-net takes 4-D"):
        net(torch.randn(1, 32, 32))
    weights = torch.cat([m.weight.flatten() for m in net.modules()
                         if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(weights.detach().std()) - 0.02) < 0.002  # the reference N(0, 0.02) init
    assert net.config()["spatial_dims"] == 2


def _write_pair(dirpath, name, shape, rng, **kw):
    sig = rng.integers(100, 2000, shape).astype(np.uint16)
    tgt = rng.integers(100, 2000, shape).astype(np.uint16)
    tifffile.imwrite(dirpath / f"{name}_s.tif", sig, **kw)
    tifffile.imwrite(dirpath / f"{name}_t.tif", tgt, **kw)
    return sig, tgt


def _manifest(path, rows, cols):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    return path


def test_manifest_reads_planes_and_refuses_a_mixture(tmp_path):
    from spotlight_scale.io.manifest import ManifestError, read_manifest

    rng = np.random.default_rng(0)
    _write_pair(tmp_path, "a", (40, 50), rng)  # YX
    _write_pair(tmp_path, "b", (1, 40, 50), rng)  # one z plane
    _write_pair(tmp_path, "c", (20, 40, 50), rng)  # a z-stack
    cols = ["path_signal", "path_target", "voxel_z", "voxel_y", "voxel_x"]
    rows = [{"path_signal": f"{n}_s.tif", "path_target": f"{n}_t.tif", "voxel_y": 0.6,
             "voxel_x": 0.6} for n in "ab"]
    got, _ = read_manifest(_manifest(tmp_path / "m.csv", rows, cols))
    assert [r.shape for r in got] == [(1, 40, 50), (1, 40, 50)]
    assert [r.voxel_size for r in got] == [(0.6, 0.6, 0.6)] * 2  # voxel_z left out: z = y
    rows.append({"path_signal": "c_s.tif", "path_target": "c_t.tif", "voxel_z": 1.0,
                 "voxel_y": 0.6, "voxel_x": 0.6})
    with pytest.raises(ManifestError) as info:
        read_manifest(_manifest(tmp_path / "mixed.csv", rows, cols))
    msg = str(info.value)
    assert "mixes 2D fields" in msg and "line 2" in msg and "line 4" in msg and "c_s.tif" in msg


def test_time_point_and_channel_from_a_real_ome_tiff(tmp_path):
    """The real paired OME-TIFF (CTYX) is read directly: t selects the frame, the channel
    columns the stains, and the pixel size comes from the OME metadata (no z size)."""
    from spotlight_scale.io.manifest import read_manifest
    from spotlight_scale.io.tiff import read_volume
    from spotlight_scale.sampledata import scratch_assay_path

    path = scratch_assay_path()
    ref = tifffile.imread(path)  # C, T, Y, X
    cols = ["path_signal", "path_target", "path_mask", "channel_signal", "channel_target",
            "channel_mask", "t", "well"]
    rows = [{"path_signal": str(path), "path_target": str(path), "path_mask": str(path),
             "channel_signal": 1, "channel_target": 0, "channel_mask": 2, "t": t,
             "well": f"B0{t + 2}"} for t in (0, 7)]
    got, _ = read_manifest(_manifest(tmp_path / "m.csv", rows, cols))
    assert [r.shape for r in got] == [(1, 210, 576)] * 2
    assert got[0].voxel_size[1:] == pytest.approx((0.619, 0.619))  # z (1.0 in the file) unused
    for row in got:
        sig, voxel = read_volume(row.path_signal, row.channel_signal, row.t)
        np.testing.assert_array_equal(sig[0], ref[1, row.t])
        np.testing.assert_array_equal(read_volume(row.path_mask, 2, row.t)[0][0], ref[2, row.t])
    rows[0]["t"] = ""
    _, fails = read_manifest(_manifest(tmp_path / "m2.csv", rows, cols), on_error="skip")
    assert "has 10 time points; set the manifest column t" in fails[0]["error"]
    rows[0]["t"] = 10
    _, fails = read_manifest(_manifest(tmp_path / "m3.csv", rows, cols), on_error="skip")
    assert "time point 10 out of range (file has 10)" in fails[0]["error"]


def test_ingest_2d_is_valid_ngff_with_a_planar_patch_index(tmp_path):
    import zarr
    from ome_zarr_models.v05.hcs import HCS
    from ome_zarr_models.v05.image import Image
    from skimage.filters import threshold_otsu

    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import ingest

    rng = np.random.default_rng(1)
    rows = []
    for i in range(2):
        yy, xx = np.mgrid[:96, :80]
        tgt = (200 + 1500 * (((yy - 30 - 20 * i) ** 2 + (xx - 40) ** 2) < 150)
               + rng.normal(0, 30, yy.shape)).astype(np.uint16)
        sig = (1000 + rng.normal(0, 50, yy.shape)).astype(np.uint16)
        tifffile.imwrite(tmp_path / f"s{i}.tif", sig)
        tifffile.imwrite(tmp_path / f"t{i}.tif", tgt)
        rows.append({"path_signal": f"s{i}.tif", "path_target": f"t{i}.tif", "voxel_y": 0.65,
                     "voxel_x": 0.65, "field": i})
    m = _manifest(tmp_path / "m.csv", rows, ["path_signal", "path_target", "voxel_y", "voxel_x",
                                             "field"])
    ingest(m, tmp_path / "store", workers=1)
    store = Store(tmp_path / "store")
    key = store.fields()[0]
    meta = store.field_meta(key)
    assert meta["shape_zyx"] == [1, 96, 80]  # kept on its pixel grid, one plane
    assert meta["voxel_size_um"] == [0.65, 0.65, 0.65]
    t0 = tifffile.imread(tmp_path / "t0.tif")
    assert store.stats(key, "target")["otsu"] == pytest.approx(threshold_otsu(t0), abs=1)
    np.testing.assert_array_equal(store.read(key, "target")[0], t0)
    idx = store.patch_index(key)
    assert tuple(idx.patch_shape) == (1, 64, 64) and tuple(idx.stride) == (1, 16, 16)
    group = zarr.open_group(str(store.field_url(key)), mode="r")
    Image.from_zarr(group)  # the independent NGFF validator accepts the field and the plate
    HCS.from_zarr(zarr.open_group(str(store.plate_path(key.plate)), mode="r"))
    scales = [d["coordinateTransformations"][0]["scale"]
              for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    assert [s[1] for s in scales] == [0.65] * len(scales)  # one plane: z scale kept
    assert scales[1][2:] == [1.3, 1.3]


def test_2d_training_resumes_and_caches_as_in_3d(store2d, tmp_path):
    from spotlight_scale.models.io import load_model_file
    from spotlight_scale.pipelines.train import train

    train(store2d.root, tmp_path / "full", TrainConfig(**SMALL2D, iterations=10, cache="on"))
    train(store2d.root, tmp_path / "cut", TrainConfig(**SMALL2D, iterations=5, cache="off"))
    train(store2d.root, tmp_path / "cut", TrainConfig(**SMALL2D, iterations=10, cache="on"),
          resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut", 10)
    model, meta = load_model_file(tmp_path / "full" / "model.pt")
    assert model.spatial_dims == 2 and meta["model_config"]["spatial_dims"] == 2
    assert meta["train_config"]["patch"] == [1, 16, 16]


def test_2d_ddp_two_gloo_ranks_equal_one_process(store2d, tmp_path):
    from test_train import assert_ddp_equals_one_process

    assert_ddp_equals_one_process(store2d, tmp_path, SMALL2D)


def test_patch_of_the_wrong_kind_is_refused(store2d, make_store, tmp_path):
    res = CliRunner().invoke(cli, ["train", str(store2d.root), str(tmp_path / "r"), "--patch",
                                   "8,16,16", "--depth", "2", "--iterations", "1"])
    assert res.exit_code == 1 and "2D (single-plane) fields" in res.output
    assert "--patch 64,64" in res.output
    store3d = make_store(root=tmp_path / "s3")
    res = CliRunner().invoke(cli, ["train", str(store3d.root), str(tmp_path / "r3"), "--patch",
                                   "16,16", "--depth", "2", "--iterations", "1"])
    assert res.exit_code == 1 and "holds z-stacks" in res.output


def test_2d_prediction_streams_tiles_equal_to_one_forward(store2d, tmp_path, cluster):
    """Predict tiles a 2D field in y/x only; the stored prediction equals one whole-field
    forward of the same model (no z padding, no z tiles)."""
    from spotlight_scale.core.normalize import denormalize_to_range, normalize
    from spotlight_scale.models.io import load_model_file, save_model_file
    from spotlight_scale.core.normalize import target_range
    from spotlight_scale.pipelines.predict import predict

    torch.manual_seed(0)
    net = FNet(depth=2, channels=4, init="torch", spatial_dims=2)
    rng = target_range([store2d.stats(k, "target") for k in store2d.fields("train")],
                       "spotlight")
    path = save_model_file(tmp_path / "m.pt", net, normalization="spotlight", target_range=rng,
                           train_config={}, iteration=0, loss="spotlight")
    res = predict(store2d.root, path, "p2d", split="all", tile=(64, 32, 32),
                  overlap=(16, 16, 16), cluster=cluster)
    assert res["done"] == 4
    model, _ = load_model_file(path)
    for key in store2d.fields():
        sig = normalize(store2d.read(key, "signal").astype(np.float32), store2d.stats(key, "signal"),
                        "spotlight", "signal")
        with torch.no_grad():
            ref = model(torch.from_numpy(sig)[None, None]).numpy()[0, 0]
        got = store2d.read_named(key, "prediction:p2d")
        assert got.shape == (1, 64, 64)
        np.testing.assert_allclose(got, denormalize_to_range(ref, rng), rtol=1e-4, atol=1e-2)


def test_a_model_of_the_other_kind_is_refused_naming_the_file(store2d, tmp_path,
                                                               make_model_file):
    from spotlight_scale.models.io import ModelFileError
    from spotlight_scale.pipelines.predict import predict

    path = make_model_file(store2d, tmp_path / "m3d.pt")  # a 3D F-net
    with pytest.raises(ModelFileError, match=r"m3d\.pt: a 3D \(z-stacks\) F-net cannot predict"):
        predict(store2d.root, path, "p", split="all", workers=1)


def test_plain_multipage_tiff_is_a_z_stack_and_a_plain_page_a_plane(tmp_path):
    """tifffile names the pages of a TIFF without metadata Q: several are z planes."""
    from spotlight_scale.io.tiff import read_volume

    rng = np.random.default_rng(2)
    stack = rng.integers(0, 255, (5, 20, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "plane.tif", stack[0])
    got, _ = read_volume(tmp_path / "stack.tif")
    np.testing.assert_array_equal(got, stack)
    got, _ = read_volume(tmp_path / "plane.tif")
    np.testing.assert_array_equal(got, stack[:1])
