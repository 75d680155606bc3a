"""Model facts for the model table: size, cost and *measured* accuracy.

- parameters: counted on the architecture (no weights needed);
- multiply-adds: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass
  at the model's input size, divided by 2 (it counts a multiply-add as 2 FLOPs),
  run on the ``meta`` device so no memory or time is spent on real tensors;
- accuracy: top-1 / top-5 over photos with a known ImageNet class, and over an
  ImageFolder of labelled photos (Imagenette here) both 1000-way and restricted to
  the folder's classes (argmax over only those logits).

Nothing is estimated or copied from papers: a model without weights gets
parameters and multiply-adds (facts of the architecture) and no accuracy.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def architecture_cost(spec) -> dict:
    """``{"params", "macs", "input_size"}`` of a registry ``ModelSpec`` (meta device)."""
    from ..models import Classifier, build_architecture

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        body = build_architecture(spec)
        net = Classifier(body, spec.mean, spec.std).eval()
        x = torch.zeros(1, 3, spec.input_size, spec.input_size)
    return {"params": count_params(body), "macs": count_macs(net, x), "input_size": spec.input_size}


def count_macs(net: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``net`` on ``example`` (per batch)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(example)
    return int(counter.get_total_flops()) // 2


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, torch.Tensor]:
    """k → bool[B]: is the label among the k highest logits."""
    top = logits.topk(max(ks), dim=1).indices
    labels = labels.to(top.device).view(-1, 1)
    return {k: (top[:, :k] == labels).any(dim=1).cpu() for k in ks}


_ROW = re.compile(r"^\|\s*(n\d{8})\s*\|\s*(\d+)\s*\|")


def read_wnid_map(folder: str | Path) -> dict[str, int]:
    """WordNet id → ImageNet-1k index from a README.md table (``| wnid | index | …``)
    in ``folder`` or its parent. Empty dict if there is none."""
    folder = Path(folder)
    for cand in (folder / "README.md", folder.parent / "README.md"):
        if cand.is_file():
            rows = {m.group(1): int(m.group(2)) for line in cand.read_text(encoding="utf-8").splitlines()
                    if (m := _ROW.match(line.strip()))}
            if rows:
                return rows
    return {}


def list_imagefolder(folder: str | Path, wnid_map: dict[str, int], max_images: int | None = None) -> list[tuple[Path, int]]:
    """(path, ImageNet index) for an ImageFolder whose class folders are WordNet ids.

    With ``max_images`` the subset is balanced: files are taken round-robin over the
    classes, each class in sorted file-name order (deterministic).
    """
    folder = Path(folder)
    per_class: list[list[tuple[Path, int]]] = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name not in wnid_map:
            continue
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        per_class.append([(p, wnid_map[d.name]) for p in files])
    out: list[tuple[Path, int]] = []
    i = 0
    while any(i < len(c) for c in per_class):
        for c in per_class:
            if i < len(c):
                out.append(c[i])
        i += 1
    if max_images is not None and max_images > 0:
        # round-robin order, so the first N are balanced over the classes
        out = out[:max_images]
    return out


@torch.no_grad()
def accuracy_counts(
    net: Callable[[torch.Tensor], torch.Tensor],
    spec,
    files: list[tuple[Path, int]],
    classes: Sequence[int],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress=None,
) -> dict:
    """Hit counts of ``net`` on labelled photo ``files``: ``n``, ``top1``, ``top5``, ``restricted``
    (top-1 among ``classes``, the classes of the whole set) and per class ``[hits, photos]``
    restricted; sum the counts of several sets with :func:`accuracy_from_counts`.

    Preprocessing is the spec's (``spec.preprocess``: shorter side → ``spec.resize_size``,
    centre crop ``spec.input_size``), the same as for the curated photos.
    """
    from PIL import Image

    cls_t = torch.tensor(sorted(classes))
    out = {"n": 0, "top1": 0, "top5": 0, "restricted": 0, "per_class": {}}
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        pils = []
        for p, _c in chunk:
            with Image.open(p) as im:
                pils.append(im.convert("RGB"))
        x = spec.preprocess(pils).to(device)
        logits = net(x).float().cpu()
        labels = torch.tensor([c for _p, c in chunk])
        h = topk_hits(logits, labels)
        hr = cls_t[logits[:, cls_t].argmax(dim=1)] == labels
        out["n"] += len(chunk)
        out["top1"] += int(h[1].sum())
        out["top5"] += int(h[5].sum())
        out["restricted"] += int(hr.sum())
        for lab, ok in zip(labels.tolist(), hr.tolist()):
            hit = out["per_class"].setdefault(int(lab), [0, 0])
            hit[0] += int(ok)
            hit[1] += 1
        if progress is not None:
            progress.update(len(chunk))
    return out


def accuracy_from_counts(counts: Sequence[dict], classes: Sequence[int]) -> dict:
    """Top-1/top-5 over 1000 classes and top-1 restricted to ``classes`` from summed
    :func:`accuracy_counts` (integer sums: the same in whatever blocks they were counted)."""
    n = sum(c["n"] for c in counts)
    per_class = {int(k): [0, 0] for k in sorted(classes)}
    for c in counts:
        for k, (a, t) in c["per_class"].items():
            per_class[int(k)][0] += a
            per_class[int(k)][1] += t
    rate = (lambda key: sum(c[key] for c in counts) / n if n else float("nan"))
    return {
        "n": n,
        "n_classes": len(per_class),
        "top1": rate("top1"),
        "top5": rate("top5"),
        "top1_restricted": rate("restricted"),
        "per_class_restricted": {k: (a / t if t else float("nan")) for k, (a, t) in per_class.items()},
    }
