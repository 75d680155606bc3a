"""Forward passes of copies of an image that differ from it only inside a box (occlusion),
recomputing only what the box can reach.

A convolution's output at a position depends only on a small window of its input, so a grey
square changes only a block of each layer's output, which grows by the kernel's reach per
layer. For the copies of an occlusion map, :class:`PatchForward` computes every layer of the
image once (the *base*), and per copy only that block of each layer — from a crop of the base
with the copy's changed block pasted in — up to the end of the network's local part; the rest
(global pooling, fully connected layers) then runs on the base's last activation with the
block pasted in. On torchvision's AlexNet (224 px) a 32-pixel square changes 4 % of the first
convolution's output, 17 % of the second's and all of the fifth's — about half of the
arithmetic of a copy is skipped; on VGG16, whose layers reach less far each, about four fifths.

A network qualifies when it is a :class:`~generator.models.Classifier` (per-pixel
normalisation, then ``body``) whose body's first child is an ``nn.Sequential`` of local layers
(``Conv2d`` with zero padding and no dilation, ``MaxPool2d`` without dilation or ceil mode,
and per-position layers: rectifiers, eval-mode ``BatchNorm2d``, ``Dropout``, ``Identity``)
that ``body.forward`` applies first, as in torchvision's AlexNet and VGG (``features``).
:func:`patch_forward` checks that on an example (the logits of the base and of one occluded
copy against the network's own) and returns ``None`` for any other network, whose copies
then run whole. In float32 a convolution over a crop can round differently from the same
positions of the whole image: logits agree to ~1e-6 relative.
"""
from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import state_key

POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Dropout, nn.Identity, nn.BatchNorm2d)


@dataclass(frozen=True)
class _Spatial:
    """A layer whose output position ``o`` (per axis) reads input ``o·s − p … o·s − p + k − 1``."""

    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]
    pad_value: float
    run: Callable[[torch.Tensor], torch.Tensor]  # the layer with padding 0 (the input comes padded)

    def out_size(self, n: int, axis: int) -> int:
        return (n + 2 * self.p[axis] - self.k[axis]) // self.s[axis] + 1

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.p
        return F.pad(x, (pw, pw, ph, ph), value=self.pad_value) if ph or pw else x


def _spatial(m: nn.Module) -> _Spatial | None:
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros" or pair(m.dilation) != (1, 1):
            return None
        return _Spatial(pair(m.kernel_size), pair(m.stride), pair(m.padding), 0.0,
                        lambda t, m=m: F.conv2d(t, m.weight, m.bias, m.stride, 0, 1, m.groups))
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or pair(m.dilation) != (1, 1) or m.return_indices:
            return None
        k, s = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
        return _Spatial(k, s, pair(m.padding), float("-inf"), lambda t, k=k, s=s: F.max_pool2d(t, k, s, 0))
    return None


class _Given(nn.Module):
    """Stands in for the local part in the copy of the network that runs the rest: returns
    the activation it was given, whatever its input."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return self.value


@dataclass(frozen=True)
class Plan:
    """What one occluded copy recomputes, per spatial layer: where its crop of the layer's padded
    input starts (row, col), and where the block changed by the layers before goes in the crop
    (``(dst0, dst1, src0, src1)`` per axis); and the block of the last layer's output it
    replaces (rows ``a0 … a1 − 1``, cols ``b0 … b1 − 1``). The copies of one call to
    :meth:`PatchForward.plans` share every crop size, so they run as one batch."""

    starts: tuple[tuple[int, int], ...]
    paste: tuple[tuple[tuple[int, int, int, int], tuple[int, int, int, int]], ...]
    block: tuple[int, int, int, int]


def _axis_plans(ops: list[_Spatial], n: int, spans: list[tuple[int, int]], axis: int
                ) -> tuple[list[int], list[list[int]], list[list[tuple[int, int, int, int]]], list[tuple[int, int]]]:
    """Along one axis of an input of size ``n``, for copies whose positions ``a … b − 1``
    (``spans``) changed: per spatial layer one crop length for all copies, and per copy the
    crop's start in the padded input and where its changed block goes in the crop; then each
    copy's changed block of the last layer's output. A copy whose changed output is shorter
    than the longest one's recomputes a few more positions (they equal the base's), so that
    every copy's crop has the same size."""
    lengths, starts, pastes = [], [[] for _ in spans], [[] for _ in spans]
    for op in ops:
        k, s, p = op.k[axis], op.s[axis], op.p[axis]
        n_out = op.out_size(n, axis)
        outs = []
        for a, b in spans:
            lo, hi = max(0, (a + p - k) // s + 1), min(n_out, -(-(b + p) // s))
            outs.append((lo, max(hi, lo + 1)))  # (a change between the layer's windows: one position, equal to the base)
        m = min(n_out, max(hi - lo for lo, hi in outs))
        lengths.append((m - 1) * s + k)
        new = []
        for q, ((a, b), (lo, _hi)) in enumerate(zip(spans, outs)):
            lo = max(0, min(lo, n_out - m))
            c0, c1 = lo * s, (lo + m - 1) * s + k  # the crop of the padded input
            i0, i1 = max(a + p, c0), min(b + p, c1)  # where the changed block lies in it
            starts[q].append(c0)
            pastes[q].append((i0 - c0, i1 - c0, i0 - (a + p), i1 - (a + p)))
            new.append((lo, lo + m))
        n, spans = n_out, new
    return lengths, starts, pastes, spans


class PatchForward:
    """Logits of occluded copies of images through a :class:`~generator.models.Classifier`
    whose body starts with a local ``nn.Sequential`` (see the module docstring)."""

    def __init__(self, net: nn.Module, child: str, stages: list[tuple[_Spatial | None, list[nn.Module]]]) -> None:
        self.stages = stages  # (spatial layer, or None first; the per-position layers after it)
        self.ops = [op for op, _ in stages[1:]]
        self._given = _Given()
        body = copy.copy(net.body)  # shares every parameter and hook; only the local part is swapped
        body._modules = OrderedDict(net.body._modules)
        body._modules[child] = self._given
        rest = copy.copy(net)  # (holds no reference to ``net`` itself: the cache is keyed by it, weakly)
        rest._modules = OrderedDict(net._modules)
        rest._modules["body"] = body
        self._rest = rest

    @staticmethod
    def _pointwise(mods: list[nn.Module], t: torch.Tensor) -> torch.Tensor:
        for m in mods:
            t = m(t)
        return t

    def base(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """For images ``x``: every spatial layer's padded input, and the local part's output."""
        t = self._pointwise(self.stages[0][1], x)
        padded = []
        for op, after in self.stages[1:]:
            padded.append(op.pad(t))
            t = self._pointwise(after, op.run(padded[-1]))
        return padded, t

    def rest(self, last: torch.Tensor) -> torch.Tensor:
        """Logits from the local part's output ``last``."""
        self._given.value = last
        try:
            return self._rest(last.new_zeros(len(last), 3, 1, 1))
        finally:
            self._given.value = None

    def plans(self, size: tuple[int, int], boxes: list[tuple[int, int]], h: int, w: int
              ) -> tuple[tuple[list[int], list[int]], list[Plan]]:
        """The crop lengths (per spatial layer, rows and cols) and the :class:`Plan` of each copy
        occluded in an ``h × w`` square at ``boxes`` (y0, x0) of an input of ``size`` = (H, W)."""
        (H, W) = size
        ly, ys, py, ry = _axis_plans(self.ops, H, [(y0, y0 + h) for y0, _ in boxes], 0)
        lx, xs, px, rx = _axis_plans(self.ops, W, [(x0, x0 + w) for _, x0 in boxes], 1)
        return (ly, lx), [Plan(tuple(zip(ys[q], xs[q])), tuple(zip(py[q], px[q])), (*ry[q], *rx[q]))
                          for q in range(len(boxes))]

    def occluded_logits(self, base: tuple[list[torch.Tensor], torch.Tensor], lengths: tuple[list[int], list[int]],
                        images: list[int], plans: list[Plan], h: int, w: int, fill: float) -> torch.Tensor:
        """Logits of copies of the images ``images`` (indices into ``base``), copy ``q`` grey
        (``fill``, pixel space) in the ``h × w`` square of ``plans[q]`` (plans and ``lengths``
        from one call to :meth:`plans`)."""
        padded, last = base
        patch = self._pointwise(self.stages[0][1], last.new_full((len(images), 3, h, w), fill))
        for j, (op, after) in enumerate(self.stages[1:]):
            ly, lx = lengths[0][j], lengths[1][j]
            crops = torch.stack([padded[j][i, :, p.starts[j][0] : p.starts[j][0] + ly, p.starts[j][1] : p.starts[j][1] + lx]
                                 for i, p in zip(images, plans)])
            for q, p in enumerate(plans):
                (dy0, dy1, sy0, sy1), (dx0, dx1, sx0, sx1) = p.paste[j]
                crops[q, :, dy0:dy1, dx0:dx1] = patch[q, :, sy0:sy1, sx0:sx1]
            patch = self._pointwise(after, op.run(crops))
        full = last[images].clone()
        for q, p in enumerate(plans):
            a0, a1, b0, b1 = p.block
            full[q, :, a0:a1, b0:b1] = patch[q]
        return self.rest(full)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, PatchForward | None]]" = weakref.WeakKeyDictionary()


def _build(net: nn.Module) -> PatchForward | None:
    from ..models import Classifier, Normalize

    if not isinstance(net, Classifier) or not isinstance(net.normalize, Normalize) or net.training:
        return None
    children = list(net.body.named_children())
    if not children or not isinstance(children[0][1], nn.Sequential):
        return None
    child, seq = children[0]
    stages: list[tuple[_Spatial | None, list[nn.Module]]] = [(None, [net.normalize])]
    for m in seq:
        op = _spatial(m)
        if op is not None:
            stages.append((op, []))
        elif isinstance(m, POINTWISE):
            stages[-1][1].append(m)
        else:
            return None
    if len(stages) < 2:
        return None
    return PatchForward(net, child, stages)


@torch.inference_mode()
def patch_forward(net: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> PatchForward | None:
    """A :class:`PatchForward` for ``net`` if it qualifies and computes the network's own logits
    on ``example`` (``1×3×H×W``: whole, and with one square occluded); else ``None``. Cached per
    network (rebuilt when a parameter or buffer changes)."""
    key = (example.device, example.dtype, tuple(example.shape[-2:]), state_key(net))
    hit = _CACHE.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    pf = _build(net)
    if pf is not None:
        H, W = example.shape[-2:]
        box = (H // 3, W // 3, max(1, H // 7), max(1, W // 7))
        occluded = example.clone()
        occluded[:, :, box[0] : box[0] + box[2], box[1] : box[1] + box[3]] = 0.5
        try:
            base = pf.base(example)
            lengths, plans = pf.plans((H, W), [box[:2]], box[2], box[3])
            got_base, got = pf.rest(base[1]), pf.occluded_logits(base, lengths, [0], plans, box[2], box[3], 0.5)
        except (RuntimeError, ValueError, TypeError, IndexError):  # e.g. a body that does not start with its first child
            got_base = got = None
        want_base, want = net(example), net(occluded)
        scale = max(float(want_base.abs().max()), float(want.abs().max()), 1e-6)
        close = lambda a, b: a is not None and a.shape == b.shape and float((a - b).abs().max()) <= rtol * scale  # noqa: E731
        pf = pf if close(got_base, want_base) and close(got, want) else None
    _CACHE[net] = (key, pf)
    return pf
