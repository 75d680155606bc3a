"""Content-addressed result cache.

A key is any JSON-serialisable dict (model + weights id, method, parameters, image
hash, code version); its SHA-256 names a file ``<root>/<aa>/<hash>.pt`` written
atomically with ``torch.save``. A rerun with nothing changed finds every result; a
changed image changes only its own keys; an interrupted run leaves either a complete
file or none, so it resumes where it stopped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .util import atomic_torch_save, stable_hash

# Bump when the meaning of cached results changes (it is part of every key).
CACHE_VERSION = 1


class Cache:
    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, key: dict) -> Path:
        h = stable_hash({"v": CACHE_VERSION, **key})
        return self.root / h[:2] / f"{h}.pt"

    def get(self, key: dict) -> Any | None:
        if not self.enabled:
            self.misses += 1
            return None
        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            # a foreign or damaged file: treat as a miss and let put() replace it
            self.misses += 1
            return None
        self.hits += 1
        return obj

    def put(self, key: dict, obj: Any) -> Any:
        if self.enabled:
            atomic_torch_save(obj, self.path(key))
        return obj

    def get_or_compute(self, key: dict, fn: Callable[[], Any]) -> Any:
        obj = self.get(key)
        if obj is None:
            obj = self.put(key, fn())
        return obj

    def batched(self, keys: list[dict], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        """Look up many keys; call ``compute(missing_indices)`` once for the misses (a batch).

        ``compute`` returns one result per missing index, in order; each is stored as
        soon as the batch returns.
        """
        out: list[Any] = [self.get(k) for k in keys]
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            for i, res in zip(missing, compute(missing), strict=True):
                out[i] = self.put(keys[i], res)
        return out
