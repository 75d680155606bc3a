"""What a figure shows: the captions and credits beside every figure on the site (the MkDocs hook
``site_src/hooks/figures.py``) and ``python -m generator export``.

Figures live at stable paths under ``<out>/figures/`` (``<family>/<model>/.../<photo or layer>``).
Each stage says what a figure shows where it writes it (``ctx.figure_path(rel, model=…, photo=…,
layer=…, method=…, caption=…)``); the site writer records that in ``figures/figures.json``. The
overview stage writes ``figures/credits.json`` with the photos' titles, authors and licences and
the models' titles and layer names. A figure is thus described without rebuilding anything; only a
figure without a record (e.g. in a site built before the records existed) is described by guessing
from its path (:func:`describe`).
"""
from __future__ import annotations

CACHE_NEUTRAL = True  # cannot change a cached value: left out of code fingerprints (generator.cache.key)

import fnmatch
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .util import atomic_write_bytes, atomic_write_text, download_pdf, download_png

MANIFEST = "credits.json"
RECORDS = "figures.json"  # {figure path under figures/: {"model", "photo", "layer", "method", "caption"}}
RECORD_FIELDS = ("model", "photo", "layer", "method", "caption")
FIGURE_SUFFIXES = (".webp", ".png", ".jpg", ".svg")
FAMILIES = {"activity": "Activity", "attribution": "Attribution", "compare": "Across models",
            "dgn_am": "DGN-AM / PPGN", "atlas": "Units", "findings": "Findings", "images": "Photo",
            "home": "Overview: attribution maps of several photos and models"}


def write_manifest(figures_dir: Path, images: list[dict], models: list[dict]) -> Path:
    data = {"images": {i["id"]: i for i in images}, "models": {m["name"]: m for m in models}}
    return atomic_write_text(Path(figures_dir) / MANIFEST, json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_figure_records(figures_dir: Path, records: dict[str, dict]) -> Path:
    """``figures/figures.json``: what each figure shows, as its stage said when writing it."""
    data = {rel: {k: str(v) for k, v in meta.items() if k in RECORD_FIELDS and v not in (None, "")}
            for rel, meta in records.items()}
    return atomic_write_text(Path(figures_dir) / RECORDS, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(figures_dir: Path) -> dict:
    """``{"images": {id: photo}, "models": {name: model}, "figures": {rel: record}}`` from
    ``credits.json`` and ``figures.json`` (each empty where its file is absent or unreadable)."""
    credits = _read_json(Path(figures_dir) / MANIFEST)
    records = _read_json(Path(figures_dir) / RECORDS)
    return {"images": credits.get("images") or {}, "models": credits.get("models") or {},
            "figures": {rel: r for rel, r in records.items() if isinstance(r, dict)}}


@dataclass
class Figure:
    rel: str                    # path under figures/
    family: str
    model: dict | None = None
    photo: dict | None = None
    layer: str | None = None
    parts: list[str] = field(default_factory=list)  # the method recorded, or the path's other words (guessed)
    method: str | None = None   # as recorded by the stage (None for a guessed description)
    shows: str = ""             # the recorded caption: what is shown, instead of the family's default
    recorded: bool = False      # described from the stage's record, not guessed from the path

    @property
    def what(self) -> str:
        if self.shows:
            return self.shows
        bits = [FAMILIES.get(self.family, self.family)] + [p.replace("_", " ") for p in self.parts]
        return " · ".join(bits)

    def caption(self) -> str:
        """Plain text: what is shown, on which model, photo and layer."""
        out = [] if self.family == "images" and self.photo else [self.what]
        if self.model:
            out.append(f"model {self.model.get('title', self.model.get('name'))}")
        if self.photo:
            out.append(f"{'photo ' if out else 'Photo '}“{self.photo.get('title', self.photo.get('id'))}”")
        if self.layer:
            out.append(f"layer {self.layer}")
        return "; ".join(out)

    def credit(self) -> str:
        if not self.photo:
            return ""
        p = self.photo
        return (f"Photo: {p.get('author') or 'unknown author'}, {p.get('license') or 'licence unknown'}"
                + (f" ({p['source']})" if p.get("source") else ""))


def describe(rel: str, manifest: dict) -> Figure:
    """What figure ``rel`` (its path under ``figures/``) shows: from its record in
    ``manifest["figures"]`` (written where the figure was, see ``SiteWriter.figure_path``), the model
    and photo looked up by name and id in the credits for their titles and credits. Only a figure
    without a record (a site built by an older version, a stage that records nothing) falls back
    to :func:`guess`, from its path."""
    record = (manifest.get("figures") or {}).get(rel)
    if not isinstance(record, dict):
        return guess(rel, manifest)
    images, models = manifest.get("images") or {}, manifest.get("models") or {}
    model, photo = record.get("model"), record.get("photo")
    return Figure(rel=rel, family=rel.split("/", 1)[0],
                  model=(models.get(model) or {"name": model}) if model else None,
                  photo=(images.get(photo) or {"id": photo}) if photo else None,
                  layer=record.get("layer") or None,
                  parts=[record["method"]] if record.get("method") else [],
                  method=record.get("method") or None, shows=record.get("caption") or "", recorded=True)


def guess(rel: str, manifest: dict) -> Figure:
    """Fallback for a figure without a record (a site built by a version before ``figures.json``,
    or a figure whose stage records nothing): model, photo and layer guessed from the words of its
    path, looked up in the credits; the other words become ``parts``. The guess can go wrong: a
    photo id that is also a layer name, a model whose folder is not its name (``timm:x`` → ``timm-x``)."""
    parts = Path(rel).with_suffix("").as_posix().split("/")
    fig = Figure(rel=rel, family=parts[0])
    images, models = manifest.get("images", {}), manifest.get("models", {})
    rest = []
    for w in [*parts[1:-1], parts[-1]]:
        if fig.model is None and w in models:
            fig.model = models[w]
        elif fig.photo is None and (w in images or _photo_prefix(w, images)):
            fig.photo = images.get(w) or images[_photo_prefix(w, images)]
            suffix = w[len(fig.photo["id"]):].lstrip("-")
            if suffix:
                rest.append(suffix)
        elif fig.layer is None and fig.model and w.split("-")[0] in fig.model.get("layers", []):
            fig.layer = w.split("-")[0]
            if "-" in w:
                rest.append(w.split("-", 1)[1])
        else:
            rest.append(w)
    fig.parts = rest
    return fig


def _photo_prefix(word: str, images: dict) -> str | None:
    """A photo id that ``word`` starts with followed by '-' (``espresso-rgb``), longest first."""
    for pid in sorted(images, key=len, reverse=True):
        if word.startswith(pid + "-"):
            return pid
    return None


def figures_in(figures_dir: Path) -> list[str]:
    """Every figure once: thumbnails and the PNG twins of WebP figures (their downloads) left out."""
    figures_dir = Path(figures_dir)
    return sorted(p.relative_to(figures_dir).as_posix() for p in figures_dir.rglob("*")
                  if p.suffix.lower() in FIGURE_SUFFIXES and not p.stem.endswith("-thumb")
                  and not (p.suffix.lower() == ".png" and p.with_suffix(".webp").exists()))


def select(figures_dir: Path, model: str = "", photo: str = "", method: str = "", pattern: str = "") -> list[Figure]:
    """Figures matching every filter given: model name and photo id (as recorded, else guessed from
    the path, see :func:`describe`), a method or family word (the recorded method, or a word of the
    path), a glob on the path."""
    manifest = read_manifest(figures_dir)
    out = []
    for rel in figures_in(figures_dir):
        f = describe(rel, manifest)
        if model and not (f.model and f.model.get("name") == model):
            continue
        if photo and not (f.photo and f.photo.get("id") == photo):
            continue
        if method and method not in [f.family, *([f.method] if f.method else []), *f.parts, *rel.split("/")]:
            continue
        if pattern and not fnmatch.fnmatch(rel, pattern):
            continue
        out.append(f)
    return out


def export(figures_dir: Path, dest: Path, figures: list[Figure]) -> list[Path]:
    """Each figure as PNG (plots stay SVG, with their PDF) under ``dest`` with the same relative path, and
    ``CAPTIONS.md`` listing every file with its caption and the photo's credit. A WebP figure's PNG
    is the one its download link gives where the build wrote one, else its pixels as the page
    shows them, losslessly."""
    dest = Path(dest)
    written, lines = [], ["# Figures: captions and credits", "",
                          "From *What does a deep CNN learn?*; each photo keeps its own licence (below).", ""]
    for f in figures:
        src = Path(figures_dir) / f.rel
        twin = download_png(src)
        if src.suffix.lower() == ".svg":
            out = dest / f.rel
            atomic_write_bytes(out, src.read_bytes())
            pdf = download_pdf(src)
            if pdf is not None and pdf.is_file():  # its PDF twin too (LaTeX)
                atomic_write_bytes(out.with_suffix(".pdf"), pdf.read_bytes())
                written.append(out.with_suffix(".pdf"))
        elif twin is not None and twin.is_file():
            out = (dest / f.rel).with_suffix(".png")  # the PNG behind the figure's download link
            atomic_write_bytes(out, twin.read_bytes())
        else:
            out = (dest / f.rel).with_suffix(".png")
            buf = io.BytesIO()
            with Image.open(src) as im:
                im.convert("RGB").save(buf, "PNG", optimize=True)
            atomic_write_bytes(out, buf.getvalue())
        written.append(out)
        rel_out = out.relative_to(dest).as_posix()
        lines.append(f"- `{rel_out}`: {f.caption()}." + (f" {f.credit()}." if f.credit() else ""))
    atomic_write_text(dest / "CAPTIONS.md", "\n".join(lines) + "\n")
    return written


DOWNLOAD_KINDS = {"png": "PNG", "svg": "SVG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WebP"}


def caption_html(f: Figure, href: str, png: bool = False, pdf: bool = False) -> str:
    """The line under a figure on the site: download link, caption, credit. The link goes to the
    figure's PNG when ``png`` (the one beside the WebP, see :func:`generator.util.download_png`), to a
    plot's PDF when ``pdf`` (beside the SVG, :func:`generator.util.download_pdf`; the SVG gets a second
    link), else to the file itself, named by its format."""
    stem = href.rsplit(".", 1)[0]
    if png:
        href = stem + ".png"
    links = [(stem + ".pdf", "PDF")] if pdf else []
    links.append((href, DOWNLOAD_KINDS.get(href.rsplit(".", 1)[-1].lower(), "full size")))
    first = f'<a href="{html.escape(links[0][0])}" download>Download ({links[0][1]})</a>'
    more = "".join(f' · <a href="{html.escape(h)}" download>{k}</a>' for h, k in links[1:])
    credit = f" {html.escape(f.credit())}." if f.credit() else ""
    return (f'<span class="figure-dl" data-search-exclude>{first}{more} '
            f'{html.escape(f.caption())}.{credit}</span>')
