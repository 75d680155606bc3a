"""Overview stage: home status, model pages (architecture, layer catalogue), image pages."""
from __future__ import annotations

from pathlib import Path

import torch

from ..cache import key
from ..executor import compute
from ..figures import write_manifest
from ..methods.base import output_shapes
from ..models import build_architecture, get_spec
from ..figure_files import save_image

ORDER = 10


def _layer_shapes(ctx, spec, net_body=None) -> dict:
    """``{"shapes": {layer: output shape without the batch}, "params": count}`` for a model's
    catalogued layers, from one blank forward pass (cached). A model without weights is built
    on the meta device: shapes and counts without initialising (VGG16: ~10 s → 0.3 s)."""
    k = key("layer-shapes", model=spec, code=_layer_shapes, layers=[(l.name, l.path) for l in spec.layers])

    def shapes(_idx: list[int]) -> list[dict]:
        if net_body is not None:
            body = net_body
        else:
            with torch.device("meta"):
                body = build_architecture(spec).eval()
        modules = {layer.name: body.get_submodule(layer.path) for layer in spec.layers}
        out = {name: list(shape) for name, shape in output_shapes(body, modules, spec.input_size).items()}
        return [{"shapes": out, "params": sum(p.numel() for p in body.parameters())}]

    return compute(ctx, [k], shapes, lambda idx: (idx,), what=f"layer shapes {spec.name}", unit=1, here=True)[0]


def run(ctx) -> None:
    site = ctx.site
    site.declare("home", "Home")
    site.declare("models/index", "Models", order=0,
                 intro="Every model the build was asked for, with its status. Models whose weights were not found "
                       "are listed with what is missing; nothing on this site is computed with substitute weights.")
    site.declare("images/index", "Images", order=0, intro="The photos the galleries are computed on, with their credits.")
    site.declare("methods/index", "Methods", order=0, intro="One page per visualisation method: what it is, the paper, "
                                                           "its gallery across models and, for the attribution methods, "
                                                           "how it fares in the sanity checks and the faithfulness test "
                                                           "([Findings](../findings/index.md)).")

    # ---- models ---------------------------------------------------------------
    rows = []
    for m in ctx.models:
        info = _layer_shapes(ctx, m.spec, m.net.body)
        page = f"models/{m.name}"
        site.declare(page, m.spec.title, order=ORDER)
        site.section(page, "Architecture", ctx.render(
            "overview/model.md.j2", spec=m.spec, model=m, info=info, missing=False,
            weights_file=Path(m.weights_path).name if m.weights_path else "", layers=ctx.layers(m)), order=0)
        rows.append({"spec": m.spec, "link": ctx.link("models/index", page), "status": "real ImageNet weights",
                     "params": info["params"]})
    for name, reason in ctx.missing.items():
        spec = get_spec(name)
        info = _layer_shapes(ctx, spec)
        page = f"models/{name}"
        site.declare(page, f"{spec.title} (weights missing)", order=ORDER + 1)
        site.section(page, "Architecture", ctx.render(
            "overview/model.md.j2", spec=spec, model=None, info=info, missing=True,
            layers=list(spec.default_layers), weights_file=spec.weights_file or ""), order=0)
        rows.append({"spec": spec, "link": ctx.link("models/index", page), "status": "**weights missing**",
                     "params": info["params"]})
    site.section("models/index", "", ctx.render("overview/models_index.md.j2", rows=rows), order=0)

    # ---- images ---------------------------------------------------------------
    thumbs = []
    for it in ctx.images:
        big = ctx.figure_path(f"images/{it.id}.webp", photo=it.id)
        thumb = ctx.figure_path(f"images/{it.id}-thumb.webp", photo=it.id)
        if not big.exists() or not thumb.exists():
            im = it.pil.copy()
            im.thumbnail((512, 512))
            save_image(im, big)
            im.thumbnail((160, 160))
            save_image(im, thumb)
        page = f"images/{it.id}"
        site.declare(page, it.title, order=ORDER)
        site.section(page, "", ctx.render("overview/image.md.j2", it=it,
                                          src=ctx.link(page, f"figures/images/{it.id}.webp")), order=0)
        thumbs.append({"it": it, "thumb": ctx.link("images/index", f"figures/images/{it.id}-thumb.webp"),
                       "link": ctx.link("images/index", page)})
    site.section("images/index", "", ctx.render("overview/images_index.md.j2", thumbs=thumbs,
                                                skipped=ctx.skipped), order=0)

    # what each figure shows and whose photo it is (captions, download links, `generator export`)
    write_manifest(ctx.site.out / "figures",
                   [{"id": it.id, "title": it.title, "author": it.author, "license": it.license, "source": it.source,
                     "url": it.url} for it in ctx.images],
                   [{"name": s.name, "title": s.title, "layers": [l.name for l in s.layers]}
                    for s in [m.spec for m in ctx.models] + [get_spec(n) for n in ctx.missing]])

    # ---- home -----------------------------------------------------------------
    site.section("home", "", ctx.render(
        "overview/home.md.j2", models=ctx.models, missing=[get_spec(n) for n in ctx.missing], n_images=len(ctx.images),
        skipped=ctx.skipped, link=lambda t: ctx.link("home", t), get_spec=get_spec,
        stages=list(ctx.config["stages"]), device=str(ctx.device), profile=ctx.config.profile), order=0)
