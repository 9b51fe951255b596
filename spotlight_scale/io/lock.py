"""One writer at a time: a lock file naming its owner, with stale-lock detection.

A command that writes into a directory (a store, a profile directory) holds
``DIR/spotlight.lock`` while it runs. The file is created atomically with its
content (``os.link`` of a finished temporary file, which fails if the lock
exists, on local and network file systems alike) and says who holds it::

    {"command": "ingest", "user": "ana", "host": "node07", "pid": 4242,
     "pid_start": 81237, "since": "2026-11-25T10:31:07+00:00", "token": "..."}

A second writer fails at once with a message naming that owner. Readers never
look at the lock. A lock is *stale* (and taken over, with a warning) when

- its process is gone: same host, and the pid no longer runs (or now belongs to
  a process started at another time, ``pid_start`` from ``/proc``);
- or, held from another host, its heartbeat stopped: the holder touches the
  file every ``HEARTBEAT_S`` seconds, and a lock untouched for ``STALE_AFTER_S``
  is taken to belong to a dead machine.

Taking over a stale lock happens under a short ``flock`` on a guard file, so
two processes that find the same stale lock cannot both take it.

The tasks of a SLURM job array (``--shard I/N``, each writing its own fields)
hold ``DIR/spotlight.shard-I-of-N.lock`` instead: shards coexist, while an
unsharded writer and any shard exclude each other. Each creates its own lock
first and then looks for a live lock of the other kind, backing off (releasing
its own, :class:`LockError`) if it finds one; so two of them never both proceed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_NAME = "spotlight.lock"
SHARD_LOCK = "spotlight.shard-{}-of-{}.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class LockError(RuntimeError):
    """Another process holds the lock; the message names it and says what to do."""


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its ')'
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid is enough
        return str(os.getuid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(info: dict) -> str:
    """``ingest (user ana, host node07, pid 4242, since ...)``."""
    return (f"{info.get('command', '?')} (user {info.get('user', '?')}, host "
            f"{info.get('host', '?')}, pid {info.get('pid', '?')}, since {info.get('since', '?')})")


def read_lock(path: Path) -> dict | None:
    """The lock's content, ``{}`` if unreadable, ``None`` if there is no lock."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def stale_reason(path: Path, info: dict, *, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why the lock at ``path`` is stale, or ``None`` if its holder may still be running."""
    host, pid = info.get("host"), info.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        if not _alive(pid):
            return f"process {pid} is gone"
        start = _proc_start(pid)
        if info.get("pid_start") is not None and start is not None and start != info["pid_start"]:
            return f"pid {pid} now belongs to another process"
        return None
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it was released"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (holder's machine presumed dead)"
    return None


@contextlib.contextmanager
def _guard(directory: Path) -> Iterator[None]:
    """A short exclusive ``flock`` for the take-over of a stale lock (best effort)."""
    import fcntl

    path = directory / f".{LOCK_NAME}.guard"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: take-over is then unguarded
            pass
        yield


def _try_create(path: Path, payload: dict) -> bool:
    tmp = path.with_name(f".{LOCK_NAME}.{payload['token']}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2))
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:  # read-only, full: name the lock, not the temporary file
        raise OSError(exc.errno, f"cannot create the lock: {exc.strerror}", str(path)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, interval: float):
        super().__init__(name="spotlight-lock-heartbeat", daemon=True)
        self.path, self.interval = path, interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(OSError):
                os.utime(self.path)


def is_lock_file(name: str) -> bool:
    """Whether a directory entry is one of this module's files (a lock, its guard or temp)."""
    return name == LOCK_NAME or name.startswith((".spotlight.lock", "spotlight.shard-"))


def _live_other(directory: Path, shard, stale_after: float) -> dict | None:
    """A live lock that excludes a writer of ``shard``: for an unsharded writer any shard's,
    for a shard the unsharded writer's."""
    others = ([directory / LOCK_NAME] if shard is not None
              else sorted(directory.glob(SHARD_LOCK.format("*", "*"))))
    for other in others:
        info = read_lock(other)
        if info is not None and stale_reason(other, info, stale_after=stale_after) is None:
            return info
    return None


@contextlib.contextmanager
def exclusive(directory: str | Path, command: str, *, shard: tuple[int, int] | None = None,
              heartbeat: float = HEARTBEAT_S,
              stale_after: float = STALE_AFTER_S) -> Iterator[Path]:
    """Hold ``directory/spotlight.lock`` for ``command`` while the block runs.

    Creates ``directory`` if needed. Raises :class:`LockError` at once when a
    live process holds the lock; a stale lock is taken over with a warning.
    The lock is removed on exit (also on error), if it is still ours.
    ``shard=(i, n)``: a job-array task's lock (see the module docstring).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (LOCK_NAME if shard is None else SHARD_LOCK.format(*shard))
    payload = {"command": command, "user": _user(), "host": socket.gethostname(),
               "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
               "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "token": uuid.uuid4().hex}
    for _ in range(3):
        if _try_create(path, payload):
            break
        with _guard(directory):
            info = read_lock(path)
            if info is None:
                continue  # released meanwhile
            reason = stale_reason(path, info, stale_after=stale_after)
            if reason is None:
                raise LockError(
                    f"{directory} is locked by {describe(info)}: another command is writing "
                    f"to it. Wait until it finishes; if that process is gone for good, remove "
                    f"{path}")
            log.warning("%s: taking over a stale lock of %s (%s)", directory, describe(info),
                        reason)
            path.unlink(missing_ok=True)
            if _try_create(path, payload):
                break
    else:
        raise LockError(f"{directory}: could not take {path} (held by "
                        f"{describe(read_lock(path) or {})})")
    other = _live_other(directory, shard, stale_after)
    if other is not None:
        if (read_lock(path) or {}).get("token") == payload["token"]:
            path.unlink(missing_ok=True)
        raise LockError(
            f"{directory} is locked by {describe(other)}: "
            f"{'an unsharded run' if shard is not None else 'a job-array task (--shard)'} is "
            "writing to it. Wait until it finishes; if that process is gone for good, remove "
            "its lock file")
    beat = _Heartbeat(path, heartbeat)
    beat.start()
    try:
        yield path
    finally:
        beat.stop.set()
        beat.join()
        if (read_lock(path) or {}).get("token") == payload["token"]:
            path.unlink(missing_ok=True)
