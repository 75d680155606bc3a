"""This machine's earlier cold builds, for the plan: measured / estimated network work per stage and model.

The plan's calibration (:func:`generator.plan.calibrate`: a few batches, a few seconds) measures a network's
speed at one moment; a stage runs for minutes at the machine's sustained speed, with arithmetic between the
passes that the count does not price. On this project's 2-core CPU the raw plan came out 1.1–1.6 times too
short per stage and model, and the machine's sustained speed moved by 7–23 % from one build to the next.

So, after each build, every (stage, model) whose results were all computed — a *cold* stage: hits on results
that an earlier run stored at most :data:`COLD_HIT_SHARE` of its look-ups (results this build stored and read
again, such as the logits, do not count) — and whose raw estimate was at least :data:`MIN_SECONDS` records
its measured network work / raw estimate in a per-user file (:func:`path`: ``$CNNVIS_PLAN_HISTORY``, default
``~/.cache/cnnvis/plan-history.json``; ``off`` turns it off), under a key of the machine (device, processor,
GPU, torch version and threads; no host or folder names), with a signature of the counted work (:func:`signature`).
The next plan on that machine corrects each raw estimate that has records of the same stage and model
(:func:`factors`, kept within :data:`CLAMP`):

* where the last records counted the same work (the same build again, e.g. in a fresh clone), the estimate is
  the median of their measured seconds — this build's calibration then does not enter at all, so its noise
  (the same network measured 24 and 45 ms per image by two builds' calibrations here) does not either;
* otherwise the raw estimate × the median of the last :data:`LAST` ratios of builds of the same profile. A ratio
  learnt at one profile's sizes does not carry to another's: measured here, 2026-12-07, the `preview` builds'
  ratios turned a `full` build's raw estimates of EfficientNet-Lite0 (DGN-AM 0.89, atlas 0.86 of the measured time)
  into 1.30 and 0.55.

A (stage, model) without a record keeps its raw estimate. The first build on a machine has only the raw plan;
the plan says which estimates were corrected and from how many builds.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .util import atomic_write_text

CACHE_NEUTRAL = True  # read by the plan only; never part of a result

COLD_HIT_SHARE = 0.05  # a stage is cold when at most this share of its cache look-ups were hits
MIN_SECONDS = 20.0  # raw estimates below this record nothing (their ratio is mostly noise)
LAST = 3  # the median of this many latest ratios per (stage, model)
MAX_AGE_DAYS = 90.0  # older records are not used (nor kept)
KEEP = 20  # records kept per (machine, stage, model)
CLAMP = (0.5, 3.0)  # a factor outside this range is cut to it


def path() -> Path | None:
    """The history file: ``$CNNVIS_PLAN_HISTORY`` (``off`` or ``0``: none), else ``cnnvis/plan-history.json``
    in the user's cache folder."""
    env = os.environ.get("CNNVIS_PLAN_HISTORY", "").strip()
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return Path(env).expanduser()
    from .datasets import user_cache_dir

    return user_cache_dir() / "cnnvis" / "plan-history.json"


def machine_key(machine: Mapping[str, Any]) -> str:
    """The machine as the history keys it (:func:`generator.plan.machine`'s fields, no names of hosts or folders)."""
    dev = str(machine.get("device", "")).split(":")[0]
    return "|".join(str(x) for x in (dev, machine.get("cpu", ""), machine.get("gpu", ""), machine.get("torch", ""),
                                     machine.get("threads", ""), machine.get("allocator", "")))


def _load(p: Path | None) -> dict:
    if p is None:
        return {}
    try:
        rows = json.loads(p.read_text())
        return rows if isinstance(rows, dict) else {}
    except (OSError, ValueError):
        return {}


def signature(work: Any) -> str:
    """The counted work of one stage and model (:class:`generator.plan.Work`'s counts) as a short string: two
    builds with the same signature send the same passes through the same networks."""
    via = sorted((k, int(f), int(g)) for k, (f, g) in getattr(work, "via", {}).items())
    parts = [int(getattr(work, k, 0)) for k in ("forward", "gradient", "partial", "generator", "double", "compares")]
    return json.dumps([parts, round(float(getattr(work, "other", 0.0)), 1), via], separators=(",", ":"))


def factors(machine: Mapping[str, Any], rows: Mapping[tuple[str, str], tuple[float, str]], store: Path | None = None,
            now: float | None = None, profile: str = "") -> dict[tuple[str, str], tuple[float, int]]:
    """(stage, model) → (factor, number of builds it comes from), for the ``rows`` ((stage, model) → (raw estimate
    in seconds, work :func:`signature`)) this machine has records of within :data:`MAX_AGE_DAYS`: where the last
    :data:`LAST` records share the work signature, the median of their measured seconds / the raw estimate; else the
    median of their ratios (measured / raw estimate) among the records of ``profile`` (of any profile when it is
    ""). Cut to :data:`CLAMP`. ``store``: the history file (default :func:`path`)."""
    kept = _load(path() if store is None else store).get(machine_key(machine), {})
    now = time.time() if now is None else now
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for (stage, model), (raw, sig) in rows.items():
        recs = [r for r in kept.get(f"{stage}|{model}", []) if _fresh(r, now) and float(r.get("ratio", 0)) > 0]
        if not recs or raw <= 0:
            continue
        same = [r for r in recs if r.get("work") == sig and float(r.get("measured", 0)) > 0]
        if same:
            last = sorted(same, key=lambda r: float(r["at"]))[-LAST:]
            f = statistics.median(float(r["measured"]) for r in last) / raw
        else:
            alike = [r for r in recs if not profile or r.get("profile") == profile]
            if not alike:
                continue
            last = sorted(alike, key=lambda r: float(r["at"]))[-LAST:]
            f = statistics.median(float(r["ratio"]) for r in last)
        out[(stage, model)] = (min(CLAMP[1], max(CLAMP[0], f)), len(last))
    return out


def _fresh(rec: Any, now: float) -> bool:
    """A record (a dict) at most :data:`MAX_AGE_DAYS` old."""
    return isinstance(rec, dict) and 0 <= now - float(rec.get("at", 0)) <= MAX_AGE_DAYS * 86400


def cold(hits: int, misses: int) -> bool:
    """A stage whose results were (almost) all computed: at least one miss, hits ≤ :data:`COLD_HIT_SHARE`."""
    return misses > 0 and hits <= COLD_HIT_SHARE * (hits + misses)


def record(machine: Mapping[str, Any], raw: Mapping[tuple[str, str], tuple[float, str]],
           measured: Mapping[str, Mapping[str, float]], cold_stages: Sequence[str], profile: str = "",
           store: Path | None = None, now: float | None = None) -> list[tuple[str, str, float]]:
    """Add this build's cold stages to the history: ``raw``: (stage, model) → (raw estimate in seconds, work
    :func:`signature`); ``measured``: stage → model → measured network work. Only stages in ``cold_stages`` and
    raw estimates ≥ :data:`MIN_SECONDS` record. Returns what was recorded as (stage, model, ratio); never raises
    (a history that cannot be written is no reason to fail a build)."""
    p = path() if store is None else store
    now = time.time() if now is None else now
    new = [(s, m, (measured.get(s) or {}).get(m, 0.0), est, sig) for (s, m), (est, sig) in raw.items()
           if s in cold_stages and est >= MIN_SECONDS and (measured.get(s) or {}).get(m, 0.0) > 0]
    if p is not None and new:
        with contextlib.suppress(OSError, ValueError, TypeError):
            _add(p, machine_key(machine), new, profile, now)
    return [(s, m, meas / est) for s, m, meas, est, _ in new]


def _add(p: Path, key: str, new: Sequence[tuple[str, str, float, float, str]], profile: str, now: float) -> None:
    rows = _load(p)
    mine = rows.setdefault(key, {})
    for s, m, meas, est, sig in new:
        recs = [r for r in mine.get(f"{s}|{m}", []) if _fresh(r, now)]
        recs.append({"at": now, "ratio": round(meas / est, 4), "measured": round(meas, 2), "work": sig,
                     "profile": profile})
        mine[f"{s}|{m}"] = recs[-KEEP:]
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps(rows, indent=1, sort_keys=True) + "\n")
