"""What a figure shows is recorded where it is written (``ctx.figure_path(rel, model=…, photo=…, …)``),
carried in ``figures/figures.json`` to the captions and the export; the path is only a fallback."""
import json

import torch
from PIL import Image

from generator.build import BuildContext
from generator.cache import Cache
from generator.cli import main
from generator.config import Config
from generator.figures import RECORDS, describe, read_manifest, select, write_manifest
from generator.site import SiteWriter
from generator.util import StageTimer

# a photo id that is also a layer name, and one that a safe model folder name starts with
PHOTOS = [{"id": "stage3", "title": "Stage three", "author": "A. B.", "license": "CC-BY-4.0", "source": "https://x"},
          {"id": "timm", "title": "A timm photo", "author": "C. D.", "license": "CC0-1.0"},
          {"id": "tabby-cat", "title": "Cat", "author": "S. vdW", "license": "CC-BY-4.0"}]
MODELS = [{"name": "timm:my-net", "title": "My Net", "layers": ["stage3", "head"]},
          {"name": "lite", "title": "Lite", "layers": ["stage3", "head"]}]


def _site(tmp_path) -> SiteWriter:
    site = SiteWriter(tmp_path / "out")
    write_manifest(site.out / "figures", PHOTOS, MODELS)
    return site


def _png(path, colour=(200, 10, 10)):
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def test_a_recorded_figure_is_described_as_recorded_not_as_its_path_suggests(tmp_path):
    site = _site(tmp_path)
    # a layer figure whose file name is a photo id: the path would say "photo stage3"
    _png(site.figure_path("attribution/lite/neurons/stage3.webp", model="lite", layer="stage3", method="deconvnet"))
    # an atlas figure under the model's safe folder name "timm-my-net": the path would say "photo timm"
    _png(site.figure_path("atlas/timm-my-net/head/12-top.webp", model="timm:my-net", layer="head",
                          caption="Units · unit 12: the image patches that excite it most"))
    # a photo whose id is a layer name, in a figure of another layer
    _png(site.figure_path("activity/lite/stage3/head-neurons.webp", model="lite", photo="stage3", layer="head",
                          caption="Activity · chosen neurons on the photo"))
    site.finish()
    m = read_manifest(site.out / "figures")

    f = describe("attribution/lite/neurons/stage3.webp", m)
    assert f.recorded and f.model["title"] == "Lite" and f.photo is None and f.layer == "stage3"
    assert f.method == "deconvnet" and f.parts == ["deconvnet"] and f.credit() == ""
    assert f.caption() == "Attribution · deconvnet; model Lite; layer stage3"

    g = describe("atlas/timm-my-net/head/12-top.webp", m)
    assert g.model["name"] == "timm:my-net" and g.photo is None and g.layer == "head" and g.method is None
    assert g.caption() == "Units · unit 12: the image patches that excite it most; model My Net; layer head"

    h = describe("activity/lite/stage3/head-neurons.webp", m)
    assert h.photo["id"] == "stage3" and h.layer == "head" and h.model["name"] == "lite"
    assert h.caption() == "Activity · chosen neurons on the photo; model Lite; photo “Stage three”; layer head"
    assert h.credit() == "Photo: A. B., CC-BY-4.0 (https://x)"

    # the guess, for comparison, is wrong on the first two
    bare = {"images": m["images"], "models": m["models"]}
    assert describe("attribution/lite/neurons/stage3.webp", bare).photo["id"] == "stage3"
    assert describe("atlas/timm-my-net/head/12-top.webp", bare).photo["id"] == "timm"

    # the filters of `export` use the record too
    figs = site.out / "figures"
    assert [f.rel for f in select(figs, photo="timm")] == []
    assert [f.rel for f in select(figs, model="timm:my-net")] == ["atlas/timm-my-net/head/12-top.webp"]
    assert [f.rel for f in select(figs, photo="stage3")] == ["activity/lite/stage3/head-neurons.webp"]
    assert [f.rel for f in select(figs, method="deconvnet")] == ["attribution/lite/neurons/stage3.webp"]


def test_figures_json_is_written_by_finish_and_read_by_read_manifest(tmp_path):
    site = _site(tmp_path)
    site.figure_path("images/tabby-cat.webp", photo="tabby-cat")
    site.figure_path("attribution/lite/gradcam/tabby-cat.webp", model="lite", photo="tabby-cat", method="gradcam",
                     caption="Attribution · Grad-CAM")
    site.figure_path("findings/lite/sanity.svg")  # no metadata: not recorded (described from its path)
    site.figure_path("attribution/colorbar.svg", layer="", caption=None)  # empty fields are not recorded
    path = site.out / "figures" / RECORDS
    assert not path.exists()  # written at the end, with the pages
    written = site.finish()
    assert path in written
    text = path.read_text()
    data = json.loads(text)
    assert data == {"attribution/lite/gradcam/tabby-cat.webp": {"caption": "Attribution · Grad-CAM", "method": "gradcam",
                                                                 "model": "lite", "photo": "tabby-cat"},
                    "images/tabby-cat.webp": {"photo": "tabby-cat"}}
    assert text == json.dumps(data, indent=1, sort_keys=True) + "\n"  # sorted: the same figures, the same bytes
    m = read_manifest(site.out / "figures")
    assert m["figures"] == data and set(m["images"]) == {"stage3", "timm", "tabby-cat"} and "lite" in m["models"]
    assert (site.out / "figures" / "credits.json").is_file()  # the credits stay in their own file
    # nothing there at all: empty, never an error
    assert read_manifest(tmp_path / "nowhere") == {"images": {}, "models": {}, "figures": {}}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RECORDS).write_text("[1, 2]")
    assert read_manifest(tmp_path / "bad")["figures"] == {}


def test_the_build_context_passes_the_metadata_on(tmp_path):
    out = tmp_path / "out"
    ctx = BuildContext(config=Config({"build": {"models": [], "stages": ["home"]}}), models=[], missing={}, images=[],
                       skipped=[], notes=[], cache=Cache(tmp_path / "cache"), site=SiteWriter(out),
                       device=torch.device("cpu"), batch_size=4, timer=StageTimer(), out=out)
    p = ctx.figure_path("compare/images/tabby-cat.webp", photo="tabby-cat", caption="Across models · every method")
    assert p == out / "figures/compare/images/tabby-cat.webp" and p.parent.is_dir()
    assert ctx.figure_path("home/comparison.webp") == out / "figures/home/comparison.webp"
    assert ctx.site.figures == {"compare/images/tabby-cat.webp": {"photo": "tabby-cat",
                                                                  "caption": "Across models · every method"}}


def test_export_captions_carry_the_recorded_caption_and_the_photo_credit(tmp_path):
    site = _site(tmp_path)
    _png(site.figure_path("attribution/timm-my-net/gradcam/tabby-cat.webp", model="timm:my-net", photo="tabby-cat",
                          method="gradcam", caption="Attribution · Grad-CAM"))
    _png(site.figure_path("attribution/lite/gradcam/timm.webp", model="lite", photo="timm", method="gradcam",
                          caption="Attribution · Grad-CAM"))
    site.finish()
    out = tmp_path / "pack"
    assert main(["export", "--figures", str(site.out / "figures"), "--out", str(out), "--model", "timm:my-net"]) == 0
    lines = [l for l in (out / "CAPTIONS.md").read_text().splitlines() if l.startswith("- ")]
    assert lines == ["- `attribution/timm-my-net/gradcam/tabby-cat.png`: Attribution · Grad-CAM; model My Net; "
                     "photo “Cat”. Photo: S. vdW, CC-BY-4.0."]
    out2 = tmp_path / "pack2"
    assert main(["export", "--figures", str(site.out / "figures"), "--out", str(out2), "--photo", "timm"]) == 0
    assert (out2 / "attribution/lite/gradcam/timm.png").is_file()
    assert "photo “A timm photo”. Photo: C. D., CC0-1.0." in (out2 / "CAPTIONS.md").read_text()
    assert not (out2 / "attribution/timm-my-net").exists()


def test_a_figure_without_a_record_is_still_described_from_its_path(tmp_path):
    site = _site(tmp_path)
    _png(site.figure_path("attribution/lite/gradcam/tabby-cat.webp", model="lite", photo="tabby-cat", method="gradcam"))
    _png(site.figure_path("activity/lite/tabby-cat/stage3-neurons.webp"))  # e.g. a stage that records nothing
    site.finish()
    m = read_manifest(site.out / "figures")
    assert "activity/lite/tabby-cat/stage3-neurons.webp" not in m["figures"]
    f = describe("activity/lite/tabby-cat/stage3-neurons.webp", m)
    assert not f.recorded and f.model["name"] == "lite" and f.photo["id"] == "tabby-cat" and f.layer == "stage3"
    assert f.caption() == "Activity · neurons; model Lite; photo “Cat”; layer stage3"
    # a site built before figures.json existed: every figure guessed
    (site.out / "figures" / RECORDS).unlink()
    old = read_manifest(site.out / "figures")
    g = describe("attribution/lite/gradcam/tabby-cat.webp", old)
    assert not g.recorded and g.parts == ["gradcam"] and g.credit() == "Photo: S. vdW, CC-BY-4.0"
    out = tmp_path / "pack"
    assert main(["export", "--figures", str(site.out / "figures"), "--out", str(out), "--photo", "tabby-cat"]) == 0
    captions = (out / "CAPTIONS.md").read_text()
    assert "`activity/lite/tabby-cat/stage3-neurons.png`: Activity · neurons; model Lite" in captions
    assert "`attribution/lite/gradcam/tabby-cat.png`: Attribution · gradcam; model Lite; photo “Cat”" in captions


def test_a_recorded_model_or_photo_missing_from_the_credits_keeps_its_name(tmp_path):
    m = {"images": {}, "models": {}, "figures": {"dgn_am/x/ppgn/3.webp": {"model": "x", "method": "ppgn"},
                                                  "images/p.webp": {"photo": "p"}}}
    f = describe("dgn_am/x/ppgn/3.webp", m)
    assert f.model == {"name": "x"} and f.caption() == "DGN-AM / PPGN · ppgn; model x"
    assert describe("images/p.webp", m).caption() == "Photo “p”"
