"""The build's plan: counted work × measured speed, before the first model runs; measured beside it after.

Before the first stage runs, :func:`~generator.build.run_build`

1. lists what loading the models will download (:func:`downloads`: weight files not found locally,
   with torchvision's file sizes where it publishes them; the data sets of :mod:`generator.datasets`
   that are missing, which the build reads but does not fetch);
2. measures each loaded network's speed on the build's device (:func:`calibrate`: a few batches of
   random photos, forward only and forward + input gradient, on the batch-norm-folded copy the methods
   use: a few seconds per model) and, when DGN-AM runs, the image generator's (:func:`calibrate_generator`);
3. asks every configured stage what it will send through each classifier (``work(ctx, model)`` in
   each module of :mod:`generator.stages`: counts derived from its settings, the photos and the
   probe folders, the same passes ``bench/count_passes.py`` counts by hooking
   :class:`generator.models.Normalize`) and prices it: :func:`estimate` → :class:`Plan`.

The plan is printed, kept as ``ctx.plan``, gives each stage's progress line its estimate and an ETA
(:meth:`Plan.eta`: the estimated seconds left, scaled by measured / estimated of the stages done),
and is written with the measured time of every stage on the page "About this build"
(:func:`write_page`, ``models/about-build.md``).

A stage's ``work(ctx, model)`` returns a plain dict (stages sit above this module and never import it)
with these keys, all optional:

``forward`` / ``gradient``
    images through ``model``'s classifier without / with gradient recording;
``double``
    of the ``gradient`` images, those that go through a double backward (the fragility attack's own-map
    objective), priced at :data:`DOUBLE_BACKWARD` gradient passes each;
``calls``
    attribution-method calls, in the order the stage makes them: ``{"method", "params", "images",
    "photos", "net", "check", "top1"}`` (``top1``: how many of the images are explained for their own top-1
    class on the trained network, :func:`method_work`) — priced here by :func:`method_work` from the method's class and
    settings (SmoothGrad, SmoothGrad² and VarGrad share their noisy gradients through a small
    per-network store, simulated call by call: :func:`price_calls`);
``generator``
    code rows through the DeePSim generator (DGN-AM, PPGN steps), priced at its measured speed;
``via``
    ``{model name: (forward, gradient)}``: images through *another* classifier (the DGN-AM judge,
    the generator's encoder), priced at that network's speed;
``logits`` / ``stores_logits``
    the stage reads ``ctx.logits(model)`` (one forward pass per photo, paid by the first stage that
    needs them) / records them on the side (activity: later stages then read them from the cache);
``notes``
    what the count cannot know in advance.

What the plan does not count: cache hits (every estimate is for a cold cache: keys depend on the
predicted classes, known only after the models ran), a network's one-image set-up passes
(:data:`SETUP`: folding batch norm, checking a fast path, recording layer shapes or the module
order), decoding photos, rendering figures and writing pages.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

import torch

from . import allocator, executor, models, plan_history, util
from .cache import LOCK_CHUNK
from .config import ROOT
from .executor import chunk_size, split
from .methods import attribution as attribution_methods
from .methods import base, patch_forward
from .metrics import sanity
from .util import atomic_write_text, md_escape

CACHE_NEUTRAL = True  # plans and counts; never part of a result

#: an occluded copy through :mod:`~generator.methods.patch_forward` recomputes only the block its square
#: reaches: about half of a forward pass on AlexNet, a fifth on VGG16 (the larger share is assumed)
PATCH_SHARE = 0.5

#: an image through the fragility attack's own-map objective on the softplus copy (a forward pass, a backward pass
#: that records its graph, and the backward of both: a double backward) is priced as this many gradient passes:
#: measured on CPU for EfficientNet-Lite0 at 8-12 (saliency: the second derivative through the whole network) and
#: 4-6 (Grad-CAM: only the layers after its layer); ``Work.double`` counts them (they are also in ``gradient``)
DOUBLE_BACKWARD = 10.0

#: Integrated Gradients' adaptive refinement (generator/methods/attribution.py): the share of photos whose relative
#: completeness error is still ≥ 5 % after ``intervals`` intervals of the trapezoid rule (``intervals + 1`` points),
#: for a map of the photo's own top-1 class on the trained network. Measured 2026-12-07 on the ``full`` findings'
#: invariance photos of EfficientNet-Lite0, Lite1 and Lite2 (30 each, fixed and shifted baseline: 180 runs on the
#: shift-absorbing copy, 16 start points, up to 1,921 points; the build's own photos and invariance task, see the
#: Performance page): every run ended below 5 %, at 146 points on average (16–961). The plan prices each such map at
#: the points it is expected to end with (:func:`ig_expected_points`), not at the cap. A map of another class, or on
#: a network with random weights, is priced at its cap (``max_steps``): its logit moves little from the baseline to the
#: photo (measured on Lite0: |F(x) − F(x')| 0.06–0.7 against 3–11 for the top-1 class), so its relative error stays
#: large and most such maps stop at the cap (6 of 8 and 5 of 8 at 481 points).
IG_STILL_ABOVE = ((15, 161 / 180), (30, 132 / 180), (60, 96 / 180), (120, 48 / 180), (240, 15 / 180), (480, 4 / 180))
IG_TABLE_DELTA = 0.05  # the max_delta of IG_STILL_ABOVE


def ig_still_above(intervals: float, max_delta: float = IG_TABLE_DELTA) -> float:
    """The expected share of photos whose completeness error is still ≥ ``max_delta`` after ``intervals``
    intervals: :data:`IG_STILL_ABOVE`, interpolated linearly in log share over log intervals (from 1.0 at one
    interval; past the table, its last slope). Another ``max_delta`` reads the table at
    ``intervals · max_delta / 0.05``: an error that falls as 1 / intervals (the trapezoid rule's error falls as
    1 / intervals² on a smooth path; a ReLU network's path has kinks, so the slower rate is assumed)."""
    x = math.log(max(float(intervals) * float(max_delta) / IG_TABLE_DELTA, 1e-12))
    pts = [(0.0, 0.0)] + [(math.log(n), math.log(s)) for n, s in IG_STILL_ABOVE]
    if x <= 0.0:
        return 1.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    (x0, y0), (x1, y1) = pts[-2:]
    return math.exp(y1 + (y1 - y0) * (x - x1) / (x1 - x0))


def ig_expected_points(levels: Sequence[int], max_delta: float = IG_TABLE_DELTA) -> float:
    """The points a photo is expected to end with when it starts at ``levels[0]`` and is refined through
    ``levels`` (:meth:`IntegratedGradients.levels`): each doubling's new points, times the share of photos still
    above ``max_delta`` before it (:func:`ig_still_above`)."""
    return levels[0] + sum(ig_still_above(a - 1, max_delta) * (b - a) for a, b in zip(levels, levels[1:]))


#: one-image passes that inspect a network rather than compute a result; counted apart ("setup")
SETUP = (base.prepared, base.conv_bn_pairs, base.output_shapes, patch_forward.patch_forward, sanity.execution_order)

PAGE = "models/about-build.md"
ETA_MIN_STAGE = 10.0  # seconds: stages estimated below this do not rescale the ETA
ETA_RATIO = (0.0, 4.0)  # measured / estimated, as the ETA may use it (0: a warm cache)


# ------------------------------------------------------------------------------------- work


@dataclass
class Work:
    """What one stage sends through one model's classifier (see the module docstring)."""

    forward: int = 0     # images through the classifier without gradient
    gradient: int = 0    # images through forward + input gradient
    other: float = 0.0   # seconds of known work outside any classifier that no calibration prices
    partial: int = 0     # occluded copies through patch_forward (≈ PATCH_SHARE of a forward pass each)
    generator: int = 0   # code rows through the DeePSim generator (forward + backward)
    via: dict[str, tuple[int, int]] = field(default_factory=dict)  # other classifiers: name → (forward, gradient)
    notes: list[str] = field(default_factory=list)
    double: int = 0      # of the gradient passes, double backward ones (priced at DOUBLE_BACKWARD gradient passes)
    compares: int = 0    # map comparisons (Spearman, SSIM, HOG of one map against a prepared one; no network)

    def __add__(self, o: "Work") -> "Work":
        via = dict(self.via)
        for k, (f, g) in o.via.items():
            f0, g0 = via.get(k, (0, 0))
            via[k] = (f0 + f, g0 + g)
        return Work(self.forward + o.forward, self.gradient + o.gradient, self.other + o.other,
                    self.partial + o.partial, self.generator + o.generator, via,
                    list(dict.fromkeys(self.notes + o.notes)), self.double + o.double, self.compares + o.compares)

    @property
    def images(self) -> int:
        return self.forward + self.gradient + self.partial + sum(f + g for f, g in self.via.values())


@dataclass(frozen=True)
class Speed:
    """Seconds per image of one network on one device: forward only, and forward + input gradient."""

    forward: float
    gradient: float
    batch: int = 0
    device: str = ""
    threads: int = 0
    measured: str = ""  # when (UTC): this build, or an earlier one on the same machine (see calibrate)
    reused: bool = False  # measured by an earlier build (see calibrate)
    compare: float = 0.0  # seconds per map comparison at the network's input size (no network: arithmetic)


def method_work(name: str, params: Mapping[str, Any], images: int, input_size: int, *, local: bool = False,
                check: bool = False, top1: int = 0) -> Work:
    """The passes of one call of attribution method ``name`` (settings ``params`` over its defaults) on
    ``images`` photos of ``input_size`` px with their classes given (as every stage gives them).

    saliency, deconvnet, guided backprop: one gradient pass per photo; Grad-CAM: one (its forward
    records gradients, from the layer on); guided Grad-CAM: two (Grad-CAM + guided backprop);
    SmoothGrad and its variants: ``samples`` per photo; Integrated Gradients: ``steps`` per photo (with
    ``max_steps`` or ``max_steps_predicted`` above ``steps``, its adaptive refinement: the ``top1`` of the
    ``images`` explained for their own top-1 class on the trained network — refined up to ``max_steps_predicted``
    where that is higher — at the points such a photo is expected to end with, :func:`ig_expected_points`; the
    others — another class, whose logit moves little from the baseline to the photo, so its relative error stays
    large, or a network with random weights: most such maps stop there — at the most ``max_steps`` allows, an upper
    bound; the notes say which), and with its self-check (``check``, the
    attribution stage) two forward passes per photo (F(x) and F(baseline)); occlusion: one forward pass per photo plus one per photo and window position
    (``local``: the copies through patch_forward instead, :data:`PATCH_SHARE` of a pass each)."""
    cls = attribution_methods.ATTRIBUTION_METHODS[name]
    p = {**cls.defaults, **dict(params)}
    n = int(images)
    if issubclass(cls, attribution_methods.SmoothGrad):
        return Work(gradient=n * int(p["samples"]))
    if issubclass(cls, attribution_methods.IntegratedGradients):
        levels, top = cls.levels(p), cls.levels(p, predicted=True)  # adaptive: see the docstring
        k = min(max(int(top1), 0), n) if len(top) > 1 else 0
        mean = ig_expected_points(top, float(p["max_delta"]))
        w = Work(gradient=min(k * top[-1], math.ceil(k * mean - 1e-9)) + (n - k) * levels[-1],
                 forward=2 * n if check else 0)
        stops = lambda ls: (f"a photo stops at {', '.join(map(str, ls[:-1]))} or {ls[-1]} points, once its "  # noqa: E731
                            f"completeness error is below `max_delta = {p['max_delta']}`")
        if k:
            setting = (f"`max_steps_predicted = {p['max_steps_predicted']}`" if top[-1] > levels[-1]
                       else f"`max_steps = {p['max_steps']}`")
            w.notes.append(f"{name}: a map of a photo's top-1 class priced at {mean:.0f} points on average, as "
                           f"such photos were refined on EfficientNet-Lite0, Lite1 and Lite2 ({stops(top)}); at most {top[-1]} "
                           f"({setting})")
        if n - k and len(levels) > 1:
            w.notes.append(f"{name}: a map of another class or of a network with random weights priced at "
                           f"{levels[-1]} points, the most `max_steps = {p['max_steps']}` allows (an upper "
                           f"bound: {stops(levels)})")
        return w
    if issubclass(cls, attribution_methods.Occlusion):
        win, stride = int(p["window"]), int(p["stride"])
        positions = len(cls.positions(input_size, win, stride)) ** 2
        return Work(forward=n, partial=n * positions) if local else Work(forward=n * (1 + positions))
    if issubclass(cls, attribution_methods.GuidedGradCAM):
        return Work(gradient=2 * n)
    if issubclass(cls, (attribution_methods.GradCAM, attribution_methods._RuleGradient)):
        return Work(gradient=n)
    return Work(gradient=n, notes=[f"{name}: no pass count known for this method; one gradient pass per photo assumed"])


def _local_occlusion(model) -> bool:
    """Whether occlusion's copies run through patch_forward on ``model`` (its structure qualifies; the
    numerical check on an example is not repeated here)."""
    try:
        return patch_forward._build(model.net) is not None
    except Exception:
        return False


def price_calls(calls: Sequence[Mapping[str, Any]], model) -> Work:
    """The passes of a stage's attribution-method calls, in order. SmoothGrad, SmoothGrad² and VarGrad
    compute their noisy gradients once per (network, photos, classes, settings) and keep the last
    ``_MOMENTS_KEEP`` per network (:func:`generator.methods.attribution.shared_moments`): a call whose
    entry is still kept costs nothing, as in the build."""
    keep = attribution_methods._MOMENTS_KEEP
    stores: dict[Any, OrderedDict] = {}
    local = _local_occlusion(model)
    size = model.spec.input_size
    total = Work()
    for c in calls:
        name, params = c["method"], c.get("params") or {}
        cls = attribution_methods.ATTRIBUTION_METHODS[name]
        net = c.get("net", ("model",))
        if issubclass(cls, attribution_methods.SmoothGrad):
            p = {**cls.defaults, **dict(params)}
            k = (c.get("photos"), int(p["samples"]), float(p["sigma"]), int(p["seed"]))
            store = stores.setdefault(net, OrderedDict())
            if k in store:
                store.move_to_end(k)
                continue
            store[k] = True
            while len(store) > keep:
                store.popitem(last=False)
        # a wrapper around the classifier (the shift-absorbing view) is not patch_forward's kind of network
        total = total + method_work(name, params, c["images"], size, local=local and net[0] != "shifted",
                                    check=bool(c.get("check")), top1=int(c.get("top1", 0)))
    return total


def work_dict(ctx, stage: str, model) -> dict:
    """What ``work(ctx, model)`` of stage module ``stage`` returns ({} for a stage without one)."""
    from .workload import WORK

    fn = WORK.get(stage)
    return dict(fn(ctx, model) or {}) if fn is not None else {}


def as_work(d: Mapping[str, Any], model) -> Work:
    """A stage's work dict as a :class:`Work` for ``model``: its calls priced, passes "through another
    network" that is ``model`` itself added to its own (the logits flags are :func:`estimate`'s)."""
    w = Work(int(d.get("forward", 0)), int(d.get("gradient", 0)), float(d.get("other", 0.0)),
             int(d.get("partial", 0)), int(d.get("generator", 0)),
             {k: (int(f), int(g)) for k, (f, g) in (d.get("via") or {}).items()}, list(d.get("notes") or []),
             int(d.get("double", 0)), int(d.get("compares", 0)))
    if d.get("calls"):
        w = w + price_calls(d["calls"], model)
    own = w.via.pop(model.name, None)
    if own:
        w.forward, w.gradient = w.forward + own[0], w.gradient + own[1]
    return w


def stage_work(ctx, stage: str, model) -> Work:
    """Stage ``stage``'s work on ``model`` as a :class:`Work`, without the logits (see :func:`estimate`)."""
    return as_work(work_dict(ctx, stage, model), model)


def work_steps(ctx, n: int, chunk: int = 0, unit: int | None = None) -> list[list[int]]:
    """The index lists in which :func:`~generator.executor.compute` computes ``n`` keys that all miss
    the cache: here ``chunk`` keys per step (0: all) and at most ``LOCK_CHUNK`` with the cache on; with
    a distributed executor its chunks (``unit``: keys per indivisible piece, default ``batch_size``).
    A stage's ``work()`` counts per step where the size of a step changes the passes."""
    if n <= 0:
        return []
    executor = getattr(ctx, "executor", None)
    if getattr(executor, "distributed", False):
        return split(list(range(n)), chunk_size(executor, n, ctx.batch_size if unit is None else unit))
    step = chunk if chunk > 0 else n
    if ctx.cache.enabled:
        step = min(step, LOCK_CHUNK)
    return split(list(range(n)), step)


def layer_channels(model) -> dict[str, int]:
    """Output channels of every catalogued layer of ``model``: from its architecture on the meta device
    (no computation), or the real network's body on one blank photo where that fails."""
    spec = model.spec
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            body = models.build_architecture(spec).eval()
        shapes = base.output_shapes(body, {l.name: body.get_submodule(l.path) for l in spec.layers}, spec.input_size)
    except Exception:
        shapes = base.output_shapes(model.net.body, {l.name: model.module(l.name) for l in spec.layers},
                                    spec.input_size)
    return {n: int(s[0]) if s else 1 for n, s in shapes.items()}


# ------------------------------------------------------------------------------------- speed

_SPEEDS: dict[tuple, Speed] = {}
_GENERATOR_SPEEDS: dict[tuple, float] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: a speed measured by an earlier build on the same machine (device, processor, torch threads and
#: version) is used again for this long: a rebuild whose work the cache answers spends no seconds on it
CALIBRATION_MAX_AGE = 6 * 3600.0

#: a calibration round (forward + gradient of one batch) shorter than this gets a second warm-up round: the first
#: passes of a fresh process run up to twice as slow, and a second one costs little
WARM_ROUND_SECONDS = 2.0


def _stored_speed(store: Path | None, k: str) -> Speed | None:
    if store is None:
        return None
    try:
        row = json.loads(store.read_text()).get(k)
        if row and 0 <= time.time() - float(row["at"]) <= CALIBRATION_MAX_AGE:
            return Speed(float(row["forward"]), float(row["gradient"]), int(row["batch"]), str(row["device"]),
                         int(row["threads"]), str(row.get("measured", "")), reused=True,
                         compare=float(row["compare"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none stored, or unreadable: measure
    return None


def _store_speed(store: Path | None, k: str, sp: Speed) -> None:
    if store is None:
        return
    with contextlib.suppress(OSError, ValueError):
        try:
            rows = json.loads(store.read_text())
        except (OSError, ValueError):
            rows = {}
        rows[k] = {"forward": sp.forward, "gradient": sp.gradient, "batch": sp.batch, "device": sp.device,
                   "threads": sp.threads, "measured": sp.measured, "at": time.time(), "compare": sp.compare}
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store, json.dumps(rows, indent=1, sort_keys=True) + "\n")


def busy_note(device: torch.device | str, load: float | None = None, cores: int | None = None) -> str:
    """A sentence when a CPU calibration runs on a busy machine (the 1-minute load average above the
    cores the build's torch threads leave free): its speeds, so the estimates, are then too slow by
    about the share of the cores other work takes; "" otherwise (and on a GPU)."""
    if torch.device(device).type != "cpu":
        return ""
    try:
        load = os.getloadavg()[0] if load is None else float(load)
    except (AttributeError, OSError):
        return ""
    cores = cores or os.cpu_count() or 1
    if load <= max(1.0, cores - torch.get_num_threads() + 0.5) + 0.5:
        return ""
    return (f"the machine was busy when the speeds were measured (load average {load:.1f} on {cores} cores): "
            f"other work shares the processor, so these estimates are too long if it stops, and the measured "
            f"times too long while it runs")


def compare_seconds(size: int, maps: int = 4, reps: int = 2) -> float:
    """Seconds per map comparison (:func:`generator.metrics.similarity.compare` of one map against a
    prepared one: ranks, SSIM, HOG) at ``size`` px on this machine's CPU, where the checks compute them;
    the median of ``reps`` rounds after a warm-up."""
    from .metrics import similarity

    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(maps, size, size, generator=g), torch.rand(maps, size, size, generator=g)
    ready = similarity.prepare(a)
    times = []
    for _ in range(max(1, reps) + 1):
        t0 = time.perf_counter()
        similarity.compare(a, b, ready)
        times.append((time.perf_counter() - t0) / maps)
    return statistics.median(times[1:])


def calibration_store(ctx) -> Path | None:
    """The file where a build keeps the speeds it measured (in its results cache; None without one)."""
    return ctx.cache.root / "calibration.json" if ctx.cache.enabled else None


def calibrate(model, device: str | torch.device | None = None, batch: int = 8, reps: int = 3,
              store: Path | None = None) -> Speed:
    """Seconds per image of ``model``'s network on ``device`` (default: where the model is), on random
    photos at its input size: forward under ``inference_mode``, and forward + gradient of a logit to
    the input; on the batch-norm-folded copy the methods run (:func:`generator.methods.base.prepared`).
    One warm-up round (two where a round takes less than :data:`WARM_ROUND_SECONDS`), then the median of
    ``reps`` rounds of one batch. Cached per (model, device, torch
    threads, batch) in this process, and in the JSON file ``store`` (the build's: ``calibration.json``
    in its results cache) for :data:`CALIBRATION_MAX_AGE` on the same processor and torch version.
    Draws no number from the global random stream."""
    device = torch.device(device) if device is not None else model.device
    k = (model.cache_id, str(device), torch.get_num_threads(), int(batch))
    if k in _SPEEDS:
        return _SPEEDS[k]
    m = machine(device)
    sk = "|".join(map(str, (*k, m["cpu"], m["gpu"], m["torch"], m["allocator"])))
    stored = _stored_speed(store, sk)
    if stored is not None:
        _SPEEDS[k] = stored
        return stored
    s = model.spec.input_size
    x = torch.rand(batch, 3, s, s, generator=torch.Generator().manual_seed(0)).to(device)
    net = base.prepared(model.net, x[:1]).net
    fwd, grad = [], []
    warm = 1  # warm-up rounds; a second one where a round is short (a fresh process's first passes run slow)
    while len(fwd) < warm + max(1, reps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            net(x)
        _sync(device)
        fwd.append((time.perf_counter() - t0) / batch)
        xi = x.clone().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        with torch.enable_grad():
            torch.autograd.grad(net(xi)[:, 0].sum(), xi)
        _sync(device)
        grad.append((time.perf_counter() - t0) / batch)
        if len(fwd) == 1 and batch * (fwd[0] + grad[0]) < WARM_ROUND_SECONDS:
            warm = 2
    speed = Speed(statistics.median(fwd[warm:]), statistics.median(grad[warm:]), batch, str(device),
                  torch.get_num_threads(),
                  datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  compare=compare_seconds(s))
    _SPEEDS[k] = speed
    _store_speed(store, sk, speed)
    return speed


def calibrate_generator(path: str | Path, device: str | torch.device, rows: int = 4, reps: int = 5,
                        store: Path | None = None) -> float:
    """Seconds per code row of the DeePSim generator at ``path`` (forward + gradient to the code), as
    DGN-AM and PPGN run it each step; kept in ``store`` as :func:`calibrate` does."""
    from .deepsim import load_any_generator

    path = Path(path)
    device = torch.device(device)
    k = (str(path), path.stat().st_mtime_ns, str(device), torch.get_num_threads(), rows)
    if k in _GENERATOR_SPEEDS:
        return _GENERATOR_SPEEDS[k]
    m = machine(device)
    sk = "|".join(map(str, ("generator", util.sha256_file(path), *k[2:], m["cpu"], m["gpu"], m["torch"],
                            m["allocator"])))
    stored = _stored_speed(store, sk)
    if stored is not None:
        _GENERATOR_SPEEDS[k] = stored.forward
        return stored.forward
    G, meta = load_any_generator(path, device=str(device))
    G = G.to(device).eval()
    for p in G.parameters():
        p.requires_grad_(False)
    d = int(meta["code_stats"]["mean"].numel())
    h0 = torch.rand(rows, d, generator=torch.Generator().manual_seed(0)).to(device)
    times = []
    for _ in range(max(1, reps) + 2):  # two warm-up rounds
        h = h0.clone().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        with torch.enable_grad():
            torch.autograd.grad(G(h).float().sum(), h)
        _sync(device)
        times.append((time.perf_counter() - t0) / rows)
    _GENERATOR_SPEEDS[k] = statistics.median(times[2:])
    _store_speed(store, sk, Speed(_GENERATOR_SPEEDS[k], _GENERATOR_SPEEDS[k], rows, str(device),
                                  torch.get_num_threads()))
    return _GENERATOR_SPEEDS[k]


# ------------------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Download:
    """Something the build needs that is not here: ``kind`` "weights" or "data"; ``size`` in bytes
    (None: not published); ``fetched``: whether this build downloads it."""

    kind: str
    name: str
    file: str
    size: int | None
    fetched: bool
    note: str = ""


def _local_weights(spec, weights_dir) -> bool:
    """Whether :func:`generator.models.resolve_weights` finds the file without downloading."""
    fname = spec.weights_file
    folder = Path(weights_dir) if weights_dir else models.default_weights_dir()
    if fname and ((folder is not None and (folder / fname).is_file()) or (models.hub_checkpoint_dir() / fname).is_file()):
        return True
    if spec.packaged_weights is not None:
        try:
            return Path(spec.packaged_weights()).is_file()
        except Exception:  # the package is not installed
            return False
    return False


def weights_size(spec) -> int | None:
    """Bytes of a torchvision weights file from torchvision's metadata (``_file_size``, MiB), else None."""
    if spec.family != "torchvision" or not spec.weights_name:
        return None
    try:
        import torchvision.models as tvm

        meta = tvm.get_weight(spec.weights_name).meta
    except Exception:
        return None
    mib = meta.get("_file_size", meta.get("file_size"))
    return int(float(mib) * 2**20) if mib else None


def downloads(config, names: Sequence[str] | None = None) -> list[Download]:
    """What the build would fetch or lacks: weight files of the configured models not found locally
    (fetched when online and the model has a URL) and the data sets of :mod:`generator.datasets` not
    found (the build reads them but never fetches them: ``python -m generator data`` does)."""
    b = config.build
    offline = bool(b.get("offline")) or os.environ.get("CNNVIS_OFFLINE", "") not in ("", "0")
    out = []
    for name in names if names is not None else list(b["models"]):
        try:
            spec = models.get_spec(name)
        except Exception:
            continue
        if _local_weights(spec, b.get("weights_dir") or None):
            continue
        fetched = bool(spec.weights_url) and not offline
        why = "" if fetched else ("offline: not downloaded, the model is skipped" if spec.weights_url else
                                  "no download address: the model is skipped")
        out.append(Download("weights", spec.name, spec.weights_file or "", weights_size(spec), fetched, why))
    try:
        from . import datasets
    except ImportError:  # pragma: no cover - an older checkout
        datasets = None
    if datasets is not None and hasattr(datasets, "status"):
        try:
            rows = datasets.status()
        except Exception:
            rows = []
        for r in rows:
            if not r.get("found"):
                out.append(Download("data", str(r["name"]), str(r["name"]), int(r["size"]) if r.get("size") else None,
                                    False, "not found: `python -m generator data` downloads it (the build does not; "
                                           "the stages that read it fall back)"))
    return out


def after_loading(fetches: Sequence[Download], missing: Collection[str]) -> list[Download]:
    """The downloads once the models are loaded: a weights file the plan expected to fetch whose model is
    ``missing`` after all (no network, a failed download) is said as not fetched, the model skipped."""
    return [dataclasses.replace(d, fetched=False, note="the download failed (see above): the model is skipped")
            if d.kind == "weights" and d.fetched and d.name in missing else d for d in fetches]


# ------------------------------------------------------------------------------------- the plan


def duration(sec: float | None) -> str:
    """Seconds for a person: "<1 s", "42 s", "3.5 min", "1.2 h"."""
    if sec is None or not math.isfinite(sec):
        return "–"
    if sec < 1:
        return "<1 s"
    if sec < 100:
        return f"{sec:.0f} s"
    if sec < 6000:
        return f"{sec / 60:.1f} min"
    return f"{sec / 3600:.1f} h"


def size_text(n: int | None) -> str:
    """Bytes for a person: "244 MB", or "size unknown"."""
    return "size unknown" if n is None else f"{n / 1e6:,.0f} MB"


@dataclass
class Row:
    model: str
    stage: str
    work: Work
    seconds: float


@dataclass
class Plan:
    """Estimated seconds per (model, stage): counted work × calibrated speed."""

    stages: list[str]
    models: list[str]
    rows: list[Row]
    speeds: dict[str, Speed]
    generator_speed: float | None = None
    downloads: list[Download] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    profile: str = ""
    #: (stage, model) → (factor, builds): this machine's measured / estimated ratio from its earlier cold
    #: builds (:mod:`generator.plan_history`); estimates without one stay raw
    factors: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def seconds(self, stage: str | None = None, model: str | None = None) -> float:
        """The estimate: counted work × calibrated speed, × the machine's factor where it has one."""
        return sum(r.seconds * self.factors.get((r.stage, r.model), (1.0, 0))[0] for r in self.rows
                   if (stage is None or r.stage == stage) and (model is None or r.model == model))

    def raw_seconds(self, stage: str | None = None, model: str | None = None) -> float:
        """The estimate before the machine's factors: counted work × calibrated speed."""
        return sum(r.seconds for r in self.rows if (stage is None or r.stage == stage)
                   and (model is None or r.model == model))

    def correction_note(self) -> str:
        """One sentence on the factors from this machine's earlier builds ("" without any)."""
        if not self.factors:
            return ""
        f = [v for v, _ in self.factors.values()]
        builds = max(n for _, n in self.factors.values())
        part = f"×{min(f):.2f}" if max(f) - min(f) < 0.005 else f"×{min(f):.2f}–{max(f):.2f}"
        return (f"{len(self.factors)} of the {len(self.rows)} estimates ({part}) are corrected by this machine's earlier "
                f"cold builds of the same stage and model (the median of up to {builds} build(s): their measured "
                f"network work where they counted the same work, else their ratio measured / estimated, from builds "
                f"of the same profile); before that correction the plan was {duration(self.raw_seconds())} in all")

    @property
    def total(self) -> float:
        return self.seconds()

    def row(self, model: str, stage: str) -> Row | None:
        return next((r for r in self.rows if r.model == model and r.stage == stage), None)

    def eta(self, done: Mapping[str, float], todo: Sequence[str]) -> float:
        """Seconds left for the stages ``todo`` (not started): their estimates, scaled by measured /
        estimated over the stages ``done`` (stage → measured seconds) whose estimate was at least
        :data:`ETA_MIN_STAGE` seconds (a stage of almost no network work — rendering, writing — says nothing
        about the speed of the rest), the ratio kept within :data:`ETA_RATIO`."""
        big = {s: t for s, t in done.items() if self.seconds(s) >= ETA_MIN_STAGE}
        est_done = sum(self.seconds(s) for s in big)
        ratio = sum(big.values()) / est_done if est_done > 0 else 1.0
        ratio = min(ETA_RATIO[1], max(ETA_RATIO[0], ratio))
        return ratio * sum(self.seconds(s) for s in todo)

    # -- text ---------------------------------------------------------------
    def lines(self) -> list[str]:
        """The plan for the console: one line per stage (seconds per model and in all), the total."""
        width = max([len(s) for s in self.stages] + [5])
        cols = [m[:18] for m in self.models]
        out = ["plan (cold cache: counted passes × the speeds measured above):",
               f"  {'stage':<{width}}  " + "  ".join(f"{c:>18}" for c in cols) + f"  {'all models':>10}"]
        for s in self.stages:
            out.append(f"  {s:<{width}}  " + "  ".join(f"{duration(self.seconds(s, m)):>18}" for m in self.models)
                       + f"  {duration(self.seconds(s)):>10}")
        out.append(f"  {'total':<{width}}  " + "  ".join(f"{duration(self.seconds(model=m)):>18}" for m in self.models)
                   + f"  {duration(self.total):>10}")
        for d in self.downloads:
            if d.kind == "weights" and d.fetched:
                out.append(f"plan: downloads the weights of {d.name}: {d.file} ({size_text(d.size)})")
            elif d.kind == "weights":
                out.append(f"plan: the weights of {d.name} are missing ({d.file}, {size_text(d.size)}); {d.note}")
            else:
                out.append(f"plan: data set {d.name} ({size_text(d.size)}) {d.note}")
        if not self.downloads:
            out.append("plan: nothing to download")
        if self.factors:
            out.append(f"plan: {self.correction_note()}")
        return out

    def table(self) -> str:
        """Markdown: estimated seconds per stage and model, then the counted passes behind them."""
        head = "| Stage | " + " | ".join(md_escape(models.title_of(m)) for m in self.models) + " | all models |\n"
        head += "|---|" + "---:|" * (len(self.models) + 1) + "\n"
        body = "".join(f"| {md_escape(s)} | " + " | ".join(duration(self.seconds(s, m)) for m in self.models)
                       + f" | {duration(self.seconds(s))} |\n" for s in self.stages)
        body += "| **total** | " + " | ".join(f"**{duration(self.seconds(model=m))}**" for m in self.models) + \
                f" | **{duration(self.total)}** |\n"
        passes = ("\n| Stage | Model | forward | with gradient | partial copies | generator rows | "
                  "through other networks | estimated |\n|---|---|---:|---:|---:|---:|---|---:|\n")
        for r in self.rows:
            w = r.work
            if not w.images and not w.generator and not w.other:
                continue
            via = ", ".join(f"{md_escape(models.title_of(k))}: {f:,} + {g:,} ∇" for k, (f, g) in w.via.items()) or "–"
            passes += (f"| {md_escape(r.stage)} | {md_escape(models.title_of(r.model))} | {w.forward:,} | {w.gradient:,} | "
                       f"{w.partial:,} | {w.generator:,} | {via} | {duration(r.seconds)} |\n")
        return head + body + passes

    def compare(self, times: Mapping[str, float], network: Mapping[str, float] | None = None) -> str:
        """Markdown: estimated beside measured seconds per stage (``times``: stage → seconds); with
        ``network`` (stage → seconds of model work, :func:`generator.executor.network`), the measured time
        split into network work and the rest."""
        split = network is not None
        out = ("| Stage | estimated | measured | ratio | network | rest | rest % |\n|---|---:|---:|---:|---:|---:|---:|\n"
               if split else "| Stage | estimated | measured | measured / estimated |\n|---|---:|---:|---:|\n")
        est_all = meas_all = net_all = 0.0

        def parts(meas: float | None, net: float) -> str:
            if not split:
                return ""
            if meas is None:
                return " – | – | – |"
            net = min(net, meas)
            share = f"{100 * (meas - net) / meas:.0f} %" if meas >= 0.5 else "–"
            return f" {duration(net)} | {duration(meas - net)} | {share} |"

        for s in self.stages:
            est, meas = self.seconds(s), times.get(s)
            net = (network or {}).get(s, 0.0)
            est_all += est
            meas_all += meas or 0.0
            net_all += min(net, meas or 0.0)
            ratio = f"{meas / est:.2f}" if meas is not None and est >= 0.5 else "–"
            out += f"| {md_escape(s)} | {duration(est)} | {duration(meas)} | {ratio} |{parts(meas, net)}\n"
        ratio = f"{meas_all / est_all:.2f}" if est_all >= 0.5 else "–"
        out += (f"| **all stages** | **{duration(est_all)}** | **{duration(meas_all)}** | **{ratio}** |"
                f"{parts(meas_all, net_all)}\n")
        return out

    def compare_models(self, by_model: Mapping[str, Mapping[str, float]]) -> str:
        """Markdown: per stage and model, the estimate beside the measured network work of that model
        (``by_model``: stage → model name → seconds inside the compute calls whose results name the
        model), with their ratio; a stage whose estimate and measure are both under a second is left out."""
        head = "| Stage | " + " | ".join(md_escape(models.title_of(m)) for m in self.models) + " |\n"
        head += "|---|" + "---:|" * len(self.models) + "\n"
        body = ""
        for s in self.stages:
            cells, shown = [], False
            for m in self.models:
                est, meas = self.seconds(s, m), (by_model.get(s) or {}).get(m, 0.0)
                shown = shown or est >= 1 or meas >= 1
                ratio = f" ({meas / est:.2f})" if est >= 1 and meas >= 0.5 else ""
                cells.append(f"{duration(est)} / {duration(meas)}{ratio}")
            if shown:
                body += f"| {md_escape(s)} | " + " | ".join(cells) + " |\n"
        return head + body if body else ""

    def model_lines(self, by_model: Mapping[str, Mapping[str, float]]) -> list[str]:
        """The same for the console: per stage, per model "estimated / measured network work"."""
        width = max([len(s) for s in self.stages] + [5])
        out = [f"  {'stage':<{width}}  " + "  ".join(f"{m[:24]:>24}" for m in self.models)]
        for s in self.stages:
            vals = [(self.seconds(s, m), (by_model.get(s) or {}).get(m, 0.0)) for m in self.models]
            if all(e < 1 and v < 1 for e, v in vals):
                continue
            out.append(f"  {s:<{width}}  " + "  ".join(
                f"{duration(e) + ' / ' + duration(v) + (f' ({v / e:.2f})' if e >= 1 and v >= 0.5 else ''):>24}"
                for e, v in vals))
        return out


def _price(w: Work, own: Speed, speeds: Mapping[str, Speed], generator: float | None) -> float:
    sec = w.forward * own.forward + w.gradient * own.gradient + w.partial * own.forward * PATCH_SHARE + w.other
    sec += w.double * (DOUBLE_BACKWARD - 1.0) * own.gradient  # counted once in ``gradient`` already
    sec += w.compares * own.compare
    for name, (f, g) in w.via.items():
        sp = speeds.get(name, own)
        sec += f * sp.forward + g * sp.gradient
    if w.generator and generator is not None:
        sec += w.generator * generator
    return sec


def estimate(ctx, loaded: Sequence | None = None, speeds: Mapping[str, Speed] | None = None,
             generator_speed: float | None = None) -> Plan:
    """The plan of ``ctx``'s configured stages for models ``loaded`` (default ``ctx.models``): each
    stage's :func:`stage_work` priced at ``speeds`` (model name → :class:`Speed`; measured with
    :func:`calibrate` when not given). The logits (one forward pass per photo) go to the first stage
    that reads them, unless a stage before it records them in the cache (activity)."""
    loaded = list(ctx.models if loaded is None else loaded)
    speeds = dict(speeds or {})
    store = calibration_store(ctx)
    for m in loaded:
        if m.name not in speeds:
            with executor.network():
                speeds[m.name] = calibrate(m, ctx.device, store=store)
    names = list(ctx.config["stages"])
    rows: list[Row] = []
    notes: list[str] = []
    logits_paid: dict[str, bool] = {}
    for stage in names:
        for m in loaded:
            d = work_dict(ctx, stage, m)
            w = as_work(d, m)
            if d.get("logits") and not logits_paid.get(m.name):
                w = w + Work(forward=len(ctx.images))
                logits_paid[m.name] = True
            if d.get("stores_logits") and ctx.cache.enabled:
                logits_paid[m.name] = True
            rows.append(Row(m.name, stage, w, 0.0))
    if generator_speed is None and any(r.work.generator for r in rows):
        gpath = _generator_path(ctx)
        if gpath is not None:
            try:
                with executor.network():
                    generator_speed = calibrate_generator(gpath, ctx.device, store=store)
            except Exception as e:  # an unreadable generator: the stage says so itself
                notes.append(f"the image generator could not be timed ({type(e).__name__}): its passes are not priced")
    for r in rows:
        r.seconds = _price(r.work, speeds[r.model], speeds, generator_speed)
        notes.extend(n for n in r.work.notes if n not in notes)
    here = machine(ctx.device)
    fac = plan_history.factors(here, {(r.stage, r.model): (r.seconds, plan_history.signature(r.work)) for r in rows
                                      if r.seconds >= plan_history.MIN_SECONDS}, profile=ctx.config.profile)
    return Plan(names, [m.name for m in loaded], rows, speeds, generator_speed, notes=notes,
                machine=here, profile=ctx.config.profile, factors=fac)


def _generator_path(ctx) -> Path | None:
    s = ctx.stage_settings("dgn_am")
    p = Path(s["generator"])
    if not p.is_absolute():
        p = ROOT / p
    return p if p.is_file() else None


def machine(device: torch.device | str) -> dict[str, Any]:
    """What the build ran on, without names of the machine or its folders: device, processor model,
    cores, torch threads, versions, how host memory is allocated (:mod:`generator.allocator`)."""
    device = torch.device(device)
    gpu = ""
    if device.type == "cuda":
        try:
            gpu = torch.cuda.get_device_name(device)
        except Exception:
            gpu = ""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if not cpu:
        cpu = platform.processor() or platform.machine()
    return {"device": str(device), "gpu": gpu, "cpu": " ".join(cpu.split()), "cores": os.cpu_count() or 0,
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(), "allocator": allocator.describe()}


# ------------------------------------------------------------------------------------- the page


def page_markdown(plan: Plan, times: Mapping[str, float] | None, *, date: str | None = None,
                  executor: str = "local", network: Mapping[str, float] | None = None,
                  render_workers: int | None = None,
                  network_by_model: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The page "About this build": machine, profile, date, the plan and, after the build, the measured
    time of every stage beside its estimate."""
    m = plan.machine
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    dev = f"{m.get('device', '')}" + (f" ({md_escape(m['gpu'])})" if m.get("gpu") else "")
    text = [f"Built on {date} with the **{md_escape(plan.profile or '?')}** profile "
            f"(`generator/profiles.py`), device {md_escape(dev)}, executor {md_escape(executor)}, on "
            f"{md_escape(m.get('cpu', '?'))} with {m.get('cores', '?')} cores and {m.get('threads', '?')} torch "
            f"thread(s); PyTorch {md_escape(m.get('torch', '?'))}, Python {md_escape(m.get('python', '?'))}"
            + (f"; host memory: {md_escape(m['allocator'])} (`generator/allocator.py`)" if m.get("allocator") else "")
            + ("" if render_workers is None else
               f"; figures drawn {'in the build process' if render_workers == 0 else f'by {render_workers} worker process(es)'}")
            + ".\n"]
    text.append("## Estimated and measured\n")
    if times is not None:
        text.append("Each stage's estimate (made before the first model ran, below) beside the time it took. "
                    "A ratio far below 1 is usually the cache: the estimate is for a cold cache, and a stage "
                    "whose results were stored by an earlier build only reads them.\n")
        if plan.factors:
            text.append(f"The estimates include this machine's correction from its earlier builds (below); "
                        f"without it the stages were estimated at {duration(plan.raw_seconds())}.\n")
        text.append(plan.compare(times, network))
        if network is not None:
            text.append("\n*ratio*: measured / estimated. *Network*: network work, the time the build spent inside "
                        "the functions that run the networks on photos the cache did not hold (forward and backward passes, with the arithmetic that runs "
                        "between them, such as a check's similarity measures) and in the calibration above, less "
                        "the unit atlas' photo decoding. *Rest*: cache reads and writes, decoding and resizing "
                        "photos, statistics (bootstrap intervals, verdicts), drawing, encoding and writing figures, "
                        "writing pages. *rest %*: the rest's share of the stage's time.\n")
        per_model = plan.compare_models(network_by_model) if network_by_model else ""
        if per_model:
            text.append("\nPer model: each stage's estimate / the network work measured for that model (the "
                        "compute calls whose results belong to it), and their ratio. The estimate counts network "
                        "passes only, so it is compared with the network work; the rest of a stage is in the "
                        "table above.\n")
            text.append(per_model)
    else:
        text.append("Not measured: the build did not finish.\n")
    text.append("\n## The plan\n")
    text.append("Before the first stage ran, each network's speed was measured on this machine (a few batches "
                "of random photos at its input size, forward only and forward + gradient to the input, on the "
                "batch-norm-folded copy the methods use), and each stage counted, from its settings and the "
                "photos, how many images it sends through each classifier (the passes `bench/count_passes.py` "
                "counts). Estimated seconds are their product: every estimate is for a **cold cache**.\n")
    if plan.factors:
        text.append(f"Then {md_escape(plan.correction_note())}: the calibration takes a few seconds, a stage runs for "
                    "minutes at the machine's sustained speed, with arithmetic between the passes that the count does "
                    "not price (`generator/plan_history.py`). The table of passes below gives the estimates before "
                    "that correction.\n")
    text.append("| Model | forward | forward + input gradient | map comparison |\n|---|---:|---:|---:|\n" + "".join(
        f"| {md_escape(models.title_of(name))} | {1e3 * sp.forward:.1f} ms/image | {1e3 * sp.gradient:.1f} ms/image | "
        f"{1e3 * sp.compare:.1f} ms |\n" for name, sp in plan.speeds.items()))
    text.append("\n*Map comparison*: one map against another at the network's input size (Spearman, SSIM and HOG, as "
                "the findings compute them; no network), counted by the findings' checks.\n")
    if plan.generator_speed is not None:
        text.append(f"\nThe DGN-AM / PPGN image generator: {1e3 * plan.generator_speed:.1f} ms per code row "
                    f"(forward + gradient to the code).\n")
    text.append("\n" + plan.table())
    text.append("\n*forward*: images through the classifier without gradient; *with gradient*: forward + "
                "backward to the input; *partial copies*: occluded copies that recompute only the part of the "
                f"network their square reaches (counted as {PATCH_SHARE:g} of a forward pass); *generator rows*: "
                "codes through the DGN-AM image generator; *through other networks*: the DGN-AM judge and the "
                "generator's encoder (forward + ∇ with gradient).\n")
    text.append("\n## Downloads\n")
    if plan.downloads:
        text.append("| What | Name | File | Size | Fetched by this build |\n|---|---|---|---:|---|\n" + "".join(
            f"| {d.kind} | {md_escape(d.name)} | {md_escape(d.file)} | {size_text(d.size)} | "
            f"{'yes' if d.fetched else 'no: ' + d.note} |\n" for d in plan.downloads))
    else:
        text.append("Nothing: every weight file and data set was already here.\n")
    text.append("\n## Not counted\n")
    notes = ["cache hits: a stage finds some results stored by an earlier build; the estimate assumes none",
             "one-image passes that inspect a network (folding batch norm, checking occlusion's fast path, "
             "recording layer shapes and module order): a few per model and stage",
             "decoding and resizing photos, rendering figures, writing pages"] + plan.notes
    text.append("".join(f"- {n}\n" for n in notes))  # the plan's own sentences (Markdown)
    return "\n".join(text)


def write_page(ctx, plan: Plan, times: Mapping[str, float] | None, network: Mapping[str, float] | None = None,
               render_workers: int | None = None,
               network_by_model: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Add the page "About this build" (:data:`PAGE`, in the Models section of the navigation)."""
    executor = "ray" if getattr(getattr(ctx, "executor", None), "distributed", False) else "local"
    ctx.page(PAGE, "About this build", page_markdown(plan, times, executor=executor, network=network,
                                                     render_workers=render_workers,
                                                     network_by_model=network_by_model), nav="models", order=95)


# ------------------------------------------------------------------------------------- counting


def _codes(fns) -> frozenset:
    return frozenset(inspect.unwrap(f).__code__ for f in fns)


@contextlib.contextmanager
def count_images(stages: Collection[str] | None = None, checks: Sequence[str] = ()) -> Iterator[Counter]:
    """Count every image that enters a registry classifier while the block runs, by patching
    :meth:`generator.models.Normalize.forward` (the first operation of every ``Classifier``, of its
    copies and of the encoders' and judges' networks): a ``Counter`` keyed ``(stage, check, input
    size, with gradient)`` → images.

    ``stage`` is the innermost :meth:`generator.util.StageTimer.stage` running (with ``stages``
    given, only those names count as stages: a stage's own sub-timers are then part of it); ``check``
    the function of :mod:`generator.stages.findings` named in ``checks`` that is running, or
    ``"setup"`` for the one-image passes of :data:`SETUP`; "with gradient" is grad mode outside
    inference mode. Tensors on the meta device (shapes only) are not counted."""
    counts: Counter = Counter()
    state = {"stage": "-", "check": "-"}
    normalize = models.Normalize.forward
    stage_cm = util.StageTimer.stage
    setup = _codes(SETUP)

    def in_setup() -> bool:
        f = sys._getframe(1)
        while f is not None:
            if f.f_code in setup:
                return True
            f = f.f_back
        return False

    def counted(self, x):
        if not x.is_meta:
            grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            check = "setup" if in_setup() else state["check"]
            counts[(state["stage"], check, int(x.shape[-1]), grad)] += int(x.shape[0])
        return normalize(self, x)

    @contextlib.contextmanager
    def stage(self, name):
        if stages is not None and name not in stages:
            with stage_cm(self, name):
                yield
            return
        prev = state["stage"], state["check"]
        state["stage"], state["check"] = name, "-"
        with stage_cm(self, name):
            try:
                yield
            finally:
                state["stage"], state["check"] = prev

    findings = None
    originals: dict[str, Any] = {}
    if checks:
        from .stages import findings  # noqa: F811

        originals = {name: getattr(findings, name) for name in checks}

    def wrap(name):
        fn = originals[name]

        @functools.wraps(fn)
        def wrapped(*a, **k):
            prev, state["check"] = state["check"], name
            try:
                return fn(*a, **k)
            finally:
                state["check"] = prev
        return wrapped

    models.Normalize.forward = counted
    util.StageTimer.stage = stage
    for name in originals:
        setattr(findings, name, wrap(name))
    try:
        yield counts
    finally:
        models.Normalize.forward, util.StageTimer.stage = normalize, stage_cm
        for name, fn in originals.items():
            setattr(findings, name, fn)
