"""Model-randomisation sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

A method that explains *the model* must give a different map when the model's
learned weights are destroyed. The cascading test re-initialises the network's
layers one group at a time, **from the top (logits) down**, keeping the layers
below trained, and compares every map with the trained model's map.

What "re-initialise" means here: each parameter-owning module in the group gets
the parameters *and buffers* (BatchNorm running statistics included) that a freshly
built, untrained network of the same architecture has — the architecture library's
own initialiser, seeded (``seed``), so every run gives the same random weights.
These random weights are a sanity-check device only; nothing else in the project
uses them.

The randomisation always works on a ``copy.deepcopy`` of the network: the trained
model object passed in is never modified. Within one cascade the copy is
randomised cumulatively (step k = the top k groups random), which is what the
paper's cascade is.

Groups come from the model's catalogued layers (``ModelSpec.layers``): a forward
pass records the order in which modules finish; every parameter-owning module is
assigned to the first catalogued layer that finishes at or after it. So for
EfficientNet-Lite0 the groups, top-down, are ``logits``, ``head``, ``stage6`` …
``stage0``, ``stem``.

Maps compared: every method's nonnegative heatmap (``explain``, the map the site shows) — Spearman of
|map|, SSIM and HOG (:func:`.similarity.compare`). For a method whose attributions are pixel-space
(``output == "pixels"``) and take both signs on a photo, the **signed** map is compared too (Adebayo
et al. report the rank correlation with and without the absolute value): the channel sum of the raw
attribution (the 2-D "diverging" map of their code), compared by :func:`compare_signed` — Spearman
without the absolute value, SSIM of the maps scaled by their largest |value| with 0 kept at the middle
(:func:`signed_scale`), HOG of the signed maps. These are stored as ``spearman_signed``, ``ssim_signed``,
``hog_signed`` beside the |map| metrics; unsigned methods (and photos whose trained attribution has no
negative value) carry ``None`` there. The trained model's signed maps come from the findings' maps step
(:func:`.class_check.maps_task` keeps them beside the heatmaps: one attribution gives both), so the check
adds no pass on the trained model.

Beside the cascade, on the same measured steps and with the same similarities:

* **independent** randomisation (:func:`independent`, Adebayo et al.'s Fig. 5): step k re-initialises
  group k *alone*, every other group trained, and restores it afterwards;
* more **seeds** of the random weights (:func:`donor_seeds`): the cascade again with another donor, to
  see whether the numbers depend on the draw;
* the **edge-detector reference** (:func:`sobel_edges`, :func:`edge_similarity`): the similarity of each
  trained map to the Sobel gradient magnitude of its grayscale photo — what "looks like the image" means
  (Adebayo et al.'s Fig. 1) — computed without any network.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checks import Ticks, explainer_with_signed, signed_map  # noqa: F401 (signed_map: defined in .checks)
from .similarity import METRICS, compare, hog_similarity, prepare, spearman, ssim

#: the similarities of the signed maps (methods with signed attributions only): |map| metric → its signed twin
SIGNED = {m: f"{m}_signed" for m in METRICS}
SIGNED_METRICS = tuple(SIGNED.values())


@dataclass(frozen=True)
class Group:
    """One cascade step's worth of layers: named after its catalogued layer."""

    name: str
    modules: tuple[str, ...]  # paths (inside the net) of the modules whose tensors are replaced
    numel: int  # number of parameter elements re-initialised in this group


def _owns_tensors(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


def execution_order(net: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Module path → index at which its forward finished (last call wins), one forward pass."""
    order: dict[str, int] = {}
    counter = [0]
    handles = []

    def make(name: str):
        def hook(_m, _i, _o):
            order[name] = counter[0]
            counter[0] += 1

        return hook

    try:
        for name, m in net.named_modules():
            if name:
                handles.append(m.register_forward_hook(make(name)))
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    return order


def cascade_groups(net: nn.Module, layers: Sequence[tuple[str, str]], example: torch.Tensor,
                   exclude_prefixes: Sequence[str] = ()) -> list[Group]:
    """Split the network's tensor-owning modules into groups, returned **top-down**.

    ``layers`` are (readable name, module path inside ``net``) in any order. Modules
    finishing after the last catalogued layer join the top group; modules that never
    run in a forward pass (unused heads) are left alone; groups that would be empty
    (a container layer right after its last block) are dropped.
    """
    order = execution_order(net, example)
    cuts = []
    for name, path in layers:
        if path not in order:
            raise KeyError(f"layer {name!r} ({path}) did not run in a forward pass")
        cuts.append((order[path], name))
    cuts.sort()
    owners = [
        (order[p], p, m) for p, m in net.named_modules()
        if p and p in order and _owns_tensors(m) and not any(p == e or p.startswith(e + ".") for e in exclude_prefixes)
    ]
    owners.sort()
    groups: list[Group] = []
    lo = -1
    for i, (cut, name) in enumerate(cuts):
        last = i == len(cuts) - 1
        mods = [(p, m) for idx, p, m in owners if lo < idx and (idx <= cut or last)]
        lo = cut
        if mods:
            numel = sum(t.numel() for _p, m in mods for t in m.parameters(recurse=False))
            groups.append(Group(name, tuple(p for p, _m in mods), numel))
    return groups[::-1]


def model_groups(loaded, example: torch.Tensor | None = None) -> list[Group]:
    """Cascade groups of a registry ``LoadedModel`` (paths inside ``loaded.net``), top-down."""
    spec = loaded.spec
    if example is None:
        example = torch.zeros(1, 3, spec.input_size, spec.input_size, device=loaded.device)
    layers = [(l.name, "body." + l.path) for l in spec.layers]
    return cascade_groups(loaded.net, layers, example, exclude_prefixes=("normalize",))


def choose_steps(n_groups: int, n_steps: int | None) -> list[int]:
    """Which cumulative steps to measure: k = number of top groups randomised.

    ``n_steps`` ≤ 0 or None (or ≥ n_groups) → every step 1..n. Otherwise evenly
    spaced steps that always include 1 (only the top layer) and n (everything).
    """
    if n_groups <= 0:
        return []
    if not n_steps or n_steps <= 0 or n_steps >= n_groups:
        return list(range(1, n_groups + 1))
    if n_steps == 1:
        return [n_groups]
    ks = np.unique(np.round(np.linspace(1, n_groups, n_steps)).astype(int))
    return [int(k) for k in ks]


@torch.no_grad()
def randomise_(net: nn.Module, module_paths: Sequence[str], donor: nn.Module) -> list[str]:
    """Replace (in place) every parameter and buffer owned by ``module_paths`` with the
    donor network's tensor at the same path. Returns the full tensor names replaced."""
    changed = []
    for path in module_paths:
        m, d = net.get_submodule(path), donor.get_submodule(path)
        own = dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))
        src = dict(d.named_parameters(recurse=False)) | dict(d.named_buffers(recurse=False))
        for name, t in own.items():
            s = src[name]
            if s.shape != t.shape:
                raise ValueError(f"donor tensor {path}.{name} has shape {tuple(s.shape)}, expected {tuple(t.shape)}")
            t.copy_(s.to(t.device, t.dtype))
            changed.append(f"{path}.{name}")
    return changed


def cascade(net: nn.Module, groups: Sequence[Group], donor: nn.Module, steps: Sequence[int]) -> Iterator[tuple[int, nn.Module]]:
    """Yield ``(k, randomised_copy)`` for each k in ``steps`` (ascending): a deep copy of
    ``net`` whose top k groups carry the donor's (random) tensors.

    The same copy is randomised further at each step, so use it before advancing.
    ``net`` itself is never modified.
    """
    work = copy.deepcopy(net)
    work.eval()
    done = 0
    for k in sorted(steps):
        if not 1 <= k <= len(groups):
            raise ValueError(f"step {k} outside 1..{len(groups)}")
        for g in groups[done:k]:
            randomise_(work, g.modules, donor)
        done = k
        yield k, work


def independent(net: nn.Module, groups: Sequence[Group], donor: nn.Module,
                steps: Sequence[int]) -> Iterator[tuple[int, nn.Module]]:
    """Yield ``(k, randomised_copy)`` for each k in ``steps`` (ascending): a deep copy of ``net`` whose
    group k (1 = the top one) alone carries the donor's (random) tensors, every other group trained.

    One copy serves every step: group k's own tensors are put back (``finally``: also when the caller
    stops early) before the next step, so each step differs from ``net`` in one group only. ``net``
    itself is never modified."""
    work = copy.deepcopy(net)
    work.eval()
    for k in sorted(steps):
        if not 1 <= k <= len(groups):
            raise ValueError(f"step {k} outside 1..{len(groups)}")
        mods = [work.get_submodule(p) for p in groups[k - 1].modules]
        own = lambda m: [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]  # noqa: E731
        saved = [{n: t.detach().clone() for n, t in own(m)} for m in mods]
        try:
            randomise_(work, groups[k - 1].modules, donor)
            yield k, work
        finally:
            with torch.no_grad():
                for m, keep in zip(mods, saved):
                    for n, t in own(m):
                        t.copy_(keep[n])


#: how the layers are randomised: "cascade" (top k groups, cumulative) or "independent" (group k alone)
MODES = {"cascade": cascade, "independent": independent}


def donor_seeds(seed: int, n: int) -> list[int]:
    """The seeds of the random weights for ``n`` draws (``[findings] cascade_seeds``): ``seed``,
    ``seed + 1``, … — the first is the one every verdict uses."""
    return [int(seed) + j for j in range(max(1, int(n)))]


def fresh_donor(loaded, seed: int) -> nn.Module:
    """An untrained network of the same architecture (library initialiser, seeded).

    The global RNG state is restored afterwards, so building a donor changes no
    other random stream.
    """
    from ..models import load_model

    with torch.random.fork_rng(devices=[]):
        donor = load_model(loaded.spec, allow_random=True, seed=seed, device=loaded.device)
    return donor.net


def randomised_model(loaded, net: nn.Module, label: str):
    """A ``LoadedModel`` view of a randomised copy (for method factories), labelled as random."""
    return dataclasses.replace(loaded, net=net, weights_id=f"{loaded.weights_id}+sanity-random[{label}]", pretrained=False)


def signed_scale(a) -> torch.Tensor:
    """Signed maps → [0, 1] keeping 0 at 0.5: each map divided by its largest |value|, then (m + 1) / 2
    (an all-zero map is 0.5 everywhere). The scaling of the signed maps for SSIM."""
    t = torch.as_tensor(a).detach().to("cpu", torch.float64)
    t = t[None] if t.ndim == 2 else t
    mag = t.flatten(1).abs().amax(1).view(-1, 1, 1)
    return 0.5 + 0.5 * t / torch.where(mag > 0, mag, torch.ones_like(mag))


def compare_signed(a, b, prepared: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The similarities of signed map pairs (B×H×W each): ``spearman_signed`` — rank correlation of the
    signed values (no absolute value); ``ssim_signed`` — SSIM of the maps scaled by :func:`signed_scale`;
    ``hog_signed`` — Pearson correlation of the HOG descriptors of the signed maps (the min–max scaling
    inside HOG is affine, so the map keeps its sign structure; HOG bins unsigned orientations)."""
    p = prepared or {}  # prepare(a, absolute=False): a's ranks and HOG, computed once for many b
    return {SIGNED["spearman"]: spearman(a, b, absolute=False, ranks_a=p.get("ranks")),
            SIGNED["ssim"]: ssim(signed_scale(a), signed_scale(b), normalise=False),
            SIGNED["hog"]: hog_similarity(a, b, hog_a=p.get("hog"))}


def randomisation_curves(
    net: nn.Module,
    groups: Sequence[Group],
    donor: nn.Module,
    steps: Sequence[int],
    reference: dict[str, torch.Tensor],
    explain: Callable[[nn.Module, int], dict],
    thumb: int = 0,
    signed_reference: dict[str, torch.Tensor] | None = None,
    mode: str = "cascade",
) -> dict[str, dict]:
    """Run the cascade (``mode`` "cascade"; "independent": :func:`independent`, one group at a time) and
    compare each method's maps with its trained-model maps.

    ``reference``: method → B×H×W maps of the trained model. ``explain(copy, k)`` returns method →
    B×H×W maps of the randomised copy (same images, same classes), or for the methods of
    ``signed_reference`` (method → B×H×W *signed* maps of the trained model) a pair (maps, signed maps).
    Returns method → ``{"steps": [k…], "spearman"|"ssim"|"hog": float64 S×B, "thumbs": S×B×t×t
    float16}`` (thumbnails only when ``thumb`` > 0), plus ``"spearman_signed"|"ssim_signed"|
    "hog_signed"`` (S×B) for the methods of ``signed_reference``.
    """
    signed_reference = signed_reference or {}
    out = {m: {"steps": [], **{k: [] for k in METRICS}, "thumbs": [],
               **({k: [] for k in SIGNED_METRICS} if m in signed_reference else {})} for m in reference}
    # what the comparisons compute of the trained maps alone, once for every step
    ready = {m: prepare(ref) for m, ref in reference.items()}
    ready_signed = {m: prepare(ref, absolute=False) for m, ref in signed_reference.items()}
    for k, work in MODES[mode](net, groups, donor, steps):
        maps = explain(work, k)
        for m, ref in reference.items():
            got, sgot = maps[m] if isinstance(maps[m], tuple) else (maps[m], None)
            got = got.detach().float().cpu()
            sims = compare(ref, got, ready[m])
            if m in signed_reference:
                if sgot is None:
                    raise ValueError(f"{m}: explain gave no signed maps, but a signed reference was given")
                sims.update(compare_signed(signed_reference[m], sgot.detach().float().cpu(), ready_signed[m]))
            out[m]["steps"].append(k)
            for metric in METRICS + SIGNED_METRICS:
                if metric in out[m]:
                    out[m][metric].append(sims[metric])
            if thumb:
                out[m]["thumbs"].append(thumbnails(got, thumb))
    for m in out:
        for metric in METRICS + SIGNED_METRICS:
            if metric in out[m]:
                out[m][metric] = torch.stack(out[m][metric]) if out[m][metric] else torch.empty(0)
        out[m]["thumbs"] = torch.stack(out[m]["thumbs"]) if out[m]["thumbs"] else torch.empty(0)
    return out


def thumbnails(maps: torch.Tensor, size: int) -> torch.Tensor:
    """B×H×W → B×size×size (area averaging), float16, for figures."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(maps.detach().float().cpu()[:, None], size)[:, 0].half()


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class CascadeMaps:
    """One (method, photo) of the cascade: per measured step (``steps``) the similarity of the map of
    the randomised copy to the trained map (float64, one value per step and metric) and the map's
    thumbnail (S×t×t float16). ``*_signed``: the same for the signed maps (:func:`compare_signed`),
    only for a method with signed attributions on this photo (else None)."""

    steps: list[int]
    spearman: torch.Tensor
    ssim: torch.Tensor
    hog: torch.Tensor
    thumbs: torch.Tensor
    seconds: float
    spearman_signed: torch.Tensor | None = None
    ssim_signed: torch.Tensor | None = None
    hog_signed: torch.Tensor | None = None

    @property
    def signed(self) -> bool:
        return self.spearman_signed is not None


@dataclass
class CascadeCurves:
    """One method over the photos: S×B similarities per metric and S×B×t×t thumbnails (NumPy); the
    signed maps' S×B similarities (``*_signed``) where the method's attributions are signed on every
    photo, else None."""

    spearman: np.ndarray
    ssim: np.ndarray
    hog: np.ndarray
    thumbs: np.ndarray
    spearman_signed: np.ndarray | None = None
    ssim_signed: np.ndarray | None = None
    hog_signed: np.ndarray | None = None

    @property
    def signed(self) -> bool:
        return self.spearman_signed is not None


@dataclass
class Cascade:
    """The randomisation check of a model: the measured steps (top groups randomised), their labels,
    the fraction of the parameters randomised at each, and every method's curves (``methods``: the
    cascade with the first of ``seeds``, the one the verdicts use). Beside it: ``other_seeds`` (method →
    the cascade's curves with each further seed, the same photos), ``independent`` (method → the curves of
    :func:`independent` on its first photos; ``independent_labels``/``independent_fraction``: the group
    randomised at each step and its share of the parameters), ``edges`` (method → metric → per photo:
    similarity of the trained map to the Sobel edge map of the photo, :func:`edge_similarity`)."""

    steps: list[int]
    labels: list[str]
    groups: list[str]
    fraction: list[float]
    n_groups: int
    methods: dict[str, CascadeCurves]
    seeds: list[int] = field(default_factory=list)
    other_seeds: dict[str, list[CascadeCurves]] = field(default_factory=dict)
    independent: dict[str, CascadeCurves] = field(default_factory=dict)
    independent_labels: list[str] = field(default_factory=list)
    independent_fraction: list[float] = field(default_factory=list)
    edges: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def cascade_check(model, explain_of: Callable[[object, str], Callable], names: Sequence[str], x: torch.Tensor,
                  top1: torch.Tensor, reference: dict[str, torch.Tensor], pairs: Sequence[tuple[str, int]], *,
                  seed: int, steps: Sequence[int], thumb: int, progress=None,
                  signed: Mapping[str, torch.Tensor] | None = None, mode: str = "cascade") -> list[CascadeMaps]:
    """The randomisation check (``mode``: "cascade", or "independent" — one group at a time; seeded donor
    ``seed``, measured ``steps``) of the registry ``model`` for methods ``names`` on photos ``x``
    explaining classes ``top1``: ``explain_of(view, name)`` is method ``name`` on ``view`` (a randomised
    copy of the model) as ``explain(x, targets) -> maps``; ``reference``: name → the trained model's
    B×H×W maps. ``signed``: name → the trained model's B×H×W *signed* maps (from the maps step, which
    computes them with the heatmaps); for those methods the explainer returns a pair (maps, signed maps),
    and the photos whose trained signed map takes a negative value get the signed similarities too. No
    pass on the trained model here. One result per (method, photo index) of ``pairs``;
    ``progress.update(1)`` per method and step."""
    t0 = time.perf_counter()
    groups = model_groups(model, x[:1])
    donor = fresh_donor(model, seed)
    sref = {n: v.detach().float().cpu() for n, v in (signed or {}).items() if n in set(names)}
    both = lambda n: n in sref  # noqa: E731
    tag = "top" if mode == "cascade" else "only"

    def explain(work, k):
        view = randomised_model(model, work, f"{tag}{k}:seed={seed}")
        maps = {}
        for n in names:
            got = explain_of(view, n)(x, top1)
            if both(n) and not isinstance(got, tuple):
                raise ValueError(f"{n}: a signed reference was given, but its explainer returns no signed maps")
            maps[n] = (got[0].float().cpu(), got[1].float().cpu()) if both(n) else \
                (got[0] if isinstance(got, tuple) else got).float().cpu()
            if progress is not None:
                progress.update(1)
        return maps

    curves = randomisation_curves(model.net, groups, donor, steps, reference, explain, thumb=thumb,
                                  signed_reference=sref, mode=mode)
    dt = (time.perf_counter() - t0) / max(1, len(x) * len(names))

    def one(n, j):
        c = curves[n]
        has_sign = both(n) and bool((sref[n][j] < 0).any())
        return CascadeMaps(steps, **{m: c[m][:, j].clone() for m in METRICS},
                           thumbs=c["thumbs"][:, j].clone() if thumb else torch.empty(0), seconds=dt,
                           **({m: c[m][:, j].clone() for m in SIGNED_METRICS} if has_sign else {}))

    return [one(n, j) for n, j in pairs]


def cascade_task(model, names: list[str], params: dict, batch_size: int, seed: int, steps: list[int], thumb: int,
                 x: torch.Tensor, top1: torch.Tensor, reference: dict, pairs: list[tuple[str, int]],
                 signed: dict | None = None, mode: str = "cascade") -> list[CascadeMaps]:
    """:func:`cascade_check` (``mode`` "cascade" or "independent") of attribution methods ``names``
    (``params``: name → settings); ``signed``: name → the trained signed maps of the methods that have them
    (the maps step's, :class:`.class_check.ClassMaps`), compared with the randomised copies' signed maps
    (:func:`.checks.explainer_with_signed`)."""
    return cascade_check(model, lambda view, n: explainer_with_signed(view, n, params[n], batch_size), names,
                         x.to(model.device), top1.to(model.device), reference, pairs, seed=seed, steps=steps,
                         thumb=thumb, progress=Ticks(len(steps) * len(names), len(pairs)), signed=signed, mode=mode)


# ------------------------------------------------------------------------ the edge-detector reference


#: grayscale weights of the photo for the edge map (ITU-R BT.601 luma)
LUMA = (0.299, 0.587, 0.114)


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """B×3×H×W photos (pixel space, 0–1) → B×H×W edge maps: the gradient magnitude of the grayscale photo
    (:data:`LUMA`) under the 3×3 Sobel filters, borders replicated. No network: what a map that "looks like
    the image" looks like (Adebayo et al.'s Fig. 1 compares the maps with such an edge detector)."""
    import torch.nn.functional as F

    x = x.detach().to("cpu", torch.float64)
    gray = (x * torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1)).sum(1, keepdim=True) if x.shape[1] == 3 \
        else x.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    d = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.T])[:, None])
    return d.pow(2).sum(1).sqrt()


def edge_similarity(maps: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The similarities the cascade reports (:func:`.similarity.compare`: Spearman of |map|, SSIM, HOG),
    float64 per photo, between B×H×W maps and the :func:`sobel_edges` of their B photos ``x``. A constant
    map has rank correlation 0 (no ordering), as everywhere."""
    return compare(maps.detach().float().cpu(), sobel_edges(x))


def edge_task(maps: list[torch.Tensor], x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """:func:`edge_similarity` of each method's B×H×W trained ``maps`` (a list, one per method) with the
    photos ``x``, in order (a cached value per method; no network pass)."""
    edges = sobel_edges(x)
    return [compare(m.detach().float().cpu(), edges) for m in maps]


# ------------------------------------------------------------------------ a model's results


def curves_of(results: Mapping[str, Sequence[CascadeMaps]]) -> dict[str, CascadeCurves]:
    """Each method's per-photo results → its :class:`CascadeCurves` (S×B). A method's signed curves are
    kept where every one of its photos has them."""
    stack = lambda vals, m: torch.stack([getattr(v, m) for v in vals], 1).numpy()  # noqa: E731
    return {name: CascadeCurves(**{m: stack(vals, m) for m in METRICS},
                                thumbs=torch.stack([v.thumbs for v in vals], 1).float().numpy(),
                                **({m: stack(vals, m) for m in SIGNED_METRICS}
                                   if vals and all(v.signed for v in vals) else {}))
            for name, vals in results.items()}


def cascade_of(groups: Sequence[Group], steps: Sequence[int], results: dict[str, list[CascadeMaps]], *,
               seeds: Sequence[int] = (), other_seeds: Mapping[str, Sequence[Sequence[CascadeMaps]]] | None = None,
               independent: Mapping[str, Sequence[CascadeMaps]] | None = None,
               edges: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Cascade:
    """The randomisation check of a model from its groups, measured steps and each method's per-photo
    cascade results (the first seed's); ``other_seeds``: method → per further seed its per-photo results
    (the same photos); ``independent``: method → its per-photo results of :func:`independent` (its first
    photos); ``edges``: method → metric → per-photo similarity of the trained map to the edge map."""
    total = sum(g.numel for g in groups)
    labels = ["all layers" if k == len(groups) else f"{groups[0].name} only" if k == 1 else f"down to {groups[k - 1].name}"
              for k in steps]
    frac = [sum(g.numel for g in groups[:k]) / total for k in steps]
    others = {n: [curves_of({n: v})[n] for v in per] for n, per in (other_seeds or {}).items()}
    return Cascade(list(steps), labels, [g.name for g in groups], frac, len(groups), curves_of(results),
                   seeds=list(seeds), other_seeds=others,
                   independent=curves_of({n: v for n, v in (independent or {}).items() if len(v)}),
                   independent_labels=[f"{groups[k - 1].name} only" for k in steps],
                   independent_fraction=[groups[k - 1].numel / total for k in steps],
                   edges={n: {m: np.asarray(v, dtype=np.float64) for m, v in e.items()}
                          for n, e in (edges or {}).items()})


def merge(a: Cascade, b: Cascade) -> Cascade:
    """Two parts of one model's check (the cheap and the expensive methods: the same groups and steps,
    other photos) as one."""
    return dataclasses.replace(a, methods={**a.methods, **b.methods}, other_seeds={**a.other_seeds, **b.other_seeds},
                               independent={**a.independent, **b.independent}, edges={**a.edges, **b.edges})
