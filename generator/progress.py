"""Progress that a log file can follow too.

On a terminal the long loops show tqdm bars (stderr). When stdout is *not* a terminal (a log
file, CI, ``make site > build.log``) they print plain lines instead: one when a loop starts, one
every :data:`EVERY` seconds while it runs and one when it ends, each with counts and elapsed
time, and the build prints a line when each stage starts and ends. ``CNNVIS_PROGRESS=1`` forces
bars, ``CNNVIS_NO_PROGRESS=1`` silences both.
"""
from __future__ import annotations

CACHE_NEUTRAL = True  # cannot change a cached value: left out of code fingerprints (generator.cache.key)

import os
import sys
import time
from typing import Iterable

EVERY = 30.0  # seconds between two lines of one loop


def _mode() -> str:
    if os.environ.get("CNNVIS_NO_PROGRESS"):
        return "off"
    if os.environ.get("CNNVIS_PROGRESS") or sys.stdout.isatty():
        return "bar"
    return "lines"


def line(text: str) -> None:
    """A progress line for a log (nothing on a terminal, where bars show the same)."""
    if _mode() == "lines":
        print(text, file=sys.stdout, flush=True)


class LineBar:
    """The part of tqdm's interface the stages use (iterate, update, close), printing lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, **_ignored) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = initial
        self.t0 = self.last = time.perf_counter()
        self.closed = False
        line(f"{desc}: {self._count()} …")

    def _count(self) -> str:
        return f"{self.n}/{self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= EVERY:
            self.last = now
            line(f"{self.desc}: {self._count()}, {now - self.t0:.0f} s")

    def __iter__(self):
        try:
            for x in self.iterable:
                yield x
                self.update()
        finally:
            self.close()

    def set_postfix(self, *a, **k) -> None:
        pass

    def set_description(self, desc: str, *a, **k) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            line(f"{self.desc}: {self._count()} in {time.perf_counter() - self.t0:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(iterable: Iterable | None = None, **kw):
    """A tqdm bar on a terminal, a :class:`LineBar` for a log, a disabled bar when silenced."""
    mode = _mode()
    if mode == "lines":
        return LineBar(iterable, **kw)
    from tqdm.auto import tqdm

    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("leave", False)
    kw["disable"] = mode == "off"
    return tqdm(iterable, **kw)
