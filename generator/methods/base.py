"""Common interface and hook helpers shared by all method families."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import weakref
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import nn


class Method:
    """Base class: one class per method, same ``attribute(inputs, target)`` signature."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, model: nn.Module, **params: Any) -> None:
        self.model = model
        self.params: dict[str, Any] = dict(params)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def as_target(target: int | torch.Tensor | list[int], batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"target must be an int or a length-{batch} vector, got shape {tuple(t.shape)}")
    return t


class _StopForward(Exception):
    """Raised by a hook of :func:`capture_outputs` to end a forward pass early."""

    def __init__(self, token: object) -> None:
        super().__init__()
        self.token = token


@contextlib.contextmanager
def capture_outputs(modules: Mapping[str, nn.Module], detach: bool = True,
                    reduce: Callable[[torch.Tensor], Any] | None = None, read: str = "output",
                    stop_after: str | None = None) -> Iterator[dict[str, Any]]:
    """Record the forward outputs of ``modules`` (name → module) while the block runs.

    With ``reduce``, each output is replaced inside the hook by ``reduce(output)``
    (e.g. a per-channel maximum), so the full activation is never kept. A module
    called several times keeps its last output. Hooks are removed in ``finally``
    even if the block raises.

    ``detach=False`` keeps the tensor itself (no copy), so gradients flow through it.
    ``read="input"`` records the module's first positional input instead of its output
    (e.g. the features entering a classifier head). ``stop_after=name`` ends the forward
    pass as soon as that module has run (the rest of the network is skipped): the
    ``with`` block is left at that point, without an error.
    """
    if read not in ("output", "input"):
        raise ValueError(f"read must be 'output' or 'input', got {read!r}")
    out: dict[str, Any] = {}
    handles = []
    token = object()

    def make(name: str):
        def hook(_m, inputs, output):
            value = inputs if read == "input" else output
            t = value[0] if isinstance(value, (tuple, list)) else value
            if reduce is not None:
                out[name] = reduce(t)
            else:
                # clone: in-place ops later in the network (e.g. ReLU(inplace=True)) must
                # not change what we recorded
                out[name] = t.detach().clone() if detach else t
            if name == stop_after:
                raise _StopForward(token)

        return hook

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(make(name)))
        yield out
    except _StopForward as stop:
        if stop.token is not token:  # another capture's stop: not ours to swallow
            raise
    finally:
        for h in handles:
            h.remove()


def output_shapes(net: nn.Module, modules: Mapping[str, nn.Module], input_size: int) -> dict[str, tuple[int, ...]]:
    """Shape of each module's output without the batch dimension (one forward pass of a
    blank 1×3×S×S image on the network's device)."""
    device = next(net.parameters()).device
    with torch.no_grad(), capture_outputs(modules) as out:
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    return {name: tuple(int(d) for d in out[name].shape[1:]) for name in modules}


# ---------------------------------------------------------------------------------
# A prepared copy of a network for gradient methods: eval-mode batch norm folded into
# the convolution before it (an affine map per channel is a change of the conv's weights
# and bias), so neither the forward nor the backward pass spends time on it.


class FoldedBNAct(nn.Module):
    """What is left of a batch-norm-with-activation module (timm's ``BatchNormAct2d``)
    once its affine map is folded into the convolution before it: ``act(drop(x))``.
    Keeps the submodule names, so paths such as ``…bn2.act`` stay valid."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _foldable_bn(m: nn.Module) -> bool:
    if not isinstance(m, nn.BatchNorm2d) or m.training or m.running_mean is None or m.running_var is None:
        return False
    # plain BatchNorm2d, or timm's BatchNormAct2d (batch norm, then drop, then act)
    return type(m) is nn.BatchNorm2d or (type(m).__name__ == "BatchNormAct2d"
                                          and hasattr(m, "drop") and hasattr(m, "act"))


def conv_bn_pairs(net: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """``{bn_path: conv_path}`` for every eval-mode batch norm whose input, in one forward
    pass of ``example``, is the very output tensor of a ``Conv2d`` (each called once)."""
    convs = {m: n for n, m in net.named_modules() if type(m) is nn.Conv2d}
    bns = {m: n for n, m in net.named_modules() if _foldable_bn(m)}
    outs: dict[int, tuple[str, torch.Tensor]] = {}
    calls: dict[str, int] = {}
    found: dict[str, str] = {}

    def conv_hook(m, _i, o):
        calls[convs[m]] = calls.get(convs[m], 0) + 1
        outs[id(o)] = (convs[m], o)  # the tensor is kept, so its id is not reused

    def bn_pre(m, inputs):
        name = bns[m]
        calls[name] = calls.get(name, 0) + 1
        src = outs.get(id(inputs[0]))
        if src is not None and src[1] is inputs[0]:
            found[name] = src[0]

    handles = [m.register_forward_hook(conv_hook) for m in convs]
    handles += [m.register_forward_pre_hook(bn_pre) for m in bns]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
        outs.clear()
    used = [c for c in found.values()]
    return {b: c for b, c in found.items()
            if calls.get(b) == 1 and calls.get(c) == 1 and used.count(c) == 1}


def _set_submodule(net: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


@torch.no_grad()
def fold_batchnorm(net: nn.Module, pairs: Mapping[str, str]) -> nn.Module:
    """A deep copy of ``net`` with each batch norm of ``pairs`` (bn path → conv path)
    folded into its convolution: ``W' = W·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``
    (computed in float64). A plain ``BatchNorm2d`` becomes ``Identity``, a
    ``BatchNormAct2d`` a :class:`FoldedBNAct`. Every other module keeps its path."""
    import copy

    out = copy.deepcopy(net)
    for bn_path, conv_path in pairs.items():
        bn, conv = out.get_submodule(bn_path), out.get_submodule(conv_path)
        var, mean = bn.running_var.double(), bn.running_mean.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        w = conv.weight.double() * scale.view(-1, 1, 1, 1)
        b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
        bias = (b - mean) * scale + beta
        conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
        _set_submodule(out, bn_path, nn.Identity() if type(bn) is nn.BatchNorm2d else FoldedBNAct(bn.drop, bn.act))
    return out


@dataclasses.dataclass
class Prepared:
    """A network prepared for gradient methods, with what was folded (bn → conv)."""

    net: nn.Module
    pairs: dict[str, str]

    def safe_path(self, path: str) -> bool:
        """Whether module ``path`` computes the same output in the prepared network: it
        must not hold a folded convolution without its batch norm."""
        inside = lambda p: path == "" or p == path or p.startswith(path + ".")  # noqa: E731
        return not any(inside(c) and not inside(b) for b, c in self.pairs.items())


_PREPARED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Prepared]]" = weakref.WeakKeyDictionary()
FOLD_ENV = "CNNVIS_NO_BN_FOLD"  # set to 1 to run every method on the network as loaded


def state_key(net: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``net`` is replaced or changed in place
    (storage address and autograd version counter of each), or the mode changes."""
    tensors = itertools.chain(net.parameters(), net.buffers())
    return (net.training, tuple((t.data_ptr(), t._version) for t in tensors))


def _fingerprint(net: nn.Module, example: torch.Tensor) -> tuple:
    return (example.device, example.dtype, state_key(net))


def prepared(net: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> Prepared:
    """``net`` with eval-mode batch norm folded into the convolutions before it, cached
    per network (rebuilt when any parameter or buffer changes, e.g. a randomisation
    step). The folded copy is checked on ``example`` (``1×3×H×W``): if its logits differ
    from ``net``'s by more than ``rtol`` of their largest magnitude, or the network is
    in training mode, or :data:`FOLD_ENV` is set, ``net`` itself is returned."""
    if net.training or os.environ.get(FOLD_ENV, "") not in ("", "0"):
        return Prepared(net, {})
    key = _fingerprint(net, example)
    hit = _PREPARED.get(net)
    if hit is not None and hit[0] == key:
        return hit[1] if hit[1] is not None else Prepared(net, {})
    pairs = conv_bn_pairs(net, example)
    result = Prepared(net, {})
    if pairs:
        folded = fold_batchnorm(net, pairs)
        if example.device.type == "cpu":  # measured: forward passes ~1.25× faster, backward unchanged
            folded = folded.to(memory_format=torch.channels_last)
        with torch.no_grad():
            ref, got = net(example).float(), folded(example).float()
        if got.shape == ref.shape and float((got - ref).abs().max()) <= rtol * max(float(ref.abs().max()), 1e-6):
            result = Prepared(folded, pairs)
    _PREPARED[net] = (key, result if result.pairs else None)  # the value must not hold ``net``
    return result
