"""DeePSim-style image generator, DGN-AM and PPGN.

* :mod:`.nets` — generator / discriminator / encoder / comparator networks.
* :mod:`.train` — the ``train-generator`` command (``train_generator_main``).
* :mod:`.dgn_am` — activation maximisation through the generator (Nguyen et al. 2016).
* :mod:`.ppgn` — plug-and-play sampling, noiseless joint PPGN-h (Nguyen et al. 2017).
* :mod:`.evaluate` — the measurements on EfficientNet-Lite0 (``python -m generator.deepsim.evaluate``).

Generator files
---------------
1. **This repository's format** (``data/weights/deepsim_lite0_64.pt``, written by
   ``train-generator --export``): a ``torch.save`` dict ``{"format": "cnnvis-deepsim-generator/1",
   "config": GeneratorConfig fields, "state_dict": fp16 tensors, "encoder": {model, layer,
   weights_id, …}, "code_stats": {"mean", "std", "p99", "max", "n"} (per-dimension statistics of
   the encoder codes on the training photos), "metrics": held-out metrics}``.
   Load with :func:`load_generator`.

2. **The published DeePSim fc6 generator** (Dosovitskiy & Brox 2016, the generator used by
   DGN-AM/PPGN; released as Caffe ``generator.caffemodel``, commonly ported to PyTorch as
   ``upconvGAN_fc6.pt``) — the user supplies the file; nothing is downloaded. Expected: a
   ``torch.save`` state dict (optionally nested under ``"state_dict"`` and/or with a ``"G."``
   prefix) with these keys, Linear ``[out, in]`` and ConvTranspose2d ``[in, out, k, k]`` weights::

       defc7 (4096→4096) defc6 (4096→4096) defc5 (4096→4096)      Linear, LeakyReLU(0.3)
       reshape 4096 → 256×4×4
       deconv5 (4×4 s2) conv5_1 (3×3 s1) deconv4 (4×4 s2) conv4_1 (3×3 s1)
       deconv3 (4×4 s2) conv3_1 (3×3 s1) deconv2 (4×4 s2) deconv1 (4×4 s2)   ConvTranspose2d, LeakyReLU(0.3)
       deconv0 (4×4 s2, → 3 channels, no activation)

   giving a 256×256 BGR image in Caffe's mean-subtracted 0..255 scale; :class:`DeePSimFC6`
   converts it to RGB in [0, 1] (adds the BGR mean (104, 117, 123), swaps channels, divides by
   255, clamps). Channel counts are read from the file, so close variants load too. Its code is
   AlexNet's fc6 (4096-d); DGN-AM clips it to ``[0, clip_sigma·std]`` with ``code_stats`` the user
   supplies (``{"mean", "std"}`` tensors) or, without them, a flat bound (std = ``fc6_std``,
   default 3.0, so that the default 3σ bound is ≈ the paper's fc6 upper bounds of a few tens
   … only roughly). Load with :func:`load_deepsim_fc6`. This loader is tested on a synthetic
   file with the same layout; the real file was not available where this code was written.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .nets import Generator, GeneratorConfig

FORMAT = "cnnvis-deepsim-generator/1"


def load_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, dict]:
    """Load a generator written by ``train-generator --export``; returns (G in fp32 eval mode, metadata)."""
    obj = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (for the published DeePSim fc6 file use load_deepsim_fc6)")
    G = Generator(GeneratorConfig.from_dict(obj["config"]))
    sd = {k: v.float() for k, v in obj["state_dict"].items()}
    # files written before codes were standardised inside G: identity standardisation
    sd.setdefault("code_mean", torch.zeros(G.cfg.code_dim))
    sd.setdefault("code_std", torch.ones(G.cfg.code_dim))
    G.load_state_dict(sd)
    G.eval().to(device)
    for p in G.parameters():
        p.requires_grad_(False)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return G, meta


_FC6_LINEAR = ("defc7", "defc6", "defc5")
_FC6_CONV = (("deconv5", 2), ("conv5_1", 1), ("deconv4", 2), ("conv4_1", 1), ("deconv3", 2), ("conv3_1", 1),
             ("deconv2", 2), ("deconv1", 2), ("deconv0", 2))


class DeePSimFC6(nn.Module):
    """The DeePSim fc6 generator architecture; ``forward(h)`` → RGB in [0, 1], 256×256."""

    BGR_MEAN = (104.0, 117.0, 123.0)

    def __init__(self, shapes: dict[str, tuple[int, ...]] | None = None, slope: float = 0.3) -> None:
        super().__init__()
        shapes = shapes or {}
        lin = OrderedDict()
        for name in _FC6_LINEAR:
            out_f, in_f = shapes.get(name + ".weight", (4096, 4096))
            lin[name] = nn.Linear(in_f, out_f)
            lin[name + "_lrelu"] = nn.LeakyReLU(slope)
        self.fc = nn.Sequential(lin)
        conv = OrderedDict()
        c_prev = 256
        for i, (name, stride) in enumerate(_FC6_CONV):
            last = i == len(_FC6_CONV) - 1
            default = (c_prev, 3 if last else {"deconv5": 256, "conv5_1": 512, "deconv4": 256, "conv4_1": 256,
                                                 "deconv3": 128, "conv3_1": 128, "deconv2": 64,
                                                 "deconv1": 32}[name], 4 if stride == 2 else 3, 4 if stride == 2 else 3)
            cin, cout, k, _ = shapes.get(name + ".weight", default)
            conv[name] = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=1)
            if not last:
                conv[name + "_lrelu"] = nn.LeakyReLU(slope)
            c_prev = cout
        self.up = nn.Sequential(conv)
        self.code_dim = self.fc[0].in_features
        self.size = 256

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.fc(h).view(h.shape[0], -1, 4, 4)
        x = self.up(x)  # BGR, mean-subtracted, 0..255 scale
        mean = torch.tensor(self.BGR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x + mean)[:, [2, 1, 0]] / 255.0).clamp(0, 1)


def _strip(sd: dict) -> dict:
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        for pre in ("G.", "module.", "generator."):
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def load_deepsim_fc6(path: str | Path, code_stats: dict | None = None, fc6_std: float = 3.0,
                     device: str = "cpu") -> tuple[DeePSimFC6, dict]:
    """Load the published DeePSim fc6 generator (PyTorch port; see the module docstring)."""
    sd = _strip(torch.load(path, weights_only=True, map_location="cpu"))
    missing = [n + ".weight" for n in _FC6_LINEAR + tuple(n for n, _ in _FC6_CONV) if n + ".weight" not in sd]
    if missing:
        raise ValueError(f"{path}: not a DeePSim fc6 generator state dict; missing {', '.join(missing[:4])}")
    G = DeePSimFC6({k: tuple(v.shape) for k, v in sd.items()})
    own = {}
    for name in _FC6_LINEAR:
        own[f"fc.{name}.weight"], own[f"fc.{name}.bias"] = sd[name + ".weight"], sd[name + ".bias"]
    for name, _ in _FC6_CONV:
        own[f"up.{name}.weight"], own[f"up.{name}.bias"] = sd[name + ".weight"], sd[name + ".bias"]
    G.load_state_dict({k: v.float() for k, v in own.items()})
    G.eval().to(device)
    for p in G.parameters():
        p.requires_grad_(False)
    d = G.code_dim
    stats = code_stats or {"mean": torch.zeros(d), "std": torch.full((d,), float(fc6_std))}
    return G, {"format": "deepsim-fc6", "code_stats": stats,
               "encoder": {"encoder": "alexnet", "encoder_layer": "fc6"}, "config": {"size": 256, "code_dim": d}}


def load_any_generator(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """This project's generator file, or — when it is not one — the published DeePSim fc6 generator
    (PyTorch port; its code is AlexNet's fc6). Returns ``(G, meta)``; raises ``ValueError`` with one
    line saying why when the file is neither."""
    try:
        return load_generator(path, device=device)
    except ValueError as own:
        try:
            return load_deepsim_fc6(path, device=device)
        except (ValueError, KeyError, RuntimeError) as fc6:
            raise ValueError(f"{path}: neither this project's generator format ({own}) nor the DeePSim fc6 "
                             f"layout ({fc6})") from None
    except Exception as e:  # not a (safe) PyTorch file at all: truncated, corrupt, pickled code
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path}: cannot be read as a PyTorch weights file ({type(e).__name__}: {msg})") from None


def read_measurement(path: str | Path, gen_id: str, command: str) -> tuple[dict | None, str | None]:
    """A JSON measurement written beside a generator file (``.eval.json``, ``.judge.json``) if it was
    measured with that file (``"generator_sha256"`` equal to ``gen_id``): ``(table, None)``;
    ``(None, None)`` when there is none; ``(None, why)`` when it is unreadable or belongs to another
    generator file — a table measured with another generator must never be shown as this one's.
    ``command`` is what remeasures it (named in ``why``)."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path.name} could not be read ({type(e).__name__})"
    if not isinstance(table, dict) or table.get("generator_sha256") != gen_id:
        return None, f"{path.name} was measured with another generator file; rerun `{command}`"
    return table, None


# --------------------------------------------------------------- what the evaluation's numbers say


def units_claim(units: dict | None) -> dict | None:
    """The hidden-unit row of the method page, computed from the evaluation's numbers: how many of
    the *evaluated* units (``units``: labels "<layer>:<channel>", ``dgn_am_activation``, ``val_p99``)
    beat their own 99th percentile, which layers they come from, and the ones that did not."""
    if not units or not units.get("units"):
        return None
    labels = list(units["units"])
    acts = [float(a) for a in units.get("dgn_am_activation", [])]
    p99 = [float(p) for p in units.get("val_p99", [])]
    if len(acts) != len(labels) or len(p99) != len(labels):
        return None
    beat = [a > p for a, p in zip(acts, p99)]
    layers = list(dict.fromkeys(lab.split(":")[0] for lab in labels))
    return {"n": len(labels), "n_beat": sum(beat), "layers": layers, "n_val_images": units.get("n_val_images"),
            "missed": [{"unit": lab, "act": a, "p99": p} for lab, a, p, b in zip(labels, acts, p99, beat) if not b]}


UNREACHED = ("not raised: this layer's output passes a rectifier (ReLU/ReLU6) and the unit's input at the "
             "centre is below zero, where the rectifier passes no gradient, so the ascent could not move it")
NEGATIVE = "below zero: the ascent did not make this unit fire"


def unit_note(act: float) -> str | None:
    """Why a hidden unit's DGN-AM activation is shown as it is (None when there is nothing to say):
    exactly 0 is a rectified unit the ascent got no gradient from; below 0, one it did not raise."""
    if act == 0:
        return UNREACHED
    return NEGATIVE if act < 0 else None
