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

CACHE_NEUTRAL = True  # cannot change a cached value: left out of code fingerprints (generator.cache.key)

import contextlib
import ctypes
import ctypes.util
import json
import os
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .config import ConfigError
from .datasets import describe_folders
from .figures import write_figure_records
from .util import atomic_write_text, md_code, md_escape, write_if_changed

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
    env.filters["data_sets"] = describe_folders  # folders of the machine that made a file → data sets, sources
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



@dataclass(frozen=True)
class Headline:
    """One headline number of the home page: ``value`` in bold, ``label`` after it, linking to ``page``
    (a page key) where it is explained. Stages provide lists of them as artifacts."""

    value: str
    label: str
    page: str

class SiteWriter:
    def __init__(self, out_dir: str | Path, banner: str = "") -> None:
        self.out = Path(out_dir)
        self.banner = banner  # Markdown put at the top of every page (rehearsal builds)
        self.env = make_env()
        self.pages: dict[str, _Page] = {}
        self.standalone: dict[str, tuple[str, str, str | None, int]] = {}
        self.figures: dict[str, dict[str, str]] = {}  # figure path under figures/ → what it shows (figure_path)

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

    def figure_path(self, rel: str, *, model: str | None = None, photo: str | None = None,
                    layer: str | None = None, method: str | None = None, caption: str | None = None) -> Path:
        """Where figure ``figures/<rel>`` is written (its folder made), and what it shows: ``model``
        (a model name), ``photo`` (a photo id), ``layer`` (a layer name), ``method`` (a method or
        check name), ``caption`` (plain text: what is shown, instead of the family's default). The
        fields given are recorded and written to ``figures/figures.json`` by :meth:`finish`, for the
        captions and credits beside each figure and ``python -m generator export``
        (:mod:`generator.figures`); a figure given none keeps the description from its path."""
        p = self.out / "figures" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) for k, v in (("model", model), ("photo", photo), ("layer", layer), ("method", method),
                                       ("caption", caption)) if v is not None and str(v) != ""}
        if meta:
            self.figures[Path(rel).as_posix()] = meta
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
        """Write every page, the nav files and the home snippet, and ``figures/figures.json`` (what
        each figure recorded through :meth:`figure_path` shows); remove stale pages."""
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
        if self.figures:
            paths.append(write_figure_records(self.out / "figures", self.figures))
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
        """Delete generated .md files that this run did not write (e.g. a removed image),
        among the files this tool wrote (its output manifest) only."""
        if not self.out.is_dir():
            return
        owned = {self.out / rel for rel in owned_files(self.out) or ()}
        for p in self.out.rglob("*.md"):
            if p in owned and p not in keep and "figures" not in p.relative_to(self.out).parts:
                p.unlink()


# ---------------------------------------------------------------------------------
# The output folder: only ever the tool's own, replaced as a whole at the end of a build.

OUTPUT_MANIFEST = ".cnnvis-output.json"
_TOOL = "cnnvis-generator"
#: what an output folder written before the manifest existed can hold
_LEGACY_SUFFIXES = {".md", ".webp", ".png", ".jpg", ".svg", ".json"}


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def owned_files(folder: Path) -> list[str] | None:
    """The files (relative paths) the tool wrote in ``folder``, from its output manifest;
    None when ``folder`` has no manifest."""
    try:
        data = json.loads((folder / OUTPUT_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != _TOOL or not isinstance(data.get("files"), list):
        return None
    return [f for f in data["files"] if isinstance(f, str)]


def check_output_folder(out: Path) -> list[str]:
    """Raise ConfigError unless ``out`` is absent, empty, or holds only files this tool
    wrote there (its manifest lists them; an output of a version before the manifest is
    recognised by its ``_snippets/home.md`` and its file types). Returns those files."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return []
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"output folder {out} is {'a link' if out.is_symlink() else 'a file'}; "
                          f"give a new or empty folder, or one an earlier build wrote")
    present = _all_files(out)
    if not present:
        return []
    owned = owned_files(out)
    if owned is None:
        legacy = (out / "_snippets" / "home.md").is_file() and all(
            Path(f).suffix.lower() in _LEGACY_SUFFIXES and not (out / f).is_symlink() for f in present)
        if legacy:
            return present
        raise ConfigError(f"output folder {out} holds files this tool did not write (e.g. {present[0]}); give a "
                          f"new or empty folder (the build replaces the whole folder)")
    foreign = sorted(set(present) - set(owned) - {OUTPUT_MANIFEST})
    if foreign:
        raise ConfigError(f"output folder {out} holds files this tool did not write (e.g. {foreign[0]}); move them "
                          f"away or give another folder (the build replaces the whole folder)")
    return present


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    """A build writes into a fresh sibling ``.<name>.partial-<pid>`` of the output folder;
    :meth:`commit` swaps it in with one rename when the build finished, :meth:`abort`
    removes it. An interrupted build leaves the previous output untouched; its partial
    folder is removed by the next build. Every figure is therefore drawn from this run's
    photos: nothing of an earlier run is carried over."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.previous = check_output_folder(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale_partials()
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()

    def _clean_stale_partials(self) -> None:
        for p in self.out.parent.glob(f".{self.out.name}.*-*"):
            kind, _, pid = p.name.rpartition("-")
            if kind.endswith((".partial", ".old")) and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    def commit(self) -> None:
        """Record the files written, then put the new folder in place of the old one."""
        files = _all_files(self.tmp)
        atomic_write_text(self.tmp / OUTPUT_MANIFEST, json.dumps({"tool": _TOOL, "files": files}, indent=0) + "\n")
        if not self.out.exists():
            os.rename(self.tmp, self.out)
            return
        check_output_folder(self.out)  # still ours (nobody added files while we built)?
        if _exchange(self.tmp, self.out):  # atomic: the old folder is now at self.tmp
            old = self.tmp
        else:
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, old)
            os.rename(self.tmp, self.out)
        _remove_owned(old)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _remove_owned(folder: Path) -> None:
    """Delete the files the tool wrote in ``folder``, then its empty subfolders and itself."""
    owned = owned_files(folder)
    files = check_output_folder(folder) if owned is None else [*owned, OUTPUT_MANIFEST]
    for rel in files:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (folder / rel).unlink()
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0

