"""Attribution methods: which pixels matter for a class score.

Stable API (the findings code, the site stage and the benchmark use it):

``ATTRIBUTION_METHODS``
    name → class, in registration order: ``saliency``, ``deconvnet``,
    ``guided_backprop``, ``gradcam``, ``guided_gradcam``, ``smoothgrad``,
    ``integrated_gradients``, ``occlusion``, ``smoothgrad_sq``, ``vargrad``. A class
    joins it with the :func:`register` decorator; everything the pipeline needs to know
    about a method is a class attribute (see :class:`AttributionMethod`), so galleries,
    method pages, findings and the benchmark pick a new method up with no other change.
``make(name, loaded_model, batch_size=None, **overrides) -> AttributionMethod``
    builds a method on a registry :class:`~generator.models.LoadedModel` (or a bare
    ``nn.Module``: then a method with ``needs_layer`` needs ``layer=`` a module path or
    module). Unknown overrides raise ``TypeError``. ``method.params`` holds every
    setting that changes the result (cache keys); ``batch_size`` does not change results
    and is not in it.
``method.attribute(inputs, target=None) -> Tensor``
    ``inputs``: ``B×3×H×W`` pixel-space images in [0, 1] on the model's device.
    ``target``: ``None`` (each image's top-1 class), an int or a length-B vector of
    classes. Returns a detached float tensor on the inputs' device: ``B×3×H×W`` for
    the pixel-space methods, ``B×1×H×W`` for those with ``output = "map"``
    (``gradcam``, ``occlusion``). ``method.last_target`` holds the classes used.
``method.heatmap(attribution) -> B×H×W`` (nonnegative)
    by default the max over colour channels of ``|a|`` (Simonyan et al. 2014).
    ``integrated_gradients``: ``|Σ_c a_c|`` (IG attributions add up per pixel, so
    channels are summed before taking the magnitude). ``gradcam``: the map itself
    (already ReLU'd, bilinearly upsampled). ``occlusion``: the drop in probability
    clipped at 0 (occluding a region that *raises* the probability shows as 0).
    ``heatmap_rule`` says it in words for the method page.
``method.explain(inputs, target=None) -> B×H×W`` = ``heatmap(attribute(...))``.
``method.check(inputs, target, attribution) -> dict[str, Tensor]``
    per-image numbers of the method's ``self_check`` (a :class:`SelfCheck`; only
    Integrated Gradients has one: its completeness, ``Σ attribution`` vs
    ``F(x) − F(baseline)``).

Maps are shown with the display rule of :mod:`generator.render` (``normalise_maps``,
``signed_to_rgb``).

Batching: every method processes many images per forward/backward; SmoothGrad (and its
squared and variance variants), Integrated Gradients and Occlusion process their
perturbed copies in batches of ``batch_size`` copies. On out-of-memory the batch is
halved and retried (:func:`run_batched`). CPU and CUDA both work (the inputs' device is
used). On a network whose body starts with a local ``nn.Sequential`` (AlexNet, VGG),
Occlusion's copies recompute only the block of each layer their square reaches
(:mod:`~generator.methods.patch_forward`; checked against whole passes on an example).
"""
from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, as_target, prepared, state_key
from .patch_forward import patch_forward
from .relu_rules import RECTIFIER_NOTE, relu_rule

DEFAULT_BATCH_SIZE = 32


# ------------------------------------------------------------------------------------
# batching


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def run_batched(n: int, batch_size: int, fn: Callable[[int, int], None], on_shrink: Callable[[int], None] | None = None) -> int:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks of at most ``batch_size``.

    On out-of-memory the chunk is retried with half the size (down to 1, then the
    error is raised). ``fn`` must only write its results after it has succeeded.
    Returns the batch size that worked last.
    """
    bs = max(1, int(batch_size))
    start = 0
    while start < n:
        stop = min(n, start + bs)
        try:
            fn(start, stop)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not _is_oom(e) or stop - start == 1:
                raise
            bs = max(1, (stop - start) // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_shrink is not None:
                on_shrink(bs)
            continue
        start = stop
    return bs


def _prep(inputs: torch.Tensor) -> torch.Tensor:
    if inputs.ndim != 4 or inputs.shape[1] != 3:
        raise ValueError(f"inputs must be B×3×H×W, got {tuple(inputs.shape)}")
    x = inputs.detach()
    if x.is_inference():
        x = x.clone()
    return x.float() if x.dtype != torch.float32 else x


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Logits for ``inputs`` (batched, no grad)."""
    x = _prep(inputs)
    parts: dict[int, torch.Tensor] = {}

    def fn(s: int, e: int) -> None:
        parts[s] = model(x[s:e]).float()

    run_batched(len(x), batch_size, fn)
    return torch.cat([parts[k] for k in sorted(parts)])


def resolve_target(model: nn.Module, inputs: torch.Tensor, target: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """``None`` → top-1 class per image; int / vector → LongTensor[B] on the inputs' device."""
    if target is None:
        return predict(model, inputs, batch_size).argmax(1)
    return as_target(target, len(inputs), inputs.device)


def input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, rule: str = "gradient"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∂ logit[target] / ∂ x for one batch under a rectifier rule.

    Returns ``(gradient, logits, target)``; a ``None`` target is the top-1 class of
    this very forward pass.
    """
    # the "gradient" rule is autograd's own backward (tested), so no mode is needed for it
    with torch.enable_grad(), (relu_rule(rule) if rule != "gradient" else contextlib.nullcontext()):
        xi = x.detach().requires_grad_(True)
        logits = model(xi)
        t = logits.detach().argmax(1) if target is None else target
        score = logits.gather(1, t.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, xi)
    return g.detach(), logits.detach(), t


# ------------------------------------------------------------------------------------
# heatmaps


def max_abs_channels(a: torch.Tensor) -> torch.Tensor:
    return a.abs().amax(1)


# ------------------------------------------------------------------------------------
# methods


@dataclass(frozen=True)
class SelfCheck:
    """A promise of the method measured on every image of every build, and how the method
    page presents it: ``title`` (section heading), ``explanation`` (Markdown paragraph),
    ``measure`` (the key of :meth:`AttributionMethod.check`'s result summarised in the
    table, a relative error shown in percent) and ``setting`` (the parameter that
    controls it, shown beside the numbers). A method that adapts the setting per image
    also names ``used`` (the key of the check's result: the setting each image used),
    ``tolerance`` (the parameter the measure is kept under) and ``cap`` (the parameter that
    bounds ``used``); the check's result then has ``capped`` (1 where the measure is still at
    or above the tolerance because the cap stopped the refinement)."""

    title: str
    explanation: str
    measure: str
    setting: str
    used: str = ""
    cap: str = ""
    tolerance: str = ""

    def summarise(self, results: Sequence[Mapping[str, float]], params: Mapping[str, Any]) -> dict:
        """Over the images' check results: mean, median and max of ``measure``, ``n`` and ``setting``
        (its value in ``params``); with ``used``: the range and median of the setting the images used,
        ``below`` (images under the tolerance), ``capped`` and the sentence ``said`` (:meth:`said`)."""
        v = torch.tensor([float(r[self.measure]) for r in results], dtype=torch.float64)
        out: dict[str, Any] = {"mean": float(v.mean()), "median": float(v.median()), "max": float(v.max()),
                               "n": len(v), "setting": params[self.setting]}
        if self.used and results and all(self.used in r for r in results):
            u = torch.tensor([float(r[self.used]) for r in results], dtype=torch.float64)
            tol = float(params[self.tolerance])
            out.update(used_min=int(u.min()), used_median=float(u.median()), used_max=int(u.max()),
                       below=int((v < tol).sum()), capped=int(sum(float(r.get("capped", 0)) > 0 for r in results)),
                       tolerance=tol, cap=params[self.cap])
            out["said"] = self.said(out)
        return out

    def said(self, summary: Mapping[str, Any]) -> str:
        """The sentence under the table, from a :meth:`summarise` result: how many images reached the
        tolerance, with how many ``used``, and how many did not (stopped by the cap)."""
        n, below, tol = int(summary["n"]), int(summary["below"]), float(summary["tolerance"])
        lo, hi, med = summary["used_min"], summary["used_max"], summary["used_median"]
        used = f"{lo}" if lo == hi else f"{lo}–{hi} (median {med:g})"
        limit = f"{100 * tol:g} % (`{self.tolerance}`)"
        if below == n:
            return f"All {n} images reached an error below {limit}, with {used} `{self.used}`."
        capped, cap = int(summary["capped"]), summary["cap"]
        if capped and summary["used_max"] == summary["setting"]:  # stopped at the start: the cap allows no refinement
            stop = f"not refined: `{self.cap} = {cap}` allows no more than the starting `{self.setting} = {summary['setting']}`"
        else:
            stop = (f"the refinement stopped at `{self.cap} = {cap}`" if capped == n - below else
                    f"{capped} of them stopped by `{self.cap} = {cap}`")
        return (f"{below} of {n} images reached an error below {limit}; **{n - below} did not** ({stop}); "
                f"`{self.used}` used: {used}.")


class AttributionMethod(Method):
    """Common machinery: parameters with defaults, target resolution, heatmaps.

    What the pipeline needs to know about a method is declared here, per class; no
    other module tests a method's name:

    ``output``          "pixels" (B×3×H×W) or "map" (B×1×H×W).
    ``signed_view``     the raw attributions are also shown as a signed image (grey = 0).
    ``needs_layer``     built on one layer of the model (``make`` picks the model's
                        ``gradcam_layer``; the method page lists it per model).
    ``gallery_params``  settings for the galleries (config may override them).
    ``findings_params`` cheaper settings for the findings stage (config may override).
    ``self_check``      a :class:`SelfCheck` computed with :meth:`check`, or None.
    ``swap_test``       measured in "does the map depend on the image?" (same class,
                        another image).
    ``notes``           Markdown blocks the method page shows before its gallery.
    ``page_sections``   extra sections after the gallery, by name
                        (``templates/attribution/sections/<name>.md.j2``).
    ``short``           column header in galleries; ``summary``, ``formula``, ``url``,
                        ``heatmap_rule``: the method page's text.
    ``fold_bn``         run on :func:`~.base.prepared`: a copy of the network with
                        eval-mode batch norm folded into the convolutions (same outputs
                        within float rounding, about twice the speed of a backward pass);
                        False for a method that needs the batch-norm layers themselves.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    output: ClassVar[str] = "pixels"
    signed_view: ClassVar[bool] = False
    needs_layer: ClassVar[bool] = False
    gallery_params: ClassVar[dict[str, Any]] = {}
    findings_params: ClassVar[dict[str, Any]] = {}
    self_check: ClassVar[SelfCheck | None] = None
    swap_test: ClassVar[bool] = False
    notes: ClassVar[tuple[str, ...]] = ()
    page_sections: ClassVar[tuple[str, ...]] = ()
    url: ClassVar[str] = ""
    formula: ClassVar[str] = ""  # Markdown (arithmatex-compatible LaTeX)
    summary: ClassVar[str] = ""  # one paragraph of Markdown
    short: ClassVar[str] = ""
    heatmap_rule: ClassVar[str] = "max over colour channels of |a|"
    fold_bn: ClassVar[bool] = True

    def __init__(self, model: nn.Module, batch_size: int | None = None, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(self.defaults) or 'none'}")
        super().__init__(model, **{**self.defaults, **params})
        self.batch_size = int(batch_size or DEFAULT_BATCH_SIZE)
        self.last_target: torch.Tensor | None = None

    # subclasses implement _attribute(x, target_or_None)
    def attribute(self, inputs: torch.Tensor, target: Any = None) -> torch.Tensor:
        x = _prep(inputs)
        t = None if target is None else as_target(target, len(x), x.device)
        out = self._attribute(x, t)
        return out.detach()

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def heatmap(self, attribution: torch.Tensor) -> torch.Tensor:
        return max_abs_channels(attribution)

    def explain(self, inputs: torch.Tensor, target: Any = None) -> torch.Tensor:
        return self.heatmap(self.attribute(inputs, target))

    def _net(self, x: torch.Tensor) -> nn.Module:
        """The network the gradients are computed on (the prepared copy with ``fold_bn``)."""
        return prepared(self.model, x[:1]).net if self.fold_bn else self.model

    def _targets(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = resolve_target(self.model, x, target, self.batch_size)
        self.last_target = t
        return t

    def check(self, inputs: torch.Tensor, target: Any, attribution: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image numbers of ``self_check`` (only for methods that declare one)."""
        raise NotImplementedError(f"{self.name} declares no self-check")


ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}


def register(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator: add ``cls`` to :data:`ATTRIBUTION_METHODS` under ``cls.name``."""
    if not cls.name or cls.name in ATTRIBUTION_METHODS:
        raise ValueError(f"{cls.__name__}: attribution method name {cls.name!r} is empty or taken")
    ATTRIBUTION_METHODS[cls.name] = cls
    return cls


class _RuleGradient(AttributionMethod):
    """Gradient of the class score w.r.t. the input under a rectifier rule."""

    rule: ClassVar[str] = "gradient"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        out = torch.empty_like(x)
        tgt = torch.empty(len(x), dtype=torch.long, device=x.device)
        net = self._net(x)

        def fn(s: int, e: int) -> None:
            g, _, t = input_gradient(net, x[s:e], None if target is None else target[s:e], self.rule)
            out[s:e] = g
            tgt[s:e] = t

        run_batched(len(x), self.batch_size, fn)
        self.last_target = tgt
        return out


@register
class Saliency(_RuleGradient):
    name = "saliency"
    title = "Saliency (gradient)"
    short = "Saliency"
    paper = "Simonyan, Vedaldi & Zisserman (2014), Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps"
    url = "https://arxiv.org/abs/1312.6034"
    rule = "gradient"
    swap_test = True
    summary = (
        "The gradient of the *unnormalised* class score (the logit, before the softmax) with "
        "respect to the input pixels: how much a tiny change of each pixel would change the score. "
        "The map is the largest absolute value over the three colour channels."
    )
    formula = r"$$ M_{ij} = \max_c \left| \frac{\partial S_k(x)}{\partial x_{c,i,j}} \right| $$"


@register
class Deconvnet(_RuleGradient):
    name = "deconvnet"
    title = "Deconvnet"
    short = "Deconvnet"
    paper = "Zeiler & Fergus (2014), Visualizing and Understanding Convolutional Networks"
    url = "https://arxiv.org/abs/1311.2901"
    rule = "deconvnet"
    signed_view = True
    swap_test = True
    notes = (RECTIFIER_NOTE,)
    page_sections = ("image_swap", "single_neurons")
    summary = (
        "A backward pass from the class score in which every ReLU passes back the ReLU of the "
        "incoming signal (whatever the forward input was), max-pooling is undone through the "
        "switches recorded in the forward pass and convolutions by their transposes. "
        "ReLU6 is treated like ReLU: the signal is rectified, the forward input is ignored."
    )
    formula = r"$$ R^{(l)} = W_l^{\top}\,\mathrm{unpool}_{s}\big(\max(R^{(l+1)}, 0)\big) $$"


@register
class GuidedBackprop(_RuleGradient):
    name = "guided_backprop"
    title = "Guided backpropagation"
    short = "Guided BP"
    paper = "Springenberg, Dosovitskiy, Brox & Riedmiller (2015), Striving for Simplicity: The All Convolutional Net"
    url = "https://arxiv.org/abs/1412.6806"
    rule = "guided"
    signed_view = True
    swap_test = True
    notes = (RECTIFIER_NOTE,)
    page_sections = ("image_swap",)
    summary = (
        "The gradient, except that at every ReLU only *positive* signals pass, and only where "
        "the forward input was positive: the combination of the gradient's forward mask and the "
        "deconvnet's backward rectification. ReLU6 is treated like ReLU (mask x > 0): a unit "
        "saturated at 6 is strongly active and passes positive signals."
    )
    formula = r"$$ R^{(l)} = [x^{(l)} > 0] \cdot \max(R^{(l+1)}, 0) $$"


@register
class GradCAM(AttributionMethod):
    name = "gradcam"
    title = "Grad-CAM"
    short = "Grad-CAM"
    paper = "Selvaraju et al. (2017), Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization"
    url = "https://arxiv.org/abs/1610.02391"
    output = "map"
    needs_layer = True
    defaults = {"layer": "", "interpolation": "bilinear"}
    heatmap_rule = "the map itself (ReLU of the weighted feature maps, upsampled)"
    summary = (
        "Feature maps $A^k$ of a late convolutional layer, weighted by the spatially averaged "
        "gradient of the class score and rectified, then upsampled to the image. "
        "Coarse (the layer's resolution) but class-discriminative."
    )
    formula = (
        r"$$ \alpha_k = \frac{1}{Z}\sum_{i,j} \frac{\partial S_c}{\partial A^k_{ij}},\qquad "
        r"L = \mathrm{ReLU}\Big(\sum_k \alpha_k A^k\Big) $$"
    )

    def __init__(self, model: nn.Module, layer: str | nn.Module = "", batch_size: int | None = None, **params: Any) -> None:
        if isinstance(layer, nn.Module):
            module, label = layer, params.pop("layer_name", type(layer).__name__)
            path = next((n for n, m in model.named_modules() if m is layer), None)
        else:
            module, label, path = model.get_submodule(layer), params.pop("layer_name", layer), layer
        super().__init__(model, batch_size=batch_size, layer=label, **params)
        self.layer_module = module
        self.layer_path = path

    def _layer_net(self, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
        """(network, layer module): the prepared copy where the layer's output is the same
        there (not a convolution whose batch norm was folded into it), else the original."""
        if self.fold_bn and self.layer_path is not None:
            p = prepared(self.model, x[:1])
            if p.safe_path(self.layer_path):
                return p.net, p.net.get_submodule(self.layer_path)
        return self.model, self.layer_module

    def _cam(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        store: dict[str, torch.Tensor] = {}
        net, layer = self._layer_net(x)

        def hook(_m, _i, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            if first.requires_grad:
                store["a"] = first
                return None
            # frozen parameters: the graph starts at the layer, so nothing before it is
            # recorded; downstream gets a copy (in-place ops after the layer stay legal)
            a = store["a"] = first.detach().requires_grad_(True)
            return (a.clone(), *output[1:]) if isinstance(output, (tuple, list)) else a.clone()

        handle = layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = net(x.detach())
                a = store["a"]
                t = logits.detach().argmax(1) if target is None else target
                (ga,) = torch.autograd.grad(logits.gather(1, t.view(-1, 1)).sum(), a)
        finally:
            handle.remove()
            store.clear()
        if a.ndim != 4:
            raise ValueError(f"Grad-CAM needs a convolutional layer (B×C×h×w output), {self.params['layer']} gives {tuple(a.shape)}")
        w = ga.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((w * a.detach()).sum(1, keepdim=True))
        mode = self.params["interpolation"]
        cam = F.interpolate(cam, size=x.shape[-2:], mode=mode, align_corners=False if mode in ("bilinear", "bicubic") else None)
        return cam.clamp(min=0), t

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        out = x.new_empty(len(x), 1, *x.shape[-2:])
        tgt = torch.empty(len(x), dtype=torch.long, device=x.device)

        def fn(s: int, e: int) -> None:
            cam, t = self._cam(x[s:e], None if target is None else target[s:e])
            out[s:e] = cam
            tgt[s:e] = t

        run_batched(len(x), self.batch_size, fn)
        self.last_target = tgt
        return out

    def heatmap(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution[:, 0].clamp(min=0)


@register
class GuidedGradCAM(GradCAM):
    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    short = "Guided Grad-CAM"
    output = "pixels"
    signed_view = True
    notes = (RECTIFIER_NOTE,)
    heatmap_rule = "max over colour channels of |a|"
    summary = (
        "Guided backpropagation multiplied pixel-wise by the upsampled Grad-CAM map: "
        "fine detail from guided backprop, class discrimination from Grad-CAM."
    )
    formula = r"$$ G = R_{\text{guided}} \odot \mathrm{upsample}(L_{\text{Grad-CAM}}) $$"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        out = torch.empty_like(x)
        tgt = torch.empty(len(x), dtype=torch.long, device=x.device)

        def fn(s: int, e: int) -> None:
            cam, t = self._cam(x[s:e], None if target is None else target[s:e])
            g, _, _ = input_gradient(self._net(x), x[s:e], t, "guided")
            out[s:e] = g * cam
            tgt[s:e] = t

        run_batched(len(x), self.batch_size, fn)
        self.last_target = tgt
        return out

    def heatmap(self, attribution: torch.Tensor) -> torch.Tensor:
        return max_abs_channels(attribution)


# SmoothGrad, SmoothGrad² and VarGrad are three statistics of the same noisy gradients: the
# moments are computed once per (network state, photos, classes, settings) and served to all
# three (a few recent entries per network, dropped with the network).
_MOMENTS: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
_MOMENTS_KEEP = 2


def _photos_key(x: torch.Tensor) -> tuple:
    data = x.detach().contiguous().cpu().numpy().tobytes()
    return (tuple(x.shape), str(x.dtype), str(x.device), hashlib.blake2b(data, digest_size=16).hexdigest())


def shared_moments(model: nn.Module, key: tuple, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``compute()`` once per ``(state of model, key)``; later calls get the stored result."""
    entries = _MOMENTS.setdefault(model, OrderedDict())
    full = (state_key(model), key)
    if full in entries:
        entries.move_to_end(full)
        return entries[full]
    value = compute()
    entries[full] = value
    while len(entries) > _MOMENTS_KEEP:
        entries.popitem(last=False)
    return value


def _gradient_moments(model, x: torch.Tensor, t: torch.Tensor, n: int, batch_size: int | None,
                      copy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      squares: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean input gradient over ``n`` derived copies of each image (SmoothGrad's noisy
    copies) and, with ``squares``, the mean of the squared gradients
    (else None). ``copy(img_idx, j_idx)`` builds a batch of copies; all len(x)·n copies
    go through the model in batches of ``batch_size``."""
    total = torch.zeros_like(x)
    total_sq = torch.zeros_like(x) if squares else None

    def fn(s: int, e: int) -> None:
        k = torch.arange(s, e, device=x.device)
        img, j = k // n, k % n
        g, _, _ = input_gradient(model, copy(img, j), t[img], "gradient")
        g_sq = g * g if total_sq is not None else None
        total.index_add_(0, img, g)
        if total_sq is not None:
            total_sq.index_add_(0, img, g_sq)

    run_batched(len(x) * n, batch_size, fn)
    return total / n, (None if total_sq is None else total_sq / n)


@register
class SmoothGrad(AttributionMethod):
    name = "smoothgrad"
    title = "SmoothGrad"
    short = "SmoothGrad"
    paper = "Smilkov, Thorat, Kim, Viégas & Wattenberg (2017), SmoothGrad: removing noise by adding noise"
    url = "https://arxiv.org/abs/1706.03825"
    defaults = {"samples": 25, "sigma": 0.15, "seed": 0}
    gallery_params = {"samples": 25, "sigma": 0.15}
    findings_params = {"samples": 12}
    summary = (
        "The average of the gradients of $n$ noisy copies of the image, $x + \\mathcal N(0, \\sigma^2)$, "
        "with $\\sigma$ a fraction of the image's value range ($x_{\\max} - x_{\\min}$). "
        "The same $n$ noise patterns are used for every image (seeded), so results do not depend "
        "on batching. Shown like the saliency map (max over channels of $|\\cdot|$)."
    )
    formula = r"$$ \hat M(x) = \frac{1}{n}\sum_{i=1}^{n} \nabla_x S_c\big(x + \mathcal N(0, \sigma^2)\big) $$"

    def _noisy_moments(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean gradient and mean squared gradient over the noisy copies of each image
        (computed once for SmoothGrad, SmoothGrad² and VarGrad: :func:`shared_moments`)."""
        t = self._targets(x, target)
        n = int(self.params["samples"])

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            gen = torch.Generator(device="cpu").manual_seed(int(self.params["seed"]))
            noise = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device)
            span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp(min=1e-6)
            sigma = float(self.params["sigma"]) * span  # per image
            mean, mean_sq = _gradient_moments(self._net(x), x, t, n, self.batch_size,
                                              lambda img, j: x[img] + sigma[img].view(-1, 1, 1, 1) * noise[j], True)
            assert mean_sq is not None
            return mean, mean_sq

        key = ("noisy-gradients", _photos_key(x), tuple(t.tolist()), n, float(self.params["sigma"]),
               int(self.params["seed"]), self.fold_bn)
        return shared_moments(self.model, key, compute)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        mean, _ = self._noisy_moments(x, target)
        return mean.clone()


@register
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients with its step count chosen per photo (Captum's convergence delta as the rule).

    The path integral is approximated with the trapezoid rule on ``steps`` points from the baseline
    (α = 0) to the photo (α = 1), both ends included (Captum's ``riemann_trapezoid`` points). The two end
    points' forward passes give F(baseline) and F(x), so each photo's relative completeness error
    ``|Σ attribution − (F(x) − F(baseline))| / |F(x) − F(baseline)|`` is known at no extra pass. The photos
    whose error is ``≥ max_delta`` are computed again with the intervals doubled — only the new midpoints:
    the trapezoid grids are nested, every computed point is kept — batched over just those photos, until
    the error is below ``max_delta`` or a further doubling would exceed the photo's cap (``max_steps`` points;
    ``max_steps ≤ steps``, e.g. 0: no refinement). A map of the class the explained network itself predicts for
    the photo (its largest logit at α = 1) may go on up to ``max_steps_predicted`` points where that is higher
    (0: no higher cap): such a map converges (its logit moves far from the baseline), while a map of another class,
    or of a network with random weights, barely moves its logit, so its *relative* error can stay large at any
    number of points (measured: :data:`generator.plan.IG_STILL_ABOVE`). A photo costs exactly the points it ends
    with: ``(steps − 1)·2^j + 1`` gradient passes (:meth:`levels`). After :meth:`attribute`,
    ``last_completeness`` holds per photo ``steps`` (the points used), ``rel_error`` (the final error), ``sum``,
    ``delta``, ``predicted`` (1 for a map of the predicted class: its cap is :meth:`cap` with ``predicted``) and ``capped``
    (1 where the error is still ≥ ``max_delta`` and no further doubling was allowed)."""

    name = "integrated_gradients"
    title = "Integrated Gradients"
    short = "Int. Gradients"
    paper = "Sundararajan, Taly & Yan (2017), Axiomatic Attribution for Deep Networks"
    url = "https://arxiv.org/abs/1703.01365"
    # max_steps 0: the steps as given (no refinement) unless a caller asks for it; the galleries and the findings do
    defaults = {"steps": 50, "baseline": "black", "max_steps": 0, "max_delta": 0.05, "max_steps_predicted": 0}
    # measured on EfficientNet-Lite0 with the midpoint rule: completeness error 5–75 % at 32 steps, 3–28 % at 64,
    # 1–7 % at 128 (the trapezoid's error is about twice the midpoint's at the same intervals): hence caps of
    # 8 (galleries) and 16 (findings) times the starting intervals; the preview profile does not refine
    # (generator/profiles.py METHOD_PARAMS). The findings refine a map of the predicted class further, to 1,921
    # points: at 241, 1 of 30 (fixed baseline) and 3 of 30 (shifted) of EfficientNet-Lite1's maps stayed at or above
    # 5 % (worst 22.5 %); up to 1,921, all 180 invariance runs of Lite0/1/2 ended below 5 % (at most 961). Their
    # other maps (another class, randomised networks) keep the cap of 241, which most of them reach whatever the cap
    # (measured: the comment of plan.IG_STILL_ABOVE)
    gallery_params = {"steps": 64, "baseline": "black", "max_steps": 505}
    findings_params = {"steps": 16, "max_steps": 241, "max_steps_predicted": 1921}
    self_check = SelfCheck(
        title="Completeness check",
        explanation=(
            "Integrated Gradients promises $\\sum_i \\mathrm{IG}_i(x) = F(x) - F(x')$ for the explained logit $F$. The table\n"
            "gives the relative error $|\\sum_i \\mathrm{IG}_i - (F(x) - F(x'))| / |F(x) - F(x')|$ of the trapezoid-rule\n"
            "approximation (Captum's *convergence delta*, relative), measured again on the model itself after the maps\n"
            "were made. Each photo starts at `steps` points; a photo whose error is at or above `max_delta` is computed\n"
            "again with the intervals doubled (the points already computed are kept), up to `max_steps` points (a map\n"
            "of the class the network predicts: up to `max_steps_predicted` where that is higher); the points each\n"
            "photo used are in the table."),
        measure="rel_error",
        setting="steps",
        used="steps",
        cap="max_steps",
        tolerance="max_delta",
    )
    heatmap_rule = "|sum over colour channels of a| (attributions add up per pixel)"
    summary = (
        "The gradient averaged along the straight path from a baseline $x'$ (default: a black "
        "image) to the image, times $(x - x')$. The attributions add up to "
        "$F(x) - F(x')$ (*completeness*); the integral is approximated with the trapezoid rule "
        "on `steps` points (both ends included), the intervals doubled for each photo whose sum misses "
        "$F(x) - F(x')$ by `max_delta` or more, up to `max_steps` points (for a map of the class the network "
        "predicts, up to `max_steps_predicted` where that is higher); the site reports the points used "
        "and how well the sum matches."
    )
    formula = (
        r"$$ \mathrm{IG}_i(x) = (x_i - x'_i)\int_0^1 "
        r"\frac{\partial F\big(x' + \alpha (x - x')\big)}{\partial x_i}\,d\alpha $$"
    )

    def __init__(self, model: nn.Module, batch_size: int | None = None, **params: Any) -> None:
        super().__init__(model, batch_size=batch_size, **params)
        if int(self.params["steps"]) < 2:
            raise ValueError(f"integrated_gradients: steps = {self.params['steps']}: the trapezoid rule needs ≥ 2 "
                             "points (the baseline and the photo)")
        if not float(self.params["max_delta"]) > 0:
            raise ValueError(f"integrated_gradients: max_delta = {self.params['max_delta']}: must be > 0")
        self.last_completeness: dict[str, torch.Tensor] | None = None

    @classmethod
    def cap(cls, params: dict, predicted: bool = False) -> int:
        """The most points a map may use under ``params`` (over the defaults): ``max_steps``; for a map of the
        class the explained network predicts, ``max_steps_predicted`` where that is higher."""
        p = {**cls.defaults, **dict(params)}
        return max(int(p["max_steps"]), int(p["max_steps_predicted"])) if predicted else int(p["max_steps"])

    @classmethod
    def levels(cls, params: dict, predicted: bool = False) -> list[int]:
        """The point counts a photo can end with under ``params`` (over the defaults): ``steps``, then
        ``(steps − 1)·2^j + 1`` while at most its :meth:`cap` (``predicted``: a map of the predicted class)."""
        p = {**cls.defaults, **dict(params)}
        first, cap = int(p["steps"]), cls.cap(p, predicted)
        out = [first]
        while (out[-1] - 1) * 2 + 1 <= cap:
            out.append((out[-1] - 1) * 2 + 1)
        return out

    @classmethod
    def moved_with_input(cls, params: dict, shift) -> dict:
        """The settings with the baseline moved by ``shift`` (per colour channel) along with the input:
        Kindermans et al.'s (2017) remedy that makes Integrated Gradients input-invariant by construction."""
        p = {**cls.defaults, **dict(params)}
        b = cls._baseline_values(p["baseline"])
        return {**dict(params), "baseline": [float(b[c % len(b)]) + float(v) for c, v in enumerate(shift)]}

    @staticmethod
    def _baseline_values(b) -> list[float]:
        if isinstance(b, str):
            value = {"black": 0.0, "grey": 0.5, "gray": 0.5, "white": 1.0}.get(b)
            if value is None:
                raise ValueError(f"integrated_gradients: unknown baseline {b!r} (black, grey, white, a number or one "
                                 "per colour channel)")
            return [value]
        if isinstance(b, (list, tuple)):
            if len(b) not in (1, 3):
                raise ValueError(f"integrated_gradients: baseline {b!r}: one value or one per colour channel")
            return [float(v) for v in b]
        return [float(b)]

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        v = self._baseline_values(self.params["baseline"])
        if len(v) == 1:
            return torch.full_like(x, v[0])
        return torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1).expand_as(x).clone()

    def _path_points(self, net: nn.Module, base: torch.Tensor, diff: torch.Tensor, t: torch.Tensor, img: torch.Tensor,
                     alpha: torch.Tensor, weight: torch.Tensor, total: torch.Tensor, ends: torch.Tensor) -> None:
        """Add ``weight`` × the gradient at ``base + alpha·diff`` of photo ``img`` (vectors, one entry per point)
        to ``total``; the target logit at α = 0 and α = 1 goes to ``ends[:, 0]`` / ``ends[:, 1]``, and at α = 1
        whether the target is the network's largest logit to ``ends[:, 2]`` (1 or 0). All points in batches of
        ``batch_size``."""
        def fn(s: int, e: int) -> None:
            i, a = img[s:e], alpha[s:e]
            g, logits, _ = input_gradient(net, base[i] + a.view(-1, 1, 1, 1) * diff[i], t[i], "gradient")
            f = logits.float().gather(1, t[i].view(-1, 1))[:, 0]
            total.index_add_(0, i, g * weight[s:e].view(-1, 1, 1, 1))
            for col, at in ((0, 0.0), (1, 1.0)):
                hit = a == at
                if hit.any():
                    ends[i[hit], col] = f[hit]
                    if col == 1:
                        ends[i[hit], 2] = (logits[hit].argmax(1) == t[i][hit]).to(ends.dtype)

        run_batched(len(img), self.batch_size, fn)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = self._targets(x, target)
        base = self.baseline_for(x)
        diff = x - base
        net = self._net(x)
        B, dev = len(x), x.device
        first, tol = int(self.params["steps"]), float(self.params["max_delta"])
        intervals = torch.full((B,), first - 1, dtype=torch.long, device=dev)
        total = torch.zeros_like(x)  # Σ of the trapezoid weights × gradients, in units of one interval
        ends = x.new_zeros(B, 3)  # F(baseline), F(x) of the target logit; whether the target is the predicted class
        # every photo: the points k / (steps − 1), k = 0 … steps − 1, the two ends weighted ½
        k = torch.arange(first, device=dev, dtype=x.dtype)
        w = torch.ones(first, device=dev, dtype=x.dtype)
        w[0] = w[-1] = 0.5
        img = torch.arange(B, device=dev).repeat_interleave(first)
        self._path_points(net, base, diff, t, img, (k / (first - 1)).repeat(B), w.repeat(B), total, ends)
        delta = ends[:, 1] - ends[:, 0]
        predicted = ends[:, 2] > 0.5
        cap = torch.where(predicted, self.cap(self.params, True), self.cap(self.params)).to(intervals)

        def error(of: torch.Tensor) -> torch.Tensor:
            sums = (diff[of] * total[of] / intervals[of].view(-1, 1, 1, 1).to(x.dtype)).flatten(1).sum(1)
            return (sums - delta[of]).abs() / delta[of].abs().clamp(min=1e-6)

        err = error(torch.arange(B, device=dev))
        while True:  # the photos at or above max_delta whose doubled intervals stay within their cap
            todo = ((err >= tol) & (2 * intervals + 1 <= cap)).nonzero()[:, 0]
            if not len(todo):
                break
            m = intervals[todo]
            img = todo.repeat_interleave(m)  # each photo's new midpoints (2j + 1) / (2m), j = 0 … m − 1
            j = torch.cat([torch.arange(int(n), device=dev) for n in m.tolist()]).to(x.dtype)
            alpha = (2 * j + 1) / (2 * m.repeat_interleave(m).to(x.dtype))
            self._path_points(net, base, diff, t, img, alpha, torch.ones_like(alpha), total, ends)
            intervals[todo] = 2 * m
            err[todo] = error(todo)
        mean = total / intervals.view(-1, 1, 1, 1).to(x.dtype)
        attribution = diff * mean
        self.last_completeness = {
            "steps": (intervals + 1).float(), "rel_error": err.float(), "delta": delta.float(),
            "sum": attribution.flatten(1).sum(1).float(), "capped": (err >= tol).float(),
            "predicted": predicted.float()}
        return attribution

    def heatmap(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution.sum(1).abs()

    @torch.no_grad()
    def completeness(self, inputs: torch.Tensor, target: Any, attribution: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image, measured again on the model itself (not the batch-norm-folded copy the gradients
        were computed on): ``sum`` of attributions, ``delta`` = F(x) − F(baseline) of the target logit, and
        ``rel_error`` = |sum − delta| / max(|delta|, 1e-6); with ``steps`` (the points each image used) and
        ``capped`` when ``attribution`` is the last one :meth:`attribute` computed for these images."""
        x = _prep(inputs)
        t = as_target(target, len(x), x.device) if target is not None else self.last_target
        if t is None:
            raise ValueError("completeness needs the target used for the attribution")
        fx = predict(self.model, x, self.batch_size).gather(1, t.view(-1, 1))[:, 0]
        fb = predict(self.model, self.baseline_for(x), self.batch_size).gather(1, t.view(-1, 1))[:, 0]
        total = attribution.flatten(1).sum(1)
        delta = fx - fb
        out = {"sum": total, "delta": delta, "rel_error": (total - delta).abs() / delta.abs().clamp(min=1e-6)}
        last = self.last_completeness
        if last is not None and len(last["sum"]) == len(x) and torch.allclose(last["sum"].to(total), total):
            out["steps"], out["capped"] = last["steps"].to(total.device), last["capped"].to(total.device)
        return out

    def check(self, inputs: torch.Tensor, target: Any, attribution: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.completeness(inputs, target, attribution)


@register
class Occlusion(AttributionMethod):
    name = "occlusion"
    title = "Occlusion"
    short = "Occlusion"
    paper = "Zeiler & Fergus (2014), Visualizing and Understanding Convolutional Networks"
    url = "https://arxiv.org/abs/1311.2901"
    output = "map"
    defaults = {"window": 32, "stride": 16, "fill": 0.5}
    gallery_params = {"window": 32, "stride": 16, "fill": 0.5}
    findings_params = {"window": 32, "stride": 32}
    heatmap_rule = "drop in target probability, clipped at 0"
    summary = (
        "A grey square (`window` pixels, value `fill`) is slid over the image with step `stride`; "
        "each pixel's value is the drop of the target class *probability* (after the softmax), "
        "averaged over all square positions that cover the pixel. The last row/column of positions "
        "is aligned with the image border so every pixel is covered."
    )
    formula = (
        r"$$ M_{ij} = \operatorname{mean}_{w \ni (i,j)} \big[p_c(x) - p_c(x \text{ with } w \text{ grey})\big] $$"
    )

    @staticmethod
    def positions(size: int, window: int, stride: int) -> list[int]:
        window = min(window, size)
        pos = list(range(0, size - window + 1, max(1, stride)))
        if pos[-1] != size - window:
            pos.append(size - window)
        return pos

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        B, _, H, W = x.shape
        win, stride, fill = int(self.params["window"]), int(self.params["stride"]), float(self.params["fill"])
        wh, ww = min(win, H), min(win, W)
        ys, xs = self.positions(H, win, stride), self.positions(W, win, stride)
        boxes = torch.tensor([(y, x0) for y in ys for x0 in xs], device=x.device)
        P = len(boxes)
        net = self._net(x)
        local = patch_forward(net, x[:1]) if B else None
        if local is not None:
            return self._attribute_local(local, x, target, boxes.tolist(), wh, ww, fill)
        logits0 = predict(net, x, self.batch_size)
        t = logits0.argmax(1) if target is None else target
        self.last_target = t
        p0 = logits0.softmax(1).gather(1, t.view(-1, 1))[:, 0]
        drops = x.new_empty(B * P)
        yy = torch.arange(H, device=x.device).view(1, H, 1)
        xx = torch.arange(W, device=x.device).view(1, 1, W)

        def window_mask(b: torch.Tensor) -> torch.Tensor:
            y0, x0 = b[:, 0].view(-1, 1, 1), b[:, 1].view(-1, 1, 1)
            return ((yy >= y0) & (yy < y0 + wh) & (xx >= x0) & (xx < x0 + ww)).unsqueeze(1)

        @torch.inference_mode()  # forward only
        def fn(s: int, e: int) -> None:
            k = torch.arange(s, e, device=x.device)
            img, p = k // P, k % P
            m = window_mask(boxes[p])
            xo = torch.where(m, torch.full_like(x[img], fill), x[img])
            prob = net(xo).float().softmax(1).gather(1, t[img].view(-1, 1))[:, 0]
            drops[s:e] = p0[img] - prob

        run_batched(B * P, self.batch_size, fn)
        return self._average(drops.view(B, P), boxes.tolist(), x.shape, wh, ww)

    @staticmethod
    def _average(d: torch.Tensor, boxes: list, shape, wh: int, ww: int) -> torch.Tensor:
        """Each pixel's mean drop over the windows covering it (``d``: B×P)."""
        B, _, H, W = shape
        total = d.new_zeros(B, 1, H, W)
        count = d.new_zeros(1, 1, H, W)
        for p, (y0, x0) in enumerate(boxes):
            total[:, :, y0 : y0 + wh, x0 : x0 + ww] += d[:, p].view(B, 1, 1, 1)
            count[:, :, y0 : y0 + wh, x0 : x0 + ww] += 1
        return total / count.clamp(min=1)

    def _attribute_local(self, local, x: torch.Tensor, target: torch.Tensor | None, boxes: list, wh: int, ww: int,
                         fill: float) -> torch.Tensor:
        """The same map, each copy recomputing only the block of each layer its square reaches
        (:mod:`~generator.methods.patch_forward`): per chunk of ``batch_size`` images their layers
        once, then their copies in batches of ``batch_size``."""
        B, _, H, W = x.shape
        P = len(boxes)
        lengths, plans = local.plans((H, W), boxes, wh, ww)
        drops = x.new_empty(B, P)  # normal tensors, written in place under inference mode (forward only)
        tgt = torch.empty(B, dtype=torch.long, device=x.device)

        def images(s0: int, e0: int) -> None:
            with torch.inference_mode():
                base = local.base(x[s0:e0])
                logits0 = local.rest(base[1]).float()
                t = logits0.argmax(1) if target is None else target[s0:e0]
                p0 = logits0.softmax(1).gather(1, t.view(-1, 1))[:, 0]
                copies = [(i, p) for i in range(e0 - s0) for p in range(P)]

                def fn(s: int, e: int) -> None:
                    img, pos = [i for i, _p in copies[s:e]], [p for _i, p in copies[s:e]]
                    logits = local.occluded_logits(base, lengths, img, [plans[p] for p in pos], wh, ww, fill).float()
                    i, p = torch.tensor(img, device=x.device), torch.tensor(pos, device=x.device)
                    drops[s0 + i, p] = p0[i] - logits.softmax(1).gather(1, t[i].view(-1, 1))[:, 0]

                run_batched(len(copies), self.batch_size, fn)
                tgt[s0:e0] = t

        run_batched(B, self.batch_size, images)
        self.last_target = tgt
        return self._average(drops, boxes, x.shape, wh, ww)

    def heatmap(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution[:, 0].clamp(min=0)


# SmoothGrad's two variants that beat a random ranking in Hooker et al.'s ROAR benchmark
# (registered last so the original eight keep their places in galleries and menus)


@register
class SmoothGradSquared(SmoothGrad):
    name = "smoothgrad_sq"
    title = "SmoothGrad²"
    short = "SmoothGrad²"
    paper = ("Hooker, Erhan, Kindermans & Kim (2019), A Benchmark for Interpretability Methods in Deep Neural "
             "Networks")
    url = "https://arxiv.org/abs/1806.10758"
    summary = (
        "SmoothGrad with every gradient squared before averaging: the mean of "
        "$\\big(\\nabla_x S_c\\big)^2$ over $n$ noisy copies $x + \\mathcal N(0, \\sigma^2)$ (same noise, "
        "$\\sigma$ and seeds as SmoothGrad). Gradients of opposite sign no longer cancel, so the map "
        "measures how strongly a pixel matters under noise, not in which direction. In Hooker et al.'s "
        "ROAR benchmark (retrain after removing the top-ranked pixels) it was one of the two "
        "methods that beat a random ranking."
    )
    formula = r"$$ \hat M(x) = \frac{1}{n}\sum_{i=1}^{n} \Big(\nabla_x S_c\big(x + \mathcal N(0, \sigma^2)\big)\Big)^2 $$"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        _, mean_sq = self._noisy_moments(x, target)
        return mean_sq.clone()


@register
class VarGrad(SmoothGrad):
    name = "vargrad"
    title = "VarGrad"
    short = "VarGrad"
    paper = ("Adebayo, Gilmer, Goodfellow & Kim (2018), Local Explanation Methods for Deep Neural Networks "
             "Lack Sensitivity to Parameter Values")
    url = "https://arxiv.org/abs/1810.03307"
    summary = (
        "The *variance* of the gradients of $n$ noisy copies of the image (same noise, $\\sigma$ and "
        "seeds as SmoothGrad), per pixel and colour channel: where the gradient changes most "
        "under small perturbations. It equals SmoothGrad² minus the square of SmoothGrad. With "
        "SmoothGrad² it was one of the two methods that beat a random ranking in Hooker et al.'s "
        "ROAR benchmark (2019)."
    )
    formula = (
        r"$$ \hat M(x) = \frac{1}{n}\sum_{i=1}^{n} \big(g_i - \bar g\big)^2,\qquad "
        r"g_i = \nabla_x S_c\big(x + \mathcal N(0, \sigma^2)\big),\ \bar g = \frac{1}{n}\sum_i g_i $$"
    )

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        mean, mean_sq = self._noisy_moments(x, target)
        return (mean_sq - mean * mean).clamp(min=0)  # E[g²] − E[g]², rounding can dip below 0


def make(name: str, loaded_model: Any, batch_size: int | None = None, **overrides: Any) -> AttributionMethod:
    """Build method ``name`` on a registry ``LoadedModel`` (or a bare ``nn.Module``).

    For a method that ``needs_layer`` the layer defaults to ``spec.gradcam_layer``;
    ``layer=`` takes a catalogued layer name (LoadedModel) or a module path / module.
    """
    if name not in ATTRIBUTION_METHODS:
        raise KeyError(f"unknown attribution method {name!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    cls = ATTRIBUTION_METHODS[name]
    net = getattr(loaded_model, "net", loaded_model)
    if cls.needs_layer:
        layer = overrides.pop("layer", None)
        spec = getattr(loaded_model, "spec", None)
        if spec is not None:
            lname = layer if isinstance(layer, str) and layer else spec.gradcam_layer
            if not isinstance(layer, nn.Module):
                if not lname:
                    raise ValueError(f"{spec.name} has no gradcam_layer; pass layer=")
                return cls(net, loaded_model.module_path(lname), batch_size=batch_size, layer_name=lname, **overrides)
        if layer is None or layer == "":
            raise ValueError(f"{name} on a bare module needs layer= (a module path or module)")
        return cls(net, layer, batch_size=batch_size, **overrides)
    return cls(net, batch_size=batch_size, **overrides)


__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionMethod",
    "Deconvnet",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "Occlusion",
    "Saliency",
    "SelfCheck",
    "SmoothGrad",
    "SmoothGradSquared",
    "VarGrad",
    "input_gradient",
    "make",
    "max_abs_channels",
    "predict",
    "register",
    "resolve_target",
    "run_batched",
]
