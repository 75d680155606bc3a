"""Statistics of the independent-judge table (``generator.deepsim.judge``, ``judge_eval``): do class
visualisations made on one network transfer to another? Pure functions of the table's ``pairs``
(per picture: the judge's 0-based rank of the intended class), bootstrapped over classes — a PPGN
chain's samples are one class, not independent pictures."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .bootstrap import Interval, mean_ci


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


def judge_evidence(generator: Path) -> dict:
    """The independent-judge table of the generator file ``generator`` (written by ``python -m
    generator.deepsim.judge_eval`` beside it): each row's top-5 rate with a 95 % bootstrap interval
    over the classes, the prior-vs-pixel contrast and the maker → judge pairs, for the Findings
    page. ``{"why": …}`` when there is no table measured with this generator file."""
    from ..deepsim import judge, read_measurement
    from ..models import title_of
    from ..util import sha256_file

    if not generator.is_file():
        return {"why": f"the generator file {generator.name} was not found"}
    table, why = read_measurement(generator.with_suffix(".judge.json"), sha256_file(generator), judge.COMMAND)
    if table is None:
        return {"why": why or f"not measured for {generator.name} yet (run `{judge.COMMAND}`)"}
    summary = table.get("summary") or {}
    intervals = class_intervals(table.get("pairs") or [], [k for k, _t in judge.ROWS if summary.get(k)])
    rows = [{"key": k, "title": t, "top5": Interval(**{f: intervals[k][f] for f in ("mean", "lo", "hi", "n")}),
             "pictures": summary[k]["n"]} for k, t in judge.ROWS if k in intervals]
    return {"rows": rows, "by_key": {r["key"]: r for r in rows}, "contrast": table.get("contrast"),
            "pairs": judge.pair_lines(table, title_of), "by_pair": judge.pair_top5(table, title_of),
            "generator": generator.name, "n_classes": len(table.get("classes") or []), "steps": table.get("steps"),
            "ppgn_steps": (table.get("ppgn") or {}).get("steps")}
