"""Measure DGN-AM, PPGN and the pixel-space baselines on EfficientNet-Lite0.

``python -m generator.deepsim.evaluate [--generator data/weights/deepsim_lite0_64.pt] [--out FILE.json]``

Claims checked (numbers printed and saved as JSON for the site's DGN-AM page):

1. For ``--n-classes`` (20) classes spread evenly over the 1000 ImageNet classes, the DGN-AM
   image reaches softmax probability ≥ 0.9 of its class on Lite0 (224-px input; the generator
   output is resized to 224). Target: ≥ 18 of 20.
2. PPGN chains for the same classes: fraction of saved samples with p ≥ 0.9, and within-chain
   diversity = mean pairwise cosine distance between the samples' Lite0 penultimate features
   (the 1280-d pooled code), compared with the same distance among real held-out photos of one
   class (imagenette val) and among DGN-AM images of *different* classes. ``--ppgn-constant-lrs``
   adds runs of the same chains with constant step sizes (the authors' schedule) for comparison.
3. Hidden units (a channel of a conv stage, read at the spatial centre): the unit's activation
   on its DGN-AM image vs. the 99th percentile of the same unit's centre activation over
   the photos of imagenette val (all of them by default; ``--val-images N`` for a subset).
4. Baselines: pixel-space AM (plain, regularised, Fourier) on the same classes, same number of steps.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..methods.objectives import Target, UnitObjective, pick_units, spread_classes
from ..methods.pixel_am import PixelAMSettings, pixel_am
from ..models import load_model
from ..figure_files import save_image
from ..render import grid, to_pil
from ..util import atomic_write_text, sha256_file
from . import load_generator
from .dgn_am import DGNAMSettings, dgn_am, fit_to_model
from .nets import Encoder
from .ppgn import PPGNSettings, chain_diversity, ppgn_sample
from .train import list_images, load_crop, pick_subset

DEFAULT_GENERATOR = Path(__file__).resolve().parents[2] / "data" / "weights" / "deepsim_lite0_64.pt"


@torch.no_grad()
def unit_percentiles(loaded, targets: list[Target], paths: list[Path], q: float = 0.99, batch: int = 32) -> torch.Tensor:
    obj = UnitObjective(loaded.net, targets)
    vals = []
    s = loaded.spec
    for i in range(0, len(paths), batch):
        x = torch.stack([load_crop(p, s.resize_size, s.input_size) for p in paths[i:i + batch]])
        vals.append(obj.all_units(x))
    v = torch.cat(vals)  # N×U
    return torch.quantile(v, q, dim=0), v.max(0).values


def _save_grid(folder, name: str, imgs: torch.Tensor, ncols: int = 10) -> None:
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_image(grid([to_pil(x.float()) for x in imgs], ncols, 96), Path(folder) / name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m generator.deepsim.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--generator", default=str(DEFAULT_GENERATOR))
    p.add_argument("--out", default=None, help="JSON file (default: next to the generator, <name>.eval.json)")
    p.add_argument("--n-classes", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr-start", type=float, default=DGNAMSettings.lr_start)
    p.add_argument("--optimizer", default=DGNAMSettings.optimizer, choices=["adam", "sgd"])
    d = PPGNSettings()
    p.add_argument("--ppgn-steps", type=int, default=d.steps)
    p.add_argument("--ppgn-eps1", type=float, default=d.eps1)
    p.add_argument("--ppgn-eps2", type=float, default=d.eps2)
    p.add_argument("--ppgn-eps3", type=float, default=d.eps3)
    p.add_argument("--ppgn-update", default=d.update, choices=["normalized", "raw"])
    p.add_argument("--ppgn-lr", type=float, default=d.lr)
    p.add_argument("--ppgn-lr-end", type=lambda v: None if v.lower() == "none" else float(v), default=d.lr_end,
                   help="end of the step-size schedule ('none': constant lr)")
    p.add_argument("--ppgn-cycle", type=int, default=d.cycle, help="cyclical schedule period (0: linear/constant)")
    p.add_argument("--ppgn-reset-every", type=int, default=d.reset_every)
    p.add_argument("--ppgn-normalize", action="store_true")
    p.add_argument("--ppgn-precondition", default=d.precondition, choices=["none", "rms"])
    p.add_argument("--ppgn-from", default="random", choices=["dgn", "random"],
                   help="start chains from random codes (default) or the DGN-AM codes")
    p.add_argument("--ppgn-save-every", type=int, default=d.save_every)
    p.add_argument("--ppgn-constant-lrs", default="",
                   help="comma list: also run the chains with these constant step sizes, for comparison ('' = none)")
    p.add_argument("--ppgn-burn-in", type=int, default=d.burn_in)
    p.add_argument("--unit-layers", default="stage3,stage4,stage5,stage6")
    p.add_argument("--units-per-layer", type=int, default=2)
    p.add_argument("--val", default=str(DEFAULT_GENERATOR.parents[3] / "shared" / "imagenette" / "val"),
                   help="labelled photos for the unit percentiles and the real-photo diversity (default: "
                        "../shared/imagenette/val beside the checkout)")
    p.add_argument("--val-images", type=int, default=0, help="photos of --val for the unit percentiles (0: all)")
    p.add_argument("--baselines", default="plain,regularized,fourier", help="comma list, or '' to skip")
    p.add_argument("--baselines-from", default=None, help="take the baseline results from this earlier JSON "
                   "(they do not depend on the generator)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: dgn,ppgn,units")
    p.add_argument("--figures", default=None, help="also save image grids (DGN-AM, PPGN chains, units) here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    loaded = load_model("efficientnet_lite0")
    net = loaded.net
    G, meta = load_generator(a.generator)
    stats = meta["code_stats"]
    enc = Encoder(loaded, meta.get("encoder", {}).get("encoder_layer", "pre_logits"))
    labels = loaded.labels
    res: dict = {"generator": str(a.generator), "generator_sha256": sha256_file(a.generator),
                 "generator_metrics": meta.get("metrics"),
                 "model": loaded.cache_id, "input_size": loaded.spec.input_size, "threads": a.threads}
    classes = spread_classes(a.n_classes)
    targets = [Target(c, label=labels[c]) for c in classes]
    t0 = time.time()

    def probs_of(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            lg = net(fit_to_model(img, 224))
        pr = lg.softmax(1)
        return pr, lg

    dgn_codes = dgn_h = None
    if "dgn" not in skip:
        s = DGNAMSettings(steps=a.steps, lr_start=a.lr_start, seed=a.seed, optimizer=a.optimizer)
        r = dgn_am(G, net, targets, stats, s, progress_bar=True)
        pr, _ = probs_of(r.images)
        p_t = pr[torch.arange(len(classes)), torch.tensor(classes)]
        top1 = pr.argmax(1)
        dgn_h = r.codes
        _save_grid(a.figures, "dgn_am.png", r.images)
        with torch.no_grad():
            dgn_codes = enc(r.images)
        res["dgn_am"] = {"settings": r.settings, "classes": classes, "labels": [labels[c] for c in classes],
                         "prob": p_t.tolist(), "top1_is_target": (top1 == torch.tensor(classes)).tolist(),
                         "n_prob_ge_0.9": int((p_t >= 0.9).sum()), "final_logit": r.final.tolist(),
                         "trajectory_every_10": r.trajectory[:, ::10].tolist(), "seconds": time.time() - t0}
        print(f"DGN-AM: {res['dgn_am']['n_prob_ge_0.9']}/{len(classes)} classes with p>=0.9; "
              f"median p={p_t.median():.3f}; min p={p_t.min():.3f}", flush=True)
        cd = chain_diversity(dgn_codes.unsqueeze(0))
        res["dgn_am"]["between_class_feature_distance"] = float(cd[0])

    # reference diversity: real photos of one class
    val_classes = [] if {"dgn", "ppgn"} <= skip else None
    val_classes = sorted(d for d in Path(a.val).iterdir() if d.is_dir()) if val_classes is None else []
    ref = []
    with torch.no_grad():
        for d in val_classes:
            ps = pick_subset(list_images(d), 8, a.seed)
            x = torch.stack([load_crop(q, 256, 224) for q in ps])
            ref.append(chain_diversity(enc(x).unsqueeze(0))[0])
    if ref:
        res["real_same_class_feature_distance"] = float(torch.stack(ref).mean())
        print(f"reference: mean pairwise cosine distance of Lite0 features among real photos of one class "
              f"= {res['real_same_class_feature_distance']:.3f}", flush=True)

    def run_ppgn(s: PPGNSettings, h0, figure: str | None) -> dict:
        t1 = time.time()
        r = ppgn_sample(G, enc, net, targets, stats, s, progress_bar=True, h0=h0)
        b, k = r.samples.shape[:2]
        flat = r.samples.flatten(0, 1)
        pr, _ = probs_of(flat)
        p_t = pr.view(b, k, -1)[torch.arange(b), :, torch.tensor(classes)]  # B×K
        with torch.no_grad():
            feats = enc(flat).view(b, k, -1)
        div = chain_diversity(feats)
        ok = p_t >= 0.9
        div_ok = [float(chain_diversity(feats[i][ok[i]].unsqueeze(0))[0]) for i in range(b) if ok[i].sum() >= 2]
        if figure:
            _save_grid(a.figures, figure, flat, ncols=k)
        out = {"settings": r.settings, "start": "dgn_am codes" if h0 is not None else "random codes",
               "sample_steps": r.sample_steps, "prob": p_t.tolist(),
               "frac_samples_prob_ge_0.9": float(ok.float().mean()),
               "n_chains_all_samples_ge_0.9": int(ok.all(1).sum()),
               "n_chains_last_sample_ge_0.9": int(ok[:, -1].sum()),
               "within_chain_feature_distance": div.tolist(),
               "within_chain_feature_distance_mean": float(div.mean()),
               "within_chain_feature_distance_min": float(div.min()),
               "confident_samples_feature_distance_mean": sum(div_ok) / len(div_ok) if div_ok else None,
               "n_chains_two_confident_samples": len(div_ok),
               "within_chain_code_distance_mean": float(chain_diversity(r.codes).mean()),
               "seconds": time.time() - t1}
        print(f"PPGN: {out['n_chains_last_sample_ge_0.9']}/{b} chains' last sample p>=0.9; "
              f"{out['n_chains_all_samples_ge_0.9']}/{b} chains with every saved sample p>=0.9; "
              f"{100 * out['frac_samples_prob_ge_0.9']:.0f}% of samples; within-chain feature distance "
              f"{div.mean():.3f} (min {div.min():.3f}); among samples with p>=0.9: "
              f"{(sum(div_ok) / len(div_ok)) if div_ok else float('nan'):.3f} ({len(div_ok)} chains)", flush=True)
        return out

    if "ppgn" not in skip:
        s = PPGNSettings(steps=a.ppgn_steps, eps1=a.ppgn_eps1, eps2=a.ppgn_eps2, eps3=a.ppgn_eps3, lr=a.ppgn_lr,
                         lr_end=a.ppgn_lr_end, cycle=a.ppgn_cycle, update=a.ppgn_update,
                         reset_every=a.ppgn_reset_every, normalize_grad=a.ppgn_normalize,
                         save_every=a.ppgn_save_every, burn_in=a.ppgn_burn_in, seed=a.seed,
                         precondition=a.ppgn_precondition)
        h0 = dgn_h if (a.ppgn_from == "dgn" and dgn_h is not None) else None
        res["ppgn"] = run_ppgn(s, h0, "ppgn_chains.png")
        # the same chains with a constant step (the authors' scripts), for comparison
        for lr in filter(None, a.ppgn_constant_lrs.split(",")):
            v = PPGNSettings(**{**s.to_dict(), "lr": float(lr), "lr_end": None, "cycle": 0})
            print(f"PPGN variant: constant step {lr}", flush=True)
            out = run_ppgn(v, h0, f"ppgn_constant_{lr}.png")
            out["description"] = f"constant step {lr} (the authors' schedule), otherwise the same"
            res.setdefault("ppgn_variants", {})[f"constant_{lr}"] = out

    if "units" not in skip:
        t2 = time.time()
        units = pick_units(loaded, a.unit_layers.split(","), a.units_per_layer, a.seed)
        s = DGNAMSettings(steps=a.steps, lr_start=a.lr_start, seed=a.seed, optimizer=a.optimizer)
        r = dgn_am(G, net, units, stats, s, progress_bar=True)
        paths = pick_subset(list_images(a.val), a.val_images, a.seed)
        p99, vmax = unit_percentiles(loaded, units, paths)
        _save_grid(a.figures, "units.png", r.images)
        res["units"] = {"units": [u.label for u in units], "dgn_am_activation": r.final.tolist(),
                        "val_p99": p99.tolist(), "val_max": vmax.tolist(), "n_val_images": len(paths),
                        "n_exceed_p99": int((r.final > p99).sum()), "n_exceed_max": int((r.final > vmax).sum()),
                        "seconds": time.time() - t2}
        print(f"hidden units: {res['units']['n_exceed_p99']}/{len(units)} exceed their val 99th percentile "
              f"({len(paths)} val photos); {res['units']['n_exceed_max']}/{len(units)} exceed the val maximum", flush=True)
        for u, v, q in zip(units, r.final.tolist(), p99.tolist()):
            print(f"  {u.label:12s} DGN-AM {v:8.3f}  val p99 {q:8.3f}", flush=True)

    if a.baselines_from:
        res["baselines"] = json.loads(Path(a.baselines_from).read_text())["baselines"]
    elif a.baselines:
        res["baselines"] = {}
        for m in a.baselines.split(","):
            t3 = time.time()
            r = pixel_am(net, targets, PixelAMSettings(method=m, steps=a.steps, seed=a.seed))
            pr, _ = probs_of(r["images"])
            p_t = pr[torch.arange(len(classes)), torch.tensor(classes)]
            res["baselines"][m] = {"prob": p_t.tolist(), "n_prob_ge_0.9": int((p_t >= 0.9).sum()),
                                   "settings": r["settings"], "seconds": time.time() - t3}
            print(f"pixel AM {m}: {int((p_t >= 0.9).sum())}/{len(classes)} classes with p>=0.9", flush=True)

    out = Path(a.out) if a.out else Path(a.generator).with_suffix(".eval.json")
    atomic_write_text(out, json.dumps(res, indent=1))
    print(f"wrote {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
