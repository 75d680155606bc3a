"""Findings stage: is visualisation enough? Measurements, not pictures.

For every model with real weights and every attribution method this stage measures

1. the **model-randomisation sanity check** (Adebayo et al., 2018): layers
   re-initialised top-down on a copy of the model, similarity of every map to the
   trained model's map (Spearman of |map|, SSIM, HOG);
2. **class sensitivity**: the map for the top-1 class vs the map for the 2nd class
   and for a low-ranked class;
3. **faithfulness**: deletion / insertion curves and their areas (Petsiuk et al.,
   2018) beside a random-order and a centre-prior baseline;
4. the **model table**: parameters, multiply-adds, measured accuracy;

and writes the tables, plots and a Findings page whose statements are filled in
from these numbers. Results are cached per (model weights, method + settings,
image, test settings), so a rebuild with nothing changed does no model work.

Config (``[findings]`` in data/config.toml; defaults in :data:`DEFAULTS`)::

    images = 6                  # photos measured per model (known ImageNet class first)
    image_ids = []              # or exactly these image ids
    sanity_images = 3           # of those, how many go through the randomisation cascade
    cascade_steps = 4           # measured cascade steps (0 = every catalogued layer group)
    seed = 0                    # random re-initialisation and tie-breaking
    low_rank = 500              # class sensitivity: "a low-ranked class" = this rank (1 = top)
    faithfulness_steps = 16     # points on each deletion/insertion curve, minus one
    blur_sigma = 5.0            # insertion starts from a Gaussian blur (11-px kernel)
    sanity_threshold = 0.5      # flag: Spearman averaged over the cascade steps ≥ this
    top_layer_threshold = 0.9   # note: Spearman ≥ this with only the output layer random
    class_threshold = 0.8       # flag: mean Spearman(top-1 map, low-class map) ≥ this
    accuracy_folder = "../shared/imagenette/val"   # ImageFolder of labelled photos ("" = none)
    accuracy_max_images = 500   # balanced subset of it (0 = all)
    methods = []                # attribution methods (default: all)
    models = []                 # default: every model with weights
    [findings.method_params.smoothgrad]     # over the class's findings_params, which are
    samples = 12                            # cheaper than the galleries' settings
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..methods import attribution, base, relu_rules
from ..methods.attribution import ATTRIBUTION_METHODS, make
from ..metrics import faithfulness
from ..metrics import model_table
from ..metrics import plots
from ..metrics import sanity
from ..metrics import similarity
from ..models import get_spec
from ..util import atomic_write_bytes, progress, stable_hash

CODE_VERSION = 1
#: "findings_summaries": the per-model summaries (summarise_model); the home page quotes its headline numbers
PROVIDES = ("findings_summaries",)
NEEDS: tuple[str, ...] = ()
USES = ("model_agreement",)  # how much models agree per method (compare stage), quoted in "Across models"
PAGE = "findings/index"
ORDER = 70  # method-page sections after the galleries

DEFAULTS: dict = {
    "images": 6,
    "image_ids": [],
    "sanity_images": 3,
    "cascade_steps": 4,
    "seed": 0,
    "low_rank": 500,
    "faithfulness_steps": 16,
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
    if not 2 < s["low_rank"] <= 1000:
        raise ConfigError(f"[findings] low_rank = {s['low_rank']}: must be in 3..1000")
    return s


def select_items(ctx, s: dict) -> list:
    items = list(ctx.images)
    if s["image_ids"]:
        by_id = {it.id: it for it in items}
        unknown = [i for i in s["image_ids"] if i not in by_id]
        if unknown:
            raise KeyError(f"[findings].image_ids: unknown image id(s) {', '.join(unknown)}")
        return [by_id[i] for i in s["image_ids"]]
    known = [it for it in items if it.imagenet_index is not None]
    rest = [it for it in items if it.imagenet_index is None]
    return (known + rest)[: max(1, int(s["images"]))]


# ------------------------------------------------------------------------------------ computing


@functools.lru_cache(maxsize=1)
def methods_fingerprint() -> str:
    """Hash of the attribution code's source: a change there invalidates cached maps."""
    return stable_hash([Path(m.__file__).read_text(encoding="utf-8") for m in (attribution, relu_rules, base)])[:16]


def _key(what: str, model, **kw) -> dict:
    return {"what": f"findings-{what}", "v": CODE_VERSION, "model": model.cache_id, "code": methods_fingerprint(),
            "input": model.spec.preprocess.key, **kw}


def trained_maps(ctx, model, methods: dict, items, x, targets: torch.Tensor, timing: dict) -> dict[str, torch.Tensor]:
    """method → N×3×H×W maps for (top-1, 2nd, low-ranked) classes; one batch per method."""
    out = {}
    for name, meth in methods.items():
        keys = [_key("maps", model, method=name, params=meth.params, image=it.sha256, targets=targets[i].tolist())
                for i, it in enumerate(items)]

        def compute(idx, name=name, meth=meth):
            t0 = time.perf_counter()
            n = len(idx)
            xx = x[idx].repeat(3, 1, 1, 1)
            tt = targets[idx].T.reshape(-1).to(x.device)  # all top-1, then all 2nd, then all low
            maps = meth.explain(xx, tt).float().cpu().view(3, n, *x.shape[-2:]).transpose(0, 1)
            dt = (time.perf_counter() - t0) / n
            return [{"maps": maps[j].clone(), "seconds": dt} for j in range(n)]

        res = ctx.cache.batched(keys, compute)
        timing["maps"] = timing.get("maps", 0.0) + sum(r["seconds"] for r in res)
        out[name] = torch.stack([r["maps"] for r in res])
    return out


def cascade_results(ctx, model, methods: dict, make, items, x, top1, ref: dict, s: dict, timing: dict) -> dict:
    groups = sanity.model_groups(model, x[:1])
    steps = sanity.choose_steps(len(groups), int(s["cascade_steps"]))
    total = sum(g.numel for g in groups)
    gnames = [g.name for g in groups]
    keys = {(name, i): _key("cascade", model, method=name, params=meth.params, image=it.sha256, target=int(top1[i]),
                            seed=int(s["seed"]), groups=gnames, steps=steps, thumb=int(s["thumb"]))
            for name, meth in methods.items() for i, it in enumerate(items)}
    got = {k: ctx.cache.get(v) for k, v in keys.items()}
    missing = sorted({i for (name, i), v in got.items() if v is None})
    todo = sorted({name for (name, i), v in got.items() if v is None})
    if missing:
        t0 = time.perf_counter()
        donor = sanity.fresh_donor(model, int(s["seed"]))
        xm, tm = x[missing], top1[missing].to(x.device)
        bar = progress(total=len(steps) * len(todo), desc=f"findings {model.name}: randomisation", unit="map")

        def explain(work, k):
            view = sanity.randomised_model(model, work, f"top{k}:seed={s['seed']}")
            maps = {}
            for name in todo:
                meth = make(name, view, batch_size=ctx.batch_size, **s["method_params"].get(name, {}))
                maps[name] = meth.explain(xm, tm).float().cpu()
                bar.update(1)
            return maps

        try:
            curves = sanity.randomisation_curves(model.net, groups, donor, steps, {n: ref[n][missing, 0] for n in todo},
                                             explain, thumb=int(s["thumb"]))
        finally:
            bar.close()
        del donor
        dt = (time.perf_counter() - t0) / max(1, len(missing) * len(todo))
        for name in todo:
            c = curves[name]
            for j, i in enumerate(missing):
                val = {"steps": steps, "seconds": dt, "thumbs": c["thumbs"][:, j].clone(),
                       **{m: c[m][:, j].clone() for m in similarity.METRICS}}
                got[(name, i)] = ctx.cache.put(keys[(name, i)], val)
    timing["cascade"] = timing.get("cascade", 0.0) + sum(v["seconds"] for v in got.values())
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


def faithfulness_results(ctx, model, methods: dict, items, x, top1, maps: dict, s: dict, timing: dict) -> dict:
    steps = int(s["faithfulness_steps"])
    seed = int(s["seed"])
    base_colour = list(model.spec.mean)
    common = dict(target=None, steps=steps, blur=float(s["blur_sigma"]), baseline=base_colour, seed=seed)
    names = [*methods, *BASELINES]
    keys = {}
    for name in names:
        params = methods[name].params if name in methods else None
        for i, it in enumerate(items):
            keys[(name, i)] = _key("faith", model, order=name, params=params, image=it.sha256,
                                   **{**common, "target": int(top1[i])})
    got = {k: ctx.cache.get(v) for k, v in keys.items()}
    only = {k for k, v in got.items() if v is None}
    if only:
        t0 = time.perf_counter()
        b, _, h, w = x.shape
        orders = {name: faithfulness.order_from_maps(maps[name][:, 0], seed) for name in methods}
        orders["random"] = faithfulness.random_order(b, h * w, seed)
        orders["centre"] = faithfulness.centre_order(b, h, w, seed)
        bar = progress(total=faithfulness.n_forward(len(only), steps), desc=f"findings {model.name}: deletion/insertion", unit="img")
        try:
            curves = faithfulness.deletion_insertion(model.net, x, top1.to(x.device), orders, steps=steps,
                                           baseline=torch.tensor(base_colour), blur_sigma=float(s["blur_sigma"]),
                                           batch_size=ctx.batch_size, only=only, progress=bar)
        finally:
            bar.close()
        dt = (time.perf_counter() - t0) / len(only)
        for name, i in only:
            got[(name, i)] = ctx.cache.put(keys[(name, i)], {k: curves[name][k][i].clone() for k in faithfulness.CURVES}
                                           | {"seconds": dt})
    timing["faithfulness"] = timing.get("faithfulness", 0.0) + sum(v["seconds"] for v in got.values())
    out = {}
    for name in names:
        c = {k: torch.stack([got[(name, i)][k] for i in range(len(items))]) for k in faithfulness.CURVES}
        out[name] = {k: c[k].numpy() for k in faithfulness.CURVES} | {f"{k}_auc": faithfulness.auc(c[k]).numpy() for k in faithfulness.CURVES}
    return {"steps": steps, "fractions": faithfulness.fractions(steps).numpy(), "curves": out, "baseline_colour": base_colour}


def accuracy_results(ctx, model, s: dict, timing: dict) -> dict | None:
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
    listing = stable_hash([[str(p.relative_to(path)), p.stat().st_size, c] for p, c in files])
    key = _key("accuracy", model, files=listing)

    def compute():
        t0 = time.perf_counter()
        bar = progress(total=len(files), desc=f"findings {model.name}: accuracy", unit="img")
        try:
            r = model_table.imagefolder_accuracy(model.net, model.spec, files, ctx.batch_size, ctx.device, progress=bar)
        finally:
            bar.close()
        r["per_class_restricted"] = {int(k): float(v) for k, v in r["per_class_restricted"].items()}
        return r | {"seconds": time.perf_counter() - t0}

    r = ctx.cache.get_or_compute(key, compute)
    timing["accuracy"] = timing.get("accuracy", 0.0) + r["seconds"]
    return r | {"folder": folder, "error": None}


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


def _mean(a) -> float:
    return float(np.mean(a))


def _sd(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarise_model(model, titles, cascade, cls, fai, s) -> dict:
    """Per-method numbers and verdicts for one model (all statements come from here)."""
    sanity_t, class_t, top_layer_t = (float(s[k]) for k in ("sanity_threshold", "class_threshold", "top_layer_threshold"))
    methods = list(cascade["methods"])
    rows = []
    for name in methods:
        c = cascade["methods"][name]
        last = {m: c[m][-1] for m in similarity.METRICS}
        below = [lab for lab, v in zip(cascade["labels"], c["spearman"]) if _mean(v) < sanity_t]
        per_step = [_mean(v) for v in c["spearman"]]
        cascade_mean = float(np.mean(per_step))
        f = fai["curves"][name]
        rows.append({
            "name": name, "title": titles[name],
            "cascade": [(_mean(v), _sd(v)) for v in c["spearman"]],
            "last": {m: (_mean(v), _sd(v)) for m, v in last.items()},
            "cascade_mean": cascade_mean,
            "fails_randomisation": cascade_mean >= sanity_t,
            "ignores_top": bool(cascade["steps"] and cascade["steps"][0] == 1 and cascade["n_groups"] > 1 and per_step[0] >= top_layer_t),
            "first_below": below[0] if below else None,
            "class_second": {m: (_mean(v), _sd(v)) for m, v in cls[name]["second"].items()},
            "class_low": {m: (_mean(v), _sd(v)) for m, v in cls[name]["low"].items()},
            "class_insensitive": _mean(cls[name]["low"]["spearman"]) >= class_t,
            "deletion": (_mean(f["deletion_auc"]), _sd(f["deletion_auc"])),
            "insertion": (_mean(f["insertion_auc"]), _sd(f["insertion_auc"])),
        })
    base = {b: {"deletion": (_mean(fai["curves"][b]["deletion_auc"]), _sd(fai["curves"][b]["deletion_auc"])),
                "insertion": (_mean(fai["curves"][b]["insertion_auc"]), _sd(fai["curves"][b]["insertion_auc"]))}
            for b in BASELINES}
    for r in rows:
        r["beats_random_deletion"] = r["deletion"][0] < base["random"]["deletion"][0]
        r["beats_random_insertion"] = r["insertion"][0] > base["random"]["insertion"][0]
        r["beats_centre_deletion"] = r["deletion"][0] < base["centre"]["deletion"][0]
        r["beats_centre_insertion"] = r["insertion"][0] > base["centre"]["insertion"][0]
        r["combined"] = r["insertion"][0] - r["deletion"][0]
    by_del = sorted(rows, key=lambda r: r["deletion"][0])
    by_ins = sorted(rows, key=lambda r: -r["insertion"][0])
    by_comb = sorted(rows, key=lambda r: -r["combined"])
    for rank, r in enumerate(by_comb, 1):
        r["faith_rank"] = rank
    top_half = by_comb[: (len(by_comb) + 1) // 2]
    return {
        "model": model, "rows": rows, "baselines": base,
        "fails": [r["title"] for r in rows if r["fails_randomisation"]],
        "passes": [r["title"] for r in rows if not r["fails_randomisation"]],
        "insensitive": [r["title"] for r in rows if r["class_insensitive"]],
        "ignores_top": [r["title"] for r in rows if r["ignores_top"]],
        "top_group": cascade["labels"][0] if cascade["steps"] and cascade["steps"][0] == 1 else None,
        "best_deletion": by_del[0] if by_del else None,
        "best_insertion": by_ins[0] if by_ins else None,
        "best_combined": by_comb[0] if by_comb else None,
        "faithful_but_flagged": [r["title"] for r in top_half if r["fails_randomisation"] or r["class_insensitive"]],
        "not_better_than_random": [r["title"] for r in rows if not (r["beats_random_deletion"] and r["beats_random_insertion"])],
        "not_better_than_centre": [r["title"] for r in rows if not (r["beats_centre_deletion"] or r["beats_centre_insertion"])],
        "labels": cascade["labels"], "fraction": cascade["fraction"], "n_groups": cascade["n_groups"],
        "n_images": int(fai["curves"][methods[0]]["deletion_auc"].shape[0]) if methods else 0,
        "n_sanity": int(cascade["methods"][methods[0]]["spearman"].shape[1]) if methods else 0,
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
    items = select_items(ctx, s) if ctx.images else []
    n_sanity = max(1, min(int(s["sanity_images"]), len(items)))
    low_rank = int(s["low_rank"])

    summaries, accuracy, timing_all, settings_used = [], {}, {}, {}
    for model in models:
        if not items:
            break
        timing: dict = {}
        pos = {it.id: i for i, it in enumerate(ctx.images)}
        idx = [pos[it.id] for it in items]
        x = ctx.batch(model, items)
        ranked = ctx.logits(model)[idx].argsort(dim=1, descending=True)
        targets = torch.stack([ranked[:, 0], ranked[:, 1], ranked[:, low_rank - 1]], 1)  # N×3
        top1 = targets[:, 0]
        methods = {n: make(n, model, batch_size=ctx.batch_size, **s["method_params"].get(n, {})) for n in names}
        settings_used[model.name] = {n: m.params for n, m in methods.items()}
        maps = trained_maps(ctx, model, methods, items, x, targets, timing)
        cls = {}
        for n in names:
            cls[n] = {"second": {k: v.numpy() for k, v in similarity.compare(maps[n][:, 0], maps[n][:, 1]).items()},
                      "low": {k: v.numpy() for k, v in similarity.compare(maps[n][:, 0], maps[n][:, 2]).items()}}
        cascade = cascade_results(ctx, model, methods, make, items[:n_sanity], x[:n_sanity], top1[:n_sanity],
                              {n: maps[n][:n_sanity] for n in names}, s, timing)
        fai = faithfulness_results(ctx, model, methods, items, x, top1, maps, s, timing)
        accuracy[model.name] = accuracy_results(ctx, model, s, timing)
        sm = summarise_model(model, titles, cascade, cls, fai, s)
        sm["photos"] = [{"id": it.id, "title": it.title, "top1": model.labels[int(t[0])],
                        "second": model.labels[int(t[1])], "low": model.labels[int(t[2])]}
                       for it, t in zip(items, targets)]
        sm["figures"] = _figures(ctx, model, names, titles, cascade, cls, fai, maps, items, x, s, low_rank)
        summaries.append(sm)
        timing_all[model.name] = timing
        _say(f"findings {model.name}: computed-once costs " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))

    rows = model_rows(ctx, s, accuracy)
    _write_pages(ctx, s, names, titles, summaries, rows, timing_all, settings_used, items, n_sanity, low_rank)
    _say(f"findings: stage wall time this build {time.perf_counter() - t_stage:.1f} s")


def _figure(ctx, rel: str, data, draw) -> str:
    """Draw ``figures/<rel>`` unless the cache holds the bytes drawn from the same data.

    ``data`` is everything the picture depends on (numbers, labels); ``draw(path)``
    writes the file. Returns the path relative to the generated folder.
    """
    path = ctx.figure_path(rel)
    key = {"what": "findings-figure", "v": CODE_VERSION, "rel": rel, "data": stable_hash(_plain(data))}
    blob = ctx.cache.get(key)
    if blob is None:
        draw(path)
        ctx.cache.put(key, {"bytes": path.read_bytes()})
    elif not path.is_file() or path.read_bytes() != blob["bytes"]:
        atomic_write_bytes(path, blob["bytes"])
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


def _figures(ctx, model, names, titles, cascade, cls, fai, maps, items, x, s, low_rank) -> dict:
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
    second = np.stack([cls[n]["second"]["spearman"] for n in names])
    low = np.stack([cls[n]["low"]["spearman"] for n in names])
    class_t = float(s["class_threshold"])
    figs["class"] = _figure(ctx, f"{base}/class.{ext}", [names, second, low, titles, title, low_rank, class_t],
                            lambda p: plots.class_bars(p, names, second, low, titles, title, low_rank, class_t))
    fcurves = {n: {k: fai["curves"][n][k] for k in faithfulness.CURVES} for n in fai["curves"]}
    figs["faithfulness"] = _figure(ctx, f"{base}/faithfulness.{ext}", [fai["fractions"], fcurves, titles, title],
                                   lambda p: plots.faithfulness_curves(p, fai["fractions"], fcurves, titles, title))
    return figs


def _write_pages(ctx, s, names, titles, summaries, rows, timing_all, settings_used, items, n_sanity, low_rank) -> None:
    ctx.declare(PAGE, "Findings", order=0)
    link = lambda target: ctx.link(PAGE, target)
    missing = [{"name": n, "title": get_spec(n).title, "reason": r} for n, r in ctx.missing.items()]
    not_selected = [m.spec.title for m in ctx.models if m.name not in {sm["model"].name for sm in summaries}]
    common = dict(s=s, names=names, titles=titles, summaries=summaries, rows=rows, missing=missing, items=items,
                  n_sanity=n_sanity, low_rank=low_rank, link=link, command=COMMAND, timing=timing_all,
                  settings_used=settings_used, cross=cross_model(summaries), not_selected=not_selected,
                  method_link=lambda n: link(f"methods/{n}"), and_list=and_list, fixed=fixed,
                  agreement=ctx.artifact("model_agreement"))
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
    ctx.section(PAGE, "How these numbers were made", ctx.render("findings/method_notes.md.j2", **common), order=90)
    for n in names:
        page = f"methods/{n}"
        per = [(sm, next(r for r in sm["rows"] if r["name"] == n)) for sm in summaries]
        ctx.section(page, "Sanity checks and faithfulness (measured)", ctx.render(
            "findings/method_section.md.j2", **common, name=n, per=per,
            page_link=lambda t, page=page: ctx.link(page, t)), order=ORDER)
