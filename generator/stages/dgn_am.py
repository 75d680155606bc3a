"""DGN-AM stage: what a unit "wants to see", through a learned image prior.

Per model (any model with real weights; the generator itself inverts EfficientNet-Lite0's
penultimate code and is independent of the target model):

* class visualisations for ``[dgn_am].classes``: DGN-AM vs a PPGN chain sample vs the
  pixel-space baselines (``[dgn_am].baselines``), side by side, same classes, same steps;
* a PPGN chain strip per class (samples along one chain);
* hidden-unit DGN-AM images for the catalogued layers (``units_per_layer`` channels each, or an
  explicit ``[dgn_am.units] layer = [channels]`` table), saved as
  ``figures/dgn_am/<model>/<layer>/<channel>.webp`` for the unit atlas to link;
* a method page: the generator, how it was trained (from its model card metadata), held-out
  reconstructions of the site's own photos (never training photos), and the measured claims from
  ``<generator>.eval.json`` when ``python -m generator.deepsim.evaluate`` has been run.

Config keys (``[dgn_am]``, all optional): ``generator`` (path), ``classes`` (list of ImageNet
indices, or an int = that many spread classes), ``steps``, ``lr_start``, ``decay``,
``clip_sigma``, ``baselines`` (list of "plain" | "regularized" | "fourier"), ``ppgn_steps``,
``ppgn_samples``, ``ppgn_eps1``, ``ppgn_eps2``, ``ppgn_eps3``, ``ppgn_update`` ("normalized" | "raw"),
``ppgn_schedule`` ("cyclical" | "linear" | "constant"), ``ppgn_lr``, ``ppgn_lr_end``, ``ppgn_from``
("random" | "dgn"), ``ppgn_precondition``, ``ppgn_normalize``,
``units_per_layer``, ``layers``, ``seed``, ``recon_images``. Every result is cached in
``ctx.cache`` under (model, generator hash, settings, targets).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ConfigError
from ..deepsim import load_any_generator
from ..deepsim.dgn_am import DGNAMSettings, class_probabilities, dgn_am
from ..deepsim.nets import Encoder
from ..deepsim.ppgn import PPGNSettings, ppgn_sample, prior_encoder
from ..methods.objectives import Target, pick_units, spread_classes
from ..methods.pixel_am import PixelAMSettings, pixel_am
from ..models import load_model
from ..render import grid, image_tile, save_image
from ..util import md_escape, sha256_file

CODE_VERSION = 2
ORDER = 60
#: "unit_images": {(model, layer, channel): figure path relative to the generated folder}
PROVIDES = ("unit_images",)
NEEDS: tuple[str, ...] = ()
PAGE = "methods/dgn_am"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GENERATOR = "data/weights/deepsim_lite0_64.pt"


DEFAULTS = {
    "generator": DEFAULT_GENERATOR,
    "classes": 4,            # a number of classes spread over ImageNet, or a list of class indices
    "steps": 100,
    "optimizer": "adam",
    "lr_start": 0.5,
    "lr_end": 0.01,
    "decay": 0.001,
    "clip_sigma": 3.0,
    "baselines": ["plain", "fourier"],
    "ppgn_steps": 600,
    "ppgn_samples": 5,
    "ppgn_eps1": 1e-5,
    "ppgn_eps2": 1.0,
    "ppgn_eps3": 1e-17,
    "ppgn_update": "normalized",
    "ppgn_schedule": "cyclical",
    "ppgn_lr": 0.5,
    "ppgn_lr_end": 0.01,
    "ppgn_normalize": False,
    "ppgn_precondition": "none",
    "ppgn_from": "random",
    "units_per_layer": 1,
    "units": {},
    "layers": [],
    "seed": 0,
    "recon_images": 8,
}


def settings(config) -> dict:
    s = config.table("dgn_am", DEFAULTS, types={"classes": (int, list)},
                     choices={"ppgn_schedule": ("cyclical", "linear", "constant"), "ppgn_from": ("random", "dgn"),
                              "baselines": ("plain", "fourier"), "optimizer": ("adam", "sgd")})
    s["classes"] = spread_classes(s["classes"]) if isinstance(s["classes"], int) else [int(c) for c in s["classes"]]
    bad = [c for c in s["classes"] if not 0 <= c < 1000]
    if bad:
        raise ConfigError(f"[dgn_am] classes: {bad[0]} is not an ImageNet class index (0..999)")
    s["units"] = {k: [int(c) for c in v] for k, v in s["units"].items()}
    return s


def ppgn_settings(s: dict):
    """PPGN settings from the stage's config: ``ppgn_samples`` samples, one every ``ppgn_steps // ppgn_samples``
    steps after a burn-in of the same length; with the cyclical schedule each sample ends a cycle."""
    every = max(1, s["ppgn_steps"] // max(1, s["ppgn_samples"]))
    sched = s["ppgn_schedule"]
    return PPGNSettings(steps=every * max(1, s["ppgn_samples"]), eps1=s["ppgn_eps1"], eps2=s["ppgn_eps2"],
                        eps3=s["ppgn_eps3"], update=s["ppgn_update"], lr=s["ppgn_lr"],
                        lr_end=None if sched == "constant" else s["ppgn_lr_end"],
                        cycle=every if sched == "cyclical" else 0, normalize_grad=s["ppgn_normalize"],
                        clip_sigma=s["clip_sigma"], save_every=every, burn_in=every, seed=s["seed"],
                        precondition=s["ppgn_precondition"])


def _unit_targets(ctx, model, s: dict) -> list[Target]:
    layers = s["layers"] or [n for n in ctx.layers(model) if model.spec.layer(n).kind == "conv"]
    targets = []
    for layer in layers:
        if layer in s["units"]:
            targets += [Target(c, layer=model.module_path(layer), label=f"{layer}:{c}") for c in s["units"][layer]]
        elif s["units_per_layer"] > 0:
            targets += pick_units(model, [layer], s["units_per_layer"], s["seed"])
    return targets


def _probs(model, images: torch.Tensor, classes: list[int]) -> list[float]:
    return class_probabilities(model.net, images, classes, model.spec.input_size)


def _compute(ctx, model, G, meta, gen_id: str, s: dict) -> dict:
    stats = meta["code_stats"]
    labels = model.labels
    targets = [Target(c, label=labels[c]) for c in s["classes"]]
    units = _unit_targets(ctx, model, s)
    base = {"what": "dgn_am", "v": CODE_VERSION, "model": model.cache_id, "generator": gen_id}
    dset = DGNAMSettings(steps=s["steps"], lr_start=s["lr_start"], lr_end=s["lr_end"], decay=s["decay"],
                         clip_sigma=s["clip_sigma"], seed=s["seed"], optimizer=s["optimizer"])
    size = model.spec.input_size
    out: dict = {}

    key = {**base, "part": "classes", "settings": dset.to_dict(), "targets": s["classes"]}
    r = ctx.cache.get(key)
    if r is None:
        res = dgn_am(G, model.net, targets, stats, dset, input_size=size, progress_bar=True)
        r = ctx.cache.put(key, {"images": res.images.half(), "final": res.final, "trajectory": res.trajectory,
                                "codes": res.codes, "prob": _probs(model, res.images.float(), s["classes"]),
                                "settings": res.settings})
    out["dgn"] = r

    if units:
        key = {**base, "part": "units", "settings": dset.to_dict(), "targets": [u.key for u in units]}
        r = ctx.cache.get(key)
        if r is None:
            res = dgn_am(G, model.net, units, stats, dset, input_size=size, progress_bar=True)
            r = ctx.cache.put(key, {"images": res.images.half(), "final": res.final, "trajectory": res.trajectory,
                                    "labels": [u.label for u in units], "settings": res.settings})
        out["units"] = r

    pset = ppgn_settings(s)
    h0 = out["dgn"]["codes"] if s["ppgn_from"] == "dgn" else None
    enc, why = prior_encoder(meta, model, ctx.models, ctx.device) if s["ppgn_eps1"] != 0 else (None, "PPGN ran without the prior term (ppgn_eps1 = 0 in the config)")
    out["ppgn_prior"] = why
    key = {**base, "part": "ppgn", "settings": pset.to_dict(), "targets": s["classes"], "from": s["ppgn_from"],
           "dgn": dset.to_dict() if h0 is not None else None,
           "encoder": meta.get("encoder", {}).get("encoder_layer", "pre_logits"), "prior": enc is not None}
    r = ctx.cache.get(key)
    if r is None:
        res = ppgn_sample(G, enc, model.net, targets, stats, pset, input_size=size, progress_bar=True, h0=h0)
        b, k = res.samples.shape[:2]
        pr = _probs(model, res.samples.flatten(0, 1).float(), [c for c in s["classes"] for _ in range(k)])
        r = ctx.cache.put(key, {"samples": res.samples.half(), "steps": res.sample_steps,
                                "prob": torch.tensor(pr).view(b, k), "settings": res.settings})
    out["ppgn"] = r

    out["baselines"] = {}
    for m in s["baselines"]:
        ps = PixelAMSettings(method=m, steps=s["steps"], seed=s["seed"], size=size)
        key = {**base, "generator": None, "part": f"pixel-{m}", "settings": ps.to_dict(), "targets": s["classes"]}
        r = ctx.cache.get(key)
        if r is None:
            res = pixel_am(model.net, targets, ps)
            r = ctx.cache.put(key, {"images": res["images"].half(), "final": res["final"],
                                    "prob": _probs(model, res["images"], s["classes"]), "settings": res["settings"]})
        out["baselines"][m] = r
    return out


def _figures(ctx, model, out: dict, s: dict) -> dict:
    """Per class: one row of the methods side by side, and a strip of the PPGN chain; per unit: its
    DGN-AM image (the unit atlas links it). Returns what the page template shows."""
    labels = model.labels
    figs: dict = {"classes": [], "units": []}
    # (column title, images [classes], class probabilities [classes])
    columns = [("DGN-AM", out["dgn"]["images"], out["dgn"]["prob"]),
               ("PPGN (last sample)", out["ppgn"]["samples"][:, -1], out["ppgn"]["prob"][:, -1].tolist())]
    columns += [(f"pixel AM: {method}", r["images"], r["prob"]) for method, r in out["baselines"].items()]
    for i, cls in enumerate(s["classes"]):
        rel = f"dgn_am/{model.name}/classes/{cls}.webp"
        tiles = [image_tile(images[i]) for _title, images, _probs in columns]
        tile_labels = [f"{title.split(':')[-1].strip()} p={probs[i]:.2f}" for title, _images, probs in columns]
        save_image(grid(tiles, len(tiles), 160, labels=tile_labels), ctx.figure_path(rel))
        strip_rel = f"dgn_am/{model.name}/ppgn/{cls}.webp"
        samples = out["ppgn"]["samples"][i]
        save_image(grid([image_tile(x, 128) for x in samples], len(samples), 128,
                        labels=[f"step {step} p={p:.2f}" for step, p in zip(out["ppgn"]["steps"], out["ppgn"]["prob"][i].tolist())]),
                   ctx.figure_path(strip_rel))
        figs["classes"].append({"index": cls, "label": labels[cls], "grid": rel, "strip": strip_rel,
                                "probs": {title: float(probs[i]) for title, _images, probs in columns}})
    if "units" in out:
        units = out["units"]
        for img, label, act in zip(units["images"], units["labels"], units["final"].tolist()):
            layer, channel = label.split(":")
            rel = f"dgn_am/{model.name}/{layer}/{channel}.webp"
            save_image(image_tile(img, 224), ctx.figure_path(rel))
            figs["units"].append({"layer": layer, "channel": int(channel), "fig": rel, "act": act})
    figs["columns"] = [title for title, _images, _probs in columns]
    return figs


def _reconstructions(ctx, G, meta, gen_id: str, n: int) -> str | None:
    """Reconstructions G(E(x)) of the site's own photos (not training photos): one figure."""
    if not ctx.images or n <= 0:
        return None
    enc_name = meta.get("encoder", {}).get("encoder", "efficientnet_lite0")
    model = next((m for m in ctx.models if m.name == enc_name), None)
    if model is None:
        try:
            model = load_model(enc_name, device=ctx.device)
        except Exception:
            return None
    items = ctx.images[:n]
    key = {"what": "dgn_am-recon", "v": CODE_VERSION, "generator": gen_id, "images": [i.sha256 for i in items]}
    rec = ctx.cache.get(key)
    if rec is None:
        x = ctx.batch(model, items)
        with torch.no_grad():
            h = Encoder(model, meta.get("encoder", {}).get("encoder_layer", "pre_logits"))(x)
            rec = ctx.cache.put(key, G(h.to(next(G.parameters()).device)).cpu().half())
    x = ctx.batch(model, items).cpu()
    tiles = [image_tile(t, 128) for t in x] + [image_tile(t, 128) for t in rec]
    rel = "dgn_am/reconstructions.webp"
    save_image(grid(tiles, len(items), 128, labels=[md_escape(i.id)[:20] for i in items] + ["G(E(x))"] * len(items)),
               ctx.figure_path(rel))
    return rel


def run(ctx) -> None:
    s = ctx.stage_settings("dgn_am")
    gpath = Path(s["generator"])
    if not gpath.is_absolute():
        gpath = ROOT / gpath
    ctx.declare(PAGE, "DGN-AM and PPGN", order=60)
    unit_images: dict[tuple[str, str, int], str] = {}
    ctx.provide("unit_images", unit_images)
    if not gpath.is_file():
        ctx.section(PAGE, "", f"Not built: the generator file `{md_escape(gpath.name)}` was not found. Train one with "
                    "`python -m generator train-generator` (see the README).", order=0)
        return
    G, meta = load_any_generator(gpath, device=str(ctx.device))
    gen_id = sha256_file(gpath)
    eval_path = gpath.with_suffix(".eval.json")
    evaluation = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    recon = _reconstructions(ctx, G, meta, gen_id, s["recon_images"])
    per_model = []
    for model in ctx.models:
        out = _compute(ctx, model, G, meta, gen_id, s)
        figs = _figures(ctx, model, out, s)
        page = f"models/{model.name}"
        ctx.section(page, "DGN-AM and PPGN", ctx.render(
            "dgn_am/model.md.j2", model=model, figs=figs, s=s, prior_note=out.get("ppgn_prior"), link=lambda t, page=page: ctx.link(page, t),
            method_link=ctx.link(page, PAGE)), order=ORDER)
        per_model.append({"model": model, "figs": figs})
        unit_images.update({(model.name, u["layer"], u["channel"]): f"figures/{u['fig']}" for u in figs["units"]})
    enc = meta.get("encoder", {})
    ctx.section(PAGE, "", ctx.render(
        "dgn_am/method.md.j2", meta=meta, enc=enc, cfg=meta.get("config", {}), metrics=meta.get("metrics") or {},
        evaluation=evaluation, recon=recon, s=s, per_model=per_model, gen_name=gpath.name,
        link=lambda t: ctx.link(PAGE, t)), order=0)
