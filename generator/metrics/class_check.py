"""Class sensitivity: does a map change with the class it explains?

A map meant to explain a class decision should differ when it is asked about another class.
Per photo the map for the model's top-1 class is compared (:func:`.similarity.compare`) with
the map for a second class: by default a **random** class per photo (seeded, never the top-1;
the random-logit test of Sixt, Granz & Landgraf 2020, :func:`random_classes`), or the class the
model ranks ``low_rank`` (``[findings] class_check = "low_rank"``, :func:`targets_of`). The maps of
both classes are also the trained model's maps that the other checks start from (:func:`class_maps`).

A class the model gives a probability of ≈ 0 can have **no map**: Grad-CAM's map is all zeros
after its ReLU, occlusion's is near-zero noise. A constant map has rank correlation 0 with anything
by definition, which would read as "changes with the class". So the check records each map's
spread (:func:`spreads`) and a photo whose map of either class has (nearly) none is "no map for
that class": counted apart, never as class sensitivity (:mod:`.verdicts`).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..executor import tick
from .checks import Explain, explainer_with_signed
from .similarity import compare


@dataclass
class ClassMaps:
    """The maps of one photo for its K classes (K×H×W: top-1, then the second class); for a pixel-space
    method also the **signed** maps of the same attributions (``signed``, K×H×W, :func:`.checks.signed_map`;
    the randomisation check's trained signed maps), else None."""

    maps: torch.Tensor
    seconds: float
    signed: torch.Tensor | None = None


#: the second class per photo: "random" (Sixt et al. 2020) or "low_rank" (the class ranked ``low_rank``)
SECOND_CLASS = ("random", "low_rank")
#: a map whose spread is below this share of the pair's larger |value| is "no map" (:func:`spreads`)
NO_MAP_EPSILON = 1e-3


@dataclass
class ClassSensitivity:
    """Per photo: the similarity of the top-1 map to the second class's map (float64 arrays), and
    ``spread`` (N×2: top-1, second class; :func:`spreads`) of the two maps."""

    spearman: np.ndarray
    ssim: np.ndarray
    hog: np.ndarray
    spread: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.spread is None:  # no spreads recorded: every map counts as a map
            self.spread = np.ones((len(self.spearman), 2))

    def no_map(self, epsilon: float = NO_MAP_EPSILON) -> np.ndarray:
        """Per photo: whether the map of either class has (nearly) no spread (bool array)."""
        return (np.asarray(self.spread) < epsilon).any(1)


def logits_task(model, batch_size: int, x: torch.Tensor) -> list[torch.Tensor]:
    """Logits (float32, CPU) of photos ``x`` in batches of ``batch_size``: the classes to explain."""
    x = x.to(model.device)
    with torch.inference_mode():
        logits = torch.cat([model.net(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
    tick(len(x))
    return [row.clone() for row in logits]


def targets_of(logits: torch.Tensor, low_rank: int) -> torch.Tensor:
    """N×2 classes per photo: its top-1 and the class it ranks ``low_rank`` (1-based)."""
    ranked = logits.argsort(dim=1, descending=True)
    return torch.stack([ranked[:, 0], ranked[:, low_rank - 1]], 1)


def random_classes(logits: torch.Tensor, seed: int, ids) -> torch.Tensor:
    """N×2 classes per photo: its top-1 and a class drawn uniformly from the others, from a generator
    seeded by ``seed`` and the photo's id (``ids``, e.g. its SHA-256): the same photo gets the same
    class whatever else is in the set."""
    top1 = logits.argmax(1)
    k = logits.shape[1]
    out = []
    for t, pid in zip(top1.tolist(), ids):
        h = int.from_bytes(hashlib.sha256(f"{int(seed)}:{pid}".encode()).digest()[:8], "little")
        c = int(np.random.default_rng(h).integers(0, k - 1))
        out.append(c + (c >= t))  # skip the top-1
    return torch.stack([top1, torch.tensor(out, dtype=top1.dtype)], 1)


def second_class(logits: torch.Tensor, rule: str, low_rank: int, seed: int, ids) -> torch.Tensor:
    """N×2 classes per photo (top-1, second class) by ``rule`` (:data:`SECOND_CLASS`)."""
    if rule == "random":
        return random_classes(logits, seed, ids)
    if rule == "low_rank":
        return targets_of(logits, low_rank)
    raise ValueError(f"[findings] class_check = {rule!r}: allowed {', '.join(SECOND_CLASS)}")


def spreads(maps: torch.Tensor) -> np.ndarray:
    """N×K×H×W maps → N×K spreads: each map's standard deviation of |map| over the larger maximum
    |value| of the photo's maps (0 where both are all zero). Near 0: the map is (nearly) constant,
    or negligible next to the other class's map."""
    a = maps.detach().abs().to(torch.float64).flatten(2)
    scale = a.amax(2).amax(1, keepdim=True)
    sd = a.std(2, unbiased=False)
    return torch.where(scale > 0, sd / scale.clamp(min=1e-300), torch.zeros_like(sd)).numpy()


def class_maps(explain: Explain, x: torch.Tensor, targets: torch.Tensor) -> list[ClassMaps]:
    """The maps of photos ``x`` for their N×K ``targets``: one call of ``explain`` on all of them. An
    ``explain`` that returns a pair (maps, signed maps; :func:`.checks.explainer_with_signed`) gives
    the signed maps too."""
    t0 = time.perf_counter()
    n, k = len(x), targets.shape[1]
    tt = targets.T.reshape(-1).to(x.device)  # all top-1, then all second classes
    got = explain(x.repeat(k, 1, 1, 1), tt)
    maps, signed = got if isinstance(got, tuple) else (got, None)
    per_photo = lambda m: m.float().cpu().view(k, n, *x.shape[-2:]).transpose(0, 1)  # noqa: E731
    maps = per_photo(maps)
    signed = per_photo(signed) if signed is not None else None
    dt = (time.perf_counter() - t0) / n
    return [ClassMaps(maps[j].clone(), dt, signed[j].clone() if signed is not None else None) for j in range(n)]


def maps_task(model, name: str, params: dict, batch_size: int, x: torch.Tensor, targets: torch.Tensor) -> list[ClassMaps]:
    """:func:`class_maps` of attribution method ``name`` (settings ``params``) on ``model``, with the signed
    maps of a pixel-space method (:func:`.checks.explainer_with_signed`: the same attributions)."""
    x = x.to(model.device)
    out = class_maps(explainer_with_signed(model, name, params, batch_size), x, targets)
    tick(len(x))
    return out


def class_sensitivity(maps: torch.Tensor) -> ClassSensitivity:
    """N×K×H×W maps (top-1 first, the second class second) → their similarity and spreads per photo."""
    return ClassSensitivity(**{k: v.numpy() for k, v in compare(maps[:, 0], maps[:, 1]).items()},
                            spread=spreads(maps[:, :2]))


def sensitivity_task(maps: list[torch.Tensor]) -> list[dict]:
    """:func:`class_sensitivity` of each N×2×H×W ``maps`` tensor, as tensors (a cached value), in order."""
    out = []
    for m in maps:
        c = class_sensitivity(m)
        out.append({f.name: torch.from_numpy(np.ascontiguousarray(getattr(c, f.name))) for f in fields(c)})
    return out


def sensitivity_of(cached: dict) -> ClassSensitivity:
    """The :class:`ClassSensitivity` of a :func:`sensitivity_task` result."""
    return ClassSensitivity(**{k: v.numpy() for k, v in cached.items()})
