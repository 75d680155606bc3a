"""Page writing: jinja2 templates → Markdown under ``site_src/generated``.

Stages never write Markdown files directly; they add *sections* to shared pages
(``home``, ``models/<m>``, ``images/<id>``, ``methods/<m>``, ``findings``) or whole
*standalone* pages, and :meth:`SiteWriter.finish` writes everything once at the end,
with a ``SUMMARY.md`` per folder for the navigation (mkdocs-literate-nav).

Paths given to :meth:`link` and :meth:`page` are relative to ``site_src/generated``;
the page key ``home`` is the hand-written ``site_src/index.md``, which includes the
generated snippet ``generated/_snippets/home.md``.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .util import md_code, md_escape, write_if_changed

TEMPLATES = Path(__file__).parent / "templates"

# Folder → navigation title and order
NAV_SECTIONS = {
    "models": "Models",
    "images": "Images",
    "methods": "Methods",
    "findings": "Findings",
    "units": "Units",
}


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown output: escape user text explicitly with |e
    )
    env.filters["e"] = md_escape
    env.filters["code"] = md_code
    env.filters["pct"] = lambda x, nd=1: f"{100 * float(x):.{nd}f} %"
    env.filters["num"] = lambda x, nd=3: f"{float(x):.{nd}f}"
    env.filters["thousands"] = lambda x: f"{int(x):,}"
    return env


@dataclass
class _Section:
    title: str
    body: str
    order: int


@dataclass
class _Page:
    title: str
    sections: list[_Section] = field(default_factory=list)
    intro: str = ""
    nav: str | None = None
    order: int = 50


class SiteWriter:
    def __init__(self, out_dir: str | Path, banner: str = "") -> None:
        self.out = Path(out_dir)
        self.banner = banner  # Markdown put at the top of every page (rehearsal builds)
        self.env = make_env()
        self.pages: dict[str, _Page] = {}
        self.standalone: dict[str, tuple[str, str, str | None, int]] = {}

    # -- paths -----------------------------------------------------------------
    @staticmethod
    def page_file(page: str) -> str:
        """Page key or path → file path relative to site_src/generated."""
        if page == "home":
            return "../index.md"
        return page if page.endswith(".md") else page + ".md"

    def link(self, from_page: str, target: str) -> str:
        """Relative URL from a page (key or .md path) to a target (relative to generated/)."""
        if not target.endswith((".md", "/")) and "." not in posixpath.basename(target):
            target = self.page_file(target)
        src_dir = posixpath.dirname(posixpath.normpath(posixpath.join("generated", self.page_file(from_page))))
        return posixpath.relpath(posixpath.normpath(posixpath.join("generated", target)), src_dir or ".")

    def figure_path(self, rel: str) -> Path:
        p = self.out / "figures" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- content ---------------------------------------------------------------
    def render(self, template: str, **vars) -> str:
        return self.env.get_template(template).render(**vars)

    def declare(self, page: str, title: str, intro: str = "", nav: str | None = None, order: int = 50) -> None:
        """Create (or retitle) a shared page; sections can then be added to it."""
        p = self.pages.setdefault(page, _Page(title))
        p.title, p.nav, p.order = title, nav, order
        if intro:
            p.intro = intro

    def section(self, page: str, title: str, markdown: str, order: int = 50) -> None:
        if page not in self.pages:
            self.declare(page, page.rsplit("/", 1)[-1])
        self.pages[page].sections.append(_Section(title, markdown, order))

    def page(self, rel_path: str, title: str, markdown: str, nav: str | None = None, order: int = 50) -> None:
        self.standalone[self.page_file(rel_path)] = (title, markdown, nav, order)

    # -- output ----------------------------------------------------------------
    def finish(self) -> list[Path]:
        """Write every page, the nav files and the home snippet; remove stale pages."""
        for folder, title in NAV_SECTIONS.items():
            if not any(self.page_file(k).startswith(folder + "/") for k in [*self.pages, *self.standalone]):
                self.declare(f"{folder}/index", title, order=0)
                self.section(f"{folder}/index", "", "Not built in this configuration: the stage that fills this "
                             "section was not enabled (see `[build].stages` in `data/config.toml`).")
        written: dict[str, str] = {}
        for key, p in self.pages.items():
            secs = sorted(p.sections, key=lambda s: s.order)
            body = self.render("page.md.j2", title=p.title, intro=p.intro, sections=secs, home=(key == "home"),
                               banner=self.banner)
            if key == "home":
                written["_snippets/home.md"] = body
            else:
                written[self.page_file(key)] = body
        for rel, (title, md, _nav, _order) in self.standalone.items():
            text = md if md.lstrip().startswith("# ") else f"# {title}\n\n{md}"
            if self.banner:
                head, _, rest = text.partition("\n")
                text = f"{head}\n\n{self.banner}\n{rest}"
            written[rel] = text
        written.update(self._summaries())
        paths = []
        for rel, text in written.items():
            path = self.out / rel
            write_if_changed(path, text)
            paths.append(path)
        self._remove_stale({self.out / rel for rel in written})
        return paths

    def _summaries(self) -> dict[str, str]:
        """One SUMMARY.md per top-level folder, listing its pages (literate-nav)."""
        entries: dict[str, list[tuple[int, str, str]]] = {}
        for key, p in self.pages.items():
            if key == "home":
                continue
            folder = self.page_file(key).split("/", 1)[0]
            entries.setdefault(folder, []).append((p.order, p.title, self.page_file(key)))
        for rel, (title, _md, nav, order) in self.standalone.items():
            if nav is not None:
                folder = rel.split("/", 1)[0]
                entries.setdefault(folder, []).append((order, title, rel))
        out = {}
        for folder, items in entries.items():
            lines = []
            for _o, title, rel in sorted(items, key=lambda t: (t[0], t[1].lower())):
                inner = rel.split("/", 1)[1] if "/" in rel else rel
                lines.append(f"* [{md_escape(title)}]({inner})")
            out[f"{folder}/SUMMARY.md"] = "\n".join(lines) + "\n"
        return out

    def _remove_stale(self, keep: set[Path]) -> None:
        """Delete generated .md files that this run did not write (e.g. a removed image)."""
        if not self.out.is_dir():
            return
        for p in self.out.rglob("*.md"):
            if p not in keep and "figures" not in p.relative_to(self.out).parts:
                p.unlink()

