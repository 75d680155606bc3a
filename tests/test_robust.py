"""Hostile-but-fair input (issue 12): every case is one line, the exit code says what happened,
nothing outside the output folder is written, and the output folder is replaced whole or not at
all. The hostile files are made here; no binary fixtures."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator import build as build_mod
from generator.cache import Cache
from generator.cli import main
from generator.images import MAX_PIXELS, load_image_set, load_rgb
from generator.site import OUTPUT_MANIFEST

ROOT = Path(__file__).resolve().parent.parent
DATA_IMAGES = ROOT / "data" / "images"


def _png(path: Path, seed: int = 0, size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _manifest(folder: Path, text: str) -> None:
    (folder / "images.toml").write_text(text)


def _one(folder: Path, entry: str):
    _png(folder / "a.png")
    _manifest(folder, "[[image]]\n" + entry + "\n")
    return load_image_set(folder)


# --- manifest entries: one line each, naming file, key, value and what is allowed ---------

@pytest.mark.parametrize("entry, expected", [
    ('file = "a.png"\nimagenet_index = 5000', "imagenet_index = 5000: must be an integer from 0 to 999"),
    ('file = "a.png"\nimagenet_index = -1', "imagenet_index = -1: must be an integer from 0 to 999"),
    ('file = "a.png"\nimagenet_index = 1.7', "imagenet_index = 1.7: must be an integer"),
    ('file = "a.png"\nimagenet_index = "abc"', "imagenet_index = 'abc': must be an integer"),
    ('file = "a.png"\nimagenet_index = true', "imagenet_index = True: must be an integer"),
    ("file = 3", "file = 3: must be a string"),
    ('file = "a.png"\nimagenet_index = 3\nimagenet_label = "goldfish"',
     "imagenet_label = 'goldfish' is not the name of imagenet_index = 3 ('tiger shark')"),
    ('file = "a.png"\ncolour = "red"', "unknown key 'colour'; allowed: file, title"),
])
def test_bad_manifest_entry_is_skipped_with_one_line(tmp_path, entry, expected):
    items, skipped, _ = _one(tmp_path, entry)
    assert len(skipped) == 1
    assert [(i.imagenet_index, i.imagenet_label) for i in items] in ([], [(None, None)])  # a.png unlisted if file = 3
    line = str(skipped[0])
    assert "\n" not in line and expected in line and "images.toml [[image]] #1" in line


def test_index_without_label_gets_the_imagenet_name(tmp_path):
    items, skipped, _ = _one(tmp_path, 'file = "a.png"\nimagenet_index = 281')
    assert skipped == [] and items[0].imagenet_index == 281 and items[0].imagenet_label == "tabby"


def test_image_as_a_table_is_exit_2_before_any_model(tmp_path, capsys, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _png(imgs / "a.png")
    _manifest(imgs, '[image]\nfile = "a.png"\n')
    monkeypatch.setattr(build_mod, "load_models", lambda *a, **k: pytest.fail("models loaded"))
    rc = main(["build", "--images", str(imgs), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c"),
               "--stages", "overview", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'image' must be an array of tables" in err[0]
    assert not (tmp_path / "out").exists()


def test_paths_outside_the_folder_are_never_opened(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    outside = _png(tmp_path / "secret.png", 1)
    _png(imgs / "a.png")
    (imgs / "link.png").symlink_to(outside)
    (imgs / "sub").mkdir()
    (imgs / "sub" / "up.png").symlink_to(Path("..") / ".." / "secret.png")
    _manifest(imgs, '[[image]]\nfile = "../secret.png"\n[[image]]\nfile = "/etc/passwd"\n'
                    f'[[image]]\nfile = "{outside}"\n[[image]]\nfile = "link.png"\n'
                    '[[image]]\nfile = "sub/up.png"\n[[image]]\nfile = "a.png"\n')
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: (opened.append(Path(p).resolve()), real_open(p, *a, **k))[1])
    items, skipped, _ = load_image_set(imgs)
    assert [i.path.name for i in items] == ["a.png"]
    assert len(skipped) == 5 and all("outside the image folder" in str(s) for s in skipped)
    assert outside.resolve() not in opened and Path("/etc/passwd") not in opened


def test_folder_svg_duplicate_and_bomb(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    _manifest(tmp_path, '[[image]]\nfile = "a.png"\n[[image]]\nfile = "./a.png"\n[[image]]\nfile = "dir.png"\n')
    items, skipped, _ = load_image_set(tmp_path)
    reasons = {s.path.name: s.reason for s in skipped}
    assert [i.id for i in items] == ["a"]  # one page, not two
    assert "already listed as entry #1" in reasons["a.png"]
    assert reasons["dir.png"] == "is a folder, not an image file"
    assert "vector image (.svg) not supported" in reasons["logo.svg"]
    # the bomb message quotes the limit the code uses
    side = int(MAX_PIXELS ** 0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")
    with pytest.raises(Exception, match=f"{side}×{side} px, limit {MAX_PIXELS:,} px"):
        load_rgb(tmp_path / "bomb.png")


# --- flags, config values, stages, weights: one line and exit 2 before any model work -----

def _cli(capsys, tmp_path, *args, config_text=None, images=None):
    imgs = images or tmp_path / "imgs"
    if images is None and not imgs.exists():
        imgs.mkdir()
        _png(imgs / "a.png")
    argv = ["build", "--images", str(imgs), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--offline", "--models", "efficientnet_lite0", "--stages", "overview", *args]
    if config_text is not None:
        (tmp_path / "c.toml").write_text(config_text)
        argv += ["--config", str(tmp_path / "c.toml")]
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.err.strip().splitlines()


@pytest.mark.parametrize("args, text, expected", [
    (["--device", "tpu"], None, "device = 'tpu': must be auto, cpu, cuda, cuda:N or mps"),
    (["--batch-size", "0"], None, "--batch-size: 0 is too small: must be at least 1"),
    (["--batch-size", "abc"], None, "--batch-size: 'abc' is not an integer"),
    ([], "[build]\nbatch_size = -3\n", "[build] batch_size = -3: must be at least 1"),
    ([], "[build]\nbatch_size = \"abc\"\n", "[build] batch_size = 'abc': must be an integer"),
    (["--stages", "overview,nope"], None, "unknown stage 'nope'"),
    ([], "[models.efficientnet_lite0]\nlayers = [\"conv99\"]\n", "[models.efficientnet_lite0] layers: 'conv99'"),
])
def test_bad_flag_or_value_is_one_line_exit_2(capsys, tmp_path, monkeypatch, args, text, expected):
    monkeypatch.setattr(build_mod, "load_models", lambda *a, **k: pytest.fail("models loaded"))
    rc, err = _cli(capsys, tmp_path, *args, config_text=text)
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    rc, err = _cli(capsys, tmp_path, "--device", "cuda")
    assert rc == 2 and err == ["error: [build] device = 'cuda': CUDA is not available on this machine (use cpu or auto)"]


def test_unknown_stage_is_found_before_any_stage_runs(capsys, tmp_path, monkeypatch):
    from generator.stages import overview

    monkeypatch.setattr(overview, "run", lambda ctx: pytest.fail("a stage ran"))
    rc, err = _cli(capsys, tmp_path, "--stages", "overview,activity,bogus")
    assert rc == 2 and len(err) == 1


def test_empty_folder_and_foreign_output_are_exit_2(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = _cli(capsys, tmp_path, images=empty)
    assert rc == 2 and len(err) == 1 and "holds no photos" in err[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.md").write_text("my notes")
    rc, err = _cli(capsys, tmp_path)
    assert rc == 2 and len(err) == 1 and "holds files this tool did not write (e.g. mine.md)" in err[0]
    assert (out / "mine.md").read_text() == "my notes"


def test_corrupt_weights_are_called_corrupt(tmp_path, tmp_torch_home):
    from generator.models import get_spec

    wdir = tmp_path / "w"
    wdir.mkdir()
    spec = get_spec("alexnet")
    (wdir / spec.weights_file).write_bytes(b"PK\x03\x04 definitely not a checkpoint" * 10)
    msgs = []
    models, missing = build_mod.load_models(["alexnet"], str(wdir), True, False, "cpu", msgs.append)
    assert models == [] and "alexnet" in missing
    assert "CORRUPT WEIGHTS" in msgs[0] and "corrupt weights file" in msgs[0] and "MISSING" not in msgs[0]
    assert msgs[0].rstrip().endswith("supply the file again")  # the whole message, not cut


# --- exit 3, --debug, and the output folder is replaced whole or not at all ---------------

def _tiny(tmp_path, two_images, *extra):
    return ["build", "--images", str(two_images), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--offline", "--models", "efficientnet_lite0", "--stages", "overview", "--device", "cpu", *extra]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file of a build's output, less the "About this build" page (this run's clock: date, speeds, times)."""
    from generator.plan import PAGE

    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != PAGE}


def test_internal_error_is_exit_3_and_keeps_the_previous_output(capsys, tmp_path, two_images, monkeypatch):
    assert main(_tiny(tmp_path, two_images)) == 0
    before = _tree(tmp_path / "out")
    assert OUTPUT_MANIFEST in before and "images/espresso.md" in before
    capsys.readouterr()
    from generator.stages import overview

    def boom(ctx):
        (Path(ctx.site.out) / "half.md").write_text("half-written page")
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(overview, "run", boom)
    (two_images / "espresso.jpg").unlink()
    assert main(_tiny(tmp_path, two_images)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("internal error: ZeroDivisionError") and "--debug" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert _tree(tmp_path / "out") == before  # the earlier run's pages, whole; nothing half-new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "imgs", "out"]  # no partial folder left
    assert main(_tiny(tmp_path, two_images, "--debug")) == 3
    assert "Traceback" in capsys.readouterr().err


def test_replaced_photo_gets_new_figures(tmp_path, two_images):
    """A photo replaced under the same name: the page and every figure come from the new bytes."""
    assert main(_tiny(tmp_path, two_images)) == 0
    im = Image.open(two_images / "espresso.jpg")
    im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(two_images / "espresso.jpg", quality=90)
    assert main(_tiny(tmp_path, two_images)) == 0
    clean = tmp_path / "clean"
    assert main(_tiny(clean, two_images)) == 0
    assert _tree(tmp_path / "out") == _tree(clean / "out")


# --- several builds, one cache; SIGKILL and resume ----------------------------------------

def _cache_worker(root, keys, q):
    c = Cache(root)

    def compute(idx):
        time.sleep(0.3)
        return [{"k": keys[i]["k"]} for i in idx]

    c.batched(keys, compute)
    q.put(c.stored)


def test_two_processes_on_one_cache_compute_each_result_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    keys = [{"k": i} for i in range(6)]
    q = ctx.Queue()
    procs = [ctx.Process(target=_cache_worker, args=(tmp_path, keys, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    stored = [q.get(timeout=5), q.get(timeout=5)]
    assert sum(stored) == len(keys)  # one process computed, the other waited and read
    assert Cache(tmp_path).get_or_compute(keys[0], lambda: pytest.fail("recomputed")) == {"k": 0}


def _build_cmd(out: Path, cache: Path, images: Path) -> list[str]:
    return [sys.executable, "-m", "generator", "build", "--images", str(images), "--out", str(out), "--cache",
            str(cache), "--offline", "--models", "efficientnet_lite0", "--stages", "overview,activity",
            "--device", "cpu"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", CNNVIS_NO_PROGRESS="1")


@pytest.mark.slow  # end-to-end builds in subprocesses (not in make test-fast)
def test_two_builds_on_one_cache_compute_each_result_once(tmp_path, two_images):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen(_build_cmd(tmp_path / f"out{i}", cache, two_images), cwd=ROOT, env=_env(),
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    stored = [int(next(line for line in e.splitlines() if line.startswith("cache:")).split()[-2]) for e in errs]
    entries = list(cache.glob("??/*.pt"))
    assert len(entries) > 0 and sum(stored) == len(entries), (stored, len(entries))
    assert _tree(tmp_path / "out0") == _tree(tmp_path / "out1")


@pytest.mark.slow  # end-to-end builds in subprocesses (not in make test-fast)
def test_sigkill_at_several_points_then_resume_is_byte_identical(tmp_path, two_images):
    clean = tmp_path / "clean"
    r = subprocess.run(_build_cmd(clean / "out", clean / "cache", two_images), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out, cache = tmp_path / "out", tmp_path / "cache"
    # kill points: as soon as the first cache entry exists (models and photos being worked
    # on), then as soon as figures of the new output are being written
    for ready in (lambda: any(cache.glob("??/*.pt")), lambda: any(tmp_path.glob(".out.partial-*/figures"))):
        p = subprocess.Popen(_build_cmd(out, cache, two_images), cwd=ROOT, env=_env(), stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while p.poll() is None and not ready() and time.monotonic() - t0 < 300:
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not out.exists()  # replaced whole or not at all: nothing half-written is published
    r = subprocess.run(_build_cmd(out, cache, two_images), cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert _tree(out) == _tree(clean / "out")  # figures (colorbar.svg included) byte for byte
    assert not list(tmp_path.glob(".out.*"))  # partial folders of killed runs are cleaned up
    assert not list(cache.rglob("*.tmp"))


# --- property: random manifests and config values → one line and exit 2, or a build ------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_scalar = st.one_of(st.integers(-2000, 2000), st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.booleans(), st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=8),
                    st.sampled_from(["a.png", "b.png", "../a.png", "/etc/passwd", "sub", "x.svg", "a.png/",
                                     "missing.jpg", "", "tabby", "tiger shark"]))
_value = st.one_of(_scalar, st.lists(_scalar, max_size=3), st.dictionaries(st.sampled_from(["file", "x"]), _scalar,
                                                                           max_size=2))
_entry = st.dictionaries(st.sampled_from(["file", "imagenet_index", "imagenet_label", "title", "sha256", "bogus"]),
                         _value, max_size=4)
_build = st.dictionaries(st.sampled_from(["batch_size", "image_limit", "device", "stages", "strict", "bogus"]),
                         _value, max_size=2)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(_entry, max_size=4), image_table=st.booleans(), build=_build)
def test_random_manifest_and_config_is_one_line_exit_2_or_a_build(tmp_path_factory, capsys, entries, image_table,
                                                                 build):
    import generator.build as b

    base = tmp_path_factory.mktemp("prop")
    imgs = base / "imgs"
    imgs.mkdir()
    _png(imgs / "a.png", 1)
    _png(imgs / "b.png", 2)
    (imgs / "sub").mkdir()
    if image_table and entries:
        text = "[image]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in entries[0].items())
    else:
        text = "".join("[[image]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in e.items()) for e in entries)
    _manifest(imgs, text)
    (base / "c.toml").write_text("[build]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in build.items()))
    before = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    real = b.load_models
    b.load_models = lambda *a, **k: ([], {})  # validation, photos and pages; no model work
    try:
        rc = main(["build", "--config", str(base / "c.toml"), "--images", str(imgs), "--out", str(base / "out"),
                   "--cache", str(base / "cache"), "--stages", "overview", "--device", "cpu"])
    finally:
        b.load_models = real
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err)
    if rc == 2:
        assert len(err) == 1 and "error" in err[0], err
        assert not (base / "out").exists()
    else:
        assert rc in (0, 1), err
        assert (base / "out" / OUTPUT_MANIFEST).is_file()
    after = {p: p.stat().st_mtime_ns for p in base.rglob("*") if not p.is_relative_to(base / "out")
             and not p.is_relative_to(base / "cache")}
    assert after == {p: t for p, t in before.items() if p in after} and set(after) <= set(before)
