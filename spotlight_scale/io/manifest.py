"""The screen manifest: one CSV row per field, validated before anything is written.

Columns (see README): required ``path_signal``, ``path_target``; optional
``path_mask``, ``plate``, ``well``, ``field``, ``split``, ``channel_signal``,
``channel_target``, ``channel_mask`` (an index or a channel name), ``scene`` (an
index or a name: an OME-TIFF series, a CZI/LIF scene), ``t`` (time point of files
with a time axis), ``voxel_z``, ``voxel_y``, ``voxel_x``. Files are TIFF or anything
bioio reads (:mod:`spotlight_scale.io.images`). A YX image (or a stack of one z plane) is a
2D field, for which ``voxel_z`` may be left out; a manifest mixing 2D fields and
z-stacks is refused. Paths are relative to
the CSV's folder unless absolute. Voxel size comes from the columns, else from
the file's metadata (ImageJ or OME, a bioio plugin's physical pixel sizes), else
from ``default_voxel_size``, and must
lie in a plausible range (:mod:`spotlight_scale.core.validate`). A UTF-8 byte
order mark (Excel's "CSV UTF-8") is accepted.

Validation reads file headers only (shape, axes, metadata), not pixel data, and
collects every problem; each message names the CSV line and the file. Channel
names are resolved to indices here: a row holds indices.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

from ..core.dims import is_planar
from ..core.validate import voxel_size_problem
from .store import FieldKey, canonical_well, check_name

log = logging.getLogger(__name__)

REQUIRED = ("path_signal", "path_target")
OPTIONAL = ("path_mask", "plate", "well", "field", "split", "channel_signal", "channel_target",
            "channel_mask", "scene", "t", "voxel_z", "voxel_y", "voxel_x")
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """The manifest has problems; ``errors`` lists them, each naming line and file."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__(f"{len(errors)} problem(s) in the manifest:\n  " + "\n  ".join(errors))


@dataclass
class ManifestRow:
    """One validated field of the manifest."""

    line: int  # line number in the CSV (header is line 1)
    key: FieldKey
    split: str
    path_signal: Path
    path_target: Path
    path_mask: Path | None
    channel_signal: int | None
    channel_target: int | None
    voxel_size: tuple[float, float, float]
    shape: tuple[int, int, int]
    nbytes: int = 0
    channel_mask: int | None = None
    t: int | None = None  # time point of files with a time axis
    scene: int | str | None = None  # scene (series) of multi-scene files, as given
    extra: dict[str, Any] = dc_field(default_factory=dict)

    def source(self) -> dict[str, Any]:
        """Provenance recorded in the store: files, their size and mtime, channels, voxel size."""
        files = {"signal": self.path_signal, "target": self.path_target}
        if self.path_mask is not None:
            files["mask"] = self.path_mask
        out = {"manifest_line": self.line, "voxel_size_um": list(self.voxel_size),
               "shape_zyx": list(self.shape),
               "channel_signal": self.channel_signal, "channel_target": self.channel_target}
        out.update({k: getattr(self, k) for k in ("channel_mask", "t", "scene")
                    if getattr(self, k) is not None})
        for name, p in files.items():
            st = p.stat()
            out[f"path_{name}"] = str(p)
            out[f"size_{name}"] = st.st_size
            out[f"mtime_ns_{name}"] = st.st_mtime_ns
        return out


def _image_header(path: Path, channel, t: int | None = None, scene=None):
    """(shape ZYX, voxel size or None, nbytes, channel index) from a file's header, or
    raise ValueError (the file is named by the caller).

    A single plane's shape is (1, Y, X); its voxel size may have ``None`` for z.
    """
    from .images import ImageError, read_header

    try:
        head = read_header(path, scene)
    except ImageError as exc:
        raise ValueError(exc.reason) from None
    _, _, zyx = head.select(channel, t)
    return zyx, head.voxel_size, head.nbytes(zyx), head.channel_index(channel)


def _complete_voxel(voxel, planar: bool):
    """A voxel size read from metadata: a single plane's missing z becomes its y pixel size;
    a z-stack without z spacing has no usable voxel size (None)."""
    if voxel is None:
        return None
    z, y, x = voxel
    if z is None:
        return (y, y, x) if planar else None
    return tuple(voxel)


def _int_or_none(value: str, col: str, line: int, errors: list[str]) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        errors.append(f"line {line}: column {col!r} must be an integer, got {value!r}")
        return None


def _index_or_name(value: str, col: str, line: int, errors: list[str]) -> int | str | None:
    """A ``channel_*``/``scene`` value: empty (None), an index (digits) or a name."""
    if value in (None, ""):
        return None
    if value.lstrip("-").isdigit():
        if int(value) < 0:
            errors.append(f"line {line}: column {col!r} must be an index (0 or more) or a "
                          f"name, got {value!r}")
            return None
        return int(value)
    return value


def read_manifest(path: str | Path, *, default_voxel_size=None, on_error: str = "fail"
                  ) -> tuple[list[ManifestRow], list[dict[str, Any]]]:
    """Read and validate a manifest.

    Parameters
    ----------
    path : path
        The CSV file.
    default_voxel_size : (z, y, x) in um, optional
        Used for rows whose columns and file metadata give no voxel size.
    on_error : {"fail", "skip"}
        ``fail`` raises :class:`ManifestError` listing every problem; ``skip``
        returns the valid rows and a list of failures (dicts with line, file, error).

    Returns
    -------
    rows, failures
    """
    path = Path(path)
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            records = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError([f"{path}: cannot read the manifest ({exc})"]) from None
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        msgs = [f"{path}: missing required column {c!r}" for c in missing]
        msgs += [f"{path}: unknown column {c!r} (known: {', '.join(REQUIRED + OPTIONAL)}; "
                 "treatments and other per-well metadata go in a plate map: ingest --platemap)"
                 for c in unknown]
        raise ManifestError(msgs)
    if not records:
        raise ManifestError([f"{path}: the manifest has no rows"])

    base = path.parent
    rows: list[ManifestRow] = []
    failures: list[dict[str, Any]] = []
    seen: dict[FieldKey, int] = {}
    derived = []
    for i, rec in enumerate(records):
        line = i + 2
        errors: list[str] = []
        bad_file = ""

        def resolve(col):
            v = rec.get(col, "")
            if not v:
                return None
            p = Path(v).expanduser()
            return p if p.is_absolute() else (base / p)

        files = {c: resolve(c) for c in ("path_signal", "path_target", "path_mask")}
        for c in REQUIRED:
            if files[c] is None:
                errors.append(f"line {line}: empty required column {c!r}")
        ch = {c: _index_or_name(rec.get(c, ""), c, line, errors)
              for c in ("channel_signal", "channel_target", "channel_mask")}
        scene = _index_or_name(rec.get("scene", ""), "scene", line, errors)
        t = _int_or_none(rec.get("t", ""), "t", line, errors)
        if t is not None and t < 0:
            errors.append(f"line {line}: column 't' must be 0 or more, got {t}")
            t = None
        headers = {}
        for c, p in files.items():
            if p is None:
                continue
            channel = ch.get(c.replace("path_", "channel_"))
            try:
                headers[c] = _image_header(p, channel, t, scene)
            except ValueError as exc:
                errors.append(f"line {line}: {c} {p}: {exc}")
                bad_file = bad_file or str(p)
        shapes = {c: h[0] for c, h in headers.items()}
        if len(set(shapes.values())) > 1:
            desc = ", ".join(f"{c.replace('path_', '')} {s} ({files[c]})" for c, s in shapes.items())
            errors.append(f"line {line}: shapes differ: {desc}")
        # keys
        plate = rec.get("plate") or path.stem
        try:
            check_name(plate, "plate name")
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
        well_raw = rec.get("well", "")
        well = None
        if well_raw:
            try:
                well = canonical_well(well_raw)
            except ValueError as exc:
                errors.append(f"line {line}: {exc} ({files['path_signal']})")
        field_no = _int_or_none(rec.get("field", ""), "field", line, errors)
        if field_no is not None and field_no < 0:
            errors.append(f"line {line}: column 'field' must be 0 or more, got {field_no}")
            field_no = None
        split = rec.get("split") or "train"
        if split not in SPLITS:
            errors.append(f"line {line}: unknown split {split!r} (expected one of "
                          f"{', '.join(SPLITS)}) ({files['path_signal']})")
        # voxel size: columns, else metadata, else default; a 2D field needs only y and x (its
        # stored z scale is then the y pixel size, never used: core.dims)
        planar = "path_signal" in shapes and is_planar(shapes["path_signal"])
        voxel, voxel_from = None, ""
        vcols = [rec.get(f"voxel_{a}", "") for a in "zyx"]
        if planar and not vcols[0] and vcols[1] and vcols[2]:
            vcols[0] = vcols[1]
        if any(vcols):
            try:
                voxel, voxel_from = tuple(float(v) for v in vcols), "voxel_z/y/x columns"
            except ValueError:
                need = "voxel_y/x must be two numbers" if planar else \
                    "voxel_z/y/x must be three numbers"
                errors.append(f"line {line}: {need}, got {vcols}")
        if voxel is None and "path_signal" in headers:
            voxel = _complete_voxel(headers["path_signal"][1], planar) or _complete_voxel(
                headers.get("path_target", (None, None))[1], planar)
            voxel_from = f"the metadata of {files['path_signal']}"
        if voxel is None and default_voxel_size is not None:
            voxel, voxel_from = tuple(float(v) for v in default_voxel_size), "--voxel-size"
        problem = voxel_size_problem(voxel) if voxel is not None else None
        if problem:
            errors.append(f"line {line}: {problem}, from {voxel_from} "
                          f"({files['path_signal']})")
            voxel = None
        elif voxel is None and not any(vcols):
            cols = "voxel_y/voxel_x" if planar else "voxel_z/voxel_y/voxel_x"
            errors.append(f"line {line}: no voxel size for {files['path_signal']}: add {cols} "
                          "columns, use files that carry it (ImageJ/OME-TIFF, CZI, ...), or "
                          "pass --voxel-size")
        for c in ch:  # channel names become indices into each role's file
            if c.replace("channel_", "path_") in headers:
                ch[c] = headers[c.replace("channel_", "path_")][3]
        if errors:
            failures.append({"line": line, "file": bad_file or str(files["path_signal"] or ""),
                             "error": "; ".join(errors)})
            continue
        if well is None or field_no is None:
            derived.append(line)
        rows.append(ManifestRow(
            line=line, key=None, split=split,  # key assigned below, after derivation
            path_signal=files["path_signal"], path_target=files["path_target"],
            path_mask=files["path_mask"], channel_signal=ch["channel_signal"],
            channel_target=ch["channel_target"], channel_mask=ch["channel_mask"],
            t=t, scene=scene,
            voxel_size=voxel,
            shape=shapes["path_signal"], nbytes=sum(h[2] for h in headers.values()),
            extra={"plate": plate, "well": well, "field": field_no}))

    # derive missing keys: wells B02, B03, ... per plate in row order, fields counted per well
    next_well: dict[str, int] = {}
    next_field: dict[tuple[str, str], int] = {}
    for row in rows:
        plate, well, field_no = row.extra["plate"], row.extra["well"], row.extra["field"]
        if well is None:
            n = next_well.get(plate, 0)
            next_well[plate] = n + 1
            well = f"{'BCDEFGHIJKLMNO'[n // 11 % 14]}{(n % 11) + 2:02d}"
        if field_no is None:
            field_no = next_field.get((plate, well), 0)
        next_field[(plate, well)] = max(next_field.get((plate, well), 0), field_no + 1)
        row.key = FieldKey(plate, well, field_no)
        row.extra = {}
        if row.key in seen:
            failures.append({"line": row.line, "file": str(row.path_signal),
                             "error": f"line {row.line}: duplicate plate/well/field {row.key} "
                                      f"(also on line {seen[row.key]})"})
        else:
            seen[row.key] = row.line
    dup_lines = {f["line"] for f in failures if "duplicate" in f["error"]}
    rows = [r for r in rows if r.line not in dup_lines]
    kinds: dict[bool, ManifestRow] = {}
    for row in rows:
        kinds.setdefault(is_planar(row.shape), row)
    if len(kinds) > 1:  # one store, one kind of field: a 2D and a 3D F-net do not mix
        flat, stack = kinds[True], kinds[False]
        raise ManifestError([
            f"{path}: the manifest mixes 2D fields (single planes, e.g. line {flat.line}: "
            f"{flat.path_signal} {tuple(flat.shape)}) and z-stacks (e.g. line {stack.line}: "
            f"{stack.path_signal} {tuple(stack.shape)}); a store holds one kind: write two "
            "manifests and ingest them into two stores"])
    if derived:
        log.warning("manifest %s: plate/well/field derived for line(s) %s", path,
                    ", ".join(map(str, derived)))
    if failures and on_error == "fail":
        raise ManifestError([f["error"] for f in sorted(failures, key=lambda f: f["line"])])
    return rows, failures
