"""Independent-judge evaluation: is a class visualisation recognisable to a network that did not make it?

A picture made for class ``c`` on model A (DGN-AM, a PPGN sample, a pixel-space baseline) is
shown to a *different* network B — the judge — that took no part in making it; the numbers are
top-1 / top-5 of ``c`` under B. The same judge scores real photos of the classes (the ceiling),
the generator's reconstructions ``G(E(photo))`` of those photos, and uniform-noise pictures
(chance: top-1 0.1 %, top-5 0.5 % over ImageNet's 1000 classes).

* :func:`pick_judge` — who judges whose pictures (never the maker; never the generator's
  encoder for pictures the generator drew, when another judge is loaded).
* :func:`judge_verdicts` — batched, forward-only scoring (rank, probability, judge's top class).
* :func:`evaluate_maker` — one maker's pictures by every method, scored on its judge.
* The command ``python -m generator.deepsim.judge_eval`` (:mod:`.judge_eval`) runs the whole
  evaluation and writes the small JSON table the site shows.

The site's DGN-AM page and ``data/weights/GENERATOR_CARD.md`` show the table (with its one-line
``"takeaway"``); the Findings page reads it through :func:`generator.deepsim.read_measurement` and
:func:`generator.metrics.transfer.class_intervals`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from ..methods.objectives import Target
from ..methods.pixel_am import PixelAMSettings, pixel_am
from .dgn_am import DGNAMSettings, channels_last, dgn_am, fit_to_model
from .ppgn import PPGNSettings, ppgn_sample


#: judge preference per maker (first loaded one that is neither the maker nor, for generator
#: pictures, the generator's encoder); other models fall back to any other loaded model
PREFERENCE = {
    "efficientnet_lite0": ("efficientnet_lite2", "efficientnet_lite1", "resnet50", "googlenet", "vgg16", "alexnet"),
    "efficientnet_lite1": ("efficientnet_lite2", "efficientnet_lite0", "resnet50", "googlenet", "vgg16", "alexnet"),
    "efficientnet_lite2": ("efficientnet_lite0", "efficientnet_lite1", "resnet50", "googlenet", "vgg16", "alexnet"),
    "alexnet": ("vgg16", "resnet50", "googlenet"),
    "vgg16": ("alexnet", "googlenet", "resnet50"),
    "googlenet": ("resnet50", "vgg16", "alexnet"),
    "resnet50": ("googlenet", "vgg16", "alexnet"),
}


def pick_judge(maker: str, available: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str | None, bool]:
    """The judge of ``maker``'s pictures among ``available`` model names: ``(name, clean)``.

    Never ``maker``. ``exclude`` (e.g. the generator's encoder, which took part in every
    generator picture) is avoided when another model is available; ``clean`` is False when the
    only possible judge is an excluded one. ``(None, False)`` when no other model is loaded."""
    others = [a for a in available if a != maker]
    if not others:
        return None, False
    order = [p for p in PREFERENCE.get(maker, ()) if p in others] + [a for a in others if a not in PREFERENCE.get(maker, ())]
    clean = [a for a in order if a not in exclude]
    return (clean[0], True) if clean else (order[0], False)


@torch.inference_mode()
def judge_verdicts(judge, images: torch.Tensor, classes: Sequence[int], batch: int = 32,
                   resized: bool = False) -> dict:
    """Score ``images[i]`` (in [0, 1], any size; resized to the judge's input unless ``resized``)
    for ``classes[i]`` on ``judge`` (a loaded model: ``.net``, ``.spec.input_size``).
    Returns ``{"rank": 0-based rank of the class, "prob": its softmax probability, "top": the judge's class}``."""
    net, size = judge.net, judge.spec.input_size
    device = next(net.parameters()).device
    ranks, probs, tops = [], [], []
    cls = torch.as_tensor(list(classes), dtype=torch.long)
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device).float()
        if not resized:
            x = fit_to_model(x, size)
        logits = net(x).float().cpu()
        c = cls[i:i + batch]
        own = logits[torch.arange(len(c)), c]
        ranks.append((logits > own[:, None]).sum(1))
        probs.append(logits.softmax(1)[torch.arange(len(c)), c])
        tops.append(logits.argmax(1))
    cat = (lambda t: torch.cat(t) if t else torch.empty(0))
    return {"rank": cat(ranks).long(), "prob": cat(probs), "top": cat(tops).long()}


def summarize(rank: torch.Tensor) -> dict:
    """Top-1 / top-5 fractions of ranks (0-based)."""
    n = int(rank.numel())
    return {"n": n, "top1": float((rank < 1).float().mean()) if n else None,
            "top5": float((rank < 5).float().mean()) if n else None}


def read_photo_index(folder: str | Path) -> dict[int, Path]:
    """The 1000-class sample → {ImageNet index: photo path} (:func:`generator.imagenet.sample_1k`:
    listed files that exist); {} when it has no ``classes.tsv``."""
    from .. import imagenet

    return {r.index: r.path for r in imagenet.sample_1k(folder)}


def load_photos(paths: Sequence[Path], model) -> torch.Tensor:
    """Photos → ``model``'s pixel-space input (its own resize + centre crop), N×3×S×S in [0, 1]."""
    from ..image_folder import load_input
    pre = model.spec.preprocess
    return torch.stack([load_input(Path(p), pre) for p in paths])


def load_photo_dict(index: dict[int, Path], classes: Sequence[int], model) -> dict[int, torch.Tensor]:
    """{class: ``model``'s input for its photo} for the ``classes`` that have a readable photo
    (unreadable or rejected files are left out, not fatal)."""
    from ..images import ImageRejected
    out = {}
    for c in classes:
        if c in index:
            try:
                out[c] = load_photos([index[c]], model)[0]
            except (ImageRejected, OSError, ValueError):
                continue
    return out


def takeaway(rows: dict, contrast: dict | None = None) -> str:
    """The judge table in one line, from the summary rows (top-5 under the judge).

    ``contrast`` (from :func:`generator.metrics.transfer.contrast`): the best prior row minus the best pixel-space row,
    per class, with a 95 % bootstrap interval over the classes (``mean``, ``lo``, ``hi``, ``n``, in
    fractions). With it, "transfers better" is said only when the interval clears 0, otherwise
    "undecided at n = … classes"; without it, a difference of more than 5 points decides."""
    def t5(name):
        r = rows.get(name)
        return None if not r or r.get("top5") is None else 100 * r["top5"]
    parts = []
    for name, label in (("dgn_am", "DGN-AM"), ("ppgn", "PPGN samples"), ("pixel-plain", "pixel-space plain"),
                        ("pixel-fourier", "pixel-space Fourier"), ("reconstruction", "reconstructions G(E(photo))"),
                        ("photo", "real photos"), ("random", "noise")):
        v = t5(name)
        if v is not None:
            parts.append(f"{label} {v:.0f} %")
    if not parts:
        return ""
    pixel = {label: t5(name) for name, label in (("pixel-plain", "plain"), ("pixel-fourier", "Fourier"))
             if t5(name) is not None}
    prior = {label: t5(name) for name, label in (("dgn_am", "DGN-AM"), ("ppgn", "PPGN")) if t5(name) is not None}
    line = "Top-5 of the intended class under a judge network that did not make the picture: " + ", ".join(parts) + "."
    if prior and pixel:
        best = max(prior, key=prior.get)
        which = "" if len(prior) == 1 else f" (best: {best})"
        if contrast and contrast.get("n", 0) > 1 and contrast.get("lo") == contrast.get("lo"):  # lo is not NaN
            ci = (f"{100 * contrast['mean']:+.0f} points per class, 95 % interval {100 * contrast['lo']:+.0f} to "
                  f"{100 * contrast['hi']:+.0f}")
            if contrast["lo"] > 0 or contrast["hi"] < 0:
                ci += f", n = {contrast['n']} classes"
            if contrast["lo"] > 0:
                line += f" The learned prior{which} makes the visualisations transfer better than pixel-space ones ({ci})"
            elif contrast["hi"] < 0:
                line += f" Here the pixel-space visualisations transfer better than the learned prior's{which} ({ci})"
            else:
                line += (f" Whether the learned prior{which} makes the visualisations transfer better than the best "
                         f"pixel-space ones is undecided at n = {contrast['n']} classes ({ci})")
        elif prior[best] > max(pixel.values()) + 5:
            line += f" The learned prior{which} makes the visualisations transfer better than pixel-space ones"
        elif prior[best] + 5 < max(pixel.values()):
            line += f" Here the pixel-space visualisations transfer better than the learned prior's{which}"
        else:
            line += (f" The learned prior{which} does not make the visualisations transfer better than the best "
                     "pixel-space ones (within 5 points)")
        hardly = [k for k, v in pixel.items() if v < 5]
        if len(hardly) == len(pixel):
            line += "; pixel-space ones hardly transfer (top-5 below 5 %)."
        elif hardly:
            line += (f"; of the pixel-space ones, {' and '.join(k for k in pixel if k not in hardly)} ones transfer, "
                     f"{' and '.join(hardly)} ones hardly (top-5 below 5 %): the parametrisation matters as much as the prior.")
        else:
            line += "; pixel-space ones transfer in part."
    return line


#: short names of the rows, for "made on → judged by (rows)" lines
ROW_LABELS = {"photo": "photos", "reconstruction": "reconstructions", "mean-reconstruction": "mean reconstruction",
              "dgn_am": "DGN-AM", "ppgn": "PPGN", "pixel-plain": "pixel-space plain",
              "pixel-regularized": "pixel-space regularized", "pixel-fourier": "pixel-space Fourier", "random": "noise"}


def pair_lines(table: dict | None, title=lambda name: name) -> list[str]:
    """One line per distinct maker → judge pair of a judge table, in order, with the rows measured on
    it ("Lite0 → Lite2 (photos, DGN-AM, …)"); flagged when the judge took part in the generator.
    ``title`` turns a model name into what the reader sees."""
    rows: dict[tuple, list[str]] = {}
    for p in (table or {}).get("pairs", []):
        key = (p["maker"], p["judge"], p.get("clean", True))
        rows.setdefault(key, [])
        for r in p.get("rows", {}):
            label = ROW_LABELS.get(r, r.replace("pixel-", "pixel-space "))
            if label not in rows[key]:
                rows[key].append(label)
    return [f"{title(m)} → {title(j)} ({', '.join(rs)})" + ("" if clean else ", the judge took part in the generator")
            for (m, j, clean), rs in rows.items()]


def pair_top5(table: dict | None, title=lambda name: name) -> list[str]:
    """Per visualisation pair of a judge table, its rows' top-5 under the judge ("Lite2 → Lite1: DGN-AM
    32 %, …"): the pooled table can hide that one maker's pictures transfer and another's do not."""
    out = []
    for p in (table or {}).get("pairs", []):
        if p.get("what") == "photos":
            continue
        parts = [f"{ROW_LABELS.get(k, k)} {100 * r['top5']:.0f} %" for k, _t in ROWS
                 if k != "random" and (r := p.get("rows", {}).get(k)) and r.get("top5") is not None]
        if parts:
            out.append(f"{title(p['maker'])} → {title(p['judge'])}: {', '.join(parts)}")
    return out


def _row(verdicts: dict) -> dict:
    return {**summarize(verdicts["rank"]), "prob_mean": float(verdicts["prob"].mean()) if len(verdicts["prob"]) else None}


def evaluate_maker(G, meta, maker, judge, classes: Sequence[int], steps: int, ppgn: PPGNSettings | None,
                   baselines: Sequence[str], encoder=None, seed: int = 0, parts: Sequence[str] | None = None,
                   on_part=None, chunk: int = 10) -> dict:
    """Pictures made on ``maker`` for ``classes`` by each method, scored on ``judge`` (never ``maker``).
    ``parts``: subset of ``dgn_am``, ``ppgn``, ``pixel-<method>``, ``random``. Each part's result
    ``{"n", "top1", "top5", "prob_mean", "maker_prob_mean", "ranks"}`` is passed to ``on_part(name, row)``.
    Classes are optimised ``chunk`` at a time (rows are independent; 50 PPGN chains at once ran out
    of memory on a 2-core machine — the process was killed at 4.7 GB)."""
    if judge is maker or judge.name == maker.name:
        raise ValueError("the judge must be a different network from the maker")
    size = maker.spec.input_size
    targets = [Target(int(c)) for c in classes]
    want = list(parts) if parts is not None else ["dgn_am"] + [f"pixel-{m}" for m in baselines] + ["random", "ppgn"]
    out: dict = {}

    def record(name: str, images: torch.Tensor, cls: Sequence[int], seconds: float) -> None:
        v = judge_verdicts(judge, images, cls)
        self_v = judge_verdicts(maker, images, cls)
        row = {**_row(v), "maker_prob_mean": float(self_v["prob"].mean()), "maker_top1": summarize(self_v["rank"])["top1"],
               "ranks": v["rank"].tolist(), "seconds": round(seconds, 1)}
        out[name] = row
        if on_part:
            on_part(name, row)

    with channels_last(maker.net):
        stats = meta["code_stats"] if meta else None
        if "dgn_am" in want and G is not None:
            t = time.perf_counter()
            images = torch.cat([dgn_am(G, maker.net, targets[i:i + chunk], stats, DGNAMSettings(steps=steps, seed=seed),
                                       input_size=size).images for i in range(0, len(targets), chunk)])
            record("dgn_am", images, classes, time.perf_counter() - t)
        for m in baselines:
            if f"pixel-{m}" in want:
                t = time.perf_counter()
                images = torch.cat([pixel_am(maker.net, targets[i:i + chunk],
                                             PixelAMSettings(method=m, steps=steps, seed=seed, size=size))["images"]
                                    for i in range(0, len(targets), chunk)])
                record(f"pixel-{m}", images, classes, time.perf_counter() - t)
        if "random" in want:
            g = torch.Generator().manual_seed(seed)
            record("random", torch.rand(len(classes), 3, size, size, generator=g), classes, 0.0)
        if "ppgn" in want and G is not None and ppgn is not None:
            t = time.perf_counter()
            samples = torch.cat([ppgn_sample(G, encoder, maker.net, targets[i:i + chunk], stats, ppgn, input_size=size).samples
                                 for i in range(0, len(targets), chunk)])
            k = samples.shape[1]
            record("ppgn", samples.flatten(0, 1), [c for c in classes for _ in range(k)], time.perf_counter() - t)
            out["ppgn"]["samples_per_chain"] = k
            from .ppgn import chain_diversity
            with torch.inference_mode():
                feats = torch.cat([judge.net(fit_to_model(x.float(), judge.spec.input_size))
                                   for x in samples.flatten(0, 1).split(32)])
            out["ppgn"]["diversity_judge_logits"] = float(chain_diversity(feats.view(len(classes), k, -1)).mean())
    return out


def _aggregate(pairs: list[dict], name: str) -> dict | None:
    """Pool one row over the (maker → judge) pairs: top-1 / top-5 over all pictures, and the mean
    probability of the intended class on the judge and (when made by a model) on the maker."""
    rows = [p["rows"][name] for p in pairs if name in p["rows"] and p["rows"][name].get("ranks")]
    if not rows:
        return None
    out = summarize(torch.tensor([r for row in rows for r in row["ranks"]]))
    for key in ("prob_mean", "maker_prob_mean"):
        vals = [(row[key], len(row["ranks"])) for row in rows if row.get(key) is not None]
        if vals:
            out[key] = sum(v * n for v, n in vals) / sum(n for _v, n in vals)
    return out


#: rows of the judge table: (key in the JSON summary, what the page and the model card call it)
ROWS = (("photo", "real photos of the classes (ceiling)"),
        ("reconstruction", "reconstructions of those photos by the generator, G(E(photo))"),
        ("mean-reconstruction", "mean of those reconstructions (one image for every class)"),
        ("dgn_am", "DGN-AM"), ("ppgn", "PPGN samples"), ("pixel-plain", "pixel-space: plain"),
        ("pixel-regularized", "pixel-space: regularized"), ("pixel-fourier", "pixel-space: Fourier"),
        ("random", "uniform noise (chance)"))


#: what remeasures a judge table (named when the table belongs to another generator file)
COMMAND = "python -m generator.deepsim.judge_eval"


def judge_diversity(table: dict | None) -> float | None:
    """Mean within-chain diversity of the PPGN samples in a judge table (mean pairwise cosine
    distance of the judge's logits between a chain's samples, averaged over the pairs); None if absent."""
    vals = [p["rows"]["ppgn"]["diversity_judge_logits"] for p in (table or {}).get("pairs", [])
            if isinstance(p.get("rows", {}).get("ppgn", {}).get("diversity_judge_logits"), (int, float))]
    return sum(vals) / len(vals) if vals else None
