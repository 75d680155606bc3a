"""The two labelled photo sets the build reads at run time, found or fetched into a per-user folder.

* **Imagenette** (fast.ai; its 320 px variant): the 3,925 validation photos, ten ImageNet classes,
  laid out ``imagenette/val/<wnid>/*.JPEG``. The archive and its MD5 are torchvision's
  (``torchvision.datasets.Imagenette``, size ``"320px"``), checked with torchvision's
  ``check_integrity``; only ``val/`` is extracted.
* **The 1,000-class sample** (one ImageNet photo per class, ``EliSchwartz/imagenet-sample-images``
  at a pinned commit), laid out ``imagenet-1k-sample/`` with a ``classes.tsv`` made from the file
  names. GitHub publishes no checksum of its archives (they are made on request and their bytes may
  change), so the files are checked instead: their git tree hash must be the pinned commit's tree,
  and there must be 1,000 photos named ``<wnid>_<label>.JPEG`` for the 1,000 ImageNet classes.

Where: :func:`data_root` — ``$CNNVIS_DATA`` or the user's cache folder (``~/.cache/cnnvis/data``,
``$XDG_CACHE_HOME`` respected). A mirror with the same layout (``imagenette/val``,
``imagenet-1k-sample``, e.g. ``../shared``) is used as it is when ``$CNNVIS_DATA`` points at it.

How (:func:`fetch`): download with HTTP Range resume into ``<root>/.partial/<file>`` (a cut
connection resumes from the bytes there, in the same call or the next one), checksum, extract into
a temporary folder inside the root with every member checked to stay inside it (``..``, absolute
paths, links and special files are refused with a one-line error naming the member), check the
files, then one rename into place: an interruption or a corrupt archive leaves no data set folder.
Errors are one-line :class:`DataError` s. ``$CNNVIS_OFFLINE=1`` never touches the network.

Config values ``"data:<name>/<sub>"`` (``data:imagenette/val``, ``data:imagenet-1k-sample``) are
resolved to the located folder by :func:`resolve_data_path`.

This module reads files and the network only; it imports :mod:`generator.imagenet` (the class
list) and, for the checksum, torchvision, both lazily; never the stages or the build.
"""
from __future__ import annotations

CACHE_NEUTRAL = True  # finds and downloads photo folders; cached results are keyed by the photos' bytes

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

try:  # POSIX: one download of a data set at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

FIX = "python -m generator data"  # the one command that fetches what is missing (make data)
PREFIX = "data:"  # config values naming a data set's folder: "data:imagenette/val"
PARTIAL = ".partial"  # downloads in progress, under the root
MARKER = ".cnnvis-data.json"  # written into a fetched data set: where from, when, checks
CHUNK = 1 << 16
TIMEOUT = 30.0  # seconds a connection may stay silent
RETRIES = 3  # resumed attempts after a cut connection, within one fetch
RETRY_DELAY = 2.0  # seconds before the first resumed attempt (doubling)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}  # = imagenet.IMAGE_SUFFIXES


class DataError(RuntimeError):
    """A data set could not be fetched or is not what it should be (one line)."""


class Offline(DataError):
    """No network (``$CNNVIS_OFFLINE``, or the host could not be reached); ``why`` in a few words."""

    def __init__(self, message: str, why: str = "offline") -> None:
        super().__init__(message)
        self.why = why


# ------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class DataSet:
    """A data set: where it comes from, what its folder under the data root holds, how it is checked."""

    name: str  # folder under the data root, and the name on the command line
    title: str
    about: str
    url: str
    archive: str  # file name of the download in <root>/.partial
    size: int  # bytes to download (for messages; the server's length decides)
    members: tuple[tuple[str, str], ...]  # (archive path prefix, where under the folder): what is extracted
    photos: int  # photo files expected under photo_dir (recursively)
    photo_dir: str = ""  # relative to the folder
    classes: tuple[str, ...] = ()  # class folders expected in photo_dir (none: a flat folder)
    table: str = ""  # a file the folder must hold (classes.tsv)
    md5: str | None = None  # of the archive, where the source publishes one
    git_tree: str | None = None  # git tree hash of the extracted files (a pinned commit's tree)
    finish: Callable[[Path], None] | None = None  # checks and completes the extracted folder
    credit: str = ""  # Markdown
    terms: str = ""  # Markdown
    source_note: str = ""  # what is checked, for `data` and the site


# torchvision.datasets.Imagenette._ARCHIVES["320px"] (torchvision 0.29); tests/test_data.py checks
# they are still torchvision's, so the archive and its checksum stay the ones torchvision uses.
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
IMAGENETTE_MD5 = "3df6f0d01a2c9592104656642f5e78a3"
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")

# pin: the commit of github.com/EliSchwartz/imagenet-sample-images ("Merge pull request #2", 2022-11-07,
# the head since; the commit ../shared/imagenet-1k-sample/README.md names as bc69043) and its git tree
# (`git rev-parse bc69043e…^{tree}`): the extracted files must hash to it.
SAMPLE_REPO = "EliSchwartz/imagenet-sample-images"
SAMPLE_COMMIT = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"
SAMPLE_TREE = "0a95d9cc62e5337173fc2ec8b26f1f4a1f74eaa2"
SAMPLE_URL = f"https://github.com/{SAMPLE_REPO}/archive/{SAMPLE_COMMIT}.tar.gz"
SAMPLE_FILE = re.compile(r"(n\d{8})_(.+)\.JPEG")

IMAGENET_TERMS = ("the photos are ImageNet's: [ImageNet's terms of access](https://image-net.org/download.php) "
                  "apply (non-commercial research and educational use only)")


def _write_sample_table(folder: Path) -> None:
    """The sample as extracted: check its 1,000 file names against the ImageNet classes and write
    ``classes.tsv`` (``file``, ``imagenet_index``, ``wnid``, ``label``; label from the file name)."""
    from . import imagenet

    std = imagenet.wnid_to_index()
    rows, seen, bad = [], set(), []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = SAMPLE_FILE.fullmatch(p.name)
        if not m or m.group(1) not in std or m.group(1) in seen:
            bad.append(p.name)
            continue
        seen.add(m.group(1))
        rows.append((std[m.group(1)], p.name, m.group(1), m.group(2).replace("_", " ")))
    if bad or len(rows) != len(std):
        raise DataError(f"expected {len(std)} photos named <wnid>_<label>.JPEG, one per ImageNet class, found "
                        f"{len(rows)}" + (f" and {len(bad)} other photo(s) ({', '.join(bad[:3])})" if bad else ""))
    lines = ["file\timagenet_index\twnid\tlabel"] + [f"{f}\t{i}\t{w}\t{lab}" for i, f, w, lab in sorted(rows)]
    (folder / "classes.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


REGISTRY: dict[str, DataSet] = {
    "imagenette": DataSet(
        name="imagenette",
        title="Imagenette (validation photos)",
        about="3,925 ImageNet photos of ten easily told classes (tench, English springer, cassette player, "
              "chain saw, church, French horn, garbage truck, gas pump, golf ball, parachute), shorter side "
              "320 px: the labelled probe photos, the atlas's photo stream and the measured accuracy",
        url=IMAGENETTE_URL, archive="imagenette2-320.tgz", size=341_663_724,
        members=(("imagenette2-320/val/", "val"),),
        photos=3925, photo_dir="val", classes=IMAGENETTE_WNIDS, md5=IMAGENETTE_MD5,
        credit="[Imagenette](https://github.com/fastai/imagenette) by Jeremy Howard (fast.ai), the 320 px variant when fetched (a mirror may hold a smaller copy), "
               "validation split; the data set is distributed under the Apache License 2.0",
        terms=IMAGENET_TERMS,
        source_note="MD5 of the archive as torchvision's Imagenette class gives it; 3,925 photos in 10 class folders",
    ),
    "imagenet-1k-sample": DataSet(
        name="imagenet-1k-sample",
        title="ImageNet sample (one photo per class)",
        about="1,000 ImageNet photos, one per class: a probe set that covers every class and a real photo "
              "beside each class visualisation",
        url=SAMPLE_URL, archive=f"imagenet-sample-images-{SAMPLE_COMMIT[:12]}.tar.gz", size=110_000_000,
        members=(("*/", ""),),  # GitHub's top folder: imagenet-sample-images-<commit>/
        photos=1000, table="classes.tsv", git_tree=SAMPLE_TREE, finish=_write_sample_table,
        credit=f"[imagenet-sample-images](https://github.com/{SAMPLE_REPO}) by Eli Schwartz, commit "
               f"`{SAMPLE_COMMIT[:7]}` (the repository states no licence of its own)",
        terms=IMAGENET_TERMS,
        source_note="the files' git tree must be the pinned commit's; 1,000 photos named for the 1,000 ImageNet "
                    "classes (GitHub publishes no checksum of its archives)",
    ),
}


#: folder names of training data that are not data sets of the registry: what they are
_OTHER_FOLDERS = {"images": "the site's curated photos (data/images)"}
_SPLITS = {"train": "training photos", "val": "validation photos"}


def describe_folders(text: str) -> str:
    """A description of training data that names folders of the machine that made it (as a generator's
    checkpoint records them: "../shared/imagenette/train + ../shared/images") with each folder named by
    the data set it is and where that comes from: "Imagenette (fast.ai), training photos + the site's
    curated photos (data/images)". Paths of unknown folders keep only their last two parts."""
    import re

    def name(m: re.Match) -> str:
        parts = [p for p in m.group(0).replace("\\", "/").split("/") if p not in ("", ".", "..")]
        for i, part in enumerate(parts):
            if part in REGISTRY:
                rest = parts[i + 1 :]
                split = _SPLITS.get(rest[0], "/".join(rest)) if rest else ""
                what = {"imagenette": "Imagenette (fast.ai)", "imagenet-1k-sample": "the 1,000-class ImageNet sample "
                        f"(github.com/{SAMPLE_REPO})"}.get(part, REGISTRY[part].title)
                return f"{what}, {split}" if split else what
            if part in _OTHER_FOLDERS and i == len(parts) - 1:
                return _OTHER_FOLDERS[part]
        return "/".join(parts[-2:])

    return re.sub(r"(?:[A-Za-z]:)?[\\/.\w-]*[\\/][\w./\\-]*\w", name, str(text))


def get(name: str | DataSet) -> DataSet:
    if isinstance(name, DataSet):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}: one of {', '.join(REGISTRY)}") from None


# ------------------------------------------------------------------------------ where


def user_cache_dir() -> Path:
    """The platform's per-user cache folder: ``$XDG_CACHE_HOME`` or ``~/.cache`` (Linux and other
    Unix), ``~/Library/Caches`` (macOS), ``%LOCALAPPDATA%`` (Windows)."""
    if sys.platform == "win32":  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) if base else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":  # pragma: no cover
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"


def data_root() -> Path:
    """``$CNNVIS_DATA`` (a fetched folder or a mirror with the same layout), else
    ``<user cache>/cnnvis/data``."""
    env = os.environ.get("CNNVIS_DATA", "").strip()
    return Path(env).expanduser().resolve() if env else user_cache_dir() / "cnnvis" / "data"


def offline() -> bool:
    return os.environ.get("CNNVIS_OFFLINE", "") not in ("", "0")


def _photos(folder: Path) -> Iterator[Path]:
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir():
            yield from _photos(p)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            yield p


def check(name: str | DataSet, folder: Path) -> str | None:
    """Why ``folder`` is not a complete copy of the data set (``None``: it is): file counts, class
    folders and the table it must hold."""
    ds = get(name)
    if not folder.is_dir():
        return "not found"
    photo_dir = folder / ds.photo_dir if ds.photo_dir else folder
    if not photo_dir.is_dir():
        return f"no {ds.photo_dir}/ folder"
    if ds.classes:
        have = sorted(d.name for d in photo_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if have != sorted(ds.classes):
            return f"{len(have)} class folders in {ds.photo_dir or '.'}/, expected {len(ds.classes)} ({ds.classes[0]} …)"
    if ds.table and not (folder / ds.table).is_file():
        return f"no {ds.table}"
    n = sum(1 for _ in _photos(photo_dir))
    if n != ds.photos:
        return f"{n:,} photos, expected {ds.photos:,}"
    return None


def locate(name: str | DataSet, root: str | Path | None = None) -> Path | None:
    """The data set's folder under ``root`` (default :func:`data_root`) when it is there and
    complete (:func:`check`), else ``None``."""
    ds = get(name)
    folder = (Path(root) if root is not None else data_root()) / ds.name
    return folder if check(ds, folder) is None else None


def resolve_data_path(value: str, resolve_path: Callable[[str], Path]) -> Path:
    """A config path: ``"data:<name>[/<sub>]"`` → the data set's folder under :func:`data_root`
    (``/<sub>``): the located one, or where it would be when it is missing (a folder that does not
    exist, which the stages treat as "not found"; an incomplete folder someone made there is used
    as it is, and ``python -m generator data --check`` says what it lacks). Any other value →
    ``resolve_path(value)``. A ``data:`` value naming no data set is a :class:`DataError`."""
    value = str(value)
    if not value.startswith(PREFIX):
        return resolve_path(value)
    name, _, sub = value[len(PREFIX):].strip("/").partition("/")
    if name not in REGISTRY:
        raise DataError(f"{value!r}: unknown data set {name!r} (data:{' or data:'.join(REGISTRY)})")
    if ".." in PurePosixPath(sub).parts:
        raise DataError(f"{value!r}: the part after the data set's name must stay inside its folder")
    folder = data_root() / name
    return folder / sub if sub else folder


def missing_note(name: str | DataSet) -> str:
    """One sentence for a page or the console: the data set is missing, and the command that fixes it."""
    ds = get(name)
    return (f"{ds.title} was not found in {data_root()}: run `{FIX}` (or `make data`) to download it "
            f"(about {_mb(ds.size)}), or set CNNVIS_DATA to a folder that holds {ds.name}/.")


def credits_markdown() -> str:
    """Credit and terms of each data set, as a Markdown list (for the site)."""
    return "\n".join(f"- **{ds.title}**: {ds.credit}; {ds.terms}. Downloaded by `{FIX}` from <{ds.url}>; "
                     f"checked: {ds.source_note}." for ds in REGISTRY.values())


def status(root: str | Path | None = None) -> list[dict]:
    """Per data set: ``name``, ``title``, ``folder`` (where it is or would be), ``found`` (bool),
    ``why`` (what is wrong when not found), ``url`` and ``size`` (bytes to download)."""
    base = Path(root) if root is not None else data_root()
    out = []
    for ds in REGISTRY.values():
        why = check(ds, base / ds.name)
        out.append({"name": ds.name, "title": ds.title, "folder": base / ds.name, "found": why is None,
                    "why": why, "url": ds.url, "size": ds.size})
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


# ------------------------------------------------------------------------------ download


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(show: bool, **kw):
    if not show:
        return _NoBar()
    from .util import progress

    return progress(**kw)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None)."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def download(url: str, dest: Path, *, progress: bool = True, label: str = "") -> Path:
    """``url`` → ``dest``, resuming from the bytes already in ``dest`` with an HTTP Range request
    (``If-Range`` with the ETag seen before, so a changed file starts over); a connection cut in
    the middle is resumed up to :data:`RETRIES` times. A server that ignores Range is read from
    the start. :class:`Offline` when the host cannot be reached at all, :class:`DataError` otherwise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    etag_file = dest.with_name(dest.name + ".etag")
    host = urllib.parse.urlsplit(url).netloc
    label = label or dest.name
    cuts = 0
    while True:
        have = dest.stat().st_size if dest.is_file() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "cnnvis-data/1 (python urllib)"})
        if have:
            req.add_header("Range", f"bytes={have}-")
            if etag_file.is_file():
                req.add_header("If-Range", etag_file.read_text().strip())
        try:
            resp = urllib.request.urlopen(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing after the bytes we hold: complete (the checksum decides)
                return dest
            raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if cuts and cuts <= RETRIES:  # it answered before: try to resume again
                cuts += 1
                time.sleep(RETRY_DELAY * 2 ** (cuts - 2))
                continue
            raise Offline(f"cannot reach {host} ({' '.join(str(reason).split())})", why=f"cannot reach {host}") from None
        with resp:
            start, total = 0, None
            if resp.status == 206 and have:
                cr = _content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] != have:
                    raise DataError(f"{url}: the server resumed at the wrong place "
                                    f"({resp.headers.get('Content-Range')!r}, asked for byte {have})")
                start, total = have, cr[1]
            else:  # 200: the whole file (the server ignores Range, or the file changed)
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            etag = resp.headers.get("ETag")
            if etag and not etag.startswith("W/"):
                etag_file.write_text(etag)
            elif not start:
                etag_file.unlink(missing_ok=True)
            bar = _bar(progress, total=total, initial=start, desc=f"download {label}", unit="B",
                       unit_scale=True, unit_divisor=1024)
            cut: Exception | None = None
            try:
                with open(dest, "r+b" if start else "wb") as f:
                    f.seek(start)
                    f.truncate()
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:  # a cut connection, a timeout
                cut = e
            finally:
                bar.close()
        size = dest.stat().st_size
        if total is not None and size > total:
            dest.unlink()
            raise DataError(f"{url}: received {size:,} bytes, more than the {total:,} announced; the download "
                            f"was deleted: run `{FIX}` again")
        if cut is None and (total is None or size == total):
            return dest
        cuts += 1
        if cuts > RETRIES:
            raise DataError(f"{url}: the connection was cut {cuts} times (at {size:,} of "
                            f"{f'{total:,}' if total else '?'} bytes); run `{FIX}` again to resume from {dest}")
        time.sleep(RETRY_DELAY * 2 ** (cuts - 1))


def md5_ok(path: Path, md5: str) -> bool:
    """torchvision's check (``torchvision.datasets.utils.check_integrity``), hashlib without torchvision."""
    try:
        from torchvision.datasets.utils import check_integrity
    except ImportError:  # pragma: no cover - torchvision is a requirement
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest() == md5
    return bool(check_integrity(str(path), md5))


def git_tree_hash(folder: Path) -> str:
    """The git tree hash of ``folder``'s files (regular files as mode 100644, as git would store
    them after ``git add``): equal to a commit's tree when the files are that commit's."""
    entries = []
    for p in folder.iterdir():
        if p.is_dir():
            entries.append((p.name + "/", b"40000 " + p.name.encode() + b"\0" + bytes.fromhex(git_tree_hash(p))))
        else:
            data = p.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).digest()
            entries.append((p.name, b"100644 " + p.name.encode() + b"\0" + blob))
    body = b"".join(e for _, e in sorted(entries, key=lambda t: t[0].encode()))
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


# ------------------------------------------------------------------------------ extraction


def _member_path(name: str, base: Path) -> Path:
    """Where an archive member named ``name`` would land under ``base``; :class:`DataError` naming
    it when that is outside ``base`` (``..``, an absolute path, a drive)."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if (not norm or norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in parts
            or "\0" in norm):
        raise DataError(f"archive member {name!r} would land outside the target folder: refused")
    dest = base.joinpath(*[p for p in parts if p not in ("", ".")])
    root = base.resolve()
    if not dest.resolve().is_relative_to(root):
        raise DataError(f"archive member {name!r} would land outside the target folder: refused")
    return dest


def _place(name: str, members: tuple[tuple[str, str], ...], base: Path) -> Path | None:
    """Where a member goes under ``base`` (``None``: not extracted); every member is checked first.
    A prefix ``"*/"`` stands for the archive's top folder, whatever its name."""
    _member_path(name, base)
    norm = "/".join(PurePosixPath(name.replace("\\", "/")).parts)
    for prefix, dest in members:
        if prefix.startswith("*/"):
            top, _, rest = norm.partition("/")
            norm_p, prefix = rest, prefix[2:]
            if not top:
                continue
        else:
            norm_p = norm
        if norm_p == prefix.rstrip("/") or norm_p.startswith(prefix):
            rel = norm_p[len(prefix):].strip("/")
            return _member_path("/".join(x for x in (dest, rel) if x), base) if (dest or rel) else base
    return None


class _Counting:
    """A read-only file wrapper counting bytes for the extraction's progress bar."""

    def __init__(self, f, bar) -> None:
        self.f, self.bar = f, bar

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.bar.update(len(b))
        return b


def _copy(src, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def extract(archive: Path, members: tuple[tuple[str, str], ...], base: Path, *, progress: bool = True,
            label: str = "") -> int:
    """Extract the members of a tar (any compression) or zip ``archive`` under the prefixes of
    ``members`` into ``base``; every member of the archive must stay inside ``base`` (``..``,
    absolute paths, links and device files are refused: :class:`DataError` naming the member).
    Returns the number of files written."""
    base.mkdir(parents=True, exist_ok=True)
    n = 0
    bar = _bar(progress, total=archive.stat().st_size, desc=f"extract {label or archive.name}", unit="B",
               unit_scale=True, unit_divisor=1024)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    dest = _place(info.filename, members, base)
                    kind = stat.S_IFMT(info.external_attr >> 16)
                    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                        raise DataError(f"archive member {info.filename!r} is a link or special file: refused")
                    bar.update(info.compress_size)
                    if dest is None:
                        continue
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        with zf.open(info) as src:
                            _copy(src, dest)
                        n += 1
        else:
            with open(archive, "rb") as raw, tarfile.open(fileobj=_Counting(raw, bar), mode="r|*") as tf:
                for m in tf:
                    dest = _place(m.name, members, base)
                    if m.issym() or m.islnk():
                        raise DataError(f"archive member {m.name!r} is a link (to {m.linkname!r}): refused")
                    if not (m.isfile() or m.isdir()):
                        raise DataError(f"archive member {m.name!r} is not a file or folder: refused")
                    if dest is None:
                        continue
                    if m.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        _copy(tf.extractfile(m), dest)
                        n += 1
    finally:
        bar.close()
    return n


# ------------------------------------------------------------------------------ fetch


@contextlib.contextmanager
def _lock(path: Path):
    if fcntl is None:  # pragma: no cover
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another process is fetching into {path.parent.parent} (lock {path}); "
                            f"wait for it, or run `{FIX}` again later") from None
        yield
    finally:
        os.close(fd)


def _writable_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise DataError(f"cannot write to {root} ({e.strerror or e}): set CNNVIS_DATA to a writable folder") from None


def fetch(name: str | DataSet, *, root: str | Path | None = None, progress: bool = True,
          say: Callable[[str], None] | None = None) -> Path:
    """The data set's folder under ``root`` (default :func:`data_root`): found as it is, or
    downloaded (resumable), checked and extracted into place in one rename. :class:`Offline`
    when there is no network (``$CNNVIS_OFFLINE``, or the host cannot be reached); :class:`DataError`
    (one line) when the download, its checksum, an archive member or the files are wrong — then no
    data set folder and no temporary folder is left, and a corrupt download is deleted."""
    ds = get(name)
    base = Path(root) if root is not None else data_root()
    target = base / ds.name
    if check(ds, target) is None:
        return target
    if offline():
        raise Offline(f"{ds.name}: not in {base} and CNNVIS_OFFLINE is set: run `{FIX}` when online, or set "
                      f"CNNVIS_DATA to a folder that holds {ds.name}/", why="CNNVIS_OFFLINE is set")
    if target.exists():
        raise DataError(f"{target} exists but is not a complete {ds.name} ({check(ds, target)}): move it away "
                        f"and run `{FIX}` again")
    _writable_root(base)
    partial = base / PARTIAL / ds.archive
    say = say or (lambda _msg: None)
    with _lock(base / PARTIAL / f"{ds.archive}.lock"):
        for stale in base.glob(f".tmp-{ds.name}-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        if partial.is_file():
            say(f"{ds.name}: resuming the download at {partial.stat().st_size:,} bytes")
        try:
            download(ds.url, partial, progress=progress, label=ds.name)
        except Offline as e:
            raise Offline(f"{ds.name}: {e}: run `{FIX}` when online, or set CNNVIS_DATA to a folder that holds "
                          f"{ds.name}/", why=e.why) from None
        except DataError as e:
            raise DataError(f"{ds.name}: {e}") from None
        if ds.md5 and not md5_ok(partial, ds.md5):
            _discard(partial)
            raise DataError(f"{ds.name}: the download {ds.url} does not have the published MD5 {ds.md5} (a corrupt "
                            f"or changed file); it was deleted: run `{FIX}` again")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{ds.name}-", dir=base))
        try:
            staged = tmp / ds.name
            try:
                n = extract(partial, ds.members, staged, progress=progress, label=ds.name)
            except DataError as e:
                _discard(partial)
                raise DataError(f"{ds.name}: {e}; the download was deleted") from None
            except OSError as e:
                if e.errno in _WRITE_ERRNOS:  # the disk, not the archive: keep the download
                    raise DataError(f"{ds.name}: cannot write into {base} ({e.strerror}); the download is kept "
                                    f"in {partial}: run `{FIX}` again when there is room") from None
                _discard(partial)
                raise DataError(f"{ds.name}: the archive {ds.archive} is corrupt ({_one_line(e)}); it was deleted: "
                                f"run `{FIX}` again") from None
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as e:
                _discard(partial)
                msg = _one_line(e)
                raise DataError(f"{ds.name}: the archive {ds.archive} is corrupt ({msg}); it was deleted: run "
                                f"`{FIX}` again") from None
            if ds.git_tree and (got := git_tree_hash(staged)) != ds.git_tree:
                _discard(partial)
                raise DataError(f"{ds.name}: the files' git tree is {got}, not {ds.git_tree} of the pinned commit "
                                f"(a changed or corrupt archive); the download was deleted")
            if ds.finish is not None:
                try:
                    ds.finish(staged)
                except DataError as e:
                    _discard(partial)
                    raise DataError(f"{ds.name}: {e}; the download was deleted") from None
            if (why := check(ds, staged)) is not None:
                _discard(partial)
                raise DataError(f"{ds.name}: the archive does not hold the expected files ({why}); the download "
                                f"was deleted")
            (staged / MARKER).write_text(json.dumps({
                "name": ds.name, "url": ds.url, "md5": ds.md5, "git_tree": ds.git_tree, "files": n,
                "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "credit": ds.credit,
                "terms": ds.terms}, indent=1) + "\n", encoding="utf-8")
            os.replace(staged, target)  # one rename: the folder is there whole or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _discard(partial)
    say(f"{ds.name}: {ds.photos:,} photos in {target}")
    return target


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or e.__class__.__name__


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".etag").unlink(missing_ok=True)
