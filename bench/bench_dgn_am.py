"""The dgn_am stage's model work, as before and as now, alternated in one run (ratios, not seconds).

``old``: DGN-AM classes and hidden units as two optimisations, default (NCHW) weights;
``new``: one batched optimisation for classes + units, channels-last weights (what the stage
does now). Both run the PPGN chains (batched across classes) and the pixel baselines with the
same, shortened budgets (``--steps`` / ``--ppgn-steps``); the ratio new/old of the summed time is
printed per model and repeat. Example (one thread, a few minutes)::

    OMP_NUM_THREADS=1 python bench/bench_dgn_am.py --models efficientnet_lite0 --steps 10 --ppgn-steps 30
"""
from __future__ import annotations

import argparse
import time

import torch

from generator.deepsim import load_any_generator
from generator.deepsim.dgn_am import DGNAMSettings, channels_last, dgn_am
from generator.deepsim.ppgn import PPGNSettings, ppgn_sample, prior_encoder
from generator.methods.objectives import Target, pick_units, spread_classes
from generator.methods.pixel_am import PixelAMSettings, pixel_am
from generator.models import load_model


def run(G, meta, model, enc, steps, ppgn_steps, new: bool) -> float:
    st, size = meta["code_stats"], model.spec.input_size
    classes = [Target(c) for c in spread_classes(4)]
    units = pick_units(model, [n for n in model.spec.default_layers if model.spec.layer(n).kind == "conv"], 1, 0)
    d = DGNAMSettings(steps=steps)
    p = PPGNSettings(steps=ppgn_steps, cycle=max(1, ppgn_steps // 2), save_every=max(1, ppgn_steps // 2),
                     burn_in=max(1, ppgn_steps // 2))
    t0 = time.perf_counter()
    if new:
        with channels_last(model.net):
            dgn_am(G, model.net, classes + units, st, d, input_size=size)
            ppgn_sample(G, enc, model.net, classes, st, p, input_size=size)
            for m in ("plain", "fourier"):
                pixel_am(model.net, classes, PixelAMSettings(method=m, steps=steps, size=size))
    else:
        dgn_am(G, model.net, classes, st, d, input_size=size)
        if units:
            dgn_am(G, model.net, units, st, d, input_size=size)
        ppgn_sample(G, enc, model.net, classes, st, p, input_size=size)
        for m in ("plain", "fourier"):
            pixel_am(model.net, classes, PixelAMSettings(method=m, steps=steps, size=size))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--generator", default="data/weights/deepsim_lite0_64.pt")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ppgn-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    G, meta = load_any_generator(a.generator)
    for name in a.models:
        model = load_model(name)
        enc, _ = prior_encoder(meta, model)
        run(G, meta, model, enc, 2, 2, True)  # warm-up
        for r in range(a.repeats):
            old = run(G, meta, model, enc, a.steps, a.ppgn_steps, False)
            new = run(G, meta, model, enc, a.steps, a.ppgn_steps, True)
            print(f"{name} repeat {r}: old {old:.1f} s, new {new:.1f} s, new/old {new / old:.2f}", flush=True)


if __name__ == "__main__":
    main()
