"""Throughput of the attribution methods against Captum, and of batching.

Default (``make bench``): every method Captum also has — saliency, guided backprop,
deconvnet, Grad-CAM, SmoothGrad, Integrated Gradients, occlusion — run by this project
and by Captum on the *same* model object, photos (``data/images``), classes (each
photo's top-1), settings, device and threads. Per model and method it prints

* ``agreement`` — relative error ``‖ours − Captum‖ / ‖Captum‖``, or ``Captum differs: why``
  where Captum is known to compute something else (its guided backprop and deconvnet only
  hook ``nn.ReLU`` modules, so on a network with ReLU6 or functional ReLUs they fall back
  to the plain gradient there; its SmoothGrad draws its own noise, so the yardstick is
  ours with another seed),
* ``ours/Captum`` — the ratio of images/s, the median over ``--reps`` runs in which the
  contestants alternate (each run starts with another one), so a busy machine slows all alike.
* ``plain/Captum`` — the same ratio for Captum's own network work run bare: the images Captum
  sends through the network in one call are counted (``Captum work``: ``N∇`` images with an input
  gradient, ``MF`` forward only), and ``plain`` sends as many through the same network in
  batches of ``--batch``, forward + input gradient or forward only (Grad-CAM's short backward
  from the logits to its layer is left out), with no hooks and no library around it. It is
  the most any implementation of Captum's passes on the network *as loaded* can reach; ours
  exceeds it only by doing less arithmetic (batch norm folded, occlusion's block-wise
  recomputation).
* ``ours/plain′`` — ours against the same bare work on our prepared copy of the network
  (batch norm folded, channels-last; the network itself where there is nothing to fold):
  about 1.0 when ours adds nothing to the passes it shares with Captum, above 1 where ours
  does fewer passes.

One warm-up run of each contestant precedes the timing (it also builds our prepared copy of
the network, once per model). SmoothGrad's shared noisy-gradient cache is emptied before
every run of ours.

Captum is an optional extra (``pip install -e .[bench]``; ``make`` installs it); the
generator never imports it. Examples::

    python bench/bench_methods.py                       # Lite0 + AlexNet, findings settings
    python bench/bench_methods.py --full --reps 5       # the galleries' settings
    python bench/bench_methods.py --models tiny --size 64 --images 2 --reps 1   # a smoke run
    python bench/bench_methods.py --batching            # batched vs a per-image loop (below)

``--batching`` prints, for every model × method, images/second for ``bs1`` (one image
per call, perturbed copies still batched), ``bs16`` (16 per call) and ``ref`` (a plain
loop, one image per call and one forward/backward per copy), and ``bs16/ref``.

Models without local weights are benchmarked with random weights (speed does not
depend on the weights); the table says so.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from generator.methods.attribution import ATTRIBUTION_METHODS, make  # noqa: E402
from generator.methods.base import prepared  # noqa: E402
from generator.models import WeightsError, load_model  # noqa: E402



def method_params(name: str, full: bool) -> dict:
    """The method's gallery settings with ``full``, else its (lighter) findings settings."""
    cls = ATTRIBUTION_METHODS[name]
    p = dict(cls.gallery_params if full else cls.findings_params)
    if "max_steps" in p:  # Integrated Gradients at its starting steps: Captum has no per-photo refinement
        p["max_steps"] = 0
    return p


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


def batching_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batching", action="store_true")
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


# ------------------------------------------------------------------------------------
# against Captum

CAPTUM_METHODS = ["saliency", "guided_backprop", "deconvnet", "gradcam", "smoothgrad", "integrated_gradients", "occlusion"]


class TinyNet(torch.nn.Module):
    """A small random conv net (conv, batch norm, ReLU or ReLU6 modules, max-pooling) for smoke runs."""

    def __init__(self, act: type = torch.nn.ReLU) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), act(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), act(),
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def load_bench_model(name: str, size: int, device: torch.device):
    """(net, Grad-CAM layer path, preprocess, tag) for a registry model, ``tiny`` or ``tiny6``
    (the same with ReLU6)."""
    from generator.models import Preprocess

    if name in ("tiny", "tiny6"):
        torch.manual_seed(0)
        net = TinyNet(torch.nn.ReLU6 if name == "tiny6" else torch.nn.ReLU).eval().to(device)
        for p in net.parameters():
            p.requires_grad_(False)
        return net, "features.5", Preprocess(input_size=size, resize_size=size), name + "*"
    try:
        lm, tag = load_model(name, device=device), name
    except WeightsError:
        lm, tag = load_model(name, allow_random=True, device=device), name + "*"
    return lm, lm.module_path(lm.spec.gradcam_layer), lm.spec.preprocess, tag


def photos(preprocess, n: int, device: torch.device) -> torch.Tensor:
    from generator.images import load_rgb

    folder = Path(__file__).resolve().parent.parent / "data" / "images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return preprocess([load_rgb(f)[0] for f in files]).to(device)


def rectifier_counts(net: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(rectifier calls our rules intercept, calls of nn.ReLU modules Captum hooks)."""
    from generator.methods.relu_rules import relu_rule

    n_modules = [0]
    handles = [m.register_forward_hook(lambda *_: n_modules.__setitem__(0, n_modules[0] + 1))
               for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        with torch.no_grad(), relu_rule("guided") as stats:
            net(x)
    finally:
        for h in handles:
            h.remove()
    return stats.calls, n_modules[0]


def captum_runner(name: str, net: torch.nn.Module, layer: torch.nn.Module, params: dict, batch: int, n_img: int):
    """A function (x, target) → Captum's attribution in our output format."""
    import captum.attr as ca
    import torch.nn.functional as F

    per_image = max(1, batch // n_img)  # Captum's batch knobs count copies per image
    if name == "saliency":
        m = ca.Saliency(net)
        return lambda x, t: m.attribute(x, target=t, abs=False)
    if name == "guided_backprop":
        m = ca.GuidedBackprop(net)
        return lambda x, t: m.attribute(x, target=t)
    if name == "deconvnet":
        m = ca.Deconvolution(net)
        return lambda x, t: m.attribute(x, target=t)
    if name == "gradcam":
        m = ca.LayerGradCam(net, layer)

        def gradcam(x, t):
            cam = m.attribute(x, target=t, relu_attributions=True)
            return F.interpolate(cam, size=x.shape[-2:], mode=params["interpolation"], align_corners=False)

        return gradcam
    if name == "smoothgrad":
        m = ca.NoiseTunnel(ca.Saliency(net))

        def smoothgrad(x, t):
            span = float((x.flatten(1).amax(1) - x.flatten(1).amin(1)).mean())  # one σ for the batch
            return m.attribute(x, nt_type="smoothgrad", nt_samples=int(params["samples"]), nt_samples_batch_size=per_image,
                               stdevs=float(params["sigma"]) * span, target=t, abs=False)

        return smoothgrad
    if name == "integrated_gradients":
        m = ca.IntegratedGradients(net)
        base = {"black": 0.0, "grey": 0.5, "gray": 0.5, "white": 1.0}.get(params["baseline"], params["baseline"])
        n = int(params["steps"])
        # ours: the trapezoid rule on n points, both ends included (Captum's riemann_trapezoid points), whose
        # weights Captum scales to sum to (n − 1)/n instead of 1 (its step sizes 1/n, halved at the ends)
        return lambda x, t: m.attribute(x, baselines=float(base), target=t, n_steps=n, method="riemann_trapezoid",
                                        internal_batch_size=batch) * (n / (n - 1))
    if name == "occlusion":
        m = ca.Occlusion(lambda z: net(z).softmax(1))
        w, s = int(params["window"]), int(params["stride"])
        return lambda x, t: m.attribute(x, sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=float(params["fill"]),
                                        target=t, perturbations_per_eval=per_image)[:, :1]
    raise KeyError(name)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


def network_work(net: torch.nn.Module, fn) -> tuple[int, int]:
    """Images that go through ``net`` while ``fn()`` runs: (with an input gradient, forward only)."""
    counts = [0, 0]

    def pre(_m, inputs):
        x0 = inputs[0]
        counts[0 if (torch.is_grad_enabled() and x0.requires_grad) else 1] += int(x0.shape[0])

    handle = net.register_forward_pre_hook(pre)
    try:
        fn()
    finally:
        handle.remove()
    return counts[0], counts[1]


def plain_runner(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, work: tuple[int, int], batch: int):
    """A function running ``work`` = (images with an input gradient, forward-only images) through
    ``net`` bare, in chunks of ``batch`` that cycle over the photos and their classes."""
    n_grad, n_fwd = work

    def chunks(n: int):
        for s in range(0, n, batch):
            idx = torch.arange(s, min(n, s + batch), device=x.device) % len(x)
            yield x[idx], t[idx]

    def run() -> None:
        for xb, tb in chunks(n_grad):
            xi = xb.requires_grad_(True)
            out = net(xi)
            torch.autograd.grad(out.gather(1, tb.view(-1, 1)).sum(), xi)
        with torch.inference_mode():
            for xb, _ in chunks(n_fwd):
                net(xb)

    return run


def compare_one(name: str, model, net, layer_path: str, x: torch.Tensor, t: torch.Tensor, params: dict,
                batch: int, reps: int) -> tuple[str, float, float, float, float, float, tuple[int, int]]:
    """(agreement text, median seconds ours, median seconds Captum, median per-run ratios
    Captum ÷ ours, Captum ÷ plain and plain′ ÷ ours, Captum's network work)."""
    from generator.methods import attribution

    ours_m = make(name, model, batch_size=batch, **params)
    theirs = captum_runner(name, net, net.get_submodule(layer_path), params, batch, len(x))

    def ours() -> torch.Tensor:
        attribution._MOMENTS.clear()  # no reuse of SmoothGrad's noisy gradients between runs
        return ours_m.attribute(x, t)

    a, b = ours(), theirs(x, t)  # warm-up (and the outputs compared)
    sync(x.device)
    err = rel_error(a, b)
    agree = f"rel. error {err:.1e}"
    if name in ("guided_backprop", "deconvnet"):
        ours_n, relu_modules = rectifier_counts(net, x[:1])
        if relu_modules < ours_n:
            agree = (f"Captum differs: it hooks only nn.ReLU modules ({relu_modules} of {ours_n} rectifier calls; "
                     f"rel. error {err:.1e})")
    elif name == "smoothgrad":
        other = make(name, model, batch_size=batch, **{**params, "seed": int(params.get("seed", 0)) + 1}).attribute(x, t)
        agree = (f"Captum differs: its own noise (rel. error {err:.2f}; ours with another seed: "
                 f"{rel_error(other, a):.2f})")
    work = network_work(net, lambda: theirs(x, t))
    plain = plain_runner(net, x, t, work, batch)
    plain_prepared = plain_runner(prepared(net, x[:1]).net, x, t, work, batch)
    plain(), plain_prepared()  # warm-up
    t_ours, t_theirs, ratios, plain_ratios, own_ratios = [], [], [], [], []
    for r in range(reps):
        order = [("o", ours), ("c", lambda: theirs(x, t)), ("p", plain), ("q", plain_prepared)]
        order = order[r % 4:] + order[:r % 4]
        got = {}
        for k, fn in order:
            got[k] = timed(fn, x.device)
        t_ours.append(got["o"])
        t_theirs.append(got["c"])
        ratios.append(got["c"] / got["o"])
        plain_ratios.append(got["c"] / got["p"])
        own_ratios.append(got["q"] / got["o"])
    return (agree, statistics.median(t_ours), statistics.median(t_theirs), statistics.median(ratios),
            statistics.median(plain_ratios), statistics.median(own_ratios), work)


def captum_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet_lite0", "alexnet"])
    ap.add_argument("--methods", nargs="+", default=CAPTUM_METHODS, choices=CAPTUM_METHODS)
    ap.add_argument("--images", type=int, default=4, help="photos from data/images")
    ap.add_argument("--batch", type=int, default=32, help="images (incl. perturbed copies) per forward pass")
    ap.add_argument("--reps", type=int, default=3, help="alternating timed runs of each")
    ap.add_argument("--size", type=int, default=None, help="input size (tiny model only; registry models use their own)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    ap.add_argument("--full", action="store_true", help="the galleries' settings instead of the findings' lighter ones")
    args = ap.parse_args(argv)
    try:
        import captum
    except ImportError:
        print("captum is not installed: pip install -e .[bench]  (or make setup)")
        return 2

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # Captum's notes on requires_grad and hooks
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"ours vs Captum {captum.__version__}: device={device} ({name}) photos={args.images} batch={args.batch} "
          f"reps={args.reps} (alternating) torch={torch.__version__}")
    header = (f"{'model':<20} {'method':<22} {'ours img/s':>10} {'Captum img/s':>12} {'ours/Captum':>11} "
              f"{'plain/Captum':>12} {'ours/plain′':>11} {'Captum work':>13}  agreement")
    print(header)
    print("-" * (len(header) + 30))
    any_random = False
    for model_name in args.models:
        model, layer_path, preprocess, tag = load_bench_model(model_name, args.size or 224, device)
        any_random |= tag.endswith("*")
        net = getattr(model, "net", model)
        x = photos(preprocess, args.images, device)
        with torch.no_grad():
            t = net(x).argmax(1)
        for m in args.methods:
            params = method_params(m, args.full)
            params = {**ATTRIBUTION_METHODS[m].defaults, **params}
            if m == "gradcam":
                params.pop("layer", None)
                if model_name in ("tiny", "tiny6"):
                    params["layer"] = layer_path
            agree, so, sc, ratio, plain, own, work = compare_one(m, model, net, layer_path, x, t, params, args.batch,
                                                                 args.reps)
            print(f"{tag:<20} {m:<22} {len(x) / so:>10.2f} {len(x) / sc:>12.2f} {ratio:>10.2f}x {plain:>11.2f}x "
                  f"{own:>10.2f}x {f'{work[0]}∇ {work[1]}F':>13}  {agree}", flush=True)
    if any_random:
        print("* random weights (throughput does not depend on the weights)")
    print("plain: Captum's work (images through the network in one call: ∇ with an input gradient, F forward only) "
          "run bare on the same network, no hooks, no library — the ceiling of any implementation of the same passes "
          "on the network as loaded; plain′: the same on our prepared copy (batch norm folded, channels-last)")
    print(("gallery" if args.full else "findings (light)") + " settings: "
          + ", ".join(f"{n} {method_params(n, args.full)}" for n in args.methods if method_params(n, args.full)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return batching_main(argv) if "--batching" in argv else captum_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
