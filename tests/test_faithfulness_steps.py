"""Deletion/insertion: is the step count enough? The AUCs measured again at twice the steps, on cases with a
known answer (#28)."""
import numpy as np
import torch
from torch import nn

from generator.metrics import faithfulness as fa
from generator.metrics import verdict_checks


class Counting(nn.Module):
    """Wraps a model and counts the images that go through it."""

    def __init__(self, net):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x):
        self.images += len(x)
        return self.net(x)


class Brightness(nn.Module):
    """Class 0's probability *is* the image's mean brightness (softmax of log m, log(1 − m)): with deletion to
    black it falls linearly in the deleted fraction, whatever the order, so the trapezoid is exact at any step
    count."""

    def forward(self, x):
        m = x.mean((1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([m.log(), (1 - m).log()], 1)


class Corner(nn.Module):
    """Only the top-left 1/16 of the image counts: class 0 wins by a wide margin while its mean is bright.
    Deleting that corner first makes the curve drop within the first 1/16 of the pixels — between the first
    two points at 4 or 8 steps, so the trapezoid moves with the step count."""

    def forward(self, x):
        s = x[:, 0, :4, :4].mean((1, 2))
        z = 40 * (s - 0.5)
        return torch.stack([z, torch.zeros_like(z)], 1)


def _run(net, x, top1, orders, steps, blur=1.0):
    b = len(x)
    pairs = [(n, i) for i in range(b) for n in orders]
    coarse = fa.curves_check(net, x, top1, orders, pairs, steps=steps, baseline=[0.0] * 3, blur_sigma=blur,
                             batch_size=5)
    fine = fa.finer_check(net, x, top1, orders, pairs, coarse, steps=steps, baseline=[0.0] * 3, blur_sigma=blur,
                          batch_size=5)
    return pairs, coarse, fine


def test_the_finer_curves_are_the_curves_at_twice_the_steps_for_only_the_new_points():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    top1 = torch.tensor([0, 1])
    orders = {"a": fa.order_from_maps(torch.rand(2, 16, 16), seed=1), "random": fa.random_order(2, 256, seed=2)}
    net = Counting(Corner())
    pairs, coarse, _ = _run(net, x, top1, orders, 4)
    net.images = 0
    fine = fa.finer_check(net, x, top1, orders, pairs, coarse, steps=4, baseline=[0.0] * 3, blur_sigma=1.0,
                          batch_size=3)
    assert net.images == fa.n_forward_finer(len(pairs), 4) == len(pairs) * 2 * 4  # the odd points only
    direct = fa.deletion_insertion(Corner(), x, top1, orders, steps=8, baseline=torch.zeros(3), blur_sigma=1.0)
    for (n, i), c in zip(pairs, fine):
        for k in fa.CURVES:
            assert getattr(c, k).shape == (9,)
            assert torch.allclose(getattr(c, k), direct[n][k][i], atol=1e-6)


def test_a_probability_linear_in_the_kept_fraction_gives_no_change_and_enough():
    x = torch.stack([torch.full((3, 16, 16), v) for v in (0.3, 0.6, 0.9, 0.8)])  # uniform photos: blur keeps them
    top1 = torch.zeros(4, dtype=torch.long)
    orders = {"random": fa.random_order(4, 256, seed=0), "centre": fa.centre_order(4, 16, 16, seed=0)}
    pairs, coarse, fine = _run(Brightness(), x, top1, orders, 4)
    chk = fa.step_check(4, dict(zip(pairs, coarse)), dict(zip(pairs, fine)))
    assert (chk.steps, chk.fine_steps, chk.orders, chk.photos) == (4, 8, ["random", "centre"], [0, 1, 2, 3])
    assert np.abs(chk.change).max() < 1e-6  # float32 rounding only
    # deletion to black: the area is half the photo's probability (its brightness), at either step count
    aucs = fa.auc(torch.stack([c.deletion for c in fine])).numpy()
    assert np.allclose(aucs, [v / 2 for v in (0.3, 0.6, 0.9, 0.8) for _o in orders], atol=1e-6)
    v = verdict_checks.step_verdict(chk, 0.02)
    assert v.enough is True and v.change.n == 4
    assert "from 4 to 8" in v.text and "so the step count is enough" in v.text and "n = 4 photos" in v.text


def test_a_curve_that_bends_between_two_points_moves_with_the_steps_and_depends():
    x = torch.full((3, 3, 16, 16), 0.9)
    top1 = torch.zeros(3, dtype=torch.long)
    corner = torch.zeros(3, 16, 16)
    corner[:, :4, :4] = 1.0
    orders = {"oracle": fa.order_from_maps(corner, seed=0)}
    pairs, coarse, fine = _run(Corner(), x, top1, orders, 4)
    chk = fa.step_check(4, dict(zip(pairs, coarse)), dict(zip(pairs, fine)))
    # deletion [1, 0, 0, 0, 0] → 1/8 at 4 steps, [1, 0, …] → 1/16 at 8; insertion into the blurred copy of a
    # uniform photo (the photo itself) stays at 1 at either count
    assert np.allclose(chk.deletion, 1 / 16, atol=1e-3) and np.allclose(chk.insertion, 0, atol=1e-6)
    assert np.allclose(chk.change, 1 / 32, atol=1e-3)
    v = verdict_checks.step_verdict(chk, 0.02)
    assert v.enough is False and "depend on the step count" in v.text and "within this site" in v.text


def _check(values):
    v = np.asarray(values, dtype=np.float64)
    return fa.StepCheck(8, 16, ["a", "random", "centre"], list(range(len(v))), v, v)


def test_the_sentence_flips_on_each_side_of_the_tolerance():
    chk = _check([0.010, 0.012, 0.011, 0.009, 0.013, 0.010, 0.012, 0.011, 0.010, 0.012])
    iv = verdict_checks.step_verdict(chk, 0.02).change
    assert 0.009 <= iv.lo <= iv.mean <= iv.hi <= 0.013 and iv.n == 10
    above = verdict_checks.step_verdict(chk, iv.hi + 1e-4)  # the tolerance just above the interval: enough
    below = verdict_checks.step_verdict(chk, iv.lo - 1e-4)  # just below it: the areas depend on the steps
    inside = verdict_checks.step_verdict(chk, iv.mean)  # inside it: not shown either way
    assert above.enough is True and "so the step count is enough" in above.text
    assert below.enough is False and "depend on the step count" in below.text
    assert inside.enough is None and "the interval includes 0.0" in inside.text
    assert "not shown to stay below" in inside.text and "within this site" in inside.text
    for v in (above, below, inside):
        assert "n = 10 photos" in v.text and "3 pixel orders" in v.text
    one = verdict_checks.step_verdict(_check([0.001]), 0.02)  # one photo: no interval, no claim
    assert one.enough is None and "one photo gives no interval" in one.text
    assert verdict_checks.step_verdict(None) is None and verdict_checks.step_verdict(_check([])) is None
