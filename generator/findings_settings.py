"""The findings stage's settings: ``[findings]`` keys and defaults (:data:`DEFAULTS`; the photo counts
come from the build's profile, :mod:`generator.profiles`), their checks (:func:`settings`), and the
numbers derived from them that the stage and its work count (:mod:`generator.workload`) share: the
independent randomisation's photos and the fragility attack of each method.

Settings reach the cache keys as values, never through this module's code.
"""
from __future__ import annotations

from . import profiles
from .config import ConfigError
from .methods.attribution import ATTRIBUTION_METHODS
from .metrics import class_check, fragility
from .probes import scaled

CACHE_NEUTRAL = True

DEFAULTS: dict = {
    # labelled probe photos for the per-photo checks: Imagenette val (balanced over its classes) and
    # the 1,000-class sample (classes.tsv), read at build time; the curated photos when neither exists
    "probe_folder": "data:imagenette/val",          # python -m generator data fetches both (generator/datasets.py)
    "probe_sample": "data:imagenet-1k-sample",
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
    # the attack of Ghorbani et al.: each differentiable method's own map attacked through the softplus copy
    # (a double backward per image and step); the photos per method (from the profile: preview few, full all;
    # 0 = the proxy attack instead), cheap and expensive methods; the copy's softplus β
    "fragility_own_images": 100,
    "fragility_own_expensive_images": 30,
    "fragility_softplus_beta": 20.0,
    "selectivity_images": 100,      # labelled Imagenette photos for selectivity and ablation
    # units per layer ablated, drawn at random with the seed (0 = every channel); from the profile
    # (generator/profiles.py: full 32, preview fewer); not multiplied by n_scale
    "ablation_units_per_layer": 32,
    "selectivity_min_rho": 0.0,     # a relation: the rank correlation's interval beyond ±this (and Holm over the layers)
    "image_ids": [],
    "cascade_steps": 4,
    "cascade_seeds": 1,             # seeds of the cascade's random weights (the verdict: the first); from the profile
    "independent_images": 4,        # photos in the independent-layer randomisation (one group at a time), cheap
    "independent_expensive_images": 0,  # ... expensive methods (0 = not measured); both from the profile
    "seed": 0,
    "class_check": "random",        # second class per photo: "random" (Sixt et al. 2020) | "low_rank" (the class ranked low_rank)
    "low_rank": 500,
    "no_map_epsilon": 1e-3,         # "no map for that class": spread of |map| below this × the pair's largest |value|
    "faithfulness_steps": 8,
    "faithfulness_check_images": 10,  # photos on which the AUCs are measured again at 2 × faithfulness_steps (0 = none)
    "faithfulness_step_tolerance": 0.02,  # "the step count is enough": mean |AUC change| interval below this
    "blur_sigma": 5.0,
    "sanity_threshold": 0.5,
    "class_threshold": 0.8,
    "top_layer_threshold": 0.9,
    "fragility_min_drop": 0.1,      # "fragile": overlap lost to the attack beyond noise, interval >= this
    "faithfulness_min_gain": 0.02,  # "better than random / centre prior": (ins. − del.) gain interval >= this
    "min_n": 20,                    # no verdict from fewer photos (the page shows the numbers, the full build decides)
    "alpha": 0.05,                  # Holm-corrected over every verdict that feeds the summary
    "accuracy_folder": "data:imagenette/val",
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
def settings(config) -> dict:
    s = config.table("findings", DEFAULTS, choices={"methods": ATTRIBUTION_METHODS, "figure_format": ("svg", "png"),
                                                    "class_check": class_check.SECOND_CLASS})
    for k in s["method_params"]:
        if k not in ATTRIBUTION_METHODS:
            raise ConfigError(f"[findings.method_params]: unknown method {k!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    sized = profiles.method_params(config.profile, "findings")  # the profile's, under the config's own
    s["method_params"] = {n: {**cls.findings_params, **sized.get(n, {}), **dict(s["method_params"].get(n, {}))}
                          for n, cls in ATTRIBUTION_METHODS.items()}
    for k in s["expensive_methods"]:
        if k not in ATTRIBUTION_METHODS:
            raise ConfigError(f"[findings] expensive_methods: unknown method {k!r}")
    if float(s["n_scale"]) <= 0:
        raise ConfigError(f"[findings] n_scale = {s['n_scale']}: must be > 0")
    if not 2 < s["low_rank"] <= 1000:
        raise ConfigError(f"[findings] low_rank = {s['low_rank']}: must be in 3..1000")
    if int(s["cascade_seeds"]) < 1:
        raise ConfigError(f"[findings] cascade_seeds = {s['cascade_seeds']}: must be ≥ 1")
    for k in ("independent_images", "independent_expensive_images"):
        if int(s[k]) < 0:
            raise ConfigError(f"[findings] {k} = {s[k]}: must be ≥ 0 (0 = not measured)")
    return s


def independent_n(s: dict, n_sanity: int, expensive: bool) -> int:
    """Photos in the independent-layer randomisation of a group of methods (the first of its ``n_sanity``
    cascade photos): ``independent_images``, or ``independent_expensive_images`` for the expensive ones; 0 = none."""
    k = "independent_expensive_images" if expensive else "independent_images"
    return min(n_sanity, scaled(s, k)) if int(s[k]) > 0 else 0


def fragility_plan(s: dict, n_of: dict, n_items: int) -> dict[str, tuple[bool, int]]:
    """Per method: (attacked through its own map, photos), from the settings
    (:func:`~generator.metrics.fragility.attack_plan`)."""
    cap = lambda k: scaled(s, k) if int(s[k]) > 0 else 0  # noqa: E731 - 0: no own-map attack
    return fragility.attack_plan(n_of, s["expensive_methods"], min(n_items, scaled(s, "fragility_images")),
                                 cap("fragility_own_images"), cap("fragility_own_expensive_images"))
