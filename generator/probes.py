"""Labelled probe photos for the findings' per-photo checks (read at build time from the data sets of
:mod:`generator.datasets`: fetched by ``python -m generator data`` or found in a mirror).

:func:`probe_set` interleaves Imagenette val (balanced over its classes, :func:`_folder_photos`) with
the 1,000-class sample (``classes.tsv``, :func:`_sample_photos`); the site's curated photos
(:func:`select_items`) when neither exists. A :class:`Probe` quacks like an ``ImageItem``.
"""
from __future__ import annotations

from pathlib import Path

from . import imagenet
from .images import load_rgb


def select_items(ctx, s: dict) -> list:
    """The curated photos (known ImageNet class first): the fallback probe set."""
    items = list(ctx.images)
    if s["image_ids"]:
        by_id = {it.id: it for it in items}
        unknown = [i for i in s["image_ids"] if i not in by_id]
        if unknown:
            raise KeyError(f"[findings].image_ids: unknown image id(s) {', '.join(unknown)}")
        return [by_id[i] for i in s["image_ids"]]
    known = [it for it in items if it.imagenet_index is not None]
    rest = [it for it in items if it.imagenet_index is None]
    return known + rest


class Probe:
    """A labelled probe photo of a data set (quacks like an ``ImageItem`` for ``ctx.batch``)."""

    def __init__(self, path: Path, label: int, source: str) -> None:
        import hashlib

        self.path, self.imagenet_index, self.source = path, int(label), source
        self.id = f"{source}:{path.name}"
        self.title = f"{path.name} ({source})"
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self._pil = None

    @property
    def pil(self):
        if self._pil is None:
            self._pil = load_rgb(self.path)[0]
        return self._pil


def scaled(s: dict, key: str) -> int:
    """A photo count after the one ``n_scale`` knob."""
    return max(1, int(round(int(s[key]) * float(s["n_scale"]))))


def _folder_photos(ctx, folder: str, n: int) -> list:
    """Up to ``n`` photos of a labelled ImageFolder (WordNet-id class folders), balanced over its classes."""
    if not folder or n <= 0:
        return []
    path = ctx.config.resolve_path(folder)
    if not path.is_dir():
        return []
    return [Probe(p, c, path.parent.name + "-" + path.name) for p, c in imagenet.imagefolder(path, n)]


def _sample_photos(ctx, folder: str, n: int) -> list:
    """Up to ``n`` photos of the 1,000-class sample, spread over its classes."""
    if not folder or n <= 0:
        return []
    path = ctx.config.resolve_path(folder)
    return [Probe(r.path, r.index, path.name) for r in imagenet.sample_1k(path, n)]


def probe_set(ctx, s: dict) -> tuple[list, str]:
    """(photos, where from): half Imagenette val (balanced), half the 1,000-class sample;
    the curated photos (with the page saying so) when the data sets are absent."""
    n = scaled(s, "images")
    if s["image_ids"]:
        return select_items(ctx, s)[:n], "curated"
    half = _folder_photos(ctx, str(s["probe_folder"]), n // 2)
    rest = _sample_photos(ctx, str(s["probe_sample"]), n - len(half))
    photos = [p for pair in zip(half, rest) for p in pair] + half[len(rest):] + rest[len(half):]  # interleaved
    if photos:
        return photos[:n], "shared"
    return select_items(ctx, s)[:n], "curated"


def labelled_files(ctx, folder: str, max_images: int) -> tuple[Path | None, list, str | None]:
    """A labelled ImageFolder for the accuracy count: ``(path, [(file, ImageNet index)…], None)``
    (balanced over the classes when cut to ``max_images``, 0 = all), or ``(None, [], why not)``."""
    path = ctx.config.resolve_path(folder)
    if not path.is_dir():
        return None, [], f"folder {folder} not found"
    files = imagenet.imagefolder(path, int(max_images) or None)
    return (path, files, None) if files else (None, [], f"no photos in WordNet-id class folders in {folder}")
