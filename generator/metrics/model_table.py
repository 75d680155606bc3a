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

import dataclasses
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import imagenet
from ..images import ImageRejected, load_rgb


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


def read_wnid_map(folder: str | Path) -> dict[str, int]:
    """WordNet id → ImageNet-1k index of the class folders of ``folder``: a delegate of
    :func:`generator.imagenet.folder_wnids` (kept for old callers)."""
    return imagenet.folder_wnids(folder)


def list_imagefolder(folder: str | Path, wnid_map: Mapping[str, int] | None = None,
                     max_images: int | None = None) -> list[tuple[Path, int]]:
    """(path, ImageNet index) for an ImageFolder whose class folders are WordNet ids, balanced over
    the classes when cut to ``max_images``: a delegate of :func:`generator.imagenet.imagefolder`."""
    return imagenet.imagefolder(folder, max_images, wnid_map)


@torch.no_grad()
def accuracy_counts(
    net: Callable[[torch.Tensor], torch.Tensor],
    spec,
    files: list[tuple[Path, int]],
    classes: Sequence[int],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress=None,
    decode_workers: int = 0,
) -> dict:
    """Hit counts of ``net`` on labelled photo ``files``: ``n``, ``top1``, ``top5``, ``restricted``
    (top-1 among ``classes``, the classes of the whole set) and per class ``[hits, photos]``
    restricted; sum the counts of several sets with :func:`accuracy_from_counts`.

    Preprocessing is the spec's (``spec.preprocess``: shorter side → ``spec.resize_size``,
    centre crop ``spec.input_size``), the same as for the curated photos; photos are opened by
    :func:`generator.images.load_rgb` (its checks and conversions: EXIF orientation, alpha on white,
    16-bit, CMYK; without its 32-px floor, so every photo of the folder counts, as before); one it
    rejects (unreadable, truncated, a decompression bomb) stops the count with an
    :class:`~generator.images.ImageRejected` naming the file. ``decode_workers`` > 0: photos are decoded
    by that many threads, the next batch while the network runs on this one (for a GPU).
    """
    from ..executor import not_network

    cls_t = torch.tensor(sorted(classes))
    out = {"n": 0, "top1": 0, "top5": 0, "restricted": 0, "per_class": {}}
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    for chunk, pils, seconds in _decoded(chunks, decode_workers):
        t0 = time.perf_counter()
        x = spec.preprocess(pils).to(device)
        not_network(seconds + time.perf_counter() - t0)  # decoding and resizing: not network work
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


def _decode(p: Path):
    try:
        return load_rgb(Path(p), min_side=1)[0]
    except ImageRejected as e:
        raise ImageRejected(f"{p}: {e}") from None


def _decoded(chunks: list[list[tuple[Path, int]]], workers: int):
    """(chunk, its decoded photos, seconds the caller waited for them) per chunk, in order; with
    ``workers`` threads the next chunk is decoded while the caller works on this one."""
    if workers <= 0:
        for chunk in chunks:
            t0 = time.perf_counter()
            yield chunk, [_decode(p) for p, _c in chunk], time.perf_counter() - t0
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as ex:
        ahead = [ex.submit(_decode, p) for p, _c in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            now = ahead
            if k + 1 < len(chunks):
                ahead = [ex.submit(_decode, p) for p, _c in chunks[k + 1]]
            t0 = time.perf_counter()
            pils = [f.result() for f in now]
            yield chunk, pils, time.perf_counter() - t0


def accuracy_from_counts(counts: Sequence[dict], classes: Sequence[int]) -> dict:
    """Top-1/top-5 over 1000 classes and top-1 restricted to ``classes`` from summed
    :func:`accuracy_counts` (integer sums: the same in whatever blocks they were counted)."""
    counts = [c if isinstance(c, dict) else dataclasses.asdict(c) for c in counts]
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


@dataclasses.dataclass
class AccuracyCounts:
    """:func:`accuracy_counts` of one block of photos (and the seconds it took)."""

    n: int
    top1: int
    top5: int
    restricted: int
    per_class: dict[int, list[int]]
    seconds: float = 0.0


def decode_workers(device) -> int:
    """Threads that decode photos ahead of the network: on a GPU (which waits for them otherwise) up to 4
    of the cores; on a CPU none (the network's threads use every core)."""
    import os

    return max(0, min(4, (os.cpu_count() or 1) - 1)) if torch.device(device).type == "cuda" else 0


def accuracy_blocks(model, blocks: list[list[tuple[str, int]]], classes: Sequence[int],
                    batch_size: int) -> list[AccuracyCounts]:
    """Hit counts of a registry ``model`` on blocks of labelled photo files (a tick per block)."""
    from ..executor import tick

    out = []
    for files in blocks:
        t0 = time.perf_counter()
        r = accuracy_counts(model.net, model.spec, [(Path(p), c) for p, c in files], classes, batch_size, model.device,
                            decode_workers=decode_workers(model.device))
        out.append(AccuracyCounts(**r, seconds=time.perf_counter() - t0))
        tick(1)
    return out


def architecture_costs(specs: Sequence) -> list[dict]:
    """:func:`architecture_cost` of each registry ``ModelSpec``."""
    return [architecture_cost(spec) for spec in specs]


def curated_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"n", "top1", "top5"}`` of ``logits`` (N×1000) against ImageNet ``labels`` (N)."""
    h = topk_hits(logits, labels)
    return {"n": len(labels), "top1": float(h[1].float().mean()), "top5": float(h[5].float().mean())}
