"""Compare stage: the same method on every model, side by side — does the architecture change what it shows?

Uses the attribution stage's maps (artifact ``attribution_maps``; no model work here) and writes

* ``methods/compare``: per method an images × models figure and, for every pair of models, the
  Spearman rank correlation of their maps (mean over the photos, with its spread and n);
  a summary table method × model pair first;
* ``images/<id>``: a models × methods figure of that photo.

Models see different crops at different sizes (their own preprocessing); every map is cut to the
view all models share and resampled to one size before it is shown or compared
(:mod:`generator.metrics.across_models`).

Config (``[compare]``)::

    images = 4      # photos in each method's images × models figure
"""
from __future__ import annotations

import numpy as np

from ..metrics.across_models import common_view, model_view, pair_similarity, to_common_view
from ..figure_files import draw
from ..render import labelled_grid, to_pil
from ..site import Headline

ORDER = 35  # image-page section after the attribution galleries
PAGE = "methods/compare"
#: "model_agreement": {"n": photos, "models": [titles], "methods": [{"name", "title", "mean"}] sorted by mean}
#: "compare_headlines": [site.Headline] for the home page (the most consistent method across models)
PROVIDES = ("model_agreement", "compare_headlines")
NEEDS = ("attribution_maps",)
DEFAULTS = {"images": 4, "tile": 112}


def settings(config) -> dict:
    s = config.table("compare", DEFAULTS)
    s["images"] = max(0, s["images"])
    return s


def run(ctx) -> None:
    s = ctx.stage_settings("compare")
    data = ctx.need("attribution_maps")
    models = list(data["models"].values())
    items, methods = data["items"], data["methods"]
    ctx.declare(PAGE, "Across models", order=19)
    ctx.provide("model_agreement", None)
    ctx.provide("compare_headlines", [])
    if len(models) < 2 or not items:
        ctx.section(PAGE, "", "Comparing models needs at least two models with weights and one photo; this build "
                              f"has {len(models)} model(s) and {len(items)} photo(s).", order=0)
        return
    by_name = {d["model"].name: d["model"] for d in models}
    views = {d["model"].name: model_view(d["model"].spec.input_size, d["model"].spec.resize_size) for d in models}
    view = common_view(list(views.values()))
    aligned = {m: {d["model"].name: to_common_view(d["heatmaps"][m], views[d["model"].name], view) for d in models}
               for m in methods}
    first = models[0]["model"]
    photos = to_common_view(ctx.batch(first, items).cpu(), views[first.name], view)
    photo_tiles = [to_pil(p) for p in photos]
    titles = [d["model"].spec.title for d in models]
    tile = s["tile"]

    sections, summary = [], []
    shown = items[: s["images"]]
    for m in methods:
        rel = f"compare/{m}.webp"
        rows = [[photo_tiles[i]] + [aligned[m][d["model"].name][i] for d in models] for i in range(len(shown))]
        draw(ctx.figure_path(rel, method=m, caption=f"Across models · {data['titles'][m]} maps of {', '.join(titles)}"),
             labelled_grid, rows, ["photo", *titles], [it.title for it in shown], tile)
        pairs = []
        for (a, b), rho in pair_similarity(aligned[m]).items():
            r = rho.numpy()
            pairs.append({"a": by_name[a].spec.title, "b": by_name[b].spec.title,
                          "mean": float(np.mean(r)), "sd": float(np.std(r, ddof=1)) if len(r) > 1 else 0.0,
                          "n": len(r)})
        summary.append({"name": m, "title": data["titles"][m], "pairs": pairs,
                        "mean": float(np.mean([p["mean"] for p in pairs]))})
        sections.append({"name": m, "title": data["titles"][m], "fig": rel, "pairs": pairs})
    ctx.provide("model_agreement", {
        "n": len(items), "models": titles,
        "methods": sorted(({"name": r["name"], "title": r["title"], "mean": r["mean"]} for r in summary),
                          key=lambda r: -r["mean"])})
    best = max(summary, key=lambda r: r["mean"], default=None)
    ctx.provide("compare_headlines", [] if best is None else [Headline(
        f"{best['mean']:.2f}", f"rank correlation between models' {best['title']} maps, the most consistent method",
        "methods/compare")])
    ctx.section(PAGE, "", ctx.render(
        "compare/page.md.j2", sections=sections, summary=summary, models=[d["model"] for d in models],
        view=view, views=views, n=len(items), n_shown=len(shown), link=lambda t: ctx.link(PAGE, t)), order=0)

    for i, it in enumerate(items):
        rel = f"compare/images/{it.id}.webp"
        rows = [[photo_tiles[i]] + [aligned[m][d["model"].name][i] for m in methods] for d in models]
        draw(ctx.figure_path(rel, photo=it.id, caption=f"Across models · every method's map on {', '.join(titles)}"),
             labelled_grid, rows, ["photo", *[data["short"][m] for m in methods]], titles, tile)
        page = f"images/{it.id}"
        ctx.section(page, "Across models", ctx.render(
            "compare/image.md.j2", it=it, fig=ctx.link(page, f"figures/{rel}"), models=[d["model"] for d in models],
            view=view, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
