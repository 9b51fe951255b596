"""Nothing falsely done: a stage checks what it marked done before it skips it.

A completion marker says a field's arrays were written to the end; it does not
prove they are still there. When a stage writes a field it therefore records,
in the field's marker, a cheap *listing* of what it wrote (:func:`record`): the
number of files under the field's folder, their total size and a SHA-256 of the
sorted ``(path, size)`` pairs, plus the size of its patch index. Before a
re-run skips a done field it compares that record with the files now on disk
(:func:`damage`; one ``stat`` per file, no data read) and parses the field's
metadata; a deleted or truncated chunk, a deleted array, a missing patch index
or metadata that does not parse make the field *damaged*, and the stage redoes
it. A chunk corrupted in place with its size unchanged is not seen here; reads
refuse it (:mod:`spotlight_scale.io.chunks`).

Labels that later stages add to a field (``labels/<NAME>``, not ``labels/gt``)
and the attributes of the field group itself (which ``ingest`` updates when a
row's split changes) are left out of the listing; the attributes are parsed
instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: zarr v3 and v2 metadata file names
METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def _listing(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of the files a stage wrote for a field (see module doc)."""
    out: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        parts = rel.parts
        if parts[:1] == ("labels",) and parts[1:2] != ("gt",):
            dirs[:] = [d for d in dirs if d == "gt"] if len(parts) == 1 else []
            continue
        if not parts:
            files = [f for f in files if f not in METADATA_FILES]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            out[str(rel / name)] = os.stat(os.path.join(root, name)).st_size
    return out


def record(folder: str | Path, patch_index: str | Path | None = None) -> dict[str, Any]:
    """What a marker records of a written field folder (and its patch index file)."""
    files = _listing(Path(folder))
    text = json.dumps(sorted(files.items()))
    out = {"n_files": len(files), "bytes": int(sum(files.values())),
           "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    if patch_index is not None:
        out["patch_index_bytes"] = os.stat(patch_index).st_size
    return out


def bad_metadata(folder: str | Path, up_to: str | Path | None = None) -> str | None:
    """``"PATH: cannot be parsed (...)"`` for the first metadata file of ``folder`` (or of a
    parent group up to ``up_to``) that does not parse as JSON; ``None`` if all parse."""
    folder = Path(folder)
    chain = [folder]
    if up_to is not None:
        top = Path(up_to)
        p = folder
        while p != top and top in p.parents:
            p = p.parent
            chain.append(p)
    for d in reversed(chain):  # the outermost group first: zarr opens it first
        for name in METADATA_FILES:
            path = d / name
            problem = bad_metadata_file(path) if path.is_file() else None
            if problem:
                return problem
    return None


def bad_metadata_file(path: Path) -> str | None:
    """``"PATH: cannot be parsed (...)"`` when the JSON file ``path`` does not parse."""
    try:
        json.loads(Path(path).read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"{path}: cannot be parsed ({type(exc).__name__}: {exc})"
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    return None


def damage(folder: str | Path, stored: dict[str, Any] | None,
           patch_index: str | Path | None = None) -> str | None:
    """Why the field folder no longer holds what ``stored`` (its marker's :func:`record`)
    says was written, or ``None`` when it does. Without a record (markers written before
    this check) only the presence of the folder and its metadata are checked."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is missing"
    bad = bad_metadata(folder)
    if bad:
        return bad
    for sub in ("s0", "labels/gt"):
        sub_dir = folder / sub
        if sub_dir.is_dir():
            bad = bad_metadata(sub_dir)
            if bad:
                return bad
    if not (folder / "s0").is_dir():
        return f"{folder / 's0'} (the full-resolution array) is missing"
    if patch_index is not None and stored is not None and "patch_index_bytes" in stored:
        path = Path(patch_index)
        if not path.is_file():
            return f"{path} (the patch index) is missing"
        if path.stat().st_size != stored["patch_index_bytes"]:
            return (f"{path} (the patch index) has {path.stat().st_size} bytes, "
                    f"{stored['patch_index_bytes']} were written")
    if stored is None or "sha256" not in stored:
        return None
    now = record(folder)
    if now["sha256"] == stored["sha256"]:
        return None
    if now["n_files"] < stored["n_files"]:
        what = f"{stored['n_files'] - now['n_files']} file(s) missing"
    elif now["bytes"] != stored["bytes"]:
        what = f"{now['bytes']} bytes where {stored['bytes']} were written (a truncated file?)"
    else:
        what = "files changed since they were written"
    return f"{folder}: {what}"
