"""Findings stage: is visualisation enough? Measurements, not pictures.

For every model with real weights and every attribution method, on labelled probe photos read at
build time (:mod:`generator.probes`), the stage measures: the model-randomisation sanity check
(Adebayo et al. 2018, :mod:`..metrics.sanity`); class sensitivity (:mod:`..metrics.class_check`);
deletion/insertion faithfulness against a random-order and a centre-prior baseline (Petsiuk et al.
2018, :mod:`..metrics.faithfulness`; on the first photos again at twice the steps: is the step count enough?); input invariance (Kindermans et al. 2017,
:mod:`..metrics.invariance`); fragility (Ghorbani et al. 2019, :mod:`..metrics.fragility`);
selectivity vs importance, overall and per class, of units drawn at random (Morcos et al. 2018, Zhou
et al. 2018, :mod:`..metrics.selectivity`, handed to the atlas as ``unit_importance``); and the model
table (:mod:`..metrics.model_table`).

Glue only: it picks the photos, calls each check (a function of an explainer callable or of the
model, and of the photos) through :func:`generator.executor.compute` with keys from
:func:`generator.cache.key`, and hands the typed results to :mod:`..metrics.verdicts` (every verdict
and sentence) and :mod:`generator.findings_pages` (figures and pages). The headline numbers go to
the ``findings_summary`` artifact and ``findings/summary.json`` (for the home page).

Config: ``[findings]`` in data/config.toml, keys and defaults in
:data:`generator.findings_settings.DEFAULTS` (one knob, ``n_scale``, multiplies every n; the
``expensive_methods`` get their own, smaller n; the photo counts come from the build's profile).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy as np
import torch

from .. import findings_pages
from ..findings_settings import DEFAULTS, fragility_plan, independent_n, settings  # noqa: F401 - the stage's settings
from ..cache import key
from ..executor import compute
from ..methods.attribution import ATTRIBUTION_METHODS, make
from ..metrics import class_check, faithfulness, fragility, invariance, model_table, sanity, selectivity, verdicts
from ..metrics.verdicts import BASELINES
from ..models import get_spec
from ..probes import _folder_photos, labelled_files, probe_set, scaled
from ..util import atomic_write_bytes, stable_hash

#: "findings_summaries": the per-model summaries (verdicts.ModelSummary)
#: "findings_headlines": [site.Headline] for the home page (verdicts.headlines)
#: "unit_importance": {(model, layer, channel): {"selectivity", "acc_drop", "prob_drop", "n", "preferred",
#:                     "class_drop", "worst_class"}} (the measured units: a random draw per layer)
#: "findings_summary": JSON-able headline numbers per model and method (also findings/summary.json)
PROVIDES: tuple[str, ...] = ("findings_summaries", "findings_headlines", "unit_importance", "findings_summary")
NEEDS: tuple[str, ...] = ()
USES = ("model_agreement",)  # how much models agree per method (compare stage), quoted in "Across models"

#: photos per cached block of the accuracy count (the same blocks wherever they are counted)
ACCURACY_BLOCK = 50


class Timing(dict):
    """Seconds per check, and ``per_photo``: (check, method) → (seconds, photos), for the build log's
    seconds per 100 photos (to tune the n's; as measured when each result was computed)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_photo: dict[tuple[str, str], tuple[float, int]] = {}

    def add(self, check: str, results, method: str = "") -> None:
        sec = sum(float(r.seconds) for r in results)
        self[check] = self.get(check, 0.0) + sec
        if method:
            t, n = self.per_photo.get((check, method), (0.0, 0))
            self.per_photo[(check, method)] = (t + sec, n + len(results))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pairs_args(pairs, idx):
    """The (name, photo) ``pairs`` of a chunk: its photos (sorted), and the pairs with photo positions in them."""
    ps = [pairs[j] for j in idx]
    photos = sorted({i for _n, i in ps})
    pos = {i: j for j, i in enumerate(photos)}
    return ps, photos, [(n, pos[i]) for n, i in ps]


def trained_maps(ctx, model, methods, items, x, targets, timing, n_of, s) -> tuple[dict, dict]:
    """(method → N×K×H×W maps for the K classes per photo (top-1, the second class: `[findings] class_check`),
    method → N×K×H×W signed maps of the same attributions, for the pixel-space methods: the randomisation
    check's trained signed maps)."""
    out, signed = {}, {}
    for name, meth in methods.items():
        keys = [key("findings-maps", model=model, code=class_check.maps_task, method=name, params=meth.params,
                    image=it.sha256, targets=targets[i].tolist()) for i, it in enumerate(items[: n_of[name]])]
        res = compute(ctx, keys, class_check.maps_task, lambda idx, name=name: (
            model, name, s["method_params"].get(name, {}), ctx.batch_size, x[idx], targets[idx]),
            what=f"findings maps {name} {model.name}")
        timing.add("maps", res, name)
        out[name] = torch.stack([r.maps for r in res])
        if res and all(r.signed is not None for r in res):
            signed[name] = torch.stack([r.signed for r in res])
    return out, signed


def _randomised(ctx, model, methods, items, x, top1, ref, sref, s, *, groups, steps, seed, thumb, mode):
    """(method, photo) → :class:`~..metrics.sanity.CascadeMaps` of one randomisation run (``mode``, donor ``seed``)."""
    pairs = [(n, i) for i in range(len(items)) for n in methods]  # photo by photo, as they are batched
    keys = [key(f"findings-{mode}", model=model, code=(sanity.cascade_task, class_check.maps_task), method=n,
                params=methods[n].params, image=items[i].sha256, target=int(top1[i]), seed=seed,
                groups=[g.name for g in groups], steps=steps, thumb=thumb, signed=n in sref) for n, i in pairs]
    params = {n: s["method_params"].get(n, {}) for n in methods}

    def args_of(idx):
        ps, photos, at = _pairs_args(pairs, idx)
        names = sorted({n for n, _i in ps})
        return (model, names, params, ctx.batch_size, seed, steps, thumb, x[photos].cpu(), top1[photos].cpu(),
                {n: ref[n][photos, 0].cpu() for n in names}, at,
                {n: sref[n][photos, 0].cpu() for n in names if n in sref}, mode)

    return dict(zip(pairs, compute(ctx, keys, sanity.cascade_task, args_of, bar_unit="map",
                                   what=f"findings randomisation ({mode}, seed {seed}) {model.name}")))


def cascade_results(ctx, model, methods, items, x, top1, ref, sref, s, timing, n_independent) -> sanity.Cascade:
    """The randomisation check of ``methods`` on ``items``: the cascade with each of ``cascade_seeds`` donor
    seeds (thumbnails for the first), the independent randomisation on the first ``n_independent`` photos
    (first seed), and the trained maps' similarity to the photos' edge maps (no network). ``ref``/``sref``:
    the maps step's maps and signed maps."""
    groups = sanity.model_groups(model, x[:1])
    steps = sanity.choose_steps(len(groups), int(s["cascade_steps"]))
    seeds = sanity.donor_seeds(int(s["seed"]), int(s["cascade_seeds"]))
    run = lambda k, **kw: _randomised(ctx, model, methods, items[:k], x[:k], top1[:k], ref, sref, s,  # noqa: E731
                                      groups=groups, steps=steps, **kw)
    per_seed = [run(len(items), seed=seed, thumb=int(s["thumb"]) if j == 0 else 0, mode="cascade")
                for j, seed in enumerate(seeds)]
    indep = run(n_independent, seed=seeds[0], thumb=0, mode="independent") if n_independent else {}
    for name in methods:
        timing.add("cascade", [v for got in (*per_seed, indep) for (n, _i), v in got.items() if n == name], name)
    names = list(methods)
    ekeys = [key("findings-edges", model=model, code=(sanity.edge_task, class_check.maps_task), method=n,
                 params=methods[n].params, images=[it.sha256 for it in items], targets=top1.tolist()) for n in names]
    edges = compute(ctx, ekeys, sanity.edge_task, lambda idx: ([ref[names[i]][:, 0].cpu() for i in idx], x.cpu()),
                    what=f"findings edge reference {model.name}", unit=1, bar_unit="method")
    of = lambda got, n, k: [got[(n, i)] for i in range(k)]  # noqa: E731
    return sanity.cascade_of(groups, steps, {n: of(per_seed[0], n, len(items)) for n in names}, seeds=seeds,
                             other_seeds={n: [of(got, n, len(items)) for got in per_seed[1:]] for n in names},
                             independent={n: of(indep, n, n_independent) for n in names},
                             edges=dict(zip(names, edges)))


def faithfulness_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of) -> faithfulness.Faithfulness:
    steps, seed, colour, blur = int(s["faithfulness_steps"]), int(s["seed"]), list(model.spec.mean), float(s["blur_sigma"])
    names = [*methods, *BASELINES]
    n_of = {**n_of, **{b: len(items) for b in BASELINES}}
    pairs = [(n, i) for i in range(len(items)) for n in names if i < n_of[n]]
    keys = [key("findings-faith", model=model, code=faithfulness.curves_task, order=n,
                params=methods[n].params if n in methods else None, image=items[i].sha256, target=int(top1[i]),
                steps=steps, blur=blur, baseline=colour, seed=seed) for n, i in pairs]
    orders: dict = {}

    def args_of(idx):
        if not orders:  # only when something is computed
            b, _, h, w = x.shape
            orders.update(faithfulness.orders_of({n: maps[n][:, 0] for n in methods}, b, h, w, seed))
        ps, photos, at = _pairs_args(pairs, idx)
        return (model, steps, colour, blur, ctx.batch_size, x[photos].cpu(), top1[photos].cpu(),
                {n: orders[n][photos].cpu() for n in names if any(m == n for m, _i in ps)}, at)

    got = dict(zip(pairs, compute(ctx, keys, faithfulness.curves_task, args_of,
                                  what=f"findings deletion/insertion {model.name}")))
    timing.add("faithfulness", list(got.values()), "per order")
    fai = faithfulness.faithfulness_of(steps, colour, {n: [got[(n, i)] for i in range(n_of[n])] for n in names})
    # is the step count enough? the first photos' curves again at twice the steps (only the new points)
    k = min(len(items), scaled(s, "faithfulness_check_images")) if int(s["faithfulness_check_images"]) > 0 else 0
    fine = [p for p in pairs if p[1] < k]  # pairs are photo by photo: the first k photos' pairs
    assert fine == pairs[: len(fine)]  # so an index into fine is one into pairs (args_of below)
    fkeys = [key("findings-faith-steps", model=model, code=faithfulness.finer_task, order=n,
                 params=methods[n].params if n in methods else None, image=items[i].sha256, target=int(top1[i]),
                 steps=2 * steps, blur=blur, baseline=colour, seed=seed) for n, i in fine]

    def fine_args(idx):
        *head, at = args_of(idx)
        return (*head, at, [got[fine[j]] for j in idx])

    refined = compute(ctx, fkeys, faithfulness.finer_task, fine_args,
                      what=f"findings deletion/insertion steps {model.name}") if fine else []
    timing.add("faithfulness", refined, "steps × 2")
    fai.step_check = faithfulness.step_check(steps, got, dict(zip(fine, refined))) if fine else None
    return fai


def invariance_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of) -> dict[str, invariance.Invariance]:
    """Per method: its maps on the shift-absorbing copy vs the trained maps; for a method with a remedy
    (:func:`~..metrics.invariance.remedy_params`: IG's baseline moved along with the input) the same photos
    again with it (``Invariance.remedy``)."""
    shift = [float(v) for v in s["invariance_shift"]]
    view = invariance.shifted_model(model, shift)  # one view for every method: its folded copy is made once
    out = {}
    for name, meth in methods.items():
        n = min(n_of[name], scaled(s, "invariance_images"))
        remedy = invariance.remedy_params(name, meth.params, shift)
        runs = [("findings-invariance", meth.params, s["method_params"].get(name, {}), "")]
        runs += [("findings-invariance-remedy", remedy, remedy, " (remedy)")] if remedy is not None else []
        got = []
        for what, params, given, label in runs:
            keys = [key(what, model=model, code=invariance.invariance_task, method=name, params=params,
                        image=it.sha256, target=int(top1[i]), shift=shift) for i, it in enumerate(items[:n])]
            got.append(compute(ctx, keys, invariance.invariance_task, lambda idx, name=name, given=given: (
                view, name, given, ctx.batch_size, shift, x[idx], top1[idx], maps[name][idx, 0]),
                what=f"findings invariance {name}{label} {model.name}"))
            timing.add("invariance", got[-1], name + label)
        out[name] = invariance.Invariance.of(got[0])
        if remedy is not None:
            out[name].remedy, out[name].remedy_params = invariance.Invariance.of(got[1]), remedy
    return out


def fragility_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of) -> fragility.Fragility:
    """Per differentiable method an attack on its own map (Ghorbani et al., on the softplus copy), for the
    others one proxy attack per photo (shared); each with its random control; per method its map's moves."""
    eps, frac, steps = float(s["fragility_eps"]) / 255.0, float(s["fragility_topk"]), int(s["fragility_steps"])
    tol, seed, beta = float(s["fragility_max_prob_change"]), int(s["seed"]), float(s["fragility_softplus_beta"])
    plan = fragility_plan(s, {n: n_of[n] for n in methods}, len(items))
    out = fragility.Fragility.empty(float(s["fragility_eps"]), frac, beta)
    proxy = [n for n, (own, _k) in plan.items() if not own]
    n = max((plan[m][1] for m in proxy), default=0)
    if n:
        ref = next(iter(methods))  # the attack empties the top-k region of the first listed method's map
        region = fragility.topk_mask(maps[ref][:n, 0], frac)
        akeys = [key("findings-attack", model=model, code=fragility.attack_task, image=it.sha256, target=int(top1[i]),
                     eps=eps, steps=steps, ref=ref, ref_params=methods[ref].params, frac=frac, max_prob_change=tol)
                 for i, it in enumerate(items[:n])]
        att = compute(ctx, akeys, fragility.attack_task, lambda idx: (model, eps, steps, tol, ctx.batch_size, x[idx],
                                                                      top1[idx], region[idx]),
                      what=f"findings fragility attack {model.name}")
        timing.add("fragility", att, "attack (shared)")
        out = fragility.Fragility.of(att, float(s["fragility_eps"]), frac, beta)
        delta = torch.stack([r.delta for r in att]).to(x.device)
        shared = (x[:n] + delta, fragility.matched_noise(x[:n], delta, seed=seed), out.attacked, akeys)
    for name, meth in methods.items():
        own, k = plan[name]
        params = s["method_params"].get(name, {})
        if not k:
            continue
        if own:  # its own attack on its first k photos, and its control
            region = fragility.topk_mask(maps[name][:k, 0], frac)
            okeys = [key("findings-own-attack", model=model, code=fragility.own_attack_task, method=name,
                         params=meth.params, image=it.sha256, target=int(top1[i]), eps=eps, steps=steps, frac=frac,
                         max_prob_change=tol, beta=beta) for i, it in enumerate(items[:k])]
            att = compute(ctx, okeys, fragility.own_attack_task, lambda idx, name=name, params=params, region=region: (
                model, name, params, eps, steps, tol, beta, ctx.batch_size, x[idx], top1[idx], region[idx]),
                what=f"findings fragility attack {name} {model.name}")
            timing.add("fragility", att, f"attack {name}")
            stats = fragility.AttackStats.of(att)
            delta = torch.stack([r.delta for r in att]).to(x.device)
            xa, xn = x[:k] + delta, fragility.matched_noise(x[:k], delta, seed=seed)
            attacked, keys_of = stats.attacked, okeys
        else:
            (xa, xn, attacked, keys_of), stats = shared, None
        photos = [i for i in np.flatnonzero(attacked).tolist() if i < k]  # elsewhere both are the photo
        keys = [key("findings-fragility", model=model, code=fragility.overlap_task, method=name, params=meth.params,
                    image=items[i].sha256, target=int(top1[i]), attack=stable_hash(keys_of[i]), control="matched",
                    seed=seed) for i in photos]
        res = compute(ctx, keys, fragility.overlap_task, lambda idx, name=name, params=params, photos=photos, xa=xa,
                      xn=xn: (model, name, params, ctx.batch_size, frac,
                              *(a[[photos[j] for j in idx]] for a in (xa, xn, top1, maps[name][:, 0]))),
                      what=f"findings fragility {name} {model.name}")
        timing.add("fragility", res, name)
        out.methods[name] = fragility.Overlaps.of(res, own, stats)
    return out


def unit_results(ctx, model, s: dict, timing: Timing) -> selectivity.Units | None:
    """Selectivity, single-unit and per-class ablation cost of ``ablation_units_per_layer`` units per layer,
    drawn with the ``seed`` (:func:`~generator.metrics.selectivity.choose_units`), a result per layer."""
    photos = _folder_photos(ctx, str(s["probe_folder"]), scaled(s, "selectivity_images"))
    if len({p.imagenet_index for p in photos}) < 2:
        return None
    per, seed = int(s["ablation_units_per_layer"]), int(s["seed"])
    layers = [l for l in ctx.layers(model) if model.spec.layer(l).kind == "conv"]
    labels = torch.tensor([p.imagenet_index for p in photos])
    listing = stable_hash([[p.sha256, p.imagenet_index] for p in photos])
    keys = [key("findings-units", model=model, code=selectivity.units_task, layer=layer, photos=listing, per=per,
                seed=seed) for layer in layers]
    x = []  # the photos' batch, made once and only when a layer is computed

    def args_of(idx):
        if not x:
            x.append(ctx.batch(model, photos))
        return (model, layers, [layers[i] for i in idx], per, seed, ctx.batch_size, x[0], labels)

    res = compute(ctx, keys, selectivity.units_task, args_of, what=f"findings units {model.name}", unit=1,
                  bar_unit="layer")
    timing["units"] = timing.get("units", 0.0) + sum(r.seconds for r in res)
    for layer, r in zip(layers, res):
        if r.error:
            _say(f"findings {model.name}: units of {layer} not ablated ({r.error})")
    return selectivity.Units(len(photos), int(len(set(labels.tolist()))),
                             {l: selectivity.layer_summary(r, seed) for l, r in zip(layers, res) if not r.error},
                             per=per, seed=seed)


def accuracy_results(ctx, model, s: dict, timing: Timing) -> dict | None:
    """Measured accuracy on a labelled folder: counted in cached blocks of photos, summed here."""
    folder = str(s.get("accuracy_folder") or "")
    path, files, why = labelled_files(ctx, folder, int(s["accuracy_max_images"])) if folder else (None, [], None)
    if why or not folder:
        return {"error": why, "folder": folder} if why else None
    classes = sorted({c for _p, c in files})
    blocks = [files[i:i + ACCURACY_BLOCK] for i in range(0, len(files), ACCURACY_BLOCK)]
    keys = [key("findings-accuracy-block", model=model, code=model_table.accuracy_blocks, classes=classes,
                files=stable_hash([[str(p.relative_to(path)), p.stat().st_size, c] for p, c in b])) for b in blocks]
    res = compute(ctx, keys, model_table.accuracy_blocks, lambda idx: (
        model, [[(str(p), c) for p, c in blocks[i]] for i in idx], classes, ctx.batch_size),
        what=f"findings accuracy {model.name}", unit=1, bar_unit="block")
    timing["accuracy"] = timing.get("accuracy", 0.0) + sum(r.seconds for r in res)
    return model_table.accuracy_from_counts(res, classes) | {"folder": folder, "error": None}


def model_rows(ctx, accuracy: dict) -> list[dict]:
    """The model table: every configured model (architecture cost), measured accuracy of the loaded ones."""
    names = [get_spec(n).name for n in ctx.config["models"]]
    names += [m.name for m in ctx.models if m.name not in names]
    specs = [get_spec(n) for n in names]
    costs = compute(ctx, [key("findings-arch-cost", model=spec, code=model_table.architecture_cost) for spec in specs],
                    model_table.architecture_costs, lambda idx: ([specs[i] for i in idx],), what="findings architecture cost",
                    unit=1, bar_unit="model")
    loaded = {m.name: m for m in ctx.models}
    known = [i for i, it in enumerate(ctx.images) if it.imagenet_index is not None]
    labels = torch.tensor([ctx.images[i].imagenet_index for i in known])
    rows = [{"name": name, "title": spec.title, "cost": cost, "loaded": name in loaded, "missing": ctx.missing.get(name),
             "curated": model_table.curated_accuracy(ctx.logits(loaded[name])[known], labels) if name in loaded and known
             else None, "folder": accuracy.get(name)} for name, spec, cost in zip(names, specs, costs)]
    return rows


def _measure(ctx, model, s, names, titles, items, expensive, n_of, n_sanity) -> tuple:
    """All checks of one model: (its summary, its measured accuracy, the methods' settings)."""
    timing = Timing()
    t0 = time.perf_counter()
    x = ctx.batch(model, items)
    logits = torch.stack(compute(ctx, [key("findings-logits", model=model, code=class_check.logits_task, image=it.sha256)
                                       for it in items], class_check.logits_task,
                                 lambda idx: (model, ctx.batch_size, x[idx]), what=f"findings logits {model.name}"))
    timing["forward"] = time.perf_counter() - t0
    targets = class_check.second_class(logits, str(s["class_check"]), int(s["low_rank"]), int(s["seed"]),
                                       [it.sha256 for it in items])  # N×2: top-1, second class
    top1 = targets[:, 0]
    methods = {n: make(n, model, batch_size=ctx.batch_size, **s["method_params"].get(n, {})) for n in names}
    maps, signed = trained_maps(ctx, model, methods, items, x, targets, timing, n_of, s)
    digest = {n: hashlib.sha256(maps[n].contiguous().numpy().tobytes()).hexdigest() for n in names}
    cls = dict(zip(names, map(class_check.sensitivity_of, compute(
        ctx, [key("findings-class", model=model, code=class_check.sensitivity_task, method=n, maps=digest[n])
              for n in names], class_check.sensitivity_task, lambda idx: ([maps[names[i]] for i in idx],),
        what=f"findings class check {model.name}", unit=1, bar_unit="method"))))
    cascade = None
    for group in ([n for n in names if n not in expensive], expensive):
        if group:
            k = n_sanity[group[0]]
            part = cascade_results(ctx, model, {n: methods[n] for n in group}, items[:k], x[:k], top1[:k],
                                   {n: maps[n][:k] for n in group}, {n: signed[n][:k] for n in group if n in signed},
                                   s, timing, independent_n(s, k, group[0] in expensive))
            cascade = part if cascade is None else sanity.merge(cascade, part)
    cascade.methods = {n: cascade.methods[n] for n in names}
    n_fai = {n: min(k, scaled(s, "faithfulness_images")) for n, k in n_of.items()}
    k_fai = max(n_fai.values())
    fai = faithfulness_results(ctx, model, methods, items[:k_fai], x[:k_fai], top1[:k_fai], maps, s, timing, n_fai)
    inv = invariance_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of)
    frag = fragility_results(ctx, model, methods, items, x, top1, maps, s, timing, n_of) if model.spec.gradcam_layer \
        else fragility.Fragility.empty(float(s["fragility_eps"]), float(s["fragility_topk"]),
                                       float(s["fragility_softplus_beta"]))
    units = unit_results(ctx, model, s, timing)
    accuracy = accuracy_results(ctx, model, s, timing)
    sm = verdicts.summarise_model(model, titles, cascade=cascade, classes=cls, faithfulness=fai, invariance=inv,
                                  fragility=frag, settings=s, expensive=expensive)
    sm.units, sm.n_images = units, len(items)
    sm.photos = [{"id": it.id, "title": it.title, "top1": model.labels[int(t[0])], "low": model.labels[int(t[1])]}
                 for it, t in zip(items, targets)]
    sm.figures = findings_pages.figures(ctx, model, names, titles, cascade, fai, maps, items, s, int(s["low_rank"]), sm)
    _say(f"findings {model.name}: computed-once costs " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))
    if timing.per_photo:
        _say(f"findings {model.name}: seconds per 100 photos (as measured when computed): "
             + ", ".join(f"{c} {m} {100 * t / n:.0f} s" for (c, m), (t, n) in timing.per_photo.items() if n))
    return sm, accuracy, {n: m.params for n, m in methods.items()}


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
    summaries, accuracy, settings_used, importance = [], {}, {}, {}
    for model in models if items else []:
        sm, accuracy[model.name], settings_used[model.name] = _measure(ctx, model, s, names, titles, items, expensive,
                                                                       n_of, n_sanity)
        if sm.units:
            importance.update(selectivity.importance(sm.units, model.name, model.labels))
        summaries.append(sm)
    rows = model_rows(ctx, accuracy)
    headline = verdicts.headline_numbers(summaries, s)
    ctx.provide("unit_importance", importance)
    ctx.provide("findings_summary", headline)
    findings_pages.write_pages(ctx, s, names, titles, summaries, rows, settings_used, items, n_sanity, int(s["low_rank"]),
                               source=source, n_of=n_of, expensive=expensive)
    path = ctx.site.out / "findings" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(headline, indent=1, sort_keys=True).encode("utf-8"))
    _say(f"findings: stage wall time this build {time.perf_counter() - t_stage:.1f} s")
