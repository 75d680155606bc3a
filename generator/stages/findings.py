"""Findings stage: is visualisation enough? Measurements, not pictures.

For every model with real weights and every attribution method this stage measures, on
labelled probe photos read at build time (Imagenette val, balanced, interleaved with the
1,000-class sample of ``../shared``; the curated photos when those are absent):

1. the **model-randomisation sanity check** (Adebayo et al., 2018): layers
   re-initialised top-down on a copy of the model, similarity of every map to the
   trained model's map (Spearman of |map|, SSIM, HOG);
2. **class sensitivity**: the map for the top-1 class vs the map for a low-ranked class;
3. **faithfulness**: deletion / insertion curves and their areas (Petsiuk et al.,
   2018), per photo against a random-order and a centre-prior baseline;
4. **input invariance** (Kindermans et al., 2017): the map of a copy of the model that
   absorbs a constant input shift, on the shifted photo (:mod:`..metrics.invariance`);
5. **fragility** (Ghorbani et al., 2019): top-k overlap after a small attack vs after
   random noise of the same L∞ size (:mod:`..metrics.fragility`);
6. **selectivity vs importance** (Morcos et al., 2018) of the catalogued units
   (:mod:`..metrics.selectivity`), handed to the atlas as ``unit_importance``;
7. the **model table**: parameters, multiply-adds, measured accuracy.

Every number is a mean with its 95 % bootstrap interval and n (:mod:`..metrics.bootstrap`);
a verdict is printed only when the interval clears its threshold, else "undecided at
n = …". The page opens with a methods × checks table per model; the headline numbers go
to the ``findings_summary`` artifact and ``findings/summary.json`` (for the home page).
Results are cached per (model weights, method + settings, photo, check settings).

Config: ``[findings]`` in data/config.toml, keys and defaults in :data:`DEFAULTS` (one
knob, ``n_scale``, multiplies every n — e.g. 10 for a GPU build; the expensive methods
listed in ``expensive_methods`` get their own, smaller n and their ``findings_params``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..deepsim import judge, read_measurement
from ..executor import chunk_size, distributed
from ..methods import attribution, base, relu_rules
from ..methods.attribution import ATTRIBUTION_METHODS, make
from ..metrics import bootstrap
from ..metrics import faithfulness
from ..metrics import fragility
from ..metrics import invariance
from ..metrics import selectivity
from ..metrics import model_table
from ..metrics import plots
from ..metrics import sanity
from ..metrics import similarity
from ..metrics import transfer
from ..models import get_spec, title_of
from ..progress import line
from ..util import atomic_write_bytes, download_png, progress, sha256_file, stable_hash, write_bytes_if_changed

CODE_VERSION = 1
#: "findings_summaries": the per-model summaries (summarise_model); the home page quotes its headline numbers
#: "unit_importance": {(model, layer, channel): {"selectivity", "acc_drop", "prob_drop", "n", "preferred"}}
#: "findings_summary": JSON-able headline numbers per model and method (also findings/summary.json)
PROVIDES: tuple[str, ...] = ("findings_summaries", "unit_importance", "findings_summary")
NEEDS: tuple[str, ...] = ()
USES = ("model_agreement",)  # how much models agree per method (compare stage), quoted in "Across models"
PAGE = "findings/index"
ORDER = 70  # method-page sections after the galleries

DEFAULTS: dict = {
    # labelled probe photos for the per-photo checks: Imagenette val (balanced over its classes) and
    # the 1,000-class sample (classes.tsv), read at build time; the curated photos when neither exists
    "probe_folder": "../shared/imagenette/val",
    "probe_sample": "../shared/imagenet-1k-sample",
    "n_scale": 1.0,                 # ONE knob: multiplies every n below (e.g. 10 for a GPU build)
    "images": 100,                  # per-photo checks (class, deletion/insertion) for the cheap methods
    "expensive_images": 6,          # ... for the expensive methods (their own, smaller n)
    "expensive_methods": ["smoothgrad", "integrated_gradients", "occlusion", "smoothgrad_sq", "vargrad"],
    "faithfulness_images": 100,     # deletion/insertion (2 × (steps − 1) forward passes per photo and order, + 3 per photo)
    "sanity_images": 10,            # photos through the randomisation cascade (cheap methods)
    "sanity_expensive_images": 2,   # ... expensive methods
    "invariance_images": 100,       # input invariance (Kindermans et al. 2017)
    "invariance_shift": [0.25, 0.25, 0.25],   # constant input shift, pixel units (0–1)
    "invariance_threshold": 0.9,    # "invariant": Spearman(map, map of shifted copy) interval ≥ this
    "fragility_images": 100,        # fragility (Ghorbani et al. 2019)
    "fragility_eps": 8.0,           # L∞ size of attack and of the random control, 0–255 units
    "fragility_steps": 5,
    "fragility_topk": 0.05,         # top-k = this fraction of the pixels
    "fragility_max_prob_change": 0.1,  # attack steps that move the class's probability more (absolute) are undone
    "selectivity_images": 100,      # labelled Imagenette photos for selectivity and ablation
    "ablation_units_per_layer": 4,  # catalogued units per layer ablated (0 = all the atlas catalogues)
    "image_ids": [],
    "cascade_steps": 4,
    "seed": 0,
    "low_rank": 500,
    "faithfulness_steps": 8,
    "blur_sigma": 5.0,
    "sanity_threshold": 0.5,
    "class_threshold": 0.8,
    "top_layer_threshold": 0.9,
    "accuracy_folder": "../shared/imagenette/val",
    "accuracy_max_images": 500,
    "methods": [],
    "models": [],
    "thumb": 80,
    "figure_format": "svg",  # svg | png (plots; the map grid is always WebP)
    # Over each method's findings_params, which are cheaper than the galleries' settings so
    # the stage fits a few CPU minutes; the page prints the settings used. Set e.g.
    # [findings.method_params.smoothgrad] samples = 25 to match the galleries.
    "method_params": {},
}

BASELINES = {"random": "random order (baseline)", "centre": "centre prior (baseline)"}
COMMAND = "python -m generator build --stages overview,findings"


@contextlib.contextmanager
def _step(model, what: str):
    """A line when a check starts and one when it ends, with its time, for a log (a long check is
    never minutes of silence; on a terminal the bars of the loops inside show the same)."""
    t0 = time.perf_counter()
    line(f"findings {model.name}: {what} …")
    yield
    line(f"findings {model.name}: {what} done in {time.perf_counter() - t0:.1f} s")


class Timing(dict):
    """Seconds per check, and ``per_photo``: (check, method) → [seconds, photos], for the build log's
    seconds per 100 photos (to tune the n's; as measured when each result was computed)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_photo: dict[tuple[str, str], list[float]] = {}

    def add(self, check: str, results, method: str = "") -> None:
        sec = [float(r["seconds"]) for r in results]
        self[check] = self.get(check, 0.0) + sum(sec)
        if method:
            acc = self.per_photo.setdefault((check, method), [0.0, 0])
            acc[0] += sum(sec)
            acc[1] += len(sec)

    def per_100(self) -> str:
        return ", ".join(f"{c} {m} {100 * t / n:.0f} s" for (c, m), (t, n) in self.per_photo.items() if n)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def settings(config) -> dict:
    s = config.table("findings", DEFAULTS, choices={"methods": ATTRIBUTION_METHODS,
                                                    "figure_format": ("svg", "png")})
    for k in s["method_params"]:
        if k not in ATTRIBUTION_METHODS:
            raise ConfigError(f"[findings.method_params]: unknown method {k!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    s["method_params"] = {n: {**cls.findings_params, **dict(s["method_params"].get(n, {}))}
                          for n, cls in ATTRIBUTION_METHODS.items()}
    for k in s["expensive_methods"]:
        if k not in ATTRIBUTION_METHODS:
            raise ConfigError(f"[findings] expensive_methods: unknown method {k!r}")
    if float(s["n_scale"]) <= 0:
        raise ConfigError(f"[findings] n_scale = {s['n_scale']}: must be > 0")
    if not 2 < s["low_rank"] <= 1000:
        raise ConfigError(f"[findings] low_rank = {s['low_rank']}: must be in 3..1000")
    return s


def select_items(ctx, s: dict) -> list:
    """The curated photos (known ImageNet class first): the fallback probe set."""
    items = list(ctx.images)
    if s["image_ids"]:
        by_id = {it.id: it for it in items}
        unknown = [i for i in s["image_ids"] if i not in by_id]
        if unknown:
            raise KeyError(f"[findings].image_ids: unknown image id(s) {', '.join(unknown)}")
        return [by_id[i] for i in s["image_ids"]]
    known = [it for it in items if it.imagenet_index is not None]
    rest = [it for it in items if it.imagenet_index is None]
    return known + rest


class Probe:
    """A labelled probe photo read from ``../shared`` (quacks like an ``ImageItem`` for ``ctx.batch``)."""

    def __init__(self, path: Path, label: int, source: str) -> None:
        import hashlib

        self.path, self.imagenet_index, self.source = path, int(label), source
        self.id = f"{source}:{path.name}"
        self.title = f"{path.name} ({source})"
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self._pil = None

    @property
    def pil(self):
        if self._pil is None:
            from PIL import Image

            with Image.open(self.path) as im:
                self._pil = im.convert("RGB")
        return self._pil


def scaled(s: dict, key: str) -> int:
    """A photo count after the one ``n_scale`` knob."""
    return max(1, int(round(int(s[key]) * float(s["n_scale"]))))


def _folder_photos(ctx, folder: str, n: int) -> list:
    if not folder or n <= 0:
        return []
    path = ctx.config.resolve_path(folder)
    if not path.is_dir():
        return []
    wmap = model_table.read_wnid_map(path)
    return [Probe(p, c, path.parent.name + "-" + path.name) for p, c in model_table.list_imagefolder(path, wmap, n)] if wmap else []


def _sample_photos(ctx, folder: str, n: int) -> list:
    if not folder or n <= 0:
        return []
    path = ctx.config.resolve_path(folder)
    table = path / "classes.tsv"
    if not table.is_file():
        return []
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    rows = [(path / r[0], int(r[1])) for r in rows if len(r) >= 2 and (path / r[0]).is_file()]
    if not rows:
        return []
    pick = np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int))  # spread over the classes
    return [Probe(rows[i][0], rows[i][1], path.name) for i in pick]


def probe_set(ctx, s: dict) -> tuple[list, str]:
    """(photos, where from): half Imagenette val (balanced), half the 1,000-class sample;
    the curated photos (with the page saying so) when ``../shared`` is absent."""
    n = scaled(s, "images")
    if s["image_ids"]:
        return select_items(ctx, s)[:n], "curated"
    half = _folder_photos(ctx, str(s["probe_folder"]), n // 2)
    rest = _sample_photos(ctx, str(s["probe_sample"]), n - len(half))
    photos = [p for pair in zip(half, rest) for p in pair] + half[len(rest):] + rest[len(half):]  # interleaved
    if photos:
        return photos[:n], "shared"
    return select_items(ctx, s)[:n], "curated"


# ------------------------------------------------------------------------------------ computing


@functools.lru_cache(maxsize=1)
def methods_fingerprint() -> str:
    """Hash of the attribution code's source: a change there invalidates cached maps."""
    return stable_hash([Path(m.__file__).read_text(encoding="utf-8") for m in (attribution, relu_rules, base)])[:16]


def _key(what: str, model, **kw) -> dict:
    return {"what": f"findings-{what}", "v": CODE_VERSION, "model": model.cache_id, "code": methods_fingerprint(),
            "input": model.spec.preprocess.key, **kw}


def _results(ctx, keys: list[dict], args_of, fn, what: str, unit: int | None = None, local=None) -> list:
    """Results for ``keys``: cache hits as they are, the misses computed by ``fn(*args_of(idx))``
    (one result per index of ``idx``, in order) — here, in one batch (by ``local(idx)`` when
    given, e.g. with a progress bar), or with ``--executor ray`` as tasks of chunks of keys, a
    multiple of ``unit`` (default: the batch size, for keys of photos; 1 for keys of layers or
    blocks) (generator/executor.py), read back through the cache. ``fn`` is a module-level
    function of the model, settings and CPU tensors, so a worker can run it."""
    if distributed(ctx):
        cpu = lambda a: a.cpu() if isinstance(a, torch.Tensor) else a  # noqa: E731
        size = chunk_size(ctx.executor, len(keys), ctx.batch_size if unit is None else unit)
        return ctx.executor.cached(ctx.cache, keys, size, lambda idx: tuple(cpu(a) for a in args_of(idx)), fn, what=what)
    return ctx.cache.batched(keys, local or (lambda idx: fn(*args_of(idx))))


def _maps_chunk(model, name: str, params: dict, batch_size: int, x: torch.Tensor, targets: torch.Tensor) -> list[dict]:
    """The maps of photos ``x`` for their N×K ``targets`` (top-1, low-ranked), one batch."""
    t0 = time.perf_counter()
    x = x.to(model.device)
    n, k = len(x), targets.shape[1]
    tt = targets.T.reshape(-1).to(x.device)  # all top-1, then all low-ranked
    maps = make(name, model, batch_size=batch_size, **params).explain(x.repeat(k, 1, 1, 1), tt)
    maps = maps.float().cpu().view(k, n, *x.shape[-2:]).transpose(0, 1)
    dt = (time.perf_counter() - t0) / n
    return [{"maps": maps[j].clone(), "seconds": dt} for j in range(n)]


def trained_maps(ctx, model, methods: dict, items, x, targets: torch.Tensor, timing: Timing,
                 n_of: dict, s: dict) -> dict[str, torch.Tensor]:
    """method → N×K×H×W maps for the K classes per photo (top-1, low-ranked); one batch per method."""
    out = {}
    for name, meth in methods.items():
        keys = [_key("maps", model, method=name, params=meth.params, image=it.sha256, targets=targets[i].tolist())
                for i, it in enumerate(items[: n_of[name]])]
        res = _results(ctx, keys, lambda idx, name=name: (model, name, s["method_params"].get(name, {}), ctx.batch_size,
                                                          x[idx], targets[idx]),
                       _maps_chunk, f"findings maps {name} {model.name}")
        timing.add("maps", res, name)
        out[name] = torch.stack([r["maps"] for r in res])
    return out


def _cascade_chunk(model, names: list[str], params: dict, batch_size: int, seed: int, steps: list[int], thumb: int,
                   x: torch.Tensor, top1: torch.Tensor, ref: dict, pairs: list[tuple[str, int]],
                   progress=None) -> list[dict]:
    """The randomisation cascade of methods ``names`` on photos ``x`` (here, or as an executor task):
    the result of each (method, photo index) of ``pairs``, as :func:`cascade_results` caches them."""
    t0 = time.perf_counter()
    x, top1 = x.to(model.device), top1.to(model.device)
    groups = sanity.model_groups(model, x[:1])
    donor = sanity.fresh_donor(model, seed)

    def explain(work, k):
        view = sanity.randomised_model(model, work, f"top{k}:seed={seed}")
        maps = {}
        for n in names:
            maps[n] = make(n, view, batch_size=batch_size, **params[n]).explain(x, top1).float().cpu()
            if progress is not None:
                progress.update(1)
        return maps

    curves = sanity.randomisation_curves(model.net, groups, donor, steps, ref, explain, thumb=thumb)
    dt = (time.perf_counter() - t0) / max(1, len(x) * len(names))
    return [{"steps": steps, "seconds": dt, "thumbs": curves[n]["thumbs"][:, j].clone(),
             **{m: curves[n][m][:, j].clone() for m in similarity.METRICS}} for n, j in pairs]


def cascade_results(ctx, model, methods: dict, make, items, x, top1, ref: dict, s: dict, timing: Timing) -> dict:
    groups = sanity.model_groups(model, x[:1])
    steps = sanity.choose_steps(len(groups), int(s["cascade_steps"]))
    total = sum(g.numel for g in groups)
    gnames = [g.name for g in groups]
    keys = {(name, i): _key("cascade", model, method=name, params=meth.params, image=it.sha256, target=int(top1[i]),
                            seed=int(s["seed"]), groups=gnames, steps=steps, thumb=int(s["thumb"]))
            for name, meth in methods.items() for i, it in enumerate(items)}
    got = {k: ctx.cache.get(v) for k, v in keys.items()}
    pairs = sorted((p for p, v in got.items() if v is None), key=lambda p: (p[1], list(methods).index(p[0])))
    params = {n: s["method_params"].get(n, {}) for n in methods}

    def args_of(idx):
        ps = [pairs[j] for j in idx]
        photos = sorted({i for _n, i in ps})
        pos = {i: j for j, i in enumerate(photos)}
        names = sorted({n for n, _i in ps})
        return (model, names, params, ctx.batch_size, int(s["seed"]), steps, int(s["thumb"]), x[photos].cpu(),
                top1[photos].cpu(), {n: ref[n][photos, 0].cpu() for n in names}, [(n, pos[i]) for n, i in ps])

    def local(idx):
        args = args_of(idx)
        bar = progress(total=len(steps) * len(args[1]), desc=f"findings {model.name}: randomisation", unit="map")
        try:
            return _cascade_chunk(*args, progress=bar)
        finally:
            bar.close()

    if pairs:  # (method, photo) pairs not cached yet
        got.update(zip(pairs, _results(ctx, [keys[p] for p in pairs], args_of, _cascade_chunk,
                                       f"findings randomisation {model.name}", local=local)))
    for name in methods:
        timing.add("cascade", [v for (n, _i), v in got.items() if n == name], name)
    labels = []
    for k in steps:
        labels.append("all layers" if k == len(groups) else f"{groups[0].name} only" if k == 1 else f"down to {groups[k - 1].name}")
    frac = [sum(g.numel for g in groups[:k]) / total for k in steps]
    per_method = {}
    for name in methods:
        vals = [got[(name, i)] for i in range(len(items))]
        per_method[name] = {m: torch.stack([v[m] for v in vals], 1).numpy() for m in similarity.METRICS}  # S×B
        per_method[name]["thumbs"] = torch.stack([v["thumbs"] for v in vals], 1).float().numpy()  # S×B×t×t
    return {"steps": steps, "labels": labels, "groups": gnames, "fraction": frac, "methods": per_method,
            "n_groups": len(groups)}


def _faith_chunk(model, steps: int, base_colour: list[float], blur: float, batch_size: int, x: torch.Tensor,
                 top1: torch.Tensor, orders: dict, pairs: list[tuple[str, int]], progress=None) -> list[dict]:
    """Deletion/insertion curves of the (order name, photo index) ``pairs`` on photos ``x`` (here, or as
    an executor task)."""
    t0 = time.perf_counter()
    x = x.to(model.device)
    net = base.prepared(model.net, x[:1]).net  # forward passes only: batch norm folded (same logits)
    curves = faithfulness.deletion_insertion(net, x, top1.to(x.device), orders, steps=steps,
                                             baseline=torch.tensor(base_colour), blur_sigma=blur,
                                             batch_size=batch_size, only=set(pairs), progress=progress)
    dt = (time.perf_counter() - t0) / max(1, len(pairs))
    return [{k: curves[n][k][i].clone() for k in faithfulness.CURVES} | {"seconds": dt} for n, i in pairs]


def faithfulness_results(ctx, model, methods: dict, items, x, top1, maps: dict, s: dict, timing: Timing,
                         n_of: dict) -> dict:
    steps = int(s["faithfulness_steps"])
    seed = int(s["seed"])
    base_colour = list(model.spec.mean)
    common = dict(target=None, steps=steps, blur=float(s["blur_sigma"]), baseline=base_colour, seed=seed)
    names = [*methods, *BASELINES]
    n_of = {**n_of, **{b: len(items) for b in BASELINES}}
    keys = {}
    for name in names:
        params = methods[name].params if name in methods else None
        for i, it in enumerate(items[: n_of[name]]):
            keys[(name, i)] = _key("faith", model, order=name, params=params, image=it.sha256,
                                   **{**common, "target": int(top1[i])})
    got = {k: ctx.cache.get(v) for k, v in keys.items()}
    only = {k for k, v in got.items() if v is None}
    if only:
        b, _, h, w = x.shape
        orders = {name: faithfulness.order_from_maps(maps[name][:, 0], seed) for name in methods}
        for name in methods:  # rows past a method's own n are never evaluated (not in ``only``)
            if len(orders[name]) < b:
                orders[name] = torch.cat([orders[name], faithfulness.random_order(b - len(orders[name]), h * w, seed)])
        orders["random"] = faithfulness.random_order(b, h * w, seed)
        orders["centre"] = faithfulness.centre_order(b, h, w, seed)
    pairs = sorted(only, key=lambda p: (p[1], names.index(p[0])))

    def args_of(idx):
        ps = [pairs[j] for j in idx]
        photos = sorted({i for _n, i in ps})
        pos = {i: j for j, i in enumerate(photos)}
        return (model, steps, base_colour, float(s["blur_sigma"]), ctx.batch_size, x[photos].cpu(), top1[photos].cpu(),
                {n: orders[n][photos].cpu() for n in names if any(m == n for m, _i in ps)},  # in ``names`` order
                [(n, pos[i]) for n, i in ps])

    def local(idx):
        bar = progress(total=faithfulness.n_forward(len(idx), steps, len({pairs[j][1] for j in idx})),
                       desc=f"findings {model.name}: deletion/insertion", unit="img")
        try:
            return _faith_chunk(*args_of(idx), progress=bar)
        finally:
            bar.close()

    if pairs:  # (order, photo) pairs not cached yet
        got.update(zip(pairs, _results(ctx, [keys[p] for p in pairs], args_of, _faith_chunk,
                                       f"findings deletion/insertion {model.name}", local=local)))
    timing.add("faithfulness", list(got.values()), "per order")
    out = {}
    for name in names:
        c = {k: torch.stack([got[(name, i)][k] for i in range(n_of[name])]) for k in faithfulness.CURVES}
        out[name] = {k: c[k].numpy() for k in faithfulness.CURVES} | {f"{k}_auc": faithfulness.auc(c[k]).numpy() for k in faithfulness.CURVES}
    return {"steps": steps, "fractions": faithfulness.fractions(steps).numpy(), "curves": out, "baseline_colour": base_colour}


def _invariance_chunk(view, name: str, params: dict, batch_size: int, shift: list[float], x: torch.Tensor,
                      top1: torch.Tensor, ref: torch.Tensor) -> list[dict]:
    """Map of ``view`` (the model's shift-absorbing copy) on ``x + shift`` against ``ref`` (the trained maps of ``x``)."""
    t0 = time.perf_counter()
    x = x.to(view.device)
    xs = x + torch.tensor(shift, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    got = make(name, view, batch_size=batch_size, **params).explain(xs, top1.to(x.device)).float().cpu()
    ch = invariance.map_change(ref.cpu(), got)
    dt = (time.perf_counter() - t0) / len(x)
    return [{"spearman": float(ch["spearman"][j]), "relative_change": float(ch["relative_change"][j]),
             "seconds": dt} for j in range(len(x))]


def invariance_results(ctx, model, methods: dict, items, x, top1, maps: dict, s: dict, timing: Timing,
                       n_of: dict) -> dict:
    """method → {"spearman", "relative_change"} per photo: map of (model, x) vs map of the
    shift-absorbing copy on x + shift (Kindermans et al. 2017)."""
    shift = [float(v) for v in s["invariance_shift"]]
    view = invariance.shifted_model(model, shift)  # one view for every method: its folded copy is made once
    out = {}
    for name, meth in methods.items():
        n = min(n_of[name], scaled(s, "invariance_images"))
        keys = [_key("invariance", model, method=name, params=meth.params, image=it.sha256, target=int(top1[i]),
                     shift=shift) for i, it in enumerate(items[:n])]
        res = _results(ctx, keys, lambda idx, name=name: (view, name, s["method_params"].get(name, {}), ctx.batch_size,
                                                          shift, x[idx], top1[idx], maps[name][idx, 0]),
                       _invariance_chunk, f"findings invariance {name} {model.name}")
        timing.add("invariance", res, name)
        out[name] = {k: np.array([r[k] for r in res]) for k in ("spearman", "relative_change")}
    return out


def _attack_chunk(model, eps: float, steps: int, tol: float, batch_size: int, x: torch.Tensor, top1: torch.Tensor,
                  region: torch.Tensor) -> list[dict]:
    """The attack on photos ``x`` in batches of ``batch_size`` (a gradient pass keeps every activation
    of its batch): per photo its δ, whether the class was kept, p before/after."""
    t0 = time.perf_counter()
    x = x.to(model.device)
    # on the batch-norm-folded, channels-last copy when the layer it reads is unchanged by folding
    prep, path = base.prepared(model.net, x[:1]), model.module_path(model.spec.gradcam_layer)
    net, layer = ((prep.net, prep.net.get_submodule(path)) if prep.pairs and prep.safe_path(path)
                  else (model.net, model.module(model.spec.gradcam_layer)))
    out = []
    for b in range(0, len(x), max(1, batch_size)):
        xb = x[b : b + max(1, batch_size)]
        r = fragility.attack(net, layer, xb, top1[b : b + len(xb)], region[b : b + len(xb)], eps=eps, steps=steps,
                             max_prob_change=tol)
        out += [{"delta": (r["x"][j] - xb[j]).cpu().clone(), "kept": bool(r["kept"][j]), "p0": float(r["p0"][j]),
                 "p1": float(r["p1"][j])} for j in range(len(xb))]
    dt = (time.perf_counter() - t0) / len(x)
    return [{**o, "seconds": dt} for o in out]


def _fragility_chunk(model, name: str, params: dict, batch_size: int, frac: float, xa: torch.Tensor,
                     xn: torch.Tensor, top1: torch.Tensor, ref: torch.Tensor) -> list[dict]:
    """Top-k overlap of ``ref`` (the maps of the photos) with the maps of the attacked photos
    ``xa`` and of the noisy ones ``xn``."""
    t0 = time.perf_counter()
    k = len(xa)
    both = torch.cat([xa, xn]).to(model.device)
    both = make(name, model, batch_size=batch_size, **params).explain(both, top1.repeat(2).to(both.device)).float().cpu()
    oa, on = fragility.topk_overlap(ref.cpu(), both[:k], frac), fragility.topk_overlap(ref.cpu(), both[k:], frac)
    dt = (time.perf_counter() - t0) / k
    return [{"attack": float(oa[j]), "noise": float(on[j]), "seconds": dt} for j in range(k)]


def fragility_results(ctx, model, methods: dict, items, x, top1, maps: dict, s: dict, timing: Timing,
                      n_of: dict) -> dict:
    """One attack per photo (shared by all methods) and the random control; per method the
    top-k overlap of the map before/after each (Ghorbani et al. 2019)."""
    n = min(len(items), scaled(s, "fragility_images"))
    eps = float(s["fragility_eps"]) / 255.0
    frac = float(s["fragility_topk"])
    items, x, top1 = items[:n], x[:n], top1[:n]
    # the region the attack empties: the top-k pixels of the first listed method's map (saliency by default)
    ref_name = next(iter(methods))
    region = fragility.topk_mask(maps[ref_name][:n, 0], frac)
    tol = float(s["fragility_max_prob_change"])
    akeys = [_key("attack", model, attack_code=4, image=it.sha256, target=int(top1[i]), eps=eps, steps=int(s["fragility_steps"]),
                  ref=ref_name, ref_params=methods[ref_name].params, frac=frac, max_prob_change=tol)
             for i, it in enumerate(items)]

    att = _results(ctx, akeys, lambda idx: (model, eps, int(s["fragility_steps"]), tol, ctx.batch_size, x[idx], top1[idx],
                                            region[idx]),
                   _attack_chunk, f"findings fragility attack {model.name}")
    timing.add("fragility", att, "attack (shared)")
    delta = torch.stack([r["delta"] for r in att]).to(x.device)
    xa = x + delta
    xn = fragility.matched_noise(x, delta, seed=int(s["seed"]))  # the control: each attack's size, random signs
    # the comparison runs on the photos the attack perturbed (on the others attack and control are the photo)
    perturbed = np.array([bool(r["delta"].abs().amax() > 0) for r in att])
    attacked = np.flatnonzero(perturbed).tolist()
    out = {"kept": np.array([r["kept"] for r in att]), "p0": np.array([r["p0"] for r in att]), "attacked": perturbed,
           "p1": np.array([r["p1"] for r in att]), "eps255": float(s["fragility_eps"]), "frac": frac, "methods": {}}
    for name, meth in methods.items():
        photos = [i for i in attacked if i < min(n, n_of[name])]
        keys = [_key("fragility", model, method=name, params=meth.params, image=items[i].sha256, target=int(top1[i]),
                     attack=stable_hash(akeys[i]), control="matched", seed=int(s["seed"])) for i in photos]
        res = _results(ctx, keys, lambda idx, name=name, photos=photos: (
                           model, name, s["method_params"].get(name, {}), ctx.batch_size, frac,
                           *(a[[photos[j] for j in idx]] for a in (xa, xn, top1, maps[name][:, 0]))),
                       _fragility_chunk, f"findings fragility {name} {model.name}")
        timing.add("fragility", res, name)
        out["methods"][name] = {k: np.array([r[k] for r in res]) for k in ("attack", "noise")}
    return out


def _units_chunk(model, layers: list[str], chunk: list[str], cap: int, per: int, batch_size: int,
                 x: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Selectivity and single-unit ablation cost of the catalogued units of the layers ``chunk``
    (of the model's conv ``layers``) on photos ``x`` with ``labels``: one result per layer (here,
    or as an executor task). Forward passes only, so the batch-norm-folded copy serves the layers
    folding leaves unchanged; each network's responses and logits come from one shared pass."""
    x = x.to(model.device)
    prep = base.prepared(model.net, x[:1])
    safe = [l for l in layers if prep.pairs and prep.safe_path(model.module_path(l))]
    shared: dict = {}
    out = []
    for layer in chunk:
        t0 = time.perf_counter()
        net = prep.net if layer in safe else model.net
        mods = ({l: prep.net.get_submodule(model.module_path(l)) for l in safe} if layer in safe
                else {l: model.module(l) for l in layers if l not in safe})
        if id(net) not in shared:
            shared[id(net)] = selectivity.responses_and_logits(net, mods, x, batch_size)
        resp, logits = shared[id(net)]
        resp, module = resp[layer], mods[layer]
        C = resp.shape[1]
        chans = list(range(C if cap <= 0 else min(C, cap)))
        if per > 0:
            chans = chans[:per]
        try:
            ab = selectivity.ablation_costs(net, module, chans, x, labels, batch_size, base_logits=logits)
        except (ValueError, RuntimeError) as e:  # a layer inside a skip connection cannot be ablated this way
            out.append({"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0})
            continue
        sel = selectivity.selectivity_index(resp[:, chans], labels.tolist())
        pref = selectivity.preferred_class(resp[:, chans], labels.tolist())
        acc_drop = ab["base_correct"].float().mean().item() - ab["correct"].float().mean(1).numpy()
        prob_drop = ab["base_prob"].mean().item() - ab["prob"].mean(1).numpy()
        # arrays as tensors: the cache reads back only what torch.load(weights_only=True) allows
        out.append({"channels": chans, "selectivity": torch.from_numpy(np.asarray(sel)),
                    "preferred": torch.from_numpy(np.asarray(pref)), "acc_drop": torch.from_numpy(np.asarray(acc_drop)),
                    "prob_drop": torch.from_numpy(np.asarray(prob_drop)),
                    "base_acc": ab["base_correct"].float().mean().item(), "seconds": time.perf_counter() - t0})
    return out


def unit_results(ctx, model, s: dict, timing: Timing) -> dict | None:
    """Selectivity and single-unit ablation cost of the catalogued units (Morcos et al. 2018);
    the layers' results computed here in one go, or with ``--executor ray`` as tasks of layers."""
    n = scaled(s, "selectivity_images")
    photos = _folder_photos(ctx, str(s["probe_folder"]), n)
    if len({p.imagenet_index for p in photos}) < 2:
        return None
    atlas = ctx.settings.get("atlas") or {}
    cap = int(atlas.get("max_channels_per_layer", 16) or 0)
    per = int(s["ablation_units_per_layer"])
    layers = [l for l in ctx.layers(model) if model.spec.layer(l).kind == "conv"]
    labels = torch.tensor([p.imagenet_index for p in photos])
    listing = stable_hash([[p.sha256, p.imagenet_index] for p in photos])
    out = {"n": len(photos), "n_classes": int(len(set(labels.tolist()))), "layers": {}}
    keys = [_key("units", model, units_code=2, layer=layer, photos=listing, cap=cap, per=per) for layer in layers]
    x = []  # the photos' batch, made once and only when a layer is computed

    def args_of(idx):
        if not x:
            x.append(ctx.batch(model, photos))
        return (model, layers, [layers[i] for i in idx], cap, per, ctx.batch_size, x[0], labels)

    res = _results(ctx, keys, args_of, _units_chunk, f"findings units {model.name}", unit=1)
    for layer, r in zip(layers, res):
        timing["units"] = timing.get("units", 0.0) + r["seconds"]
        if "error" in r:
            _say(f"findings {model.name}: units of {layer} not ablated ({r['error']})")
            continue
        r = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in r.items()}
        rho = selectivity.rank_correlation(r["selectivity"], r["prob_drop"])
        boot = []
        rng = np.random.default_rng(int(s["seed"]))
        m = len(r["channels"])
        for _ in range(500):
            i = rng.integers(0, m, m)
            boot.append(selectivity.rank_correlation(np.asarray(r["selectivity"])[i], np.asarray(r["prob_drop"])[i]))
        lo, hi = np.quantile(boot, [0.025, 0.975]) if m > 2 else (float("nan"), float("nan"))
        out["layers"][layer] = {**r, "rho": bootstrap.Interval(rho, float(lo), float(hi), m)}
    return out


#: photos per cached block of the accuracy count (blocks are the same in a local and a distributed build)
ACCURACY_BLOCK = 50


def _accuracy_chunk(model, blocks: list[list[tuple[str, int]]], classes: list[int], batch_size: int,
                    bar=None) -> list[dict]:
    """Hit counts of blocks of labelled photo files (here, or as an executor task)."""
    out = []
    for files in blocks:
        t0 = time.perf_counter()
        r = model_table.accuracy_counts(model.net, model.spec, [(Path(p), c) for p, c in files], classes,
                                        batch_size, model.device)
        out.append(r | {"seconds": time.perf_counter() - t0})
        if bar is not None:
            bar.update(len(files))
    return out


def accuracy_results(ctx, model, s: dict, timing: Timing) -> dict | None:
    """Measured accuracy on a labelled folder: counted in blocks of photos (cached per block; with
    ``--executor ray`` the blocks are tasks), summed here."""
    folder = str(s.get("accuracy_folder") or "")
    if not folder:
        return None
    path = ctx.config.resolve_path(folder)
    if not path.is_dir():
        return {"error": f"folder {folder} not found", "folder": folder}
    wmap = model_table.read_wnid_map(path)
    if not wmap:
        return {"error": f"no WordNet-id → ImageNet-index table (README.md) found for {folder}", "folder": folder}
    files = model_table.list_imagefolder(path, wmap, int(s["accuracy_max_images"]) or None)
    if not files:
        return {"error": f"no labelled photos in {folder}", "folder": folder}
    classes = sorted({c for _p, c in files})
    blocks = [files[i:i + ACCURACY_BLOCK] for i in range(0, len(files), ACCURACY_BLOCK)]
    keys = [_key("accuracy-block", model, classes=classes,
                 files=stable_hash([[str(p.relative_to(path)), p.stat().st_size, c] for p, c in b])) for b in blocks]

    def args_of(idx):
        return (model, [[(str(p), c) for p, c in blocks[i]] for i in idx], classes, ctx.batch_size)

    def local(idx):
        bar = progress(total=sum(len(blocks[i]) for i in idx), desc=f"findings {model.name}: accuracy", unit="img")
        try:
            return _accuracy_chunk(*args_of(idx), bar=bar)
        finally:
            bar.close()

    res = _results(ctx, keys, args_of, _accuracy_chunk, f"findings accuracy {model.name}", unit=1, local=local)
    timing["accuracy"] = timing.get("accuracy", 0.0) + sum(r["seconds"] for r in res)
    return model_table.accuracy_from_counts(res, classes) | {"folder": folder, "error": None}


def model_rows(ctx, s: dict, accuracy: dict) -> list[dict]:
    names = [get_spec(n).name for n in ctx.config["models"]]
    for m in ctx.models:
        if m.name not in names:
            names.append(m.name)
    loaded = {m.name: m for m in ctx.models}
    rows = []
    for name in names:
        spec = get_spec(name)
        cost = ctx.cache.get_or_compute({"what": "findings-arch-cost", "v": CODE_VERSION, "arch": spec.arch,
                                         "family": spec.family, "input": spec.input_size, "kw": spec.build_kwargs},
                                        lambda spec=spec: model_table.architecture_cost(spec))
        row = {"name": name, "title": spec.title, "cost": cost, "loaded": name in loaded,
               "missing": ctx.missing.get(name), "curated": None, "folder": accuracy.get(name)}
        if name in loaded:
            model = loaded[name]
            known = [i for i, it in enumerate(ctx.images) if it.imagenet_index is not None]
            if known:
                logits = ctx.logits(model)[known]
                labels = torch.tensor([ctx.images[i].imagenet_index for i in known])
                h = model_table.topk_hits(logits, labels)
                row["curated"] = {"n": len(known), "top1": float(h[1].float().mean()), "top5": float(h[5].float().mean())}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ summarising


def and_list(xs) -> str:
    """["a", "b", "c"] → "a, b and c" (for sentences built from data)."""
    xs = [str(x) for x in xs]
    if not xs:
        return "none"
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def fixed(v, nd: int = 2) -> str:
    """Number for a table: fixed decimals, a real minus sign, NaN as an en dash."""
    v = float(v)
    if v != v:
        return "–"
    return f"{v:.{nd}f}".replace("-", "−")


def _ci(v, seed: int = 0) -> bootstrap.Interval:
    return bootstrap.mean_ci(np.asarray(v, dtype=np.float64), seed=seed)


def summarise_model(model, titles, cascade, cls, fai, inv, frag, s, expensive) -> dict:
    """Per-method numbers (each a mean with its 95 % bootstrap interval and n) and verdicts
    that are printed only when the interval clears the threshold (all statements come from here)."""
    sanity_t, class_t, top_layer_t = (float(s[k]) for k in ("sanity_threshold", "class_threshold", "top_layer_threshold"))
    inv_t = float(s["invariance_threshold"])
    seed = int(s["seed"])
    V = bootstrap.verdict
    methods = list(cascade["methods"])
    rows = []
    for name in methods:
        c = cascade["methods"][name]
        f = fai["curves"][name]
        nm = len(f["deletion_auc"])
        rnd, cen = fai["curves"]["random"], fai["curves"]["centre"]
        r = {"name": name, "title": titles[name], "expensive": name in expensive,
             "cascade": [_ci(v, seed) for v in c["spearman"]],
             "last": {m: _ci(c[m][-1], seed) for m in similarity.METRICS},
             "cascade_mean": _ci(np.asarray(c["spearman"]).mean(0), seed),
             "class_low": {m: _ci(v, seed) for m, v in cls[name]["low"].items()},
             "deletion": _ci(f["deletion_auc"], seed), "insertion": _ci(f["insertion_auc"], seed),
             "vs_random": _ci((rnd["deletion_auc"][:nm] - f["deletion_auc"]) + (f["insertion_auc"] - rnd["insertion_auc"][:nm]), seed),
             "vs_centre": _ci((cen["deletion_auc"][:nm] - f["deletion_auc"]) + (f["insertion_auc"] - cen["insertion_auc"][:nm]), seed),
             "invariance": _ci(inv[name]["spearman"], seed), "invariance_change": _ci(inv[name]["relative_change"], seed)}
        fr = frag["methods"].get(name)
        if fr is not None:
            r["fragility_attack"] = _ci(fr["attack"], seed)
            r["fragility_noise"] = _ci(fr["noise"], seed)
            r["fragility_drop"] = _ci(fr["noise"] - fr["attack"], seed)
            r["fragility_verdict"] = V(r["fragility_drop"], 1e-12, "fragile", "not more than noise")
        else:
            r["fragility_verdict"] = "not measured"
        r["sanity_verdict"] = V(r["cascade_mean"], sanity_t, "fails", "passes")
        r["fails_randomisation"] = r["sanity_verdict"] == "fails"
        r["ignores_top"] = bool(cascade["steps"] and cascade["steps"][0] == 1 and cascade["n_groups"] > 1
                                and V(r["cascade"][0], top_layer_t, "yes", "no") == "yes")
        below = [lab for lab, iv in zip(cascade["labels"], r["cascade"]) if np.isfinite(iv.hi) and iv.hi < sanity_t]
        r["first_below"] = below[0] if below else None
        r["class_verdict"] = V(r["class_low"]["spearman"], class_t, "class-insensitive", "changes with the class")
        r["class_insensitive"] = r["class_verdict"] == "class-insensitive"
        r["random_verdict"] = V(r["vs_random"], 1e-12, "better than random", "not better than random")
        r["centre_verdict"] = V(r["vs_centre"], 1e-12, "better than centre prior", "not better than centre prior")
        r["invariance_verdict"] = V(r["invariance"], inv_t, "invariant", "not invariant")
        r["combined"] = r["insertion"].mean - r["deletion"].mean
        rows.append(r)
    base = {b: {"deletion": _ci(fai["curves"][b]["deletion_auc"], seed), "insertion": _ci(fai["curves"][b]["insertion_auc"], seed)}
            for b in BASELINES}
    by_comb = sorted(rows, key=lambda r: -r["combined"])
    for rank, r in enumerate(by_comb, 1):
        r["faith_rank"] = rank
    pick = lambda key, val: [r["title"] for r in rows if r[key] == val]
    undecided = lambda key: [r["title"] for r in rows if not bootstrap.decided(r[key])]
    return {
        "model": model, "rows": rows, "baselines": base, "units": None,
        "fails": pick("sanity_verdict", "fails"), "passes": pick("sanity_verdict", "passes"),
        "sanity_undecided": undecided("sanity_verdict"),
        "insensitive": pick("class_verdict", "class-insensitive"), "sensitive": pick("class_verdict", "changes with the class"),
        "class_undecided": undecided("class_verdict"),
        "ignores_top": [r["title"] for r in rows if r["ignores_top"]],
        "top_group": cascade["labels"][0] if cascade["steps"] and cascade["steps"][0] == 1 else None,
        "best_deletion": min(rows, key=lambda r: r["deletion"].mean) if rows else None,
        "best_insertion": max(rows, key=lambda r: r["insertion"].mean) if rows else None,
        "best_combined": by_comb[0] if by_comb else None,
        "better_than_random": pick("random_verdict", "better than random"),
        "not_better_than_random": pick("random_verdict", "not better than random"),
        "random_undecided": undecided("random_verdict"),
        "not_better_than_centre": pick("centre_verdict", "not better than centre prior"),
        "faithful_but_flagged": [r["title"] for r in rows if r["random_verdict"] == "better than random"
                                 and (r["fails_randomisation"] or r["class_insensitive"])],
        "invariant": pick("invariance_verdict", "invariant"), "not_invariant": pick("invariance_verdict", "not invariant"),
        "fragile": pick("fragility_verdict", "fragile"),
        "fragility": {"kept": float(np.mean(frag["kept"])) if len(frag["kept"]) else float("nan"), "n": int(len(frag["kept"])),
                      "attacked": float(np.mean(frag["attacked"])) if len(frag["attacked"]) else float("nan"),
                      "dp": _ci(np.abs(frag["p1"] - frag["p0"]), seed), "eps255": frag["eps255"], "frac": frag["frac"]},
        "labels": cascade["labels"], "fraction": cascade["fraction"], "n_groups": cascade["n_groups"],
        "n_images": max((len(fai["curves"][m]["deletion_auc"]) for m in methods), default=0),
        "n_sanity": max((int(cascade["methods"][m]["spearman"].shape[1]) for m in methods), default=0),
    }


def cross_model(summaries: list[dict]) -> dict:
    """Which verdicts agree across models (only over models that were measured)."""
    if not summaries:
        return {}
    sets = lambda key: [set(sm[key]) for sm in summaries]
    fail_all = set.intersection(*sets("fails"))
    fail_any = set.union(*sets("fails"))
    ins_all = set.intersection(*sets("insensitive"))
    ins_any = set.union(*sets("insensitive"))
    best = {sm["model"].name: sm["best_combined"]["title"] for sm in summaries if sm["best_combined"]}
    return {"fail_all": sorted(fail_all), "fail_some": sorted(fail_any - fail_all),
            "ins_all": sorted(ins_all), "ins_some": sorted(ins_any - ins_all),
            "best_agree": len(set(best.values())) == 1, "best": best}


# ------------------------------------------------------------------------------------ stage


def run(ctx) -> None:
    s = ctx.stage_settings("findings")
    t_stage = time.perf_counter()
    names = list(s["methods"]) or list(ATTRIBUTION_METHODS)
    titles = {n: ATTRIBUTION_METHODS[n].title for n in names} | BASELINES
    wanted = set(s["models"]) if s["models"] else None
    models = [m for m in ctx.models if wanted is None or m.name in wanted]
    items, source = probe_set(ctx, s) if models else ([], "none")
    expensive = [n for n in names if n in set(s["expensive_methods"])]
    n_of = {n: min(len(items), scaled(s, "expensive_images") if n in expensive else len(items)) for n in names}
    n_sanity = {n: min(n_of[n], scaled(s, "sanity_expensive_images" if n in expensive else "sanity_images"))
                for n in names}
    low_rank = int(s["low_rank"])

    summaries, accuracy, settings_used, importance = [], {}, {}, {}
    for model in models:
        if not items:
            break
        timing = Timing()
        x = ctx.batch(model, items)
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = torch.cat([model.net(x[i : i + ctx.batch_size]).float().cpu() for i in range(0, len(x), ctx.batch_size)])
        timing["forward"] = time.perf_counter() - t0
        ranked = logits.argsort(dim=1, descending=True)
        targets = torch.stack([ranked[:, 0], ranked[:, low_rank - 1]], 1)  # N×2: top-1, low-ranked
        top1 = targets[:, 0]
        methods = {n: make(n, model, batch_size=ctx.batch_size, **s["method_params"].get(n, {})) for n in names}
        settings_used[model.name] = {n: m.params for n, m in methods.items()}
        with _step(model, f"maps of {len(names)} methods for 2 classes of up to {len(items)} photos"):
            maps = trained_maps(ctx, model, methods, items, x, targets, timing, n_of, s)
        cls = {n: {"low": {k: v.numpy() for k, v in similarity.compare(maps[n][:, 0], maps[n][:, 1]).items()}}
               for n in names}
        cascade = {}
        for group in ([n for n in names if n not in expensive], expensive):
            if not group:
                continue
            k = n_sanity[group[0]]
            part = cascade_results(ctx, model, {n: methods[n] for n in group}, make, items[:k], x[:k], top1[:k],
                                   {n: maps[n][:k] for n in group}, s, timing)
            cascade = {**part, "methods": {**cascade.get("methods", {}), **part["methods"]}}
        cascade["methods"] = {n: cascade["methods"][n] for n in names}
        n_fai = {n: min(k, scaled(s, "faithfulness_images")) for n, k in n_of.items()}
        k_fai = max(n_fai.values())
        fai = faithfulness_results(ctx, model, methods, items[:k_fai], x[:k_fai], top1[:k_fai], maps, s, timing, n_fai)
        with _step(model, "input invariance"):
            inv = invariance_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of)
        with _step(model, "fragility"):
            frag = fragility_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of) if model.spec.gradcam_layer \
                else {"kept": np.array([]), "attacked": np.array([]), "p0": np.array([]), "p1": np.array([]), "eps255": float(s["fragility_eps"]),
                      "frac": float(s["fragility_topk"]), "methods": {}}
        with _step(model, "unit selectivity and single-unit ablation"):
            units = unit_results(ctx, model, s, timing)
        accuracy[model.name] = accuracy_results(ctx, model, s, timing)
        sm = summarise_model(model, titles, cascade, cls, fai, inv, frag, s, expensive)
        sm["units"] = units
        sm["n_images"] = len(items)
        if units:
            for layer, u in units["layers"].items():
                for j, c in enumerate(u["channels"]):
                    importance[(model.name, layer, int(c))] = {
                        "selectivity": float(u["selectivity"][j]), "acc_drop": float(u["acc_drop"][j]),
                        "prob_drop": float(u["prob_drop"][j]), "preferred": model.labels[int(u["preferred"][j])],
                        "n": units["n"], "n_classes": units["n_classes"], "rho": u["rho"].as_dict(),
                        "rank": int((np.asarray(u["prob_drop"]) > u["prob_drop"][j]).sum()) + 1, "of": len(u["channels"])}
        sm["photos"] = [{"id": it.id, "title": it.title, "top1": model.labels[int(t[0])], "low": model.labels[int(t[1])]}
                        for it, t in zip(items, targets)]
        sm["figures"] = _figures(ctx, model, names, titles, cascade, cls, fai, maps, items, x, s, low_rank, sm)
        summaries.append(sm)
        _say(f"findings {model.name}: computed-once costs " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))
        if timing.per_photo:
            _say(f"findings {model.name}: seconds per 100 photos (as measured when computed): {timing.per_100()}")

    rows = model_rows(ctx, s, accuracy)
    headline = headline_numbers(summaries, s)
    ctx.provide("unit_importance", importance)
    ctx.provide("findings_summary", headline)
    _write_pages(ctx, s, names, titles, summaries, rows, settings_used, items, n_sanity, low_rank,
                 source=source, n_of=n_of, expensive=expensive)
    path = ctx.site.out / "findings" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(headline, indent=1, sort_keys=True).encode("utf-8"))
    _say(f"findings: stage wall time this build {time.perf_counter() - t_stage:.1f} s")


def headline_numbers(summaries: list[dict], s: dict) -> dict:
    """Per model and method: each check's mean, interval, n and verdict (JSON-able; the home page may quote it)."""
    out = {"thresholds": {k: s[k] for k in ("sanity_threshold", "class_threshold", "invariance_threshold")},
           "fragility_eps_255": float(s["fragility_eps"]), "models": {}}
    for sm in summaries:
        per = {}
        for r in sm["rows"]:
            d = {"title": r["title"]}
            for key, vkey in (("cascade_mean", "sanity_verdict"), ("vs_random", "random_verdict"),
                              ("invariance", "invariance_verdict"), ("fragility_drop", "fragility_verdict")):
                if key in r:
                    d[key] = {**r[key].as_dict(), "verdict": r[vkey]}
            d["class_low_spearman"] = {**r["class_low"]["spearman"].as_dict(), "verdict": r["class_verdict"]}
            per[r["name"]] = d
        out["models"][sm["model"].name] = {"title": sm["model"].spec.title, "methods": per,
                                           "fails": sm["fails"], "class_insensitive": sm["insensitive"],
                                           "not_invariant": sm["not_invariant"], "fragile": sm["fragile"]}
    return out


def _figure(ctx, rel: str, data, draw) -> str:
    """Draw ``figures/<rel>`` unless the cache holds the bytes drawn from the same data.

    ``data`` is everything the picture depends on (numbers, labels); ``draw(path)``
    writes the file. Returns the path relative to the generated folder.
    """
    path = ctx.figure_path(rel)
    twin = download_png(path)  # a raster figure's lossless PNG for its download link
    key = {"what": "findings-figure", "v": CODE_VERSION, "rel": rel, "data": stable_hash(_plain(data))}
    blob = ctx.cache.get(key)
    if blob is None or (twin is not None and "png" not in blob):
        draw(path)
        blob = ctx.cache.put(key, {"bytes": path.read_bytes(), **({"png": twin.read_bytes()} if twin else {})})
    if not path.is_file() or path.read_bytes() != blob["bytes"]:
        atomic_write_bytes(path, blob["bytes"])
    if twin is not None:
        write_bytes_if_changed(twin, blob["png"])
    return f"figures/{rel}"


def _plain(obj):
    """Numbers/arrays/dicts → JSON-able (arrays rounded to 6 decimals) for figure keys."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        a = np.asarray(obj, dtype=np.float64)
        return [list(a.shape), np.round(a, 6).ravel().tolist()]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _figures(ctx, model, names, titles, cascade, cls, fai, maps, items, x, s, low_rank, sm) -> dict:
    base = f"findings/{model.name}"
    title = model.spec.title
    ext = s["figure_format"]
    sanity_t = float(s["sanity_threshold"])
    figs = {}
    curves = {n: {m: cascade["methods"][n][m] for m in similarity.METRICS} for n in names}
    figs["sanity"] = _figure(ctx, f"{base}/sanity.{ext}", [cascade["labels"], curves, titles, title, sanity_t],
                             lambda p: plots.cascade_curves(p, cascade["labels"], curves, titles, title, sanity_t))
    for n in names:
        figs[f"sanity-{n}"] = _figure(
            ctx, f"{base}/sanity-{n}.{ext}", [cascade["labels"], curves[n], titles[n], title, sanity_t],
            lambda p, n=n: plots.method_cascade(p, cascade["labels"], curves[n], titles[n], title, sanity_t))
    t = int(s["thumb"])
    first = {}
    for n in names:
        trained = sanity.thumbnails(maps[n][:1, 0], t).float().numpy()  # 1×t×t
        first[n] = np.concatenate([trained, cascade["methods"][n]["thumbs"][:, 0]], 0)
    figs["sanity_maps"] = _figure(ctx, f"{base}/sanity-maps.webp", [cascade["labels"], first, titles, title, items[0].title],
                                  lambda p: plots.cascade_maps(p, cascade["labels"], first, titles, title, items[0].title))
    rows = {r["name"]: r for r in sm["rows"]}
    labels = [titles[n] for n in names]
    tri = lambda iv: (iv.mean, iv.lo, iv.hi)
    series = {f"top-1 vs class ranked {low_rank}": [tri(rows[n]["class_low"]["spearman"]) for n in names]}
    figs["class"] = _figure(ctx, f"{base}/class.{ext}", [labels, series, float(s["class_threshold"])],
                            lambda p: plots.interval_bars(p, labels, series, f"{title}: does the map change with the class?",
                                                          "Spearman rank corr. of |map|", float(s["class_threshold"])))
    inv = {"map of the shift-absorbing copy vs original": [tri(rows[n]["invariance"]) for n in names]}
    figs["invariance"] = _figure(ctx, f"{base}/invariance.{ext}", [labels, inv, float(s["invariance_threshold"])],
                                 lambda p: plots.interval_bars(p, labels, inv, f"{title}: input invariance (Kindermans et al.)",
                                                               "Spearman rank corr. of |map|", float(s["invariance_threshold"])))
    fr_names = [n for n in names if "fragility_attack" in rows[n]]
    if fr_names:
        fr_labels = [titles[n] for n in fr_names]
        fr = {"after attack": [tri(rows[n]["fragility_attack"]) for n in fr_names],
              "after random noise, same size": [tri(rows[n]["fragility_noise"]) for n in fr_names]}
        figs["fragility"] = _figure(ctx, f"{base}/fragility.{ext}", [fr_labels, fr, s["fragility_eps"]],
                                    lambda p: plots.interval_bars(p, fr_labels, fr, f"{title}: top-k overlap with the original map",
                                                                  "top-k pixel overlap (1 = unchanged)", None, (0, 1.05)))
    fcurves = {n: {k: fai["curves"][n][k] for k in faithfulness.CURVES} for n in fai["curves"]}
    figs["faithfulness"] = _figure(ctx, f"{base}/faithfulness.{ext}", [fai["fractions"], fcurves, titles, title],
                                   lambda p: plots.faithfulness_curves(p, fai["fractions"], fcurves, titles, title))
    u = sm.get("units")
    if u and u["layers"]:
        pts = {l: (np.asarray(d["selectivity"]), np.asarray(d["prob_drop"])) for l, d in u["layers"].items()}
        figs["units"] = _figure(ctx, f"{base}/selectivity.{ext}", [pts, title],
                                lambda p: plots.selectivity_scatter(p, pts, f"{title}: selectivity vs ablation cost"))
    return figs


def transfer_evidence(ctx) -> dict:
    """The independent-judge table of the configured generator (``[dgn_am] generator``; written by
    ``python -m generator.deepsim.judge_eval``): do class visualisations made on one network transfer
    to another? Each row's top-5 rate with a 95 % bootstrap interval over the classes. ``{"why": …}``
    when there is no table for this generator file (the section says so)."""
    gpath = ctx.config.resolve_path(ctx.stage_settings("dgn_am")["generator"])
    if not gpath.is_file():
        return {"why": f"the generator file {gpath.name} was not found"}
    table, why = read_measurement(gpath.with_suffix(".judge.json"), sha256_file(gpath), judge.COMMAND)
    if table is None:
        return {"why": why or f"not measured for {gpath.name} yet (run `{judge.COMMAND}`)"}
    summary = table.get("summary") or {}
    intervals = transfer.class_intervals(table.get("pairs") or [], [k for k, _t in judge.ROWS if summary.get(k)])
    rows = [{"key": k, "title": t, "top5": bootstrap.Interval(**{f: intervals[k][f] for f in ("mean", "lo", "hi", "n")}),
             "pictures": summary[k]["n"]} for k, t in judge.ROWS if k in intervals]
    return {"rows": rows, "by_key": {r["key"]: r for r in rows}, "contrast": table.get("contrast"),
            "pairs": judge.pair_lines(table, title_of), "by_pair": judge.pair_top5(table, title_of),
            "generator": gpath.name, "n_classes": len(table.get("classes") or []), "steps": table.get("steps"),
            "ppgn_steps": (table.get("ppgn") or {}).get("steps")}


def _write_pages(ctx, s, names, titles, summaries, rows, settings_used, items, n_sanity, low_rank,
                 source: str = "shared", n_of: dict | None = None, expensive=()) -> None:
    ctx.declare(PAGE, "Findings", order=0)
    link = lambda target: ctx.link(PAGE, target)
    missing = [{"name": n, "title": get_spec(n).title, "reason": r} for n, r in ctx.missing.items()]
    not_selected = [m.spec.title for m in ctx.models if m.name not in {sm["model"].name for sm in summaries}]
    common = dict(s=s, names=names, titles=titles, summaries=summaries, rows=rows, missing=missing, items=items,
                  n_sanity=n_sanity, low_rank=low_rank, link=link, command=COMMAND,
                  settings_used=settings_used, cross=cross_model(summaries), not_selected=not_selected,
                  method_link=lambda n: link(f"methods/{n}"), and_list=and_list, fixed=fixed,
                  agreement=ctx.artifact("model_agreement"), ci=bootstrap.fmt, decided=bootstrap.decided,
                  source=source, n_of=n_of or {}, expensive=list(expensive),
                  n_sanity_of=n_sanity, n_max=max((n_of or {"": 0}).values(), default=0),
                  transfer=transfer_evidence(ctx))
    ctx.provide("findings_summaries", summaries)
    ctx.section(PAGE, "", ctx.render("findings/summary.md.j2", **common), order=0)
    ctx.section(PAGE, "Models: size, cost and measured accuracy", ctx.render("findings/model_table.md.j2", **common),
                order=10)
    ctx.section(PAGE, "Sanity check: does the map depend on the learned weights?",
                ctx.render("findings/sanity.md.j2", **common), order=20)
    ctx.section(PAGE, "Class sensitivity: does the map depend on the class?",
                ctx.render("findings/class.md.j2", **common), order=30)
    ctx.section(PAGE, "Faithfulness: deletion and insertion", ctx.render("findings/faithfulness.md.j2", **common),
                order=40)
    ctx.section(PAGE, "Input invariance: does a constant shift of the input change the map?",
                ctx.render("findings/invariance.md.j2", **common), order=42)
    ctx.section(PAGE, "Fragility: does a tiny perturbation move the map?",
                ctx.render("findings/fragility.md.j2", **common), order=44)
    ctx.section(PAGE, "Selectivity is not importance: single units",
                ctx.render("findings/units.md.j2", **common), order=46)
    ctx.section(PAGE, "Class visualisations: does another network recognise them?",
                ctx.render("findings/transfer.md.j2", **common), order=48)
    ctx.section(PAGE, "How these numbers were made", ctx.render("findings/method_notes.md.j2", **common), order=90)
    for n in names:
        page = f"methods/{n}"
        per = [(sm, next(r for r in sm["rows"] if r["name"] == n)) for sm in summaries]
        ctx.section(page, "Sanity checks and faithfulness (measured)", ctx.render(
            "findings/method_section.md.j2", **common, name=n, per=per,
            page_link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
