"""Receptive fields of units in a catalogued layer, computed from the architecture.

The question "which input pixels can influence unit (c, y, x) of this layer?" is
answered by running the network itself, not by a table of kernel sizes, so
branches (GoogLeNet's concatenations), residual adds (ResNet), depthwise convs
(EfficientNet) and odd paddings are all handled the same way.

Method (a *support-propagation probe*):

1. Make a light copy of the network (parameters shared, never modified) in which
   every convolution becomes "mean over input channels, then a 1→1 convolution with
   an all-ones kernel of the same size, stride, padding and dilation", batch/other
   normalisations, the input normalisation (also torchvision's ``transform_input``)
   and the pointwise nonlinearities become identities. Pools stay as they are. The copy is linear with positive weights and
   every tensor has one channel per branch, so a probe is cheap (float64, no grad).
   In such a network an output is > 0 exactly when some input pixel it is
   connected to is > 0: there is no cancellation and nothing is lost to a ReLU.
   Max-pools keep this property on non-negative inputs (max > 0 iff any > 0).
2. Feed "row indicator" images (row i is 1, everything else 0): output row r is
   positive iff the receptive field of the units in row r meets input row i. One
   batch of H probes gives the exact, already clipped vertical extent of every
   output row; the same with column indicators gives the horizontal extents.
   Connectivity in these networks is separable (kernels and pool windows are
   rectangles, padding is per axis), so the bounding box of unit (y, x) is
   ``(top[y], left[x], bottom[y], right[x])``. The probes that measure the vertical
   extent use a narrow image (the width does not affect vertical connectivity).

The result is cached per (network, module, input size) in memory; callers can store
it (:meth:`ReceptiveField.to_dict`) and seed the cache again with :func:`remember`. Image borders need no
special case: the probe sees the zero padding exactly as the network does, so a
unit near the border gets the clipped box. For documentation and for padding
patches to a common size, :func:`receptive_field` also derives the unclipped
geometry ``box(y) = [y·stride + offset, y·stride + offset + size)`` and checks that
clipping it reproduces every measured box.

Side effects such as squeeze-and-excitation gates (global pooling) widen the field
to the whole image, which is what they do: the probe reports true connectivity.
"""
from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .methods.base import capture_outputs

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "receptive_field_boxes",
    "crop_patch",
    "module_path",
    "remember",
]


# ---------------------------------------------------------------------------------
# The probe network


class _ChannelMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)


def _ones_conv(conv: nn.Module) -> nn.Module:
    """A 1→1 copy of ``conv`` (same class, so custom padding such as timm's
    Conv2dSame keeps working) with an all-ones kernel and no bias."""
    new = copy.copy(conv)  # shallow: replace every container dict before touching anything
    d = new.__dict__
    kernel = tuple(conv.weight.shape[2:])
    d["_parameters"] = OrderedDict(
        weight=nn.Parameter(torch.ones((1, 1) + kernel, dtype=torch.float64), requires_grad=False), bias=None
    )
    d["_buffers"] = OrderedDict()
    d["_modules"] = OrderedDict()
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs",
                  "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
                  "_load_state_dict_pre_hooks"):
        if hooks in d:
            d[hooks] = OrderedDict()
    d["in_channels"] = d["out_channels"] = 1
    d["groups"] = 1
    return nn.Sequential(_ChannelMean(), new)


_IDENTITY_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus,
    nn.Dropout, nn.Dropout2d,
)


class _AllToAll(nn.Module):
    """Stand-in for a fully connected layer: every output sees every input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1, keepdim=True)


def _replacement(m: nn.Module) -> nn.Module | None:
    if isinstance(m, nn.Linear):
        return _AllToAll()
    if isinstance(m, nn.Conv2d):
        return _ones_conv(m)
    if isinstance(m, _IDENTITY_TYPES) or type(m).__name__ in ("Normalize", "LayerNorm2d"):
        return nn.Identity()
    return None


def _probe_copy(net: nn.Module) -> nn.Module:
    """Transformed copy of ``net``; the original (and its parameters) is untouched."""
    memo = {id(t): t for t in itertools.chain(net.parameters(), net.buffers())}
    cp = copy.deepcopy(net, memo)
    replaced: list[str] = []
    for name, m in list(cp.named_modules()):
        if not name or any(name.startswith(r + ".") for r in replaced):
            continue
        rep = _replacement(m)
        if rep is None:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = cp.get_submodule(parent_name) if parent_name else cp
        setattr(parent, leaf, rep)
        replaced.append(name)
    for m in cp.modules():  # hooks copied from the original would see the wrong tensors
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        if getattr(m, "transform_input", False):  # torchvision GoogLeNet/Inception3: a per-channel
            m.transform_input = False  # affine re-normalisation of the input, as Normalize above
    return cp.eval()


def module_path(net: nn.Module, module: nn.Module) -> str:
    for name, m in net.named_modules():
        if m is module:
            return name
    raise ValueError(f"module {type(module).__name__} is not part of the network")


def _run_to(probe: nn.Module, path: str, x: torch.Tensor, flat: bool = False) -> torch.Tensor:
    """Output of the module at ``path`` (summed over channels → B×h×w, or B×1×1)."""
    target = probe.get_submodule(path) if path else probe
    with torch.no_grad(), capture_outputs({"target": target}, detach=False, stop_after="target") as got:
        probe(x)
    if not got:
        raise RuntimeError(f"module {path!r} was not called in the forward pass")
    out = got["target"]
    if flat:
        return out
    if out.ndim == 4:
        return out.sum(1)
    if out.ndim == 2:
        return out.sum(1).view(-1, 1, 1)
    raise ValueError(f"module {path!r} gives a {out.ndim}-d output; expected B×C×H×W or B×C")


# ---------------------------------------------------------------------------------
# Measured receptive fields


@dataclass(frozen=True)
class AxisGeometry:
    size: int  # receptive-field size in pixels (unclipped)
    stride: int  # pixels between neighbouring units
    offset: int  # first pixel of unit 0's field (negative: starts in the padding)


@dataclass(frozen=True)
class ReceptiveField:
    """Clipped boxes of every unit of one layer at one input size."""

    input_size: tuple[int, int]
    grid: tuple[int, int]  # (h, w) of the layer's output
    top: torch.Tensor  # [h] first row (inclusive), clipped
    bottom: torch.Tensor  # [h] last row + 1, clipped
    left: torch.Tensor  # [w]
    right: torch.Tensor  # [w]
    y: AxisGeometry | None = None  # unclipped geometry (None for fc layers)
    x: AxisGeometry | None = None

    def boxes(self, positions: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """(y0, x0, y1, x1) half-open boxes for ``positions`` = LongTensor[N, 2] of (y, x)."""
        pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1, 2).cpu()
        py, px = pos[:, 0], pos[:, 1]
        h, w = self.grid
        if len(pos) and ((py < 0).any() or (py >= h).any() or (px < 0).any() or (px >= w).any()):
            raise IndexError(f"positions outside the {h}×{w} output grid")
        if clip:
            return torch.stack([self.top[py], self.left[px], self.bottom[py], self.right[px]], 1)
        if self.y is None or self.x is None:
            H, W = self.input_size
            return torch.tensor([[0, 0, H, W]], dtype=torch.long).expand(len(pos), 4).clone()
        y0 = py * self.y.stride + self.y.offset
        x0 = px * self.x.stride + self.x.offset
        return torch.stack([y0, x0, y0 + self.y.size, x0 + self.x.size], 1)

    def to_dict(self) -> dict:
        geo = lambda g: None if g is None else [g.size, g.stride, g.offset]
        return {"input_size": list(self.input_size), "grid": list(self.grid), "top": self.top, "bottom": self.bottom,
                "left": self.left, "right": self.right, "y": geo(self.y), "x": geo(self.x)}

    @classmethod
    def from_dict(cls, d: dict) -> "ReceptiveField":
        geo = lambda g: None if g is None else AxisGeometry(*(int(v) for v in g))
        return cls(tuple(int(v) for v in d["input_size"]), tuple(int(v) for v in d["grid"]), d["top"], d["bottom"],
                   d["left"], d["right"], geo(d["y"]), geo(d["x"]))

    @property
    def size(self) -> tuple[int, int]:
        if self.y is None or self.x is None:
            return self.input_size
        return (self.y.size, self.x.size)

    @property
    def stride(self) -> tuple[int, int]:
        if self.y is None or self.x is None:
            return self.input_size
        return (self.y.stride, self.x.stride)


def _extents(out_any: torch.Tensor, probes: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From positivity ``out_any[b, r]`` of output row r under probe row ``probes[b]``,
    the min and max+1 probe row per output row."""
    big = torch.iinfo(torch.long).max
    lo = torch.where(out_any, probes.view(-1, 1), torch.full_like(probes.view(-1, 1), big)).min(0).values
    hi = torch.where(out_any, probes.view(-1, 1) + 1, torch.zeros_like(probes.view(-1, 1))).max(0).values
    return lo[:n_out], hi[:n_out]


def _axis_extents(probe: nn.Module, path: str, n: int, other: int, axis: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped [lo, hi) extents along ``axis`` (0: rows, 1: columns) for every output row/column."""
    lo = hi = None
    n_out = None
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(n, start + chunk))
        shape = (len(idx), 3, n, other) if axis == 0 else (len(idx), 3, other, n)
        x = torch.zeros(shape, dtype=torch.float64)
        if axis == 0:
            x[torch.arange(len(idx)), :, idx, :] = 1.0
        else:
            x[torch.arange(len(idx)), :, :, idx] = 1.0
        out = _run_to(probe, path, x)  # b×h×w
        pos = (out > 0).any(dim=2) if axis == 0 else (out > 0).any(dim=1)  # b×n_out
        l, h = _extents(pos, idx, pos.shape[1])
        if lo is None:
            lo, hi, n_out = l, h, pos.shape[1]
        else:
            lo, hi = torch.minimum(lo, l), torch.maximum(hi, h)
    assert lo is not None and hi is not None and n_out is not None
    if (hi <= lo).any():
        raise RuntimeError("a unit is connected to no input pixel (unsupported operation in the network?)")
    return lo, hi


def _probe_extents(probe: nn.Module, path: str, H: int, W: int) -> tuple[torch.Tensor, ...]:
    chunk = max(8, int(2**22 // max(1, H * W)))  # ~32 MiB of float64 input per chunk
    result = []
    for axis, n, full_other in ((0, H, W), (1, W, H)):
        for other in sorted({min(full_other, 32), min(full_other, 96), full_other}):
            try:
                lo, hi = _axis_extents(probe, path, n, other, axis, chunk)
                break
            except (RuntimeError, ValueError) as e:  # image too narrow for this network
                if other == full_other:
                    raise RuntimeError(f"receptive-field probe of {path!r} failed: {e}") from e
        result += [lo, hi]
    return tuple(result)


def _geometry(lo: torch.Tensor, hi: torch.Tensor, n: int) -> AxisGeometry | None:
    """Unclipped (size, stride, offset) from clipped extents, when they determine it."""
    idx = torch.arange(len(lo))
    free_lo = lo > 0  # starts not clipped at the top
    free_hi = hi < n
    if len(lo) == 1:
        stride = None
    else:
        both = free_lo[1:] & free_lo[:-1]
        d = (lo[1:] - lo[:-1])[both]
        if len(d) == 0:
            both = free_hi[1:] & free_hi[:-1]
            d = (hi[1:] - hi[:-1])[both]
        if len(d) == 0 or (d != d[0]).any():
            return None
        stride = int(d[0])
    if not free_lo.any() or not free_hi.any() or stride is None:
        return None
    offset = int(lo[free_lo][0] - idx[free_lo][0] * stride)
    end_off = int(hi[free_hi][0] - idx[free_hi][0] * stride)
    return AxisGeometry(size=end_off - offset, stride=stride, offset=offset)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def receptive_field(net: nn.Module, module: nn.Module | str, input_size: Sequence[int] | int) -> ReceptiveField:
    """Measured receptive field of every unit of ``module`` for inputs of ``input_size``.

    ``module`` is a submodule of ``net`` (or its path in ``net``). Cached per
    (net, module path, input size).
    """
    H, W = (int(input_size), int(input_size)) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    path = module if isinstance(module, str) else module_path(net, module)
    key = (path, H, W)
    with _LOCK:
        entry = _CACHE.setdefault(net, {})
        if key in entry:
            return entry[key]
        probe = entry.get("_probe")
        if probe is None:
            probe = entry["_probe"] = _probe_copy(net)
    # fc-type outputs (B×C): the whole image
    if _run_to(probe, path, torch.zeros(1, 3, H, W, dtype=torch.float64), flat=True).ndim == 2:
        rf = ReceptiveField((H, W), (1, 1), torch.tensor([0]), torch.tensor([H]), torch.tensor([0]), torch.tensor([W]))
    else:
        top, bottom, left, right = _probe_extents(probe, path, H, W)
        gy, gx = _geometry(top, bottom, H), _geometry(left, right, W)
        if gy is None or gx is None:
            # fields wider than the image: measure on a larger canvas (same padding rules)
            for k in (2, 4, 8):
                t2, b2, l2, r2 = _probe_extents(probe, path, H * k, W * k)
                gy = gy or _geometry(t2, b2, H * k)
                gx = gx or _geometry(l2, r2, W * k)
                if gy is not None and gx is not None:
                    break
        rf = ReceptiveField((H, W), (len(top), len(left)), top, bottom, left, right, gy, gx)
        if gy is not None and gx is not None:
            _check_geometry(rf)
        else:
            rf = ReceptiveField((H, W), (len(top), len(left)), top, bottom, left, right, None, None)
    with _LOCK:
        _CACHE.setdefault(net, {})[key] = rf
    return rf


def _check_geometry(rf: ReceptiveField) -> None:
    """Clipping the unclipped geometry must reproduce every measured box."""
    H, W = rf.input_size
    assert rf.y is not None and rf.x is not None
    for g, lo, hi, n in ((rf.y, rf.top, rf.bottom, H), (rf.x, rf.left, rf.right, W)):
        i = torch.arange(len(lo))
        u0 = i * g.stride + g.offset
        if not (torch.equal(u0.clamp(0, n), lo) and torch.equal((u0 + g.size).clamp(0, n), hi)):
            raise RuntimeError("receptive field is not translation-invariant at this input size")


def remember(net: nn.Module, module: nn.Module | str, rf: ReceptiveField) -> None:
    """Seed the in-memory cache (e.g. with a result stored on disk by the caller)."""
    path = module if isinstance(module, str) else module_path(net, module)
    with _LOCK:
        _CACHE.setdefault(net, {})[(path, *rf.input_size)] = rf


def receptive_field_boxes(net: nn.Module, module: nn.Module | str, input_size: Sequence[int] | int,
                          positions: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """(y0, x0, y1, x1) half-open pixel boxes of the units at ``positions`` (LongTensor[N, 2]
    of (y, x) in ``module``'s output grid), clipped to the image (``clip=False``: the
    unclipped box, which may extend past the borders)."""
    return receptive_field(net, module, input_size).boxes(positions, clip=clip)


# ---------------------------------------------------------------------------------
# Patches


def crop_patch(image: torch.Tensor, box: Sequence[int], pad_box: Sequence[int] | None = None,
               fill: float = 0.5) -> torch.Tensor:
    """Crop ``image`` (C×H×W) to ``box`` = (y0, x0, y1, x1).

    With ``pad_box`` (the unclipped box, which contains ``box``), the crop is placed
    where it belongs inside a canvas of the unclipped size filled with ``fill``, so
    patches of units at the border keep the geometry of the field.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    crop = image[:, y0:y1, x0:x1]
    if pad_box is None:
        return crop
    py0, px0, py1, px1 = (int(v) for v in pad_box)
    if not (py0 <= y0 and px0 <= x0 and y1 <= py1 and x1 <= px1):
        raise ValueError(f"pad box {tuple(pad_box)} does not contain {tuple(box)}")
    return F.pad(crop, (x0 - px0, px1 - x1, y0 - py0, py1 - y1), value=fill)
