"""ImageNet-1k classes and the labelled photo folders read with them: the one place for both.

Classes — index (0–999) ↔ WordNet id ↔ label:

* :func:`labels` — the class names in torchvision's weight metadata
  (``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``: shipped with torchvision, no
  download). Every ImageNet-1k model of the registry uses this class order.
* :func:`wnids`, :func:`wnid_to_index` — the WordNet ids of the ILSVRC-2012 classes from the
  list timm ships in its package (``timm/data/_info/imagenet_synsets.txt``, read as a file:
  timm is not imported). The class index *is* the position of the id in sorted order (how
  ILSVRC-2012 numbers its classes), which :func:`wnids` checks, with 1000 distinct ids.

Labelled photos — readers list files and classes; they open no photo (every photo is opened
by :func:`generator.images.load_rgb`):

* :func:`imagefolder` — an ImageFolder whose class folders are WordNet ids (Imagenette):
  (path, class index) pairs, balanced over the classes when cut to ``n``;
  :func:`folder_wnids` — its class folders' ids → indices.
* :func:`sample_1k` — the 1,000-class sample (``classes.tsv``: one photo per class), parsed by
  :func:`read_classes_tsv`, the only parser of that table.

This module imports nothing from the package (it is the bottom of the input layer;
:mod:`generator.images` and :mod:`generator.models` import it).
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

NUM_CLASSES = 1000
#: file names read as photos, here and by :mod:`generator.images` / :mod:`generator.image_folder`
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CLASSES_TSV = "classes.tsv"
WNID = re.compile(r"n\d{8}")
_SYNSETS = ("data", "_info", "imagenet_synsets.txt")  # inside the installed timm package
_README_ROW = re.compile(r"^\|\s*(n\d{8})\s*\|\s*(\d+)\s*\|")


# --------------------------------------------------------------------------------- classes


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights  # deferred: torchvision is heavy to import

    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != NUM_CLASSES:  # pragma: no cover - a changed torchvision
        raise RuntimeError(f"torchvision's ImageNet category list has {len(names)} names, not {NUM_CLASSES}")
    return names


def labels() -> list[str]:
    """The 1000 ImageNet-1k class names, by class index (torchvision's names, which are
    distinct: 'crane bird' / 'crane', 'maillot tank suit' / 'maillot')."""
    return list(_labels())


def synsets_file() -> Path:
    """Where the WordNet ids are read from: ``imagenet_synsets.txt`` in the installed timm."""
    spec = importlib.util.find_spec("timm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the WordNet ids of the ImageNet classes come from the timm package "
                           "(timm/data/_info/imagenet_synsets.txt), and timm is not installed")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*_SYNSETS)


@functools.lru_cache(maxsize=1)
def _wnids() -> tuple[str, ...]:
    path = synsets_file()
    if not path.is_file():
        raise RuntimeError(f"{path} not found: the installed timm does not ship the ImageNet-1k WordNet ids "
                           f"(timm/data/_info/imagenet_synsets.txt); install a newer timm")
    ids = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    bad = [w for w in ids if not WNID.fullmatch(w)]
    if len(ids) != NUM_CLASSES or len(set(ids)) != NUM_CLASSES or bad or list(ids) != sorted(ids):
        raise RuntimeError(f"{path}: expected the {NUM_CLASSES} distinct ImageNet-1k WordNet ids in sorted "
                           f"order, got {len(ids)} lines ({len(set(ids))} distinct"
                           + (f", not WordNet ids: {bad[:3]}" if bad else "") + ")")
    return ids


def wnids() -> list[str]:
    """The 1000 WordNet ids by class index (``wnids()[0] == "n01440764"``, tench)."""
    return list(_wnids())


@functools.lru_cache(maxsize=1)
def wnid_to_index() -> Mapping[str, int]:
    """WordNet id → class index for the 1000 ImageNet-1k classes (read-only, cached)."""
    return MappingProxyType({w: i for i, w in enumerate(_wnids())})


# --------------------------------------------------------------------------- ImageFolder


def _readme_table(folder: Path) -> tuple[Path, dict[str, tuple[int, int]]] | None:
    """``| wnid | index | …`` rows of README.md in ``folder`` or its parent (the first that has
    any): (file, {wnid: (index, line number)})."""
    for cand in (folder / "README.md", folder.parent / "README.md"):
        if cand.is_file():
            rows = {}
            for n, line in enumerate(cand.read_text(encoding="utf-8").splitlines(), 1):
                if m := _README_ROW.match(line.strip()):
                    rows[m.group(1)] = (int(m.group(2)), n)
            if rows:
                return cand, rows
    return None


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageFolder {folder} does not exist" if not folder.exists()
                                else f"ImageFolder {folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_wnids(folder: str | Path) -> dict[str, int]:
    """WordNet id → class index for the class folders of the ImageFolder ``folder`` that have one:
    ImageNet-1k ids by :func:`wnid_to_index`. A README.md table (``| wnid | index | …``, in the
    folder or its parent) may name further ids (a data set whose classes are mapped onto ImageNet
    classes, a test's made-up ids); a row that gives an ImageNet-1k id another index, or an index
    outside 0–999, is a ValueError naming the line. Empty for a folder without such class folders."""
    folder = Path(folder)
    names = [d.name for d in _subfolders(folder)]
    table = _readme_table(folder)
    extra: dict[str, int] = {}
    if table is not None:
        readme, rows = table
        std = wnid_to_index()
        for w, (i, line) in rows.items():
            if not 0 <= i < NUM_CLASSES:
                raise ValueError(f"{readme}:{line}: class index {i} of {w} is outside 0–{NUM_CLASSES - 1}")
            if w in std and std[w] != i:
                raise ValueError(f"{readme}:{line}: {w} is ImageNet-1k class {std[w]} ({labels()[std[w]]}), "
                                 f"not {i}")
            extra[w] = i
    std = wnid_to_index() if any(WNID.fullmatch(n) for n in names) else {}
    return {n: extra[n] if n in extra else std[n] for n in names if n in extra or n in std}


def _photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def imagefolder(folder: str | Path, n: int | None = None,
                wnid_map: Mapping[str, int] | None = None) -> list[tuple[Path, int]]:
    """(photo path, class index) for an ImageFolder whose class folders are WordNet ids (Imagenette's
    ``val/n01440764/*.JPEG``); class folders without a known id are left out.

    Round-robin over the classes (sorted), each class in sorted file-name order, so the first
    ``n`` (``None`` or ≤ 0: all) are balanced over the classes; deterministic. ``wnid_map``: the
    ids to use (default :func:`folder_wnids`)."""
    folder = Path(folder)
    wmap = folder_wnids(folder) if wnid_map is None else wnid_map
    per_class = [[(p, int(wmap[d.name])) for p in _photos_in(d)] for d in _subfolders(folder) if d.name in wmap]
    out: list[tuple[Path, int]] = []
    for i in range(max((len(c) for c in per_class), default=0)):
        out.extend(c[i] for c in per_class if i < len(c))
    return out[:n] if n is not None and n > 0 else out


# ------------------------------------------------------------------- the 1,000-class sample


@dataclass(frozen=True)
class SamplePhoto:
    path: Path
    index: int  # ImageNet-1k class index
    wnid: str
    label: str  # :func:`labels`' name of the class


def read_classes_tsv(path: str | Path) -> list[SamplePhoto]:
    """Every row of a ``classes.tsv`` (tab-separated, a header naming the columns ``file``,
    ``imagenet_index`` and optionally ``wnid``, ``label``) in file order, paths relative to its
    folder, whether the files exist or not.

    A malformed table is a ValueError naming file and line: a missing column, a row with another
    number of fields, an index that is no integer 0–999, a file name that is empty or leads out of
    the folder, a ``wnid`` that is not the WordNet id of the row's index. The ``label`` column is
    not used (it names two classes differently from torchvision: 'crane', 'maillot'): records carry
    :func:`labels`' name."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty; expected a header line 'file<TAB>imagenet_index<TAB>wnid<TAB>label'")
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in ("file", "imagenet_index") if c not in header]
    if missing:
        raise ValueError(f"{path}:1: the header has no column {', '.join(missing)} (tab-separated header "
                         f"'file<TAB>imagenet_index<TAB>wnid<TAB>label' expected), got {lines[0]!r}")
    col = {h: k for k, h in enumerate(header)}
    names, ids = labels(), wnids()
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != len(header):
            raise ValueError(f"{path}:{n}: {len(fields)} tab-separated fields, the header has {len(header)} "
                             f"({', '.join(header)}): {line!r}")
        name, idx = fields[col["file"]], fields[col["imagenet_index"]]
        wnid = fields[col["wnid"]] if "wnid" in col else None
        if not re.fullmatch(r"\d+", idx) or not 0 <= int(idx) < NUM_CLASSES:
            raise ValueError(f"{path}:{n}: imagenet_index {idx!r} is not an integer from 0 to {NUM_CLASSES - 1}")
        i = int(idx)
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{path}:{n}: file {name!r} must name a file inside {path.parent}")
        if wnid is not None and wnid != ids[i]:
            raise ValueError(f"{path}:{n}: wnid {wnid!r} is not the WordNet id of class {i} "
                             f"({names[i]}: {ids[i]})")
        out.append(SamplePhoto(path.parent / rel, i, ids[i], names[i]))
    return out


def sample_1k(folder: str | Path, n: int | None = None) -> list[SamplePhoto]:
    """The photos of the 1,000-class sample in ``folder`` (its ``classes.tsv``, in table order),
    leaving out rows whose file is missing; ``[]`` when the folder has no ``classes.tsv``.

    ``n`` (``None`` or ≤ 0: all): that many rows spread evenly over the table (so over the classes):
    rows ``round(linspace(0, len − 1, n))``."""
    table = Path(folder) / CLASSES_TSV
    if not table.is_file():
        return []
    rows = [r for r in read_classes_tsv(table) if r.path.is_file()]
    if n is None or n <= 0 or n >= len(rows):
        return rows
    import numpy as np

    pick = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))
    return [rows[i] for i in pick]
