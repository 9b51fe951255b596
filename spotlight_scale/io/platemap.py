"""The screen's annotations: the plate map (treatments in wells) and the stain of the target.

Plate map
    A CSV with a ``well`` column (``B03`` or ``B3``; ``well_position``, pycytominer's name,
    and ``Metadata_Well`` are accepted too), a ``plate`` column when the screen has
    several plates (``Metadata_Plate`` accepted), and any other columns: each becomes a
    metadata column, ``Metadata_`` prefixed unless it already is (``treatment`` ->
    ``Metadata_treatment``, ``Metadata_Treatment`` stays). ``ingest --platemap`` keeps it
    in the store (``tables/platemap.parquet``, table ``platemap``); ``profile --platemap``
    adds or replaces it for one run. Its columns reach the fields table, every nuclei and
    wells table and evaluate's metrics table (:func:`annotate`).

    Checked against the screen (:func:`resolve`), every problem named: bad or duplicate
    wells and screen wells the map lacks are errors (their rows would get no treatment and
    drop silently out of a normalisation to controls); wells of the map that the screen did
    not image are a warning (plate maps usually list whole plates).

Stain
    The name of the target's stain (``ingest --stain``, default ``DNA``), recorded in
    ``spotlight.json``: intensity features are named by it whatever image was measured
    (the target, or a prediction of it), so profiles of the target and of predictions
    have the same columns (:mod:`spotlight_scale.io.profiles`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .tables import OBJECT, PLATE, SITE, WELL

log = logging.getLogger(__name__)

TABLE = "platemap"
#: Stain of the target when ``ingest --stain`` was not given (Hoechst: DNA).
DEFAULT_STAIN = "DNA"
#: Stain name of the transmitted-light input (``profile --image signal``).
SIGNAL_STAIN = "Brightfield"
SOURCE, LABELS = "Metadata_Source", "Metadata_Labels"
#: Metadata columns spotlight-scale writes itself: a plate map may not name them.
RESERVED = {PLATE, WELL, SITE, OBJECT, SOURCE, LABELS, "Metadata_Row", "Metadata_Column",
            "Metadata_Object_Count"}
_PLATE_NAMES = ("plate", "Metadata_Plate")
_WELL_NAMES = ("well", "well_position", "Metadata_Well", "Metadata_well_position")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlateMapError(ValueError):
    """The plate map has problems; the message lists each, naming file, line and well."""

    def __init__(self, source: str, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__(f"{source}: {len(self.errors)} problem(s) in the plate map:\n  "
                         + "\n  ".join(self.errors))


def _one_of(columns: Sequence[str], names: Sequence[str], what: str, errors: list) -> str | None:
    found = [c for c in columns if c in names]
    if len(found) > 1:
        errors.append(f"columns {found} all name the {what}: keep one")
    return found[0] if found else None


def read_platemap(path: str | Path) -> pd.DataFrame:
    """Read and check a plate map CSV (or a stored ``platemap`` table).

    Returns
    -------
    DataFrame
        ``Metadata_Plate`` (when the file has plates), ``Metadata_Well`` (canonical,
        ``B03``) then the other columns, ``Metadata_`` prefixed, in file order; values as
        pandas reads them (numbers stay numbers).
    """
    from .store import canonical_well

    path = Path(path)
    if path.suffix == ".parquet":
        from .tables import read_table

        return read_table(path, TABLE)
    try:
        raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        raise PlateMapError(str(path), [f"cannot read the plate map ({exc})"]) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    errors: list[str] = []
    plate = _one_of(raw.columns, _PLATE_NAMES, "plate", errors)
    well = _one_of(raw.columns, _WELL_NAMES, "well", errors)
    if well is None:
        errors.append(f"no well column (one of {', '.join(_WELL_NAMES)}); columns: "
                      f"{', '.join(raw.columns)}")
    if raw.empty:
        errors.append("the plate map has no rows")
    names: dict[str, str] = {}
    for c in raw.columns:
        if c in (plate, well):
            continue
        new = c if c.startswith("Metadata_") else f"Metadata_{c}"
        if not _IDENT.match(c):
            errors.append(f"column {c!r}: use letters, digits and '_' (pycytominer's queries "
                          "and SQL name columns so)")
        elif new in RESERVED or new.startswith("Metadata_Nuclei_"):
            errors.append(f"column {c!r} would become {new!r}, a column spotlight-scale "
                          "writes itself: rename it")
        elif new in names.values():
            errors.append(f"columns {[k for k, v in names.items() if v == new] + [c]} both "
                          f"become {new!r}")
        names[c] = new
    if errors:
        raise PlateMapError(str(path), errors)
    out = pd.DataFrame(index=raw.index)
    if plate is not None:
        out[PLATE] = raw[plate].str.strip()
    wells = []
    for i, w in enumerate(raw[well].str.strip()):
        try:
            wells.append(canonical_well(w))
        except ValueError as exc:
            errors.append(f"line {i + 2}: {exc}")
            wells.append(w)
    out[WELL] = wells
    for c, new in names.items():  # numbers stay numbers, text stays text
        col = raw[c].str.strip().replace("", pd.NA)
        num = pd.to_numeric(col, errors="coerce")
        out[new] = num if num.notna().sum() == col.notna().sum() and col.notna().any() else col
    if plate is not None:
        bad = [i + 2 for i, p in enumerate(out[PLATE]) if not p]
        errors += [f"line {i}: empty plate" for i in bad[:10]]
    keys = [k for k in (PLATE, WELL) if k in out.columns]
    lines: dict[tuple, list[int]] = {}
    for i, k in enumerate(zip(*(out[c] for c in keys))):
        lines.setdefault(k, []).append(i + 2)
    dups = [(k, ls) for k, ls in sorted(lines.items()) if len(ls) > 1]
    errors += [f"well {'/'.join(k)} is listed {len(ls)} times (lines "
               f"{', '.join(map(str, ls))})" for k, ls in dups[:10]]
    if errors:
        raise PlateMapError(str(path), errors)
    return out.reset_index(drop=True)


def metadata_columns(platemap: pd.DataFrame | None) -> list[str]:
    """The columns a plate map adds to a table (all but plate and well)."""
    return [] if platemap is None else [c for c in platemap.columns if c not in (PLATE, WELL)]


def resolve(platemap: pd.DataFrame, keys: Iterable, source: str = "plate map") -> pd.DataFrame:
    """Check a plate map against the screen's field keys; returns it with ``Metadata_Plate``.

    A map without plates applies to a screen of one plate. Raises :class:`PlateMapError`
    for a map without plates on several, and for screen wells the map lacks; logs a
    warning naming the map's wells the screen lacks.
    """
    screen = sorted({(k.plate, k.well) for k in keys})
    plates = sorted({p for p, _ in screen})
    pm = platemap.copy()
    if PLATE not in pm.columns:
        if len(plates) > 1:
            raise PlateMapError(source, [f"no plate column, and the screen has {len(plates)} "
                                         f"plates ({', '.join(plates)}): add a 'plate' column"])
        pm.insert(0, PLATE, plates[0] if plates else "")
    have = set(zip(pm[PLATE], pm[WELL]))
    missing = [f"{p}/{w}" for p, w in screen if (p, w) not in have]
    if missing:
        raise PlateMapError(source, [
            f"{len(missing)} well(s) of the screen are not in the plate map: "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} (add them: "
            "ingest --platemap keeps a map in the store, profile --platemap gives one run's)"])
    extra = sorted(f"{p}/{w}" for p, w in have - set(screen))
    if extra:
        log.warning("%s: %d well(s) of the plate map are not in the screen (kept, unused): %s%s",
                    source, len(extra), ", ".join(extra[:20]), " ..." if len(extra) > 20 else "")
    return pm.reset_index(drop=True)


def load(path: str | Path, keys: Iterable) -> pd.DataFrame:
    """:func:`read_platemap` then :func:`resolve` against ``keys``."""
    return resolve(read_platemap(path), keys, source=str(path))


def save(store, platemap: pd.DataFrame) -> None:
    """Keep a resolved plate map in the store (``tables/platemap.parquet``)."""
    from .tables import write_table

    write_table(platemap, store.table_path(TABLE), TABLE)


def stored(store) -> pd.DataFrame | None:
    """The store's plate map (None when ``ingest`` was given none)."""
    path = store.table_path(TABLE)
    return read_platemap(path) if path.exists() else None


def annotate(df: pd.DataFrame, platemap: pd.DataFrame | None, at: int | None = None
             ) -> pd.DataFrame:
    """``df`` with the plate map's columns joined on plate and well, inserted at column
    ``at`` (default: after the leading ``Metadata_`` columns). Rows of wells the map lacks
    get nulls; columns of an older annotation are replaced."""
    cols = metadata_columns(platemap)
    if not cols or PLATE not in df.columns:
        return df
    df = df.drop(columns=[c for c in cols if c in df.columns])
    m = df[[PLATE, WELL]].astype(str).merge(platemap, on=[PLATE, WELL], how="left")
    if at is None:
        at = 0
        while at < len(df.columns) and df.columns[at].startswith("Metadata_"):
            at += 1
    df = df.copy()
    for i, c in enumerate(cols):
        df.insert(at + i, c, pd.Series(m[c].to_numpy(), index=df.index, dtype=platemap[c].dtype))
    return df


def check_stain(stain: str) -> str:
    """A stain names columns: letters, digits and '_' (CellProfiler's image names)."""
    if not _IDENT.match(str(stain)):
        raise ValueError(f"bad stain name {stain!r}: use letters, digits and '_' (e.g. DNA)")
    return str(stain)


def record_stain(store, stain: str) -> None:
    """Record the target's stain in the store's ``spotlight.json``."""
    from .atomic import atomic_write_json
    from .store import STORE_MANIFEST

    store.manifest["stain"] = check_stain(stain)
    atomic_write_json(store.root / STORE_MANIFEST, store.manifest)


def store_stain(store) -> str:
    """The target's stain of ``store`` (:data:`DEFAULT_STAIN` when none was recorded)."""
    return str(store.manifest.get("stain") or DEFAULT_STAIN)


def image_stain(store, image: str) -> str:
    """The stain that names the intensity columns of ``image``: the target's for the
    target and its predictions, :data:`SIGNAL_STAIN` for the transmitted-light input."""
    return SIGNAL_STAIN if image == "signal" else store_stain(store)


def prepare(path: str | Path | None, keys: Iterable, stain: str | None = None):
    """What ``ingest`` records, checked before anything is written: ``(platemap or None,
    stain or None)``."""
    return (load(path, keys) if path is not None else None,
            check_stain(stain) if stain is not None else None)


def record(store, prepared) -> None:
    """Write what :func:`prepare` checked into the store (plate map table, stain)."""
    platemap, stain = prepared
    if platemap is not None:
        save(store, platemap)
    if stain is not None:
        record_stain(store, stain)
