"""Figure captions, credits and the export command (from the generated output, no rebuild)."""
import json

from PIL import Image

from generator.cli import main
from generator.figures import describe, read_manifest, write_manifest

MANIFEST = {"images": {"espresso": {"id": "espresso", "title": "Espresso cup", "author": "R. M.", "license": "CC0-1.0"},
                       "tabby-cat": {"id": "tabby-cat", "title": "Cat", "author": "S. vdW", "license": "CC-BY-4.0"}},
            "models": {"efficientnet_lite0": {"name": "efficientnet_lite0", "title": "EfficientNet-Lite0",
                                              "layers": ["stem", "stage3", "head"]}}}


def test_describe_reads_model_photo_layer_from_the_path():
    f = describe("activity/efficientnet_lite0/tabby-cat/stage3-neurons.webp", MANIFEST)
    assert f.model["title"] == "EfficientNet-Lite0" and f.photo["id"] == "tabby-cat" and f.layer == "stage3"
    assert f.caption() == "Activity · neurons; model EfficientNet-Lite0; photo “Cat”; layer stage3"
    assert f.credit() == "Photo: S. vdW, CC-BY-4.0"
    g = describe("attribution/efficientnet_lite0/gradcam/espresso-rgb.webp", MANIFEST)
    assert g.photo["id"] == "espresso" and g.parts == ["gradcam", "rgb"] and g.layer is None
    assert describe("findings/efficientnet_lite0/cascade.svg", MANIFEST).credit() == ""


def test_export_filters_and_writes_png_svg_and_captions(tmp_path):
    figs = tmp_path / "figures"
    write_manifest(figs, list(MANIFEST["images"].values()), list(MANIFEST["models"].values()))
    assert read_manifest(figs) == json.loads(json.dumps(MANIFEST))
    for rel in ["attribution/efficientnet_lite0/gradcam/espresso.webp", "attribution/efficientnet_lite0/gradcam/tabby-cat.webp",
                "attribution/efficientnet_lite0/saliency/espresso.webp", "images/espresso-thumb.webp"]:
        (figs / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(figs / rel)
    (figs / "findings/efficientnet_lite0").mkdir(parents=True)
    (figs / "findings/efficientnet_lite0/cascade.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")

    out = tmp_path / "pack"
    assert main(["export", "--figures", str(figs), "--out", str(out), "--method", "gradcam", "--photo", "espresso"]) == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["attribution/efficientnet_lite0/gradcam/espresso.png"]
    with Image.open(out / pngs[0]) as im:
        assert im.format == "PNG" and im.size == (40, 30)
    captions = (out / "CAPTIONS.md").read_text()
    assert "gradcam; model EfficientNet-Lite0; photo “Espresso cup”" in captions and "R. M., CC0-1.0" in captions

    out2 = tmp_path / "pack2"
    assert main(["export", "--figures", str(figs), "--out", str(out2), "--model", "efficientnet_lite0"]) == 0
    assert (out2 / "findings/efficientnet_lite0/cascade.svg").is_file()  # plots stay SVG
    assert len(list(out2.rglob("*.png"))) == 3  # thumbnails are not figures
    assert main(["export", "--figures", str(figs), "--out", str(tmp_path / "none"), "--photo", "nope"]) == 1
