"""Content-addressed result cache.

A key is any JSON-serialisable dict (model + weights id, method, parameters, image
hash, code version); its SHA-256 names a file ``<root>/<aa>/<hash>.pt`` written
atomically with ``torch.save``. A rerun with nothing changed finds every result; a
changed image changes only its own keys; an interrupted run leaves either a complete
file or none, so it resumes where it stopped.

Several builds may share one cache: :meth:`Cache.get_or_compute` and
:meth:`Cache.batched` take a lock per key (an ``fcntl`` file lock on an empty file
``<root>/locks/<aa>/<hash>.lock``) around "look again, compute the misses, store", so a
result another build is computing is waited for and read, not computed a second time.
The kernel releases the locks of a process that dies. Locks are taken in hash order; a
lock not obtained within ``CNNVIS_LOCK_TIMEOUT`` seconds (default 3600) is given up with
a warning and the result computed anyway, so a build never hangs on one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from .util import atomic_torch_save, stable_hash

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no sharing between processes there
    fcntl = None

log = logging.getLogger("generator")
LOCK_CHUNK = 256  # keys locked (open files) at a time in batched()

# Bump when the meaning of cached results changes (it is part of every key).
CACHE_VERSION = 1


def _check_loadable(obj: Any, where: str = "result") -> None:
    """Raise TypeError for a NumPy value anywhere in ``obj``: ``torch.load(weights_only=True)``
    refuses to read it back, so the result would be stored and then missed on every later build."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_loadable(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{where}[{i}]")
    elif type(obj).__module__ == "numpy":
        raise TypeError(f"{where} is a NumPy {type(obj).__name__}: the cache cannot read it back "
                        "(store a torch tensor or a Python number)")


class Cache:
    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.stored = 0  # results computed and written by this process

    def _hash(self, key: dict) -> str:
        return stable_hash({"v": CACHE_VERSION, **key})

    def path(self, key: dict) -> Path:
        h = self._hash(key)
        return self.root / h[:2] / f"{h}.pt"

    def _read(self, key: dict) -> Any | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            # a foreign or damaged file: treat as a miss and let put() replace it
            return None

    def get(self, key: dict) -> Any | None:
        obj = self._read(key) if self.enabled else None
        if obj is None:
            self.misses += 1
        else:
            self.hits += 1
        return obj

    def put(self, key: dict, obj: Any) -> Any:
        if self.enabled:
            _check_loadable(obj)
            atomic_torch_save(obj, self.path(key))
            self.stored += 1
        return obj

    @contextlib.contextmanager
    def lock(self, keys: Iterable[dict]) -> Iterator[None]:
        """Hold the locks of ``keys`` (taken in a fixed order, so two builds never wait on
        each other in a circle)."""
        if not self.enabled or fcntl is None:
            yield
            return
        fds: list[int] = []
        try:
            for h in sorted({self._hash(k) for k in keys}):
                p = self.root / "locks" / h[:2] / f"{h}.lock"
                p.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
                fds.append(fd)
                _flock(fd, p)
            yield
        finally:
            for fd in reversed(fds):
                os.close(fd)  # closing releases the lock

    def put_if_absent(self, key: dict, obj: Any) -> bool:
        """Store a result computed on the side (no lookup first) unless the cache holds it
        already; returns whether it stored."""
        with self.lock([key]):
            if not self.enabled or self._read(key) is not None:
                return False
            self.put(key, obj)
            return True

    def get_or_compute(self, key: dict, fn: Callable[[], Any]) -> Any:
        obj = self.get(key)
        if obj is None:
            with self.lock([key]):
                obj = self._read(key) if self.enabled else None  # another build may have stored it meanwhile
                if obj is None:
                    obj = self.put(key, fn())
        return obj

    def batched(self, keys: list[dict], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        """Look up many keys; call ``compute(missing_indices)`` once for the misses (a batch).

        ``compute`` returns one result per missing index, in order; each is stored as
        soon as the batch returns. The misses are locked while they are computed; what
        another build stored in the meantime is read instead of computed.
        """
        out: list[Any] = [self.get(k) for k in keys]
        misses = [i for i, o in enumerate(out) if o is None]
        for start in range(0, len(misses), LOCK_CHUNK if self.enabled else max(1, len(misses))):
            missing = misses[start:start + LOCK_CHUNK] if self.enabled else misses
            with self.lock(keys[i] for i in missing):
                if self.enabled:
                    for i in missing:
                        out[i] = self._read(keys[i])
                    missing = [i for i in missing if out[i] is None]
                if missing:
                    for i, res in zip(missing, compute(missing), strict=True):
                        out[i] = self.put(keys[i], res)
        return out


def _flock(fd: int, path: Path) -> None:
    """Exclusive lock on ``fd``; waits at most CNNVIS_LOCK_TIMEOUT seconds, then goes on."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    deadline = time.monotonic() + float(os.environ.get("CNNVIS_LOCK_TIMEOUT", "3600"))
    delay = 0.01
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue
    log.warning("cache lock %s not obtained in time: computing without it", path)
