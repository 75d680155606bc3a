"""Choose an EfficientNet-Lite model's normalisation and resize size by measured accuracy.

``python bench/lite_preprocessing.py efficientnet_lite1 [--folder DIR] [--n 1000] [--sizes 274 272]``

1000-way ImageNet top-1/top-5 on a balanced subset of an ImageFolder whose class folders
are WordNet ids (default: ../shared/imagenette/val, 1,000 photos), for each resize size
crossed with two normalisations: the TensorFlow-style [-1, 1] scaling the packaged
weights were trained with (mean 0.498, std 0.502) and ImageNet mean/std. Each photo is
decoded and resized once per size; both normalisations see the same pixels.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from generator import imagenet
from generator.images import load_rgb
from generator.metrics.model_table import topk_hits
from generator.models import IMAGENET_MEAN, IMAGENET_STD, Normalize, get_spec, load_model

NORMS = {"0.498/0.502": ((0.498,) * 3, (0.502,) * 3), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@torch.no_grad()
def measure(name: str, folder: Path, n: int, sizes: list[int], batch: int = 50) -> dict:
    model = load_model(name)
    files = imagenet.imagefolder(folder, n)
    labels = torch.tensor([c for _p, c in files])
    out = {}
    for size in sizes:
        pre = dataclasses.replace(model.spec.preprocess, resize_size=size)
        logits = {k: [] for k in NORMS}
        for i in range(0, len(files), batch):
            pils = [load_rgb(p, min_side=1)[0] for p, _c in files[i : i + batch]]
            x = pre(pils)
            for k, (mean, std) in NORMS.items():
                logits[k].append(model.net.body(Normalize(mean, std)(x)))
        for k in NORMS:
            hits = topk_hits(torch.cat(logits[k]), labels)
            out[(size, k)] = (float(hits[1].float().mean()), float(hits[5].float().mean()))
            print(f"{name} {pre.resize_with} {pre.interpolation} resize {size} crop {pre.input_size} norm {k}: "
                  f"top-1 {out[(size, k)][0]:.3f} top-5 {out[(size, k)][1]:.3f} (n={len(files)})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "imagenette" / "val")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", help="resize sizes (default: crop/0.875 and crop+32)")
    a = ap.parse_args()
    crop = get_spec(a.model).input_size
    measure(a.model, a.folder, a.n, a.sizes or [round(crop / 0.875), crop + 32])


if __name__ == "__main__":
    main()
