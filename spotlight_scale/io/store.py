"""The spotlight-scale store: a directory of OME-Zarr HCS plates plus versioned tables.

Layout (``STORE_LAYOUT_VERSION`` = 2)::

    STORE/
      spotlight.json                         store manifest: layout version, NGFF version,
                                             ingest settings (isotropic voxel, chunks, patch)
      spotlight.lock                         present while a command writes (owner, host, pid)
      <PLATE>.zarr/                          OME-Zarr HCS plate (NGFF 0.5 default, 0.4 on request)
        <ROW>/<COL>/<FIELD>/                 one field: CZYX image, channels "signal","target"
          s0, s1, ...                        pyramid; every level halves z, y and x
          labels/gt                          ground-truth nuclei (NGFF labels)
          labels/<NAME>                      labels written by `segment --name NAME` (of
                                             target or signal)
          zarr attrs "spotlight_scale"       field metadata + per-channel statistics
      predictions/<NAME>/model.json          the model NAME belongs to (created exclusively)
      predictions/<NAME>/<PLATE>.zarr/       `predict --name NAME`: an HCS plate with the same
        <ROW>/<COL>/<FIELD>/                 rows/cols/fields, one channel "prediction" (CZYX, C=1)
          labels/<NAME>                      labels `segment --image prediction:NAME` wrote
      tables/fields.parquet                  one row per ingested field (keys + statistics)
      tables/failures.parquet                rows that failed with `ingest --on-error skip`
      tables/failures_<STAGE>_<NAME>.parquet fields that failed with `predict|segment
                                             --on-error skip`
      index/patches/<PLATE>/<WELL>_<FIELD>.parquet
                                             foreground patch index of one field
      _done/<STAGE>[/<NAME>]/<PLATE>/<WELL>/<FIELD>.json
                                             completion markers, written last and atomically

A field is *done* for a stage only when its marker exists; everything a stage
writes for a field is written before the marker. Markers carry a settings
fingerprint so a re-run can tell whether old work still counts, and the stamp
of their inputs (:meth:`Store.input_stamp`): the ingest marker holds the
content fingerprint of the field's files (see ``pipelines/ingest.py``), a
prediction or labels marker the stamp of the image it was made from, so work
made from data that has since changed is redone, not reported done. They also record
what the stage wrote (file count, sizes: :mod:`spotlight_scale.io.verify`), so a re-run
redoes a field that was damaged since, instead of skipping it.

Every chunk of every array is written (even chunks equal to the fill value),
so a chunk missing inside an array's extent is lost data; reads through
:class:`Store` refuse it (:mod:`spotlight_scale.io.chunks`). Layout 1 stores
skipped empty chunks and are refused: re-ingest them.

Field keys: ``plate`` (str), ``well`` canonical as row letters + 2-digit column
(``B3`` -> ``B03``, path ``B/03``), ``field`` an integer (path ``"0"``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..versioning import STORE_LAYOUT_VERSION, check_version
from .atomic import atomic_write_json

STORE_MANIFEST = "spotlight.json"
CHANNELS = ("signal", "target")
PREDICTION_CHANNEL = "prediction"
ATTRS_KEY = "spotlight_scale"

_WELL_RE = re.compile(r"^([A-Za-z]{1,2})0*([0-9]{1,3})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoreError(RuntimeError):
    """The store is missing something a stage needs; the message says what to run."""


#: The largest plate format (1536 wells): rows A..AF, columns 1..48.
MAX_ROWS, MAX_COLUMNS = 32, 48


def _row_number(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - ord("A") + 1
    return n


def parse_well(well: str) -> tuple[str, str]:
    """``"B3"``/``"B03"``/``"b03"`` -> ``("B", "03")``; raise ``ValueError`` otherwise.

    Rows A..AF and columns 1..48 (a 1536-well plate, the largest format) are accepted.
    """
    m = _WELL_RE.match(str(well).strip())
    if not m or int(m.group(2)) == 0:
        raise ValueError(f"bad well name {well!r}: expected row letters then column number, e.g. B03")
    if _row_number(m.group(1)) > MAX_ROWS or int(m.group(2)) > MAX_COLUMNS:
        raise ValueError(f"bad well name {well!r}: plates have rows A-AF and columns 1-48 at most "
                         "(1536 wells)")
    return m.group(1).upper(), f"{int(m.group(2)):02d}"


def canonical_well(well: str) -> str:
    row, col = parse_well(well)
    return f"{row}{col}"


def check_name(name: str, what: str = "name") -> str:
    """Names used as path components (plate, prediction, labels) must be simple."""
    if not _NAME_RE.match(str(name)):
        raise ValueError(
            f"bad {what} {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.')"
        )
    return str(name)


@dataclass(frozen=True, order=True)
class FieldKey:
    """Identity of one field (one z-stack) in a screen."""

    plate: str
    well: str
    field: int

    def __post_init__(self):
        object.__setattr__(self, "well", canonical_well(self.well))
        object.__setattr__(self, "field", int(self.field))
        if self.field < 0:
            raise ValueError(f"bad field number {self.field}: fields are numbered from 0")

    @property
    def row(self) -> str:
        return parse_well(self.well)[0]

    @property
    def column(self) -> str:
        return parse_well(self.well)[1]

    @property
    def path(self) -> str:
        """Path of the field group inside its plate: ``B/03/0``."""
        return f"{self.row}/{self.column}/{self.field}"

    @property
    def id(self) -> str:
        return f"{self.plate}/{self.well}/{self.field}"

    def __str__(self) -> str:  # used in messages and progress
        return self.id

    @classmethod
    def from_id(cls, text: str) -> "FieldKey":
        try:
            plate, well, field = text.split("/")
            return cls(plate, well, int(field))
        except ValueError:
            raise ValueError(f"bad field id {text!r}: expected PLATE/WELL/FIELD") from None


@dataclass(frozen=True)
class PatchIndex:
    """Foreground patch origins of one field (ZYX voxel origins at level 0)."""

    origins: np.ndarray  # (N, 3) int32
    fg_fraction: np.ndarray  # (N,) float32
    patch_shape: tuple[int, int, int]
    stride: tuple[int, int, int]
    min_fraction: float
    threshold: float

    def __len__(self) -> int:
        return int(self.origins.shape[0])


class Store:
    """Read (and, for stage code, write) a spotlight-scale store.

    Parameters
    ----------
    root : path
        Store directory.
    create : bool
        Create the store manifest when absent (``ingest`` does this).
    ngff : {"0.5", "0.4"}
        NGFF version for a new store; an existing store keeps its own.
    settings : dict, optional
        Ingest settings recorded in ``spotlight.json`` for a new store.
    """

    def __init__(self, root: str | Path, *, create: bool = False, ngff: str = "0.5",
                 settings: dict | None = None):
        self.root = Path(root)
        manifest = self.root / STORE_MANIFEST
        if manifest.exists():
            self.manifest = _read_store_manifest(self.root)
            check_version("store layout", self.manifest.get("layout_version"),
                          STORE_LAYOUT_VERSION, str(manifest),
                          hint="re-ingest the raw data into a new store")
        elif create:
            if ngff not in ("0.4", "0.5"):
                raise ValueError(f"ngff must be '0.4' or '0.5', got {ngff!r}")
            from .. import __version__

            self.manifest = {
                "layout_version": STORE_LAYOUT_VERSION,
                "ngff": ngff,
                "created_by": f"spotlight-scale {__version__}",
                "settings": settings or {},
            }
            atomic_write_json(manifest, self.manifest)
        else:
            if not self.root.exists():
                raise StoreError(f"{self.root}: no such store; run `spotlight-scale ingest` first")
            raise StoreError(
                f"{self.root}: not a spotlight-scale store (no {STORE_MANIFEST}); "
                "run `spotlight-scale ingest MANIFEST STORE` first"
            )

    def ingest_command(self, key: FieldKey | None = None) -> str:
        """The ``ingest`` command line that rebuilds this store's fields with its settings
        (the manifest recorded in ``key``'s ingest marker, else ``MANIFEST``)."""
        marker = (self.is_done("ingest", key) if key is not None else None) or {}
        return ingest_command(self.root, self.settings, marker.get("manifest"))

    def predict_command(self, key: FieldKey, name: str) -> str:
        """The ``predict`` command line that redoes prediction ``name`` of ``key``."""
        marker = self.is_done("predict", key, name=name) or {}
        try:
            split = self.field_meta(key).get("split", "all")
        except (StoreError, ValueError):
            split = "all"
        return (f"spotlight-scale predict {self.root} {marker.get('model_path', 'MODEL')} "
                f"--name {name} --split {split}")

    def writing(self, command: str, shard: tuple[int, int] | None = None):
        """Context manager holding the store's lock while ``command`` writes into it
        (:func:`spotlight_scale.io.lock.exclusive`; ``shard``: a job-array task's lock);
        readers are not blocked."""
        from .lock import exclusive

        return exclusive(self.root, command, shard=shard)

    # ------------------------------------------------------------------ basics
    @property
    def ngff(self) -> str:
        return str(self.manifest["ngff"])

    @property
    def zarr_format(self) -> int:
        return 3 if self.ngff == "0.5" else 2

    @property
    def settings(self) -> dict:
        return dict(self.manifest.get("settings", {}))

    def ngff_format(self):
        """The ome-zarr-py ``Format`` object matching this store."""
        from ome_zarr.format import FormatV04, FormatV05

        return FormatV05() if self.ngff == "0.5" else FormatV04()

    def plate_path(self, plate: str, prediction: str | None = None) -> Path:
        if prediction is None:
            return self.root / f"{check_name(plate, 'plate name')}.zarr"
        return self.root / "predictions" / check_name(prediction, "prediction name") / f"{plate}.zarr"

    def field_url(self, key: FieldKey, prediction: str | None = None) -> Path:
        return self.plate_path(key.plate, prediction) / key.path

    def open_field(self, key: FieldKey, *, prediction: str | None = None, mode: str = "r"):
        """The zarr group of a field (raw plate, or a prediction plate)."""
        import zarr

        path = self.field_url(key, prediction)
        if mode == "r" and not path.exists():
            what = f"prediction {prediction!r}" if prediction else "field"
            raise StoreError(f"{self.root}: {what} {key} not found at {path}")
        try:
            return zarr.open_group(str(path), mode=mode, zarr_format=self.zarr_format)
        except ValueError:  # JSONDecodeError: damaged metadata
            self._raise_bad_metadata(path, key, prediction)
            raise

    def _raise_bad_metadata(self, path: Path, key: FieldKey, prediction: str | None) -> None:
        """Raise :class:`StoreError` naming the metadata file under ``path`` (or a parent group)
        that does not parse, with the command that rewrites it; return if all parse."""
        from .verify import bad_metadata

        bad = bad_metadata(path, up_to=self.root)
        if bad is None:
            return
        how = (f"re-run `{self.predict_command(key, prediction)}` (it redoes damaged fields)"
               if prediction else
               f"re-run `{self.ingest_command(key)}` (it redoes damaged fields)")
        what = f"prediction {prediction!r} of field {key}" if prediction else f"field {key}"
        raise StoreError(f"{bad}: the metadata of {what} is damaged; {how}")

    # ------------------------------------------------------------------ fields
    def fields(self, split: str | None = None) -> list[FieldKey]:
        """Ingested (done) fields, sorted; ``split`` filters (``None`` or ``"all"``: every field)."""
        out = []
        for key, info in self._iter_markers("ingest"):
            if split in (None, "all") or info.get("split") == split:
                out.append(key)
        return sorted(out)

    def field_meta(self, key: FieldKey) -> dict[str, Any]:
        """The field's ``spotlight_scale`` attributes: shape, voxel size, split, stats, source."""
        attrs = self.open_field(key).attrs.asdict()
        meta = attrs.get(ATTRS_KEY)
        if meta is None:
            raise StoreError(f"{self.field_url(key)}: no spotlight_scale attributes; re-run "
                             f"`{self.ingest_command(key)}` (it redoes damaged fields)")
        check_version("field attributes", meta.get("layout_version"), STORE_LAYOUT_VERSION,
                      str(self.field_url(key)))
        return meta

    def stats(self, key: FieldKey, channel: str) -> dict[str, float]:
        """Per-channel statistics (otsu, mean, std, min, max, p0_1, p99_9, fg_fraction)."""
        meta = self.field_meta(key)
        try:
            return dict(meta["stats"][channel])
        except KeyError:
            raise StoreError(
                f"{self.field_url(key)}: no statistics for channel {channel!r}; "
                "run `spotlight-scale ingest` (it computes them)"
            ) from None

    def voxel_size(self, key: FieldKey) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.field_meta(key)["voxel_size_um"])

    def image(self, key: FieldKey, level: int = 0, *, prediction: str | None = None):
        """The CZYX array of a field at pyramid ``level`` (lazy; index it to read).

        Reads refuse missing or corrupt chunks, naming the field
        (:class:`~spotlight_scale.io.chunks.VerifiedArray`).
        """
        if prediction is None:
            return self._verified(self.open_field(key), f"s{level}", f"field {key}",
                                  lambda: f"re-run `{self.ingest_command(key)}` (it redoes "
                                          "damaged fields)")
        return self._verified(self.open_field(key, prediction=prediction), f"s{level}",
                              f"prediction {prediction!r} of field {key}",
                              lambda: f"re-run `{self.predict_command(key, prediction)}` (it "
                                      "redoes damaged fields)")

    def labels(self, key: FieldKey, name: str, level: int = 0):
        """The ZYX array of labels ``name`` of a field (lazy, verified like :meth:`image`)."""
        grp = self.labels_group(key, name)
        if grp is None:
            raise StoreError(f"{self.field_url(key)}: no labels {name!r}")

        def hint() -> str:  # built only for an error message
            if name == "gt":
                return f"re-run `{self.ingest_command(key)}` (it redoes damaged fields)"
            image = (self.is_done("segment", key, name=name) or {}).get("image", "IMAGE")
            return (f"re-run `spotlight-scale segment {self.root} --image {image} --name "
                    f"{name}` with the options it was made with (it redoes damaged fields)")

        return self._verified(grp, f"s{level}", f"labels {name!r} of field {key}", hint)

    def _verified(self, group, array: str, what: str, hint: str):
        from .chunks import VerifiedArray

        try:
            arr = group[array]
        except KeyError:
            raise StoreError(f"{what}: array {array} is missing from {group.store_path}; "
                             f"{hint() if callable(hint) else hint}") from None
        except ValueError:  # JSONDecodeError: the array's metadata is damaged
            from .chunks import _chunk_dir
            from .verify import bad_metadata

            folder = _chunk_dir(group)
            bad = bad_metadata(folder / array) if folder is not None else None
            if bad is None:
                raise
            raise StoreError(f"{what}: {bad}; {hint() if callable(hint) else hint}") from None
        return VerifiedArray(arr, f"{what}, {array}", hint)

    def channel_index(self, channel: str) -> int:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        return CHANNELS.index(channel)

    def read(self, key: FieldKey, channel: str, region: tuple[slice, ...] | None = None,
             level: int = 0) -> np.ndarray:
        """Read a ZYX region of one channel, touching only the chunks it overlaps."""
        arr = self.image(key, level)
        c = self.channel_index(channel)
        region = region if region is not None else (slice(None),) * 3
        return arr[(c, *region)]

    def read_named(self, key: FieldKey, image: str, region=None, level: int = 0) -> np.ndarray:
        """Read ``signal``, ``target``, ``prediction:NAME`` or ``labels:NAME`` (ZYX)."""
        region = region if region is not None else (slice(None),) * 3
        kind, _, name = image.partition(":")
        if image in CHANNELS:
            return self.read(key, image, region, level)
        if kind == "prediction" and name:
            if not self.is_done("predict", key, name=name):
                raise StoreError(f"{self.root}: no prediction {name!r} for field {key}; "
                                 f"run `spotlight-scale predict ... --name {name}`")
            return self.image(key, level, prediction=name)[(0, *region)]
        if kind == "labels" and name:
            return self.labels(key, name, level)[region]
        raise ValueError(
            f"unknown image {image!r}: expected signal, target, prediction:NAME or labels:NAME"
        )

    def labels_names(self, key: FieldKey) -> list[str]:
        """Labels images listed in the raw field (``gt`` and labels of target or signal)."""
        grp = self.open_field(key)
        if "labels" not in grp:
            return []
        return list(grp["labels"].attrs.asdict().get("ome", grp["labels"].attrs.asdict())
                    .get("labels", []))

    def labels_prediction(self, key: FieldKey, name: str) -> str | None:
        """The prediction whose field holds labels ``name`` of ``key``; None: the raw field.

        ``segment`` stores the labels of ``prediction:P`` in P's field (so that opening
        the prediction shows its segmentation) and all other labels in the raw field; its
        marker records the image it segmented.
        """
        done = self.is_done("segment", key, name=name) or {}
        kind, _, pred = str(done.get("image", "")).partition(":")
        return pred if kind == "prediction" and pred else None

    def labels_group(self, key: FieldKey, name: str):
        """The zarr group of labels ``name`` of ``key``, or None. Looked for beside the image
        they segment, then in the raw field (where stores written before kept every labels
        image)."""
        import zarr

        for pred in dict.fromkeys([self.labels_prediction(key, name), None]):
            path = self.field_url(key, pred) / "labels" / name
            if path.exists():
                return zarr.open_group(str(path), mode="r", zarr_format=self.zarr_format)
        return None

    def has_labels(self, key: FieldKey, name: str) -> bool:
        return self.labels_group(key, name) is not None

    # ------------------------------------------------------------------ tables
    def table_path(self, name: str) -> Path:
        return self.root / "tables" / f"{name}.parquet"

    def fields_table(self):
        """The per-field statistics table (pandas DataFrame)."""
        from .tables import read_table

        path = self.table_path("fields")
        if not path.exists():
            raise StoreError(f"{path}: no fields table; run `spotlight-scale ingest`")
        return read_table(path, "fields")

    def patch_index_path(self, key: FieldKey) -> Path:
        return self.root / "index" / "patches" / key.plate / f"{key.well}_{key.field}.parquet"

    def patch_index(self, key: FieldKey) -> PatchIndex:
        """The foreground patch index ingest wrote for ``key``."""
        from .tables import read_patch_index

        path = self.patch_index_path(key)
        if not path.exists():
            raise StoreError(f"{path}: no foreground patch index for field {key}; re-run "
                             f"`{self.ingest_command(key)}` (it redoes damaged fields)")
        return read_patch_index(path)

    # ------------------------------------------------------------------ markers
    def marker_path(self, stage: str, key: FieldKey, name: str | None = None) -> Path:
        base = self.root / "_done" / stage
        if name is not None:
            base = base / check_name(name)
        return base / key.plate / key.well / f"{key.field}.json"

    def is_done(self, stage: str, key: FieldKey, name: str | None = None) -> dict | None:
        """The marker's content if ``key`` is done for ``stage`` (and ``name``), else None."""
        path = self.marker_path(stage, key, name)
        if not path.exists():
            return None
        return _read_marker(path)

    def mark_done(self, stage: str, key: FieldKey, info: dict, name: str | None = None) -> None:
        """Write the completion marker (atomically). Call this last."""
        payload = {"layout_version": STORE_LAYOUT_VERSION, "stage": stage, "field": key.id, **info}
        atomic_write_json(self.marker_path(stage, key, name), payload)

    def clear_done(self, stage: str, key: FieldKey, name: str | None = None) -> None:
        path = self.marker_path(stage, key, name)
        if path.exists():
            path.unlink()

    def done_names(self, stage: str) -> list[str]:
        """Names (predictions, labels) for which ``stage`` has written any marker."""
        base = self.root / "_done" / stage
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []

    def _iter_markers(self, stage: str, name: str | None = None) -> Iterator[tuple[FieldKey, dict]]:
        base = self.root / "_done" / stage
        if name is not None:
            base = base / name
        if not base.exists():
            return
        for path in sorted(base.glob("*/*/*.json")):
            info = _read_marker(path)
            if info is None:
                continue
            key = FieldKey(path.parent.parent.name, path.parent.name, int(path.stem))
            yield key, info

    def done_fields(self, stage: str, name: str | None = None) -> dict[FieldKey, dict]:
        return dict(self._iter_markers(stage, name))

    # ------------------------------------------------------------------ provenance
    def input_stamp(self, key: FieldKey, image: str) -> str | None:
        """A short digest that changes whenever ``image`` of ``key`` is rewritten with other
        content: ``signal``/``target``/``labels:gt`` -> the ingest content fingerprint,
        ``prediction:NAME`` -> the model and the stamp of the signal it was made from,
        ``labels:NAME`` -> the segment settings and the stamp of their image. ``None`` when
        the image has not been made (no marker)."""
        import hashlib

        kind, _, name = image.partition(":")
        if image in CHANNELS or image == "labels:gt":
            marker, parts = self.is_done("ingest", key), ("fingerprint",)
        elif kind == "prediction" and name:
            marker, parts = self.is_done("predict", key, name=name), ("model_sha256", "inputs")
        elif kind == "labels" and name:
            marker, parts = self.is_done("segment", key, name=name), ("fingerprint", "inputs")
        else:
            raise ValueError(f"unknown image {image!r}: expected signal, target, "
                             "prediction:NAME or labels:NAME")
        if marker is None:
            return None
        text = json.dumps([marker.get(p) for p in parts])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def clear_derived(self, key: FieldKey, *, predictions: bool = True) -> dict[str, list[str]]:
        """Forget what was made from field ``key`` before ingest rewrites it: its segment
        markers (the labels live in the field group, which goes) and, when ``predictions``
        (the content changed), its predict markers and prediction arrays. Returns the names
        removed, by stage. Markers go first, so an interruption leaves the work undone,
        never falsely done."""
        import shutil

        removed: dict[str, list[str]] = {}
        for stage in ("segment", "predict") if predictions else ("segment",):
            for name in self.done_names(stage):
                path = self.marker_path(stage, key, name)
                if path.exists():
                    path.unlink()
                    removed.setdefault(stage, []).append(name)
        pred_root = self.root / "predictions"
        for pdir in sorted(pred_root.iterdir()) if predictions and pred_root.exists() else []:
            field_dir = pdir / f"{key.plate}.zarr" / key.path
            if field_dir.exists():
                shutil.rmtree(field_dir)
                if pdir.name not in removed.get("predict", []):
                    removed.setdefault("predict", []).append(pdir.name)
        return removed


def _read_marker(path: Path) -> dict | None:
    """A marker's content; ``None`` (not done: the stage redoes the field) when it does not
    parse (markers are written atomically, so only outside damage truncates one)."""
    import logging

    try:
        info = json.loads(path.read_text())
        if isinstance(info, dict):
            return info
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        pass
    logging.getLogger(__name__).warning("%s: damaged completion marker (it does not parse); "
                                        "its field counts as not done and is redone", path)
    return None


def ingest_command(root, settings: dict | None, manifest: str | None = None) -> str:
    """``spotlight-scale ingest MANIFEST ROOT`` with the options that reproduce ``settings``
    (options at their defaults are left out)."""
    from ..pipelines.ingest import IngestSettings

    default = IngestSettings().as_dict()
    settings = {**default, **(settings or {})}
    flags = []
    if settings["isotropic_um"] is None:
        flags.append("--no-resample")
    elif settings["isotropic_um"] != default["isotropic_um"]:
        flags.append(f"--isotropic {settings['isotropic_um']}")
    for key, flag in (("chunks", "--chunks"), ("patch", "--patch"),
                      ("patch_stride", "--patch-stride")):
        if list(settings[key]) != list(default[key]):
            flags.append(f"{flag} {','.join(str(int(v)) for v in settings[key])}")
    if settings["min_fraction"] != default["min_fraction"]:
        flags.append(f"--min-foreground {settings['min_fraction']}")
    if settings["ngff"] != default["ngff"]:
        flags.append(f"--ngff {settings['ngff']}")
    return " ".join(["spotlight-scale ingest", str(manifest or "MANIFEST"), str(root), *flags])


def _read_store_manifest(root: Path) -> dict:
    """``ROOT/spotlight.json``; when it does not parse, :class:`StoreError` naming it with the
    command that rebuilds it (a plain ``ingest`` re-run rebuilds it from the fields' markers,
    see :func:`rebuild_store_manifest`)."""
    path = root / STORE_MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest
    except (ValueError, UnicodeDecodeError) as exc:
        marker = _any_ingest_marker(root) or {}
        cmd = ingest_command(root, (marker.get("params") or {}).get("settings"),
                             marker.get("manifest"))
        raise StoreError(f"{path}: cannot be parsed ({type(exc).__name__}: {exc}): the store "
                         f"manifest is damaged; re-run `{cmd}` (it rebuilds it from the "
                         "fields' markers and keeps the fields)") from None


def _any_ingest_marker(root: Path) -> dict | None:
    base = Path(root) / "_done" / "ingest"
    for path in base.glob("*/*/*.json") if base.is_dir() else ():
        info = _read_marker(path)
        if info:
            return info
    return None


def rebuild_store_manifest(root: str | Path, settings: dict, ngff: str) -> bool:
    """Rewrite a ``spotlight.json`` that does not parse (``ingest`` does this first). The
    settings are those the fields' ingest markers record (else ``settings``), and the NGFF
    version is what the plates' metadata files say (else ``ngff``). Returns whether it
    rewrote the file."""
    import logging

    root = Path(root)
    path = root / STORE_MANIFEST
    try:
        _read_store_manifest(root)
        return False
    except FileNotFoundError:
        return False
    except StoreError:
        pass
    marker = _any_ingest_marker(root) or {}
    recorded = (marker.get("params") or {}).get("settings") or settings
    plates = list(root.glob("*.zarr"))
    if any((p / "zarr.json").exists() for p in plates):
        ngff = "0.5"
    elif any((p / ".zgroup").exists() for p in plates):
        ngff = "0.4"
    from .. import __version__

    atomic_write_json(path, {"layout_version": STORE_LAYOUT_VERSION, "ngff": ngff,
                             "created_by": f"spotlight-scale {__version__}",
                             "settings": {**recorded, "ngff": ngff}})
    logging.getLogger(__name__).warning("%s did not parse: rebuilt it from the fields' markers "
                                        "(settings %s)", path, recorded)
    return True
