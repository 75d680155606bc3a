"""Small shared helpers: atomic writes, hashing, slugs, stage timing, progress bars."""
from __future__ import annotations

CACHE_NEUTRAL = True  # cannot change a cached value: left out of code fingerprints (generator.cache.key)

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename.

    An interrupted run never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def write_bytes_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Atomically write ``data`` unless the file already holds exactly these bytes.

    Keeps mtimes stable so `mkdocs serve` does not rebuild needlessly. Returns whether it wrote.
    """
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """:func:`write_bytes_if_changed` for UTF-8 text."""
    return write_bytes_if_changed(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object with sorted keys (cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


_slug_re = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    s = _slug_re.sub("-", text.lower()).strip("-")
    return s or "item"


def chunks(seq: list, size: int) -> Iterator[list]:
    for i in range(0, len(seq), max(1, size)):
        yield seq[i : i + size]


def progress(iterable: Iterable | None = None, **kw):
    """Progress of a long loop: a tqdm bar on a terminal, plain lines with counts and elapsed
    time in a log (see :mod:`generator.progress`)."""
    from .progress import bar

    return bar(iterable, **kw)


class StageTimer:
    """Records wall time per named stage for the end-of-run summary, and with ``network`` (a clock of
    network seconds, :func:`generator.executor.network_seconds`) how much of it was model work."""

    def __init__(self, network: Callable[[], float] | None = None,
                 by_model: Callable[[], dict[str, float]] | None = None) -> None:
        self.times: dict[str, float] = {}
        self.network: dict[str, float] = {}
        self.network_by_model: dict[str, dict[str, float]] = {}  # stage → model tag → network seconds
        self._clock = network
        self._by_model = by_model
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        n0 = self._clock() if self._clock is not None else 0.0
        m0 = self._by_model() if self._by_model is not None else {}
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
            if self._clock is not None:
                self.network[name] = self.network.get(name, 0.0) + self._clock() - n0
            if self._by_model is not None:
                per = self.network_by_model.setdefault(name, {})
                for tag, sec in self._by_model().items():
                    if sec - m0.get(tag, 0.0) > 0:
                        per[tag] = per.get(tag, 0.0) + sec - m0.get(tag, 0.0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def summary(self) -> str:
        if not self.times:
            return ""
        width = max(len(k) for k in self.times)
        lines = []
        for k, v in self.times.items():
            line = f"  {k:<{width}}  {v:8.1f} s"
            if k in self.network:
                net = min(self.network[k], v)
                line += f"   network {net:8.1f} s, rest {v - net:7.1f} s"
            lines.append(line)
        # stages may time their own sub-steps too, so the total is wall time, not a sum
        lines.append(f"  {'total (wall)':<{width}}  {time.perf_counter() - self.t0:8.1f} s")
        return "\n".join(lines)


def md_escape(text: Any) -> str:
    """Escape user-supplied text for Markdown *and* the HTML it becomes.

    HTML special characters are entity-escaped, and Markdown syntax characters are
    backslash-escaped so a title such as ``*bold* [link](x)`` stays literal.
    """
    import html

    s = html.escape(str(text), quote=True).replace("$", "&#36;")  # "$" would start arithmatex maths
    # parentheses are left alone: "\(" is arithmatex's inline-maths delimiter
    return re.sub(r"([\\`*_{}\[\]|~])", r"\\\1", s)


def md_code(text: Any) -> str:
    """Text for inside a Markdown code span: no escapes are processed there, so only
    backticks (which would end the span) are replaced."""
    return str(text).replace("`", "'")


def download_png(path: str | Path) -> Path | None:
    """The PNG written beside a WebP figure for the "Download (PNG)" link under it (course
    materials: LaTeX and some slide tools do not take WebP), or None where the build writes none:
    for ``.webp`` files under a ``figures`` folder that a page shows with a download line
    (``site_src/hooks/figures.py``). Thumbnails get none, and neither do the pictures that pages
    show only in table cells, which have no download line (:func:`table_only_figure`; on the
    default three-model site about 1,300 of the 1,770 figures). Should such a picture be shown with
    a download line after all, the hook makes its PNG from the WebP while MkDocs builds;
    ``python -m generator export`` makes a PNG of any figure."""
    path = Path(path)
    parts = path.parent.parts
    if path.suffix.lower() != ".webp" or path.stem.endswith("-thumb") or "figures" not in parts:
        return None
    under = len(parts) - 1 - parts[::-1].index("figures")  # the innermost figures folder
    if table_only_figure("/".join([*parts[under + 1:], path.name])):
        return None
    return path.with_suffix(".png")


def download_pdf(path: str | Path) -> Path | None:
    """The PDF written beside an SVG plot under a ``figures`` folder, for its "Download (PDF)" link
    (LaTeX's ``\\includegraphics`` takes PDF, not SVG; slide software takes either); None otherwise."""
    path = Path(path)
    if path.suffix.lower() != ".svg" or "figures" not in path.parent.parts:
        return None
    return path.with_suffix(".pdf")


def matplotlib_bytes(fig, fmt: str, rc: dict | None = None, dpi: int = 110) -> bytes:
    """A matplotlib figure's file (``fmt``: svg, pdf, png) as bytes, the same bytes for the same figure:
    no date or software stamp; ``rc``: settings at save time only (e.g. ``svg.hashsalt``)."""
    import matplotlib

    meta = {"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else \
        {"CreationDate": None, "Producer": None} if fmt == "pdf" else {}
    buf = io.BytesIO()
    with matplotlib.rc_context(rc or {}):
        fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=dpi, metadata=meta)
    return buf.getvalue()


def table_only_figure(rel: str) -> bool:
    """Whether the figure at ``rel`` (its path under ``figures/``) is one that the pages show only
    as a small picture in a table cell (generator/templates): the unit atlas' patch grids, the
    attribution galleries' maps and model inputs, the activity galleries' mean maps. Such a picture
    opens in the lightbox or links to its page; it has no download line."""
    p = rel.split("/")
    if p[0] == "atlas":
        return True
    if p[0] == "attribution" and len(p) == 4 and p[2] != "neurons":  # <model>/<method or input>/<photo>
        return True
    return p[0] == "activity" and p[-1].endswith("-mean.webp")


def download_png_bytes(img) -> bytes:
    """A figure (PIL image) as the PNG behind its download link: its own colours, losslessly, when
    it has at most 256 (a heatmap drawn from a colour map); else reduced to a 256-colour palette
    (octree). That is 3-4× fewer bytes than lossless RGB, and about as close to the rendered pixels
    as the WebP the page shows (on the small test site's figures 35-42 dB PSNR; the WebP 27-39 dB)."""
    import numpy as np
    from PIL import Image

    img = img.convert("RGB")
    if img.getcolors(256) is not None:  # exact: each pixel its own colour's palette entry
        a = np.asarray(img)
        colours, index = np.unique(a.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], np.uint32),
                                   return_inverse=True)
        img = Image.fromarray(index.reshape(a.shape[:2]).astype(np.uint8), "P")
        img.putpalette(np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], 1).astype(np.uint8).tobytes())
    else:
        img = img.quantize(256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, "PNG")  # optimize=True: 1 % smaller for palette images, twice the time
    return buf.getvalue()
