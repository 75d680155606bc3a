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

from .. import image_folder
from ..config import ConfigError
from ..executor import chunk_size, distributed, split
from ..methods.base import prepared
from ..metrics import unit_stats
from ..receptive_field import ReceptiveField, receptive_field, remember
from ..render import histogram_svg, save_image, thumbnail, tile_grid, unit_tiles
from ..util import chunks, md_escape, progress, stable_hash

CODE_VERSION = 1
RF_VERSION = 1
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


class _FastCopy:
    """One fast copy of a model per stage run, made only when needed: batch norm folded into the
    convolutions and channels-last (:func:`methods.base.prepared`, same logits), or — for layers
    whose output folding would change — a plain channels-last copy."""

    def __init__(self, ctx, model, cfg) -> None:
        self.model, self.enabled = model, bool(cfg["channels_last"]) and ctx.device.type == "cpu"
        self._net = self._prep = None

    def get(self, layers: list[str]) -> tuple:
        modules = {n: self.model.module(n) for n in layers}
        if not self.enabled:
            return self.model.net, modules
        paths = [self.model.module_path(n) for n in layers]
        if self._prep is None:
            size = self.model.spec.input_size
            probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.model.device)
            self._prep = prepared(self.model.net, probe)
        if self._prep.pairs and all(self._prep.safe_path(q) for q in paths):
            net = self._prep.net
        else:
            if self._net is None:
                self._net, _ = unit_stats.streaming_copy(self.model.net, {}, True)
            net = self._net
        return net, {n: net.get_submodule(q) for n, q in zip(layers, paths)}


def _stream_key(model, listing: image_folder.FolderListing, indices: list[int], layers: list[str], cfg: dict) -> dict:
    return {"what": "atlas-stream", "v": CODE_VERSION, "model": model.cache_id, "folder": listing.fingerprint,
            "selection": stable_hash(indices), "layers": layers, "k": cfg["top_k"], "bins": cfg["hist_bins"],
            "input": model.spec.preprocess.key}


def _stream(ctx, model, listing: image_folder.FolderListing, indices: list[int], layers: list[str], cfg: dict,
            fast: _FastCopy) -> unit_stats.AtlasState:
    """Top-k + histograms for every channel of ``layers``; cached, resumable."""
    return _stream_all(ctx, [(model, layers, fast)], listing, indices, cfg)[0]


def _stream_all(ctx, jobs: list[tuple], listing: image_folder.FolderListing, indices: list[int],
                cfg: dict) -> list[unit_stats.AtlasState]:
    """:func:`_stream` for several ``(model, layers, fast copy)`` jobs at once: the folder is
    read and decoded once, each photo then resized and cropped for every model that still
    needs it (their input sizes differ). Each model keeps its own state, checkpoints and
    cache entries, exactly as if it were streamed alone (same batches, same order)."""
    states: list[unit_stats.AtlasState | None] = []
    pending = []  # (job number, model, partial key, state, since-checkpoint counter)
    for j, (model, layers, _fast) in enumerate(jobs):
        key = _stream_key(model, listing, indices, layers, cfg)
        done = ctx.cache.get(key)
        if done is not None:
            states.append(unit_stats.AtlasState.from_dict(done))
            continue
        partial_key = {**key, "partial": True}
        part = ctx.cache.get(partial_key)
        if part is not None:
            state = unit_stats.AtlasState.from_dict(part)
        else:
            modules = {n: model.module(n) for n in layers}
            channels = unit_stats.layer_channels(model.net, modules, model.spec.input_size)
            state = unit_stats.AtlasState.empty(channels, cfg["top_k"], len(listing),
                                                (cfg["hist_bins"], max(4, cfg["hist_bins"] // 3)))
        states.append(state)
        pending.append({"j": j, "model": model, "key": key, "partial": partial_key, "state": state, "since": 0})
    todo_jobs = [p for p in pending if p["state"].done < len(indices)]
    if todo_jobs:
        start = min(p["state"].done for p in todo_jobs)
        for p in todo_jobs:
            p["net"], p["mods"] = jobs[p["j"]][2].get(jobs[p["j"]][1])
            p["fast"] = jobs[p["j"]][2].enabled
        names = ", ".join(p["model"].name for p in todo_jobs)
        bar = progress(total=len(indices), initial=start, desc=f"atlas {names}", unit="img")
        timer = getattr(ctx, "timer", None)
        pos = start
        try:
            t0 = time.perf_counter()
            for pils, idx, ok in image_folder.iterate_decoded(listing, indices[start:], cfg["batch_size"],
                                                              cfg["workers"]):
                if timer is not None:
                    timer.times["atlas decode"] = timer.times.get("atlas decode", 0.0) + time.perf_counter() - t0
                n = len(idx)
                for p in todo_jobs:
                    st = p["state"]
                    off = st.done - pos  # > 0: this model's checkpoint is inside or past this batch
                    if off >= n:
                        continue
                    t1 = time.perf_counter()
                    sub = slice(max(0, off), n)
                    x = image_folder.to_inputs(pils[sub], p["model"].spec.preprocess)
                    unit_stats.stream_topk(p["net"], p["mods"], [(x, idx[sub], ok[sub])], st,
                                           channels_last=p["fast"])
                    p["since"] += len(x)
                    if p["since"] >= cfg["checkpoint_every"] and st.done < len(indices):
                        ctx.cache.put(p["partial"], st.to_dict())
                        p["since"] = 0
                    if timer is not None:
                        name = f"atlas stream {p['model'].name}"
                        timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - t1
                pos += n
                bar.update(n)
                t0 = time.perf_counter()
        finally:
            bar.close()
            for p in todo_jobs:
                del p["net"], p["mods"]
    for p in pending:
        ctx.cache.put(p["key"], p["state"].to_dict())
        pp = ctx.cache.path(p["partial"])
        if pp.exists():
            pp.unlink()
    return states


def _stream_distributed(ctx, model, listing, indices: list[int], layers: list[str], cfg: dict,
                        key: dict) -> unit_stats.AtlasState:
    """:func:`_stream` as executor tasks over consecutive chunks of ``indices`` (each chunk's
    state cached: a rerun or a lost worker repeats only missing chunks), merged in order."""
    parts = split(indices, chunk_size(ctx.executor, len(indices), cfg["batch_size"]))
    channels = unit_stats.layer_channels(model.net, {n: model.module(n) for n in layers}, model.spec.input_size)
    keys = [{**key, "chunk": stable_hash(p)} for p in parts]
    sub = {k: cfg[k] for k in ("top_k", "hist_bins", "batch_size", "channels_last")}
    got = ctx.executor.cached(ctx.cache, keys, 1, lambda idx: (model, listing, parts[idx[0]], layers, channels, sub),
                              _stream_chunk, what=f"atlas {model.name}")
    state = unit_stats.merge_states([unit_stats.AtlasState.from_dict(d) for d in got])
    ctx.cache.put(key, state.to_dict())
    for k in keys:  # the merged state replaces the chunks' (as the finished stream replaces its checkpoint)
        ctx.cache.path(k).unlink(missing_ok=True)
    return state


def _stream_chunk(model, listing, part: list[int], layers: list[str], channels: dict, cfg: dict) -> list[dict]:
    """One executor task: the stream state of the photos ``part`` (batched as a local run)."""
    state = unit_stats.AtlasState.empty(channels, cfg["top_k"], len(listing),
                                        (cfg["hist_bins"], max(4, cfg["hist_bins"] // 3)))
    fast = cfg["channels_last"] and model.device.type == "cpu"
    net, mods = unit_stats.streaming_copy(model.net, {n: model.module(n) for n in layers}, fast)
    batches = image_folder.iterate_batches(listing, part, model.spec.preprocess, cfg["batch_size"], 0)
    unit_stats.stream_topk(net, mods, batches, state, channels_last=fast)
    return [state.to_dict()]


def _examples(ctx, model, listing: image_folder.FolderListing, layer: str, state: unit_stats.AtlasState,
              channels: list[int], cfg: dict, stream_id: str, fast: _FastCopy) -> list[dict]:
    """Per channel: uint8 patch and projection tiles of its top-k examples (cached per unit)."""
    tk = state.topk[layer]
    S = model.spec.input_size
    keys = [{"what": "atlas-unit", "v": CODE_VERSION, "model": model.cache_id, "stream": stream_id, "layer": layer,
             "channel": c, "tile": cfg["tile"], "projections": bool(cfg["projections"]),
             "rule": cfg["projection_rule"],
             "examples": [[listing.files[int(i)] if i >= 0 else "", *tk.pos[c, r].tolist()]
                          for r, i in enumerate(tk.index[c].tolist())]} for c in channels]
    module = model.module(layer)

    def compute(chans: list[int]) -> list[dict]:
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

    results: list[dict] = []
    bar = None
    try:
        # chunks of 8 units: each chunk is stored as soon as it is done (an interrupted run resumes there)
        for part in chunks(list(range(len(channels))), 8):
            got = ctx.cache.batched([keys[i] for i in part],
                                    lambda missing, part=part: compute([channels[part[j]] for j in missing]))
            if bar is None and len(results) + len(part) < len(channels):
                bar = progress(total=len(channels), initial=len(results), desc=f"atlas {model.name}/{layer}", unit="unit")
            results.extend(got)
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    return results


def _receptive_field(ctx, model, layer: str):
    """Receptive field of a layer, stored in ctx.cache (it depends on the architecture only)."""
    S = model.spec.input_size
    spec = model.spec
    key = {"what": "receptive-field", "v": RF_VERSION, "arch": [spec.family, spec.arch, spec.build_kwargs],
           "path": model.module_path(layer), "input": [S, S]}
    d = ctx.cache.get(key)
    if d is not None:
        rf = ReceptiveField.from_dict(d)
        remember(model.net, model.module_path(layer), rf)
        return rf
    rf = receptive_field(model.net, model.module_path(layer), (S, S))
    ctx.cache.put(key, rf.to_dict())
    return rf


# ---------------------------------------------------------------------------------
# Figures and pages


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
    folder = ctx.config.resolve_path(cfg["folder"] or ctx.config["images"])
    if cfg["folder"] and not folder.is_dir():
        # e.g. a fresh checkout without the research image folder: use the shipped images
        fallback_note = (f"The configured folder {folder} does not exist here; the atlas uses the build's "
                         f"image folder instead.")
        print(f"atlas: {fallback_note}", file=sys.stderr)
        folder = ctx.config.resolve_path(ctx.config["images"])
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
    jobs = [(model, layers, _FastCopy(ctx, model, cfg)) for model in ctx.models if (layers := _layers(ctx, model, cfg))]
    if distributed(ctx):  # chunks of photos as tasks per model (generator/executor.py), merged in order
        streamed = []
        for m, layers, _fast in jobs:
            key = _stream_key(m, listing, indices, layers, cfg)
            done = ctx.cache.get(key)
            t0 = time.perf_counter()
            streamed.append(unit_stats.AtlasState.from_dict(done) if done is not None
                            else _stream_distributed(ctx, m, listing, indices, layers, cfg, key))
            if getattr(ctx, "timer", None) is not None:  # decode + resize + forward, in the workers
                name = f"atlas stream {m.name}"
                ctx.timer.times[name] = ctx.timer.times.get(name, 0.0) + time.perf_counter() - t0
    else:
        streamed = _stream_all(ctx, jobs, listing, indices, cfg) if jobs else []
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
                save_image(tile_grid(e["patches"]), ctx.figure_path(_figure_rel(model.name, layer, c, "top")),
                           quality=FIGURE_QUALITY)
                thumb = thumbnail(e["patches"][0], cfg["thumb"]) if len(e["patches"]) else tile_grid(e["patches"])
                save_image(thumb, ctx.figure_path(_figure_rel(model.name, layer, c, "thumb")), quality=FIGURE_QUALITY)
                deconv_rel = None
                if e.get("deconv") is not None:
                    deconv_rel = _figure_rel(model.name, layer, c, "deconv")
                    save_image(tile_grid(e["deconv"]), ctx.figure_path(deconv_rel), quality=FIGURE_QUALITY)
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
                    findings_link=link("findings/index.md")))
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
    ctx.page(index_rel, "Units", ctx.render(
        "atlas/index.md.j2", rows=model_rows, folder_name=folder_name, n_files=len(listing),
        n_selected=len(indices), cfg=cfg, labelled=labelled, note=fallback_note,
        link=lambda t: ctx.link(index_rel, t)),
        nav="units", order=0)
    ctx.section(method_page, "", ctx.render("atlas/method.md.j2", cfg=cfg, folder=folder_name,
                                           link=lambda t: ctx.link(method_page, t)), order=0)


def posix_name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]
