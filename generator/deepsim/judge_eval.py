"""The independent-judge evaluation as a command (see :mod:`.judge` for what is measured).

``python -m generator.deepsim.judge_eval [--makers efficientnet_lite0 efficientnet_lite2]
[--classes 50] [--steps 100] [--ppgn-steps 600] [--ppgn-samples 5]
[--photos ../shared/imagenet-1k-sample] [--out data/weights/deepsim_lite0_64.judge.json] [--note TEXT]``

writes a small JSON table (atomically, after every part; ``"complete": false`` until the end)
tied to the generator file's sha256: per (maker → judge) pair the rows ``dgn_am``, ``ppgn``,
``pixel-<method>``, ``random`` (and, judged once, ``photo``, ``reconstruction``,
``mean-reconstruction``), each with top-1 / top-5 of the intended class under the judge and the
judge's rank of it per picture; ``summary`` pools the pairs; ``takeaway`` is the table in one
sentence. ``--merge A.json B.json --out C.json`` joins tables of the same generator and
budget (e.g. one process per maker).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .. import imagenet
from ..methods.objectives import spread_classes
from ..metrics.transfer import contrast
from ..util import atomic_write_text, sha256_file
from .judge import (PREFERENCE, ROWS, _aggregate, _row, evaluate_maker, judge_verdicts, load_photo_dict, pick_judge,
                    takeaway)
from .ppgn import PPGNSettings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GENERATOR = ROOT / "data" / "weights" / "deepsim_lite0_64.pt"
DEFAULT_PHOTOS = ROOT.parent / "shared" / "imagenet-1k-sample"
FORMAT = "cnnvis-judge/1"


def _finish(result: dict) -> None:
    """Summary rows, the prior-vs-pixel contrast and the takeaway, from the pairs."""
    pairs = result["pairs"]
    result["summary"] = {n: _aggregate(pairs, n) for n in sorted({n for p in pairs for n in p["rows"]})}
    result["contrast"] = contrast(pairs, result["summary"])
    result["takeaway"] = takeaway(result["summary"], result["contrast"])


def run_judge(generator: Path, makers: Sequence[str], classes: Sequence[int], steps: int, ppgn: PPGNSettings | None,
              baselines: Sequence[str], photos: Path | None, out_path: Path, device: str = "cpu",
              extra_judges: Sequence[str] = (), note: str = "", parts: Sequence[str] | None = None) -> dict:
    from ..models import WeightsError, load_model
    from . import load_any_generator
    from .nets import Encoder
    from .ppgn import prior_encoder

    G, meta = load_any_generator(generator, device=device)
    enc_name = meta.get("encoder", {}).get("encoder", "efficientnet_lite0")
    loaded = {}
    for name in list(makers) + list(extra_judges) + [p for m in makers for p in PREFERENCE.get(m, ())[:2]]:
        if name in loaded:
            continue
        try:
            loaded[name] = load_model(name, device=device)
        except (WeightsError, Exception):  # noqa: BLE001 — a missing judge is skipped, said in the table
            continue
    result = {"format": FORMAT, "generator": str(generator.name), "generator_sha256": sha256_file(generator),
              "classes": [int(c) for c in classes], "steps": steps,
              "ppgn": ppgn.to_dict() if ppgn is not None else None, "baselines": list(baselines),
              "threads": torch.get_num_threads(), "device": device, "note": note, "complete": False,
              "pairs": [], "summary": {}, "takeaway": ""}

    def save() -> None:
        _finish(result)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path, json.dumps(result, indent=1) + "\n")

    # {class: photo} of the 1,000-class sample (classes.tsv); files that are missing are left out
    index = {r.index: r.path for r in imagenet.sample_1k(photos)} if photos and str(photos) else {}
    have = [c for c in classes if c in index]
    # photos and reconstructions: judged by a network other than the encoder (which made the codes)
    if have and enc_name in loaded:
        jname, clean = pick_judge(enc_name, list(loaded), exclude=(enc_name,))
        if jname:
            judge = loaded[jname]
            enc_model = loaded[enc_name]
            t = time.perf_counter()
            loaded_photos = load_photo_dict(index, have, enc_model)
            have = list(loaded_photos)
            x = torch.stack(list(loaded_photos.values()))
            with torch.inference_mode():
                h = Encoder(enc_model, meta.get("encoder", {}).get("encoder_layer", "pre_logits"))(x)
                rec = G(h).cpu()
            rows = {"photo": {}, "reconstruction": {}}
            v = judge_verdicts(judge, torch.stack([load_photo_dict(index, [c], judge)[c] for c in have]), have, resized=True)
            rows["photo"] = {**_row(v), "ranks": v["rank"].tolist()}
            v = judge_verdicts(judge, rec, have)
            rows["reconstruction"] = {**_row(v), "ranks": v["rank"].tolist(), "seconds": round(time.perf_counter() - t, 1)}
            mean_img = rec.mean(0, keepdim=True).expand_as(rec)
            v = judge_verdicts(judge, mean_img, have)
            rows["mean-reconstruction"] = {**_row(v), "ranks": v["rank"].tolist()}
            result["pairs"].append({"maker": enc_name, "judge": jname, "clean": clean, "what": "photos",
                                    "classes": [int(c) for c in have], "rows": rows})
            save()
    for mname in makers:
        if mname not in loaded:
            result.setdefault("skipped", []).append(f"{mname}: no weights")
            continue
        jname, clean = pick_judge(mname, list(loaded), exclude=(enc_name,))
        if jname is None:
            result.setdefault("skipped", []).append(f"{mname}: no other model to judge")
            continue
        maker, judge = loaded[mname], loaded[jname]
        enc, _why = prior_encoder(meta, maker, list(loaded.values()), device) if ppgn and ppgn.eps1 else (None, None)
        pair = {"maker": mname, "judge": jname, "clean": clean, "what": "visualisations",
                "classes": [int(c) for c in classes], "rows": {}}
        result["pairs"].append(pair)

        def on_part(name, row, pair=pair):
            pair["rows"][name] = row
            save()
            print(f"{pair['maker']} → {pair['judge']}: {name}: top-1 {row['top1']:.3f}, top-5 {row['top5']:.3f} "
                  f"({row['seconds']} s)", flush=True)
        evaluate_maker(G, meta, maker, judge, classes, steps, ppgn, baselines, encoder=enc, on_part=on_part, parts=parts)
    result["complete"] = True
    save()
    return result


def merge(paths: Sequence[Path], out_path: Path) -> dict:
    """Join judge tables of the same generator and budget (e.g. one process per maker) into one."""
    tables = [json.loads(Path(p).read_text()) for p in paths]
    first = tables[0]
    for t in tables[1:]:
        for k in ("generator_sha256", "classes", "steps", "ppgn", "baselines"):
            if t.get(k) != first.get(k):
                raise ValueError(f"cannot merge: {k} differs between {paths[0]} and another table")
    result = {**first, "pairs": [p for t in tables for p in t["pairs"]],
              "complete": all(t.get("complete") for t in tables)}
    _finish(result)
    atomic_write_text(out_path, json.dumps(result, indent=1) + "\n")
    return result


def markdown_table(result: dict) -> str:
    """The judge table as Markdown (for the model card)."""
    f = (lambda v, pct=True: "–" if v is None else (f"{100 * v:.0f} %" if pct else f"{v:.3f}"))
    lines = ["| pictures | top-1 (judge) | top-5 (judge) | mean p of the class (judge) | mean p on the maker | n |",
             "|---|---|---|---|---|---|"]
    for key, title in ROWS:
        r = result["summary"].get(key)
        if r:
            lines.append(f"| {title} | {f(r['top1'])} | {f(r['top5'])} | {f(r.get('prob_mean'), False)} | "
                         f"{f(r.get('maker_prob_mean'), False)} | {r['n']} |")
    pairs = "; ".join(f"{p['maker']} → {p['judge']} ({', '.join(p['rows'])})" for p in result["pairs"])
    return "\n".join(lines) + f"\n\nMade on → judged by: {pairs}.\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m generator.deepsim.judge_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    ap.add_argument("--makers", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"])
    ap.add_argument("--classes", type=int, default=50, help="number of classes spread over ImageNet")
    ap.add_argument("--steps", type=int, default=100, help="DGN-AM and pixel-space steps (same budget)")
    ap.add_argument("--ppgn-steps", type=int, default=600, help="0: no PPGN")
    ap.add_argument("--ppgn-samples", type=int, default=5)
    ap.add_argument("--baselines", nargs="*", default=["plain", "fourier"])
    ap.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="1000-class photo sample; '' to skip photos")
    ap.add_argument("--out", type=Path, default=None, help="default: <generator>.judge.json beside the generator")
    ap.add_argument("--note", default="", help="shown with the table (e.g. why the budget was shortened)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parts", nargs="+", default=None,
                    help="only these of dgn_am, ppgn, pixel-<method>, random (default: all)")
    ap.add_argument("--table", type=Path, default=None, help="print this judge table as Markdown and stop")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="join these judge tables into --out and stop")
    a = ap.parse_args(argv)
    if a.table:
        print(markdown_table(json.loads(a.table.read_text())))
        return
    if a.merge:
        r = merge(a.merge, a.out or a.generator.with_suffix(".judge.json"))
        print(r["takeaway"])
        return
    torch.set_num_threads(a.threads)
    ppgn = None
    if a.ppgn_steps > 0:
        every = max(1, a.ppgn_steps // max(1, a.ppgn_samples))
        ppgn = PPGNSettings(steps=every * a.ppgn_samples, cycle=every, save_every=every, burn_in=every)
    out = a.out or a.generator.with_suffix(".judge.json")
    r = run_judge(a.generator, a.makers, spread_classes(a.classes), a.steps, ppgn, a.baselines, Path(a.photos) if a.photos else None, out,
                  device=a.device, note=a.note, parts=a.parts)
    print(json.dumps(r["summary"], indent=1))
    print(r["takeaway"])


if __name__ == "__main__":
    main()
