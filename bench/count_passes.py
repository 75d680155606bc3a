"""How much network work a build does, and what it would cost at the network's own speed.

``python bench/count_passes.py count [build options]`` runs ``python -m generator build`` with
every image that enters a registry classifier counted (by stage, by findings check, by input
size — which stands for the model, so the models counted together need distinct input sizes, as
the default build's three have — and whether gradients were recorded). The counts are written to ``--counts`` (default
``.cache/pass_counts.json``) every minute and at the end, so a build stopped early still
leaves the counts of what it did. Counts do not depend on the machine's load. The one-image passes
that inspect a network (folding batch norm, layer shapes, module order: ``generator.plan.SETUP``) are
counted under the check ``setup``; shape-only passes on the meta device are not counted. The build's
own plan (``generator/plan.py``, printed before the first stage) predicts these counts per stage.

``python bench/count_passes.py floor`` measures, per model of the counts file, the time of one
image's forward pass (``torch.inference_mode``, batch 16) and of one forward + input-gradient
pass, on the network the methods use (batch norm folded, channels-last on the CPU), and prints
per stage and check: images through the network, and the *floor* — the seconds the build
would take if it did nothing but those passes at that speed. Comparing the floor with the
build's own seconds shows how much is overhead (and so could be removed); a floor above a
time goal shows the goal cannot be met with that much work on that machine. Not counted: the
DeePSim generator's own passes (DGN-AM, PPGN) and anything that does not go through a
registry classifier.

Example (a cold build of the default three models into folders of their own)::

    python bench/count_passes.py count --cache /tmp/cold-cache --out /tmp/gen
    python bench/count_passes.py floor --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import models, plan, util  # noqa: E402

CHECKS = ("trained_maps", "cascade_results", "faithfulness_results", "invariance_results", "fragility_results",
          "unit_results", "accuracy_results")


def count(build_args: list[str], out: Path) -> int:
    """Run ``python -m generator build`` with every image into a classifier counted
    (:func:`generator.plan.count_images`, the counter the plan's tests use), dumped every minute."""
    with plan.count_images(checks=CHECKS) as counts:
        def dump():
            out.parent.mkdir(parents=True, exist_ok=True)
            rows = [[*k, v] for k, v in sorted(counts.items())]
            util.atomic_write_bytes(out, json.dumps(rows, indent=0).encode())

        def every_minute():
            while True:
                time.sleep(60)
                dump()

        threading.Thread(target=every_minute, daemon=True).start()
        from generator.cli import main

        try:
            return main(["build", *build_args])
        finally:
            dump()
            print(f"counts written to {out}", file=sys.stderr)


def per_image_seconds(name: str, batch: int = 16, reps: int = 3) -> tuple[float, float]:
    """(forward, forward + input gradient) seconds per image of registry model ``name`` (random
    weights: the speed does not depend on them), on the network the methods use."""
    from generator.methods.base import prepared

    lm = models.load_model(name, allow_random=True)
    s = lm.spec.input_size
    net = prepared(lm.net, torch.rand(1, 3, s, s)).net
    x = torch.rand(batch, 3, s, s)
    fwd, grad = [], []
    for _ in range(reps + 1):  # the first run warms up
        with torch.inference_mode():
            t0 = time.perf_counter()
            net(x)
            fwd.append((time.perf_counter() - t0) / batch)
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        torch.autograd.grad(net(xi)[:, 0].sum(), xi)
        grad.append((time.perf_counter() - t0) / batch)
    return statistics.median(fwd[1:]), statistics.median(grad[1:])


def floor(path: Path, threads: int, names: list[str]) -> None:
    torch.set_num_threads(threads)
    rows = json.loads(path.read_text())
    sizes = {models.get_spec(n).input_size: n for n in reversed(names)}  # counts are keyed by input size
    speed = {}
    for size in sorted({r[2] for r in rows}):
        name = sizes.get(size)
        if name is None:
            continue
        speed[size] = per_image_seconds(name)
        print(f"{name} ({size} px): forward {1e3 * speed[size][0]:.1f} ms/image, forward + input gradient "
              f"{1e3 * speed[size][1]:.1f} ms/image ({threads} thread(s), batch 16)")
    print(f"\n{'stage':<18} {'check':<22} {'model':<20} {'forward':>9} {'with grad':>10} {'floor s':>9}")
    total = 0.0
    for stage, check, size, grad, n in rows:
        if size not in speed:
            continue
        sec = n * speed[size][1 if grad else 0]
        total += sec
        print(f"{stage:<18} {check:<22} {sizes[size]:<20} {0 if grad else n:>9} {n if grad else 0:>10} {sec:>9.1f}")
    print(f"\nfloor of the counted work: {total:.0f} s ({total / 60:.1f} min)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count", help="run a build, counting the images through each classifier")
    c.add_argument("--counts", type=Path, default=ROOT / ".cache" / "pass_counts.json")
    f = sub.add_parser("floor", help="the seconds of the counted work at each model's measured speed")
    f.add_argument("--counts", type=Path, default=ROOT / ".cache" / "pass_counts.json")
    f.add_argument("--threads", type=int, default=torch.get_num_threads())
    f.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2",
                   help="the counted models, comma-separated: counts are keyed by input size, so a size "
                        "stands for the first model listed with it (default: the default build's three)")
    args, rest = p.parse_known_args(argv)
    if args.cmd == "count":
        return count(rest, args.counts)
    if rest:
        p.error(f"unknown arguments: {' '.join(rest)}")
    floor(args.counts, args.threads, args.models.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
