"""MkDocs hook: under every generated figure, a line with its caption (what, model, photo, layer),
the photo's credit and licence, and a download link to the full-size file (the lossless PNG
the build writes beside each WebP figure; plots: their SVG).

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
        from generator.util import download_png
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
        png = download_png(figures / m.group("rel"))
        out.append(caption_html(describe(m.group("rel"), manifest), m.group("src"),
                                png=png is not None and png.is_file()))
        pos = end
    out.append(html[pos:])
    return "".join(out)


def _in_table(html: str, at: int) -> bool:
    return html.rfind("<td", 0, at) > html.rfind("</td>", 0, at)
