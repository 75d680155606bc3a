"""Build profiles: how much work the build does, sized to the machine it runs on.

``[build] profile`` (``--profile``, ``make site PROFILE=…``) is one of

* ``full`` — every check at its full n (≥ 100 photos for the cheap methods, ≥ 30 for the
  expensive ones, the randomisation cascade included), the atlas over every photo of its
  folder, PPGN at its full length. The job is meant for a GPU.
* ``preview`` — every stage, every method and every configured model, with smaller n and
  shorter chains so that a cold build of the three EfficientNet-Lite models fits a CPU
  (the numbers: the site's Performance page). Where a check's n is below the minimum a
  verdict needs, its page shows the numbers without a verdict and says that the ``full``
  build decides it.
* ``auto`` (default) — ``full`` when the build runs on a CUDA GPU, ``preview`` otherwise.

A profile only gives the settings below; whatever the config file (or the command line) sets
explicitly wins over it. Every page that shows a number from a profile-sized setting says
which profile built it (:func:`describe`).
"""
from __future__ import annotations

from typing import Any, Mapping

CACHE_NEUTRAL = True  # settings reach the cache keys as values, never through this module's code

PROFILES = ("auto", "preview", "full")

#: stage table → key → value, per profile (under the config file's explicit values)
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "findings": {
            "images": 100, "faithfulness_images": 100, "invariance_images": 100, "fragility_images": 100,
            "sanity_images": 100, "expensive_images": 30, "sanity_expensive_images": 30,
            "selectivity_images": 100, "accuracy_max_images": 0, "ablation_units_per_layer": 32,
            "faithfulness_check_images": 30,
            "cascade_seeds": 2, "independent_images": 100, "independent_expensive_images": 30,
            "fragility_own_images": 100, "fragility_own_expensive_images": 30,
        },
        "dgn_am": {"steps": 100, "ppgn_steps": 600},
        "atlas": {"max_images": 0, "max_channels_per_layer": 16},
    },
    "preview": {
        "findings": {
            "images": 30, "faithfulness_images": 30, "invariance_images": 30, "fragility_images": 30,
            "sanity_images": 30, "expensive_images": 2, "sanity_expensive_images": 1,
            "selectivity_images": 40, "accuracy_max_images": 150, "ablation_units_per_layer": 4,
            "faithfulness_check_images": 3,
            "cascade_seeds": 1, "independent_images": 4, "independent_expensive_images": 0,
            "fragility_own_images": 2, "fragility_own_expensive_images": 0,
        },
        "dgn_am": {"steps": 30, "ppgn_steps": 80},
        "atlas": {"max_images": 500, "max_channels_per_layer": 8},
    },
}

#: stage table → method → settings, per profile: over the method class's own settings for that stage
#: (``gallery_params`` / ``findings_params``), under the config's ``[<table>.method_params]``. The preview
#: profile does not refine Integrated Gradients' steps (``max_steps = max_steps_predicted = 0``: every photo at
#: its starting ``steps``; the pages say how many photos stay at or above ``max_delta``); the full build refines them.
METHOD_PARAMS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "full": {},
    "preview": {
        "attribution": {"integrated_gradients": {"max_steps": 0, "max_steps_predicted": 0}},
        "findings": {"integrated_gradients": {"max_steps": 0, "max_steps_predicted": 0}},
    },
}

#: what each profile-sized key means, for the line on the pages
MEANING = {
    "images": "photos per check, cheap methods", "faithfulness_images": "photos in deletion/insertion",
    "invariance_images": "photos in input invariance", "fragility_images": "photos in fragility",
    "sanity_images": "photos in the randomisation cascade, cheap methods",
    "expensive_images": "photos per check, expensive methods",
    "sanity_expensive_images": "photos in the randomisation cascade, expensive methods",
    "selectivity_images": "photos for unit selectivity", "accuracy_max_images": "photos for measured accuracy (0 = all)",
    "ablation_units_per_layer": "units ablated per layer (drawn at random)",
    "faithfulness_check_images": "photos in the deletion/insertion step check",
    "cascade_seeds": "seeds of the random weights in the randomisation cascade",
    "independent_images": "photos in the independent-layer randomisation, cheap methods",
    "independent_expensive_images": "photos in the independent-layer randomisation, expensive methods (0 = none)",
    "fragility_own_images": "photos per method in the fragility attack on each method's own map, cheap methods",
    "fragility_own_expensive_images": "photos per method in the fragility attack on each method's own map, expensive "
                                      "methods (0 = the shared proxy attack instead)",
    "steps": "DGN-AM steps", "ppgn_steps": "PPGN chain steps", "max_images": "photos streamed (0 = all)",
    "max_channels_per_layer": "units with a page per layer",
}


def resolve(name: str, device: str = "auto", cuda_available: bool | None = None) -> str:
    """``preview`` or ``full`` for a profile name and a ``[build] device`` setting."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}")
    if name != "auto":
        return name
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    on_gpu = device.startswith("cuda") or (device == "auto" and cuda_available)
    return "full" if on_gpu else "preview"


def settings(profile: str, table: str) -> dict[str, Any]:
    """The settings ``profile`` (``preview`` / ``full``) gives stage table ``table``."""
    return dict(SETTINGS.get(profile, {}).get(table, {}))


def method_params(profile: str, table: str) -> dict[str, dict[str, Any]]:
    """The method settings ``profile`` gives stage table ``table``: method → settings (:data:`METHOD_PARAMS`)."""
    return {m: dict(p) for m, p in METHOD_PARAMS.get(profile, {}).get(table, {}).items()}


#: stage table → the sizes the line on a page shows in its first sentence; the rest are in a folded block under it
LEAD = {"findings": ("images", "expensive_images"), "dgn_am": ("steps", "ppgn_steps"), "atlas": ("max_images",)}


def describe(profile: str, table: str, used: Mapping[str, Any], explicit: set[str] | frozenset[str] = frozenset()) -> str:
    """Markdown: which profile built these numbers and the sizes it set (keys set explicitly in the config are
    named as such), and the method settings it sets (:data:`METHOD_PARAMS`). One sentence with the :data:`LEAD`
    sizes and how to build the other profile; the other sizes in a folded block under it, so that a page leads with
    its own content."""
    keys = [k for k in SETTINGS.get(profile, {}).get(table, {}) if k in used]
    if not keys:
        return ""
    said = lambda k: f"{MEANING.get(k, k)} {used[k]}" + (" (set in the config)" if k in explicit else "")  # noqa: E731
    lead = [k for k in keys if k in LEAD.get(table, ())] or keys[:1]
    rest = [said(k) for k in keys if k not in lead]
    rest += [f"`[{table}.method_params.{m}] {k} = {v}`" + (" (unless the config sets it)" if "method_params" in explicit
                                                            else "")
             for m, p in method_params(profile, table).items() for k, v in p.items()]
    other = "full" if profile == "preview" else "preview"
    how = ("`make site PROFILE=full` (or `--profile full`) builds the full one, meant for a GPU"
           if profile == "preview" else f"`--profile {other}` builds a quick one")
    line = f"Built with the **{profile}** profile: {'; '.join(said(k) for k in lead)}"
    if not rest:
        return f"{line}. {how}."
    return (f"{line} (the other sizes below). {how}.\n\n"
            f'??? note "Every size the {profile} profile set for these numbers"\n\n    {"; ".join(rest)}.\n')
