import pytest
import torch
from torch import nn

from generator.methods.activity import Activity, summarise
from generator.methods.base import capture_outputs


class Tiny(nn.Module):
    """conv (2 fixed kernels) → ReLU(inplace) → global mean → linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight[0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # copies x[i, j]
            self.conv.weight[1] = torch.tensor([[-1.0, 0.0], [0.0, 0.0]])  # -x[i, j]
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))

    def forward(self, x):
        h = self.relu(self.conv(x))
        return self.fc(h.mean(dim=(2, 3)))


def test_activity_values_on_tiny_net():
    net = Tiny()
    x = torch.tensor([[[[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0], [7.0, -8.0, 9.0]]]])
    x = torch.cat([x, -x])  # batch of 2
    acts, logits = Activity(net, {"conv": net.conv, "relu": net.relu}).record(x)
    top_left = x[:, 0, :2, :2]
    # conv output recorded before the in-place ReLU changed it
    assert torch.equal(acts["conv"][:, 0], top_left) and torch.equal(acts["conv"][:, 1], -top_left)
    assert torch.equal(acts["relu"][:, 0], top_left.clamp(min=0))
    assert torch.equal(acts["relu"][:, 1], (-top_left).clamp(min=0))
    m0 = top_left.clamp(min=0).mean(dim=(1, 2))
    m1 = (-top_left).clamp(min=0).mean(dim=(1, 2))
    assert torch.allclose(logits, torch.stack([m0, m1, m0 + m1], 1))
    assert not net.conv._forward_hooks and not net.relu._forward_hooks


def test_summarise_picks_top_channels_and_neurons():
    acts = torch.zeros(1, 4, 3, 3)
    acts[0, 2] = 1.0  # highest mean
    acts[0, 1, 1, 1] = 5.0  # highest peak, lower mean
    acts[0, 3] = 0.5
    (s,) = summarise(acts, top_channels=2, neurons=1)
    assert s["channels"].tolist() == [2, 1]
    assert s["neurons"].tolist() == [1] and float(s["neuron_peak"][0]) == 5.0
    assert torch.equal(s["maps"][0].float(), acts[0, 2])
    assert torch.allclose(s["mean_map"].float(), acts[0].mean(0), atol=1e-3)
    (f,) = summarise(acts, top_channels=2, neurons=2, fixed=[3, 0, 99])
    assert f["neurons"].tolist() == [3, 0]


def test_hooks_removed_when_forward_raises():
    net = Tiny()
    with pytest.raises(RuntimeError):
        with capture_outputs({"conv": net.conv}):
            net(torch.zeros(1, 1, 3, 3))
            raise RuntimeError("boom")
    assert not net.conv._forward_hooks


def test_batched_equals_single(lite0):
    layers = {n: lite0.module(n) for n in ["stem", "stage3", "head"]}
    x = torch.rand(3, 3, 224, 224)
    acts, logits = Activity(lite0.net, layers).record(x)
    acts1, logits1 = Activity(lite0.net, layers).record(x[1:2])
    for n in layers:
        assert torch.allclose(acts[n][1:2], acts1[n], atol=1e-4)
    assert torch.allclose(logits[1:2], logits1, atol=1e-4)
