"""MkDocs hook: under every generated figure, a line with its caption (what, model, photo, layer),
the photo's credit and licence, and a download link to the full-size figure as PNG (plots: their
PDF, and their SVG). The generator writes that PNG beside the WebP for the figures the pages show this way
(``generator.util.download_png``); a WebP figure shown with a download line that has none gets its
PNG here, made from the WebP into the built site (nothing is written into ``docs_dir``). Pictures in
table cells and thumbnails get no line: they link to their own page or open in the lightbox.

The descriptions come from what each stage recorded when it wrote the figure
(``generated/figures/figures.json``) and the photos' credits and models' titles
(``generated/figures/credits.json``), both written by the build, through :mod:`generator.figures`,
the same code as ``python -m generator export``; a figure without a record (a site built by an
older version) is described from its path.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

IMG = re.compile(r'<img\b[^>]*\bsrc="(?P<src>[^"]*?figures/(?P<rel>[^"]+))"[^>]*>')
WRAP = re.compile(r'\s*</a>')


UNIT_PAGE = re.compile(r"generated/units/[^/]+/[^/]+/(?!index\.md$)[^/]+\.md$")


def on_page_markdown(markdown, page, **kw):
    """Single-unit pages (hundreds, mostly pictures and numbers) stay out of the search index, which
    every page loads: their layer pages, which list them, are searched instead."""
    if UNIT_PAGE.match(page.file.src_uri):
        page.meta.setdefault("search", {})["exclude"] = True
    return markdown


TABLE = re.compile(r"<table\b")


def on_page_content(html, page, config, files, **kw):
    if page.file.src_uri.startswith("generated/"):
        # generated tables are numbers: left out of the search index, which every page loads
        # (full default site: tables 94 KB and figure caption lines 97 KB of its 338 KB)
        html = TABLE.sub("<table data-search-exclude", html)
    try:
        from generator.figures import caption_html, describe, read_manifest
        from generator.util import download_pdf, download_png
    except ImportError:  # the package is not importable here: the figures stay as they are
        return html
    figures = Path(config["docs_dir"]) / "generated" / "figures"
    manifest = read_manifest(figures)
    out, pos = [], 0
    for m in IMG.finditer(html):
        if "-thumb." in m.group("rel") or _in_table(html, m.start()):
            continue  # thumbnails and pictures in table cells link to their own page instead
        end = m.end()
        close = WRAP.match(html, end)  # glightbox's <a> around the image
        if close:
            end = close.end()
        out.append(html[pos:end])
        rel = m.group("rel")
        png = download_png(figures / rel)
        has_png = (png is not None and png.is_file()) or _png_in_site(figures / rel, config, rel)
        pdf = download_pdf(figures / rel)
        out.append(caption_html(describe(rel, manifest), m.group("src"), png=has_png,
                                pdf=pdf is not None and pdf.is_file()))
        pos = end
    out.append(html[pos:])
    return "".join(out)


def _in_table(html: str, at: int) -> bool:
    return html.rfind("<td", 0, at) > html.rfind("</td>", 0, at)


def _png_in_site(src: Path, config, rel: str) -> bool:
    """A PNG of WebP figure ``src`` beside its copy in the built site, for a figure shown with a
    download line that the generator wrote no PNG for (see the module's docstring); False for other
    files."""
    if src.suffix.lower() != ".webp" or not src.is_file():
        return False
    from PIL import Image

    from generator.util import atomic_write_bytes, download_png_bytes

    dest = (Path(config["site_dir"]) / "generated" / "figures" / rel).with_suffix(".png")
    if not dest.is_file() or dest.stat().st_mtime < src.stat().st_mtime:  # once per build
        with Image.open(src) as im:
            atomic_write_bytes(dest, download_png_bytes(im))
    return True
