"""Backward rules for rectifiers (ReLU, ReLU6) that work on any architecture.

Deconvnet (Zeiler & Fergus 2014) and guided backpropagation (Springenberg et al.
2015) are ordinary backward passes in which only the backward of every rectifier
is changed:

=================  ================================================  ================
rule               backward of ``y = relu(x)`` (signal ``g`` from above)  name in papers
=================  ================================================  ================
``"gradient"``     ``g · [x > 0]``                                    plain gradient
``"deconvnet"``    ``relu(g)``                                        deconvnet
``"guided"``       ``relu(g) · [x > 0]``                              guided backprop
=================  ================================================  ================

Max-pooling is undone through its switches and convolutions by their transposes:
that is what the standard backward of those layers already does, so nothing else
changes.

**Why not module hooks.** Real networks do not route every rectifier through an
``nn.ReLU`` module: torchvision's GoogLeNet calls ``F.relu`` inside
``BasicConv2d``, ResNet reuses one in-place ``nn.ReLU`` several times per block,
timm's EfficientNet-Lite uses ``nn.ReLU6`` inside ``BatchNormAct2d`` (which calls
``F.hardtanh(x, 0, 6)``). Hooks on ``nn.ReLU`` alone silently turn deconvnet and
guided backprop into the plain gradient on such nets.

**How.** :func:`relu_rule` activates a :class:`torch.overrides.TorchFunctionMode`
for the duration of a ``with`` block. Every rectifier call made in Python —
``F.relu`` (also when imported early as ``from torch.nn.functional import relu``),
``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``, ``Tensor.relu_``,
``F.relu6``, ``F.hardtanh(x, 0, max)`` (what ``nn.ReLU6`` calls) and the
``torch._C._nn`` kernels ``relu6``/``hardtanh`` (+ in-place forms) — is routed
through one autograd Function whose forward is the exact same arithmetic and whose
backward applies the rule. Nothing global is patched (``torch.nn.functional.relu``
stays the original function), the mode is thread-local and it is popped in
``finally``. In-place calls keep their semantics (the input is modified and
returned, marked dirty for autograd). ``hardtanh`` with ``min_val != 0`` and
every other op pass through untouched. Rectifiers written as ``clamp(min=0)`` or
``x * (x > 0)`` are not recognised (no registry model uses them).

**ReLU6 (choice, documented).** The forward derivative of ``min(max(x, 0), 6)`` is
``[0 < x < 6]``; the ``"gradient"`` rule uses exactly that. The two visualisation
rules treat ReLU6 as a ReLU, i.e. they ignore the cap at 6: *deconvnet* applies
``relu(g)`` whatever the input, and *guided* applies ``relu(g) · [x > 0]``. Reason:
both rules exist to show what drives *active* units, and a unit clipped at 6 is the
most active kind; with the exact derivative, guided backprop would pass nothing
through saturated units (in EfficientNet-Lite0 the strongest units of the head are
all saturated, so projecting one of them would give an empty picture). Springenberg
et al. define the rule for ReLU only, so this is an extension, not a deviation.

Usage::

    with relu_rule("guided") as stats:
        logits = net(x.requires_grad_())
        g, = torch.autograd.grad(logits[:, c].sum(), x)
    stats.calls  # rectifier calls intercepted in the block (0 means something is wrong)

Forward *and* backward must both run inside the block for the rule to apply: the
rule is recorded on the graph during the forward.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("gradient", "deconvnet", "guided")

#: shown on the page of every method that runs a backward pass under a rule
RECTIFIER_NOTE = """\
!!! note "Every rectifier, however it is called"
    The backward rule is applied to *every* ReLU and ReLU6 the network executes — `nn.ReLU` modules (also one
    in-place module reused several times, as in ResNet), functional `F.relu` (GoogLeNet's `BasicConv2d`),
    `torch.relu`, `Tensor.relu_`, and `F.hardtanh(x, 0, 6)` (what `nn.ReLU6` in EfficientNet-Lite calls) —
    through a `TorchFunctionMode` active only during the computation. Hooks on `nn.ReLU` modules alone would
    silently fall back to the plain gradient on such networks. The unit tests check, on all five
    architectures, that the number of intercepted calls equals the number of rectifier kernels executed."""


class _Rectify(torch.autograd.Function):
    """``clamp(x, lo, hi)`` (hi may be None) with a rule-specific backward.

    The forward derivative mask is read off the *output* ``y`` (as autograd's own relu
    does): ``y > lo`` ⇔ ``x > lo``, and ``y < hi`` ⇔ ``x < hi``, so no mask is computed
    or stored in the forward pass, and each backward is one or two fused kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float | None, inplace: bool, rule: str):  # type: ignore[override]
        ctx.rule, ctx.lo, ctx.hi = rule, lo, hi
        if inplace:
            out = x.clamp_(min=lo, max=hi)
            ctx.mark_dirty(x)
        else:
            out = x.clamp(min=lo, max=hi)
        if rule != "deconvnet":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        rule = ctx.rule
        if rule == "deconvnet":
            gx = g.clamp(min=0)
        else:
            (y,) = ctx.saved_tensors
            if rule == "guided":  # relu(g) where x > lo; the visualisation rules ignore the cap
                gx = torch.ops.aten.threshold_backward(g, y, ctx.lo).clamp_(min=0)  # a new tensor: in place is safe
            elif ctx.hi is None:  # "gradient": identical to autograd's own relu / hardtanh backward
                gx = torch.ops.aten.threshold_backward(g, y, ctx.lo)
            else:
                gx = torch.ops.aten.hardtanh_backward(g, y, ctx.lo, ctx.hi)
        return gx, None, None, None, None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _build_table() -> dict[Callable, Callable[[tuple, dict], tuple | None]]:
    """func → parser returning (x, lo, hi, inplace), or None to pass the call through."""

    def relu(inplace_default: bool, inplace_pos: int | None):
        def parse(args, kwargs):
            inplace = inplace_default
            if inplace_pos is not None:
                inplace = bool(_arg(args, kwargs, inplace_pos, "inplace", inplace_default))
            return _arg(args, kwargs, 0, "input", None), 0.0, None, inplace

        return parse

    def relu6(inplace_default: bool, inplace_pos: int | None):
        def parse(args, kwargs):
            inplace = inplace_default
            if inplace_pos is not None:
                inplace = bool(_arg(args, kwargs, inplace_pos, "inplace", inplace_default))
            return _arg(args, kwargs, 0, "input", None), 0.0, 6.0, inplace

        return parse

    def hardtanh(inplace_default: bool, inplace_pos: int | None):
        def parse(args, kwargs):
            lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
            hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
            if lo != 0.0 or hi <= lo:  # a real hardtanh, not a rectifier
                return None
            inplace = inplace_default
            if inplace_pos is not None:
                inplace = bool(_arg(args, kwargs, inplace_pos, "inplace", inplace_default))
            return _arg(args, kwargs, 0, "input", None), 0.0, hi, inplace

        return parse

    table: dict[Callable, Callable] = {
        F.relu: relu(False, 1),
        torch.relu: relu(False, None),
        torch.relu_: relu(True, None),
        torch.Tensor.relu: relu(False, None),
        torch.Tensor.relu_: relu(True, None),
        F.relu6: relu6(False, 1),
        F.hardtanh: hardtanh(False, 3),
        torch._C._nn.relu6: relu6(False, None),
        torch._C._nn.hardtanh: hardtanh(False, None),
        torch._C._nn.hardtanh_: hardtanh(True, None),
    }
    if hasattr(torch._C._nn, "relu6_"):
        table[torch._C._nn.relu6_] = relu6(True, None)
    if F.relu_ is not torch.relu_:
        table[F.relu_] = relu(True, None)
    return table


_TABLE = _build_table()


@dataclass
class RuleStats:
    """What a :func:`relu_rule` block intercepted (tests use it to prove coverage)."""

    rule: str
    calls: int = 0
    by_function: dict[str, int] = field(default_factory=dict)


class _RectifierMode(TorchFunctionMode):
    def __init__(self, rule: str, stats: RuleStats) -> None:
        super().__init__()
        self.rule = rule
        self.stats = stats

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        parse = _TABLE.get(func)
        if parse is not None:
            parsed = parse(args, kwargs)
            if parsed is not None:
                x, lo, hi, inplace = parsed
                if isinstance(x, torch.Tensor) and x.is_floating_point():
                    self.stats.calls += 1
                    key = getattr(func, "__name__", str(func))
                    self.stats.by_function[key] = self.stats.by_function.get(key, 0) + 1
                    return _Rectify.apply(x, lo, hi, inplace, self.rule)
        return func(*args, **kwargs)


@contextlib.contextmanager
def relu_rule(rule: str = "guided") -> Iterator[RuleStats]:
    """Apply ``rule`` ("gradient", "deconvnet", "guided") to every rectifier's backward.

    Yields a :class:`RuleStats`. The mode is removed in ``finally``; nothing else is
    touched. Nesting is allowed (the innermost rule wins).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rectifier rule {rule!r}; known: {', '.join(RULES)}")
    stats = RuleStats(rule)
    mode = _RectifierMode(rule, stats)
    with mode:
        yield stats
