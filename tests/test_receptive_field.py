"""Receptive fields: hand calculations on toy nets, an independent brute-force check by
autograd, published values for the classic architectures, and patch crops at borders."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from generator.methods.base import capture_outputs
from generator.models import Classifier, load_model
from generator.receptive_field import crop_patch, receptive_field, receptive_field_boxes


def _grid(h: int, w: int) -> torch.Tensor:
    return torch.cartesian_prod(torch.arange(h), torch.arange(w))


def seq_net() -> Classifier:
    # conv k3 s1 p1 → ReLU → maxpool k2 s2 → conv k3 s2 p0 → BN
    body = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                         nn.Conv2d(4, 5, 3, 2, 0), nn.BatchNorm2d(5))
    return Classifier(body, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()


class Inceptionish(nn.Module):
    """1×1 and 5×5 branches concatenated, a residual block with a dilated 3×3, then a
    stride-2 depthwise 3×3."""

    def __init__(self, relu: bool = True) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(3, 2, 1)
        self.b5 = nn.Conv2d(3, 3, 5, padding=2)
        self.res = nn.Conv2d(5, 5, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(5)
        self.dw = nn.Conv2d(5, 5, 3, stride=2, padding=1, groups=5)
        self.act = nn.ReLU6() if relu else nn.Identity()

    def forward(self, x):
        z = torch.cat([self.b1(x), self.act(self.b5(x))], 1)
        z = z + self.act(self.bn(self.res(z)))
        return self.dw(z)


def test_sequential_toy_net_matches_hand_calculation():
    net = seq_net()
    # conv: size 3, stride 1, offset -1; pool 2/2: size 4, stride 2; conv k3 s2: size 8, stride 4, offset -1
    rf = receptive_field(net, net.body[3], (16, 16))
    assert rf.grid == (3, 3)
    assert (rf.y.size, rf.y.stride, rf.y.offset) == (8, 4, -1)
    assert (rf.size[0], rf.stride[0]) == (8, 4)  # (size, stride) of the field, vertical axis
    boxes = receptive_field_boxes(net, net.body[4], (16, 16), torch.tensor([[0, 0], [1, 2], [2, 1]]))
    assert boxes.tolist() == [[0, 0, 7, 7], [3, 7, 11, 15], [7, 3, 15, 11]]
    # after the first conv: 3×3 windows, clipped at the border
    b = receptive_field_boxes(net, net.body[0], (16, 16), torch.tensor([[0, 15], [5, 6]]))
    assert b.tolist() == [[0, 14, 2, 16], [4, 5, 7, 8]]


def test_branches_residual_depthwise_match_hand_calculation_on_non_square_input():
    net = Classifier(nn.Sequential(Inceptionish()), (0.0,) * 3, (1.0,) * 3).eval()
    # concat of 1×1 and 5×5 → 5, offset -2; + dilated 3×3 residual → 9, offset -4;
    # depthwise 3×3 stride 2 → 11, stride 2, offset -5
    rf = receptive_field(net, net.body[0].dw, (20, 24))
    assert rf.grid == (10, 12)
    assert (rf.y.size, rf.y.stride, rf.y.offset) == (11, 2, -5)
    assert (rf.x.size, rf.x.stride, rf.x.offset) == (11, 2, -5)
    got = rf.boxes(torch.tensor([[0, 0], [9, 11], [4, 5]])).tolist()
    assert got == [[0, 0, 6, 6], [13, 17, 20, 24], [3, 5, 14, 16]]
    assert rf.boxes(torch.tensor([[9, 11]]), clip=False).tolist() == [[13, 17, 24, 28]]


def test_boxes_equal_brute_force_gradient_support_everywhere():
    """Independent check: bounding box of the autograd gradient support of every unit
    of a linear, positive-weight version of the branch net (no cancellation possible)."""
    torch.manual_seed(0)
    body = Inceptionish(relu=False).double().eval()
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.abs() + 0.1
    net = Classifier(nn.Sequential(body), (0.0,) * 3, (1.0,) * 3).double().eval()
    H, W = 13, 11
    x = torch.rand(1, 3, H, W, dtype=torch.float64, requires_grad=True)
    out = net.body(x)  # normalisation is the identity here
    h, w = out.shape[2:]
    rf = receptive_field(net, body.dw, (H, W))
    pos = _grid(h, w)
    ours = rf.boxes(pos)
    for (y, xx), box in zip(pos.tolist(), ours.tolist()):
        (g,) = torch.autograd.grad(out[0, 0, y, xx], x, retain_graph=True)
        nz = g[0].abs().sum(0).nonzero()
        expect = [int(nz[:, 0].min()), int(nz[:, 1].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].max()) + 1]
        assert box == expect, (y, xx)


def test_patch_crop_at_image_borders():
    net = seq_net()
    img = torch.arange(16 * 16, dtype=torch.float32).view(1, 16, 16).expand(3, 16, 16) / 1000.0
    pos = torch.tensor([[0, 0], [2, 2]])
    clipped = receptive_field_boxes(net, net.body[3], (16, 16), pos)
    full = receptive_field_boxes(net, net.body[3], (16, 16), pos, clip=False)
    assert full.tolist() == [[-1, -1, 7, 7], [7, 7, 15, 15]]
    p0 = crop_patch(img, clipped[0], pad_box=full[0], fill=-1.0)
    assert p0.shape == (3, 8, 8)
    assert (p0[:, 0, :] == -1).all() and (p0[:, :, 0] == -1).all()  # outside the image: fill
    assert torch.equal(p0[:, 1:, 1:], img[:, 0:7, 0:7])  # inside: exactly the pixels at the top-left
    p2 = crop_patch(img, clipped[1], pad_box=full[1])
    assert torch.equal(p2, img[:, 7:15, 7:15])
    assert crop_patch(img, clipped[0]).shape == (3, 7, 7)
    with pytest.raises(ValueError):
        crop_patch(img, full[0], pad_box=clipped[0])


def test_fc_layer_sees_whole_image():
    net = Classifier(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 4)), (0.0,) * 3, (1.0,) * 3)
    assert receptive_field_boxes(net, net.body[2], (8, 8), torch.tensor([[0, 0]])).tolist() == [[0, 0, 8, 8]]


@pytest.mark.parametrize("name,layer,size,stride", [
    ("alexnet", "conv5", 163, 16),  # 11/4 → pool → 5 → pool → 3·3·3
    ("vgg16", "conv5_3", 196, 16),
    ("resnet50", "layer4", 427, 32),
    ("googlenet", "inception3a", 43, 8),  # torchvision's "5×5" branch is a 3×3
    ("efficientnet_lite0", "stage1", 19, 4),
])
def test_published_receptive_fields_of_registry_models(name, layer, size, stride):
    lm = load_model(name, allow_random=True)
    rf = receptive_field(lm.net, lm.module(layer), (224, 224))
    assert (rf.size, rf.stride) == ((size, size), (stride, stride))
    with torch.no_grad(), capture_outputs({"m": lm.module(layer)}) as out:
        lm.net(torch.zeros(1, 3, 224, 224))
    h, w = rf.grid
    assert (h, w) == tuple(out["m"].shape[2:])
    # boxes of all units are consistent with the geometry (checked inside) and clipped
    b = rf.boxes(_grid(h, w))
    assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 224).all() and (b[:, 2:] > b[:, :2]).all()
