"""End-to-end: a small config built into a temp project, then `mkdocs build --strict`."""
import os
import shutil
import subprocess
import sys

import pytest

from generator.build import run_build
from generator.cli import main
from generator.config import ROOT, Config

pytestmark = pytest.mark.slow


def make_project(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "site_src", proj / "site_src", ignore=shutil.ignore_patterns("generated"))
    shutil.copy(ROOT / "mkdocs.yml", proj / "mkdocs.yml")
    return proj


def mkdocs_strict(proj):
    env = dict(os.environ, DISABLE_MKDOCS_2_WARNING="true", NO_MKDOCS_2_WARNING="true")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(proj / "mkdocs.yml")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return proj / "site"


def config(proj, images, stages=("overview", "activity"), **build):
    cfg = Config.load()
    cfg.override(models=["efficientnet_lite0", "alexnet"], images=str(images), out=str(proj / "site_src/generated"),
                 cache=str(proj / "cache"), stages=list(stages), offline=True, device="cpu", **build)
    return cfg


def test_small_build_then_mkdocs_strict(tmp_path, two_images, tmp_torch_home):
    (two_images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    proj = make_project(tmp_path)
    msgs = []
    res = run_build(config(proj, two_images), say=msgs.append)
    assert res.exit_code == 1  # one image skipped → non-zero, the rest built
    log = "\n".join(msgs)
    assert "skipped" in log and "broken.jpg" in log and "alexnet: weights file alexnet-owt-7be5be79.pth" in log
    gen = proj / "site_src/generated"
    home = (gen / "_snippets/home.md").read_text()
    assert "Not in this build: AlexNet" in home and "1 image(s) skipped" in home
    assert "/root/" not in home and "Error" not in home  # no build-machine path, no exception name
    assert (gen / "models/efficientnet_lite0.md").is_file() and (gen / "models/alexnet.md").is_file()
    page = (gen / "images/tabby-cat-chelsea.md").read_text()
    assert "EfficientNet-Lite0: activity" in page and "figures/activity/efficientnet_lite0/tabby-cat-chelsea/stage3.webp" in page
    assert (gen / "figures/activity/efficientnet_lite0/espresso/head.webp").stat().st_size > 1000
    site = mkdocs_strict(proj)
    assert (site / "generated/models/efficientnet_lite0.html").is_file()
    assert "Not in this build" in (site / "index.html").read_text()

    # rerun with nothing changed: no model work at all
    msgs.clear()
    res2 = run_build(config(proj, two_images), say=msgs.append)
    assert res2.ctx.cache.misses == 0 and res2.ctx.cache.hits > 0

    # a changed image redoes only its own work
    from PIL import Image
    im = Image.open(two_images / "espresso.jpg")
    im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(two_images / "espresso.jpg", quality=90)
    res3 = run_build(config(proj, two_images), say=msgs.append)
    assert res3.ctx.cache.misses == 1  # the espresso's activity entry only


def test_strict_makes_missing_weights_an_error(tmp_path, two_images, tmp_torch_home):
    proj = make_project(tmp_path)
    rc = main(["build", "--images", str(two_images), "--out", str(proj / "site_src/generated"), "--cache",
               str(proj / "cache"), "--models", "alexnet", "--offline", "--strict", "--stages", "overview"])
    assert rc == 2


def test_user_text_is_escaped(tmp_path, two_images, tmp_torch_home):
    (two_images / "images.toml").write_text(
        '[[image]]\nfile = "espresso.jpg"\ntitle = "<script>alert(1)</script> *x* [y](z)"\n'
        'author = "A | B"\n')
    (two_images / "tabby-cat-chelsea.jpg").unlink()
    proj = make_project(tmp_path)
    res = run_build(config(proj, two_images, stages=("overview",)), say=lambda m: None)
    assert res.exit_code == 1 and list(res.ctx.missing) == ["alexnet"]  # built; a model without weights
    page = (proj / "site_src/generated/images/espresso.md").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    html = (mkdocs_strict(proj) / "generated/images/espresso.html").read_text()
    assert "<script>alert" not in html


def test_every_stage_together_passes_mkdocs_strict(tmp_path, two_images, tmp_torch_home):
    """All stages with tiny settings in one build: the pages link to each other correctly."""
    proj = make_project(tmp_path)
    cfg = config(proj, two_images, stages=("overview", "activity", "attribution", "findings", "dgn_am", "atlas", "home"))
    cfg.data["attribution"] = {"methods": ["saliency", "deconvnet", "gradcam", "integrated_gradients"],
                               "gallery_images": 2, "neurons": 2, "neuron_images": 1, "neuron_layers": 1,
                               "method_params": {"integrated_gradients": {"steps": 4}}}
    cfg.data["findings"] = {"images": 2, "sanity_images": 1, "cascade_steps": 2, "accuracy_folder": "",
                            "methods": ["saliency", "gradcam"], "faithfulness_steps": 4, "invariance_images": 1,
                            "fragility_images": 1, "fragility_steps": 1, "selectivity_images": 2,
                            "ablation_units_per_layer": 1}
    cfg.data["dgn_am"] = {"classes": [281], "steps": 3, "baselines": ["plain"], "ppgn_steps": 2,
                          "ppgn_samples": 2, "units_per_layer": 0}
    cfg.data["atlas"] = {"folder": str(two_images), "max_channels_per_layer": 2, "top_k": 2,
                         "layers": ["stage3"]}
    res = run_build(cfg, say=lambda m: None)
    assert res.exit_code == 1 and list(res.ctx.missing) == ["alexnet"] and not res.ctx.skipped
    gen = proj / "site_src/generated"
    for page in ["methods/saliency.md", "methods/deconvnet.md", "methods/dgn_am.md", "findings/index.md",
                 "units/efficientnet_lite0/stage3/index.md"]:
        assert (gen / page).is_file(), page
    site = mkdocs_strict(proj)
    assert (site / "generated/units/efficientnet_lite0/stage3/index.html").is_file()
