"""Content-addressed result cache, and the one place cache keys are made.

Every key comes from :func:`key`: what the value is, the model it was computed on (its
weights id and preprocessing key), a fingerprint of the code that produced it (the source of
the given functions' modules and of every ``generator`` module they import, transitively:
:func:`code_fingerprint`) and the value's own parts (method settings, photo hash, class …).
So a change to a method's source recomputes every value that method feeds — the galleries'
maps and the findings' alike — and nothing else. Its SHA-256 names a file
``<root>/<aa>/<hash>.pt`` written atomically with ``torch.save``. A rerun with nothing changed finds every result; a
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

import ast
import contextlib
import dataclasses
import importlib
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

import torch

from .util import atomic_torch_save, stable_hash

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no sharing between processes there
    fcntl = None

log = logging.getLogger("generator")
CACHE_NEUTRAL = True  # the cache itself: its format is CACHE_VERSION, part of every key
LOCK_CHUNK = 256  # keys locked (open files) at a time in batched()

# Bump when the meaning of cached results changes (it is part of every key).
CACHE_VERSION = 1


PACKAGE = __name__.rsplit(".", 1)[0]  # "generator"


# ---------------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=None)
def _module_file(name: str) -> Path | None:
    if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _module_source(name: str) -> str:
    """The source text of module ``name`` (a test may replace this to simulate a code change)."""
    f = _module_file(name)
    return f.read_text(encoding="utf-8") if f else ""


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _imports(name: str) -> tuple[set[str], bool]:
    """The ``generator`` modules that module ``name`` imports anywhere in its source (top level or
    inside functions), and whether it declares ``CACHE_NEUTRAL = True`` (a module that cannot
    change a cached value: progress bars, logging, file writing; left out of fingerprints)."""
    src = _module_source(name)
    f = _module_file(name)
    is_package = bool(f and f.name == "__init__.py")
    tree = ast.parse(src) if src else ast.Module(body=[], type_ignores=[])
    found: set[str] = set()
    neutral = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node.level, name, is_package)
            found.add(mod)
            for a in node.names:  # ``from . import attribution`` names a module
                if _module_file(f"{mod}.{a.name}") is not None:
                    found.add(f"{mod}.{a.name}")
        elif isinstance(node, ast.Assign) and node in tree.body:
            if any(isinstance(t, ast.Name) and t.id == "CACHE_NEUTRAL" for t in node.targets):
                neutral = isinstance(node.value, ast.Constant) and node.value.value is True
    return {m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and _module_file(m)}, neutral


@functools.lru_cache(maxsize=None)
def module_closure(name: str) -> tuple[str, ...]:
    """``name`` and every ``generator`` module it imports, transitively, less the cache-neutral ones."""
    seen: set[str] = set()
    keep: list[str] = []
    todo = [name]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        deps, neutral = _imports(m)
        if not neutral:
            keep.append(m)
        todo.extend(deps)
    return tuple(sorted(keep))


@functools.lru_cache(maxsize=None)
def _source_sha(name: str) -> str:
    return hashlib.sha256(_module_source(name).encode("utf-8")).hexdigest()


def _module_name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, ModuleType):
        return obj.__name__
    obj = inspect.unwrap(getattr(obj, "func", obj))  # functools.partial → its function
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    return mod


def code_fingerprint(*code: Any) -> str:
    """Fingerprint of the code behind a value: the source of the modules of ``code`` (functions,
    classes, modules or module names) and of every package module they import, transitively."""
    mods = sorted({m for c in code for m in module_closure(_module_name(c))})
    return stable_hash([[m, _source_sha(m)] for m in mods])[:20]


def clear_fingerprints() -> None:
    """Forget the fingerprints computed so far (after the source changed, in tests)."""
    for f in (_module_file, module_closure, _source_sha):
        f.cache_clear()


def key(what: str, *, model: Any, code: Any, **parts: Any) -> dict:
    """The cache key of one value. ``model``: the loaded model it was computed with (its weights id
    and preprocessing key go in), a :class:`~generator.models.ModelSpec` for values of the
    architecture alone, or ``None`` for values that involve no classifier. ``code``: the function
    (or a tuple of functions / modules) that computes the value; with a model, the model code's
    fingerprint goes in too. ``parts``: everything else the value depends on (JSON-able)."""
    code = code if isinstance(code, (tuple, list)) else (code,)
    k: dict[str, Any] = {"what": what}
    if model is not None:
        spec = getattr(model, "spec", model)
        k["model"] = model.cache_id if hasattr(model, "cache_id") else \
            [spec.name, spec.family, spec.arch, dict(spec.build_kwargs)]
        k["input"] = spec.preprocess.key
        code = (*code, "generator.models")
    k["code"] = code_fingerprint(*code)
    for name, v in parts.items():
        if name in k:
            raise ValueError(f"cache key part {name!r} is set by key() itself")
        k[name] = v
    return k


DATACLASS = "__dataclass__"


def _encode(obj: Any) -> Any:
    """Dataclass instances (the typed results of ``metrics``) as tagged dicts, so that
    ``torch.load(weights_only=True)`` can read them back; :func:`_decode` rebuilds them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        return {DATACLASS: f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if DATACLASS in obj and set(obj) == {DATACLASS, "fields"}:
            module, _, name = str(obj[DATACLASS]).partition(":")
            if not (module == PACKAGE or module.startswith(PACKAGE + ".")):
                raise TypeError(f"cached dataclass {obj[DATACLASS]!r} is not of this package")
            cls: Any = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"cached {obj[DATACLASS]!r} is not a dataclass")
            return cls(**{k: _decode(v) for k, v in obj["fields"].items()})
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_decode(v) for v in obj)
    return obj


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
        self.earlier_hits = 0  # hits on results that an earlier run stored (not this process)
        self._mine: set[str] = set()  # hashes of the keys this process stored

    def _hash(self, key: dict) -> str:
        return stable_hash({"v": CACHE_VERSION, **key})

    def path(self, key: dict) -> Path:
        return self._file(self._hash(key))

    def _file(self, h: str) -> Path:
        return self.root / h[:2] / f"{h}.pt"

    def _read(self, key: dict) -> Any | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return _decode(torch.load(p, map_location="cpu", weights_only=True))
        except Exception:
            # a foreign or damaged file: treat as a miss and let put() replace it
            return None

    def get(self, key: dict) -> Any | None:
        obj = self._read(key) if self.enabled else None
        if obj is None:
            self.misses += 1
        else:
            self.hits += 1
            if self._hash(key) not in self._mine:
                self.earlier_hits += 1
        return obj

    def put(self, key: dict, obj: Any) -> Any:
        if self.enabled:
            enc = _encode(obj)
            _check_loadable(enc)
            h = self._hash(key)
            atomic_torch_save(enc, self._file(h))
            self._mine.add(h)
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
