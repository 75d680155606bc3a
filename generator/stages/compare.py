"""Compare stage: the same method on every model, side by side — does the architecture change what it shows?

Uses the attribution stage's maps (artifact ``attribution_maps``; no model work here) and writes

* ``methods/compare``: per method an images × models figure and, for every pair of models, the
  Spearman rank correlation of their maps (mean over the photos, with its spread and n);
  a summary table method × model pair first, with per method the agreement per photo (mean over the
  pairs) averaged over the photos with its 95 % bootstrap interval, and the sentence that names the
  most consistent method only where a paired interval separates it at n ≥ ``[findings] min_n``
  (else "tied", or no ranking: :func:`generator.metrics.verdicts.consistency`);
* ``images/<id>``: a models × methods figure of that photo.

Models see different crops at different sizes (their own preprocessing); every map is cut to the
view all models share and resampled to one size before it is shown or compared
(:mod:`generator.metrics.across_models`).

Config (``[compare]``)::

    images = 4      # photos in each method's images × models figure
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..metrics.across_models import (Agreement, agreement, common_view, model_view, pair_similarity,
                                     per_photo_agreement, to_common_view)
from ..metrics.bootstrap import fmt
from ..metrics.verdicts import Consistency, consistency, rules
from ..figure_files import draw
from ..render import labelled_grid, to_pil
from ..site import Headline

ORDER = 35  # image-page section after the attribution galleries
PAGE = "methods/compare"
#: "model_agreement": {"n": photos, "models": [titles], "ranked", "verdict" (the sentences), "best" (title or None),
#: "tied" ([titles]), "methods": [{"name", "title", "mean", "interval"}] sorted by mean}
#: "compare_headlines": [site.Headline] for the home page (the most consistent method across models, the
#: tied ones, or "not ranked": :func:`generator.metrics.verdicts.consistency`)
PROVIDES = ("model_agreement", "compare_headlines")
NEEDS = ("attribution_maps",)
DEFAULTS = {"images": 4, "tile": 112}


def settings(config) -> dict:
    s = config.table("compare", DEFAULTS)
    s["images"] = max(0, s["images"])
    return s


def summarise(per_photo: Mapping[str, object], titles: Mapping[str, str],
              findings: Mapping) -> tuple[Agreement, Consistency]:
    """Per method its agreement between models (per photo: the mean over model pairs of their Spearman)
    with a 95 % bootstrap interval, and what may be said about it: a most / least consistent method only
    where a paired interval separates it, at n ≥ ``[findings] min_n`` (``findings``: that table; its seed)."""
    ag = agreement(per_photo, titles, min_n=rules(findings)["min_n"], seed=int(findings.get("seed", 0)))
    return ag, consistency(ag)


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

    sections, summary, per_photo = [], [], {}
    shown = items[: s["images"]]
    for m in methods:
        rel = f"compare/{m}.webp"
        rows = [[photo_tiles[i]] + [aligned[m][d["model"].name][i] for d in models] for i in range(len(shown))]
        draw(ctx.figure_path(rel, method=m, caption=f"Across models · {data['titles'][m]} maps of {', '.join(titles)}"),
             labelled_grid, rows, ["photo", *titles], [it.title for it in shown], tile)
        pairs = []
        rhos = pair_similarity(aligned[m])
        for (a, b), rho in rhos.items():
            r = rho.numpy()
            pairs.append({"a": by_name[a].spec.title, "b": by_name[b].spec.title,
                          "mean": float(np.mean(r)), "sd": float(np.std(r, ddof=1)) if len(r) > 1 else 0.0,
                          "n": len(r)})
        per_photo[m] = per_photo_agreement(rhos)
        summary.append({"name": m, "title": data["titles"][m], "pairs": pairs})
        sections.append({"name": m, "title": data["titles"][m], "fig": rel, "pairs": pairs})
    ag, said = summarise(per_photo, data["titles"], ctx.stage_settings("findings"))
    for row, r in zip(summary, ag.rows):
        row.update(mean=r["mean"], interval=r["interval"], gap=ag.best.gaps.get(r["title"]) if ag.best else None,
                   tied=bool(ag.best) and r["title"] in ag.best.tied)
    ctx.provide("model_agreement", {
        "n": len(items), "models": titles, "ranked": ag.ranked, "verdict": " ".join(said.sentences),
        "best": said.best, "tied": said.tied,
        "methods": sorted(({"name": r["name"], "title": r["title"], "mean": r["mean"],
                            "interval": r["interval"].as_dict()} for r in ag.rows), key=lambda r: -r["mean"])})
    ctx.provide("compare_headlines", [] if said.value is None else [Headline(said.value, said.label, PAGE)])
    ctx.section(PAGE, "", ctx.render(
        "compare/page.md.j2", sections=sections, summary=summary, models=[d["model"] for d in models],
        view=view, views=views, n=len(items), n_shown=len(shown), ag=ag, said=said, ci=fmt,
        link=lambda t: ctx.link(PAGE, t)), order=0)

    for i, it in enumerate(items):
        rel = f"compare/images/{it.id}.webp"
        rows = [[photo_tiles[i]] + [aligned[m][d["model"].name][i] for m in methods] for d in models]
        draw(ctx.figure_path(rel, photo=it.id, caption=f"Across models · every method's map on {', '.join(titles)}"),
             labelled_grid, rows, ["photo", *[data["short"][m] for m in methods]], titles, tile)
        page = f"images/{it.id}"
        ctx.section(page, "Across models", ctx.render(
            "compare/image.md.j2", it=it, fig=ctx.link(page, f"figures/{rel}"), models=[d["model"] for d in models],
            view=view, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
