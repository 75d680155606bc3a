"""Image folders for the unit atlas: list any folder of photos and stream them to a model.

* :func:`list_folder` — the images of a flat folder or an ImageFolder (one sub-folder per
  class), sorted, with a fingerprint of (path, size, mtime) for cache keys;
  :meth:`FolderListing.subset` picks an evenly spaced subset.
* :func:`class_label` — an ImageFolder class name as a readable label (ImageNet wnids → labels).
* :func:`load_input` / :func:`load_inputs` / :func:`iterate_batches` — files → model inputs, with
  the same checks, conversions, resize and centre crop as the curated image set
  (:mod:`generator.images`); unreadable files are skipped and counted, the stream goes on.
* :func:`iterate_decoded` + :func:`to_inputs` — the same, split in two so that several
  models with different input sizes share one decoding of every file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import imagenet
from .images import IMAGE_SUFFIXES, load_rgb
from .preprocess import Preprocess
from .util import stable_hash


@dataclass
class FolderListing:
    root: Path
    files: list[str]  # relative POSIX paths, sorted
    classes: list[str | None]  # ImageFolder class (sub-folder name) per file, None for flat folders
    fingerprint: str  # hash of (path, size, mtime) of every file

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, max_images: int | None) -> list[int]:
        """Indices of at most ``max_images`` files, evenly spaced over the sorted list
        (so every class of an ImageFolder keeps its share); all when 0/None."""
        n = len(self.files)
        if not max_images or max_images >= n:
            return list(range(n))
        return sorted({int(i * n // max_images) for i in range(max_images)})


def list_folder(folder: str | Path) -> FolderListing:
    """Images of a flat folder or an ImageFolder (one sub-folder per class, one level)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"atlas image folder {root} does not exist")
    files: list[str] = []
    classes: list[str | None] = []
    meta = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        depth = len(rel_dir.parts)
        if depth > 1:
            continue
        for fn in sorted(filenames):
            if fn.startswith(".") or Path(fn).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = (rel_dir / fn).as_posix()
            st = (Path(dirpath) / fn).stat()
            files.append(rel)
            classes.append(rel_dir.parts[0] if depth == 1 else None)
            meta.append((rel, st.st_size, st.st_mtime_ns))
    order = sorted(range(len(files)), key=lambda i: files[i])
    files = [files[i] for i in order]
    classes = [classes[i] for i in order]
    meta = [meta[i] for i in order]
    return FolderListing(root, files, classes, stable_hash(meta))


def class_label(name: str | None, labels: Sequence[str] | None = None) -> str | None:
    """Readable label of an ImageFolder class: ImageNet wnids (n01440764) → the model's
    label (tench); anything else is returned as it is."""
    if name is None:
        return None
    if labels is not None and len(labels) == imagenet.NUM_CLASSES and imagenet.WNID.fullmatch(name):
        i = imagenet.wnid_to_index().get(name)
        if i is not None:
            return labels[i]
    return name


def load_input(path: Path, pre: Preprocess) -> torch.Tensor:
    """One file → 3×S×S float in [0, 1]: the same checks and conversions as the curated
    image set (:func:`generator.images.load_rgb`: EXIF orientation, alpha, 16-bit, CMYK…)
    and the model's resize + centre crop (``pre``, a spec's :class:`~generator.models.Preprocess`).
    Raises :class:`generator.images.ImageRejected` for unusable files."""
    pil, _conversions = load_rgb(Path(path))
    return pre([pil])[0]


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, files: list[str], indices: list[int], pre: Preprocess) -> None:
        self.root, self.files, self.indices = root, files, indices
        self.pre = pre

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        try:
            x = load_input(self.root / self.files[idx], self.pre)
            ok = True
        except Exception:  # unreadable file: skipped (counted), the stream goes on
            x = torch.zeros(3, self.pre.input_size, self.pre.input_size)
            ok = False
        return x, idx, ok


def iterate_batches(listing: FolderListing, indices: list[int], pre: Preprocess,
                    batch_size: int, workers: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images B×3×S×S, file indices [B], ok mask [B]) batches, in order."""
    ds = _FolderDataset(listing.root, listing.files, indices, pre)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                     persistent_workers=False)
    for x, idx, ok in dl:
        yield x, idx.long(), ok.bool()


class _DecodedDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, files: list[str], indices: list[int]) -> None:
        self.root, self.files, self.indices = root, files, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        try:
            pil, _conversions = load_rgb(self.root / self.files[idx])
        except Exception:  # unreadable file: skipped (counted), the stream goes on
            pil = None
        return pil, idx


def _as_lists(batch):
    return [p for p, _ in batch], torch.tensor([i for _, i in batch], dtype=torch.long)


def iterate_decoded(listing: FolderListing, indices: list[int], batch_size: int,
                    workers: int = 0) -> Iterator[tuple[list, torch.Tensor, torch.Tensor]]:
    """(decoded RGB PIL images [B] (None where unreadable), file indices [B], ok mask [B])
    batches, in order; each file is decoded once, whatever number of models it feeds
    (:func:`to_inputs` makes each model's input from them)."""
    ds = _DecodedDataset(listing.root, listing.files, indices)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                     collate_fn=_as_lists, persistent_workers=False)
    for pils, idx in dl:
        yield pils, idx, torch.tensor([p is not None for p in pils], dtype=torch.bool)


def to_inputs(pils: list, pre: Preprocess) -> torch.Tensor:
    """Decoded images (None: unreadable) → B×3×S×S model inputs, zeros where None: the
    same tensors as :func:`iterate_batches` gives for those files."""
    out = torch.zeros(len(pils), 3, pre.input_size, pre.input_size)
    ok = [j for j, p in enumerate(pils) if p is not None]
    if ok:
        out[ok] = pre([pils[j] for j in ok])
    return out


def load_inputs(listing: FolderListing, indices: Sequence[int], pre: Preprocess) -> torch.Tensor:
    return torch.stack([load_input(listing.root / listing.files[int(i)], pre) for i in indices])
