"""Throughput of the attribution methods: batched vs a straightforward per-image loop.

For every model × method it prints images/second for

* ``bs1``  — one image per ``attribute`` call (perturbed copies still batched),
* ``bs16`` — 16 images per call (``--batch`` to change),
* ``ref``  — the reference: a plain Python loop, one image per call and one
  forward/backward per perturbed copy (``batch_size=1``),

and ``bs16/ref``, the speed-up of batching, all measured in the same run on the same
inputs. Results are also checked to agree (max relative difference printed).

The default run is short (a few minutes on one CPU core): EfficientNet-Lite0, every
registered method with its light settings (``findings_params``, what the findings stage
uses), 224 px; ``--full`` uses the galleries' settings (``gallery_params``). Examples::

    python bench/bench_methods.py
    python bench/bench_methods.py --models efficientnet_lite0 resnet50 --methods saliency occlusion
    python bench/bench_methods.py --device cuda --images 64 --batch 64

Models without local weights are benchmarked with random weights (speed does not
depend on the weights); the table says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from generator.methods.attribution import ATTRIBUTION_METHODS, make  # noqa: E402
from generator.models import WeightsError, load_model  # noqa: E402



def method_params(name: str, full: bool) -> dict:
    """The method's gallery settings with ``full``, else its (lighter) findings settings."""
    cls = ATTRIBUTION_METHODS[name]
    return dict(cls.gallery_params if full else cls.findings_params)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_one(lm, name: str, x: torch.Tensor, batch: int, n_small: int, params: dict, copy_batch: int):
    device = x.device
    method = make(name, lm, batch_size=copy_batch, **params)
    # the classes are fixed once so all variants compute the same thing
    with torch.no_grad():
        t = lm.net(x).argmax(1)
    # warm-up at both shapes (allocator, oneDNN/cuDNN kernel choice)
    method.attribute(x[:1], t[:1])
    method.attribute(x[:batch], t[:batch])

    out_b: list[torch.Tensor] = []
    secs_b = timed(lambda: out_b.extend(method.attribute(x[s : s + batch], t[s : s + batch]) for s in range(0, len(x), batch)), device)
    secs_1 = timed(lambda: [method.attribute(x[i : i + 1], t[i : i + 1]) for i in range(n_small)], device)
    ref = make(name, lm, batch_size=1, **params)
    out_r: list[torch.Tensor] = []
    secs_r = timed(lambda: out_r.extend(ref.attribute(x[i : i + 1], t[i : i + 1]) for i in range(n_small)), device)
    a = torch.cat(out_b)[:n_small]
    r = torch.cat(out_r)
    diff = float((a - r).abs().max() / r.abs().max().clamp(min=1e-30))
    return len(x) / secs_b, n_small / secs_1, n_small / secs_r, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--methods", nargs="+", default=list(ATTRIBUTION_METHODS), choices=list(ATTRIBUTION_METHODS))
    ap.add_argument("--images", type=int, default=16, help="images for the batched measurement")
    ap.add_argument("--small", type=int, default=4, help="images for the batch-1 and reference loops")
    ap.add_argument("--batch", type=int, default=16, help="images per call in the batched measurement")
    ap.add_argument("--copy-batch", type=int, default=32, help="perturbed copies per forward pass")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    ap.add_argument("--full", action="store_true", help="the galleries' settings instead of the findings' lighter ones")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x_cpu = torch.rand(args.images, 3, args.size, args.size, generator=gen)
    print(f"device={device} threads={args.threads} size={args.size} images={args.images} "
          f"batch={args.batch} small={min(args.small, args.images)} torch={torch.__version__}")
    header = f"{'model':<20} {'method':<22} {'bs1 img/s':>10} {'bs16 img/s':>11} {'ref img/s':>10} {'bs16/ref':>9} {'maxdiff':>9}"
    print(header)
    print("-" * len(header))
    any_random = False
    for model_name in args.models:
        try:
            lm = load_model(model_name, device=device)
            tag = model_name
        except WeightsError:
            lm = load_model(model_name, allow_random=True, device=device)
            tag = model_name + "*"
            any_random = True
        x = x_cpu.to(device)
        for name in args.methods:
            params = method_params(name, args.full)
            ips_b, ips_1, ips_r, diff = bench_one(lm, name, x, args.batch, min(args.small, args.images), params, args.copy_batch)
            print(f"{tag:<20} {name:<22} {ips_1:>10.2f} {ips_b:>11.2f} {ips_r:>10.2f} {ips_b / ips_r:>8.2f}x {diff:>9.1e}", flush=True)
    if any_random:
        print("* random weights (throughput does not depend on the weights)")
    settings = {n: method_params(n, args.full) for n in args.methods}
    print(("gallery" if args.full else "findings (light)") + " settings: "
          + ", ".join(f"{n} {p}" for n, p in settings.items() if p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
