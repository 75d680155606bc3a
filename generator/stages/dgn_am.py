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
``units_per_layer``, ``layers``, ``seed``, ``recon_images``, ``photos`` (the 1000-class photo
sample with ``classes.tsv``, read at build time for the photo column; absent → the column is
skipped with a note), ``judge`` (score every picture on another loaded model). Every result is
cached in ``ctx.cache`` under (model, generator hash, settings, targets).

Independent judge: each model page scores its pictures (and the real photo) on another loaded
network that took no part in making them (:func:`generator.deepsim.judge.pick_judge`); the method
page shows the table of ``python -m generator.deepsim.judge_eval`` (``<generator>.judge.json``,
tied to the generator's sha256) when it exists.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError
from ..deepsim import load_any_generator, read_measurement, unit_note, units_claim
from ..deepsim.dgn_am import DGNAMSettings, channels_last, class_probabilities, dgn_am
from ..deepsim import judge as judge_lib
from ..deepsim.judge import (ROWS as JUDGE_ROWS, judge_diversity, judge_verdicts, load_photo_dict, pair_lines, pair_top5, pick_judge,
                             read_photo_index)
from ..deepsim.nets import Encoder
from ..deepsim.ppgn import PPGNSettings, ppgn_sample, prior_encoder
from ..methods.base import prepared
from ..methods.objectives import Target, pick_units, spread_classes
from ..methods.pixel_am import PixelAMSettings, pixel_am
from ..models import load_model, title_of
from ..figure_files import save_image
from ..render import grid, image_tile
from .. import datasets
from ..cache import key
from ..executor import compute
from ..util import md_escape, sha256_file

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
    "photos": "data:imagenet-1k-sample",  # one photo per ImageNet class (classes.tsv); "" or missing → no photo column
    "judge": True,                              # score each picture on another loaded model (the judge)
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


def _folded(net, size: int, device, paths=()):
    """``net`` with batch norm folded into its convolutions (:func:`methods.base.prepared`: same logits,
    checked on a probe image; channels-last on a CPU) for the optimisation loops — unless a hidden-unit
    target reads a module whose output folding changes (then ``net`` itself)."""
    probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    p = prepared(net, probe)
    return p.net if p.pairs and all(p.safe_path(q) for q in paths if q) else net


def _compute(ctx, model, G, meta, gen_id: str, s: dict) -> dict:
    stats = meta["code_stats"]
    labels = model.labels
    targets = [Target(c, label=labels[c]) for c in s["classes"]]
    units = _unit_targets(ctx, model, s)
    net = _folded(model.net, model.spec.input_size, ctx.device, [u.layer for u in units])
    dset = DGNAMSettings(steps=s["steps"], lr_start=s["lr_start"], lr_end=s["lr_end"], decay=s["decay"],
                         clip_sigma=s["clip_sigma"], seed=s["seed"], optimizer=s["optimizer"])
    size = model.spec.input_size
    out: dict = {}

    # classes and hidden units in one batch when both are missing: one optimisation, rows independent
    # (same result per row)
    keys = [key("dgn_am", model=model, code=_compute, generator=gen_id, part="classes", settings=dset.to_dict(),
                targets=s["classes"])]
    if units:
        keys.append(key("dgn_am", model=model, code=_compute, generator=gen_id, part="units",
                        settings=dset.to_dict(), targets=[u.key for u in units]))

    def dgn(which: list[int]) -> list[dict]:
        rows = targets + (units if 1 in which else [])  # the classes' rows always first (a seeded init is per row)
        res = dgn_am(G, net, rows, stats, dset, input_size=size, progress_bar=True)
        n = len(targets)
        got = []
        if 0 in which:
            got.append({"images": res.images[:n].half(), "final": res.final[:n], "trajectory": res.trajectory[:n],
                        "codes": res.codes[:n], "prob": _probs(model, res.images[:n].float(), s["classes"]),
                        "settings": res.settings})
        if 1 in which:
            got.append({"images": res.images[n:].half(), "final": res.final[n:], "trajectory": res.trajectory[n:],
                        "labels": [u.label for u in units], "settings": res.settings})
        return got

    got = compute(ctx, keys, dgn, lambda idx: (idx,), what=f"DGN-AM {model.name}", unit=1, here=True)
    out["dgn"] = got[0]
    if units:
        out["units"] = got[1]

    pset = ppgn_settings(s)
    h0 = out["dgn"]["codes"] if s["ppgn_from"] == "dgn" else None
    enc, why = prior_encoder(meta, model, ctx.models, ctx.device) if s["ppgn_eps1"] != 0 else (None, "PPGN ran without the prior term (ppgn_eps1 = 0 in the config)")
    out["ppgn_prior"] = why
    k = key("dgn_am", model=model, code=_compute, generator=gen_id, part="ppgn", settings=pset.to_dict(),
            targets=s["classes"], **{"from": s["ppgn_from"]}, dgn=dset.to_dict() if h0 is not None else None,
            encoder=meta.get("encoder", {}).get("encoder_layer", "pre_logits"), prior=enc is not None)

    def ppgn(_idx: list[int]) -> list[dict]:
        as_loaded = enc.net if enc is not None else None
        if enc is not None and enc.path is None:  # the pooled features before the head: folding keeps them
            enc.net = _folded(enc.net, enc.input_size, ctx.device)
        with channels_last(as_loaded if enc is not None and enc.net is as_loaded and as_loaded is not model.net else None):
            res = ppgn_sample(G, enc, net, targets, stats, pset, input_size=size, progress_bar=True, h0=h0)
        b, k = res.samples.shape[:2]
        pr = _probs(model, res.samples.flatten(0, 1).float(), [c for c in s["classes"] for _ in range(k)])
        return [{"samples": res.samples.half(), "steps": res.sample_steps, "prob": torch.tensor(pr).view(b, k),
                 "settings": res.settings}]

    out["ppgn"] = compute(ctx, [k], ppgn, lambda idx: (idx,), what=f"PPGN {model.name}", unit=1, here=True)[0]

    out["baselines"] = {}
    for m in s["baselines"]:
        ps = PixelAMSettings(method=m, steps=s["steps"], seed=s["seed"], size=size)
        k = key("dgn_am", model=model, code=_compute, generator=None, part=f"pixel-{m}", settings=ps.to_dict(),
                targets=s["classes"])

        def pixel(_idx: list[int], ps=ps) -> list[dict]:
            res = pixel_am(net, targets, ps)
            return [{"images": res["images"].half(), "final": res["final"],
                     "prob": _probs(model, res["images"], s["classes"]), "settings": res["settings"]}]

        out["baselines"][m] = compute(ctx, [k], pixel, lambda idx: (idx,), what=f"pixel-space AM ({m}) {model.name}",
                                      unit=1, here=True)[0]
    return out


def _verdict(rank: int, prob: float) -> str:
    if rank == 0:
        return f"✓ top-1 (p={prob:.2f})"
    if rank < 5:
        return f"top-5, #{rank + 1} (p={prob:.2f})"
    return f"✗ #{rank + 1}"


def _figures(ctx, model, out: dict, s: dict, photos: dict, judge=None) -> dict:
    """Per class: one row of the methods side by side (with a real photo of the class first when
    ``photos`` has one), and a strip of the PPGN chain; per unit: its DGN-AM image (the unit atlas
    links it). ``judge``: another loaded model that scores every picture. Returns what the page
    template shows."""
    labels = model.labels
    figs: dict = {"classes": [], "units": [], "judge": judge.spec.title if judge is not None else None}
    # (column title, images [classes], class probabilities [classes])
    columns = [("DGN-AM", out["dgn"]["images"], out["dgn"]["prob"]),
               ("PPGN (last sample)", out["ppgn"]["samples"][:, -1], out["ppgn"]["prob"][:, -1].tolist())]
    columns += [(f"pixel AM: {method}", r["images"], r["prob"]) for method, r in out["baselines"].items()]
    photo_imgs = load_photo_dict(photos, s["classes"], model) if photos else {}
    verdicts: dict = {}
    if judge is not None:
        for title, images, _p in columns:
            v = judge_verdicts(judge, images.float(), s["classes"])
            verdicts[title] = list(zip(v["rank"].tolist(), v["prob"].tolist()))
        have = load_photo_dict(photos, list(photo_imgs), judge) if photo_imgs else {}
        if have:
            v = judge_verdicts(judge, torch.stack(list(have.values())), list(have), resized=True)
            verdicts["photo"] = dict(zip(have, zip(v["rank"].tolist(), v["prob"].tolist())))
    for i, cls in enumerate(s["classes"]):
        rel = f"dgn_am/{model.name}/classes/{cls}.webp"
        tiles = [image_tile(images[i]) for _title, images, _probs in columns]
        tile_labels = [f"{title.split(':')[-1].strip()} p={probs[i]:.2f}" for title, _images, probs in columns]
        if photo_imgs:  # the photo column: a blank tile when this class has no photo
            photo = photo_imgs.get(cls)
            tiles.insert(0, image_tile(photo if photo is not None else torch.ones(3, 8, 8)))
            tile_labels.insert(0, "photo" if photo is not None else "no photo")
        save_image(grid(tiles, len(tiles), 160, labels=tile_labels), ctx.figure_path(
            rel, model=model.name, caption=f"DGN-AM / PPGN · class {cls} ({labels[cls]}): the methods side by side"))
        strip_rel = f"dgn_am/{model.name}/ppgn/{cls}.webp"
        samples = out["ppgn"]["samples"][i]
        save_image(grid([image_tile(x, 128) for x in samples], len(samples), 128,
                        labels=[f"step {step} p={p:.2f}" for step, p in zip(out["ppgn"]["steps"], out["ppgn"]["prob"][i].tolist())]),
                   ctx.figure_path(strip_rel, model=model.name, method="ppgn",
                                   caption=f"PPGN · class {cls} ({labels[cls]}): samples along the chain"))
        judged = []
        if verdicts:
            if photo_imgs:
                pv = verdicts.get("photo", {}).get(cls)
                judged.append(_verdict(*pv) if pv else "–")
            judged += [_verdict(*verdicts[title][i]) for title, _images, _probs in columns]
        figs["classes"].append({"index": cls, "label": labels[cls], "grid": rel, "strip": strip_rel,
                                "probs": {title: float(probs[i]) for title, _images, probs in columns},
                                "judged": judged})
    if "units" in out:
        units = out["units"]
        for img, label, act in zip(units["images"], units["labels"], units["final"].tolist()):
            layer, channel = label.split(":")
            rel = f"dgn_am/{model.name}/{layer}/{channel}.webp"
            save_image(image_tile(img, 224), ctx.figure_path(rel, model=model.name, layer=layer, method="dgn_am",
                                                             caption=f"DGN-AM · unit {channel}"))
            figs["units"].append({"layer": layer, "channel": int(channel), "fig": rel, "act": act, "note": unit_note(act)})
    figs["columns"] = (["photo"] if photo_imgs else []) + [title for title, _images, _probs in columns]
    return figs


def photo_index(ctx, s: dict) -> tuple[dict, str | None]:
    """{ImageNet index: photo path} of the 1000-class sample, or ({}, why the photo column is skipped)."""
    if not s["photos"]:
        return {}, "no photo column: `[dgn_am] photos` is empty in the config"
    folder = ctx.config.resolve_path(s["photos"])
    index = read_photo_index(folder)
    if not index:
        return {}, (f"no photo column: the 1,000-class ImageNet sample (one photo per class) was not found when this "
                    f"site was built; `{datasets.FIX}` (or `make data`) fetches it")
    return index, None


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
    k = key("dgn_am-recon", model=model, code=_reconstructions, generator=gen_id, images=[i.sha256 for i in items])

    def recon(_idx: list[int]) -> list[torch.Tensor]:
        x = ctx.batch(model, items)
        with torch.no_grad():
            h = Encoder(model, meta.get("encoder", {}).get("encoder_layer", "pre_logits"))(x)
            return [G(h.to(next(G.parameters()).device)).cpu().half()]

    rec = compute(ctx, [k], recon, lambda idx: (idx,), what="DeePSim reconstructions", unit=1, here=True)[0]
    x = ctx.batch(model, items).cpu()
    tiles = [image_tile(t, 128) for t in x] + [image_tile(t, 128) for t in rec]
    rel = "dgn_am/reconstructions.webp"
    save_image(grid(tiles, len(items), 128, labels=[md_escape(i.id)[:20] for i in items] + ["G(E(x))"] * len(items)),
               ctx.figure_path(rel, model=model.name,
                               caption="DGN-AM · the site's photos and the generator's reconstructions G(E(x))"))
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
    evaluation, _why = read_measurement(gpath.with_suffix(".eval.json"), gen_id, "python -m generator.deepsim.evaluate")
    judge_table, judge_why = read_measurement(gpath.with_suffix(".judge.json"), gen_id, judge_lib.COMMAND)
    recon = _reconstructions(ctx, G, meta, gen_id, s["recon_images"])
    photos, photo_note = photo_index(ctx, s)
    enc_name = meta.get("encoder", {}).get("encoder", "efficientnet_lite0")
    by_name = {m.name: m for m in ctx.models}
    per_model = []
    for model in ctx.models:
        with channels_last(model.net):
            out = _compute(ctx, model, G, meta, gen_id, s)
        jname, clean = pick_judge(model.name, list(by_name), exclude=(enc_name,)) if s["judge"] else (None, False)
        figs = _figures(ctx, model, out, s, photos, by_name.get(jname) if jname else None)
        figs["judge_clean"] = clean
        page = f"models/{model.name}"
        ctx.section(page, "DGN-AM and PPGN", ctx.render(
            "dgn_am/model.md.j2", model=model, figs=figs, s=s, prior_note=out.get("ppgn_prior"), link=lambda t, page=page: ctx.link(page, t),
            method_link=ctx.link(page, PAGE), photo_note=photo_note, enc_name=enc_name), order=ORDER)
        per_model.append({"model": model, "figs": figs})
        unit_images.update({(model.name, u["layer"], u["channel"]): f"figures/{u['fig']}" for u in figs["units"]})
    enc = meta.get("encoder", {})
    ctx.section(PAGE, "", ctx.render(
        "dgn_am/method.md.j2", meta=meta, enc=enc, cfg=meta.get("config", {}), metrics=meta.get("metrics") or {},
        evaluation=evaluation, units_claim=units_claim((evaluation or {}).get("units")), recon=recon, s=s, per_model=per_model, gen_name=gpath.name,
        judge=judge_table, judge_why=judge_why, judge_rows=JUDGE_ROWS, judge_pairs=pair_lines(judge_table, title_of),
        judge_by_pair=pair_top5(judge_table, title_of), judge_diversity=judge_diversity(judge_table),
        link=lambda t: ctx.link(PAGE, t)), order=0)
    profile = ctx.config.profile_line("dgn_am", s)
    if profile:
        ctx.section(PAGE, "", profile + "\n", order=-5)
