"""How much work each stage does: what it sends through each model's classifier, counted from its settings.

:func:`generator.plan.estimate` calls ``WORK[stage](ctx, model)`` for every configured stage and model
before any model work: a plain dict of :class:`generator.plan.Work` fields (``forward``, ``gradient``,
``calls`` — attribution-method calls priced by :func:`generator.plan.method_work` — ``generator``,
``via``, ``notes``, ``logits``), for a cold cache. Each function follows its stage's loops (the
stage modules' docstrings say what they compute); ``tests/test_plan.py`` checks every formula against the
passes a real build counts. Kept apart from the stages so that a formula can change without changing
a stage's source, which is part of its results' cache keys.
"""
from __future__ import annotations

from pathlib import Path

from . import imagenet, image_folder
from .deepsim import load_any_generator
from .deepsim.judge import pick_judge
from .models import get_spec, resolve_weights
from .methods.attribution import ATTRIBUTION_METHODS
from .metrics import faithfulness, fragility, invariance, sanity
from .plan import DOUBLE_BACKWARD
from .probes import scaled, select_items
from .stages import atlas as _atlas
from .stages import attribution as _attribution
from .stages import dgn_am as _dgn_am
from .stages import findings as _findings


_META: dict[tuple, dict] = {}


def _generator_meta(path: Path) -> dict:
    """The generator file's metadata (read once per file version)."""
    k = (str(path), path.stat().st_mtime_ns)
    if k not in _META:
        _META[k] = load_any_generator(path, device="cpu")[1]
    return _META[k]


def _encoder_available(ctx, name: str) -> bool:
    """Whether :func:`~generator.deepsim.ppgn.prior_encoder` finds the encoder: loaded, or its weights here."""
    if any(m.name == name for m in ctx.models):
        return True
    try:
        resolve_weights(get_spec(name), None, offline=True)
        return True
    except Exception:
        return False


def _pixels(name: str) -> bool:
    """Whether method ``name`` attributes pixels (its signed maps are compared too)."""
    return getattr(ATTRIBUTION_METHODS[name], "output", "") == "pixels"


def _none(ctx, model) -> dict:
    """A stage that sends nothing through a classifier (it draws or compares earlier stages' results)."""
    return {}



def activity(ctx, model) -> dict:
    """Images this stage sends through ``model``'s classifier (``generator.plan.Work`` fields; a cold
    cache): one forward pass per photo, which also gives the logits it records for the later stages."""
    return {"forward": len(ctx.images), "stores_logits": True}


def attribution(ctx, model) -> dict:
    """What this stage sends through ``model``'s classifier (``generator.plan.Work`` fields; a cold cache).

    * the logits of the photos (``ctx.logits``, paid by whichever stage reads them first);
    * each method's maps: one call per batch of ``batch_size`` photos within each cache step of
      ``chunk_images`` (as :func:`_maps` runs them), priced by the method's class
      (:func:`generator.plan.method_work`; Integrated Gradients with its completeness check);
    * single-neuron deconvnet, per layer: one forward pass per photo (top neurons) and, per rule,
      one gradient pass per photo and neuron (``min(neurons, channels)``);
    * the swap test: each ``swap_test`` method on the first two photos."""
    s = ctx.stage_settings("attribution")
    n = len(ctx.images)
    calls = []
    for name in s["methods"]:
        check = ATTRIBUTION_METHODS[name].self_check is not None
        for step in ctx.work_steps(n, s["chunk_images"]):
            for b in range(0, len(step), ctx.batch_size):
                batch = tuple(step[b : b + ctx.batch_size])
                # no "top1": the gallery's Integrated Gradients stays priced at its cap (plan.method_work): measured
                # on EfficientNet-Lite0 (2026-12-07) at 57 ms a point against the calibrated 23 ms, not yet explained,
                # the cap's price was the nearer one
                calls.append({"method": name, "params": s["params"][name], "images": len(batch),
                              "photos": ("gallery", batch), "check": check})
    forward = gradient = 0
    k = min(max(0, s["neuron_images"]), n)
    layers = _attribution.neuron_layers(ctx, model, s["neuron_layers"]) if s["neurons"] > 0 and k else []
    channels = ctx.channels(model) if layers else {}
    for layer in layers:
        forward += k
        gradient += len(s["neuron_rules"]) * k * min(s["neurons"], channels[layer])
    swap = [m for m in s["methods"] if ATTRIBUTION_METHODS[m].swap_test]
    if n >= 2:
        calls += [{"method": m, "params": s["params"][m], "images": 2, "photos": ("swap",)} for m in swap]
    return {"forward": forward, "gradient": gradient, "calls": calls, "logits": bool(n)}


def atlas(ctx, model) -> dict:
    """What this stage sends through ``model``'s classifier (``generator.plan.Work`` fields; a cold cache):
    one forward pass per streamed photo, and — with projections — per conv layer one gradient pass per
    unit shown (``max_channels_per_layer``) and top-k example (``min(top_k, photos)``)."""
    cfg = ctx.stage_settings("atlas")
    layers = _atlas._layers(ctx, model, cfg)
    if not layers:
        return {}
    folder, _fallback = _atlas._folder(ctx, cfg)
    try:
        listing = image_folder.list_folder(folder)
    except FileNotFoundError:
        return {}
    n = len(listing.subset(cfg["max_images"] or None))
    gradient = 0
    if cfg["projections"] and n:
        channels, cap = ctx.channels(model), cfg["max_channels_per_layer"]
        gradient = sum((channels[l] if cap <= 0 else min(channels[l], cap)) * min(cfg["top_k"], n) for l in layers)
    return {"forward": n, "gradient": gradient,
            "notes": ["atlas: photos that cannot be decoded are skipped by the stream; they are counted here"]}


def dgn_am(ctx, model) -> dict:
    """What this stage sends through ``model``'s classifier and others (``generator.plan.Work`` fields;
    a cold cache), with C classes, U hidden units, S = ``steps``, T = PPGN chain steps, K samples:

    * DGN-AM, classes and units in one optimisation: S·(C+U) gradient passes, C+U forward (the final
      activation) + C (class probabilities); S·(C+U) + C+U generator rows;
    * PPGN: (T+1)·C gradient passes (the last step only evaluates), C·K forward (probabilities),
      (T+1)·C generator rows, T·C forward passes through the encoder (the prior term, when it runs);
    * per pixel-space baseline: S·C gradient passes, 2·C forward;
    * the judge (another loaded model): C per picture column (DGN-AM, PPGN, each baseline) + one per
      class photo found;
    * the reconstructions of the build's photos through the encoder (once per build: counted on the
      first model)."""
    s = ctx.stage_settings("dgn_am")
    gpath = Path(s["generator"])
    if not gpath.is_absolute():
        gpath = _dgn_am.ROOT / gpath
    if not gpath.is_file():
        return {}
    try:
        meta = _generator_meta(gpath)
    except ValueError:  # an unreadable file: the stage says so when it runs
        return {"notes": ["dgn_am: the generator file could not be read, so its work is not counted"]}
    enc_name = meta.get("encoder", {}).get("encoder", "efficientnet_lite0")
    C = len(s["classes"])
    layers = s["layers"] or [n for n in ctx.layers(model) if model.spec.layer(n).kind == "conv"]
    channels = ctx.channels(model) if s["units_per_layer"] > 0 else {}
    U = sum(len(s["units"][l]) if l in s["units"] else min(channels[l], s["units_per_layer"])
            if s["units_per_layer"] > 0 else 0 for l in layers)
    S = s["steps"]
    pset = _dgn_am.ppgn_settings(s)
    T, K = pset.steps, max(1, s["ppgn_samples"])
    forward, gradient = (C + U) + C + C * K, S * (C + U) + (T + 1) * C
    generator_rows = S * (C + U) + (C + U) + (T + 1) * C
    via: dict[str, list[int]] = {}
    encoder = _encoder_available(ctx, enc_name)
    if s["ppgn_eps1"] != 0 and encoder:
        via.setdefault(enc_name, [0, 0])[0] += T * C
    for _m in s["baselines"]:
        gradient += S * C
        forward += 2 * C
    if s["judge"]:
        jname, _clean = pick_judge(model.name, [m.name for m in ctx.models], exclude=(enc_name,))
        if jname:
            photos, _why = _dgn_am.photo_index(ctx, s)
            via.setdefault(jname, [0, 0])[0] += (2 + len(s["baselines"])) * C + sum(c in photos for c in s["classes"])
    if ctx.models and model is ctx.models[0] and ctx.images and s["recon_images"] > 0 and encoder:
        via.setdefault(enc_name, [0, 0])[0] += min(len(ctx.images), s["recon_images"])
    return {"forward": forward, "gradient": gradient, "generator": generator_rows,
            "via": {k: tuple(v) for k, v in via.items()}}


def _labelled(ctx, folder: str, n: int) -> list:
    """(path, class) of up to ``n`` photos of a labelled folder, as :func:`~generator.probes._folder_photos`
    picks them (without reading them)."""
    if not folder or n <= 0:
        return []
    path = ctx.config.resolve_path(folder)
    return imagenet.imagefolder(path, n) if path.is_dir() else []


def _probe_count(ctx, s: dict) -> int:
    """How many probe photos :func:`~generator.probes.probe_set` picks (without reading them)."""
    n = scaled(s, "images")
    if s["image_ids"]:
        return len(select_items(ctx, s)[:n])
    half = len(_labelled(ctx, str(s["probe_folder"]), n // 2))
    sample = str(s["probe_sample"])
    rest = len(imagenet.sample_1k(ctx.config.resolve_path(sample), n - half)) if sample and n - half > 0 else 0
    return min(n, half + rest) if half + rest else min(n, len(select_items(ctx, s)))


def findings(ctx, model) -> dict:
    """What this stage sends through ``model``'s classifier (``generator.plan.Work`` fields; a cold cache),
    check by check as :func:`generator.stages.findings._measure` runs them on N probe photos (n per method: ``n_of``):

    * logits: N forward passes;
    * maps: per method one explain call on its n photos × 2 classes (top-1 and the second class, per cache step);
      the pixel-space methods' signed maps come from the same attributions (the randomisation check's trained
      signed maps: no pass of their own);
    * randomisation (cheap methods, then expensive ones), per donor seed (``cascade_seeds``) the cascade and,
      on the first ``independent_images`` (``independent_expensive_images``) of its photos, the independent
      randomisation: per cache step, per measured step, per method, one explain call on the step's photos, on
      that step's randomised copy; the edge-detector reference needs no network;
    * deletion/insertion: ``2·(steps − 1)`` forward passes per (photo, order) + 3 per photo and cache step
      (:func:`~generator.metrics.faithfulness.n_forward`; the orders: the methods and 2 baselines); then the
      step check on the first ``faithfulness_check_images`` photos: ``2·steps`` per (photo, order), the new
      points of the curves at twice the steps (:func:`~generator.metrics.faithfulness.n_forward_finer`);
    * invariance: per method one explain call on its photos, on the shift-absorbing copy, and for a method
      with a remedy (Integrated Gradients' baseline moved along with the input,
      :func:`~generator.metrics.invariance.remedy_params`) one more with it;
    * fragility (models with a Grad-CAM layer, :func:`~generator.stages.findings.fragility_plan`): the proxy
      attack (shared by the methods it serves) per photo ``fragility_steps`` gradient passes and one forward
      pass; each own-map attack (a differentiable method) per photo and step one gradient pass through the
      network and :func:`~generator.metrics.fragility.own_map_passes` through the softplus copy (double
      backward: ``double``), then one forward pass through each; then per method an explain call on
      attacked + noisy copies — of the photos its attack perturbed, counted here as all of them;
    * units: one forward pass over the selectivity photos, then per conv layer one per photo and group
      of ablated units (``4·batch_size // photos per batch`` units per pass);
    * accuracy: one forward pass per photo of the accuracy folder;
    * map comparisons (``compares``, no network, priced at the calibrated seconds per comparison): the class
      check's two maps per photo, each cascade and independent-run map against its trained map at every
      measured step (pixel-space methods' signed maps too), each trained map against its photo's edge map;
    * the model table reads ``ctx.logits`` when some build photo has a known class."""
    s = ctx.stage_settings("findings")
    out: dict = {"logits": any(it.imagenet_index is not None for it in ctx.images), "notes": []}
    if s["models"] and model.name not in set(s["models"]):
        return out
    names = list(s["methods"]) or list(ATTRIBUTION_METHODS)
    N = _probe_count(ctx, s)
    if not N:
        return out
    expensive = [n for n in names if n in set(s["expensive_methods"])]
    n_of = {n: min(N, scaled(s, "expensive_images") if n in expensive else N) for n in names}
    n_sanity = {n: min(n_of[n], scaled(s, "sanity_expensive_images" if n in expensive else "sanity_images"))
                for n in names}
    params = s["method_params"]
    forward, gradient, calls, compares = N, 0, [], 0

    def call(name, images, photos, net=("model",), top1=0):  # top1: the images explained for their top-1 class
        calls.append({"method": name, "params": params.get(name, {}), "images": images, "photos": photos, "net": net,
                      "top1": top1})

    for name in names:  # maps: top-1 and the second class (class_check) in one call
        for step in ctx.work_steps(n_of[name]):
            call(name, 2 * len(step), ("maps", tuple(step)), top1=len(step))
        compares += n_of[name]  # the class check: the two maps of each photo
        compares += n_sanity[name]  # the randomisation page's edge reference: each trained map vs its edge map
    groups = sanity.model_groups(model)
    steps = sanity.choose_steps(len(groups), int(s["cascade_steps"]))
    seeds = sanity.donor_seeds(int(s["seed"]), int(s["cascade_seeds"]))
    for g, group in enumerate(([n for n in names if n not in expensive], expensive)):
        if not group:
            continue
        k_all = n_sanity[group[0]]  # each run's own randomised copy: ("random", seed index) or ("independent",)
        runs = [(("random", j), k_all) for j in range(len(seeds))]
        runs.append((("independent",), _findings.independent_n(s, k_all, group[0] in expensive)))
        for run, n in runs:
            pairs = [(name, i) for i in range(n) for name in group]
            # per measured step each map is compared with its trained map, pixel-space maps signed as well
            compares += len(steps) * sum(2 if _pixels(name) else 1 for name, _i in pairs)
            for c, step in enumerate(ctx.work_steps(len(pairs))):
                photos = sorted({pairs[j][1] for j in step})
                for k in steps:
                    for name in sorted({pairs[j][0] for j in step}):
                        call(name, len(photos), ("cascade", tuple(photos)), (*run, g, c, k))
    n_fai = {n: min(k, scaled(s, "faithfulness_images")) for n, k in n_of.items()}
    k_fai = max(n_fai.values())
    orders = {**n_fai, **{b: k_fai for b in _findings.BASELINES}}
    pairs = [(n, i) for i in range(k_fai) for n in [*names, *_findings.BASELINES] if i < orders[n]]
    for step in ctx.work_steps(len(pairs)):
        forward += faithfulness.n_forward(len(step), int(s["faithfulness_steps"]), len({pairs[j][1] for j in step}))
    k_chk = min(k_fai, scaled(s, "faithfulness_check_images")) if int(s["faithfulness_check_images"]) > 0 else 0
    fine = [p for p in pairs if p[1] < k_chk]  # the step check: the first photos again at 2 × steps, new points only
    for step in ctx.work_steps(len(fine)):
        forward += faithfulness.n_forward_finer(len(step), int(s["faithfulness_steps"]))
    for name in names:
        remedy = invariance.remedy_params(name, params.get(name, {}), s["invariance_shift"])
        for given in (params.get(name, {}), *([remedy] if remedy is not None else [])):
            for step in ctx.work_steps(min(n_of[name], scaled(s, "invariance_images"))):
                calls.append({"method": name, "params": given, "images": len(step), "photos": ("invariance", tuple(step)),
                              "net": ("shifted",), "top1": len(step)})
    double = 0
    if model.spec.gradcam_layer:
        steps = max(0, int(s["fragility_steps"]))
        attacks = _findings.fragility_plan(s, n_of, N)
        n = max((k for own, k in attacks.values() if not own), default=0)  # the proxy attack's photos
        gradient += steps * n
        forward += n
        for name in names:
            own, k = attacks[name]
            if own:
                c = fragility.own_map_passes(name, params.get(name, {}))
                gradient += steps * k * (1 + c)
                double += steps * k * c
                forward += 2 * k
            for step in ctx.work_steps(k):  # an own attack's photos are that method's alone (no shared gradients)
                call(name, 2 * len(step), ("fragility", name, tuple(step)) if own else ("fragility", tuple(step)),
                     top1=2 * len(step))
        out["notes"].append("fragility: the maps of attacked and noisy photos are counted for every photo; the "
                            "build makes them only for the photos the attack changed (98-100 % of them, measured)")
        if double:
            out["notes"].append(f"fragility: {double:,} of the gradient passes are the own-map attacks' double "
                                f"backward passes through the softplus copy, each priced as {DOUBLE_BACKWARD:g} "
                                "gradient passes (measured on CPU, EfficientNet-Lite0: 8-12 for saliency, 4-6 "
                                "for Grad-CAM)")
    photos = _labelled(ctx, str(s["probe_folder"]), scaled(s, "selectivity_images"))
    if len({c for _p, c in photos}) >= 2:
        per = int(s["ablation_units_per_layer"])  # drawn at random from every channel (0 = all)
        P = len(photos)
        per_pass = max(1, (4 * ctx.batch_size) // max(1, min(P, ctx.batch_size)))
        channels = ctx.channels(model)
        forward += P  # responses and logits, one pass shared by the layers
        for layer in [l for l in ctx.layers(model) if model.spec.layer(l).kind == "conv"]:
            units = min(channels[layer], per) if per > 0 else channels[layer]
            forward += -(-units // per_pass) * P
        out["notes"].append("units: a layer the ablation cannot cut (inside a skip connection) costs one pass, "
                            "not its count")
    folder = str(s.get("accuracy_folder") or "")
    if folder:
        path = ctx.config.resolve_path(folder)
        if path.is_dir():
            forward += len(imagenet.imagefolder(path, int(s["accuracy_max_images"]) or None))
    return {**out, "forward": forward, "gradient": gradient, "double": double, "calls": calls, "compares": compares}


#: stage name → its work function
WORK = {"overview": _none, "activity": activity, "attribution": attribution, "compare": _none, "findings": findings,
        "dgn_am": dgn_am, "atlas": atlas, "home": _none}
