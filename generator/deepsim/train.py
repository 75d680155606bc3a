"""Train a DeePSim-style generator ``G`` to invert a fixed encoder ``E``.

``python -m generator train-generator --data /path/to/ImageFolder --out RUN_DIR`` (see ``--help``).

Pipeline:

1. **Precompute** (once, resumable, cached in ``RUN_DIR/cache``): every training photo is
   resized/centre-cropped the way the encoder model expects (256 → 224 for
   EfficientNet-Lite0), its code ``h = E(x)`` is stored (fp16) together with the photo
   downsampled to the generator's resolution (uint8). The same for the held-out set.
   Training then never runs ``E`` on training photos again.
2. **Train** with the DeePSim losses (Dosovitskiy & Brox 2016):
   ``L_G = w_pix·MSE(G(h), x) + w_feat·Σ_l MSE(C_l(G(h)), C_l(x))/mean(C_l(x)²) + w_adv·BCE(D(G(h), h), 1)``
   with ``C_l`` intermediate layers of a fixed comparator (EfficientNet-Lite0 by default) and a
   discriminator ``D`` that sees the image and the code. ``D`` is trained on real vs generated
   images and skipped on a step when it is already far ahead (DeePSim's balancing).
   AMP (fp16 autocast + GradScaler) on CUDA.
3. **Checkpoints** (atomic) every ``--ckpt-every`` steps and on exit; ``--resume`` continues
   exactly: batch order is a pure function of (seed, step) so an interrupted and resumed run
   reaches the same state as an uninterrupted one.
4. **Held-out metrics** every ``--eval-every`` steps: pixel MSE, comparator feature error, and
   the code round trip ``E(G(h))`` vs ``h`` (relative L2 error, and agreement of the classifier's
   top-1 on ``E(G(h))`` with that on ``h``) — printed, appended to ``metrics.jsonl``, plus a
   sample grid of held-out reconstructions (``samples/step_N.png``; research-only images).
5. ``--export FILE`` writes the best generator (lowest held-out feature error) as a small
   fp16 file loadable by :func:`generator.deepsim.load_generator`.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..images import load_rgb
from ..models import load_model
from ..util import atomic_torch_save, atomic_write_bytes, atomic_write_text, progress
from .nets import (CONFIGS, Comparator, Discriminator, Encoder, Generator, GeneratorConfig, TrainConfig,
                   count_params, make_train_config)

FORMAT = "cnnvis-deepsim-generator/1"
IMG_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG"}


# ----------------------------------------------------------------------------- data

def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix in IMG_EXT or p.suffix.lower() in IMG_EXT)


def pick_subset(paths: list[Path], n: int | None, seed: int) -> list[Path]:
    if not n or n >= len(paths):
        return paths
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(paths), generator=g)[:n].sort().values
    return [paths[i] for i in idx.tolist()]


def load_crop(path: Path, resize: int, crop: int) -> torch.Tensor:
    """Resize the short side to ``resize``, centre-crop ``crop`` → float tensor 3×crop×crop in [0, 1]
    (the photo opened by :func:`generator.images.load_rgb`: its checks and conversions; every size
    is taken, as before, not only photos of 32 px and more)."""
    im, _conversions = load_rgb(Path(path), min_side=1)
    w, h = im.size
    s = resize / min(w, h)
    im = im.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.BICUBIC)
    w, h = im.size
    l, t = (w - crop) // 2, (h - crop) // 2
    im = im.crop((l, t, l + crop, t + crop))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0


def read_exclude(path: str | Path | None) -> set[str]:
    """File names (one per line, ``#`` comments) of photos to leave out of training."""
    if not path:
        return set()
    return {ln.split("#", 1)[0].strip() for ln in Path(path).read_text().splitlines()} - {""}


def gather(folders: Sequence[str | Path], exclude: set[str] = frozenset()) -> list[Path]:
    """The photos under every folder of ``folders``, minus those whose file name is in ``exclude``."""
    return sorted({p for d in folders for p in list_images(d) if p.name not in exclude}, key=str)


@torch.no_grad()
def precompute(paths: list[Path], encoder: Encoder, size: int, cache_dir: Path, resize: int, crop: int,
               batch: int = 32, device: str = "cpu", desc: str = "codes", flip: bool = False) -> dict:
    """Codes ``E(x)`` (fp16) and ``size``-px uint8 copies of the photos; chunked and resumable.

    ``flip``: also the mirror image of every photo, with its own code (``E`` is not mirror-invariant),
    decoded once; mirrored entries follow their chunk's photos and their path ends in ``#mirror``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    chunk = 256
    n_chunks = math.ceil(len(paths) / chunk)
    for ci in progress(range(n_chunks), desc=desc):
        f = cache_dir / f"chunk_{ci:04d}.pt"
        if f.exists():
            continue
        ps = paths[ci * chunk:(ci + 1) * chunk]
        codes, imgs, mirror_codes = [], [], []
        for j in range(0, len(ps), batch):
            x = torch.stack([load_crop(p, resize, crop) for p in ps[j:j + batch]]).to(device)
            codes.append(encoder(x).float().cpu().half())
            if flip:  # the mirror image gets its own code; its small copy is the mirrored small copy
                mirror_codes.append(encoder(x.flip(-1)).float().cpu().half())
            small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            imgs.append((small.clamp(0, 1) * 255).round().byte().cpu())
        names = [str(p) for p in ps]
        if flip:
            codes, imgs = codes + mirror_codes, imgs + [im.flip(-1) for im in imgs]
            names = names + [n + "#mirror" for n in names]
        atomic_torch_save({"codes": torch.cat(codes), "images": torch.cat(imgs), "paths": names}, f)
    parts = [torch.load(cache_dir / f"chunk_{ci:04d}.pt", weights_only=True) for ci in range(n_chunks)]
    return {"codes": torch.cat([p["codes"] for p in parts]), "images": torch.cat([p["images"] for p in parts]),
            "paths": [q for p in parts for q in p["paths"]]}


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices for ``step``: epochs are seeded permutations, so this depends only on (seed, step)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size]


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """G, D, their optimisers and AMP scalers; one :meth:`step` = one D update + one G update."""

    def __init__(self, cfg: TrainConfig, comparator: Comparator, device: str = "cpu", amp: bool = False,
                 seed: int = 0) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.amp = bool(amp and self.device.type == "cuda")
        torch.manual_seed(seed)
        self.G = Generator(cfg.generator).to(self.device)
        self.D = Discriminator(cfg.generator.size, cfg.generator.code_dim, tuple(cfg.disc_channels)).to(self.device)
        self.C = comparator
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step_n = 0
        self.d_skips = 0

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def feature_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tgt = self.C(real)
        out = self.C(fake)
        return sum(F.mse_loss(o.float(), t.float()) / t.float().pow(2).mean().clamp_min(1e-8) for o, t in zip(out, tgt))

    def step(self, h: torch.Tensor, x: torch.Tensor) -> dict:
        cfg = self.cfg
        h, x = h.to(self.device).float(), x.to(self.device).float()
        adv = cfg.w_adv > 0 and self.step_n >= cfg.adv_start
        logs = {}
        # ---- G update
        self.G.train()
        with self._autocast():
            fake = self.G(h)
            l_pix = F.mse_loss(fake.float(), x)
            l_feat = self.feature_loss(fake, x) if cfg.w_feat > 0 else fake.new_zeros(())
            loss = cfg.w_pix * l_pix + cfg.w_feat * l_feat
            if adv:
                l_adv = F.binary_cross_entropy_with_logits(self.D(fake, h).float(), torch.ones(len(h), device=self.device))
                loss = loss + cfg.w_adv * l_adv
                logs["adv_g"] = float(l_adv.detach())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        logs.update(loss=float(loss.detach()), pix=float(l_pix.detach()), feat=float(l_feat.detach()))
        # ---- D update (real vs the fake just made), skipped when D is far ahead
        if adv:
            with self._autocast():
                lr_ = self.D(x, h).float()
                lf_ = self.D(fake.detach(), h).float()
                l_d = (F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                       + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_))) / 2
            logs["d"] = float(l_d.detach())
            if logs["d"] > 0.1:  # DeePSim: stop training D while it wins by a large margin
                self.opt_d.zero_grad(set_to_none=True)
                self.scaler_d.scale(l_d).backward()
                self.scaler_d.step(self.opt_d)
                self.scaler_d.update()
            else:
                self.d_skips += 1
        self.step_n += 1
        return logs

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "scaler_g": self.scaler_g.state_dict(),
                "scaler_d": self.scaler_d.state_dict(), "step": self.step_n, "d_skips": self.d_skips}

    def load_state_dict(self, sd: dict) -> None:
        self.G.load_state_dict(sd["G"])
        self.D.load_state_dict(sd["D"])
        self.opt_g.load_state_dict(sd["opt_g"])
        self.opt_d.load_state_dict(sd["opt_d"])
        self.scaler_g.load_state_dict(sd["scaler_g"])
        self.scaler_d.load_state_dict(sd["scaler_d"])
        self.step_n = int(sd["step"])
        self.d_skips = int(sd.get("d_skips", 0))


def init_weights(trainer: "Trainer", path: str | Path) -> None:
    """Load G (and D when the file has it) from a run's ``checkpoint.pt`` or an exported generator file."""
    obj = torch.load(path, weights_only=True, map_location=trainer.device)
    if isinstance(obj, dict) and "trainer" in obj:
        g_sd, d_sd = obj["trainer"]["G"], obj["trainer"]["D"]
    elif isinstance(obj, dict) and obj.get("format") == FORMAT:
        g_sd, d_sd = obj["state_dict"], None
    else:
        raise ValueError(f"{path}: neither a train-generator checkpoint nor an exported {FORMAT} file")
    try:
        g_sd = {k: v.float() for k, v in g_sd.items()}
        g_sd.setdefault("code_mean", trainer.G.code_mean)  # older files: standardisation set by the caller
        g_sd.setdefault("code_std", trainer.G.code_std)
        trainer.G.load_state_dict(g_sd)
        if d_sd is not None:
            trainer.D.load_state_dict(d_sd)
    except RuntimeError as e:  # shape mismatch: different size / channels / code
        raise ValueError(f"{path}: its networks do not match this run's configuration ({e})") from None


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(G: Generator, C: Comparator, E: Encoder | None, codes: torch.Tensor, images: torch.Tensor,
             batch: int = 32, device: str = "cpu") -> dict:
    """Held-out metrics of reconstructions ``G(h)`` of photos ``x`` with codes ``h``."""
    G.eval()
    pix, feat, code_err, agree, n = 0.0, 0.0, 0.0, 0, 0
    for i in range(0, len(codes), batch):
        h = codes[i:i + batch].to(device).float()
        x = images[i:i + batch].to(device).float() / 255
        fake = G(h).float()
        pix += F.mse_loss(fake, x, reduction="sum").item() / fake[0].numel()
        fo, ft = C(fake), C(x)
        feat += sum(((o - t).pow(2).flatten(1).mean(1) / t.pow(2).flatten(1).mean(1).clamp_min(1e-8)).sum().item()
                    for o, t in zip(fo, ft))
        if E is not None:
            h2 = E(fake).float()
            code_err += ((h2 - h).norm(dim=1) / h.norm(dim=1).clamp_min(1e-8)).sum().item()
            if E.head is not None:
                agree += (E.head(h2).argmax(1) == E.head(h).argmax(1)).sum().item()
        n += len(h)
    out = {"pixel_mse": pix / n, "feature_err": feat / n}
    if E is not None:
        out["code_rel_err"] = code_err / n
        if E.head is not None:
            out["top1_agreement"] = agree / n
    return out


def save_grid(real: torch.Tensor, fake: torch.Tensor, path: Path) -> None:
    """Two rows: photos (uint8) above reconstructions (float [0,1])."""
    r = real.float() / 255
    rows = torch.cat([torch.cat(list(r), 2), torch.cat(list(fake.float().clamp(0, 1)), 2)], 1)
    arr = (rows.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def code_statistics(codes: torch.Tensor) -> dict:
    c = codes.float()
    return {"mean": c.mean(0), "std": c.std(0), "p99": torch.quantile(c, 0.99, dim=0), "max": c.max(0).values,
            "n": len(c)}


def export_generator(G: Generator, path: Path, meta: dict) -> Path:
    """Write a small fp16 generator file (``FORMAT``), loadable with ``load_generator``."""
    obj = {"format": FORMAT, "config": G.cfg.to_dict(),
           "state_dict": {k: v.detach().cpu().half() for k, v in G.state_dict().items()}}
    obj.update(meta)
    return atomic_torch_save(obj, path)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m generator train-generator",
        description="Train a DeePSim-style generator G to invert a fixed pretrained encoder E "
                    "(pixel + comparator-feature + adversarial losses). Resumable; see generator/deepsim/train.py.")
    p.add_argument("--data", required=True, nargs="+",
                   help="folders of training photos (searched recursively; several may be given)")
    p.add_argument("--exclude", default=None, help="text file of photo file names to leave out of training "
                   "and held-out data (one per line), e.g. the photos a judge evaluation reconstructs")
    p.add_argument("--flip", action="store_true", help="also train on the mirror image of every training "
                   "photo (with its own code)")
    p.add_argument("--val", default=None, help="ImageFolder of held-out photos (default: hold out part of --data)")
    p.add_argument("--out", required=True, help="run folder: cache, checkpoints, metrics.jsonl, samples/")
    p.add_argument("--config", default="cpu", choices=sorted(CONFIGS), help="size preset (cpu: 64 px; gpu: 128 px)")
    p.add_argument("--size", type=int, default=None, help="override output resolution (4·2^k)")
    p.add_argument("--encoder", default="efficientnet_lite0", help="registry model used as encoder E and comparator")
    p.add_argument("--encoder-layer", default="pre_logits", help="layer of E whose (pooled) output is the code h")
    p.add_argument("--comparator-layers", default=None, help="comma-separated layers for the feature loss")
    p.add_argument("--comparator-size", type=int, default=None, help="resize images to this before the comparator")
    p.add_argument("--max-train", type=int, default=None, help="use a random subset of this many training photos")
    p.add_argument("--max-val", type=int, default=256, help="held-out photos used for metrics")
    p.add_argument("--steps", type=int, default=100000, help="stop after this many steps in total")
    p.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--w-pix", type=float, default=None)
    p.add_argument("--w-feat", type=float, default=None)
    p.add_argument("--w-adv", type=float, default=None)
    p.add_argument("--adv-start", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=None, help="default: once per epoch")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt if present")
    p.add_argument("--init", default=None, help="start G (and D, if present) from this file: another run's "
                   "checkpoint.pt or an exported generator (fine-tuning; optimiser state and step start afresh; "
                   "ignored when --resume finds a checkpoint)")
    p.add_argument("--export", default=None, help="write a generator (fp16) to this file at the end")
    p.add_argument("--export-select", choices=["best", "last"], default="best",
                   help="which generator --export writes: lowest held-out feature error (best) or the final one (last)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="fp16 autocast (CUDA only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--weights-dir", default=None)
    return p


def train_generator_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    device = args.device
    loaded = load_model(args.encoder, weights_dir=args.weights_dir, device=device)
    enc = Encoder(loaded, args.encoder_layer)
    spec = loaded.spec
    overrides = dict(batch_size=args.batch_size, lr=args.lr, w_pix=args.w_pix, w_feat=args.w_feat,
                     w_adv=args.w_adv, adv_start=args.adv_start, comparator_size=args.comparator_size)
    if args.comparator_layers:
        overrides["comparator_layers"] = tuple(args.comparator_layers.split(","))
    cfg = make_train_config(args.config, **overrides)
    # code dimension follows the encoder
    with torch.no_grad():
        code_dim = enc(torch.zeros(1, 3, spec.input_size, spec.input_size, device=device)).shape[1]
    g = cfg.generator
    cfg.generator = GeneratorConfig(**{**g.to_dict(), "fc_dims": g.fc_dims, "code_dim": code_dim,
                                       **({"size": args.size} if args.size else {})})
    size = cfg.generator.size

    # ---- data: codes + small images, cached
    exclude = read_exclude(args.exclude)
    found = gather(args.data)
    paths = [p for p in found if p.name not in exclude]
    n_excluded = len(found) - len(paths)  # photos left out of --data
    if args.val:
        train_paths = pick_subset(paths, args.max_train, args.seed)
        val_paths = pick_subset(gather([args.val], exclude), args.max_val, args.seed + 1)
    else:
        perm = torch.randperm(len(paths), generator=torch.Generator().manual_seed(args.seed)).tolist()
        nv = args.max_val
        val_paths = sorted((paths[i] for i in perm[:nv]), key=str)
        train_paths = sorted((paths[i] for i in perm[nv:]), key=str)
        train_paths = pick_subset(train_paths, args.max_train, args.seed)
    key = f"{args.encoder}-{args.encoder_layer}-{size}"
    if set(map(str, train_paths)) & set(map(str, val_paths)):
        raise SystemExit("error: the held-out photos (--val) overlap the training photos (--data)")
    train = precompute(train_paths, enc, size,
                       out / "cache" / key / f"train_{len(train_paths)}{'_flip' if args.flip else ''}",
                       spec.resize_size, spec.input_size, device=device, desc="train codes", flip=args.flip)
    val = precompute(val_paths, enc, size, out / "cache" / key / f"val_{len(val_paths)}",
                     spec.resize_size, spec.input_size, device=device, desc="held-out codes")
    stats = code_statistics(train["codes"])
    atomic_torch_save(stats, out / "code_stats.pt")

    comparator = Comparator(loaded, tuple(cfg.comparator_layers), cfg.comparator_size)
    amp = {"on": True, "off": False, "auto": device.startswith("cuda")}[args.amp]
    trainer = Trainer(cfg, comparator, device=device, amp=amp, seed=args.seed)
    trainer.G.set_code_stats(stats["mean"].to(device), stats["std"].to(device))
    ckpt = out / "checkpoint.pt"
    best = {"feature_err": float("inf")}
    if args.resume and ckpt.exists():
        sd = torch.load(ckpt, weights_only=True, map_location=device)
        trainer.load_state_dict(sd["trainer"])
        best = sd.get("best", best)
        print(f"resumed from {ckpt} at step {trainer.step_n}", flush=True)
    elif args.init:
        init_weights(trainer, args.init)
        trainer.G.set_code_stats(stats["mean"].to(device), stats["std"].to(device))
        print(f"initialised from {args.init}", flush=True)
    n = len(train["codes"])
    per_epoch = max(1, n // cfg.batch_size)
    eval_every = args.eval_every or per_epoch
    run_info = {"encoder": args.encoder, "encoder_layer": args.encoder_layer, "weights_id": loaded.weights_id,
                "config": args.config, "train_config": _jsonable(asdict(cfg)), "n_train": n,
                "n_val": len(val["codes"]), "data": " + ".join(str(d) for d in args.data),
                "excluded": n_excluded, "flip": args.flip, "val": str(args.val or "held-out part of --data"),
                "G_params": count_params(trainer.G), "D_params": count_params(trainer.D), "device": device,
                "amp": trainer.amp, "threads": torch.get_num_threads()}
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=2))
    print(f"G {run_info['G_params']/1e6:.2f} M params, D {run_info['D_params']/1e6:.2f} M; {n} train / "
          f"{len(val['codes'])} held-out photos; {per_epoch} steps per epoch", flush=True)

    def save(final: bool = False) -> None:
        atomic_torch_save({"trainer": trainer.state_dict(), "best": best, "run": run_info}, ckpt)

    def do_eval() -> None:
        nonlocal best
        m = evaluate(trainer.G, comparator, enc, val["codes"], val["images"], device=device)
        m.update(step=trainer.step_n, epoch=trainer.step_n / per_epoch, time=time.time(), d_skips=trainer.d_skips)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        print("held-out " + " ".join(f"{k}={v:.4g}" for k, v in m.items() if k not in ("time",)), flush=True)
        with torch.no_grad():
            trainer.G.eval()
            sel = torch.linspace(0, len(val["codes"]) - 1, 8).long()  # spread over classes
            save_grid(val["images"][sel], trainer.G(val["codes"][sel].to(device).float()),
                      out / "samples" / f"step_{trainer.step_n:06d}.png")
        if m["feature_err"] < best["feature_err"]:
            best = m
            export_generator(trainer.G, out / "generator_best.pt",
                             {"encoder": run_info, "code_stats": stats, "metrics": m})

    import signal

    def _term(signum, frame):  # SIGTERM (and SIGINT in background jobs): stop with a checkpoint
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term)
    t0 = time.time()
    pbar = progress(total=args.steps, initial=trainer.step_n, desc="train G")
    ema = {}
    try:
        while trainer.step_n < args.steps:
            idx = batch_indices(n, cfg.batch_size, trainer.step_n, args.seed)
            logs = trainer.step(train["codes"][idx], train["images"][idx].float() / 255)
            for k, v in logs.items():
                ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
            pbar.update(1)
            pbar.set_postfix({k: f"{v:.3g}" for k, v in ema.items()})
            if trainer.step_n % 25 == 0:
                with open(out / "train_log.jsonl", "a") as f:
                    f.write(json.dumps({"step": trainer.step_n, **ema}) + "\n")
            if trainer.step_n % args.ckpt_every == 0:
                save()
            if trainer.step_n % eval_every == 0:
                do_eval()
                save()
            if args.minutes and (time.time() - t0) > args.minutes * 60:
                print(f"time limit reached at step {trainer.step_n}", flush=True)
                break
    except KeyboardInterrupt:
        print("interrupted; saving checkpoint", flush=True)
    finally:
        pbar.close()
        save()
        signal.signal(signal.SIGTERM, old_term)
    if not (out / "generator_best.pt").exists():
        do_eval()
    if args.export:
        if args.export_select == "last":
            m = evaluate(trainer.G, comparator, enc, val["codes"], val["images"], device=device)
            m["step"] = trainer.step_n
            export_generator(trainer.G, Path(args.export), {"encoder": run_info, "code_stats": stats, "metrics": m})
        else:
            atomic_torch_save(torch.load(out / "generator_best.pt", weights_only=True), args.export)
        print(f"exported {args.export} ({Path(args.export).stat().st_size/2**20:.1f} MiB)", flush=True)
    return 0


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


if __name__ == "__main__":
    sys.exit(train_generator_main())
