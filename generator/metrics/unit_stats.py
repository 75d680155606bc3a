"""Unit statistics for the atlas: which photos of a folder drive each unit hardest, and where.

The folder is streamed in batches (read and decoded once for all models: the atlas
stage); for every channel of every chosen layer a running top-k keeps the ``k`` images
with the largest *maximum* activation of that channel and the position of that maximum
(Zeiler & Fergus 2014, Fig. 2:
"the top 9 activations in a random subset of feature maps across the validation
data"). Memory is bounded by ``channels × (k + batch)`` per layer: activations of
one batch are reduced to per-image maxima and then dropped.

Alongside, per unit, a histogram of the per-image maximum over the whole folder is
accumulated with *power-of-two bins*: bin width ``2**e`` per channel, ``n_neg``
bins below zero and ``n_pos`` above, ``e`` growing (and neighbouring bins merging
exactly) whenever a value falls outside. The final ``e`` is the smallest power of
two that fits every value, so the histogram does not depend on the order of the
images or the batch size.

The stream is resumable: :class:`AtlasState` is a plain dict of tensors that the
caller checkpoints (``to_dict``/``from_dict``) and restarts from ``state.done``.

For the kept examples, :func:`unit_crops` crops the receptive-field patch of the
image at the unit's position (:mod:`generator.receptive_field`) and the deconvnet
projection of that single activation (:func:`generator.methods.neuron_deconv.project_activations`),
both at the same box; :func:`generator.render.unit_tiles` turns them into small uint8 tiles.
The folder itself is listed and loaded by :mod:`generator.image_folder`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import image_folder
from ..executor import not_network, tick
from ..methods.base import capture_outputs, output_shapes, prepared
from ..methods.neuron_deconv import project_activations
from ..receptive_field import crop_patch, receptive_field
from ..render import signed_to_rgb


def reduce_max(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B×C×h×w (or B×C) → (per-image, per-channel maximum B×C, its (y, x) B×C×2).
    The first maximum in row-major order wins ties."""
    a = act.detach()
    if a.ndim == 2:
        a = a[:, :, None, None]
    B, C, h, w = a.shape
    best, where = a.reshape(B, C, h * w).max(2)
    return best.float(), torch.stack([where // w, where % w], 2)


def capture_maxima(modules: dict[str, nn.Module]):
    """:func:`generator.methods.base.capture_outputs` with each output reduced to
    :func:`reduce_max` inside the hook (before any later in-place op can touch it, and
    without keeping the activation)."""
    return capture_outputs(modules, reduce=reduce_max)


class RunningTopK:
    """Per channel, the ``k`` largest per-image maxima seen so far, with the image
    index and the (y, x) of the maximum. Ties keep the earlier image."""

    def __init__(self, channels: int, k: int) -> None:
        self.k = k
        self.values = torch.full((channels, k), float("-inf"))
        self.index = torch.full((channels, k), -1, dtype=torch.long)
        self.pos = torch.zeros((channels, k, 2), dtype=torch.long)

    def update(self, act: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """``act``: B×C×h×w (or B×C) activations of images ``image_index`` [B]; returns the
        per-image maxima B×C (for the histogram)."""
        best, pos = reduce_max(act)
        self.update_reduced(best, pos, image_index)
        return best

    def update_reduced(self, best: torch.Tensor, pos: torch.Tensor, image_index: torch.Tensor) -> None:
        """``best``: B×C per-image maxima, ``pos``: B×C×2 their (y, x)."""
        best, pos = best.float().cpu(), pos.cpu()
        B, C = best.shape
        cand_v = torch.cat([self.values, best.T], 1)  # C × (k + B)
        cand_i = torch.cat([self.index, image_index.cpu().view(1, B).expand(C, B)], 1)
        cand_p = torch.cat([self.pos, pos.transpose(0, 1)], 1)
        order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = cand_v.gather(1, order)
        self.index = cand_i.gather(1, order)
        self.pos = cand_p.gather(1, order[..., None].expand(-1, -1, 2))

    def to_dict(self) -> dict:
        return {"k": self.k, "values": self.values, "index": self.index, "pos": self.pos}

    @classmethod
    def from_dict(cls, d: dict) -> "RunningTopK":
        t = cls(d["values"].shape[0], int(d["k"]))
        t.values, t.index, t.pos = d["values"], d["index"], d["pos"]
        return t


class MaxHistogram:
    """Per-channel histogram of per-image maxima with power-of-two bin widths.

    Bin ``j`` of channel c covers ``[(j - n_neg)·2**e_c, (j - n_neg + 1)·2**e_c)``.
    """

    E_MIN = -40

    def __init__(self, channels: int, n_pos: int = 48, n_neg: int = 16) -> None:
        self.n_pos, self.n_neg = n_pos, n_neg
        self.counts = torch.zeros(channels, n_pos + n_neg, dtype=torch.long)
        self.exp = torch.full((channels,), self.E_MIN, dtype=torch.long)
        self.n = 0
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.active = torch.zeros(channels, dtype=torch.long)  # images with max > 0

    def update(self, v: torch.Tensor) -> None:
        v = v.detach().double().cpu()  # B × C
        v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
        need = torch.maximum(v.clamp(min=0).max(0).values / self.n_pos, (-v).clamp(min=0).max(0).values / self.n_neg)
        e_need = torch.where(need > 0, torch.floor(torch.log2(need.clamp(min=1e-300))).long() + 1,
                             torch.full_like(self.exp, self.E_MIN))
        # log2 rounding: make sure every value fits
        e_need = torch.where(need >= torch.pow(2.0, e_need.double()), e_need + 1, e_need)
        new_exp = torch.maximum(self.exp, e_need)
        d = (new_exp - self.exp).clamp(max=62)
        if (d > 0).any():
            p = torch.arange(-self.n_neg, self.n_pos).view(1, -1).expand_as(self.counts)
            p_new = torch.bitwise_right_shift(p, d.view(-1, 1))  # floor division by 2**d
            merged = torch.zeros_like(self.counts)
            merged.scatter_add_(1, (p_new + self.n_neg).clamp(0, self.counts.shape[1] - 1), self.counts)
            self.counts = merged
            self.exp = new_exp
        width = torch.pow(2.0, self.exp.double())
        j = (torch.floor(v / width).long() + self.n_neg).clamp(0, self.counts.shape[1] - 1)  # B × C
        self.counts.scatter_add_(1, j.T, torch.ones_like(j.T))
        self.n += v.shape[0]
        self.sum += v.sum(0)
        self.active += (v > 0).sum(0)

    def edges(self, c: int) -> torch.Tensor:
        w = 2.0 ** int(self.exp[c])
        return torch.arange(-self.n_neg, self.n_pos + 1, dtype=torch.float64) * w

    def to_dict(self) -> dict:
        return {"n_pos": self.n_pos, "n_neg": self.n_neg, "counts": self.counts, "exp": self.exp, "n": self.n,
                "sum": self.sum, "active": self.active}

    @classmethod
    def from_dict(cls, d: dict) -> "MaxHistogram":
        h = cls(d["counts"].shape[0], int(d["n_pos"]), int(d["n_neg"]))
        h.counts, h.exp, h.n, h.sum, h.active = d["counts"], d["exp"], int(d["n"]), d["sum"], d["active"]
        return h


@dataclass
class AtlasState:
    """Everything the stream accumulates for one model; ``done`` = position in the
    list of selected indices where the stream resumes."""

    topk: dict[str, RunningTopK]
    hist: dict[str, MaxHistogram]
    pred: torch.Tensor  # [n_files] top-1 predicted class per file (-1: not seen / unreadable)
    done: int = 0
    failed: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, channels: dict[str, int], k: int, n_files: int, bins: tuple[int, int] = (48, 16)) -> "AtlasState":
        return cls({n: RunningTopK(c, k) for n, c in channels.items()},
                   {n: MaxHistogram(c, *bins) for n, c in channels.items()},
                   torch.full((n_files,), -1, dtype=torch.long))

    def to_dict(self) -> dict:
        return {"topk": {n: t.to_dict() for n, t in self.topk.items()},
                "hist": {n: h.to_dict() for n, h in self.hist.items()},
                "pred": self.pred, "done": self.done, "failed": list(self.failed)}

    @classmethod
    def from_dict(cls, d: dict) -> "AtlasState":
        return cls({n: RunningTopK.from_dict(t) for n, t in d["topk"].items()},
                   {n: MaxHistogram.from_dict(h) for n, h in d["hist"].items()},
                   d["pred"], int(d["done"]), [int(i) for i in d["failed"]])


def merge_states(states: Sequence[AtlasState]) -> AtlasState:
    """One state from the states of consecutive chunks of the selection, in order: the
    same top-k (ties keep the earlier image), histogram counts, predictions and failures
    as one stream over all of them (sums up to float64 rounding)."""
    first = states[0]
    out = AtlasState({n: RunningTopK.from_dict(t.to_dict()) for n, t in first.topk.items()},
                     {n: MaxHistogram.from_dict({**h.to_dict(), "counts": h.counts.clone(), "sum": h.sum.clone(),
                                                 "active": h.active.clone()}) for n, h in first.hist.items()},
                     first.pred.clone(), first.done, list(first.failed))
    for st in states[1:]:
        for n, t in st.topk.items():
            _merge_topk(out.topk[n], t)
        for n, h in st.hist.items():
            _merge_hist(out.hist[n], h)
        out.pred = torch.where(st.pred >= 0, st.pred, out.pred)
        out.done += st.done
        out.failed.extend(st.failed)
    return out


def _merge_topk(a: RunningTopK, b: RunningTopK) -> None:
    """Keep in ``a`` the top-k of both, ``a``'s entries first among equal values (the earlier images)."""
    cand_v, cand_i, cand_p = torch.cat([a.values, b.values], 1), torch.cat([a.index, b.index], 1), \
        torch.cat([a.pos, b.pos], 1)
    order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, : a.k]
    a.values, a.index = cand_v.gather(1, order), cand_i.gather(1, order)
    a.pos = cand_p.gather(1, order[..., None].expand(-1, -1, 2))


def _merge_hist(a: MaxHistogram, b: MaxHistogram) -> None:
    """Add ``b`` into ``a``: both re-binned to the wider bins (power-of-two widths nest, so the
    counts are those one stream over both would have)."""
    exp = torch.maximum(a.exp, b.exp)
    p = torch.arange(-a.n_neg, a.n_pos).view(1, -1).expand_as(a.counts)
    counts = torch.zeros_like(a.counts)
    for h in (a, b):
        d = (exp - h.exp).clamp(max=62)
        p_new = torch.bitwise_right_shift(p, d.view(-1, 1))
        counts.scatter_add_(1, (p_new + a.n_neg).clamp(0, a.counts.shape[1] - 1), h.counts)
    a.counts, a.exp = counts, exp
    a.n += b.n
    a.sum = a.sum + b.sum
    a.active = a.active + b.active


def layer_channels(net: nn.Module, modules: dict[str, nn.Module], input_size: int) -> dict[str, int]:
    """Channel count of each module's output (one tiny forward pass)."""
    return {n: shape[0] for n, shape in output_shapes(net, modules, input_size).items()}


@torch.inference_mode()
def stream_topk(net: nn.Module, modules: dict[str, nn.Module], batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                state: AtlasState, on_batch: Callable[[AtlasState, int], None] | None = None,
                channels_last: bool = False) -> AtlasState:
    """Feed batches (images, file indices, ok mask) through ``net``, updating ``state``.

    ``on_batch(state, n)`` is called after each batch of ``n`` images (checkpointing,
    progress). Only per-image maxima leave this function; activations are reduced
    inside the forward hooks. ``channels_last``: feed NHWC inputs (pair with
    :func:`streaming_copy`).
    """
    dev = next(net.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, idx, ok in batches:
        n = len(idx)
        if ok.any():
            xs, ids = x[ok].to(dev).contiguous(memory_format=fmt), idx[ok]
            with capture_maxima(modules) as red:
                logits = net(xs)
            state.pred[ids] = logits.argmax(1).cpu()
            for name in modules:
                best, pos = red[name]
                state.topk[name].update_reduced(best, pos, ids)
                state.hist[name].update(best)
        state.failed.extend(int(i) for i in idx[~ok])
        state.done += n
        if on_batch is not None:
            on_batch(state, n)
    return state


def streaming_copy(net: nn.Module, modules: dict[str, nn.Module], channels_last: bool = True) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A channels-last copy of ``net`` (2–2.5× faster for depthwise-conv nets on CPU)
    and the matching modules; the original is left as it is."""
    if not channels_last:
        return net, modules
    paths = {n: next(p for p, m in net.named_modules() if m is mod) for n, mod in modules.items()}
    cp = copy.deepcopy(net).to(memory_format=torch.channels_last)
    return cp, {n: cp.get_submodule(p) for n, p in paths.items()}


# ---------------------------------------------------------------------------------
# Patches and projections of kept examples


def display_boxes(net: nn.Module, module: nn.Module, input_size: int, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped boxes, display boxes) for unit positions ``pos`` [N, 2].

    The display box is the unclipped receptive field when it fits in the image (a unit
    at the border gets a grey margin where its field leaves the picture), else the
    clipped box (fields larger than the image: the part of the image it sees).
    """
    rf = receptive_field(net, module, (input_size, input_size))
    clipped = rf.boxes(pos, clip=True)
    size = rf.size
    if size[0] <= input_size and size[1] <= input_size:
        return clipped, rf.boxes(pos, clip=False)
    return clipped, clipped


def unit_crops(net: nn.Module, module: nn.Module, images: torch.Tensor, picks: torch.Tensor,
               projection_batch: int = 16, projections: bool = True, rule: str = "deconvnet",
               fast: tuple[nn.Module, nn.Module] | None = None) -> dict:
    """Receptive-field patches and deconvnet projections of single activations.

    ``images``: M×3×S×S pixel-space inputs; ``picks``: LongTensor[N, 4] rows
    ``(row in images, channel, y, x)``. Returns, per pick, ``patches`` (3×h×w crops in
    [0, 1] at the display box: a grey canvas of the field's full size when the field passes
    the image border), ``marks`` (when the field is larger than the image, the image is
    shown whole and ``marks[i]`` is the unit's centre cell (one stride) as a box inside the
    crop; else None), ``deconv`` (the projection crops at the same boxes, shown with
    :func:`generator.render.signed_to_rgb`; empty without projections), and the
    clipped ``boxes`` [N, 4] and ``display`` boxes. Tiles: :func:`generator.render.unit_tiles`.

    ``rule``: "deconvnet" (Zeiler & Fergus) or "guided" (guided backprop from the
    neuron). ``fast``: a channels-last copy of (net, module) from
    :func:`streaming_copy` to run the projections on (same numbers, ~2× faster on CPU).
    """
    S = images.shape[-1]
    picks = torch.as_tensor(picks, dtype=torch.long).reshape(-1, 4)
    clipped, shown = display_boxes(net, module, S, picks[:, 2:])
    rf = receptive_field(net, module, (S, S))
    big = not (rf.size[0] <= S and rf.size[1] <= S)
    proj = None
    if projections and len(picks):
        projection_net, projection_module, projection_images = net, module, images
        if fast is not None:
            projection_net, projection_module = fast
            projection_images = images.contiguous(memory_format=torch.channels_last)
        proj = project_activations(projection_net, projection_module, projection_images, picks, rule=rule,
                                   batch_size=projection_batch).float().cpu()
    patches, marks, deconv = [], [], []
    cpu_images = images.cpu()
    for i in range(len(picks)):
        box, dbox = clipped[i].tolist(), shown[i].tolist()
        y0, x0, y1, x1 = box
        patches.append(crop_patch(cpu_images[picks[i, 0]], box, dbox, fill=0.5))
        mark = None
        if big and rf.y is not None and rf.x is not None:
            cy = int(picks[i, 2]) * rf.y.stride + rf.y.offset + rf.y.size // 2 - y0
            cx = int(picks[i, 3]) * rf.x.stride + rf.x.offset + rf.x.size // 2 - x0
            sy, sx = rf.y.stride, rf.x.stride
            mark = (cy - sy // 2, cx - sx // 2, cy + (sy + 1) // 2, cx + (sx + 1) // 2)
        marks.append(mark)
        if proj is not None:
            # normalised on the field's crop, then placed in the same grey canvas as the patch
            dy0, dx0, dy1, dx1 = dbox
            shown_projection = signed_to_rgb(proj[i, None, :, y0:y1, x0:x1])[0]
            deconv.append(F.pad(shown_projection, (x0 - dx0, dx1 - x1, y0 - dy0, dy1 - y1), value=0.5))
    return {"patches": patches, "marks": marks, "deconv": deconv, "boxes": clipped, "display": shown}


# ---------------------------------------------------------------------------------
# the atlas stream as keyed work (generator.executor.compute)


class FastCopy:
    """One fast copy of a model per stage run, made only when needed: batch norm folded into the
    convolutions and channels-last (:func:`methods.base.prepared`, same logits), or — for layers
    whose output folding would change — a plain channels-last copy."""

    def __init__(self, model, cfg) -> None:
        self.model, self.enabled = model, bool(cfg["channels_last"]) and model.device.type == "cpu"
        self._net = self._prep = None

    def get(self, layers: list[str]) -> tuple:
        modules = {n: self.model.module(n) for n in layers}
        if not self.enabled:
            return self.model.net, modules
        paths = [self.model.module_path(n) for n in layers]
        if self._prep is None:
            size = self.model.spec.input_size
            probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.model.device)
            self._prep = prepared(self.model.net, probe)
        if self._prep.pairs and all(self._prep.safe_path(q) for q in paths):
            net = self._prep.net
        else:
            if self._net is None:
                self._net, _ = streaming_copy(self.model.net, {}, True)
            net = self._net
        return net, {n: net.get_submodule(q) for n, q in zip(layers, paths)}


def stream_parts(items: list[tuple], listing: image_folder.FolderListing, cfg: dict, cache=None,
                 keys: list[dict] | None = None) -> list[dict]:
    """The stream states of ``items`` (``(model, layers, photo indices)``), one result each:
    ``{"state", "seconds", "decode"}``. Items over the same photos share one decode. With a
    ``cache``, a long stream checkpoints every ``cfg["checkpoint_every"]`` photos under its key
    (``keys``) plus ``partial`` and resumes from there."""
    out: list[dict | None] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (_m, _l, part) in enumerate(items):
        groups.setdefault(tuple(part), []).append(i)
    for part, members in groups.items():
        part = list(part)
        pending = []
        for i in members:
            model, layers, _ = items[i]
            partial = {**keys[i], "partial": True} if cache is not None and keys else None
            saved = cache.get(partial) if partial is not None else None
            if saved is not None:
                state = AtlasState.from_dict(saved)
            else:
                channels = layer_channels(model.net, {n: model.module(n) for n in layers},
                                                     model.spec.input_size)
                state = AtlasState.empty(channels, cfg["top_k"], len(listing),
                                                    (cfg["hist_bins"], max(4, cfg["hist_bins"] // 3)))
            copy = FastCopy(model, cfg)
            net, mods = copy.get(layers)
            pending.append({"i": i, "model": model, "state": state, "partial": partial, "since": 0, "net": net,
                            "mods": mods, "fast": copy.enabled, "seconds": 0.0})
        todo = [p for p in pending if p["state"].done < len(part)]
        decode = resize = 0.0
        if todo:
            start = min(p["state"].done for p in todo)
            pos = start
            t0 = time.perf_counter()
            for pils, idx, ok in image_folder.iterate_decoded(listing, part[start:], cfg["batch_size"],
                                                              int(cfg.get("workers") or 0)):
                decode += time.perf_counter() - t0
                n = len(idx)
                for p in todo:
                    st = p["state"]
                    off = st.done - pos  # > 0: this model's checkpoint is inside or past this batch
                    if off >= n:
                        continue
                    t1 = time.perf_counter()
                    sl = slice(max(0, off), n)
                    x = image_folder.to_inputs(pils[sl], p["model"].spec.preprocess)
                    resize += time.perf_counter() - t1
                    stream_topk(p["net"], p["mods"], [(x, idx[sl], ok[sl])], st, channels_last=p["fast"])
                    p["since"] += len(x)
                    if p["partial"] is not None and p["since"] >= cfg["checkpoint_every"] and st.done < len(part):
                        cache.put(p["partial"], st.to_dict())
                        p["since"] = 0
                    p["seconds"] += time.perf_counter() - t1
                pos += n
                tick(n * len(todo))
                t0 = time.perf_counter()
        not_network(decode + resize)  # photo decoding and resizing: not network work (generator.executor)
        for p in pending:
            out[p["i"]] = {"state": p["state"].to_dict(), "seconds": p["seconds"], "decode": decode}
            if p["partial"] is not None:
                cache.path(p["partial"]).unlink(missing_ok=True)
    return out  # type: ignore[return-value]
