"""Rehearsal of the full job: every stage, every configured model, random weights where real ones are missing.

The people this tool is for build the site with AlexNet, VGG16, GoogLeNet and ResNet-50 and their real
weights. Where those weights are missing (as on the project's own machines) a rehearsal still runs the
whole build with the same settings — seeded random weights for the missing models, real weights for the
others — so that what breaks, runs out of memory or is slow on the classic architectures shows up here,
and the time of a real build can be stated: a weight-for-weight identical real build does the same work.

A rehearsal lives in its own folder (default ``.rehearsal/``): its own generated pages, its own results
cache and its own MkDocs site, with a banner on every page. It never writes to the real output folder or
to the real results cache, so no number from it can reach the real site.

``--small`` is the rehearsal run by ``make test``: two photos, every stage, a few optimisation steps.
``--timing`` first builds each model alone (sharing the rehearsal's cache, so the combined build that
follows reuses that work) and prints seconds per model and per stage as a Markdown table.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .build import BuildResult, run_build
from .config import ROOT, Config, ConfigError
from .util import atomic_write_text

DEFAULT_DIR = ".rehearsal"

#: ``--small``: every stage on every model, as cheaply as each stage allows
SMALL: dict[str, dict] = {
    "build": {"image_limit": 2},
    "activity": {"top_channels": 4, "neurons": 1},
    "attribution": {"gallery_images": 2, "neurons": 2, "neuron_images": 1, "neuron_layers": 1,
                    "method_params": {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2},
                                      "occlusion": {"window": 112, "stride": 112}}},
    # every attribution method runs on every architecture above; the findings' checks need only two
    "findings": {"images": 2, "sanity_images": 1, "cascade_steps": 2, "faithfulness_steps": 2,
                 "accuracy_folder": "", "methods": ["saliency", "gradcam"], "expensive_images": 1,
                 "sanity_expensive_images": 1, "invariance_images": 1, "fragility_images": 1, "fragility_steps": 1,
                 "faithfulness_images": 2, "selectivity_images": 2, "ablation_units_per_layer": 1},
    "dgn_am": {"classes": [1], "steps": 2, "baselines": ["plain"], "ppgn_steps": 2, "ppgn_samples": 1,
               "units_per_layer": 1, "recon_images": 1},
    "atlas": {"max_channels_per_layer": 1, "top_k": 1, "max_images": 2, "batch_size": 2},
}

ANNOUNCE = """{% extends "base.html" %}
{% block announce %}Rehearsal build: models whose real weights were missing ran with <strong>random
weights</strong>. The pictures and numbers here show only that the pipeline runs.{% endblock %}
"""


def apply_small(config: Config) -> Config:
    for table, values in SMALL.items():
        if table == "build":
            config.override(**values)
            continue
        current = config.data.setdefault(table, {})
        for key, value in values.items():
            if key == "method_params":
                mp = current.setdefault("method_params", {})
                for method, params in value.items():
                    mp[method] = {**mp.get(method, {}), **params}
            else:
                current[key] = value
    return config


def prepare(config: Config, folder: Path) -> Config:
    """Point the build at the rehearsal folder; refuse one inside or around the real output, cache or site."""
    real = [config.resolve_path(config["out"]), config.resolve_path(config["cache"]), ROOT / "site_src", ROOT / "site"]
    folder = folder.resolve()
    if folder == ROOT.resolve() or any(folder.is_relative_to(r.resolve()) or r.resolve().is_relative_to(folder)
                                       for r in real):
        raise ConfigError(f"rehearsal folder {folder} would overwrite the real site or cache; choose another")
    config.override(out=str(folder / "site_src" / "generated"), cache=str(folder / "cache"))
    return config


def write_mkdocs_project(folder: Path) -> Path:
    """The hand-written pages, the MkDocs config and an announce banner, inside ``folder``."""
    src = folder / "site_src"
    src.mkdir(parents=True, exist_ok=True)
    for item in (ROOT / "site_src").iterdir():
        if item.name == "generated":
            continue
        dest = src / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    atomic_write_text(folder / "overrides" / "main.html", ANNOUNCE)
    lines = []
    for line in (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines():
        if line.startswith("site_name:"):
            line = line + " (rehearsal, random weights)"
        lines.append(line)
        if line.strip() == "name: material":
            lines.append("  custom_dir: overrides")
    cfg = folder / "mkdocs.yml"
    atomic_write_text(cfg, "\n".join(lines) + "\n")
    return cfg


def mkdocs_build(cfg: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(cfg)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"mkdocs build of the rehearsal failed:\n{r.stdout}{r.stderr}")


def timing_table(times: dict[str, dict[str, float]], stages: list[str],
                 estimates: dict[str, dict[str, float]] | None = None) -> str:
    """model → stage → seconds, as a Markdown table: a column per stage, and the model's
    total over the stages (loading the model and writing pages are not counted). With
    ``estimates`` (model → stage → the plan's seconds) each cell reads "measured (estimated)" and a
    last column gives the ratio measured / estimated of the model's total."""
    est = estimates or {}
    head = "| Model | " + " | ".join(stages) + " | total |" + (" ratio |" if est else "")
    rows = [head, "|---|" + "---:|" * (len(stages) + 1 + (1 if est else 0))]

    def cell(model: str, meas: float, e: float | None) -> str:
        return f"{meas:.0f} s" + (f" ({e:.0f} s)" if e is not None else "")

    for model, t in times.items():
        e = est.get(model)
        total = sum(t.get(s, 0.0) for s in stages)
        e_total = sum(e.get(s, 0.0) for s in stages) if e is not None else None
        ratio = (f" {total / e_total:.2f} |" if e_total else " – |") if est else ""
        rows.append(f"| {model} | " + " | ".join(cell(model, t.get(s, 0.0), None if e is None else e.get(s))
                                                 for s in stages)
                    + f" | {cell(model, total, e_total)} |" + ratio)
    return "\n".join(rows)


def rehearse(config: Config, folder: Path, small: bool = False, timing: bool = False, site: bool = True,
             say=print, plan_only: bool = False) -> BuildResult:
    if small:
        apply_small(config)
    prepare(config, folder)
    if plan_only:
        return run_build(config, say=say, rehearsal=True, plan_only=True)
    if timing:
        per_model: dict[str, dict[str, float]] = {}
        estimates: dict[str, dict[str, float]] = {}
        for name in list(config["models"]):
            one = Config(copy.deepcopy(config.data), config.path)
            one.override(models=[name], out=str(folder / "per-model" / "generated"))
            t0 = time.perf_counter()
            res = run_build(one, say=lambda m: None, rehearsal=True)
            per_model[name] = dict(res.ctx.timer.times)
            if res.ctx.plan is not None:
                estimates[name] = {s: res.ctx.plan.seconds(s) for s in config["stages"]}
            say(f"rehearsal: {name} alone took {time.perf_counter() - t0:.0f} s")
        shutil.rmtree(folder / "per-model", ignore_errors=True)
        say("seconds per model and stage, measured (estimated by the build's plan), each model built alone on a "
            "cold rehearsal cache; a warm one makes the measured times about 0:\n"
            + timing_table(per_model, list(config["stages"]), estimates))
    result = run_build(config, say=say, rehearsal=True)
    if site:
        cfg = write_mkdocs_project(folder)
        mkdocs_build(cfg)
        say(f"rehearsal site: {folder / 'site' / 'index.html'}")
    return result
