"""GPU paths of predict (marker ``gpu``: skipped without CUDA): bf16 tiled inference on the
GPU agrees with the float32 CPU pipeline, and ``--cluster cuda`` starts one worker per GPU,
each pinned to its own device."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu
TILE, OVERLAP = (8, 32, 32), (4, 16, 16)


def test_predict_on_gpu_matches_cpu(make_store, make_model_file, tmp_path):
    from spotlight_scale.pipelines.predict import predict

    store = make_store(shape=(12, 72, 68))
    run = make_model_file(store, tmp_path / "model.pt")
    common = dict(split="all", tile=TILE, overlap=OVERLAP, progress_stream=None)
    predict(store.root, run, "cpu", workers=1, device="cpu", **common)
    predict(store.root, run, "gpu", workers=1, device="cuda", **common)
    for key in store.fields():
        a = store.read_named(key, "prediction:cpu")
        b = store.read_named(key, "prediction:gpu")
        spread = float(a.max() - a.min())
        assert spread > 0
        # bf16 autocast on the GPU: ~3 significant digits
        assert np.abs(a - b).max() <= 0.02 * spread
        np.testing.assert_allclose(b.mean(), a.mean(), atol=0.005 * spread)


def test_cuda_cluster_pins_one_worker_per_gpu(make_store, make_model_file, tmp_path):
    pytest.importorskip("dask_cuda")
    from spotlight_scale.cluster import open_client
    from spotlight_scale.pipelines.predict import predict

    with open_client("cuda") as client:
        seen = client.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0],
                                   torch.cuda.current_device()))
    assert len(seen) == torch.cuda.device_count()
    assert len({dev for dev, _ in seen.values()}) == len(seen)  # each worker its own GPU
    store = make_store(shape=(12, 72, 68))
    model = make_model_file(store, tmp_path / "model.pt")
    res = predict(store.root, model, "cuda", split="all", tile=TILE, overlap=OVERLAP,
                  cluster="cuda", device="cuda", progress_stream=None)
    assert res["done"] == len(store.fields())
