"""Attribution stage: saliency, deconvnet, guided backprop, Grad-CAM, guided Grad-CAM,
SmoothGrad, Integrated Gradients and occlusion for every model × image, plus
Zeiler & Fergus single-neuron deconvnet projections.

Pages it adds to:

* ``models/<model>``: "Attribution" — comparison grid (rows = images, columns =
  methods) with one colour bar; "Deconvnet: single neurons" — per layer a grid of
  projections beside the image patches (receptive fields) that caused them.
* ``images/<id>``: "Attribution" — rows = models, columns = methods, with each
  model's top-1 prediction and probability, the explained class and the true class.
* ``methods/<method>``: explanation, formula, paper, settings, gallery across models
  (and, for deconvnet, the neuron-level figures; for IG, the completeness check).

Config (``[attribution]`` in data/config.toml; all optional)::

    methods = ["saliency", "deconvnet", ...]   # default: all eight
    gallery_images = 6        # images shown on each method page
    neurons = 6               # single-neuron deconvnet: neurons per image and layer
    neuron_images = 6         # ... for this many images (the first ones)
    neuron_layers = 3         # ... in this many layers, spread over the model's layers (first one skipped)
    neuron_rules = ["deconvnet", "guided"]   # projections shown beside each patch
    batch_size = 0            # perturbed copies per forward pass (0: [build].batch_size)
    [attribution.method_params.smoothgrad]   # per-method settings (see methods/attribution.py)
    samples = 25

``[models.<name>] deconv_layers = ["stage1", ...]`` picks the neuron layers by name.

Class explained per image: the manifest's ImageNet class when it has one, else the
model's top-1 prediction (``ctx.targets``). Every computed map is cached per (model
weights, method + settings, image, class, code version).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..methods.attribution import ATTRIBUTION_METHODS, AttributionMethod, make, normalize_for_display, to_rgb
from ..methods.neuron_deconv import project_activations, top_neurons
from ..render import colour_bar, colourise, grid, to_pil
from ..util import atomic_write_bytes, progress

CODE_VERSION = 2
ORDER = 30
# the galleries use these settings unless [attribution.method_params.<name>] says otherwise
GALLERY_PARAMS: dict[str, dict] = {
    "smoothgrad": {"samples": 25, "sigma": 0.15},
    # measured on EfficientNet-Lite0: completeness error 5–75 % at 32 steps, 3–28 % at 64, 1–7 % at 128
    "integrated_gradients": {"steps": 64, "baseline": "black"},
    "occlusion": {"window": 32, "stride": 16, "fill": 0.5},
}
SIGNED = ("deconvnet", "guided_backprop", "guided_gradcam")  # also shown as images (grey = 0)
TILE = 80
NORMALISATION = ("Every map is scaled by its own 99th percentile and clipped to [0, 1] (so a few extreme "
                 "pixels do not turn the rest black); scales are not comparable across maps or methods.")


# ---------------------------------------------------------------------------------
# small helpers


def _save(img: Image.Image, path: Path, quality: int = 85) -> None:
    """Encode as WebP and write only when the bytes differ (stable mtimes for `mkdocs serve`)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "WEBP", quality=quality, method=4)
    data = buf.getvalue()
    if path.exists() and path.read_bytes() == data:
        return
    atomic_write_bytes(path, data)


def _heat_image(h01: torch.Tensor) -> Image.Image:
    return to_pil(colourise(h01.float().cpu().numpy()))


def _u8(t: torch.Tensor) -> Image.Image:
    """3×H×W uint8 tensor → PIL."""
    return Image.fromarray(t.permute(1, 2, 0).contiguous().numpy())


def settings(cfg: dict) -> dict:
    methods = list(cfg.get("methods") or ATTRIBUTION_METHODS)
    for m in methods:
        if m not in ATTRIBUTION_METHODS:
            raise ValueError(f"[attribution].methods: unknown method {m!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    rules = list(cfg.get("neuron_rules") or ["deconvnet", "guided"])
    for r in rules:
        if r not in ("deconvnet", "guided", "gradient"):
            raise ValueError(f"[attribution].neuron_rules: unknown rule {r!r} (deconvnet, guided, gradient)")
    user = dict(cfg.get("method_params", {}))
    params = {m: {**GALLERY_PARAMS.get(m, {}), **dict(user.get(m, {}))} for m in methods}
    return {
        "methods": methods,
        "params": params,
        "gallery_images": int(cfg.get("gallery_images", 6)),
        "neurons": int(cfg.get("neurons", 6)),
        "neuron_images": int(cfg.get("neuron_images", 6)),
        "neuron_layers": int(cfg.get("neuron_layers", 3)),
        "neuron_rules": rules,
        "batch_size": int(cfg.get("batch_size", 0) or 0),
    }


def neuron_layers(ctx, model, count: int) -> list[str]:
    named = ctx.config.model_section(model.name).get("deconv_layers")
    if named:
        for n in named:
            model.spec.layer(n)
        return list(named)
    conv = [n for n in ctx.layers(model) if model.spec.layer(n).kind == "conv"]
    if count <= 0 or not conv:
        return []
    if len(conv) > count:
        conv = conv[1:]  # the first layer's fields are a few pixels wide: nothing to see
    if count >= len(conv):
        return conv
    idx = np.linspace(0, len(conv) - 1, count).round().astype(int)
    return [conv[i] for i in sorted(set(idx.tolist()))]


# ---------------------------------------------------------------------------------
# computation (cached, batched over the images that miss)


def _maps(ctx, model, name: str, method: AttributionMethod, targets: torch.Tensor) -> list[dict]:
    keys = [{"what": "attribution", "v": CODE_VERSION, "model": model.cache_id, "method": name,
             "params": method.params, "image": it.sha256, "input": model.spec.preprocess.key,
             "target": int(t)} for it, t in zip(ctx.images, targets)]

    def compute(idx: list[int]) -> list[dict]:
        out: list[dict] = []
        bar = progress(total=len(idx), desc=f"{name} {model.name}", unit="img")
        try:
            for s in range(0, len(idx), ctx.batch_size):
                part = idx[s : s + ctx.batch_size]
                x = ctx.batch(model, [ctx.images[i] for i in part])
                t = targets[part].to(x.device)
                a = method.attribute(x, t)
                heat = method.heatmap(a).float()
                rgb = (to_rgb(a) * 255).round().to(torch.uint8).cpu() if name in SIGNED else None
                extra = {}
                if name == "integrated_gradients":
                    chk = method.completeness(x, t, a)
                    extra = {k: v.float().cpu() for k, v in chk.items()}
                for j in range(len(part)):
                    r = {"heatmap": heat[j].cpu().to(torch.bfloat16).clone(), "target": int(t[j])}
                    if rgb is not None:
                        r["rgb"] = rgb[j].clone()
                    for k, v in extra.items():
                        r[k] = float(v[j])
                    out.append(r)
                bar.update(len(part))
        finally:
            bar.close()
        return out

    return ctx.cache.batched(keys, compute)


def _neurons(ctx, model, layer: str, items, k: int, rules: list[str]) -> list[dict]:
    """Top-k neurons of ``layer`` per image, their projections (one per rule: deconvnet,
    guided backprop) and the image patches, all cropped to the unit's receptive field and
    resized to TILE. Fields that fit in the image are padded with grey at the border (so
    border units keep their geometry); larger ones are clipped to the image."""
    from ..receptive_field import crop_patch, receptive_field_boxes

    keys = [{"what": "deconv-neurons", "v": CODE_VERSION, "model": model.cache_id, "layer": layer, "k": k, "rules": rules,
             "image": it.sha256, "input": model.spec.preprocess.key, "tile": TILE}
            for it in items]
    module = model.module(layer)
    S = model.spec.input_size

    def compute(idx: list[int]) -> list[dict]:
        out: list[dict] = []
        for s in range(0, len(idx), ctx.batch_size):
            part = idx[s : s + ctx.batch_size]
            x = ctx.batch(model, [items[i] for i in part])
            picks, values = top_neurons(model.net, module, x, k, batch_size=ctx.batch_size)
            shown = [project_activations(model.net, module, x, picks, rule=r, batch_size=ctx.batch_size).cpu()
                     for r in rules]
            pos = picks[:, 2:4].cpu()
            boxes = receptive_field_boxes(model.net, module, (S, S), pos)
            full = receptive_field_boxes(model.net, module, (S, S), pos, clip=False)
            xc = x.cpu()
            for j in range(len(part)):
                rows = (picks[:, 0] == j).nonzero()[:, 0].cpu()
                tiles: list[list[torch.Tensor]] = [[] for _ in range(len(rules) + 1)]
                for r in rows.tolist():
                    pad = full[r].tolist()
                    if pad[2] - pad[0] > S or pad[3] - pad[1] > S:
                        pad = None
                    for q, (src, dst) in enumerate(zip([sh[r] for sh in shown] + [xc[j]], tiles)):
                        if q < len(shown):  # projection: scaled inside its own field, grey = 0
                            crop = to_rgb(crop_patch(src, boxes[r].tolist(), pad, fill=0.0)[None])[0]
                        else:
                            crop = crop_patch(src, boxes[r].tolist(), pad, fill=0.5)
                        crop = F.interpolate(crop[None], size=(TILE, TILE), mode="bilinear", align_corners=False,
                                             antialias=True)[0]
                        dst.append((crop.clamp(0, 1) * 255).round().to(torch.uint8))
                out.append({"picks": picks[rows].cpu()[:, 1:].clone(), "values": values[rows].float().cpu().clone(),
                            "boxes": boxes[rows].clone(), "proj": torch.stack([torch.stack(t) for t in tiles[:-1]]),
                            "patch": torch.stack(tiles[-1])})
        return out

    return ctx.cache.batched(keys, compute)


def _swap_test(ctx, model, made: dict, targets: torch.Tensor) -> dict[str, float]:
    """How much does a map change when the *image* changes but the class stays?

    For the first two images: ``‖M(x₁, c₀) − M(x₀, c₀)‖ / ‖M(x₀, c₀)‖`` on the raw
    attributions. 0 means the method ignores the image (deconvnet on a network without
    max-pooling: every other step of its backward pass is independent of the input).
    """
    names = [n for n in ("saliency", "deconvnet", "guided_backprop") if n in made]
    if len(ctx.images) < 2 or not names:
        return {}
    items = ctx.images[:2]
    key = {"what": "attribution-swap", "v": CODE_VERSION, "model": model.cache_id,
           "images": [it.sha256 for it in items], "target": int(targets[0]),
           "methods": {n: made[n].params for n in names}}

    def compute() -> dict[str, float]:
        x = ctx.batch(model, items)
        out = {}
        for n in names:
            a = made[n].attribute(x, int(targets[0]))
            out[n] = float((a[1] - a[0]).norm() / a[0].norm().clamp(min=1e-30))
        return out

    return ctx.cache.get_or_compute(key, compute)


# ---------------------------------------------------------------------------------
# figures


def _neuron_figure(ctx, model, layer: str, items, res: list[dict], path: Path) -> None:
    tiles, labels = [], []
    k = max((len(r["picks"]) for r in res), default=0)
    for it, r in zip(items, res):
        x = ctx.batch(model, [it])[0].cpu()
        im = to_pil(x)
        d = ImageDraw.Draw(im)
        for (y0, x0, y1, x1), (c, _, _) in zip(r["boxes"].tolist(), r["picks"].tolist()):
            d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0), width=2)
        tiles.append(im)
        labels.append(it.id)
        nr = len(r["proj"])
        for n in range(k):
            if n < len(r["picks"]):
                tiles += [_u8(r["proj"][q][n]) for q in range(nr)] + [_u8(r["patch"][n])]
                labels += [f"ch {int(r['picks'][n][0])}"] + [""] * (nr - 1) + [f"{float(r['values'][n]):.3g}"]
            else:
                tiles += [Image.new("RGB", (TILE, TILE), (255, 255, 255))] * (nr + 1)
                labels += [""] * (nr + 1)
    per = (len(res[0]["proj"]) + 1) if res else 2
    if tiles:
        _save(grid(tiles, 1 + per * k, TILE + 16, labels=labels), path)


# ---------------------------------------------------------------------------------
# stage


def run(ctx) -> None:
    s = settings(ctx.config.section("attribution"))
    methods = s["methods"]
    copy_batch = s["batch_size"] or ctx.batch_size
    bar_path = ctx.figure_path("attribution/colorbar.svg")
    if not bar_path.exists():
        colour_bar(bar_path, "each map: 0 → its 99th percentile (and above)")

    per_model: dict[str, dict] = {}
    for model in ctx.models:
        logits = ctx.logits(model)
        probs = logits.softmax(1) if len(logits) else logits
        targets = ctx.targets(model)
        made = {n: make(n, model, batch_size=copy_batch, **s["params"][n]) for n in methods}
        results = {}
        with ctx.timer.stage("attribution maps"):
            for n, m in made.items():
                results[n] = _maps(ctx, model, n, m, targets)
        # figures: heatmap per (model, method, image), signed view for pixel-space methods, input crop
        for i, it in enumerate(ctx.images):
            _save(to_pil(ctx.batch(model, [it])[0]), ctx.figure_path(f"attribution/{model.name}/input/{it.id}.webp"))
        for n in methods:
            heats = torch.stack([r["heatmap"].float() for r in results[n]]) if ctx.images else torch.empty(0)
            shown = normalize_for_display(heats) if len(heats) else heats
            for it, h, r in zip(ctx.images, shown, results[n]):
                _save(_heat_image(h), ctx.figure_path(f"attribution/{model.name}/{n}/{it.id}.webp"))
                if "rgb" in r:
                    _save(_u8(r["rgb"]), ctx.figure_path(f"attribution/{model.name}/{n}/{it.id}-rgb.webp"))
        rows = []
        for i, it in enumerate(ctx.images):
            top = int(probs[i].argmax())
            tgt = int(targets[i])
            rows.append({"it": it, "pred": model.labels[top], "pred_index": top, "prob": float(probs[i, top]),
                         "target": model.labels[tgt], "target_index": tgt, "target_prob": float(probs[i, tgt]),
                         "from_manifest": it.imagenet_index is not None})
        # single-neuron deconvnet
        nitems = ctx.images[: max(0, s["neuron_images"])]
        layers = neuron_layers(ctx, model, s["neuron_layers"]) if s["neurons"] > 0 and nitems else []
        neuron_figs = []
        with ctx.timer.stage("attribution neurons"):
            for layer in progress(layers, desc=f"deconv neurons {model.name}", unit="layer"):
                res = _neurons(ctx, model, layer, nitems, s["neurons"], s["neuron_rules"])
                rel = f"attribution/{model.name}/neurons/{layer}.webp"
                _neuron_figure(ctx, model, layer, nitems, res, ctx.figure_path(rel))
                neuron_figs.append({"layer": layer, "fig": rel})
        swap = _swap_test(ctx, model, made, targets)
        has_maxpool = any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)) for m in model.net.modules())
        completeness = None
        if "integrated_gradients" in results and results["integrated_gradients"]:
            err = torch.tensor([r["rel_error"] for r in results["integrated_gradients"]])
            completeness = {"mean": float(err.mean()), "median": float(err.median()), "max": float(err.max()),
                            "n": len(err), "steps": made["integrated_gradients"].params["steps"]}
        per_model[model.name] = {"model": model, "rows": rows, "neuron_figs": neuron_figs,
                                 "completeness": completeness, "params": {n: made[n].params for n in methods},
                                 "swap": swap, "has_maxpool": has_maxpool}

        page = f"models/{model.name}"
        ctx.section(page, "Attribution", ctx.render(
            "attribution/model.md.j2", model=model, rows=rows, methods=methods, classes=ATTRIBUTION_METHODS,
            normalisation=NORMALISATION, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
        if neuron_figs:
            ctx.section(page, "Deconvnet: single neurons", ctx.render(
                "attribution/neurons.md.j2", model=model, figs=neuron_figs, k=s["neurons"], n_images=len(nitems),
                rules=s["neuron_rules"], has_maxpool=has_maxpool,
                link=lambda t, page=page: ctx.link(page, t)), order=ORDER + 1)

    # image pages: rows = models, columns = methods
    for i, it in enumerate(ctx.images):
        page = f"images/{it.id}"
        mrows = [{"model": d["model"], **d["rows"][i]} for d in per_model.values()]
        if mrows:
            ctx.section(page, "Attribution", ctx.render(
                "attribution/image.md.j2", it=it, rows=mrows, methods=methods, classes=ATTRIBUTION_METHODS,
                normalisation=NORMALISATION, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)

    # method pages
    for order, n in enumerate(methods):
        cls = ATTRIBUTION_METHODS[n]
        page = f"methods/{n}"
        ctx.site.declare(page, cls.title, order=20 + order)
        gallery = ctx.images[: max(0, s["gallery_images"])]
        ctx.section(page, "", ctx.render(
            "attribution/method.md.j2", name=n, cls=cls, models=list(per_model.values()), items=gallery,
            signed=n in SIGNED, params=s["params"][n], normalisation=NORMALISATION, missing=ctx.missing,
            link=lambda t, page=page: ctx.link(page, t)), order=0)
