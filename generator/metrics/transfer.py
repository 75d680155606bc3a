"""Statistics of the independent-judge table (``generator.deepsim.judge``, ``judge_eval``): do class
visualisations made on one network transfer to another? Pure functions of the table's ``pairs``
(per picture: the judge's 0-based rank of the intended class), bootstrapped over classes — a PPGN
chain's samples are one class, not independent pictures."""
from __future__ import annotations

from typing import Sequence

from .bootstrap import mean_ci


def class_top5(pairs: Sequence[dict], name: str) -> dict[tuple[str, int], float]:
    """(maker, class) → the fraction of row ``name``'s pictures of that class in the judge's top 5
    (one picture per class for DGN-AM and pixel-space rows; a chain's samples for PPGN)."""
    hits: dict[tuple[str, int], list[bool]] = {}
    for p in pairs:
        row = p["rows"].get(name)
        if not row or not row.get("ranks") or not p.get("classes") or len(row["ranks"]) % len(p["classes"]):
            continue  # (a row with a number of pictures that is not a multiple of its classes cannot be split)
        k = len(row["ranks"]) // len(p["classes"])  # pictures per class, class by class
        for i, r in enumerate(row["ranks"]):
            hits.setdefault((p["maker"], int(p["classes"][i // k])), []).append(r < 5)
    return {c: sum(v) / len(v) for c, v in hits.items()}


def contrast(pairs: Sequence[dict], summary: dict) -> dict | None:
    """The best prior row (DGN-AM or PPGN, by top-5) minus the best pixel-space row, per (maker, class),
    with a 95 % bootstrap interval of the mean over those classes (fractions)."""
    best = lambda names: max((n for n in names if (summary.get(n) or {}).get("top5") is not None),  # noqa: E731
                             key=lambda n: summary[n]["top5"], default=None)
    prior = best(["dgn_am", "ppgn"])
    pixel = best([n for n in summary if n.startswith("pixel-")])
    if prior is None or pixel is None:
        return None
    a, b = class_top5(pairs, prior), class_top5(pairs, pixel)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    iv = mean_ci([a[c] - b[c] for c in common])
    return {"prior": prior, "pixel": pixel, **iv.as_dict()}


def class_intervals(pairs: Sequence[dict], names: Sequence[str]) -> dict:
    """Per row of ``names`` present in ``pairs``: the top-5 rate under the judge with a 95 % bootstrap
    interval over the (maker, class) units — a PPGN chain's samples count as one class, not as
    independent pictures (``mean``, ``lo``, ``hi``, ``n`` classes, fractions)."""
    out = {}
    for name in names:
        per = class_top5(pairs, name)
        if per:
            out[name] = mean_ci([per[k] for k in sorted(per)]).as_dict()
    return out
