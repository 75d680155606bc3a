"""Activity stage: feature maps, top classes and chosen neurons, per model and image."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..methods.activity import Activity, summarise
from ..figure_files import draw
from ..render import maps_grid, overlay_row, overlay_thumb
from ..cache import key
from ..executor import compute, tick

ORDER = 20
PROVIDES: tuple[str, ...] = ()
NEEDS: tuple[str, ...] = ()
DEFAULTS = {
    "top_channels": 16,   # channels shown per layer (the most active on the image)
    "top_classes": 5,     # predictions listed per image
    "neurons": 3,         # chosen neurons per layer whose maps are drawn over the image
    "fixed_neurons": {},  # layer → channels always drawn (e.g. {stage3 = [1, 7]})
}


def settings(config) -> dict:
    s = config.table("activity", DEFAULTS)
    s["fixed_neurons"] = {k: [int(c) for c in v] for k, v in s["fixed_neurons"].items()}
    return s


def _compute(ctx, model, layers: list[str], settings: dict) -> list[dict]:
    """Per image: {layer: summary} + logits; cached per (model, image, settings), batched over misses."""
    keys = [key("activity", model=model, code=_activity_chunk, image=it.sha256, layers=layers, **settings)
            for it in ctx.images]
    res = compute(ctx, keys, _activity_chunk,
                  lambda idx: (model, layers, settings, ctx.batch_size, ctx.batch(model, [ctx.images[i] for i in idx])),
                  what=f"activity {model.name}")
    if res:  # the gradient stages need no second forward pass for the logits
        ctx.store_logits(model, ctx.images, torch.stack([r["logits"] for r in res]))
    return res


def _activity_chunk(model, layers: list[str], settings: dict, batch_size: int, x: torch.Tensor) -> list[dict]:
    """Layer summaries and logits of photos ``x``, forward only, in batches of ``batch_size``."""
    method = Activity(model.net, {n: model.module(n) for n in layers})
    fixed = settings["fixed_neurons"]
    x = x.to(model.device)
    results: list[dict] = []
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size]
        with torch.inference_mode():  # forward only
            acts, logits = method.record(xb)
        logits = logits.float().cpu()
        per_layer = {n: summarise(acts[n].cpu(), settings["top_channels"], settings["neurons"], fixed.get(n))
                     for n in layers}
        results.extend({"layers": {n: per_layer[n][j] for n in layers}, "logits": logits[j]} for j in range(len(xb)))
        tick(len(xb))
    return results


def _figures(ctx, model, it, res, layers) -> None:
    """Grid of top channels, chosen-neuron overlays and mean-map thumbnail per layer (skipped if present)."""
    x = ctx.batch(model, [it])[0].cpu()
    for n in layers:
        s = res["layers"][n]
        paths = [ctx.figure_path(f"activity/{model.name}/{it.id}/{n}{suffix}.webp", model=model.name, photo=it.id,
                                 layer=n, caption=f"Activity · {what}")
                 for suffix, what in (("", "top channels"), ("-neurons", "chosen neurons on the photo"),
                                      ("-mean", "mean activation on the photo"))]
        if all(p.exists() for p in paths):
            continue
        draw(paths[0], maps_grid, s["maps"], [f"ch {int(c)}" for c in s["channels"]],
             caption=f"{n}: activation, shared scale")
        labels = [f"ch {int(c)}  max {float(v):.3g}" for c, v in zip(s["neurons"], s["neuron_peak"])]
        draw(paths[1], overlay_row, x, s["neuron_maps"], labels, 160)
        draw(paths[2], overlay_thumb, x, s["mean_map"], 112)


def run(ctx) -> None:
    s = ctx.stage_settings("activity")
    top_classes = s["top_classes"]
    computed = {k: s[k] for k in ("top_channels", "neurons", "fixed_neurons")}  # what changes the results
    method_page = "methods/activity"
    ctx.declare(method_page, "Activity", order=10)
    ctx.section(method_page, "", ctx.render("activity/method.md.j2"), order=0)
    gallery = []
    for model in ctx.models:
        layers = ctx.layers(model)
        conv_layers = [n for n in layers if model.spec.layer(n).kind == "conv"]
        rows = []
        for it, res in zip(ctx.images, _compute(ctx, model, layers, computed)):
            _figures(ctx, model, it, res, layers)
            p, c = F.softmax(res["logits"], dim=0).topk(top_classes)
            preds = [{"label": model.labels[int(ci)], "index": int(ci), "prob": float(pi),
                      "true": it.imagenet_index == int(ci)} for pi, ci in zip(p, c)]
            page = f"images/{it.id}"
            ctx.section(page, f"{model.spec.title}: activity", ctx.render(
                "activity/image_model.md.j2", model=model, it=it, preds=preds, layers=layers,
                res=res, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
            rows.append({"it": it, "top1": preds[0]})
        known = [r for r in rows if r["it"].imagenet_index is not None]
        page = f"models/{model.name}"
        ctx.section(page, "Activity", ctx.render(
            "activity/model.md.j2", model=model, rows=rows, layers=conv_layers, n_known=len(known),
            n_correct=sum(r["top1"]["true"] for r in known), link=lambda t, page=page: ctx.link(page, t)),
            order=ORDER)
        gallery.append({"model": model, "rows": rows[:4], "layers": conv_layers})
    ctx.section(method_page, "Gallery across models", ctx.render(
        "activity/gallery.md.j2", gallery=gallery, link=lambda t: ctx.link(method_page, t)), order=ORDER)
