"""Predict: virtual staining of whole fields, mapped over Dask workers.

Each worker loads the model once (a cache keyed by the model file's path,
SHA-256 and device) and predicts its fields tile by tile
(:mod:`spotlight_scale.core.tiling`). The signal is normalised from the stored
statistics as in training; the network output is rescaled linearly into the
training target's intensity range recorded in the model file (as the paper
does). Predictions go to ``STORE/predictions/<NAME>/<PLATE>.zarr`` (an HCS
plate mirroring the raw one, channel ``prediction``, float32) with the model's
provenance in the image attributes; the field's ``predict`` marker is written
last. Memory per worker: one field's signal and output (float32) plus the tiles
in flight.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..io.store import PREDICTION_CHANNEL, FieldKey, Store, check_name

log = logging.getLogger(__name__)

DEFAULT_TILE = (32, 128, 128)
DEFAULT_OVERLAP = (16, 32, 32)

_MODEL_CACHE: dict[tuple, Any] = {}
_MODEL_LOCK = threading.Lock()
#: how many times this process loaded a model (the tests check "once per worker")
LOADS = {"count": 0}


def _cached_model(path: str, sha: str, device: str):
    with _MODEL_LOCK:
        key = (path, sha, device)
        if key not in _MODEL_CACHE:
            from ..models.io import load_model_file

            _MODEL_CACHE[key] = load_model_file(path, device=device)
            LOADS["count"] += 1
        return _MODEL_CACHE[key]


def _worker_device(device: str) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but this worker sees no CUDA GPU")
    return device  # dask-cuda pins each worker to its GPU via CUDA_VISIBLE_DEVICES


def predict_field(store_root: str, key: FieldKey, model_path: str, sha: str, name: str, *,
                  tile, overlap, device: str = "auto", batch_size: int = 1) -> dict[str, Any]:
    """Predict one field and write it (runs on a worker)."""
    import torch

    from ..core.normalize import denormalize_to_range, normalize
    from ..core.tiling import predict_tiled
    from ..io.fields import build_pyramid, open_well_group
    from ..io.omezarr import pyramid_shapes, write_image_czyx

    store = Store(store_root)
    device = _worker_device(device)
    model, meta = _cached_model(model_path, sha, device)
    stats = store.stats(key, "signal")
    signal = normalize(store.read(key, "signal").astype(np.float32), stats,
                       meta["normalization"], "signal")
    use_bf16 = device.startswith("cuda")

    def forward(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            y = model(x)
        return y.float().cpu().numpy()[:, 0]

    pred = predict_tiled(signal, forward, tile=tile, overlap=overlap, divisor=model.divisor,
                         batch_size=batch_size)
    pred = denormalize_to_range(pred, meta["target_range"]).astype(np.float32)
    well = open_well_group(store, key, prediction=name)
    if str(key.field) in well:
        del well[str(key.field)]
    group = well.require_group(str(key.field))
    n_levels = len(pyramid_shapes(pred.shape))
    levels = [lv[None] for lv in build_pyramid(pred, n_levels)]
    raw = store.image(key)
    chunks = tuple(raw.chunks[1:])
    lo, hi = float(np.percentile(pred, 0.1)), float(np.percentile(pred, 99.9))
    write_image_czyx(group, levels, voxel_size=store.voxel_size(key),
                     channel_names=[PREDICTION_CHANNEL], chunks_zyx=chunks,
                     fmt=store.ngff_format(), windows=[(lo, hi)])
    group.attrs["spotlight_scale"] = {
        "layout_version": store.manifest["layout_version"], "kind": "prediction", "name": name,
        "field": key.id, "model": {"path": str(model_path), "sha256": sha,
                                   "model_config": meta["model_config"],
                                   "normalization": meta["normalization"], "loss": meta["loss"],
                                   "iteration": meta["iteration"],
                                   "target_range": meta["target_range"],
                                   "train_config": meta["train_config"]},
        "tile": list(tile), "overlap": list(overlap)}
    store.mark_done("predict", key, {"model_sha256": sha, "model_path": str(model_path)},
                    name=name)
    return {"field": key.id, "voxels": int(pred.size)}


def finalize_predictions(store: Store, name: str) -> None:
    """Write HCS plate/well metadata of the prediction plates, listing done fields only."""
    import zarr

    from ..io.omezarr import write_plate

    by_plate: dict[str, dict[str, list[int]]] = {}
    for key in store.done_fields("predict", name):
        by_plate.setdefault(key.plate, {}).setdefault(key.well, []).append(key.field)
    for plate, wells in by_plate.items():
        group = zarr.open_group(str(store.plate_path(plate, name)), mode="a",
                                zarr_format=store.zarr_format)
        write_plate(group, name=f"{plate} prediction {name}", wells=wells, fmt=store.ngff_format())


def select_fields(store: Store, split: str) -> list[FieldKey]:
    if split not in ("all", "train", "val", "test"):
        raise ValueError(f"unknown split {split!r}: expected all, train, val or test")
    keys = store.fields(split)
    if not keys:
        raise ValueError(f"{store.root}: no ingested fields in split {split!r}")
    return keys


def predict(store_root, run_dir, name: str, *, split: str = "test", tile=DEFAULT_TILE,
            overlap=DEFAULT_OVERLAP, cluster: str = "local", workers: int | None = None,
            cluster_config=None, device: str = "auto", overwrite: bool = False,
            batch_size: int = 1, progress_stream=sys.stderr) -> dict[str, Any]:
    """Predict the target of every selected field with the model in ``run_dir``.

    Returns counts ``done``, ``skipped`` and ``voxels``.
    """
    import time

    from ..cluster import open_client
    from ..core.tiling import plan_tiles
    from ..models.io import model_sha256, read_model_meta
    from ..progress import Progress

    check_name(name, "prediction name")
    store = Store(store_root)
    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt" if run_dir.is_dir() else run_dir
    meta = read_model_meta(model_path)  # clear error for missing/corrupt/foreign files
    from ..models.io import load_model_file

    load_model_file(model_path)  # weights must fit the recorded configuration
    sha = model_sha256(model_path)
    divisor = 2 ** int(meta["model_config"]["depth"])
    keys = select_fields(store, split)
    plan_tiles(store.field_meta(keys[0])["shape_zyx"], tile=tile, overlap=overlap,
               divisor=divisor)  # validate tiling before any work
    todo, skipped = [], 0
    for key in keys:
        done = store.is_done("predict", key, name=name)
        if done and done.get("model_sha256") != sha and not overwrite:
            raise ValueError(
                f"prediction {name!r} of field {key} was made by another model "
                f"({done.get('model_path')}, sha256 {done.get('model_sha256', '')[:12]}...); "
                "choose another --name or pass --overwrite")
        if done and not overwrite:
            skipped += 1
            continue
        if done:
            store.clear_done("predict", key, name=name)
        todo.append(key)
    t0 = time.perf_counter()
    voxels = 0
    if todo:
        from distributed import as_completed

        from ..io.fields import open_well_group

        for key in todo:
            open_well_group(store, key, prediction=name)
        progress = Progress(len(todo), "fields", desc=f"predict {name}", stream=progress_stream)
        with open_client(cluster, workers=workers, cluster_config=cluster_config) as client:
            futures = [client.submit(predict_field, str(store.root), key, str(model_path), sha,
                                     name, tile=tuple(tile), overlap=tuple(overlap),
                                     device=device, batch_size=batch_size, pure=False,
                                     key=f"predict-{name}-{key.id}-{sha[:8]}") for key in todo]
            try:
                for fut in as_completed(futures):
                    res = fut.result()
                    voxels += res["voxels"]
                    progress.update(1, extra=f"{voxels / (time.perf_counter() - t0):.3g} voxel/s")
            finally:
                progress.close()
                finalize_predictions(store, name)
    return {"done": len(todo), "skipped": skipped, "voxels": voxels,
            "seconds": time.perf_counter() - t0}
