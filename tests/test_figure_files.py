"""Figures to files (generator/figure_files.py): the render pool draws, encodes and writes in worker
processes the same bytes as the build's own process, keeps the order of two jobs for one file, says
which figure failed, and a build with nothing changed re-renders every figure from the cache alone."""
from __future__ import annotations

import copy
import filecmp

import numpy as np
import pytest
import torch

from generator import figure_files, render
from generator.figure_files import RenderPool, draw, save_image, using, workers_for


def _pictures(folder, pool: RenderPool) -> list[str]:
    """A few figures of every kind the stages make: a saved photo-like array (WebP with its PNG twin), a
    grid drawn in the pool, a heatmap (PNG), a thumbnail."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    tiles = [render.image_tile(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)), 32) for i in range(5)]
    with using(pool):
        save_image(photo, folder / "figures/images/photo.webp")
        draw(folder / "figures/activity/m/photo/grid.webp", render.grid, tiles, 3, 32, labels=list("abcde"))
        draw(folder / "figures/attribution/m/saliency/photo.png", render.heatmap_image,
             torch.rand(20, 20, generator=torch.Generator().manual_seed(7)), 40)
        save_image(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(9)), folder / "figures/atlas/m/l/c0-thumb.webp")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_parallel_render_writes_the_same_files_as_a_serial_one(tmp_path):
    serial = _pictures(tmp_path / "serial", RenderPool(0))
    parallel = _pictures(tmp_path / "parallel", RenderPool(2))
    assert serial == parallel and "figures/images/photo.png" in serial  # the download twin, too
    assert len(serial) == 6  # two WebP figures with a download line get PNG twins
    for rel in serial:
        assert filecmp.cmp(tmp_path / "serial" / rel, tmp_path / "parallel" / rel, shallow=False), rel


def test_two_jobs_for_one_file_keep_their_order_and_a_failure_names_its_figure(tmp_path):
    pool = RenderPool(2)
    out = tmp_path / "figures/x.png"
    out.parent.mkdir(parents=True)
    with using(pool):
        for v in (10, 200, 90):  # the last one wins, as in a serial run
            save_image(np.full((8, 8, 3), v, np.uint8), out)
    from PIL import Image

    assert np.asarray(Image.open(out))[0, 0, 0] == 90 and pool.jobs == 3
    bad = RenderPool(2)
    with pytest.raises(RuntimeError, match=r"drawing figure .*broken\.webp failed"):
        with using(bad):
            draw(tmp_path / "figures/broken.webp", render.grid, [None], 1, 8)  # not a picture
    assert figure_files.active() is not bad and not figure_files.active().parallel  # the build's pool is gone
    with pytest.raises(ValueError, match="unsupported figure format"):
        save_image(np.zeros((2, 2, 3), np.uint8), tmp_path / "x.gif")


def test_render_workers_are_the_cores_the_network_leaves():
    assert workers_for("auto", "cpu", n_cores=2) == 2
    assert workers_for("auto", "cpu", n_cores=1) == 0  # one worker only moves the drawing elsewhere
    assert workers_for("auto", "cuda", n_cores=16) == 15 and workers_for("auto", "cuda", n_cores=2) == 0
    assert workers_for(0, "cuda", n_cores=16) == 0 and workers_for(3, "cpu", n_cores=2) == 3


@pytest.fixture(scope="module")
def cold_build(tmp_path_factory):
    """Every stage on two tiny networks, cold cache, figures drawn by two worker processes."""
    from generator.build import run_build
    from generator.models import REGISTRY
    from test_plan import TINY_A, TINY_B, small_config

    root = tmp_path_factory.mktemp("cold")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, TINY_A.name, TINY_A)
        mp.setitem(REGISTRY, TINY_B.name, TINY_B)
        mp.setenv("CNNVIS_NO_PROGRESS", "1")
        cfg = small_config(root)
        cfg.override(render_workers=2)
        res = run_build(cfg, say=lambda m: None, rehearsal=True)
        yield root, cfg, res


@pytest.fixture
def tiny_registry(monkeypatch):
    from generator.models import REGISTRY
    from test_plan import TINY_A, TINY_B

    monkeypatch.setitem(REGISTRY, TINY_A.name, TINY_A)
    monkeypatch.setitem(REGISTRY, TINY_B.name, TINY_B)
    monkeypatch.setenv("CNNVIS_NO_PROGRESS", "1")


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_rebuild_with_nothing_changed_redraws_every_figure_from_the_cache_byte_for_byte(cold_build, tiny_registry):
    """The cold build (two render workers) again, in the build's own process, from the warm cache into
    another folder: no model work, as many figures drawn as the first time, and the same files byte for
    byte (the page "About this build", which holds the times, aside)."""
    from generator.build import run_build

    root, cfg, first = cold_build
    assert first.ctx.render_pool.workers == 2 and first.ctx.cache.misses > 0
    cfg = copy.deepcopy(cfg)
    cfg.override(render_workers=0, out=str(root / "out2"))
    second = run_build(cfg, say=lambda m: None, rehearsal=True)
    assert second.ctx.cache.misses == 0 and second.ctx.cache.hits > 0  # no model work
    assert second.ctx.render_pool.jobs == first.ctx.render_pool.jobs > 20  # every figure drawn again
    files = _files(root / "out")
    assert files == _files(root / "out2")
    differ = [r for r in files if not filecmp.cmp(root / "out" / r, root / "out2" / r, shallow=False)]
    assert differ == ["models/about-build.md"], differ


@pytest.mark.slow
def test_adding_a_photo_computes_that_photos_work_and_what_reads_every_photo(cold_build, tiny_registry, monkeypatch):
    """One photo added to the curated set: every value the rebuild computes is that photo's own (its key names
    the photo's SHA-256), except the unit atlas, which in this configuration streams the curated folder (its
    folder changed); the per-photo work of the new photo is all there."""
    import json
    import shutil

    from generator.build import run_build
    from generator.cache import Cache
    from test_findings import _photo

    root, cfg, _ = cold_build
    photos = root / "imgs-plus"
    shutil.copytree(root / "imgs", photos)
    _photo(99).save(photos / "photo-9.png")  # sorts after the others: not among the first photos of a set
    import hashlib

    sha = hashlib.sha256((photos / "photo-9.png").read_bytes()).hexdigest()
    cache = root / "cache-plus"
    shutil.copytree(root / "cache", cache)
    stored: list[dict] = []
    put = Cache.put
    monkeypatch.setattr(Cache, "put", lambda self, k, obj: (stored.append(k), put(self, k, obj))[1])
    cfg = copy.deepcopy(cfg)
    cfg.override(images=str(photos), cache=str(cache), out=str(root / "out-plus"), render_workers=0)
    cfg.data["atlas"]["folder"] = str(photos)
    run_build(cfg, say=lambda m: None, rehearsal=True)
    assert stored
    others = sorted({k["what"] for k in stored if sha not in json.dumps(k)})
    assert set(others) <= {"atlas-stream", "atlas-unit"}, others
    mine = {k["what"] for k in stored if sha in json.dumps(k)}
    assert {"logits", "activity", "attribution"} <= mine, mine


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_a_killed_build_leaves_no_render_worker_behind(tmp_path):
    """A build killed outright (SIGKILL: no finally runs) cannot stop its render workers; they notice their
    parent is gone and exit."""
    import subprocess
    import sys
    import time

    script = (
        "import os, signal, sys\n"
        "from generator.figure_files import RenderPool\n"
        "pool = RenderPool(2)\n"
        f"pool.submit({str(tmp_path / 'a.txt')!r}, str, 'a job')\n"
        "pool.wait()\n"
        "print(' '.join(str(p) for p in pool._pool._processes), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    workers = [int(p) for p in out.stdout.split()]
    assert workers, out.stderr
    deadline = time.monotonic() + 30  # liveness, not speed: the workers look once a second
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "render workers outlived their build"
