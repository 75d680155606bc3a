"""The wording of single checks beside their verdicts: input invariance, fragility, the deletion/insertion step count.

* Input invariance (Kindermans et al. 2017): why a method is not invariant *by construction*
  (:func:`by_construction`), the remedy's row (:func:`remedy_said`) and the adaptive step count of
  Integrated Gradients (:func:`completeness_said`).
* Fragility (Ghorbani et al. 2019): an attack over its photos (:class:`AttackSummary`), the other two
  measures per method (:func:`fragility_moves`) and one model's sentences (:func:`fragility_overview`).
* Deletion/insertion: whether the step count is enough (:class:`StepVerdict`, :func:`step_verdict`).

The verdicts themselves, the rules and the helpers used here are :mod:`.verdicts`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..methods.attribution import ATTRIBUTION_METHODS
from ..util import md_escape
from . import bootstrap
from .bootstrap import Interval
from .fragility import differentiable
from .invariance import Invariance
from .verdicts import _ci, _Fields, _side, and_list, fixed


# ------------------------------------------------------------------ input invariance

BY_CONSTRUCTION = "not invariant by construction (not evidence)"


def by_construction(name: str, s: Mapping) -> str:
    """Why method ``name`` with the findings' settings ``s`` cannot be input-invariant *by definition*
    (Kindermans et al. 2017: a reference point that does not move with the input), or "": such a result is
    shown as true by construction and is not counted as evidence (nor tested, nor in the Holm family)."""
    params = {**_method_defaults(name), **dict((s.get("method_params") or {}).get(name, {}))}
    b = params.get("baseline", "black")
    if name == "integrated_gradients" and (isinstance(b, (int, float, list, tuple)) or str(b) in FIXED_BASELINES):
        which = FIXED_BASELINES.get(str(b)) or f"constant ({', '.join(map(str, b)) if isinstance(b, (list, tuple)) else b})"
        return (f"its {which} baseline stays where it is when the input shifts; a baseline shifted along with the input "
                "is the remedy (measured beside it)")
    if name == "occlusion":
        return f"its fixed grey fill ({params.get('fill', 0.5)}) stays where it is when the input shifts"
    return ""


#: Integrated Gradients' baselines by name that do not move with the input → how the reason names them
FIXED_BASELINES = {"black": "black", "zeros": "black", "zero": "black", "grey": "grey", "gray": "grey", "white": "white"}


def completeness_said(inv: Invariance, title: str, tolerance: float, cap, start: int | None = None,
                      cap_name: str = "max_steps") -> str:
    """The sentence on a method's adaptive step count in the invariance check (Integrated Gradients on the
    shift-absorbing copy: ``inv.steps`` / ``inv.error`` per photo), or "" for a method without one: the points
    used and how many photos reached a completeness error below ``tolerance`` (``max_delta``); a photo that did
    not was stopped by the cap (the setting ``cap_name``: the refinement runs until the error is below it or the
    cap)."""
    steps = np.asarray(inv.steps if inv.steps is not None else [], dtype=np.float64)
    err = np.asarray(inv.error if inv.error is not None else [], dtype=np.float64)
    if not steps.size or not np.isfinite(steps).all():
        return ""
    n, below = int(steps.size), int((err < tolerance).sum())
    lo, hi = int(steps.min()), int(steps.max())
    used = f"{lo} points" if lo == hi else f"{lo}–{hi} points (median {float(np.median(steps)):g})"
    title = md_escape(title)
    limit = f"{100 * tolerance:g} % (`max_delta`)"
    if below == n:
        return f"{title} used {used}; its completeness error is below {limit} on all {n} photos."
    stop = (f"not refined: one doubling of its intervals needs {2 * start - 1} points, `{cap_name} = {cap}`"
            if start is not None and int(cap or 0) < 2 * start - 1 else f"stopped by `{cap_name} = {cap}`")
    return (f"{title} used {used}; its completeness error is below {limit} on {below} of {n} photos — **{n - below} "
            f"stayed at or above it**, {stop} (worst {100 * float(err.max()):.1f} %).")


def adaptive_caps(name: str, params: Mapping) -> tuple[int | None, int | None]:
    """(the most points a map of another class may use, the most a map of the predicted class may use) under method
    ``name``'s settings ``params``, for a method that adapts its step count (Integrated Gradients:
    :meth:`~generator.methods.attribution.IntegratedGradients.cap`); (None, None) for the others."""
    cap = getattr(ATTRIBUTION_METHODS.get(name), "cap", None)
    return (cap(params), cap(params, predicted=True)) if callable(cap) else (None, None)


def other_maps_said(cap: int | None, higher: int | None) -> str:
    """The sentence on the maps whose completeness the invariance check does not report, where Integrated
    Gradients gives a map of the predicted class a higher cap (``higher``: ``max_steps_predicted``) than its other
    maps (``cap``: ``max_steps``; :func:`adaptive_caps`), else ""."""
    if cap is None or higher is None or higher <= cap:
        return ""
    return (f"These maps are of each photo's top-1 class, refined up to `max_steps_predicted = {higher}` points. "
            "Integrated Gradients' maps of another class (the class check) and of randomised networks (the "
            f"randomisation check) go up to `max_steps = {cap}` only, and their completeness is not reported: their "
            "logit moves little from the baseline to the photo, so their relative error mostly stays at or above "
            "`max_delta` up to the cap (measured: [Performance and measurements](../../performance.md)).")


def remedy_said(inv: Invariance, title: str, T: float, seed: int = 0) -> dict | None:
    """The remedy's row (Kindermans et al. 2017), or None where the method has none: ``invariance`` and
    ``change`` (intervals of the Spearman correlation and relative change of the maps of the shift-absorbing
    copy with the reference point moved along, vs the trained maps), ``baseline`` (the moved baseline),
    ``side`` (:func:`.verdicts._side` against the invariance threshold ``T``) and ``said``: whether the maps match,
    from the interval. Like the black-baseline row it is true by construction (the same path through the
    same function), so it is shown, never counted as evidence."""
    rem = inv.remedy
    if rem is None:
        return None
    iv, ch = _ci(rem.spearman, seed), _ci(rem.relative_change, seed)
    b = (inv.remedy_params or {}).get("baseline")
    base = ", ".join(f"{float(v):g}" for v in b) if isinstance(b, (list, tuple)) else str(b)
    side = _side(iv, T)
    head = f"With the baseline shifted along with the input ({base} per colour channel), the maps of {md_escape(title)}"
    nums = f"Spearman {bootstrap.fmt(iv)}, relative change {bootstrap.fmt(ch)} (n = {iv.n})"
    said = {"above": f"{head} match: {nums}, the whole interval ≥ {T} — Kindermans et al.'s remedy works here.",
            "below": f"{head} do **not** match: {nums}, the whole interval below {T}.",
            "across": f"{head} are not shown to match: {nums}, the interval includes {T}.",
            "none": f"{head}: {nums}; too few photos for an interval."}[side]
    return {"invariance": iv, "change": ch, "baseline": base, "side": side, "said": said}


def _method_defaults(name: str) -> dict:
    cls = ATTRIBUTION_METHODS.get(name)
    return {**getattr(cls, "defaults", {}), **getattr(cls, "findings_params", {})} if cls else {}


# ------------------------------------------------------------------ fragility

@dataclass
class AttackSummary(_Fields):
    """A fragility attack over its photos (the shared proxy attack: ``sm.fragility``; a method's own-map
    attack: its row's ``fragility_own_attack``): share with the class kept, share perturbed, |p′ − p| with
    its interval, the attack's size (0–255) and top-k fraction; for the own-map attack (``own``) the share
    of photos on which the softplus copy (β ``beta``) gives the network's class (``agree``) and the
    interval of |p_copy − p| there (``p_copy``)."""

    kept: float
    n: int
    attacked: float
    dp: Interval
    eps255: float
    frac: float
    own: bool = False
    agree: float = float("nan")
    p_copy: Interval | None = None
    beta: float = float("nan")


def attack_summary(st, eps255: float, frac: float, seed: int = 0, beta: float = float("nan"),
                   own: bool = False) -> AttackSummary:
    """The :class:`AttackSummary` of an attack's per-photo arrays ``st`` (``kept``, ``attacked``, ``p0``,
    ``p1``; with ``own`` also ``agree``, ``p_copy``: :class:`.fragility.AttackStats`)."""
    mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
    agree = np.asarray(getattr(st, "agree", []))
    p_copy = np.asarray(getattr(st, "p_copy", []), dtype=np.float64)
    return AttackSummary(mean(st.kept), int(len(st.kept)), mean(st.attacked),
                         _ci(np.abs(np.asarray(st.p1) - np.asarray(st.p0)), seed), eps255, frac, own,
                         mean(agree) if own else float("nan"),
                         _ci(np.abs(p_copy - np.asarray(st.p0)[: len(p_copy)]), seed) if own else None, float(beta))


def fragility_moves(fr, seed: int = 0) -> dict:
    """Ghorbani et al.'s other two measures for one method's :class:`.fragility.Overlaps` (numbers, no
    verdict): the Spearman rank correlation of the map after the attack and after the noise with the map of
    the photo, and the paired loss to the attack beyond noise (noise − attack, per photo); the
    centre-of-mass shift (pixels) after each, and the paired extra shift (attack − noise); ``{}`` when not
    measured."""
    if not len(fr.rho_attack):
        return {}
    return {"fragility_rho_attack": _ci(fr.rho_attack, seed), "fragility_rho_noise": _ci(fr.rho_noise, seed),
            "fragility_rho_drop": _ci(fr.rho_noise - fr.rho_attack, seed),
            "fragility_com_attack": _ci(fr.com_attack, seed), "fragility_com_noise": _ci(fr.com_noise, seed),
            "fragility_com_gain": _ci(fr.com_attack - fr.com_noise, seed)}


def fragility_overview(rows: Sequence[Mapping], min_n: int = 1, beta: float = float("nan")) -> str:
    """One model's sentences on the fragility check, from the rows (Markdown, titles escaped): which methods
    were attacked through their own map on the softplus copy (β ``beta``), which by the shared proxy and why
    (a rule that is not the network's derivative; or an own-map attack this build left out); and for which
    the attack also lowered the rank correlation with the original map, or moved its centre of mass, beyond
    the random control (the paired 95 % interval above 0, from at least ``min_n`` photos; no verdict)."""
    measured = [r for r in rows if r.get("fragility_attack") is not None]
    if not measured:
        return ""
    titles = lambda rs: and_list([md_escape(r["title"]) for r in rs])  # noqa: E731
    own = [r for r in measured if r.get("fragility_own")]
    rule = [r for r in measured if not r.get("fragility_own") and not differentiable(r["name"])]
    left = [r for r in measured if not r.get("fragility_own") and differentiable(r["name"])]
    out = []
    if own:
        out.append(f"Attacked through {'its' if len(own) == 1 else 'their'} own map on the softplus copy of the "
                   f"network (β = {beta:g}), as Ghorbani et al. attack it: {titles(own)}.")
    if rule:
        out.append(f"Attacked by the shared proxy (a deviation from Ghorbani et al.): the map of {titles(rule)} is not "
                   f"the network's derivative, so it cannot be attacked through itself.")
    if left:
        out.append(f"Attacked by the shared proxy in this build although the map is differentiable: {titles(left)} "
                   f"(the own-map attack is left out here by `fragility_own_images` / "
                   f"`fragility_own_expensive_images`; the full profile runs it).")
    iv = lambda r, k: r.get(k)  # noqa: E731
    enough = [r for r in measured if iv(r, "fragility_rho_drop") is not None and iv(r, "fragility_rho_drop").n >= min_n]
    if enough:
        rho = [r for r in enough if r["fragility_rho_drop"].lo > 0]
        com = [r for r in enough if r["fragility_com_gain"].n >= min_n and r["fragility_com_gain"].lo > 0]
        out.append(f"Beyond the random control (paired 95 % interval above 0; no verdict, not Holm-corrected), the "
                   f"attack also lowered the map's rank correlation with the map of the photo for: {titles(rho)}; and "
                   f"moved its centre of mass farther for: {titles(com)}.")
    few = [r for r in measured if r not in enough and iv(r, "fragility_rho_drop") is not None]
    if few:
        out.append(f"Fewer than {min_n} photos (`min_n`) for {titles(few)}: their rank correlation and centre-of-mass "
                   f"numbers are not findings.")
    return " ".join(out)


# ------------------------------------------------------------------ deletion/insertion: is the step count enough?

#: ``faithfulness_step_tolerance`` where the settings lack it: the mean absolute AUC change (doubled steps) allowed
STEP_TOLERANCE = 0.02


@dataclass
class StepVerdict(_Fields):
    """How much the deletion/insertion AUCs move when the steps are doubled (:class:`.faithfulness.StepCheck`):
    the per-photo mean absolute change (deletion and insertion averaged; each also alone) with its interval
    and n, and the sentence that says what it means against ``tolerance``. ``enough``: True when the
    interval lies below the tolerance, False when at or above it, None when it cannot tell."""

    steps: int
    fine_steps: int
    tolerance: float
    orders: int
    change: Interval
    deletion: Interval
    insertion: Interval
    enough: bool | None
    text: str


def step_verdict(check, tolerance: float = STEP_TOLERANCE, seed: int = 0) -> StepVerdict | None:
    """The sentence on the step count of the deletion/insertion check: "enough" only when the whole 95 %
    interval of the mean absolute AUC change lies below ``tolerance``; "depend on the step count" when it
    lies at or above it; otherwise (or without an interval: one photo) not shown either way, and the AUCs
    are to be compared only within this site. ``None`` when not measured."""
    if check is None or not len(check.photos):
        return None
    tol = float(tolerance)
    iv = _ci(check.change, seed)
    said = (f"doubling the steps from {check.steps} to {check.fine_steps} moves the deletion and insertion areas by "
            f"{bootstrap.fmt(iv, 3)} on average (mean absolute change per photo over {len(check.orders)} pixel orders, "
            f"n = {iv.n} photo{'s' if iv.n != 1 else ''})")
    limit = f"{fixed(tol, 3)} (`faithfulness_step_tolerance`)"
    if iv.n >= 2 and np.isfinite(iv.hi) and iv.hi < tol:
        enough, text = True, f"{said}: below {limit}, so the step count is enough"
    elif iv.n >= 2 and np.isfinite(iv.lo) and iv.lo >= tol:
        enough, text = False, (f"{said}: at least {limit}, so the areas depend on the step count; compare them only "
                               "within this site, not with published ones")
    else:
        why = "one photo gives no interval" if iv.n < 2 else f"the interval includes {limit}"
        enough, text = None, (f"{said}: {why}, so it is not shown to stay below it; treat the areas as depending on "
                              "the step count and compare them only within this site")
    return StepVerdict(check.steps, check.fine_steps, tol, len(check.orders), iv, _ci(check.deletion, seed),
                       _ci(check.insertion, seed), enough, text)
