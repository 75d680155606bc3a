"""Figure captions, credits and the export command (from the generated output, no rebuild)."""
import json
from pathlib import Path

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


def _psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_figures_with_a_download_line_get_a_png_for_it(tmp_path):
    """The download link under a figure gives a PNG (LaTeX and some slide tools take no WebP): exact
    where the figure has at most 256 colours (a heatmap), else a 256-colour palette close to the
    rendered pixels and much smaller than lossless RGB. Pictures shown only in table cells (no
    download line), thumbnails and files outside a figures folder get none; export uses the PNG."""
    import numpy as np

    from generator.figures import caption_html, figures_in
    from generator.figure_files import save_image
    from generator.util import download_png

    figs = tmp_path / "figures"
    rng = np.random.default_rng(0)
    lut = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    heat = lut[rng.integers(0, 256, (30, 40))]  # 256 colours, as a colour-mapped heatmap
    fig = save_image(heat, figs / "attribution/efficientnet_lite0/neurons/stage3.webp")
    twin = download_png(fig)
    assert twin == fig.with_suffix(".png") and twin.is_file()
    with Image.open(twin) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im.convert("RGB")), heat)  # exact
    with Image.open(fig) as im:
        assert not np.array_equal(np.asarray(im.convert("RGB")), heat)  # the shown WebP is lossy

    y, x = np.mgrid[0:120, 0:160]
    photo = np.stack([x * 1.5, y * 2.0, (x + y) * 0.9], -1) + rng.normal(0, 2, (120, 160, 3))
    photo = np.clip(photo, 0, 255).astype(np.uint8)  # thousands of colours in smooth ramps: a hard case
    big = save_image(photo, figs / "activity/efficientnet_lite0/espresso/stage3.webp")
    with Image.open(download_png(big)) as im:  # the shipped figures: 35-42 dB
        assert im.mode == "P" and _psnr(np.asarray(im.convert("RGB")), photo) > 29
    import io
    lossless = io.BytesIO()
    Image.fromarray(photo).save(lossless, "PNG", optimize=True)
    assert download_png(big).stat().st_size < 0.6 * len(lossless.getvalue())

    table_only = ["atlas/efficientnet_lite0/stage3/0-top.webp", "attribution/efficientnet_lite0/gradcam/espresso.webp",
                  "attribution/efficientnet_lite0/input/espresso.webp", "activity/efficientnet_lite0/espresso/stage3-mean.webp",
                  "images/espresso-thumb.webp"]
    for rel in table_only:
        f = save_image(photo, figs / rel)
        assert download_png(f) is None and not f.with_suffix(".png").exists(), rel
    for rel in ["dgn_am/efficientnet_lite0/classes/281.webp", "dgn_am/efficientnet_lite0/stage3/7.webp",
                "dgn_am/reconstructions.webp", "compare/images/espresso.webp", "images/espresso.webp", "home/comparison.webp"]:
        assert download_png(figs / rel) == (figs / rel).with_suffix(".png"), rel
    other = save_image(photo, tmp_path / "elsewhere/espresso.webp")
    assert download_png(other) is None and not other.with_suffix(".png").exists()
    # one figure, not two
    assert "attribution/efficientnet_lite0/neurons/stage3.webp" in figures_in(figs) and not any(
        r.endswith(".png") for r in figures_in(figs))
    line = caption_html(describe("attribution/efficientnet_lite0/neurons/stage3.webp", MANIFEST),
                        "../figures/attribution/x/stage3.webp", png=True)
    assert 'href="../figures/attribution/x/stage3.png"' in line and "Download (PNG)" in line
    assert "Download (SVG)" in caption_html(describe("findings/m/cascade.svg", MANIFEST), "a.svg")
    assert "Download (WebP)" in caption_html(describe("atlas/m/l/0-top.webp", MANIFEST), "a/0-top.webp")
    write_manifest(figs, list(MANIFEST["images"].values()), list(MANIFEST["models"].values()))
    out = tmp_path / "pack"
    assert main(["export", "--figures", str(figs), "--out", str(out)]) == 0
    assert (out / "attribution/efficientnet_lite0/neurons/stage3.png").read_bytes() == twin.read_bytes()
    with Image.open(out / "atlas/efficientnet_lite0/stage3/0-top.png") as im, \
            Image.open(figs / "atlas/efficientnet_lite0/stage3/0-top.webp") as shown:
        assert im.format == "PNG" and np.array_equal(np.asarray(im.convert("RGB")), np.asarray(shown.convert("RGB")))


def test_hook_makes_the_png_of_a_figure_shown_with_a_download_line_that_has_none(tmp_path):
    """Should a page show a table-only picture (no PNG from the generator) outside a table, the
    MkDocs hook writes its PNG into the built site and links it; docs_dir stays as it was."""
    import importlib.util
    from types import SimpleNamespace

    import numpy as np

    from generator.figure_files import save_image

    spec = importlib.util.spec_from_file_location("figures_hook", Path(__file__).resolve().parents[1] / "site_src/hooks/figures.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    docs, site = tmp_path / "docs", tmp_path / "site"
    figs = docs / "generated/figures"
    rel = "attribution/efficientnet_lite0/gradcam/espresso.webp"
    save_image(np.full((20, 30, 3), 90, np.uint8), figs / rel)
    save_image(np.full((20, 30, 3), 90, np.uint8), figs / "images/espresso.webp")
    before = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*"))
    page = SimpleNamespace(file=SimpleNamespace(src_uri="generated/images/espresso.md"))
    html = (f'<p><img alt="a" src="../figures/{rel}"></p><p><img alt="b" src="../figures/images/espresso.webp"></p>'
            f'<table><tr><td><img alt="c" src="../figures/{rel}"></td></tr></table>')
    out = hook.on_page_content(html, page=page, config={"docs_dir": str(docs), "site_dir": str(site)}, files=None)
    assert out.count("Download (PNG)") == 2 and out.count("figure-dl") == 2  # none in the table cell
    assert f'href="../figures/{rel[:-5]}.png"' in out and 'href="../figures/images/espresso.png"' in out
    made = site / "generated/figures" / rel.replace(".webp", ".png")
    with Image.open(made) as im:
        assert im.format == "PNG" and im.size == (30, 20)
    assert not (site / "generated/figures/images/espresso.png").exists()  # the generator's PNG is used there
    assert sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*")) == before


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


def test_a_plot_under_figures_downloads_as_pdf_with_the_same_bytes_every_time(tmp_path):
    """LaTeX takes PDF, not SVG: every SVG plot under a figures folder gets a PDF twin (findings plots and the
    colour bar alike), byte-identical when drawn again; the line under it links the PDF first, then the SVG;
    the export takes both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generator.figure_files import save_plot
    from generator.figures import caption_html, describe
    from generator.metrics import plots
    from generator.render import colour_bar
    from generator.util import download_pdf

    figs = tmp_path / "figures"

    def plot(path):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 2])
        ax.set_title("deletion")
        plots.save(fig, path)

    plot(figs / "findings/m/cascade.svg")
    pdf = figs / "findings/m/cascade.pdf"
    first = pdf.read_bytes()
    assert first.startswith(b"%PDF") and b"CreationDate" not in first
    plot(tmp_path / "again/figures/findings/m/cascade.svg")
    assert (tmp_path / "again/figures/findings/m/cascade.pdf").read_bytes() == first
    save_plot(colour_bar("scale"), figs / "attribution/colorbar.svg")
    assert (figs / "attribution/colorbar.pdf").read_bytes().startswith(b"%PDF")
    plot(tmp_path / "elsewhere/p.svg")  # outside a figures folder: no twin
    assert download_pdf(tmp_path / "elsewhere/p.svg") is None and not (tmp_path / "elsewhere/p.pdf").exists()
    assert download_pdf(figs / "findings/m/cascade.webp") is None
    line = caption_html(describe("findings/m/cascade.svg", MANIFEST), "../f/cascade.svg", pdf=True)
    assert line.index('href="../f/cascade.pdf" download>Download (PDF)') < line.index('href="../f/cascade.svg"')
    out = tmp_path / "pack"
    assert main(["export", "--figures", str(figs), "--out", str(out), "--method", "findings"]) == 0
    assert (out / "findings/m/cascade.pdf").read_bytes() == first
