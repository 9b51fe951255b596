"""Predict: virtual staining of whole fields, mapped over Dask workers.

Each worker loads the model once (a cache keyed by the model file's path,
SHA-256 and device) and streams each field through it tile by tile
(:func:`spotlight_scale.core.tiling.predict_stream`): a tile's signal is read
from the store and normalised from the stored statistics as in training, and
as soon as a region of the output is final (blended with every tile that
touches it) it is rescaled linearly into the training target's intensity range
recorded in the model file (as the paper does) and written as whole zarr
chunks. Memory per worker is a few tiles plus the overlap strips of one row of
tiles, not the field. Predictions go to ``STORE/predictions/<NAME>/<PLATE>.zarr``
(an HCS plate mirroring the raw one, channel ``prediction``, float32, chunked
by the tile step) with the model's provenance in the image attributes; the
coarser pyramid levels are computed from level 0 chunk by chunk, and the
field's ``predict`` marker is written last.

A prediction name belongs to one model. The first run into a name claims it:
``predictions/<NAME>/model.json`` (the model's SHA-256 and path) is created
atomically and exclusively (:func:`claim_prediction`), so of two runs with two
models started at the same time (two ``--shard`` tasks of a job array) one
is refused; every field task checks the claim again before it writes and
before it marks its field done, so a run whose name was taken over with
``--overwrite`` meanwhile marks nothing done. On a re-run a done field is
skipped only when its stored files still match what its marker records
(:mod:`spotlight_scale.io.verify`); a damaged prediction is predicted again.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..io.store import PREDICTION_CHANNEL, FieldKey, Store, check_name
from . import take_shard
from .fieldrun import FieldError

log = logging.getLogger(__name__)

DEFAULT_TILE = (64, 256, 256)
DEFAULT_OVERLAP = (16, 32, 32)


class PredictError(FieldError):
    """A field failed during prediction; the message names it (done fields are kept)."""


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


CLAIM_FILE = "model.json"


def claim_path(store: Store, name: str) -> Path:
    return store.root / "predictions" / check_name(name, "prediction name") / CLAIM_FILE


def _read_claim(path: Path) -> dict | None:
    """The claim's content; ``None`` when there is none; ``{}`` when it does not parse."""
    import json

    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}


def claim_prediction(store: Store, name: str, sha: str, model_path, *,
                     overwrite: bool = False) -> None:
    """Make prediction ``name`` the model ``sha``'s, or refuse (``ValueError``) when another
    model holds it and not ``overwrite``. The claim file is created exclusively (``os.link``
    of a finished file, which fails if it exists), so two runs racing for a new name cannot
    both win."""
    import datetime as _dt
    import os
    import socket
    import uuid

    from ..io.atomic import atomic_write_json

    path = claim_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model_sha256": sha, "model_path": str(model_path), "host": socket.gethostname(),
               "pid": os.getpid(),
               "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{CLAIM_FILE}.{uuid.uuid4().hex}.tmp")
    try:
        atomic_write_json(tmp, payload)
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    info = _read_claim(path)
    if info is not None and info.get("model_sha256") == sha:
        return
    if overwrite:
        atomic_write_json(path, payload)
        return
    if not info:
        raise ValueError(f"{path}: cannot be parsed: it should name the model that prediction "
                         f"{name!r} belongs to; pass --overwrite to give the name to this "
                         "model, or choose another --name")
    raise ValueError(
        f"prediction {name!r} belongs to another model ({info.get('model_path')}, sha256 "
        f"{str(info.get('model_sha256', ''))[:12]}..., claimed {info.get('since', '?')} in "
        f"{path}); choose another --name or pass --overwrite")


def check_claim(store: Store, name: str, sha: str, key: FieldKey) -> None:
    """Refuse (:class:`PredictError`) to write or mark field ``key`` of ``name`` when the name
    now belongs to another model (taken over with ``--overwrite`` by a concurrent run)."""
    path = claim_path(store, name)
    info = _read_claim(path)
    if not info or info.get("model_sha256") != sha:
        owner = (f"{info.get('model_path')}, claimed in {path}" if info else
                 f"{path} is missing or does not parse")
        raise PredictError(
            f"prediction {name!r} of field {key}: the name no longer belongs to this run's "
            f"model ({owner}); this run's prediction of the field is not marked done")


def predict_field(store_root: str, key: FieldKey, model_path: str, sha: str, name: str, *,
                  tile, overlap, device: str = "auto", batch_size: int = 1) -> dict[str, Any]:
    """Predict one field and write it (runs on a worker).

    Returns the field id, its voxel count, the voxels the network computed and
    the stream's memory figures (see :func:`~spotlight_scale.core.tiling.predict_stream`).
    """
    import torch

    from ..backend import torch_device
    from ..core.normalize import denormalize_to_range, normalize
    from ..core.tiling import field_tiling, plan_tiles, predict_stream
    from ..io.fields import open_well_group
    from ..io.omezarr import create_image_czyx, fill_pyramid

    store = Store(store_root)
    check_claim(store, name, sha, key)
    inputs = store.input_stamp(key, "signal")
    device = torch_device(device)  # dask-cuda pins each worker to its GPU (CUDA_VISIBLE_DEVICES)
    model, meta = _cached_model(model_path, sha, device)
    field = store.field_meta(key)
    shape = tuple(field["shape_zyx"])
    stats = store.stats(key, "signal")
    mode, rng = meta["normalization"], meta["target_range"]
    source = store.image(key)
    channel = store.channel_index("signal")
    tile, overlap, divisor = field_tiling(shape, tile=tile, overlap=overlap, depth=model.depth)
    plan = plan_tiles(shape, tile=tile, overlap=overlap, divisor=divisor)
    use_bf16 = device.startswith("cuda")

    def read(region):
        return normalize(np.asarray(source[(channel, *region)], dtype=np.float32), stats, mode,
                         "signal")

    def forward(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)[:, None].to(device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            y = model(x)
        return y.float().cpu().numpy()[:, 0]

    well = open_well_group(store, key, prediction=name)
    from ..io.fields import remove_field_folder

    remove_field_folder(store.field_url(key, name))  # partial or damaged: an earlier run's
    group = well.require_group(str(key.field))
    # display window: the training target's range, which predictions are rescaled into
    arrays = create_image_czyx(group, shape, np.float32, voxel_size=field["voxel_size_um"],
                               channel_names=[PREDICTION_CHANNEL], chunks_zyx=plan.chunks,
                               fmt=store.ngff_format(), windows=[(rng["raw_min"], rng["raw_max"])])
    level0 = arrays[0]

    def write(region, block):
        level0[(0, *region)] = denormalize_to_range(block, rng).astype(np.float32, copy=False)

    stream = predict_stream(read, forward, write, plan, batch_size=batch_size)
    fill_pyramid(arrays)
    group.attrs["spotlight_scale"] = {
        "layout_version": store.manifest["layout_version"], "kind": "prediction", "name": name,
        "field": key.id, "model": {"path": str(model_path), "sha256": sha,
                                   "model_config": meta["model_config"],
                                   "normalization": meta["normalization"], "loss": meta["loss"],
                                   "iteration": meta["iteration"],
                                   "target_range": meta["target_range"],
                                   "train_config": meta["train_config"],
                                   **foreground_threshold_attrs(rng, mode)},
        "tile": list(tile), "overlap": list(overlap), "margin": list(plan.margin),
        "tiles": list(plan.counts)}
    from ..io.verify import record

    stored = record(store.field_url(key, name))
    check_claim(store, name, sha, key)
    store.mark_done("predict", key, {"model_sha256": sha, "model_path": str(model_path),
                                     "inputs": inputs, "stored": stored}, name=name)
    return {"field": key.id, "voxels": int(np.prod(shape)), **stream}


def foreground_threshold_attrs(rng: dict, mode: str) -> dict[str, Any]:
    """The model's foreground threshold in stored (rescaled) units, for the prediction's
    attributes (``segment --foreground model`` reads it); ``None`` for a model file written
    before it recorded ``norm_threshold``."""
    from ..core.normalize import THRESHOLD_RULE, denormalize_to_range

    t = rng.get("norm_threshold")
    return {"foreground_threshold": None if t is None else float(denormalize_to_range(t, rng)),
            "foreground_threshold_rule": None if t is None else THRESHOLD_RULE.get(mode)}


def _prediction_damage(store: Store, key: FieldKey, name: str, marker: dict) -> str | None:
    """Why the done prediction ``name`` of ``key`` no longer holds what was written."""
    from ..io.verify import damage

    return damage(store.field_url(key, name), marker.get("stored"))


def finalize_predictions(store: Store, name: str) -> None:
    """Write HCS plate/well metadata of the prediction plates, listing done fields only."""
    import zarr

    from ..io.omezarr import write_plate

    by_plate: dict[str, dict[str, list[int]]] = {}
    for key in store.done_fields("predict", name):
        by_plate.setdefault(key.plate, {}).setdefault(key.well, []).append(key.field)
    from ..io.fields import drop_damaged_group_metadata

    for plate, wells in by_plate.items():
        drop_damaged_group_metadata(store.plate_path(plate, name))  # rewritten just below
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
            batch_size: int = 1, on_error: str = "fail", shard: tuple[int, int] | None = None,
            progress_stream=sys.stderr) -> dict[str, Any]:
    """Predict the target of every selected field with the model in ``run_dir``.

    A field is redone when its prediction is missing or was made from a signal
    that has since been re-ingested with other content. ``on_error="skip"``
    goes on past failing fields and lists them in
    ``STORE/tables/failures_predict_<NAME>.parquet``. Returns counts ``done``,
    ``skipped``, ``failed``, ``voxels`` (of the fields predicted),
    ``computed_voxels`` (what the network computed: tile overlap and divisor
    padding included) and ``seconds``. ``shard=(i, n)``: only fields ``i, i + n,
    ...`` (a job-array task); plate metadata and the failures table are left to an
    unsharded run.
    """
    import time

    from ..core.tiling import field_tiling, plan_tiles
    from ..models.io import check_model_fits, model_sha256, read_model_meta
    from .fieldrun import check_on_error, run_fields, write_failures

    check_name(name, "prediction name")
    check_on_error(on_error)
    store = Store(store_root)
    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt" if run_dir.is_dir() else run_dir
    meta = read_model_meta(model_path)  # clear error for missing/corrupt/foreign files
    from ..models.io import load_model_file

    load_model_file(model_path)  # weights must fit the recorded configuration
    sha = model_sha256(model_path)
    keys = take_shard(select_fields(store, split), shard)
    for key in keys[:1]:  # validate the model's dimensionality and the tiling before any work
        shape = store.field_meta(key)["shape_zyx"]
        check_model_fits(meta, model_path, shape, key)
        t, o, d = field_tiling(shape, tile=tile, overlap=overlap,
                               depth=meta["model_config"]["depth"])
        plan_tiles(shape, tile=t, overlap=o, divisor=d)
    done_all = store.done_fields("predict", name)
    others = sorted(k for k, m in done_all.items() if m.get("model_sha256") != sha)
    if others and not overwrite:
        m = done_all[others[0]]
        raise ValueError(
            f"prediction {name!r} of field {others[0]} was made by another model "
            f"({m.get('model_path')}, sha256 {m.get('model_sha256', '')[:12]}...); "
            "choose another --name or pass --overwrite")
    outside = [k for k in others if k not in set(keys)]
    if outside:  # --overwrite of part of a prediction would leave two models under one name
        raise ValueError(
            f"prediction {name!r} also holds {len(outside)} field(s) outside --split {split} "
            f"made by another model (e.g. {outside[0]}); replacing only split {split!r} would "
            "mix two models under one name: use --split all with --overwrite, or another --name")
    finalize = finalize_predictions if shard is None else (lambda store, name: None)
    with store.writing(f"predict {name}", shard=shard):
        claim_prediction(store, name, sha, model_path, overwrite=overwrite)
        todo, skipped = [], 0
        for key in keys:
            done = done_all.get(key)
            fresh = done and done.get("inputs") == store.input_stamp(key, "signal")
            damaged = _prediction_damage(store, key, name, done) if fresh else None
            if fresh and not overwrite and not damaged:
                skipped += 1
                continue
            if done:
                if not overwrite:
                    log.warning("predict %s: %s; predicting it again", name,
                                f"the prediction of field {key} is damaged ({damaged})"
                                if damaged else
                                f"field {key} was re-ingested since its prediction")
                store.clear_done("predict", key, name=name)
            todo.append(key)
        t0 = time.perf_counter()
        voxels = computed = 0
        failures: list[dict] = []
        if todo:
            from ..io.fields import create_well_groups

            create_well_groups(store, todo, prediction=name)

            def rate(key, res):
                nonlocal voxels, computed
                voxels += res["voxels"]
                computed += res["computed_voxels"]
                return f"{voxels / (time.perf_counter() - t0):.3g} voxel/s"

            _, failures = run_fields(
                todo, lambda client, key: client.submit(
                    predict_field, str(store.root), key, str(model_path), sha, name,
                    tile=tuple(tile), overlap=tuple(overlap), device=device,
                    batch_size=batch_size, pure=False, key=f"predict-{name}-{key.id}-{sha[:8]}"),
                stage=f"predict {name!r}", desc=f"predict {name}", on_error=on_error,
                cluster=cluster, workers=workers, cluster_config=cluster_config,
                progress_stream=progress_stream, error=PredictError, on_result=rate,
                describe=lambda k: f"{k} ({store.field_url(k)})",
                on_failure=(lambda: finalize(store, name),
                            f"rewriting the plate metadata of prediction {name!r}"))
        if shard is None:  # also after a job array, whose tasks leave this to this run
            finalize_predictions(store, name)
            write_failures(store.table_path(f"failures_predict_{name}"), failures, "predict",
                           name)
    return {"done": len(todo) - len(failures), "skipped": skipped, "failed": len(failures),
            "voxels": voxels, "computed_voxels": computed, "seconds": time.perf_counter() - t0}
