"""The built site in a real browser (headless Chromium, driven by Playwright).

A small site (one model, two photos, fast settings) is built for a sub-path (``SITE_URL``, see
mkdocs.yml), served on 127.0.0.1 under that sub-path and opened from ``file://``. Every page is
visited; the test fails on a console error, a failed request or an error response, a request to
another host, an image that did not load, a broken link or anchor, or a table wider than its
column (1280 px and 390 px wide). It also checks search and the dark-mode toggle from disk, the 404
page at missing URLs under the sub-path (as a static host serves it), and prints the median page
weight (figures aside).

Needs Debian's ``chromium`` (``make setup`` installs it) and the ``playwright`` package; the
browser build Playwright would download is never used.
"""
from __future__ import annotations

import functools
import os
import http.server
import posixpath
import re
import shutil
import statistics
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

from small_site import build_small_site

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SUB_PATH = "/site/"  # the small site is built for https://example.org/site/ and served under /site/
FIGURE_EXT = (".png", ".webp", ".jpg", ".jpeg", ".svg", ".gif", ".ico")
WIDTHS = (1280, 390)


def _playwright():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (make setup installs Debian's chromium package)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The small site; ``CNNVIS_CHECK_SITE=path/to/site`` checks an already built site instead
    (e.g. the full default site: ``CNNVIS_CHECK_SITE=site pytest tests/test_browser.py``)."""
    given = os.environ.get("CNNVIS_CHECK_SITE")
    if given:
        return Path(given).resolve()
    return build_small_site(tmp_path_factory.mktemp("browser"), site_url="https://example.org" + SUB_PATH)


def built_for(site: Path) -> str:
    """The URL path the site was built for (``site_url``, from ``SITE_URL``): where the 404 page's
    stylesheets are; "/" for a site built for the host's root."""
    m = re.search(r'href="([^"]*)assets/stylesheets/main\.', (site / "404.html").read_text(encoding="utf-8"))
    return m.group(1) if m else "/"


def served_at(site: Path) -> str:
    """The sub-path the pages are served under: the one the site was built for, or /site/ for a
    site built for the root (its pages' links are relative and work under any path)."""
    return built_for(site) if built_for(site) != "/" else SUB_PATH


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def pages_of(site: Path) -> list[str]:
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")


def test_no_broken_link_or_anchor_and_no_nav_files(site):
    pages = pages_of(site)
    assert not [p for p in pages if "SUMMARY" in p], "navigation files are published"
    parsed = {p: _parse(site / p) for p in pages}
    broken = []
    for page, info in parsed.items():
        for href in info.links:
            if urlsplit(href).scheme or href.startswith("//"):
                continue  # outside links (e.g. to a paper) are not requests the page makes
            path, frag = urldefrag(href)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(path))) if path else page
            if not (site / target).exists():
                broken.append(f"{page}: {href} (no file)")
            elif frag and target.endswith(".html") and unquote(frag) not in parsed.get(target, _parse(site / target)).ids:
                broken.append(f"{page}: {href} (no anchor)")
    assert not broken, "\n".join(broken[:30])


def test_search_index_leaves_out_figure_lines_and_generated_tables(site):
    """Every page loads the search index (offline search): the repeated figure captions and the
    tables of numbers stay out of it, page titles and prose stay in; every picture's download
    link is a PNG, every plot's a PDF (LaTeX) followed by its SVG."""
    import json

    docs = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]
    text = " ".join(d["text"] for d in docs)
    assert "Download (" not in text
    assert any("attribution" in d["location"] for d in docs) and "Saliency" in " ".join(d["title"] for d in docs)
    html = "".join((site / p).read_text(encoding="utf-8") for p in pages_of(site))
    downloads = re.findall(r'class="figure-dl"[^>]*><a href="([^"]+)"', html)
    assert downloads and all(h.endswith((".png", ".pdf")) for h in downloads), downloads[:5]
    assert any(h.endswith(".png") for h in downloads) and any(h.endswith(".pdf") for h in downloads)
    for h in (h for h in downloads if h.endswith(".pdf")):
        assert re.search(re.escape(h) + r'" download(="")?>Download \(PDF\)</a> · <a href="' + re.escape(h[:-4]) + r'\.svg"', html), h


def test_pngs_for_download_are_the_linked_ones(site):
    """The generator writes a PNG beside a WebP figure exactly for the figures a page shows with a
    download line (generator.util.download_png): no PNG that nothing links to (the site's size), and
    none that the MkDocs hook had to make from the WebP because the generator skipped it."""
    linked = set()
    for p in pages_of(site):
        for h in re.findall(r'class="figure-dl"[^>]*><a href="([^"]+\.png)"', (site / p).read_text(encoding="utf-8")):
            linked.add(posixpath.normpath(posixpath.join(posixpath.dirname(p), unquote(h))))
    figures = site / "generated" / "figures"
    twins = {p.relative_to(site).as_posix() for p in figures.rglob("*.png") if p.with_suffix(".webp").is_file()}
    assert linked and not twins - linked, f"PNGs no page links to: {sorted(twins - linked)[:10]}"
    generated = site.parent / "site_src"  # the small site's own docs folder (a given site may have none)
    if (generated / "generated" / "figures").is_dir():
        made_by_hook = sorted(r for r in linked if not (generated / r).is_file())
        assert not made_by_hook, f"linked figures the generator wrote no PNG for (table_only_figure?): {made_by_hook[:10]}"


def test_no_build_machine_detail_on_any_page(site):
    bad = re.compile(r"/root/|/home/|/work/|/tmp/|site-packages|\.cache/torch|[A-Za-z]+(Error|Exception)\b|gaierror")
    found = []
    for p in pages_of(site):
        text = re.sub(r"<[^>]+>", " ", (site / p).read_text(encoding="utf-8"))
        found += [f"{p}: {m.group(0)}" for m in bad.finditer(text)]
    assert not found, found[:20]


def _serve(site: Path, prefix: str):
    """``site`` served under URL path ``prefix`` as a static host serves a project site: a missing
    file under ``prefix`` answers with the site's 404.html (status 404); nothing is served outside
    ``prefix``, so a request that misses the sub-path fails."""
    class Host(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def translate_path(self, path):
            if not path.startswith(prefix):
                return os.path.join(self.directory, "__outside_the_sub_path__")  # no such file
            return super().translate_path("/" + path[len(prefix):])

        def send_error(self, code, message=None, explain=None):
            page = site / "404.html"
            if code != 404 or not self.path.startswith(prefix) or not page.is_file():
                return super().send_error(code, message, explain)
            body = page.read_bytes()
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    handler = functools.partial(Host, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


_TABLE_CHECK = """() => {
  const col = document.querySelector('.md-content__inner');
  if (!col) return ['no content column'];
  const right = col.getBoundingClientRect().right + 1;
  const bad = [];
  for (const t of col.querySelectorAll('table')) {
    const box = t.closest('.md-typeset__scrollwrap') || t;
    const r = box.getBoundingClientRect();
    const scrolls = box !== t && ['auto', 'scroll'].includes(getComputedStyle(box).overflowX);
    if (r.right > right || (!scrolls && t.getBoundingClientRect().right > right))
      bad.push((t.querySelector('th') || t).textContent.trim().slice(0, 40) + ' ' + Math.round(r.right) + '>' + Math.round(right));
  }
  return bad;
}"""

_IMAGES_CHECK = """async () => {
  const imgs = [...document.querySelectorAll('img')];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; setTimeout(r, 3000); })));
  return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
}"""


def test_every_page_in_chromium(site):
    sync_api = _playwright()
    pages = pages_of(site)
    server = _serve(site, served_at(site))  # the site under a sub-path: http://127.0.0.1:PORT/site/
    base_http = f"http://127.0.0.1:{server.server_address[1]}{served_at(site)}"
    base_file = site.as_uri() + "/"
    problems, weights = [], {}
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            # served under a sub-path at desktop width; from disk at desktop and phone width
            for base, width in [(base_http, WIDTHS[0])] + [(base_file, w) for w in WIDTHS]:
                ctx = browser.new_context(viewport={"width": width, "height": 900})
                page = ctx.new_page()
                current = {"url": ""}
                loaded: dict[str, set] = {}

                def on_request(req, current=current, base=base, loaded=loaded):
                    u = urlsplit(req.url)
                    local = (u.scheme == "file") or (u.scheme == "http" and u.netloc == urlsplit(base).netloc)
                    if u.scheme not in ("data", "blob") and not local:
                        problems.append(f"{current['url']}: request to another host {req.url}")
                    loaded.setdefault(current["url"], set()).add(req.url)

                def on_failed(req, current=current):
                    if req.failure == "net::ERR_ABORTED":
                        return  # a load cut short by going to the next page
                    problems.append(f"{current['url']}: failed request {req.url} ({req.failure})")

                def on_console(msg, current=current):
                    if msg.type == "error":
                        problems.append(f"{current['url']}: console error {msg.text}")

                def on_response(resp, current=current):
                    if resp.status >= 400:
                        problems.append(f"{current['url']}: {resp.status} for {resp.url}")

                page.on("request", on_request)
                page.on("requestfailed", on_failed)
                page.on("response", on_response)
                page.on("console", on_console)
                page.on("pageerror", lambda e, current=current: problems.append(f"{current['url']}: {e}"))
                for rel in pages:
                    current["url"] = base + rel
                    page.goto(base + rel, wait_until="load")
                    for src in page.evaluate(_IMAGES_CHECK):
                        problems.append(f"{rel} ({width} px): image not loaded {src}")
                    for t in page.evaluate(_TABLE_CHECK):
                        problems.append(f"{rel} ({width} px): table wider than its column: {t}")
                    if base == base_file and width == WIDTHS[0]:
                        weights[rel] = _weight(site, loaded.get(current["url"], ()))
                if base == base_file and width == WIDTHS[0]:
                    _check_search_and_dark_mode(page, base_file, problems)
                ctx.close()
            browser.close()
    finally:
        server.shutdown()
    kb = sorted(w / 1024 for w in weights.values())
    median = statistics.median(kb)
    print(f"\npage weight from file:// (HTML, CSS, JS, search index; figures aside) over {len(kb)} pages: "
          f"median {median:.0f} KB, max {kb[-1]:.0f} KB")
    assert not problems, "\n".join(problems[:40]) + (f"\n… {len(problems)} in all" if len(problems) > 40 else "")
    assert median < 600, f"median page weight {median:.0f} KB"


def test_404_page_under_the_sub_path(site):
    """A static host answers every missing URL under the site's sub-path with 404.html, at any
    depth: its stylesheets, scripts and links must still load (they start with the sub-path the
    site was built for, mkdocs.yml's ``site_url``), with no failed request and no error response
    but the page's own 404."""
    sync_api = _playwright()
    prefix = built_for(site)
    if not os.environ.get("CNNVIS_CHECK_SITE"):
        assert prefix == SUB_PATH, f"the small site was built for {prefix}, not {SUB_PATH}"
    server = _serve(site, prefix)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    problems = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            current = {"url": ""}

            def on_response(resp):
                if resp.status >= 400 and resp.url != current["url"]:  # the 404 page itself aside
                    problems.append(f"{current['url']}: {resp.status} for {resp.url}")

            def on_console(msg):  # Chromium logs the page's own 404 as an error; other 404s are responses
                if msg.type == "error" and "404 (Not Found)" not in msg.text:
                    problems.append(f"{current['url']}: console error {msg.text}")

            page.on("requestfailed", lambda r: problems.append(f"{current['url']}: failed request {r.url} ({r.failure})"))
            page.on("response", on_response)
            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"{current['url']}: {e}"))
            for missing in ["no-such-page.html", "generated/no/such/deeper/page.html"]:
                current["url"] = origin + prefix + missing
                resp = page.goto(current["url"], wait_until="load")
                if resp is None or resp.status != 404:
                    problems.append(f"{missing}: status {resp and resp.status}, not 404")
                styled = page.evaluate("() => getComputedStyle(document.querySelector('.md-header')).position")
                if styled != "sticky":
                    problems.append(f"{missing}: the theme's stylesheet is not applied (header position {styled!r})")
                links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
                for url in sorted({urldefrag(u)[0] for u in links if urlsplit(u).netloc == urlsplit(origin).netloc}):
                    if page.request.head(url).status != 200:
                        problems.append(f"{missing}: broken link {url}")
            browser.close()
    finally:
        server.shutdown()
    assert not problems, "\n".join(problems[:40])


def _weight(site: Path, urls) -> int:
    total = 0
    for url in set(urls):
        u = urlsplit(url)
        if u.scheme != "file":
            continue
        path = Path(unquote(u.path))
        if path.suffix.lower() in FIGURE_EXT or not path.is_file():
            continue
        total += path.stat().st_size
    return total


def _check_search_and_dark_mode(page, base: str, problems: list) -> None:
    page.goto(base + "index.html", wait_until="load")
    before = page.evaluate("document.body.getAttribute('data-md-color-scheme')")
    page.locator("form[data-md-component=palette] label:visible").first.click()
    after = page.evaluate("document.body.getAttribute('data-md-color-scheme')")
    if before == after:
        problems.append(f"dark-mode toggle from file:// did nothing (scheme stays {before})")
    page.goto(base + "index.html", wait_until="load")
    if page.evaluate("document.body.getAttribute('data-md-color-scheme')") != after:
        problems.append("the colour scheme chosen is not kept from one page to the next (file://)")
    page.locator("input.md-search__input").click()
    page.keyboard.type("saliency")
    try:
        page.wait_for_selector(".md-search-result__item", timeout=10000)
    except Exception:
        problems.append("search from file:// found nothing for 'saliency'")
