"""Image sets: a folder of photos with an optional ``images.toml`` manifest.

Every file is checked on the way in. Files that cannot be used (unreadable,
truncated, not an image, decompression bomb, too small) are skipped with one line
naming the file and the reason; files that can be used after a well-defined
conversion (CMYK, 16-bit, palette, alpha, EXIF orientation, greyscale) are converted
to 8-bit sRGB-ish RGB and noted.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .imagenet import IMAGE_SUFFIXES, NUM_CLASSES, labels
from .util import slugify

MIN_SIDE = 32  # px; smaller photos carry no information at 224 px input
MAX_PIXELS = 40_000_000  # decompression-bomb guard (PIL's own default is ~89 M)
MANIFEST = "images.toml"


@dataclass
class ImageItem:
    id: str  # stable slug, used in page and figure names
    path: Path
    sha256: str
    pil: Image.Image  # validated 8-bit RGB
    title: str
    imagenet_index: int | None = None
    imagenet_label: str | None = None
    license: str | None = None
    author: str | None = None
    source: str | None = None
    url: str | None = None
    note: str | None = None
    conversions: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


class ImageRejected(ValueError):
    pass


def _pixels(path: Path) -> str:
    """``W×H px`` from the header alone (no decoding, so no bomb), for the message."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return f"{im.size[0]}×{im.size[1]} px"
    except Exception:
        return "size unknown"
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_rgb(path: Path, min_side: int = MIN_SIDE) -> tuple[Image.Image, list[str]]:
    """Open, verify and convert one file to 8-bit RGB; raise ImageRejected with a reason.

    ``min_side``: photos with a shorter side are rejected (the curated set's and the atlas's
    floor, :data:`MIN_SIDE`; the accuracy count takes every photo of its folder, ``1``)."""
    conversions: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old_max = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(path) as probe:
                    w, h = probe.size
                    if w * h > MAX_PIXELS:
                        raise ImageRejected(f"too large ({w}×{h} px, limit {MAX_PIXELS:,} px: possible decompression bomb)")
                    probe.verify()  # structure check; the object is unusable afterwards
                im = Image.open(path)
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                im.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old_max
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(f"too large ({_pixels(path)}, limit {MAX_PIXELS:,} px: possible decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e) or e.__class__.__name__
        if "truncated" in msg.lower() or "broken data stream" in msg.lower() or "image file is" in msg.lower():
            raise ImageRejected(f"truncated or corrupt ({msg})") from None
        raise ImageRejected(f"unreadable ({msg})") from None

    # EXIF orientation: rotate pixels so the photo is upright, as viewers show it
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
        conversions.append(f"EXIF orientation {orientation} applied")
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.round(a / hi * 255.0), 0, 255).astype(np.uint8), "L")
        conversions.append(f"{mode} 16-bit scaled to 8-bit")
    elif mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        im = Image.fromarray(np.round((a - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8), "L")
        conversions.append("float image scaled to 8-bit")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        conversions.append("palette expanded")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba).convert("RGB")
        conversions.append("alpha composited on white")
    if im.mode == "CMYK":
        im = im.convert("RGB")
        conversions.append("CMYK converted to RGB")
    if im.mode in ("L", "1"):
        conversions.append("greyscale replicated to 3 channels")
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if min(w, h) < min_side:
        raise ImageRejected(f"too small ({w}×{h} px, need at least {min_side} px on each side)")
    return im, conversions


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: keys an ``[[image]]`` entry may have, and the type each must be
ENTRY_KEYS: dict[str, type] = {"file": str, "title": str, "imagenet_index": int, "imagenet_label": str,
                               "license": str, "author": str, "source": str, "url": str, "note": str,
                               "sha256": str}
VECTOR_SUFFIXES = {".svg", ".svgz", ".eps", ".pdf"}


def _class_names() -> list[str]:
    return labels()  # torchvision's category names, no download (generator.imagenet)


def check_entry(entry: object, where: str, names: list[str] | None = None) -> tuple[dict | None, str | None]:
    """One manifest entry checked key by key: (clean entry, None) or (None, one-line reason).

    ``imagenet_index`` must be an integer 0..999; an ``imagenet_label`` given with it must be
    that class's ImageNet name (else the page would name one class while the maps explain
    another); an index without a label gets the ImageNet name.
    """
    if not isinstance(entry, dict):
        return None, f"{where}: must be a table ([[image]] with key = value lines), got {entry!r}"
    for key, value in entry.items():
        want = ENTRY_KEYS.get(key)
        if want is None:
            return None, f"{where}: unknown key {key!r}; allowed: {', '.join(ENTRY_KEYS)}"
        if isinstance(value, bool) or not isinstance(value, want):
            what = "an integer" if want is int else "a string"
            return None, f"{where}: {key} = {value!r}: must be {what}"
    if not entry.get("file", "").strip():
        return None, f"{where}: 'file' is missing or empty; it must name an image file in the folder"
    idx = entry.get("imagenet_index")
    if idx is not None and not 0 <= idx < NUM_CLASSES:
        return None, f"{where}: imagenet_index = {idx!r}: must be an integer from 0 to {NUM_CLASSES - 1}"
    clean = dict(entry)
    if idx is not None:
        names = names if names is not None else _class_names()
        label = entry.get("imagenet_label")
        if label is None:
            clean["imagenet_label"] = names[idx]
        elif label.strip().lower() != names[idx].lower():
            return None, (f"{where}: imagenet_label = {label!r} is not the name of imagenet_index = {idx} "
                          f"({names[idx]!r}); give the matching pair, or leave out imagenet_label")
    return clean, None


def _inside(path: Path, root: Path) -> bool:
    """``path`` (links resolved) lies inside ``root`` (links resolved)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def read_manifest(manifest_path: Path) -> list:
    """The raw ``[[image]]`` list of a manifest; ConfigError for a file that is not one."""
    from .config import ConfigError, read_toml

    data = read_toml(manifest_path, "manifest")
    entries = data.get("image", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{manifest_path}: 'image' must be an array of tables ([[image]] per photo), "
                          f"got {type(entries).__name__ if not isinstance(entries, dict) else 'a single table [image]'}")
    return entries


def load_image_set(folder: str | Path, limit: int | None = None) -> tuple[list[ImageItem], list[Skipped], list[str]]:
    """Load every image in ``folder`` (manifest order if ``images.toml`` exists, else sorted).

    Returns (items, skipped, notes). ``notes`` are warnings that do not skip a file
    (conversions, manifest hash mismatch, files missing from the manifest). A manifest
    entry with a bad value, a path leading outside the folder (links resolved; such a
    file is never opened), a file listed twice or an SVG is skipped with one line. A
    folder that is not one, or a manifest that is no TOML array of tables, raises
    :class:`~generator.config.ConfigError`.
    """
    from .config import ConfigError

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist" if not folder.exists()
                          else f"image folder {folder} is not a folder")
    manifest_path = folder / MANIFEST
    entries: list = []
    notes: list[str] = []
    skipped: list[Skipped] = []

    def listing() -> list[Path]:
        try:
            return sorted(folder.iterdir())
        except OSError as e:
            raise ConfigError(f"image folder {folder} cannot be listed ({e.strerror or e})") from None

    if manifest_path.is_file():
        entries = read_manifest(manifest_path)
        listed = {e.get("file") for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)}
        for p in listing():
            if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed:
                entries.append({"file": p.name})
                notes.append(f"{p}: not in {MANIFEST}; used without attribution or class")
            elif p.suffix.lower() in VECTOR_SUFFIXES and p.name not in listed:
                entries.append({"file": p.name})
    else:
        for p in listing():
            if p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES | VECTOR_SUFFIXES:
                entries.append({"file": p.name})
            elif p.is_file():
                notes.append(f"{p}: ignored (not an image file name)")

    names: list[str] | None = None
    items: list[ImageItem] = []
    used_ids: set[str] = set()
    seen: dict[Path, int] = {}
    for n_entry, raw in enumerate(entries, 1):
        if limit is not None and len(items) >= limit:
            break
        where = f"{manifest_path} [[image]] #{n_entry}" if manifest_path.is_file() else str(folder)
        if isinstance(raw, dict) and isinstance(raw.get("file"), str):
            where += f" ({raw['file']!r})"
        if isinstance(raw, dict) and raw.get("imagenet_index") is not None and names is None:
            names = _class_names()
        entry, problem = check_entry(raw, where, names)
        if problem:
            skipped.append(Skipped(folder / str(raw.get("file", "?")) if isinstance(raw, dict) else folder, problem))
            continue
        name = entry["file"]
        path = folder / name
        # never open anything outside the folder: absolute paths, "..", links pointing out
        if Path(name).is_absolute() or not _inside(path, folder):
            skipped.append(Skipped(path, f"{where}: lies outside the image folder {folder} (after resolving "
                                         f"links); only files inside it are used"))
            continue
        real = path.resolve()
        if real in seen:
            skipped.append(Skipped(path, f"{where}: the same file is already listed as entry #{seen[real]}; "
                                         f"each photo is listed once"))
            continue
        seen[real] = n_entry
        if path.is_dir():
            skipped.append(Skipped(path, "is a folder, not an image file"))
            continue
        if not path.is_file():
            skipped.append(Skipped(path, "not a regular file" if path.exists()
                                   else "listed in the manifest but the file does not exist"))
            continue
        if path.suffix.lower() in VECTOR_SUFFIXES:
            skipped.append(Skipped(path, f"vector image ({path.suffix.lower()}) not supported; convert it to "
                                         f"PNG or JPEG ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            continue
        try:
            pil, conv = load_rgb(path)
            digest = _sha256(path)
        except ImageRejected as e:
            skipped.append(Skipped(path, str(e)))
            continue
        except OSError as e:
            skipped.append(Skipped(path, f"unreadable ({e.strerror or e})"))
            continue
        if entry.get("sha256") and entry["sha256"] != digest:
            notes.append(f"{path}: sha256 differs from the manifest (file changed since it was catalogued)")
        for c in conv:
            notes.append(f"{path}: {c}")
        base = slugify(Path(name).stem)
        ident, n = base, 2
        while ident in used_ids:
            ident, n = f"{base}-{n}", n + 1
        used_ids.add(ident)
        items.append(
            ImageItem(
                id=ident, path=path, sha256=digest, pil=pil, title=str(entry.get("title") or Path(name).stem),
                imagenet_index=entry.get("imagenet_index"), imagenet_label=entry.get("imagenet_label"),
                license=entry.get("license"), author=entry.get("author"), source=entry.get("source"),
                url=entry.get("url"), note=entry.get("note"), conversions=conv,
            )
        )
    return items, skipped, notes
