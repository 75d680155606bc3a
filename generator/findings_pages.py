"""The Findings pages, their figures and the findings' sections of the method pages (pages layer).

``findings/index`` leads with the answer to "is visualisation enough?" and the verdicts at a glance
(each cell links to its check's page and the model's part of it); each check has its own page
(:data:`CHECK_PAGES`: method, protocol, tables, figures, the notes that apply).

Everything here is drawn or written from the results of the findings' checks
(:mod:`generator.metrics`) and the summaries of :mod:`generator.metrics.verdicts`; the stage
:mod:`generator.stages.findings` computes them and calls :func:`figures` and :func:`write_pages`.
A figure is drawn only when the cache holds no bytes drawn from the same data (:func:`_figure`).
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from . import datasets, profiles
from .probes import scaled

import numpy as np
import torch

from .cache import key
from .metrics import bootstrap, faithfulness, plots, sanity, similarity
from .metrics.transfer import judge_evidence
from .metrics.verdict_units import summarise_units
from .metrics.verdicts import and_list, answer, answer_headline, correct, cross_model, fixed, headlines
from .models import get_spec
from .site import Headline
from .util import atomic_write_bytes, download_pdf, download_png, stable_hash, write_bytes_if_changed

PAGE = "findings/index"
ORDER = 70  # method-page sections after the galleries
COMMAND = "python -m generator build --stages overview,findings"


def _figure(ctx, rel: str, data, draw, **meta) -> str:
    """Draw ``figures/<rel>`` unless the cache holds the bytes drawn from the same data.

    ``data`` is everything the picture depends on (numbers, labels); ``draw(path)``
    writes the file; ``meta``: what it shows (model, method, caption) for its caption and the
    export. Returns the path relative to the generated folder.
    """
    path = ctx.figure_path(rel, **meta)
    # the files behind its download link: a raster figure's PNG, a vector plot's PDF
    twins = {k: t for k, t in (("png", download_png(path)), ("pdf", download_pdf(path))) if t is not None}
    k = key("findings-figure", model=None, code=plots, rel=rel, data=stable_hash(_plain(data)))
    blob = ctx.cache.get(k)
    if blob is None or any(t not in blob for t in twins):
        draw(path)
        blob = ctx.cache.put(k, {"bytes": path.read_bytes(), **{t: p.read_bytes() for t, p in twins.items()}})
    if not path.is_file() or path.read_bytes() != blob["bytes"]:
        atomic_write_bytes(path, blob["bytes"])
    for t, p in twins.items():
        write_bytes_if_changed(p, blob[t])
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


def figures(ctx, model, names, titles, cascade: sanity.Cascade, fai: faithfulness.Faithfulness, maps: dict, items,
            s: dict, low_rank: int, sm) -> dict:
    """The figures of one model's findings (name → path under the generated folder)."""
    base = f"findings/{model.name}"
    title = model.spec.title
    ext = s["figure_format"]
    sanity_t = float(s["sanity_threshold"])
    figs = {}
    labels_ = cascade.labels
    curves = {n: {m: getattr(cascade.methods[n], m) for m in similarity.METRICS
                  + (sanity.SIGNED_METRICS if cascade.methods[n].signed else ())} for n in names}
    figs["sanity"] = _figure(ctx, f"{base}/sanity.{ext}", [labels_, curves, titles, title, sanity_t],
                             lambda p: plots.cascade_curves(p, labels_, curves, titles, title, sanity_t),
                             model=model.name, caption="Findings · model-randomisation check, every method")
    for n in names:
        figs[f"sanity-{n}"] = _figure(
            ctx, f"{base}/sanity-{n}.{ext}", [labels_, curves[n], titles[n], title, sanity_t],
            lambda p, n=n: plots.method_cascade(p, labels_, curves[n], titles[n], title, sanity_t),
            model=model.name, method=n, caption=f"Findings · model-randomisation check, {titles[n]}")
    t = int(s["thumb"])
    first = {}
    for n in names:
        trained = sanity.thumbnails(maps[n][:1, 0], t).float().numpy()  # 1×t×t
        first[n] = np.concatenate([trained, cascade.methods[n].thumbs[:, 0]], 0)
    figs["sanity_maps"] = _figure(ctx, f"{base}/sanity-maps.webp", [labels_, first, titles, title, items[0].title],
                                  lambda p: plots.cascade_maps(p, labels_, first, titles, title, items[0].title),
                                  model=model.name, caption="Findings · maps under the randomisation cascade")
    rows = {r["name"]: r for r in sm.rows}
    labels = [titles[n] for n in names]
    tri = lambda iv: (iv.mean, iv.lo, iv.hi)  # noqa: E731
    second = "a random class" if s.get("class_check", "random") == "random" else f"class ranked {low_rank}"
    series = {f"top-1 vs {second} (photos with both maps)": [tri(rows[n]["class_low"]["spearman"]) for n in names]}
    figs["class"] = _figure(ctx, f"{base}/class.{ext}", [labels, series, float(s["class_threshold"])],
                            lambda p: plots.interval_bars(p, labels, series, f"{title}: does the map change with the class?",
                                                          "Spearman rank corr. of |map|", float(s["class_threshold"])),
                            model=model.name, caption="Findings · class check")
    inv = {"map of the shift-absorbing copy vs original": [tri(rows[n]["invariance"]) for n in names]}
    figs["invariance"] = _figure(ctx, f"{base}/invariance.{ext}", [labels, inv, float(s["invariance_threshold"])],
                                 lambda p: plots.interval_bars(p, labels, inv, f"{title}: input invariance (Kindermans et al.)",
                                                               "Spearman rank corr. of |map|", float(s["invariance_threshold"])),
                                 model=model.name, caption="Findings · input invariance")
    fr_names = [n for n in names if "fragility_attack" in rows[n]]
    if fr_names:
        fr_labels = [f"{titles[n]} ({'own map' if rows[n].get('fragility_own') else 'proxy'})" for n in fr_names]
        fr = {"top-k overlap after attack": [tri(rows[n]["fragility_attack"]) for n in fr_names],
              "top-k overlap after random noise, same size": [tri(rows[n]["fragility_noise"]) for n in fr_names]}
        if all("fragility_rho_attack" in rows[n] for n in fr_names):  # Ghorbani et al.'s rank correlation beside it
            fr["Spearman after attack"] = [tri(rows[n]["fragility_rho_attack"]) for n in fr_names]
            fr["Spearman after random noise"] = [tri(rows[n]["fragility_rho_noise"]) for n in fr_names]
        figs["fragility"] = _figure(ctx, f"{base}/fragility.{ext}", [fr_labels, fr, s["fragility_eps"]],
                                    lambda p: plots.interval_bars(
                                        p, fr_labels, fr, f"{title}: the map after attack and noise vs the original",
                                        "top-k overlap / Spearman (1 = unchanged)", None, (-0.2, 1.05)),
                                    model=model.name, caption="Findings · fragility")
    fcurves = {n: {k: getattr(c, k) for k in faithfulness.CURVES} for n, c in fai.curves.items()}
    figs["faithfulness"] = _figure(ctx, f"{base}/faithfulness.{ext}", [fai.fractions, fcurves, titles, title],
                                   lambda p: plots.faithfulness_curves(p, fai.fractions, fcurves, titles, title),
                                   model=model.name, caption="Findings · deletion and insertion")
    u = sm.units
    if u and u.layers:
        pts = {l: (np.asarray(d.selectivity), np.asarray(d.prob_drop),
                   None if getattr(d, "class_drop", None) is None else np.asarray(d.class_drop))
               for l, d in u.layers.items()}
        figs["units"] = _figure(ctx, f"{base}/selectivity.{ext}", [pts, title],
                                lambda p: plots.selectivity_scatter(p, pts, f"{title}: selectivity vs ablation cost"),
                                model=model.name, caption="Findings · selectivity vs ablation cost of units")
    return figs


def transfer_evidence(ctx) -> dict:
    """The independent-judge table of the configured generator (``[dgn_am] generator``): do class
    visualisations made on one network transfer to another? (:func:`~generator.metrics.transfer.judge_evidence`)"""
    return judge_evidence(ctx.config.resolve_path(ctx.stage_settings("dgn_am")["generator"]))


@dataclass(frozen=True)
class CheckPage:
    """One check's own page ``findings/<key>``: its title (also its entry in the navigation), the
    question it answers, the section templates that make it (``findings/<template>.md.j2``), the notes
    of "How these numbers were made" that apply to it (keys of ``method_notes.md.j2``) and its place
    in the navigation under Findings (the index is 0)."""

    key: str
    title: str
    question: str
    templates: tuple[str, ...]
    notes: tuple[str, ...]
    order: int

    @property
    def page(self) -> str:
        return f"findings/{self.key}"


_COMMON_NOTES = ("settings", "expensive", "general", "reproduce")

#: the check pages, in the order of the navigation
CHECK_PAGES: tuple[CheckPage, ...] = (
    CheckPage("randomisation", "Randomisation check", "Does the map depend on the learned weights?", ("sanity",),
              ("photos", "maps", "randomisation", *_COMMON_NOTES), 10),
    CheckPage("class", "Class check", "Does the map depend on the class it explains?", ("class",),
              ("photos", "maps", "class", *_COMMON_NOTES), 20),
    CheckPage("faithfulness", "Deletion and insertion", "Do the pixels a map ranks first matter most to the model?",
              ("faithfulness",), ("photos", "faithful", "ties", *_COMMON_NOTES), 30),
    CheckPage("invariance", "Input invariance",
              "Does a constant shift of the input that the model absorbs change the map?",
              ("invariance",), ("photos", "maps", *_COMMON_NOTES), 40),
    CheckPage("fragility", "Fragility", "Does a tiny perturbation that keeps the class move the map?", ("fragility",),
              ("photos", "ties", *_COMMON_NOTES), 50),
    CheckPage("selectivity", "Selectivity and importance",
              "Do the most class-selective units matter most to the network?",
              ("units",), ("photos", "general", "reproduce"), 60),
    CheckPage("transfer", "Transfer of class visualisations",
              "Does another network recognise the class in a class visualisation?", ("transfer",), (), 70),
)

#: a check (a key of :data:`generator.metrics.verdicts.CHECKS`, or ``"units"``, ``"transfer"``) → its page key
PAGE_OF: dict[str, str] = {
    "sanity": "findings/randomisation", "top_layer": "findings/randomisation", "class": "findings/class",
    "random": "findings/faithfulness", "centre": "findings/faithfulness", "faithfulness": "findings/faithfulness",
    "invariance": "findings/invariance", "fragility": "findings/fragility", "units": "findings/selectivity",
    "transfer": "findings/transfer",
}

#: the index's sections: title, template, order (the profile line: -5; data credits: 95)
INDEX_SECTIONS = (("", "summary", 0), ("Across models", "across", 5),
                  ("Models: size, cost and measured accuracy", "model_table", 10),
                  ("The checks, one page each", "checks", 20),
                  ("What the literature says about these checks", "literature", 30),
                  ("How these numbers were made", "method_notes", 90))

#: the notes of "How these numbers were made" on the index, and the title of the fold they are in
INDEX_NOTES = ("photos", "intervals", "verdicts", "expensive", "settings", "cost", "reproduce")
NOTES_FOLDED = "Photos, intervals, verdicts and the Holm correction, settings, cost"


def anchor(sm) -> str:
    """The anchor of a model's part of a check page (``findings/randomisation.md#efficientnet_lite0``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(sm["model"].name))


def write_pages(ctx, s, names, titles, summaries, rows, settings_used, items, n_sanity, low_rank,
                source: str = "shared", n_of: dict | None = None, expensive=()) -> None:
    """The Findings index (the answer, the verdicts at a glance, the models, the check pages, the
    literature), one page per check (:data:`CHECK_PAGES`), each method page's findings section, and
    the artifacts the home page reads (``findings_summaries``; ``findings_headlines``: first the
    answer, linking to the index, then each model's numbers, linking to their check pages)."""
    ctx.declare(PAGE, "Findings", order=0)
    correct(summaries)  # every verdict Holm-corrected over every model's (the summaries' lists follow)
    missing = [{"name": n, "title": get_spec(n).title, "reason": r} for n, r in ctx.missing.items()]
    not_selected = [m.spec.title for m in ctx.models if m.name not in {sm["model"].name for sm in summaries}]
    ans = answer(summaries)

    def links(page: str) -> dict:
        """The link functions of a page: ``link`` (any target under the generated folder),
        ``method_link``, ``check_link`` (a check's page), ``index_link`` (the Findings index)."""
        link = lambda target: ctx.link(page, target)  # noqa: E731
        return dict(link=link, method_link=lambda n: link(f"methods/{n}"),
                    check_link=lambda check: link(PAGE_OF[check]), index_link=link(PAGE))

    common = dict(s=s, names=names, titles=titles, summaries=summaries, rows=rows, missing=missing, items=items,
                  n_sanity=n_sanity, low_rank=low_rank, command=COMMAND,
                  settings_used=settings_used, cross=cross_model(summaries), not_selected=not_selected,
                  and_list=and_list, fixed=fixed, anchor=anchor, answer=ans, check_pages=CHECK_PAGES,
                  agreement=ctx.artifact("model_agreement"), ci=bootstrap.fmt, decided=bootstrap.decided,
                  source=source, n_of=n_of or {}, expensive=list(expensive),
                  n_sanity_of=n_sanity, n_max=max((n_of or {"": 0}).values(), default=0),
                  transfer=transfer_evidence(ctx),
                  # the selectivity page's sentences, from each model's units (the preview profile's note: fewer units)
                  units_said=lambda sm: summarise_units(sm["units"], s, ctx.config.profile, int(
                      profiles.settings("full", "findings").get("ablation_units_per_layer", 0))))
    ctx.provide("findings_summaries", summaries)
    first = answer_headline(summaries, PAGE)
    pages = {c: PAGE_OF[c] for c in ("sanity", "class", "faithfulness")}
    ctx.provide("findings_headlines", [Headline(*h) for h in ([first] if first else []) + headlines(summaries, pages)])
    unscaled = ("accuracy_max_images", "ablation_units_per_layer", "cascade_seeds")  # not photo counts of n_scale
    used = {k: (s[k] if k in unscaled or not int(s[k]) else scaled(s, k))  # 0 = none: not scaled up to 1
            for k in profiles.settings(ctx.config.profile, "findings")}
    profile = ctx.config.profile_line("findings", used)
    on_index = {**common, **links(PAGE)}
    for title, template, order in INDEX_SECTIONS:
        if template == "across" and not summaries:
            continue
        body = ctx.render(f"findings/{template}.md.j2", **on_index, notes=INDEX_NOTES)
        if template == "method_notes":  # reference for every check: folded, so that the index stays short
            body = f'??? info "{NOTES_FOLDED}"\n\n' + textwrap.indent(body, "    ")
        ctx.section(PAGE, title, body, order=order)
    ctx.section(PAGE, "Data sets: credit and terms", datasets.credits_markdown() + "\n", order=95)
    for cp in CHECK_PAGES:
        ctx.declare(cp.page, cp.title, order=cp.order)
        here = {**common, **links(cp.page)}
        ctx.section(cp.page, "", ctx.render("findings/check_page.md.j2", **here, check=cp), order=0)
        if cp.notes:
            ctx.section(cp.page, "How these numbers were made",
                        ctx.render("findings/method_notes.md.j2", **here, notes=cp.notes), order=90)
    if profile:  # not on the transfer page: its table is measured once per generator file, not by this build
        for page in (PAGE, *(cp.page for cp in CHECK_PAGES if cp.notes)):
            ctx.section(page, "", profile + "\n", order=-5)
    for n in names:
        page = f"methods/{n}"
        per = [(sm, next(r for r in sm["rows"] if r["name"] == n)) for sm in summaries]
        ctx.section(page, "Sanity checks and faithfulness (measured)", ctx.render(
            "findings/method_section.md.j2", **common, **links(page), name=n, per=per)
            + (f"\n{profile}\n" if profile else ""), order=ORDER)
