"""Attribution stage: every method of ``ATTRIBUTION_METHODS`` (saliency, deconvnet, guided
backprop, Grad-CAM, guided Grad-CAM, SmoothGrad, Integrated Gradients, occlusion,
SmoothGrad², VarGrad) for every model × image, plus Zeiler & Fergus single-neuron
deconvnet projections. What a method needs shown (signed view, layer, self-check,
notes, extra sections) is read from its class, never from its name.

Pages it adds to:

* ``models/<model>``: "Attribution" — comparison grid (rows = images, columns =
  methods) with one colour bar; "Deconvnet: single neurons" — per layer a grid of
  projections beside the image patches (receptive fields) that caused them.
* ``images/<id>``: "Attribution" — rows = models, columns = methods, with each
  model's top-1 prediction and probability, the explained class and the true class.
* ``methods/<method>``: explanation, formula, paper, settings, gallery across models,
  and what the class declares: notes, the signed view, its layers, its self-check
  (IG's completeness), extra sections (the swap test, the neuron-level figures).

Config (``[attribution]`` in data/config.toml; all optional)::

    methods = ["saliency", "deconvnet", ...]   # default: every registered method
    gallery_images = 6        # images shown on each method page
    neurons = 6               # single-neuron deconvnet: neurons per image and layer
    neuron_images = 6         # ... for this many images (the first ones)
    neuron_layers = 3         # ... in this many layers, spread over the model's layers (first one skipped)
    neuron_rules = ["deconvnet", "guided"]   # projections shown beside each patch
    batch_size = 0            # perturbed copies per forward pass (0: [build].batch_size)
    chunk_images = 4          # photos per cache step: a killed build redoes at most this many per method (0: all at once)
    [attribution.method_params.smoothgrad]   # per-method settings over the class's gallery_params
    samples = 25

``[models.<name>] deconv_layers = ["stage1", ...]`` picks the neuron layers by name.

Class explained per image: the manifest's ImageNet class when it has one, else the
model's top-1 prediction (``ctx.targets``). Every computed map is cached per (model
weights, method + settings, image, class, code version) and stored as soon as its chunk
of ``chunk_images`` photos is done, so an interrupted build resumes inside a method. The
maps are handed on as the ``attribution_maps`` artifact (keys at ``PROVIDES``).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import profiles
from ..cache import key
from ..config import ConfigError
from ..executor import compute, tick
from ..methods.attribution import ATTRIBUTION_METHODS, AttributionMethod, make
from ..methods.neuron_deconv import project_top_neurons
from ..receptive_field import receptive_field_boxes
from ..figure_files import draw, save_image, save_plot
from ..render import colour_bar, field_tile, heatmap_image, neuron_figure, signed_to_rgb, to_pil, to_uint8
from ..util import progress

ORDER = 30
#: "attribution_maps": {"methods", "items", "titles", "short" (column headers),
#:     "models": {name: {"model",
#:                       "heatmaps": {method: N×H×W float32 at the model's input size, rounded through
#:                                    bfloat16: exactly what the figures show},
#:                       "exact":    {method: N×H×W float32 = method.explain(x, targets), not rounded},
#:                       "targets":  LongTensor[N], the class each map explains (ctx.targets),
#:                       "params":   {method: the settings the maps were made with}}}}
PROVIDES = ("attribution_maps",)
NEEDS: tuple[str, ...] = ()
TILE = 80
NORMALISATION = ("Every map is scaled by its own 99th percentile and clipped to [0, 1] (so a few extreme "
                 "pixels do not turn the rest black); scales are not comparable across maps or methods.")


DEFAULTS = {
    "methods": [],          # default: every method in ATTRIBUTION_METHODS
    "gallery_images": 6,
    "neurons": 6,
    "neuron_images": 6,
    "neuron_layers": 3,
    "neuron_rules": ["deconvnet", "guided"],
    "batch_size": 0,
    "chunk_images": 4,
    "method_params": {},
}


def settings(config) -> dict:
    s = config.table("attribution", DEFAULTS, choices={"methods": ATTRIBUTION_METHODS,
                                                       "neuron_rules": ("deconvnet", "guided", "gradient")})
    s["methods"] = list(s["methods"] or ATTRIBUTION_METHODS)
    unknown = set(s["method_params"]) - set(ATTRIBUTION_METHODS)
    if unknown:
        raise ConfigError(f"[attribution.method_params]: unknown method {sorted(unknown)[0]!r}; "
                          f"known: {', '.join(ATTRIBUTION_METHODS)}")
    sized = profiles.method_params(config.profile, "attribution")  # the profile's, under the config's own
    s["params"] = {m: {**ATTRIBUTION_METHODS[m].gallery_params, **sized.get(m, {}), **dict(s["method_params"].get(m, {}))}
                   for m in s["methods"]}
    return s


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


def _maps(ctx, model, name: str, method: AttributionMethod, targets: torch.Tensor, chunk: int = 0) -> list[dict]:
    """Per image: the heatmap (float32), the explained class, the signed view as uint8
    RGB (``rgb``, methods with ``signed_view``) and the self-check's numbers.

    The photos go through the method ``chunk`` at a time (0: all at once, in batches of
    ``ctx.batch_size``); each chunk's results are stored before the next one starts, so
    an interrupted build computes only the photos it has no result for."""
    keys = [key("attribution", model=model, code=_maps_chunk, method=name, params=method.params, image=it.sha256,
                target=int(t)) for it, t in zip(ctx.images, targets)]
    params = ctx.stage_settings("attribution")["params"][name]
    return compute(ctx, keys, _maps_chunk,
                   lambda idx: (model, name, params, method.batch_size, ctx.batch_size,
                                ctx.batch(model, [ctx.images[i] for i in idx]), targets[idx]),
                   what=f"{name} {model.name}", chunk=chunk)


def _shown(heatmap: torch.Tensor) -> torch.Tensor:
    """A heatmap as the figures show it: rounded through bfloat16 (as cached before version 3)."""
    return heatmap.to(torch.bfloat16).float()


def _map_batch(method: AttributionMethod, x: torch.Tensor, t: torch.Tensor) -> list[dict]:
    """The cached results of one batch (see :func:`_maps`)."""
    a = method.attribute(x, t)
    heat = method.heatmap(a).float()
    rgb = to_uint8(signed_to_rgb(a)).cpu() if method.signed_view else None
    extra = {}
    if method.self_check is not None:
        extra = {k: v.float().cpu() for k, v in method.check(x, t, a).items()}
    out = []
    for j in range(len(x)):
        r = {"heatmap": heat[j].cpu().clone(), "target": int(t[j])}
        if rgb is not None:
            r["rgb"] = rgb[j].clone()
        for k, v in extra.items():
            r[k] = float(v[j])
        out.append(r)
    return out


def _maps_chunk(model, name: str, params: dict, copy_batch: int, batch_size: int, x: torch.Tensor,
                targets: torch.Tensor) -> list[dict]:
    """The maps of a chunk of photos (inputs ``x``), in batches of ``batch_size``."""
    method = make(name, model, batch_size=copy_batch, **params)
    x, targets = x.to(model.device), targets.to(model.device)
    out: list[dict] = []
    for s in range(0, len(x), batch_size):
        out.extend(_map_batch(method, x[s : s + batch_size], targets[s : s + batch_size]))
        tick(len(x[s : s + batch_size]))
    return out


def _neurons(ctx, model, layer: str, items, k: int, rules: list[str]) -> list[dict]:
    """Top-k neurons of ``layer`` per image, their projections (one per rule: deconvnet,
    guided backprop) and the image patches, as tiles of each unit's receptive field
    (:func:`~generator.render.field_tile`)."""
    keys = [key("deconv-neurons", model=model, code=_neurons_chunk, layer=layer, k=k, rules=rules, image=it.sha256,
                tile=TILE) for it in items]
    return compute(ctx, keys, _neurons_chunk,
                   lambda idx: (model, layer, k, rules, ctx.batch_size, ctx.batch(model, [items[i] for i in idx])),
                   what=f"deconv neurons {model.name} {layer}")


def _neurons_chunk(model, layer: str, k: int, rules: list[str], batch_size: int, x: torch.Tensor) -> list[dict]:
    """The top-``k`` neurons of ``layer`` for photos ``x``, in batches of ``batch_size``."""
    module = model.module(layer)
    size = (model.spec.input_size, model.spec.input_size)
    x = x.to(model.device)
    out: list[dict] = []
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size]
        picks, values, projections = project_top_neurons(model.net, module, xb, k, rules, batch_size=batch_size)
        pos = picks[:, 2:4].cpu()
        boxes = receptive_field_boxes(model.net, module, size, pos)
        fields = receptive_field_boxes(model.net, module, size, pos, clip=False)
        xc = xb.cpu()
        for j in range(len(xb)):
            rows = (picks[:, 0] == j).nonzero()[:, 0].cpu().tolist()
            proj = torch.stack([torch.stack([field_tile(p[r], boxes[r].tolist(), fields[r].tolist(), TILE, signed=True)
                                             for r in rows]) for p in projections])
            patch = torch.stack([field_tile(xc[j], boxes[r].tolist(), fields[r].tolist(), TILE) for r in rows])
            out.append({"picks": picks[rows].cpu()[:, 1:].clone(), "values": values[rows].float().cpu().clone(),
                        "boxes": boxes[rows].clone(), "proj": proj, "patch": patch})
        tick(len(xb))
    return out


def _self_check_summary(method: AttributionMethod, results: list[dict]) -> dict:
    """Mean, median and max over the images of the method's self-check measure; for an adaptive setting the
    range used, the images under the tolerance and the sentence (:meth:`~..methods.attribution.SelfCheck.summarise`)."""
    return method.self_check.summarise(results, method.params)


def _swap_test(ctx, model, made: dict, targets: torch.Tensor) -> dict[str, float]:
    """How much does a map change when the *image* changes but the class stays?

    For the first two images: ``‖M(x₁, c₀) − M(x₀, c₀)‖ / ‖M(x₀, c₀)‖`` on the raw
    attributions. 0 means the method ignores the image (deconvnet on a network without
    max-pooling: every other step of its backward pass is independent of the input).
    """
    names = [n for n, m in made.items() if m.swap_test]
    if len(ctx.images) < 2 or not names:
        return {}
    items = ctx.images[:2]
    target = int(targets[0])
    settings = {n: ctx.stage_settings("attribution")["params"][n] for n in names}
    copy_batch = {n: made[n].batch_size for n in names}
    k = key("attribution-swap", model=model, code=_swap_chunk, images=[it.sha256 for it in items], target=target,
            methods={n: made[n].params for n in names})
    return compute(ctx, [k], _swap_chunk, lambda idx: (model, settings, copy_batch, target, ctx.batch(model, items)),
                   what=f"swap test {model.name}", unit=1)[0]


def _swap_chunk(model, params: dict, copy_batch: dict, target: int, x: torch.Tensor) -> list[dict[str, float]]:
    """The swap test's numbers (one result) for the two photos ``x``; ``params``: each method's settings."""
    x = x.to(model.device)
    out = {}
    for n, p in params.items():
        a = make(n, model, batch_size=copy_batch[n], **p).attribute(x, target)
        out[n] = float((a[1] - a[0]).norm() / a[0].norm().clamp(min=1e-30))
    return [out]


# ---------------------------------------------------------------------------------
# stage


def run(ctx) -> None:
    s = ctx.stage_settings("attribution")
    methods = s["methods"]
    copy_batch = s["batch_size"] or ctx.batch_size
    bar_path = ctx.figure_path("attribution/colorbar.svg",
                               caption="Attribution colour scale: each map from 0 to its 99th percentile (and above)")
    if not bar_path.exists():
        save_plot(colour_bar("each map: 0 → its 99th percentile (and above)"), bar_path)

    per_model: dict[str, dict] = {}
    for model in ctx.models:
        logits = ctx.logits(model)
        probs = logits.softmax(1) if len(logits) else logits
        targets = ctx.targets(model)
        made = {n: make(n, model, batch_size=copy_batch, **s["params"][n]) for n in methods}
        results = {}
        with ctx.timer.stage("attribution maps"):
            for n, m in made.items():
                results[n] = _maps(ctx, model, n, m, targets, s["chunk_images"])
        # figures: heatmap per (model, method, image), signed view for pixel-space methods, input crop
        for i, it in enumerate(ctx.images):
            save_image(to_pil(ctx.batch(model, [it])[0]), ctx.figure_path(
                f"attribution/{model.name}/input/{it.id}.webp", model=model.name, photo=it.id,
                caption="Attribution · the model's input (its crop of the photo)"))
        for n in methods:
            for it, r in zip(ctx.images, results[n]):
                draw(ctx.figure_path(
                    f"attribution/{model.name}/{n}/{it.id}.webp", model=model.name, photo=it.id, method=n,
                    caption=f"Attribution · {ATTRIBUTION_METHODS[n].title}"), heatmap_image, _shown(r["heatmap"]))
                if "rgb" in r:
                    save_image(to_pil(r["rgb"]), ctx.figure_path(
                        f"attribution/{model.name}/{n}/{it.id}-rgb.webp", model=model.name, photo=it.id, method=n,
                        caption=f"Attribution · {ATTRIBUTION_METHODS[n].title} · signed view (RGB)"))
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
                fig = neuron_figure([ctx.batch(model, [it])[0].cpu() for it in nitems], [it.id for it in nitems], res, TILE)
                if fig is not None:
                    save_image(fig, ctx.figure_path(rel, model=model.name, layer=layer, method="deconvnet",
                                                    caption="Attribution · single-neuron deconvnet projections"))
                neuron_figs.append({"layer": layer, "fig": rel})
        swap = _swap_test(ctx, model, made, targets)
        has_maxpool = any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)) for m in model.net.modules())
        self_checks = {n: _self_check_summary(made[n], results[n]) for n in methods if made[n].self_check and results[n]}
        per_model[model.name] = {"model": model, "rows": rows, "neuron_figs": neuron_figs,
                                 "self_checks": self_checks, "params": {n: made[n].params for n in methods},
                                 "swap": swap, "has_maxpool": has_maxpool,
                                 "targets": targets.clone(),
                                 "exact": {n: torch.stack([r["heatmap"].float() for r in results[n]])
                                           for n in methods if results[n]},
                                 "heatmaps": {n: torch.stack([_shown(r["heatmap"]) for r in results[n]])
                                              for n in methods if results[n]}}

        page = f"models/{model.name}"
        ctx.section(page, "Attribution", ctx.render(
            "attribution/model.md.j2", model=model, rows=rows, methods=methods, classes=ATTRIBUTION_METHODS,
            normalisation=NORMALISATION, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
        if neuron_figs:
            ctx.section(page, "Deconvnet: single neurons", ctx.render(
                "attribution/neurons.md.j2", model=model, figs=neuron_figs, k=s["neurons"], n_images=len(nitems),
                rules=s["neuron_rules"], has_maxpool=has_maxpool,
                link=lambda t, page=page: ctx.link(page, t)), order=ORDER + 1)

    ctx.provide("attribution_maps", {
        "methods": methods, "items": list(ctx.images), "titles": {n: ATTRIBUTION_METHODS[n].title for n in methods},
        "short": {n: ATTRIBUTION_METHODS[n].short or ATTRIBUTION_METHODS[n].title for n in methods},
        "models": {name: {"model": d["model"], "heatmaps": d["heatmaps"], "exact": d["exact"], "targets": d["targets"],
                          "params": d["params"]} for name, d in per_model.items()}})

    # image pages: rows = models, columns = methods
    for i, it in enumerate(ctx.images):
        page = f"images/{it.id}"
        mrows = [{"model": d["model"], **d["rows"][i]} for d in per_model.values()]
        if mrows:
            ctx.section(page, "Attribution", ctx.render(
                "attribution/image.md.j2", it=it, rows=mrows, methods=methods, classes=ATTRIBUTION_METHODS,
                normalisation=NORMALISATION, link=lambda t, page=page: ctx.link(page, t)), order=ORDER)

    # method pages
    swap_methods = [n for n in methods if ATTRIBUTION_METHODS[n].swap_test]
    for order, n in enumerate(methods):
        cls = ATTRIBUTION_METHODS[n]
        page = f"methods/{n}"
        ctx.declare(page, cls.title, order=20 + order)
        gallery = ctx.images[: max(0, s["gallery_images"])]
        models = [{**d, "self_check": d["self_checks"].get(n)} for d in per_model.values()]
        ctx.section(page, "", ctx.render(
            "attribution/method.md.j2", name=n, cls=cls, models=models, items=gallery, swap_methods=swap_methods,
            params=s["params"][n], normalisation=NORMALISATION, missing=ctx.missing,
            link=lambda t, page=page: ctx.link(page, t)), order=0)
