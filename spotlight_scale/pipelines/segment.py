"""Segment: nuclei labels of a stored image for every field, mapped over Dask workers.

Reads ``target``, ``signal`` or ``prediction:NAME`` of each field, segments it
(watershed recipe, or Cellpose with a user-supplied model) and writes NGFF
labels ``labels/<NAME>`` beside that image (into the raw field for target or signal,
into the prediction's field for ``prediction:NAME``, so that opening either shows its
segmentation), with colors and per-nucleus properties, then the ``segment`` marker
(with a settings fingerprint) last. Fields larger than ``max_voxels`` are segmented
in overlapping blocks and stitched (:mod:`spotlight_scale.chunked.labels`).

The watershed works in micrometres: the voxel size comes from the store and every
size from one nucleus diameter, given (``--diameter``) or estimated per field on the
field's target, the real nuclear stain, whichever image is segmented
(:func:`spotlight_scale.core.segment.estimate_diameter`). A 2D field (one z plane,
:mod:`spotlight_scale.core.dims`) is segmented in 2D and its labels stored (1, Y, X). The diameter
used, and whether it was estimated, is written into the labels group's attributes
(key ``spotlight_scale_segmentation``) and into the ``segment`` marker.

The foreground level of the watershed (``foreground``): ``otsu`` (the recipe: Otsu on
the equalised image), ``model`` (the level the prediction's model was trained to put the
foreground boundary at, in stored units, read from the prediction's attributes: only for
``prediction:NAME``) or a number in image units; the choice and the level used are
recorded in the labels' attributes and the marker (keys ``foreground``,
``foreground_level``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from typing import Any

import numpy as np

from ..core import dims
from ..core.segment import WatershedConfig, resolve_diameter, watershed_nuclei
from ..errors import SetupError
from ..io.store import FieldKey, Store, StoreError, check_name

log = logging.getLogger(__name__)

#: Attribute of ``labels/<NAME>`` with the segmentation settings that made it.
SEGMENTATION_ATTR = "spotlight_scale_segmentation"
FOREGROUND_CHOICES = ("otsu", "model")


def parse_foreground(value) -> str | float:
    """``otsu``, ``model`` or a finite number (the ``--foreground`` option)."""
    if isinstance(value, str) and value.strip().lower() in FOREGROUND_CHOICES:
        return value.strip().lower()
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--foreground {value!r}: expected otsu, model or a number "
                         "(image units)") from None
    if not np.isfinite(level):
        raise ValueError(f"--foreground {value!r}: the level must be finite")
    return level


def model_foreground_level(store: Store, key: FieldKey, prediction: str) -> float:
    """The foreground threshold (stored units) of the model that made ``prediction`` of
    ``key``, from the prediction's attributes; a clear error when its model file did not
    record one (written before it did)."""
    attrs = dict(store.open_field(key, prediction=prediction).attrs).get("spotlight_scale") or {}
    model = attrs.get("model") or {}
    level = model.get("foreground_threshold")
    if level is None:
        raise ValueError(f"field {key}: prediction {prediction!r} was made with model file "
                         f"{model.get('path', '(unknown)')}, which records no foreground "
                         "threshold (written before model files did); train it again, or give "
                         "--foreground otsu or a number")
    return float(level)


def _segment_array(image: np.ndarray, method: str, cfg: WatershedConfig, threshold,
                   cellpose_model, voxel_size, level=None):
    from .. import backend

    if method == "watershed":
        x = backend.to_device(image, "auto")
        return backend.to_host(watershed_nuclei(x, cfg, voxel_size=voxel_size,
                                                threshold=threshold, level=level))
    if method == "cellpose":
        try:
            from cellpose import models
        except ImportError:
            raise SetupError("--method cellpose needs the cellpose extra: "
                               "pip install 'spotlight-scale[cellpose]'") from None
        model = models.CellposeModel(pretrained_model=str(cellpose_model),
                                     gpu=backend.gpu_available())
        img = np.where(image < threshold, 0, image) if threshold is not None else image
        planar = dims.is_planar(img.shape)  # a 2D field: Cellpose's 2D model on its plane
        masks = model.eval(dims.squeeze_plane(img),
                           **({} if planar else {"do_3D": True, "z_axis": 0}))[0]
        return dims.expand_plane(np.asarray(masks).astype(np.uint32), planar)
    raise ValueError(f"unknown segmentation method {method!r}")


def segment_field(store_root: str, key: FieldKey, image: str, name: str, *, method: str,
                  cfg: WatershedConfig, threshold, cellpose_model, fingerprint: str,
                  max_voxels: int, chunk_overlap: int = 32,
                  foreground: str | float = "otsu") -> dict[str, Any]:
    """Segment one field and write its labels (runs on a worker)."""
    from ..chunked.labels import segment_chunked
    from ..core.features import label_properties
    from ..io.fields import build_pyramid
    from ..io.omezarr import delete_labels, write_labels_zyx

    store = Store(store_root)
    inputs = store.input_stamp(key, image)
    data = store.read_named(key, image)
    voxel = store.voxel_size(key)
    info: dict[str, Any] = {"method": method, "image": image, "voxel_size_um": list(voxel)}
    level = (None if foreground == "otsu" else model_foreground_level(store, key, image.partition(":")[2])
             if foreground == "model" else float(foreground))
    info.update(foreground=foreground if isinstance(foreground, str) else "value",
                foreground_level=level)
    if method == "watershed":
        # One diameter for the whole field, blocks included, measured on the field's real
        # nuclear stain (the target) whichever image is segmented: the labels of a
        # prediction and of its target are then made by the same instrument, and a
        # prediction that fills the background cannot shrink the nuclei it is judged on.
        ref = data if image == "target" and threshold is None else store.read(key, "target")
        try:
            cfg, estimated = resolve_diameter(ref, cfg, voxel_size=voxel)
        except ValueError as exc:
            raise ValueError(f"field {key} (target): {exc}") from None
        info.update(diameter_um=round(float(cfg.diameter_um), 4),
                    diameter_estimated=bool(estimated),
                    diameter_source="target" if estimated else "given",
                    config=dataclasses.asdict(cfg))
    run = lambda x: _segment_array(x, method, cfg, threshold, cellpose_model, voxel, level)
    if data.size > max_voxels:
        side = max(64, int(round((max_voxels / data.shape[0]) ** 0.5)))
        labels = segment_chunked(data, run, (data.shape[0], side, side),
                                 (0, chunk_overlap, chunk_overlap))
    else:
        labels = run(data)
    labels = labels.astype(np.uint32)
    raw = store.image(key)
    # labels go beside the image they segment, with as many levels: a prediction's into its
    # field, where opening the prediction shows them (an older copy in the raw field is removed)
    kind, _, pname = image.partition(":")
    prediction = pname if kind == "prediction" else None
    if prediction is not None:
        delete_labels(store.open_field(key, mode="a"), name)
    dest = store.open_field(key, prediction=prediction, mode="a")
    n_levels = len([k for k in dest.array_keys() if k.startswith("s")])
    write_labels_zyx(dest, name, build_pyramid(labels, n_levels, labels=True),
                     voxel_size=store.voxel_size(key), chunks_zyx=tuple(raw.chunks[1:]),
                     fmt=store.ngff_format(),
                     properties=label_properties(labels, data, store.voxel_size(key)))
    dest["labels"][name].attrs[SEGMENTATION_ATTR] = info
    n = int(np.unique(labels[labels > 0]).size)
    from ..io.verify import record

    stored = record(store.field_url(key, prediction) / "labels" / name)
    store.mark_done("segment", key, {"image": image, "method": method, "fingerprint": fingerprint,
                                     "n_objects": n, "inputs": inputs, "stored": stored,
                                     "diameter_um": info.get("diameter_um"),
                                     "foreground": info["foreground"],
                                     "foreground_level": level}, name=name)
    return {"field": key.id, "n_objects": n}


def _labels_damage(store: Store, key: FieldKey, name: str, marker: dict) -> str | None:
    """Why labels ``name`` of ``key`` no longer hold what segment wrote (``None``: intact, or
    not there at all, which the caller handles)."""
    from ..io.verify import damage

    group = store.field_url(key, store.labels_prediction(key, name)) / "labels" / name
    return damage(group, marker.get("stored")) if group.is_dir() else None


def segment(store_root, *, image: str, name: str, method: str = "watershed",
            config: WatershedConfig | None = None, threshold: float | None = None,
            cellpose_model=None, split: str = "all", cluster: str = "local",
            workers: int | None = None, cluster_config=None, overwrite: bool = False,
            max_voxels: int = 256 * 1024 * 1024, on_error: str = "fail",
            shard: tuple[int, int] | None = None, progress_stream=sys.stderr,
            foreground: str | float = "otsu") -> dict[str, Any]:
    """Segment ``image`` of every selected field into labels ``name``.

    ``foreground``: ``otsu`` (the recipe), ``model`` (the prediction's model threshold,
    ``image`` must be ``prediction:NAME``) or a level in image units (see module notes).

    A field is redone when its labels are missing or were made from an image
    that has since changed (re-ingested, or predicted again by another model).
    ``on_error="skip"`` goes on past failing fields and lists them in
    ``STORE/tables/failures_segment_<NAME>.parquet``. ``shard=(i, n)``: only fields
    ``i, i + n, ...`` (a job-array task); the failures table is left to an unsharded run.
    """
    from . import take_shard
    from .fieldrun import check_on_error, run_fields, write_failures
    from .predict import select_fields

    check_name(name, "labels name")
    check_on_error(on_error)
    if name == "gt":
        raise ValueError("labels name 'gt' is reserved for the ground truth")
    if method == "cellpose" and cellpose_model is None:
        raise ValueError("--method cellpose needs --cellpose-model PATH (weights cannot be "
                         "downloaded here; point it at a Cellpose model file)")
    cfg = config or WatershedConfig()
    cfg.validate()
    store = Store(store_root)
    keys = take_shard(select_fields(store, split), shard)
    kind, _, pname = image.partition(":")
    if image not in ("signal", "target") and not (kind == "prediction" and pname):
        raise ValueError(f"unknown image {image!r}: expected target, signal or prediction:NAME")
    if kind == "prediction":
        missing = [k for k in keys if not store.is_done("predict", k, name=pname)]
        if missing:
            raise StoreError(f"{store.root}: prediction {pname!r} missing for {len(missing)} "
                             f"field(s), e.g. {missing[0]}; run predict --name {pname} first "
                             "(or choose --split)")
    foreground = parse_foreground(foreground)
    if foreground != "otsu" and method != "watershed":
        raise ValueError(f"--foreground {foreground}: only the watershed recipe has a "
                         f"foreground threshold to replace (not --method {method})")
    if foreground == "model":
        if kind != "prediction":
            raise ValueError(f"--foreground model needs --image prediction:NAME (the level is "
                             f"the prediction's model's), not {image!r}")
        for k in keys:  # fail before any work when a model file recorded no threshold
            model_foreground_level(store, k, pname)
    fp = hashlib.sha256(json.dumps({"image": image, "method": method, "threshold": threshold,
                                    **({} if foreground == "otsu" else
                                       {"foreground": foreground}),
                                    "cfg": dataclasses.asdict(cfg),
                                    "model": str(cellpose_model)}, sort_keys=True).encode()
                        ).hexdigest()[:16]
    objects = 0
    failures: list[dict] = []
    with store.writing(f"segment {name}", shard=shard):
        todo, skipped = [], 0
        for key in keys:
            done = store.is_done("segment", key, name=name)
            damaged = _labels_damage(store, key, name, done) if done else None
            if damaged:
                log.warning("segment %s: labels of field %s are damaged (%s); segmenting it "
                            "again", name, key, damaged)
                store.clear_done("segment", key, name=name)
                done = None
            if done and not store.has_labels(key, name):  # labels gone (their prediction re-made)
                store.clear_done("segment", key, name=name)
                done = None
            if done and done.get("fingerprint") == fp and not overwrite:
                if done.get("inputs") == store.input_stamp(key, image):
                    skipped += 1
                    continue
                log.warning("segment %s: %s of field %s changed since it was segmented; "
                            "segmenting it again", name, image, key)
            elif done and not overwrite:
                raise ValueError(f"labels {name!r} of field {key} were made with other settings "
                                 f"({done.get('image')}, {done.get('method')}); use --overwrite "
                                 "or another --name")
            if done:
                old = store.labels_prediction(key, name)  # labels of another prediction: drop them
                if old is not None and old != (pname if kind == "prediction" else None):
                    from ..io.omezarr import delete_labels

                    delete_labels(store.open_field(key, prediction=old, mode="a"), name)
                store.clear_done("segment", key, name=name)
            todo.append(key)
        if todo:
            results, failures = run_fields(
                todo, lambda client, k: client.submit(
                    segment_field, str(store.root), k, image, name, method=method, cfg=cfg,
                    threshold=threshold, cellpose_model=cellpose_model, fingerprint=fp,
                    max_voxels=max_voxels, foreground=foreground, pure=False,
                    key=f"segment-{name}-{k.id}-{fp}"),
                stage=f"segment {name!r}", desc=f"segment {name}", on_error=on_error,
                cluster=cluster, workers=workers, cluster_config=cluster_config,
                progress_stream=progress_stream, total=("n_objects", "nuclei"))
            objects = sum(res["n_objects"] for _, res in results)
        if shard is None:  # also after a job array, whose tasks leave this to this run
            write_failures(store.table_path(f"failures_segment_{name}"), failures, "segment",
                           name)
    return {"done": len(todo) - len(failures), "skipped": skipped, "failed": len(failures),
            "objects": objects}
