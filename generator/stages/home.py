"""Home stage: the home page's comparison figure and headline numbers, and the Methods index.

It runs after every stage that feeds it and reads them only through declared artifacts:
``attribution_maps`` (the figure: a few photos × models × the classic attribution methods),
``findings_headlines`` and ``compare_headlines`` (lists of :class:`~generator.site.Headline`).
Whatever was not built is left out. The Methods index lists every method page the stages declared.
"""
from __future__ import annotations

from ..figure_files import save_image
from ..render import heatmap_image, labelled_grid, to_pil
from ..util import md_escape

ORDER = -1  # above the home page's status (overview)
PROVIDES: tuple[str, ...] = ()
NEEDS: tuple[str, ...] = ()
USES = ("attribution_maps", "findings_headlines", "compare_headlines")

CLASSIC = ("saliency", "deconvnet", "guided_backprop", "gradcam")  # the home figure's columns, when computed
HOME_PHOTOS = 3   # photos in the home figure with one model; two when several models share it
HOME_MODELS = 3


ANSWER_PAGE = "findings/index"  # the findings' headline that links here is their one-sentence answer


def answer(ctx):
    """The findings' answer to "is visualisation enough?" (:func:`generator.metrics.verdicts.answer_headline`):
    their headline that links to the Findings index; None when none does."""
    return next((h for h in ctx.artifact("findings_headlines") or [] if h.page == ANSWER_PAGE), None)


def headlines(ctx) -> list:
    """The home page's headline numbers, in order: the findings' first, then the comparison's (the
    findings' answer aside: it is the sentence above them)."""
    first = answer(ctx)
    return [*(h for h in ctx.artifact("findings_headlines") or [] if h is not first),
            *(ctx.artifact("compare_headlines") or [])]


def home_figure(ctx) -> dict | None:
    """A few photos × models × the classic attribution methods, from the attribution stage's maps."""
    data = ctx.artifact("attribution_maps")
    if not data or not data["models"] or not data["items"]:
        return None
    methods = [m for m in CLASSIC if m in data["methods"]] or list(data["methods"])[:4]
    shown = list(data["models"].values())[:HOME_MODELS]
    items = data["items"][: HOME_PHOTOS if len(shown) == 1 else 2]
    rows, labels = [], []
    for d in shown:
        model = d["model"]
        photos = ctx.batch(model, items).cpu()
        for i, it in enumerate(items):
            rows.append([to_pil(photos[i])] + [heatmap_image(d["heatmaps"][m][i].float()) for m in methods])
            labels.append(f"{it.title} · {model.spec.title}")
    rel = "home/comparison.webp"
    save_image(labelled_grid(rows, ["photo", *[data["short"][m] for m in methods]], labels, 128), ctx.figure_path(
        rel, caption=f"Overview: {', '.join(data['titles'][m] for m in methods)} maps of "
                     f"{', '.join(it.title for it in items)} on {', '.join(d['model'].spec.title for d in shown)}"))
    return {"src": rel, "methods": [data["titles"][m] for m in methods], "photos": [it.title for it in items],
            "models": [d["model"].spec.title for d in shown],
            "method_pages": [(data["titles"][m], f"methods/{m}") for m in methods]}


def run(ctx) -> None:
    methods = sorted(((p.order, p.title, key) for key, p in ctx.site.pages.items()
                      if key.startswith("methods/") and key != "methods/index"), key=lambda t: (t[0], t[1]))
    methods += sorted((order, title, rel[:-3]) for rel, (title, _md, _nav, order) in ctx.site.standalone.items()
                      if rel.startswith("methods/") and rel != "methods/index.md")
    if "methods/index" in ctx.site.pages and methods:
        ctx.section("methods/index", "", "\n".join(
            f"- [{md_escape(title)}]({ctx.link('methods/index', key)})" for _o, title, key in methods) + "\n", order=5)
    if "home" not in ctx.site.pages:
        return
    a = answer(ctx)
    if a is not None:  # the headline: the findings' answer in one sentence, above the figure and the numbers
        ctx.section("home", "", f"**{md_escape(a.value)}** {md_escape(a.label.rstrip('.'))} "
                                f"([the findings]({ctx.link('home', a.page)})).\n", order=ORDER - 1)
    ctx.section("home", "", ctx.render("overview/home_top.md.j2", figure=home_figure(ctx), headlines=headlines(ctx),
                                       link=lambda t: ctx.link("home", t)), order=ORDER)
