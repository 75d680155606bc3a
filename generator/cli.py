"""Command line: ``python -m generator <command>`` (or the ``cnnvis`` console script).

Commands
  build            compute the galleries and write site_src/generated (default command)
  rehearse         the whole build with random weights where real ones are missing, as its own site
  weights          say, per model, whether its weights are found and how to supply them
  data             find or download the labelled photo sets (Imagenette val, the 1,000-class sample)
  models           list the registry and each model's layer catalogue
  train-generator  train the DeePSim-style image generator used by DGN-AM / PPGN

Exit codes
  0  built, nothing skipped
  1  built, but some photos were skipped or some models had no (or corrupt) weights
  2  bad input or configuration (one line says which file or key, the value and what is
     allowed); nothing was built and the output folder is as it was
  3  internal error (a bug: run again with --debug for the traceback); nothing was built
  130 interrupted (Ctrl-C); finished results stay in the cache
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Sequence

# The commands import the package's modules inside their functions on purpose: they load torch,
# which takes seconds, and `--help` or a bad flag should answer at once.


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is too small: must be at least {lo}")
        return value

    parse.__name__ = "integer"
    return parse


def _render_workers(text: str) -> int | str:
    return "auto" if text == "auto" else _int_at_least(0)(text)


def _add_build_options(p) -> None:
    p.add_argument("--config", help="TOML config file (default: data/config.toml)")
    p.add_argument("--models", help="comma-separated model names, overriding the config "
                                    "(registry names, or torchvision:ARCH / timm:ARCH)")
    p.add_argument("--images", help="image folder (with an optional images.toml manifest)")
    p.add_argument("--no-cache", action="store_true", help="recompute everything (the cache is not read or written)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto: CUDA when available)")
    p.add_argument("--profile", choices=("auto", "preview", "full"),
                   help="how much work: full (every check at its full n; meant for a GPU), preview (smaller n and "
                        "shorter chains, sized for a CPU) or auto (default: full on a GPU, preview otherwise); "
                        "settings in the config file win over the profile")
    p.add_argument("--batch-size", type=_int_at_least(1), help="images per batch (default 16)")
    p.add_argument("--stages", help="comma-separated stages to run (default from the config)")
    p.add_argument("--image-limit", type=_int_at_least(0), help="use only the first N images (0 = all)")
    p.add_argument("--weights-dir", help="folder with weight files (also $CNNVIS_WEIGHTS_DIR)")
    p.add_argument("--offline", action="store_true", default=None, help="never try to download weights")
    p.add_argument("--executor", choices=("local", "ray"), help="where the heavy model work runs: here (local, "
                   "the default) or as Ray tasks of (model, chunk of photos)")
    p.add_argument("--ray-address", help="with --executor ray: address of an existing Ray cluster "
                                         "(default: start a local one)")
    p.add_argument("--render-workers", type=_render_workers, help="processes that draw, encode and write the "
                   "figures beside the model work: auto (default: the cores the network leaves) or a number "
                   "(0: in the build's own process)")
    p.add_argument("--plan-only", action="store_true", help="load and calibrate the models, print the plan "
                   "(estimated seconds per model and stage, downloads) and stop; nothing is computed or written")


def _build_parser(sub) -> None:
    p = sub.add_parser("build", help="compute galleries and write the generated Markdown (default)",
                       description="Compute every configured stage for every model and image and write "
                                   "Markdown + figures under the output folder. Run `mkdocs build` afterwards "
                                   "(make site does both). The output folder is replaced only when the build "
                                   "finished; it must be new, empty or written by an earlier build.",
                       epilog="Exit codes" + __doc__.split("Exit codes", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_build_options(p)
    p.add_argument("--out", help="output folder for generated Markdown and figures (default site_src/generated)")
    p.add_argument("--cache", help="results cache folder (default .cache/results)")
    p.add_argument("--strict", action="store_true", default=None, help="missing weights are an error, not a note")
    p.set_defaults(func=cmd_build)
    r = sub.add_parser("rehearse", help="rehearse the whole build with random weights where real ones are missing",
                       description="Run every configured stage on every configured model — seeded random weights "
                                   "for the models whose real weights are missing — into its own folder (pages, "
                                   "results cache and MkDocs site, a banner on every page), never into the real "
                                   "site or cache. Shows that the real job runs and how long it takes.")
    _add_build_options(r)
    r.add_argument("--dir", default=None, help="rehearsal folder (default .rehearsal; its site is DIR/site)")
    r.add_argument("--small", action="store_true", help="two photos, every stage, a few optimisation steps "
                                                        "(what `make test` runs)")
    r.add_argument("--timing", action="store_true", help="first build each model alone and print seconds per "
                                                         "model and stage")
    r.add_argument("--no-site", action="store_true", help="skip the MkDocs build of the rehearsal")
    r.set_defaults(func=cmd_rehearse)


def _config_from_args(args):
    from .config import Config

    cfg = Config.load(args.config)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None
    cfg.override(models=split(args.models), images=args.images, out=getattr(args, "out", None),
                 cache=getattr(args, "cache", None), device=args.device, batch_size=args.batch_size,
                 stages=split(args.stages), image_limit=args.image_limit, weights_dir=args.weights_dir,
                 offline=args.offline, strict=getattr(args, "strict", None),
                 no_cache=True if args.no_cache else None, executor=args.executor,
                 ray_address=args.ray_address, profile=args.profile,
                 render_workers=args.render_workers)
    return cfg


def cmd_build(args) -> int:
    from .build import run_build
    from .models import WeightsError

    cfg = _config_from_args(args)
    try:
        result = run_build(cfg, say=_say, plan_only=args.plan_only)
    except WeightsError as e:  # --strict and a model without weights
        _say(f"error: {e}")
        return 2
    return result.exit_code


def cmd_rehearse(args) -> int:
    from .rehearse import DEFAULT_DIR, rehearse

    cfg = _config_from_args(args)
    folder = Path(args.dir) if args.dir else cfg.resolve_path(DEFAULT_DIR)
    result = rehearse(cfg, folder, small=args.small, timing=args.timing, site=not args.no_site, say=_say,
                      plan_only=args.plan_only)
    return result.exit_code


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_weights(args) -> int:
    from .config import Config
    from .models import get_spec, hub_checkpoint_dir, weights_status

    names = [x.strip() for x in args.models.split(",")] if args.models else list(Config.load(args.config)["models"])
    status = weights_status(names, args.weights_dir, offline=args.offline)
    print(f"torch hub cache: {hub_checkpoint_dir()}")
    for name, msg in status.items():
        print(f"{get_spec(name).name:>20}: {'ok' if msg is None else msg}")
    return 0 if all(m is None for m in status.values()) else 1


def cmd_data(args) -> int:
    import os

    from . import datasets

    root = Path(args.root).expanduser().resolve() if args.root else datasets.data_root()
    try:
        sets = [datasets.get(args.only)] if args.only else list(datasets.REGISTRY.values())
    except datasets.DataError as e:
        _say(f"error: {e}")
        return 2
    missing = [ds for ds in sets if datasets.check(ds, root / ds.name) is not None]
    if args.if_missing and not missing:
        return 0
    where = ("$CNNVIS_DATA" if os.environ.get("CNNVIS_DATA", "").strip() and not args.root
             else "--root" if args.root else "the user cache; CNNVIS_DATA=DIR uses another folder or a mirror")
    print(f"data folder: {root} ({where})")
    for ds in sets:
        why = datasets.check(ds, root / ds.name)
        if why is None:
            print(f"{ds.name:>20}: found in {root / ds.name}")
        else:
            print(f"{ds.name:>20}: missing ({why}); about {ds.size / 1e6:,.0f} MB to download from {ds.url}")
    if not missing:
        return 0
    if args.check:
        print(f"run `{datasets.FIX}` (or `make data`) to download what is missing")
        return 1
    failed: list[tuple[str, datasets.DataError]] = []
    for ds in missing:
        try:
            datasets.fetch(ds, root=root, say=_say)
        except datasets.DataError as e:
            failed.append((ds.name, e))
    if not failed:
        return 0
    lead = "note" if args.if_missing else "error"
    if all(isinstance(e, datasets.Offline) for _, e in failed) and len(failed) > 1:
        whys = ", ".join(dict.fromkeys(e.why for _, e in failed))
        names = [name for name, _ in failed]
        _say(f"{lead}: offline ({whys}): {', '.join(names)} not downloaded; run `{datasets.FIX}` when online, or set "
             f"CNNVIS_DATA to a folder that holds {'/ and '.join(names)}/")
    else:
        for _, e in failed:
            _say(f"{lead}: {e}")
    if args.if_missing:  # make site goes on: the pages that use the data say they are missing
        _say(f"note: the build goes on with the curated photos; `{datasets.FIX}` fetches the missing data later")
        return 0
    return 2


def cmd_models(args) -> int:
    from .models import REGISTRY

    def fmt(v) -> str:
        return "/".join(f"{x:g}" for x in v)

    for spec in REGISTRY.values():
        pre = spec.preprocess
        print(f"{spec.name} ({spec.title}, {spec.family}:{spec.arch}, {pre.input_size}px crop of shorter side "
              f"{pre.resize_size}, {pre.interpolation} {pre.resize_with} resize, mean {fmt(spec.mean)} std {fmt(spec.std)})")
        for l in spec.layers:
            mark = "*" if l.name in spec.default_layers else " "
            print(f"   {mark} {l.name:<14} {l.path:<16} {l.kind}")
    print("\n* = used by default. Any torchvision/timm classifier: --models torchvision:ARCH or timm:ARCH")
    return 0


def cmd_export(args) -> int:
    from .figures import export, select

    src = Path(args.figures)
    if not src.is_dir():
        raise FileNotFoundError(f"no figures in {src}: build the site first (make site) or pass --figures")
    figs = select(src, model=args.model or "", photo=args.photo or "", method=args.method or "", pattern=args.match or "")
    if not figs:
        _say("no figure matches these filters")
        return 1
    written = export(src, Path(args.out), figs)
    print(f"{len(written)} figure(s) and CAPTIONS.md written to {args.out}")
    return 0


def cmd_train_generator(args, rest: Sequence[str]) -> int:
    from .deepsim.train import train_generator_main

    return int(train_generator_main(list(rest)) or 0)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m generator",
        description="What does a deep CNN learn? Precompute CNN visualisations and write the site's pages.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command")
    _build_parser(sub)
    w = sub.add_parser("weights", help="check which models' weights are available")
    w.add_argument("--models", help="comma-separated (default: the config's models)")
    w.add_argument("--config")
    w.add_argument("--weights-dir")
    w.add_argument("--offline", action="store_true", default=None)
    w.set_defaults(func=cmd_weights)
    d = sub.add_parser("data", help="find or download the labelled photo sets the findings and atlas read",
                       description="Say, per data set (Imagenette's 3,925 validation photos at 320 px; one ImageNet "
                                   "photo per class), where it is found, and download, check and extract what is "
                                   "missing into $CNNVIS_DATA (default: the user cache, ~/.cache/cnnvis/data). A "
                                   "download cut off resumes. Exit 0: all there; 1: missing (--check); 2: offline "
                                   "or a failed download (one line says why).")
    d.add_argument("--only", metavar="NAME", help="one data set: imagenette or imagenet-1k-sample")
    d.add_argument("--root", metavar="DIR", help="data folder (default $CNNVIS_DATA or the user cache; the build "
                                                 "reads $CNNVIS_DATA)")
    d.add_argument("--check", action="store_true", help="only say what is found and what would be downloaded")
    d.add_argument("--if-missing", action="store_true", help="quiet when all is there; offline or failed: a note "
                                                             "and exit 0 (what make site runs first)")
    d.set_defaults(func=cmd_data)
    m = sub.add_parser("models", help="list the model registry and layer catalogues")
    m.set_defaults(func=cmd_models)
    e = sub.add_parser("export", help="export figures (PNG, plots as SVG) with a captions-and-credits file",
                       description="Copy figures of the built output as PNG (plots stay SVG) with CAPTIONS.md "
                                   "(caption, photo credit and licence per file, from what the build recorded "
                                   "for each figure in figures.json and credits.json); no rebuilding.")
    e.add_argument("--out", required=True, help="folder to write the figure pack to")
    e.add_argument("--figures", default="site_src/generated/figures", help="the generated figures folder")
    e.add_argument("--model", help="only this model (e.g. efficientnet_lite0)")
    e.add_argument("--photo", help="only this photo id (e.g. tabby-cat-chelsea)")
    e.add_argument("--method", help="only this method, figure family or path word (e.g. gradcam, activity, findings)")
    e.add_argument("--match", help="only paths matching this glob (e.g. 'attribution/*/gradcam/*')")
    e.set_defaults(func=cmd_export)
    t = sub.add_parser("train-generator", help="train the image generator (see train-generator --help)",
                       add_help=False)
    t.set_defaults(func=None, passthrough=cmd_train_generator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the command line
    if "train-generator" not in argv:
        argv = [a for a in argv if a != "--debug"]
    parser = make_parser()
    try:  # a usage error is one line and exit 2 (--help exits 0)
        args, rest = parser.parse_known_args(argv)
        if args.command is None:
            args = parser.parse_args(["build", *argv])
            rest = []
        if rest and not getattr(args, "passthrough", None):
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
    except SystemExit as e:
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    args.debug = debug
    if getattr(args, "passthrough", None):
        return args.passthrough(args, rest)
    from .config import ConfigError  # no torch

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say("interrupted: finished results are kept in the cache; run the same command again to resume")
        return 130
    except ConfigError as e:  # bad input or configuration: one line, nothing built
        if args.debug:
            traceback.print_exc()
        _say("error: " + " ".join(str(e).split()))
        return 2
    except Exception as e:  # a bug: one line (the traceback with --debug)
        if args.debug:
            traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        msg = " ".join(str(e).split())
        _say(f"internal error: {e.__class__.__name__}{at}: {msg} (run again with --debug for the traceback)")
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
