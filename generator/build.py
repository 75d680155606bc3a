"""The build pipeline: config → models + images → stages → Markdown pages.

Each stage is a module ``generator/stages/<name>.py`` (contract in
:mod:`generator.stages`): ``settings(config)`` reads and checks its config table,
``run(ctx)`` computes (through ``ctx.cache``), renders figures and adds page sections,
and ``PROVIDES`` / ``NEEDS`` / ``USES`` declare the artifacts it exchanges with other
stages through ``ctx.provide`` / ``ctx.need`` / ``ctx.artifact``. The configured order
and every stage's settings are checked before any model is loaded. Pages are written
once at the end by :class:`generator.site.SiteWriter`.

Before the first stage runs the build prints its plan (:mod:`generator.plan`: what it will download,
each network's measured speed, each stage's counted work and estimated seconds); every stage's
progress line carries its estimate and the build's ETA, and the page "About this build" shows the
estimates beside the measured times.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import allocator
from . import stages as stage_modules
from .cache import Cache, key
from .config import Config, ConfigError, read_table
from .images import IMAGE_SUFFIXES, ImageItem, Skipped, load_image_set
from .models import LoadedModel, WeightsCorrupt, WeightsError, get_spec, load_model
from .site import OutputFolder, SiteWriter
from .executor import (EXECUTORS, LocalExecutor, compute, make_executor, model_tag, network, network_by_model,
                       network_seconds)
from .progress import line as progress_line
from .util import StageTimer

log = logging.getLogger("generator")
# the plan (cache-neutral) is loaded by name: this module's imports make the code fingerprint of the
# logits (logits_chunk), which must not take in every stage and check that the plan counts
plan_mod = importlib.import_module(f"{__package__}.plan")
figure_files = importlib.import_module(f"{__package__}.figure_files")  # the same: drawing is not logits' code

REHEARSAL_BANNER = ("!!! danger \"Rehearsal: random weights\"\n"
                    "    This page comes from a rehearsal build. Models whose real weights were missing ran with "
                    "**random** weights: their pictures and numbers show only that the pipeline runs, not what a "
                    "trained network learned.")


def logits_chunk(model: LoadedModel, batch_size: int, x: torch.Tensor) -> list[torch.Tensor]:
    """Logits (float32, CPU) of photos ``x``, forward only, in batches of ``batch_size``."""
    x = x.to(model.device)
    out: list[torch.Tensor] = []
    for s in range(0, len(x), batch_size):
        with torch.no_grad():
            out.extend(model.net(x[s : s + batch_size]).float().cpu())
    return out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"[build] device = {name!r}: must be auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"[build] device = {name!r}: CUDA is not available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"[build] device = {name!r}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), numbered from 0")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"[build] device = {name!r}: MPS is not available on this machine (use cpu or auto)")
    return dev


@dataclass
class BuildContext:
    config: Config
    models: list[LoadedModel]
    missing: dict[str, str]
    images: list[ImageItem]
    skipped: list[Skipped]
    notes: list[str]
    cache: Cache
    site: SiteWriter
    device: torch.device
    batch_size: int
    timer: StageTimer
    out: Path
    settings: dict[str, dict] = field(default_factory=dict)
    executor: Any = field(default_factory=LocalExecutor)  # generator.executor: where chunks of model work run
    artifacts: dict[str, Any] = field(default_factory=dict)
    plan: Any = None  # generator.plan.Plan, made before the first stage runs
    render_pool: Any = None  # generator.figure_files.RenderPool: where this build's figures are drawn
    _inputs: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)
    _logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _channels: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    # -- inputs ----------------------------------------------------------------
    def batch(self, model: LoadedModel, items: list[ImageItem]) -> torch.Tensor:
        """Pixel-space input batch for ``model`` (resize + centre crop), on ctx.device."""
        key = (model.spec.preprocess, tuple(i.sha256 for i in items))
        if key not in self._inputs:
            self._inputs[key] = model.spec.preprocess([i.pil for i in items])
        return self._inputs[key].to(self.device)

    def logits(self, model: LoadedModel) -> torch.Tensor:
        """Logits of every image (N×1000, CPU), computed in batches once per build and cached."""
        if model.name not in self._logits:
            keys = [self._logits_key(model, it) for it in self.images]
            res = compute(self, keys, logits_chunk,
                          lambda idx: (model, self.batch_size, self.batch(model, [self.images[i] for i in idx])),
                          what=f"logits {model.name}")
            self._logits[model.name] = torch.stack(res) if res else torch.empty(0, 1000)
        return self._logits[model.name]

    @staticmethod
    def _logits_key(model: LoadedModel, item: ImageItem) -> dict:
        return key("logits", model=model, code=logits_chunk, image=item.sha256)

    def store_logits(self, model: LoadedModel, items: list[ImageItem], logits: torch.Tensor) -> None:
        """Let a stage that ran the model anyway record the logits (no second forward pass)."""
        for it, row in zip(items, logits):
            self.cache.put_if_absent(self._logits_key(model, it), row.detach().float().cpu().clone())

    def targets(self, model: LoadedModel) -> torch.Tensor:
        """Class to explain per image: the manifest's class when known, else the top-1 prediction."""
        top1 = self.logits(model).argmax(1) if self.images else torch.empty(0, dtype=torch.long)
        return torch.tensor([it.imagenet_index if it.imagenet_index is not None else int(t)
                             for it, t in zip(self.images, top1)], dtype=torch.long)

    def layers(self, model: LoadedModel) -> list[str]:
        wanted = self.config.model_section(model.name).get("layers") or list(model.spec.default_layers)
        for name in wanted:
            model.spec.layer(name)  # raises a clear KeyError for unknown names
        return list(wanted)

    # -- counting work (the stages' work(), generator.plan) ------------------------
    def work_steps(self, n: int, chunk: int = 0, unit: int | None = None) -> list[list[int]]:
        """The index lists in which :func:`~generator.executor.compute` computes ``n`` keys that all
        miss the cache (``chunk``, ``unit``: as given to it); see :func:`generator.plan.work_steps`."""
        return plan_mod.work_steps(self, n, chunk, unit)

    def channels(self, model: LoadedModel) -> dict[str, int]:
        """Output channels of every catalogued layer of ``model`` (:func:`generator.plan.layer_channels`)."""
        if model.name not in self._channels:
            self._channels[model.name] = plan_mod.layer_channels(model)
        return self._channels[model.name]

    def stage_settings(self, stage: str) -> dict:
        """The checked settings of ``stage`` (read once from its config table)."""
        if stage not in self.settings:
            self.settings[stage] = stage_modules.load(stage).settings(self.config)
        return self.settings[stage]

    # -- artifacts exchanged between stages (declared in each stage module) ------
    def provide(self, name: str, value: Any) -> None:
        self.artifacts[name] = value

    def need(self, name: str) -> Any:
        if name not in self.artifacts:
            raise RuntimeError(f"artifact {name!r} was not provided (stage order is checked, so this is a bug)")
        return self.artifacts[name]

    def artifact(self, name: str, default: Any = None) -> Any:
        return self.artifacts.get(name, default)

    # -- pages (delegates) -----------------------------------------------------
    def declare(self, page: str, title: str, intro: str = "", nav: str | None = None, order: int = 50) -> None:
        self.site.declare(page, title, intro, nav, order)

    def figure_path(self, rel: str, *, model: str | None = None, photo: str | None = None, layer: str | None = None,
                    method: str | None = None, caption: str | None = None) -> Path:
        """Path of figure ``figures/<rel>``; the keywords record what it shows (model name, photo id,
        layer, method, caption) for its caption, credit and export (see ``SiteWriter.figure_path``)."""
        return self.site.figure_path(rel, model=model, photo=photo, layer=layer, method=method, caption=caption)

    def section(self, page: str, title: str, markdown: str, order: int = 50) -> None:
        self.site.section(page, title, markdown, order)

    def page(self, rel_path: str, title: str, markdown: str, nav: str | None = None, order: int = 50) -> None:
        self.site.page(rel_path, title, markdown, nav, order)

    def link(self, from_page: str, target: str) -> str:
        return self.site.link(from_page, target)

    def render(self, template: str, **vars: Any) -> str:
        return self.site.render(template, **vars)


@dataclass
class BuildResult:
    ctx: BuildContext
    exit_code: int


def load_models(names: list[str], weights_dir: str | None, offline: bool, strict: bool, device: torch.device,
                say=print, random_for_missing: bool = False) -> tuple[list[LoadedModel], dict[str, str]]:
    """Each model with its real weights; a model whose weights are missing is reported and
    skipped (``strict``: an error). ``random_for_missing`` (rehearsals only) builds such a
    model with seeded random weights instead, labelled in its ``weights_id``."""
    models, missing = [], {}
    for name in names:
        spec = get_spec(name)
        try:
            m = load_model(spec, weights_dir or None, offline=offline, device=device)
            say(f"model {spec.name}: real weights from {m.weights_path}")
        except WeightsError as e:
            if strict:
                raise
            if not random_for_missing:
                missing[spec.name] = str(e)
                what = "CORRUPT WEIGHTS" if isinstance(e, WeightsCorrupt) else "MISSING WEIGHTS"
                say(f"model {spec.name}: {what}, skipped. {e}")
                continue
            m = load_model(spec, allow_random=True, device=device)
            say(f"model {spec.name}: REHEARSAL with random weights (real ones missing: {e})")
        models.append(m)
    return models, missing


def check_config(config: Config) -> dict[str, dict]:
    """Every table of the configuration checked (also those of stages not run this time,
    so a typo never waits for the day its stage is enabled); returns each stage's settings."""
    known = {"build", "models", *stage_modules.STAGES}
    for table in config.data:
        if table not in known:
            raise ConfigError(f"unknown table [{table}]; known: {', '.join(sorted(known))}")
    model_tables = config.data.get("models", {})
    if not isinstance(model_tables, dict):
        raise ConfigError(f"[models] must be a table of [models.<name>] tables, got {model_tables!r}")
    for name, table in model_tables.items():
        read_table(table, f"models.{name}", {"layers": [], "deconv_layers": []})
    for name in config["models"]:
        try:
            spec = get_spec(name)
        except KeyError as e:
            raise ConfigError(f"[build] models: {e.args[0]}") from None
        except Exception as e:  # a malformed torchvision:/timm: name
            raise ConfigError(f"[build] models: {name!r}: {e}") from None
        for table_key in ("layers", "deconv_layers"):
            for layer in config.model_section(spec.name).get(table_key) or []:
                try:
                    spec.layer(layer)
                except (KeyError, TypeError) as e:
                    raise ConfigError(f"[models.{spec.name}] {table_key}: {layer!r}: {e.args[0] if e.args else e}") from None
    return {name: mod.settings(config) for name in stage_modules.STAGES
            if hasattr(mod := stage_modules.load(name), "settings")}


def make_plan(ctx: BuildContext, fetches: list, say=print):
    """Calibrate every loaded model (a line each), estimate every stage (:func:`generator.plan.estimate`)
    and print the plan; None (and one line) when it cannot be made — the build goes on without it."""
    busy = plan_mod.busy_note(ctx.device)
    if busy:
        say(f"note: {busy}")
    try:
        speeds = {}
        for m in ctx.models:
            with network():
                sp = speeds[m.name] = plan_mod.calibrate(m, ctx.device, store=plan_mod.calibration_store(ctx))
            say(f"calibration: {m.name} forward {1e3 * sp.forward:.1f} ms/image, with gradient "
                f"{1e3 * sp.gradient:.1f} ms/image, map comparison {1e3 * sp.compare:.1f} ms" + (f" (measured {sp.measured} by an earlier build on this machine)"
                                                       if sp.reused else ""))
        plan = plan_mod.estimate(ctx, ctx.models, speeds)
    except Exception as e:  # a plan never stops a build
        say(f"plan: not made ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the build goes on "
            f"without estimates")
        log.debug("plan failed", exc_info=True)
        return None
    plan.downloads = list(fetches)
    if busy:
        plan.notes.insert(0, busy)
    if plan.generator_speed is not None:
        say(f"calibration: DGN-AM image generator {1e3 * plan.generator_speed:.1f} ms per code row")
    for line in plan.lines():
        say(line)
    return plan


def planned(plan, timer: StageTimer, names: list[str], done: int) -> str:
    """"; plan 40 s, about 12 min left" for the stage ``names[done]`` about to start (``done`` stages
    finished, their measured times in ``timer``); "" without a plan."""
    if plan is None:
        return ""
    left = plan.eta({n: timer.times.get(n, 0.0) for n in names[:done]}, names[done:])
    return f"; plan {plan_mod.duration(plan.seconds(names[done]))}, about {plan_mod.duration(left)} left"


def network_per_model(ctx: BuildContext, timer: StageTimer) -> dict[str, dict[str, float]]:
    """stage → model name → the network seconds of that model's compute calls (their keys name it)."""
    names = {model_tag(m.cache_id): m.name for m in ctx.models}
    return {stage: {names[t]: sec for t, sec in per.items() if t in names}
            for stage, per in timer.network_by_model.items()}


def run_build(config: Config, say=print, rehearsal: bool = False, plan_only: bool = False) -> BuildResult:
    """Run the configured stages and write the pages. ``rehearsal=True`` (see
    :mod:`generator.rehearse`) gives missing models random weights and puts a banner on
    every page; it never writes to the real output folder or cache. ``plan_only=True`` loads the
    models, calibrates them and prints the plan, then stops: no stage runs, the output folder
    stays as it was (``ctx.plan`` holds the plan; None when it could not be made)."""
    timer = StageTimer(network=network_seconds, by_model=network_by_model)
    b = config.build
    # everything that can be wrong with the configuration and the inputs is found before
    # any model work: stage order, every table, model and layer names, device, photos,
    # the output folder
    stages = stage_modules.plan(list(b["stages"]))
    settings = check_config(config)
    if b["executor"] not in EXECUTORS:
        raise ConfigError(f"[build] executor = {b['executor']!r}; allowed: {', '.join(EXECUTORS)}")
    device = pick_device(b["device"])
    allocator.keep_freed_memory()  # before the calibration: the plan times the passes as the stages run them
    out = config.resolve_path(b["out"])
    with timer.stage("load images"):
        folder = config.resolve_path(b["images"])
        images, skipped, notes = load_image_set(folder, limit=b.get("image_limit") or None)
    for n in notes:
        say(f"note: {n}")
    for s in skipped:
        say(str(s))
    if not images:
        raise ConfigError(f"image folder {folder}: no usable photo (all {len(skipped)} skipped, see above)" if skipped
                          else f"image folder {folder} holds no photos (file types used: "
                               f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    output = OutputFolder(out)  # refuses a folder with files this tool did not write
    ctx = None
    # what loading the models fetches, said before it happens (the data sets are read, never fetched)
    fetches = plan_mod.downloads(config)
    for d in fetches:
        if d.kind == "weights" and d.fetched:
            say(f"plan: downloads the weights of {d.name}: {d.file} ({plan_mod.size_text(d.size)})")
    try:
        with timer.stage("load models"):
            models, missing = load_models(list(b["models"]), b.get("weights_dir"), bool(b["offline"]),
                                          bool(b["strict"]), device, say, random_for_missing=rehearsal)
        say(f"{len(images)} images, {len(skipped)} skipped; {len(models)} models with weights, {len(missing)} "
            f"missing; device {device}")
        fetches = plan_mod.after_loading(fetches, missing)
        ctx = BuildContext(
            config=config, models=models, missing=missing, images=images, skipped=skipped, notes=notes,
            cache=Cache(config.resolve_path(b["cache"]), enabled=not b.get("no_cache")),
            site=SiteWriter(output.tmp, banner=REHEARSAL_BANNER if rehearsal else ""), device=device,
            batch_size=int(b["batch_size"]), timer=timer, out=out, settings=settings,
        )
        ctx.executor = make_executor(b["executor"], b["ray_address"], say)
        with timer.stage("plan"):
            ctx.plan = make_plan(ctx, fetches, say)
        if plan_only:
            output.abort()
            say("plan only: no stage ran; the output folder is as it was")
            return BuildResult(ctx, 3 if ctx.plan is None else 1 if missing else 0)
        names = list(b["stages"])
        cold: list[str] = []  # stages that computed (almost) all their results: their times teach the plan
        pool = ctx.render_pool = figure_files.RenderPool(figure_files.workers_for(b["render_workers"], device.type))
        if pool.parallel:
            say(f"figures: drawn and written by {pool.workers} worker process(es) beside the model work")
        with figure_files.using(pool):
            for i, (name, mod) in enumerate(zip(names, stages), 1):
                progress_line(f"stage {i}/{len(stages)} {name}: start ({timer.elapsed():.0f} s into the build"
                              f"{planned(ctx.plan, timer, names, i - 1)})")
                hits, misses = ctx.cache.earlier_hits, ctx.cache.misses
                with timer.stage(name):
                    mod.run(ctx)
                    pool.wait()  # its figures are on disk before the next stage (which may read them) starts
                if plan_mod.plan_history.cold(ctx.cache.earlier_hits - hits, ctx.cache.misses - misses):
                    cold.append(name)
                est = f" (plan {plan_mod.duration(ctx.plan.seconds(name))})" if ctx.plan is not None else ""
                progress_line(f"stage {i}/{len(stages)} {name}: done in {timer.times[name]:.1f} s{est}")
                missing_artifacts = [a for a in getattr(mod, "PROVIDES", ()) if a not in ctx.artifacts]
                if missing_artifacts:
                    raise RuntimeError(f"stage {name!r} did not provide {', '.join(missing_artifacts)}")
        with timer.stage("write pages"):
            if ctx.plan is not None:
                plan_mod.write_page(ctx, ctx.plan, {n: timer.times.get(n, 0.0) for n in names},
                                    {n: timer.network.get(n, 0.0) for n in names}, pool.workers,
                                    network_per_model(ctx, timer))
            ctx.site.finish()
            output.commit()
    except BaseException:
        output.abort()  # the previous output stays as it was
        raise
    finally:
        if ctx is not None:
            ctx.executor.close()
    say(f"cache: {ctx.cache.hits} hits, {ctx.cache.misses} misses, {ctx.cache.stored} stored")
    say("time per stage:\n" + timer.summary())
    spent, net = timer.elapsed(), min(network_seconds(), timer.elapsed())
    if spent > 0:  # the whole run: set-up (photos, models, plan), stages, pages
        say(f"generator: network work {net:.0f} s, the rest {spent - net:.0f} s ({100 * (spent - net) / spent:.0f} % of "
            f"its {spent:.0f} s: loading, cache reads and writes, decoding, statistics, drawing and writing figures "
            f"and pages)")
    if ctx.plan is not None:
        spent = sum(timer.times.get(n, 0.0) for n in b["stages"])
        raw = (f"; {plan_mod.duration(ctx.plan.raw_seconds())} before this machine's correction"
               if ctx.plan.factors else "")
        say(f"plan: stages estimated {plan_mod.duration(ctx.plan.total)} (cold cache{raw}), took "
            f"{plan_mod.duration(spent)}")
        by_model = network_per_model(ctx, timer)
        say("plan per model: estimated / measured network work (ratio)\n" + "\n".join(ctx.plan.model_lines(by_model)))
        history = plan_mod.plan_history
        learnt = history.record(ctx.plan.machine, {(r.stage, r.model): (r.seconds, history.signature(r.work))
                                                   for r in ctx.plan.rows}, by_model, cold, ctx.plan.profile)
        if learnt and history.path() is not None:
            say(f"plan: measured / estimated of {len(learnt)} cold stage(s) and model(s) kept for the next plan on this "
                f"machine ({', '.join(f'{s} {m} {r:.2f}' for s, m, r in learnt)})")
    if skipped or missing:
        say(f"{len(skipped)} image(s) skipped, {len(missing)} model(s) without weights (see above): exit code 1")
    return BuildResult(ctx, 1 if skipped or missing else 0)
