"""The registry's pixel-space classifiers compute what the libraries' own pretrained models compute.

No real weights exist offline, so each test writes a Kaiming-normal state dict under the
file name the library expects into an empty hub cache. The registry loads it through its
real path (``load_model``, offline); the reference is the library itself:

- torchvision: ``get_model(arch, weights=W)`` — the builder finds the file in the cache, so
  it constructs the model exactly as for the real download (``transform_input``,
  auxiliary heads…) — fed with ``W.transforms()`` applied to the PIL photo;
- timm: ``create_model(arch)`` + ``load_state_dict`` fed with timm's eval transform from
  its ``pretrained_cfg`` (mean, std, crop_pct, interpolation).
"""
import math

import pytest
import torch
import torchvision.models as tvm

from generator.images import load_rgb
from generator.models import CLASSIC_MODELS, get_spec, load_model
from conftest import DATA_IMAGES

PHOTOS = ["tabby-cat-chelsea.jpg", "espresso.jpg"]
RTOL = 1e-4

# Constructor arguments under which torchvision's released files were saved, where they
# differ from the builder defaults: the googlenet file carries the auxiliary heads (the
# builder loads it with aux_logits=True and drops them afterwards).
FILE_LAYOUT = {"googlenet": {"aux_logits": True, "init_weights": False}}


def kaiming_state_dict(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights under which logits depend strongly on the input (a default init can leave
    them nearly constant): Kaiming-normal kernels, non-trivial biases and norm statistics.
    Only names and shapes are read from ``net`` (it may live on the meta device); stored
    as float16 like the other fake checkpoints, both sides read the same values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in net.state_dict().items():
        if not v.is_floating_point():  # BatchNorm's num_batches_tracked
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif v.dim() >= 2:
            out[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("weight"):
            out[k] = 1.0 + 0.2 * torch.randn(v.shape, generator=g)
        else:  # biases, running means
            out[k] = 0.2 * torch.randn(v.shape, generator=g)
    return {k: v.half() if v.is_floating_point() else v for k, v in out.items()}


def _photos(n: int):
    return [load_rgb(DATA_IMAGES / p)[0] for p in PHOTOS[:n]]


def _registry_logits(text: str, pils) -> torch.Tensor:
    m = load_model(text)
    assert m.pretrained and m.weights_path
    with torch.no_grad():
        return m.net(m.spec.preprocess(pils))


def _assert_same_logits(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape == (ref.shape[0], 1000)
    scale = ref.abs().max()
    err = (got - ref).abs().max()
    assert err <= RTOL * scale, f"max |Δlogit| {err:.3g} vs max |logit| {scale:.3g}"
    # the weights make the logits depend on the input: spread across classes per photo,
    # and (with two photos) a difference between them far above the tolerance
    assert bool((ref.std(dim=1) > 0.05 * scale).all())
    if ref.shape[0] > 1:
        assert (ref[0] - ref[1]).abs().max() > 1000 * RTOL * scale


@pytest.mark.parametrize("text", [*CLASSIC_MODELS, "torchvision:resnet18"])
def test_torchvision_parity(text, tmp_torch_home):
    spec = get_spec(text)
    weights = tvm.get_weight(spec.weights_name)
    assert weights.url == spec.weights_url and weights.url.endswith("/" + spec.weights_file)
    with torch.device("meta"):  # only the names and shapes are needed
        layout = tvm.get_model(spec.arch, weights=None, **FILE_LAYOUT.get(spec.arch, {}))
    torch.save(kaiming_state_dict(layout), tmp_torch_home / spec.weights_file)
    pils = _photos(1 if spec.arch == "vgg16" else 2)  # VGG16 is slow on two CPU cores

    got = _registry_logits(text, pils)
    ref_net = tvm.get_model(spec.arch, weights=weights).eval()  # loads the file from the cache
    tf = weights.transforms()
    with torch.no_grad():
        ref = ref_net(torch.stack([tf(p) for p in pils]))
    _assert_same_logits(got, ref)


def test_timm_parity(tmp_torch_home):
    import timm
    from timm.data import create_transform, resolve_data_config

    text = "timm:resnet18"
    spec = get_spec(text)
    ref_net = timm.create_model("resnet18", pretrained=False)
    sd = kaiming_state_dict(ref_net)
    torch.save(sd, tmp_torch_home / spec.weights_file)
    ref_net.load_state_dict(sd)
    ref_net.eval()
    pils = _photos(2)

    got = _registry_logits(text, pils)
    tf = create_transform(**resolve_data_config({}, model=ref_net))
    with torch.no_grad():
        ref = ref_net(torch.stack([tf(p) for p in pils]))
    _assert_same_logits(got, ref)
