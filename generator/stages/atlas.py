"""Unit atlas stage: one page per unit (model → layer → channel).

For every catalogued layer, the image folder of ``[atlas].folder`` is read once for all
models: each photo is decoded once and fed to every model at its own input size
(:func:`generator.metrics.unit_stats.stream_topk`, cached and resumable per model through ``ctx.cache``);
for the first ``max_channels_per_layer`` channels the top-k examples get their
receptive-field patches and deconvnet projections (cached per unit), and pages are
written:

- ``units/index.md``: models;
- ``units/<model>/index.md``: layers (receptive field, channel count);
- ``units/<model>/<layer>/index.md``: a grid of thumbnails, one per unit;
- ``units/<model>/<layer>/<channel>.md``: top-k patches, their projections, the DGN-AM
  image of the unit when the dgn_am stage made one (artifact ``unit_images``), the
  histogram of the per-image maximum over the folder and the classes of the top images.

Config (``[atlas]``; all optional)::

    folder = ""                     # any ImageFolder (class sub-folders) or flat folder;
                                    # "" = [build].images; a missing folder falls back to it
    layers = []                     # [] = the model's layers (ctx.layers); or a list of names
    max_channels_per_layer = 16     # units with pages per layer (0 = all)
    top_k = 9
    max_images = 0                  # 0 = all; else an evenly spaced subset of the sorted files
    batch_size = 32
    workers = "auto"                # DataLoader decoding processes; auto: 0 on CPU (the model needs
                                    # the cores), up to 4 with CUDA
    projections = true              # deconvnet projections (the slow part)
    projection_rule = "deconvnet"   # or "guided" (guided backprop from the unit)
    tile = 96                       # px per patch in the unit figures
    thumb = 64                      # px of the layer-page thumbnails
    checkpoint_every = 512          # images between resumable checkpoints of the stream
    channels_last = true            # stream/project on a channels-last copy (CPU: ~2.4× faster)
    hist_bins = 48                  # positive histogram bins (+ a third as many below zero)

Cost on the 2-core CPU box (EfficientNet-Lite0, 8 layers, 3,925 imagenette-val photos):
stream ≈ 25–38 ms/photo, projections + patches ≈ 0.5 s per unit; a rerun with nothing
changed only re-renders pages (seconds). The stream is the models' forward passes:
decoding a 224 px imagenette photo takes ~0.7 ms, resizing it for one model ~1.4 ms, a
Lite0 forward pass ~30 ms (one thread), so decoding once for all models saves little
there and DataLoader workers (``workers``) would only take cores from the model on CPU;
they pay off with large photos or a GPU. The timer reports ``atlas decode`` and
``atlas stream <model>`` (that model's resize + forward) separately.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from .. import datasets, image_folder
from ..config import ConfigError
from ..cache import key
from ..executor import LocalExecutor, chunk_size, compute, split
from ..metrics import unit_stats
from ..receptive_field import ReceptiveField, receptive_field, remember
from ..figure_files import draw
from ..render import histogram_svg, thumbnail, tile_grid, unit_tiles
from ..util import md_escape, stable_hash

ORDER = 60
PROVIDES: tuple[str, ...] = ()
NEEDS: tuple[str, ...] = ()
USES = ("unit_images", "unit_importance")  # DGN-AM picture (dgn_am); selectivity and ablation cost (findings)

#: WebP quality of the atlas figures (small tiles; the other figures use render's default, 85)
FIGURE_QUALITY = 80

DEFAULTS = {
    "folder": "",
    "layers": [],
    "max_channels_per_layer": 16,
    "top_k": 9,
    "max_images": 0,
    "batch_size": 32,
    "workers": "auto",
    "projections": True,
    "projection_rule": "deconvnet",
    "tile": 96,
    "thumb": 64,
    "checkpoint_every": 512,
    "channels_last": True,
    "hist_bins": 48,
}


def settings(config) -> dict:
    s = config.table("atlas", DEFAULTS, types={"workers": (int, str)},
                     choices={"projection_rule": ("deconvnet", "guided")})
    if s["workers"] != "auto" and not isinstance(s["workers"], int):
        raise ConfigError(f"[atlas] workers = {s['workers']!r}: must be \"auto\" or an integer")
    if s["top_k"] < 1 or s["batch_size"] < 1 or s["tile"] < 8:
        raise ConfigError("[atlas] top_k and batch_size must be at least 1, tile at least 8")
    return s


def _workers(ctx, s: dict) -> int:
    if s["workers"] != "auto":
        return int(s["workers"])
    return 0 if ctx.device.type == "cpu" else max(0, min(4, (os.cpu_count() or 1) - 1))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name))


def unit_page(model: str, layer: str, channel: int) -> str:
    return f"units/{_safe(model)}/{_safe(layer)}/{int(channel)}.md"


def layer_page(model: str, layer: str) -> str:
    return f"units/{_safe(model)}/{_safe(layer)}/index.md"


def model_page(model: str) -> str:
    return f"units/{_safe(model)}/index.md"


def _figure_rel(model: str, layer: str, channel: int, kind: str) -> str:
    return f"atlas/{_safe(model)}/{_safe(layer)}/{int(channel)}-{kind}.webp"


# ---------------------------------------------------------------------------------
# Computation (cached)


def _layers(ctx, model, cfg) -> list[str]:
    wanted = list(cfg["layers"]) or ctx.layers(model)
    known = {l.name for l in model.spec.layers}
    return [n for n in wanted if n in known and model.spec.layer(n).kind == "conv"]


def _stream_key(model, listing: image_folder.FolderListing, part: list[int], layers: list[str], cfg: dict) -> dict:
    return key("atlas-stream", model=model, code=unit_stats.stream_parts, folder=listing.fingerprint, selection=stable_hash(part),
               layers=layers, k=cfg["top_k"], bins=cfg["hist_bins"])


def _stream_all(ctx, jobs: list[tuple], listing: image_folder.FolderListing, indices: list[int],
                cfg: dict) -> list[unit_stats.AtlasState]:
    """Top-k + histograms for every channel of each job's layers (jobs: ``(model, layers, fast
    copy)``), cached, through the one compute call: the work is (model, consecutive chunk of
    ``indices``) pairs — one chunk per model here, about two per worker slot with ``--executor
    ray`` — and each model's chunk states are merged in order (the same top-k, histograms and
    predictions as one stream). Pairs that share a chunk are streamed together: the folder is
    read and decoded once, each photo then resized and cropped for every model that needs it."""
    if not jobs:
        return []
    executor = getattr(ctx, "executor", None) or LocalExecutor()
    parts = split(indices, chunk_size(executor, len(indices), cfg["batch_size"]))
    pairs = [(j, p) for j in range(len(jobs)) for p in range(len(parts))]
    keys = [_stream_key(jobs[j][0], listing, parts[p], jobs[j][1], cfg) for j, p in pairs]
    sub = {k: cfg[k] for k in ("top_k", "hist_bins", "batch_size", "channels_last", "checkpoint_every", "workers")}
    fresh = not ctx.cache.enabled or any(not ctx.cache.path(k).is_file() for k in keys)
    got = compute(ctx, keys, unit_stats.stream_parts,
                  lambda idx: ([(jobs[pairs[i][0]][0], jobs[pairs[i][0]][1], parts[pairs[i][1]]) for i in idx],
                               listing, sub, ctx.cache, [keys[i] for i in idx]),
                  what=f"atlas {', '.join(j[0].name for j in jobs)}", unit=1, total=len(indices) * len(jobs))
    timer = getattr(ctx, "timer", None)
    states = []
    for j, (model, _layers, _fast) in enumerate(jobs):
        mine = [got[i] for i, (jj, _p) in enumerate(pairs) if jj == j]
        states.append(unit_stats.merge_states([unit_stats.AtlasState.from_dict(r["state"]) for r in mine])
                      if len(mine) > 1 else unit_stats.AtlasState.from_dict(mine[0]["state"]))
        if timer is not None and fresh:  # decode + resize + forward, when computed by this build
            name = f"atlas stream {model.name}"
            timer.times[name] = timer.times.get(name, 0.0) + sum(r["seconds"] for r in mine)
            timer.times["atlas decode"] = timer.times.get("atlas decode", 0.0) + sum(r["decode"] for r in mine) / len(jobs)
    return states


def _examples(ctx, model, listing: image_folder.FolderListing, layer: str, state: unit_stats.AtlasState,
              channels: list[int], cfg: dict, stream_id: str, fast: unit_stats.FastCopy) -> list[dict]:
    """Per channel: uint8 patch and projection tiles of its top-k examples (cached per unit)."""
    tk = state.topk[layer]
    S = model.spec.input_size
    keys = [key("atlas-unit", model=model, code=_examples, stream=stream_id, layer=layer, channel=c, tile=cfg["tile"],
                projections=bool(cfg["projections"]), rule=cfg["projection_rule"],
                examples=[[listing.files[int(i)] if i >= 0 else "", *tk.pos[c, r].tolist()]
                          for r, i in enumerate(tk.index[c].tolist())]) for c in channels]
    module = model.module(layer)

    def crops(idx: list[int]) -> list[dict]:
        chans = [channels[i] for i in idx]
        rows, files = [], []
        for c in chans:
            for r in range(tk.k):
                i = int(tk.index[c, r])
                if i >= 0:
                    files.append(i)
                    rows.append((c, r, i))
        uniq = sorted(set(files))
        where = {f: j for j, f in enumerate(uniq)}
        imgs = image_folder.load_inputs(listing, uniq, model.spec.preprocess).to(ctx.device) if uniq else \
            torch.zeros(0, 3, S, S, device=ctx.device)
        picks = torch.tensor([[where[i], c, *tk.pos[c, r].tolist()] for c, r, i in rows], dtype=torch.long).view(-1, 4)
        fnet, fmods = fast.get([layer])
        crops = unit_stats.unit_crops(model.net, module, imgs, picks, projections=cfg["projections"],
                                      projection_batch=min(16, ctx.batch_size), rule=cfg["projection_rule"],
                                      fast=(fnet, fmods[layer]) if fast.enabled else None)
        patches = unit_tiles(crops["patches"], cfg["tile"], crops["marks"])
        deconv = unit_tiles(crops["deconv"], cfg["tile"])
        out = []
        for c in chans:
            sel = [j for j, (cc, _r, _i) in enumerate(rows) if cc == c]
            out.append({"patches": patches[sel].clone(),
                        "deconv": deconv[sel].clone() if cfg["projections"] else None,
                        "boxes": crops["boxes"][sel].clone()})
        return out

    # chunks of 8 units, each stored as soon as it is done (an interrupted run resumes there); here, on the
    # stage's fast copy
    return compute(ctx, keys, crops, lambda idx: (idx,), what=f"atlas {model.name}/{layer}", unit=1, chunk=8,
                   bar_unit="unit", here=True)


def _receptive_field(ctx, model, layer: str):
    """Receptive field of a layer, stored in ctx.cache (it depends on the architecture only)."""
    S = model.spec.input_size
    spec = model.spec
    k = key("receptive-field", model=spec, code=receptive_field, path=model.module_path(layer), size=[S, S])
    d = compute(ctx, [k], lambda _idx: [receptive_field(model.net, model.module_path(layer), (S, S)).to_dict()],
                lambda idx: (idx,), what=f"receptive field {model.name}/{layer}", unit=1, here=True)[0]
    rf = ReceptiveField.from_dict(d)
    remember(model.net, model.module_path(layer), rf)
    return rf


# ---------------------------------------------------------------------------------
# Figures and pages


def _folder(ctx, cfg):
    """The photo folder the atlas streams: ``[atlas].folder``, else (or when missing) the build's images."""
    folder = ctx.config.resolve_path(cfg["folder"] or ctx.config["images"])
    if cfg["folder"] and not folder.is_dir():
        return ctx.config.resolve_path(ctx.config["images"]), True
    return folder, False


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def run(ctx) -> None:
    cfg = dict(ctx.stage_settings("atlas"))
    cfg["workers"] = _workers(ctx, cfg)
    method_page = "methods/atlas"
    ctx.declare(method_page, "Unit atlas", order=60)
    unit_images = ctx.artifact("unit_images", {})
    index_rel = "units/index.md"
    fallback_note = ""
    folder, fell_back = _folder(ctx, cfg)
    if fell_back:  # e.g. a fresh checkout without the data sets: the build's own photos
        fallback_note = (f"The photo folder configured for the atlas (`[atlas] folder`) was not found when this site "
                         f"was built, so the atlas uses the build's own photos; `{datasets.FIX}` (or `make data`) "
                         f"fetches the labelled photo sets.")
        print(f"atlas: {fallback_note}", file=sys.stderr)
    try:
        listing = image_folder.list_folder(folder)
    except FileNotFoundError as e:
        msg = f"The unit atlas was not built: {md_escape(e)}. Set `[atlas].folder` in `data/config.toml`."
        ctx.page(index_rel, "Units", msg, nav="units", order=0)
        ctx.section(method_page, "", ctx.render("atlas/method.md.j2", cfg=cfg, folder=None,
                                               link=lambda t: ctx.link(method_page, t)), order=0)
        return
    indices = listing.subset(cfg["max_images"] or None)
    folder_name = "/".join(Path(folder).parts[-2:])
    labelled = any(c is not None for c in listing.classes)
    model_rows = []
    # one pass over the folder for every model (each photo decoded once)
    jobs = [(model, layers, unit_stats.FastCopy(model, cfg)) for model in ctx.models if (layers := _layers(ctx, model, cfg))]
    streamed = _stream_all(ctx, jobs, listing, indices, cfg)
    for (model, layers, fast), state in zip(jobs, streamed):
        stream_id = stable_hash({"m": model.cache_id, "f": listing.fingerprint, "s": indices, "l": layers,
                                 "k": cfg["top_k"], "b": cfg["hist_bins"]})
        n_seen = len(indices) - len(state.failed)
        switchless = not any(isinstance(m, torch.nn.MaxPool2d) for m in model.net.modules())
        layer_rows = []
        for layer in layers:
            with ctx.timer.stage(f"atlas receptive fields {model.name}"):
                rf = _receptive_field(ctx, model, layer)
            C = state.topk[layer].values.shape[0]
            cap = cfg["max_channels_per_layer"]
            channels = list(range(C if cap <= 0 else min(C, cap)))
            with ctx.timer.stage(f"atlas examples {model.name}"):
                ex = _examples(ctx, model, listing, layer, state, channels, cfg, stream_id, fast)
            tk, hist = state.topk[layer], state.hist[layer]
            pages_t0 = time.perf_counter()
            units = []
            lp = layer_page(model.name, layer)
            for c, e in zip(channels, ex):
                up = unit_page(model.name, layer, c)
                link = lambda t, up=up: ctx.link(up, t)
                draw(ctx.figure_path(_figure_rel(model.name, layer, c, "top"), model=model.name, layer=layer,
                                     caption=f"Units · unit {c}: the image patches that excite it most"),
                     tile_grid, e["patches"], quality=FIGURE_QUALITY)
                thumb = ctx.figure_path(_figure_rel(model.name, layer, c, "thumb"), model=model.name, layer=layer,
                                        caption=f"Units · unit {c}: its top patch")
                if len(e["patches"]):
                    draw(thumb, thumbnail, e["patches"][0], cfg["thumb"], quality=FIGURE_QUALITY)
                else:
                    draw(thumb, tile_grid, e["patches"], quality=FIGURE_QUALITY)
                deconv_rel = None
                if e.get("deconv") is not None:
                    deconv_rel = _figure_rel(model.name, layer, c, "deconv")
                    draw(ctx.figure_path(deconv_rel, model=model.name, layer=layer, method="deconvnet",
                                         caption=f"Units · unit {c}: deconvnet projections of its top patches"),
                         tile_grid, e["deconv"], quality=FIGURE_QUALITY)
                dgn_rel = unit_images.get((model.name, layer, c))
                examples = []
                for r in range(tk.k):
                    i = int(tk.index[c, r])
                    if i < 0:
                        continue
                    cls = image_folder.class_label(listing.classes[i], model.labels)
                    pred = int(state.pred[i])
                    examples.append({"rank": r + 1, "value": float(tk.values[c, r]), "file": listing.files[i],
                                     "cls": cls, "pred": model.labels[pred] if 0 <= pred < len(model.labels) else None,
                                     "y": int(tk.pos[c, r, 0]), "x": int(tk.pos[c, r, 1]),
                                     "box": e["boxes"][len(examples)].tolist() if len(e["boxes"]) > len(examples) else None})
                classes = Counter(x["cls"] for x in examples if x["cls"]) if labelled else Counter(
                    x["pred"] for x in examples if x["pred"])
                svg, lo, hi = histogram_svg(hist.counts[c], hist.edges(c))
                units.append({"channel": c, "thumb": _figure_rel(model.name, layer, c, "thumb"),
                              "top": float(tk.values[c, 0]) if examples else float("nan"),
                              "classes": classes.most_common(3)})
                ctx.page(up, f"{model.spec.title} · {layer} · unit {c}", ctx.render(
                    "atlas/unit.md.j2", model=model, layer=layer, channel=c, n_channels=C, channels=channels,
                    examples=examples, classes=classes.most_common(), labelled=labelled,
                    top_rel=_figure_rel(model.name, layer, c, "top"), deconv_rel=deconv_rel,
                    dgn_rel=dgn_rel, rule=cfg["projection_rule"], switchless=switchless, hist_svg=svg, hist_lo=_fmt(lo), hist_hi=_fmt(hi),
                    n_images=hist.n, mean_max=_fmt(float(hist.sum[c]) / max(1, hist.n)),
                    active=float(hist.active[c]) / max(1, hist.n), rf=rf, folder_name=folder_name, k=tk.k,
                    link=link, unit_page=lambda cc: posix_name(unit_page(model.name, layer, cc)),
                    layer_link=link(lp), method_link=link("methods/atlas.md"),
                    importance=ctx.artifact("unit_importance", {}).get((model.name, layer, c)),
                    findings_link=link("findings/selectivity.md")))
            ctx.page(lp, f"{model.spec.title} · {layer}", ctx.render(
                "atlas/layer.md.j2", model=model, layer=layer, units=units, n_channels=C, cap=cap, rf=rf,
                folder_name=folder_name, n_images=n_seen, k=cfg["top_k"],
                link=lambda t, lp=lp: ctx.link(lp, t), unit_page=lambda cc: f"{int(cc)}.md",
                model_link=ctx.link(lp, model_page(model.name))))
            ctx.timer.times[f"atlas pages {model.name}"] = ctx.timer.times.get(f"atlas pages {model.name}", 0.0) + \
                time.perf_counter() - pages_t0
            layer_rows.append({"layer": layer, "page": layer_page(model.name, layer), "rf": rf, "channels": C,
                               "shown": len(channels), "thumbs": units[:8]})
        mp = model_page(model.name)
        ctx.page(mp, model.spec.title, ctx.render(
            "atlas/model.md.j2", model=model, layers=layer_rows, folder_name=folder_name, n_images=n_seen,
            n_failed=len(state.failed), k=cfg["top_k"], link=lambda t, mp=mp: ctx.link(mp, t)), nav="units", order=10)
        ctx.section(f"models/{model.name}", "Unit atlas", ctx.render(
            "atlas/model_section.md.j2", model=model, layers=layer_rows,
            link=lambda t, m=model.name: ctx.link(f"models/{m}", t)), order=ORDER)
        model_rows.append({"model": model, "page": mp, "layers": layer_rows, "n_images": n_seen,
                           "n_failed": len(state.failed)})
    profile = ctx.config.profile_line("atlas", cfg)
    ctx.page(index_rel, "Units", ctx.render(
        "atlas/index.md.j2", rows=model_rows, folder_name=folder_name, n_files=len(listing),
        n_selected=len(indices), cfg=cfg, labelled=labelled, note=fallback_note,
        link=lambda t: ctx.link(index_rel, t)) + (f"\n{profile}\n" if profile else ""),
        nav="units", order=0)
    ctx.section(method_page, "", ctx.render("atlas/method.md.j2", cfg=cfg, folder=folder_name,
                                           link=lambda t: ctx.link(method_page, t)), order=0)
    if profile:
        ctx.section(method_page, "", profile + "\n", order=-5)
    ctx.section(method_page, "Data sets: credit and terms", datasets.credits_markdown() + "\n", order=95)


def posix_name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]
