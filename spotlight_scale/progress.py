"""Progress for long work: items done, rate, throughput (MB/s) and ETA.

Used by every stage that maps work over fields. Writes one line per update to
the ``spotlight_scale.progress`` logger and, on a terminal, a tqdm bar.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("spotlight_scale.progress")

_QUIET = {"on": False}


def set_quiet(on: bool) -> None:
    """Silence the progress lines of every :class:`Progress` (``--quiet``)."""
    _QUIET["on"] = bool(on)


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class Progress:
    """Track ``total`` units of work (fields, iterations) and optional bytes.

    >>> p = Progress(2, "fields", desc="ingest", stream=None)
    >>> p.update(1); p.update(1); p.close()
    """

    def __init__(self, total: int, unit: str = "fields", *, desc: str = "",
                 stream=sys.stderr, min_interval: float = 0.5, initial: int = 0):
        self.total = int(total)
        self.unit = unit
        self.desc = desc
        self.done = int(initial)
        self.initial = int(initial)
        self.nbytes = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.stream = stream
        self.min_interval = min_interval
        self.extra = ""

    def update(self, n: int = 1, nbytes: int = 0, extra: str = "") -> None:
        self.done += n
        self.nbytes += nbytes
        if extra:
            self.extra = extra
        now = time.perf_counter()
        if now - self._last >= self.min_interval or self.done >= self.total:
            self._last = now
            self._emit()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        new = self.done - self.initial
        rate = new / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        parts = [f"{self.desc}: " if self.desc else "",
                 f"{self.done}/{self.total} {self.unit}",
                 f" | {rate:.2f} {self.unit}/s"]
        if self.nbytes:
            parts.append(f" | {self.nbytes / elapsed / 1e6:.1f} MB/s")
        parts.append(f" | elapsed {_fmt_eta(elapsed)} | ETA {_fmt_eta(eta)}")
        if self.extra:
            parts.append(f" | {self.extra}")
        return "".join(parts)

    def _emit(self) -> None:
        text = self.line()
        if self.stream is None:
            log.info(text)
        else:
            log.debug(text)
        if self.stream is not None and not _QUIET["on"]:
            end = "\r" if getattr(self.stream, "isatty", lambda: False)() and self.done < self.total else "\n"
            print(text, file=self.stream, end=end, flush=True)

    def close(self) -> None:
        if (self.stream is not None and not _QUIET["on"]
                and getattr(self.stream, "isatty", lambda: False)()):
            print(file=self.stream)

