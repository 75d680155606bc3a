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
    """The fallback for figures without a record (see test_figure_meta.py for recorded ones)."""
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
    assert read_manifest(figs) == {**json.loads(json.dumps(MANIFEST)), "figures": {}}  # no figures.json: guessed
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


def test_webp_figures_get_a_lossless_png_twin_for_download(tmp_path):
    """The download link of a figure points at a PNG with exactly the rendered pixels (the page shows
    the lossy WebP); thumbnails and files outside a figures folder get none; export uses the twin."""
    import numpy as np

    from generator.figures import caption_html, figures_in
    from generator.render import download_png, save_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    figs = tmp_path / "figures"
    fig = save_image(pixels, figs / "attribution/efficientnet_lite0/gradcam/espresso.webp")
    twin = download_png(fig)
    assert twin == fig.with_suffix(".png") and twin.is_file()
    with Image.open(twin) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)  # lossless
    with Image.open(fig) as im:
        assert not np.array_equal(np.asarray(im.convert("RGB")), pixels)  # the shown WebP is lossy
    thumb = save_image(pixels, figs / "images/espresso-thumb.webp")
    other = save_image(pixels, tmp_path / "elsewhere/espresso.webp")
    assert download_png(thumb) is None and not thumb.with_suffix(".png").exists()
    assert download_png(other) is None and not other.with_suffix(".png").exists()
    # one figure, not two
    assert figures_in(figs) == ["attribution/efficientnet_lite0/gradcam/espresso.webp"]
    line = caption_html(describe(figures_in(figs)[0], MANIFEST), "../figures/attribution/x/espresso.webp", png=True)
    assert 'href="../figures/attribution/x/espresso.png"' in line and "Download (PNG)" in line
    assert "Download (SVG)" in caption_html(describe("findings/m/cascade.svg", MANIFEST), "a.svg")
    write_manifest(figs, list(MANIFEST["images"].values()), list(MANIFEST["models"].values()))
    out = tmp_path / "pack"
    assert main(["export", "--figures", str(figs), "--out", str(out)]) == 0
    assert (out / "attribution/efficientnet_lite0/gradcam/espresso.png").read_bytes() == twin.read_bytes()


def test_saving_a_findings_plot_leaves_matplotlib_settings_alone(tmp_path):
    """The findings' SVG settings apply while they save: a figure drawn afterwards in the same
    process (e.g. the attribution colour bar of a second build) is written as before."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generator.metrics import plots

    before = {k: matplotlib.rcParams[k] for k in plots.SVG_RC}
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_title("a title")
    plots.save(fig, tmp_path / "p.svg")
    assert "a title" in (tmp_path / "p.svg").read_text()  # text stays text in the findings' SVG
    assert {k: matplotlib.rcParams[k] for k in plots.SVG_RC} == before
