"""Figures to files: where they are drawn, encoded and written — in this process, or in worker processes.

:func:`save_image` saves a picture (PIL image, tensor or array) and :func:`draw` draws one with a
function of :mod:`generator.render` and saves it; both hand the work to the build's render pool.
:func:`save_plot` saves a matplotlib figure (and an SVG's PDF twin) in the build's own process.
Pictures are saved as WebP (quality 85), PNG or JPEG by suffix, atomically, and only when the
bytes change (stable mtimes for ``mkdocs serve``); a WebP figure that a page shows with a
download line gets a PNG twin for that link (which ones and how:
:func:`~generator.util.download_png`, :func:`~generator.util.download_png_bytes`).

A build's figures are independent of one another and of the network: each is a function of
numbers, tiles or pictures a stage already holds. :class:`RenderPool` runs such jobs —
``submit(path, fn, *args)``, ``fn`` a module-level function that writes the file at ``path`` —
in ``workers`` processes (spawned, so no worker inherits the build's torch threads), and
:meth:`RenderPool.wait` blocks until every job has finished, raising the first failure with
the figure's path. With ``workers = 0`` a job runs at once, in this process. The jobs are the
same functions either way, so a parallel build writes the same bytes as a serial one (tested).

The build makes one pool (:func:`workers_for` sizes it: ``[build] render_workers``) and makes
it :func:`active` with :func:`using`; :func:`save_image` and :func:`draw` hand their work to the
active pool. The build waits for the pool
at the end of every stage, so a stage may read the figures of the stages before it, and the
output folder is complete when it is swapped in. Outside a build the active pool is serial.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from .render import to_pil
from .util import download_pdf, download_png, download_png_bytes, matplotlib_bytes, write_bytes_if_changed

CACHE_NEUTRAL = True  # files only: nothing here changes a cached value (see generator.cache.key)

#: jobs in flight before :meth:`RenderPool.submit` waits for the oldest (bounds the memory queued
#: pictures take while the workers catch up)
MAX_PENDING = 256


def _init_worker(parent: int | None = None) -> None:  # pragma: no cover - runs in a worker process
    os.environ.setdefault("CNNVIS_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool's size is the parallelism
    if parent is not None:  # a build killed outright (SIGKILL, SIGTERM) cannot stop its workers: they stop themselves
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="render-parent-watch").start()


def _exit_with(parent: int, every: float = 1.0) -> None:  # pragma: no cover - runs in a worker process
    """Exit this worker as soon as the build process ``parent`` is gone (the worker is handed to another parent)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


class RenderPool:
    """Runs figure jobs here (``workers = 0``) or in ``workers`` spawned processes."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = max(0, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self._pending: OrderedDict[str, Future] = OrderedDict()
        self.jobs = 0
        self.waited = 0.0  # seconds the build spent waiting for the workers

    @property
    def parallel(self) -> bool:
        return self.workers > 0

    def submit(self, path: Any, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run ``fn(*args, **kw)``, which writes the file ``path``; a second job for the same path runs
        after the first has finished (the later picture wins, as in a serial run)."""
        self.jobs += 1
        if not self.parallel:
            fn(*args, **kw)
            return
        name = os.fspath(path)
        earlier = self._pending.pop(name, None)
        if earlier is not None:
            self._finish(name, earlier)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
        self._pending[name] = self._pool.submit(fn, *args, **kw)
        while len(self._pending) > MAX_PENDING:
            self._finish(*self._pending.popitem(last=False))

    def _finish(self, name: str, fut: Future) -> None:
        t0 = time.perf_counter()
        try:
            fut.result()
        except Exception as e:
            self._cancel()
            raise RuntimeError(f"drawing figure {name} failed: {type(e).__name__}: {e}") from e
        finally:
            self.waited += time.perf_counter() - t0

    def _cancel(self) -> None:
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()

    def wait(self) -> None:
        """Block until every submitted job has finished; the first failure is raised."""
        while self._pending:
            self._finish(*self._pending.popitem(last=False))

    def close(self) -> None:
        """Wait for the jobs in flight (on success) and stop the workers."""
        try:
            self.wait()
        finally:
            self._cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


_SERIAL = RenderPool(0)
_ACTIVE: contextvars.ContextVar[RenderPool] = contextvars.ContextVar("generator_render_pool", default=_SERIAL)


def active() -> RenderPool:
    """The pool figures go to now: the build's, or a serial one outside a build."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(pool: RenderPool) -> Iterator[RenderPool]:
    """Make ``pool`` the active one while the block runs; close it after (waiting for its jobs unless the
    block failed, when the jobs in flight are cancelled)."""
    token = _ACTIVE.set(pool)
    ok = False
    try:
        yield pool
        ok = True
    finally:
        _ACTIVE.reset(token)
        if ok:
            pool.close()
        else:
            pool._cancel()
            with contextlib.suppress(Exception):
                pool.close()


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def workers_for(setting: int | str, device_type: str, n_cores: int | None = None) -> int:
    """Render worker processes for ``[build] render_workers``: an integer as it is (0: draw in the
    build's own process); ``"auto"``: on a GPU every core but the one that drives it; on a CPU every
    core (a stage's figures are drawn after its model work, so the network's threads and the workers
    mostly take turns, and a rebuild that the cache answers is all drawing). One worker is no help:
    it only moves the drawing to another process (measured on 2 cores: 0 workers 58 s, 1 worker
    65 s, 2 workers 48 s for a no-change ``make site``), so a single core draws in the build's own."""
    n = cores() if n_cores is None else n_cores
    if setting != "auto":
        return max(0, int(setting))
    n = n - 1 if device_type == "cuda" else n
    return n if n >= 2 else 0


# ------------------------------------------------------------------------------------- saving

_FORMATS = {".webp": "WEBP", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def save_image(img, path: str | Path, quality: int = 85) -> Path:
    """Save a picture (PIL image, tensor or array in [0, 1] or uint8) as ``path``, format by suffix
    (.webp, .png, .jpg): encoded and written (:func:`write_image`) in the active render pool."""
    path = _checked(path)
    active().submit(path, write_image, to_pil(img), path, quality)
    return path


def draw(path: str | Path, fn: Callable[..., Any], *args: Any, quality: int = 85, **kw: Any) -> Path:
    """Save the picture ``fn(*args, **kw)`` as ``path`` (see :func:`save_image`), drawing it in the
    render pool too: ``fn`` is a module-level function (of :mod:`generator.render`, usually) and its
    arguments plain data (tensors, arrays, PIL images, strings), so the whole job can run in a worker."""
    path = _checked(path)
    pool = active()
    if pool.parallel:  # tensors travel as arrays (no shared-memory handles per job)
        args, kw = _pack(args), _pack(kw)
    pool.submit(path, _draw_and_write, fn, args, kw, path, quality)
    return path


class _Array:
    """A tensor on its way to a worker: its values as a NumPy array (made a tensor again there)."""

    def __init__(self, t) -> None:
        self.a = t.detach().cpu().numpy()


def _pack(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return _Array(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_pack(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    return obj


def _unpack(obj):
    if isinstance(obj, _Array):
        import torch

        return torch.from_numpy(obj.a)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unpack(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unpack(v) for k, v in obj.items()}
    return obj


def _checked(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"unsupported figure format {path.suffix!r}")
    return path


def _draw_and_write(fn: Callable[..., Any], args: tuple, kw: dict, path: Path, quality: int) -> None:
    write_image(to_pil(fn(*_unpack(args), **_unpack(kw))), path, quality)


def write_image(pil: Image.Image, path: Path, quality: int = 85) -> None:
    """Encode ``pil`` by ``path``'s suffix and write it (and, for a figure with a download line, its PNG
    twin) atomically, where the bytes differ from the file there."""
    buf = io.BytesIO()
    fmt = _FORMATS[path.suffix.lower()]
    if fmt == "WEBP":
        pil.save(buf, "WEBP", quality=quality, method=4)
    elif fmt == "PNG":
        pil.save(buf, "PNG", optimize=True)
    else:
        pil.save(buf, "JPEG", quality=quality, optimize=True)
    write_bytes_if_changed(path, buf.getvalue())
    png = download_png(path)
    if png is not None:  # the full-size PNG behind the figure's download link
        write_bytes_if_changed(png, download_png_bytes(pil))


def save_plot(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as ``path`` (SVG or PNG by suffix; an SVG under a figures folder gets its PDF
    twin for the download link, :func:`~generator.util.download_pdf`) and close it; the same bytes for the
    same figure (fixed SVG element ids, no date or software stamp). Here, in the build's process."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        write_bytes_if_changed(path, matplotlib_bytes(fig, fmt, {"svg.hashsalt": "cnnvis"}))
        pdf = download_pdf(path)
        if pdf is not None:
            write_bytes_if_changed(pdf, matplotlib_bytes(fig, "pdf"))
    finally:
        plt.close(fig)
    return path
