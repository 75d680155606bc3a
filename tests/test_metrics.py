"""Metrics of the findings stage on constructed inputs with known answers."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from generator.metrics import faithfulness as fa
from generator.metrics import model_table as mt
from generator.metrics import sanity as sa
from generator.metrics import similarity as si

torch.set_num_threads(1)


def changed_tensors(a, b) -> set[str]:
    """Names of parameters/buffers whose values differ between two same-architecture nets."""
    sa, sb = a.state_dict(), b.state_dict()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


# ----------------------------------------------------------------------------- similarity


def _maps(b=3, h=48, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, generator=g)


def test_identical_maps_score_one():
    a = _maps()
    for name, v in si.compare(a, a.clone()).items():
        assert torch.allclose(v, torch.ones(3, dtype=torch.float64), atol=1e-9), name


def test_spearman_permuted_is_near_zero_and_monotone_invariant():
    a = _maps(b=4, h=64, w=64)
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(64 * 64, generator=g) for _ in range(4)])
    b = torch.gather(a.flatten(1), 1, perm).view_as(a)
    r = si.spearman(a, b)
    assert r.abs().max() < 0.08  # 1/sqrt(4096) = 0.016 standard deviation
    # rank correlation ignores monotone transforms; Pearson does not
    assert torch.allclose(si.spearman(a, a**3 + 2), torch.ones(4, dtype=torch.float64))
    assert (si.pearson(a, a**3) < 0.99).all()
    # a reversed ranking gives -1
    assert torch.allclose(si.spearman(a, 1.0 - a), -torch.ones(4, dtype=torch.float64))


def test_spearman_uses_absolute_values_and_average_ties():
    from scipy.stats import spearmanr

    a = torch.tensor([[[1.0, -2.0], [3.0, 3.0]]])
    b = torch.tensor([[[1.0, 2.0], [-3.0, 4.0]]])
    expected = spearmanr(a.abs().flatten().numpy(), b.abs().flatten().numpy()).statistic
    assert si.spearman(a, b).item() == pytest.approx(expected)
    signed = spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    assert si.spearman(a, b, absolute=False).item() == pytest.approx(signed)


def test_constant_map_scores_zero_not_nan():
    a = _maps(b=2)
    z = torch.zeros_like(a)
    for name, v in si.compare(a, z).items():
        assert torch.isfinite(v).all(), name
    assert torch.equal(si.spearman(a, z), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(si.hog_similarity(a, z), torch.zeros(2, dtype=torch.float64))


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a = _maps(b=3, h=33, w=29, seed=3)
    b = (a + 0.3 * _maps(b=3, h=33, w=29, seed=4)).clamp(0, 1)
    ours = si.ssim(a, b, normalise=False)
    ref = [structural_similarity(x.numpy().astype(np.float64), y.numpy().astype(np.float64), data_range=1.0)
           for x, y in zip(a, b)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-9)
    assert (ours < 0.99).all()
    # structure destroyed → low SSIM
    assert (si.ssim(a, _maps(b=3, h=33, w=29, seed=9)) < 0.2).all()


def _blobs(seed, n=6, size=64):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    m = torch.zeros(size, size)
    for _ in range(n):
        cy, cx = torch.rand(2, generator=g) * size
        r = 4 + 8 * torch.rand(1, generator=g)
        m += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return m[None]


def test_hog_similarity_prefers_same_structure():
    a = _blobs(0)
    noisy = a + 0.05 * _maps(b=1, h=64, w=64, seed=5)
    assert si.hog_similarity(a, noisy).item() > 0.9
    # the same blobs mirrored on the diagonal: every gradient orientation changes
    assert si.hog_similarity(a, a.transpose(1, 2)).item() < 0.2
    others = torch.cat([_blobs(k) for k in range(1, 6)])
    assert si.hog_similarity(a.expand(5, -1, -1), others).mean() < 0.3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        si.compare(_maps(h=10), _maps(h=12))


# ----------------------------------------------------------------------------- faithfulness


class Checker(nn.Module):
    """Two classes. Logit 0 = 20·(2·mean_R(x₀·checker) − 0.5), logit 1 = 0.

    The evidence is a ±1 checkerboard in the top-left 8×8 region R of channel 0:
    the photo (x₀ = 0.5 + 0.5·checker in R) gives logit 10 (p ≈ 1); a blurred copy
    or a baseline of 0 in R gives about −10 (p ≈ 0). Pixels outside R do nothing.
    """

    def __init__(self, size=32):
        super().__init__()
        c = torch.zeros(size, size)
        yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        c[:8, :8] = ((yy + xx) % 2 * 2 - 1).float()
        self.register_buffer("checker", c)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        s = (x[:, 0] * self.checker).sum((1, 2)) / 64.0
        z = 20 * (2 * s - 0.5)
        return torch.stack([z, torch.zeros_like(z)], 1)


def _checker_image(size=32):
    m = Checker(size)
    x = torch.full((1, 3, size, size), 0.5)
    x[0, 0] = 0.5 + 0.5 * m.checker
    oracle = torch.zeros(1, size, size)
    oracle[0, :8, :8] = 1.0
    return m, x, oracle


def test_oracle_map_deletes_faster_and_inserts_faster_than_random():
    m, x, oracle = _checker_image()
    assert torch.softmax(m(x), 1)[0, 0] > 0.99
    assert torch.softmax(m(fa.blur(x)), 1)[0, 0] < 0.01
    orders = {
        "oracle": fa.order_from_maps(oracle, seed=0),
        "anti": fa.order_from_maps(1 - oracle, seed=0),
        "random": fa.random_order(1, 32 * 32, seed=0),
    }
    curves = fa.deletion_insertion(m, x, torch.tensor([0]), orders, steps=32, baseline=torch.zeros(3), batch_size=16)
    d = {k: fa.auc(v["deletion"]).item() for k, v in curves.items()}
    i = {k: fa.auc(v["insertion"]).item() for k, v in curves.items()}
    # R is 1/16 of the image: the oracle removes all evidence within the first 2 of 32 steps
    assert d["oracle"] < 0.05 < d["random"] - 0.3
    assert d["anti"] > d["random"]
    assert i["oracle"] > 0.9 > i["random"] + 0.3
    assert i["anti"] < i["random"]
    # endpoints: unchanged image first, fully replaced image last
    for k in orders:
        assert curves[k]["deletion"][0, 0] > 0.99 and curves[k]["deletion"][0, -1] < 0.01
        assert curves[k]["insertion"][0, 0] < 0.01 and curves[k]["insertion"][0, -1] > 0.99


def test_batching_does_not_change_curves_and_only_skips():
    m, x, oracle = _checker_image()
    x = torch.cat([x, x.flip(-1)])
    orders = {"oracle": fa.order_from_maps(torch.cat([oracle, oracle.flip(-1)]), seed=1),
              "random": fa.random_order(2, 1024, seed=1)}
    a = fa.deletion_insertion(m, x, torch.tensor([0, 0]), orders, steps=8, batch_size=5)
    b = fa.deletion_insertion(m, x, torch.tensor([0, 0]), orders, steps=8, batch_size=1000)
    for k in orders:
        for c in fa.CURVES:
            assert torch.allclose(a[k][c], b[k][c], atol=1e-6)
    m.calls = 0
    part = fa.deletion_insertion(m, x, torch.tensor([0, 0]), orders, steps=8, batch_size=1000, only={("random", 1)})
    assert torch.allclose(part["random"]["deletion"][1], a["random"]["deletion"][1], atol=1e-6)
    assert torch.equal(part["oracle"]["deletion"], torch.zeros(2, 9, dtype=torch.float64))
    assert m.calls == 2  # the 3 shared ends of image 1 in one batch, 2 curves × 7 inner fractions in another
    assert fa.n_forward(2 * 2, 8, images=2) == 2 * 2 * 2 * 7 + 3 * 2


def test_curve_ends_are_the_photo_the_baseline_and_the_blurred_photo_for_every_order():
    """The ends are evaluated once per image and shared: they must be exactly what each order's own
    0 % / 100 % copies give, and the inner points what the perturbed copies give."""
    m, x, oracle = _checker_image()
    x = torch.cat([x, x.flip(-1) * 0.9])
    orders = {"oracle": fa.order_from_maps(torch.cat([oracle, oracle.flip(-1)]), seed=1),
              "random": fa.random_order(2, 1024, seed=1)}
    base = torch.tensor([0.2, 0.4, 0.6])
    curves = fa.deletion_insertion(m, x, torch.tensor([0, 1]), orders, steps=4, baseline=base, batch_size=7)
    p = lambda imgs, t: torch.softmax(m(imgs), 1)[:, t].double()  # noqa: E731
    fill = base.view(1, 3, 1, 1).expand_as(x)
    blurred = fa.blur(x)
    counts = torch.round(fa.fractions(4) * 1024).long()
    for k, o in orders.items():
        for b, t in enumerate([0, 1]):
            want_del = p(fa.perturbed(x[b], fill[b], o[b], counts), t)
            want_ins = p(fa.perturbed(blurred[b], x[b], o[b], counts), t)
            assert torch.allclose(curves[k]["deletion"][b], want_del, atol=1e-6)
            assert torch.allclose(curves[k]["insertion"][b], want_ins, atol=1e-6)
            assert curves[k]["deletion"][b, 0] == curves[k]["insertion"][b, -1]  # both: the photo itself


def test_orders_and_auc():
    o = fa.centre_order(1, 5, 5, seed=0)[0]
    assert o[0].item() == 12  # the centre pixel of a 5×5 image
    assert sorted(o.tolist()) == list(range(25))
    r = fa.random_order(2, 100, seed=3)
    assert torch.equal(r, fa.random_order(2, 100, seed=3))
    assert not torch.equal(r, fa.random_order(2, 100, seed=4))
    assert sorted(r[1].tolist()) == list(range(100))
    # ties are broken by the seed, values are respected
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.5]]])
    o1 = fa.order_from_maps(maps, seed=0)[0].tolist()
    assert set(o1[:2]) == {1, 2} and o1[2] == 3 and o1[3] == 0
    assert fa.auc(torch.ones(3, 11)).tolist() == pytest.approx([1.0] * 3)
    assert fa.auc(torch.linspace(0, 1, 17)).item() == pytest.approx(0.5)
    x = torch.rand(3, 4, 4)
    f = torch.zeros(3, 4, 4)
    p = fa.perturbed(x, f, torch.arange(16), torch.tensor([0, 5, 16]))
    assert torch.equal(p[0], x) and torch.equal(p[2], f)
    assert (p[1].flatten(1)[:, :5] == 0).all() and torch.equal(p[1].flatten(1)[:, 5:], x.flatten(1)[:, 5:])


# ----------------------------------------------------------------------------- sanity (randomisation)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def _toy(seed):
    torch.manual_seed(seed)
    net = Toy().eval()
    with torch.no_grad():  # "trained" BatchNorm values, not the fresh 1/0 and 0/1
        net.bn1.weight.uniform_(0.5, 2)
        net.bn1.bias.uniform_(-1, 1)
        net.bn1.running_mean.uniform_(-1, 1)
        net.bn1.running_var.uniform_(0.5, 2)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


TOY_LAYERS = [("conv1", "conv1"), ("block1", "relu"), ("conv2", "conv2"), ("fc", "fc")]


def _gradient_maps(net, x, target):
    xi = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = net(xi)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xi)
    return g.abs().amax(1)


def test_groups_top_down_cover_every_tensor_once():
    net = _toy(0)
    x = torch.rand(1, 3, 8, 8)
    groups = sa.cascade_groups(net, TOY_LAYERS, x)
    # a module belongs to the first catalogued layer finishing at or after it: bn1 runs
    # after the conv1 cut, so it goes with conv2; "relu" is reused and last finishes
    # right after conv2, so its group would be empty and is dropped
    assert [g.name for g in groups] == ["fc", "conv2", "conv1"]
    assert [g.modules for g in groups] == [("fc",), ("bn1", "conv2"), ("conv1",)]
    assert sum(g.numel for g in groups) == sum(p.numel() for p in net.parameters())


def test_cascade_changes_exactly_the_claimed_tensors_and_leaves_the_model_alone():
    net = _toy(0)
    before = copy.deepcopy(net.state_dict())
    donor = _toy(123)
    groups = sa.cascade_groups(net, [("conv1", "bn1"), ("conv2", "conv2"), ("fc", "fc")], torch.rand(1, 3, 8, 8))
    assert [g.name for g in groups] == ["fc", "conv2", "conv1"]
    expect_names = {g.name: {f"{p}.{t}" for p in g.modules for t, _ in
                             list(net.get_submodule(p).named_parameters(recurse=False))
                             + list(net.get_submodule(p).named_buffers(recurse=False))} for g in groups}
    seen = []
    for k, work in sa.cascade(net, groups, donor, [1, 2, 3]):
        assert work is not net
        expected = set().union(*(expect_names[g.name] for g in groups[:k]))
        changed = changed_tensors(net, work)
        # num_batches_tracked is 0 in both nets: equal values, nothing to change
        assert changed == {n for n in expected if not n.endswith("num_batches_tracked")}
        # what changed now holds the donor's values (nothing restored, nothing half-copied)
        dsd, wsd = donor.state_dict(), work.state_dict()
        assert all(torch.equal(wsd[n], dsd[n]) for n in expected)
        seen.append(k)
    assert seen == [1, 2, 3]
    # the trained model object is untouched
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cascade_steps_can_skip_and_copy_is_cumulative():
    net, donor = _toy(0), _toy(7)
    groups = sa.cascade_groups(net, [("conv1", "bn1"), ("conv2", "conv2"), ("fc", "fc")], torch.rand(1, 3, 8, 8))
    ks = [k for k, work in sa.cascade(net, groups, donor, [3])]
    assert ks == [3]
    last = None
    for k, work in sa.cascade(net, groups, donor, [1, 3]):
        last = work
    assert changed_tensors(donor, last) == set()  # everything random = the donor


def test_randomisation_curves_control_and_effect():
    net = _toy(0)
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3])
    groups = sa.cascade_groups(net, [("conv1", "bn1"), ("conv2", "conv2"), ("fc", "fc")], x[:1])
    ref = {"grad": _gradient_maps(net, x, target)}
    explain = lambda work, k: {"grad": _gradient_maps(work, x, target)}
    # control: a "randomisation" that copies the trained weights changes nothing → similarity 1
    same = sa.randomisation_curves(net, groups, copy.deepcopy(net), [1, 2, 3], ref, explain, thumb=4)
    for metric in si.METRICS:
        assert torch.allclose(same["grad"][metric], torch.ones(3, 4, dtype=torch.float64), atol=1e-9), metric
    assert same["grad"]["thumbs"].shape == (3, 4, 4, 4)
    # real random weights: the gradient map changes once everything is random
    rnd = sa.randomisation_curves(net, groups, _toy(99), [1, 2, 3], ref, explain)
    assert rnd["grad"]["steps"] == [1, 2, 3]
    assert rnd["grad"]["spearman"][-1].mean() < 0.9
    # reproducible: the same donor seed gives the same numbers
    again = sa.randomisation_curves(net, groups, _toy(99), [1, 2, 3], ref, explain)
    assert torch.equal(rnd["grad"]["spearman"], again["grad"]["spearman"])


def test_choose_steps():
    assert sa.choose_steps(10, 4) == [1, 4, 7, 10]
    assert sa.choose_steps(3, 0) == [1, 2, 3]
    assert sa.choose_steps(3, 8) == [1, 2, 3]
    assert sa.choose_steps(10, 1) == [10]
    assert sa.choose_steps(0, 3) == []


def test_registry_groups_and_seeded_donor():
    from generator.models import load_model

    m = load_model("efficientnet_lite0", allow_random=True, seed=5)
    groups = sa.model_groups(m)
    assert [g.name for g in groups] == ["logits", "head"] + [f"stage{i}" for i in range(6, -1, -1)] + ["stem"]
    assert sum(g.numel for g in groups) == m.num_params()
    paths = [p for g in groups for p in g.modules]
    assert len(paths) == len(set(paths))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    d1 = sa.fresh_donor(m, seed=11)
    assert torch.equal(torch.rand(3), expected)  # the global random stream is not disturbed
    d2 = sa.fresh_donor(m, seed=11)
    d3 = sa.fresh_donor(m, seed=12)
    assert changed_tensors(d1, d2) == set()
    assert "body.classifier.weight" in changed_tensors(d1, d3)
    view = sa.randomised_model(m, d1, "all")
    assert view.net is d1 and not view.pretrained and "sanity-random" in view.weights_id
    assert m.net is not d1


# ----------------------------------------------------------------------------- model table


def test_macs_and_params_exact_on_small_layers():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))
    assert mt.count_macs(net, torch.zeros(1, 3, 16, 16)) == 8 * 3 * 9 * 256 + 8 * 256 * 5
    assert mt.count_params(net) == 8 * 3 * 9 + 8 + 8 * 256 * 5 + 5


def test_architecture_cost_matches_a_real_forward():
    from generator.models import get_spec, load_model

    spec = get_spec("efficientnet_lite0")
    cost = mt.architecture_cost(spec)
    m = load_model(spec, allow_random=True)
    assert cost["params"] == m.num_params()
    assert cost["macs"] == mt.count_macs(m.net, torch.zeros(1, 3, 224, 224))
    assert cost["input_size"] == 224


def test_topk_hits():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5]])
    h = mt.topk_hits(logits, torch.tensor([1, 0]), ks=(1, 5))
    assert h[1].tolist() == [False, False]
    assert h[5].tolist() == [True, False]


def test_accuracy_counts_on_known_answers(tmp_path):
    from PIL import Image

    from generator.models import get_spec

    root = tmp_path / "val"
    (tmp_path / "README.md").write_text("| wnid | ImageNet-1k index | label |\n|---|---|---|\n"
                                        "| n00000001 | 7 | red |\n| n00000002 | 300 | green |\n")
    colours = {"n00000001": [(255, 0, 0)] * 3 + [(0, 255, 0)], "n00000002": [(0, 255, 0)] * 2 + [(0, 0, 255)] * 2}
    for wnid, cols in colours.items():
        (root / wnid).mkdir(parents=True)
        for i, c in enumerate(cols):
            Image.new("RGB", (40, 30), c).save(root / wnid / f"{i}.png")
    (root / "n99999999").mkdir()  # a class not in the table is ignored

    wmap = mt.read_wnid_map(root)
    assert wmap == {"n00000001": 7, "n00000002": 300}
    files = mt.list_imagefolder(root, wmap)
    assert len(files) == 8
    assert [c for _p, c in mt.list_imagefolder(root, wmap, max_images=4)] == [7, 300, 7, 300]

    class ColourNet(nn.Module):
        def forward(self, x):
            out = torch.full((len(x), 1000), -1.0)
            out[:, 7] = x[:, 0].mean((1, 2))
            out[:, 300] = x[:, 1].mean((1, 2))
            out[:, 999] = x[:, 2].mean((1, 2))  # blue images go to a class outside the folder
            return out

    spec = get_spec("efficientnet_lite0")
    res = mt.accuracy_from_counts([mt.accuracy_counts(ColourNet(), spec, files, [7, 300], batch_size=3)], [7, 300])
    # red→7 right ×3, green-in-red-folder wrong, green→300 right ×2, blue: 1000-way wrong (999)
    assert res["n"] == 8 and res["n_classes"] == 2
    assert res["top1"] == pytest.approx(5 / 8)
    # restricted to {7, 300}: blue images have equal (0) logits → argmax picks the first, 7: wrong
    assert res["top1_restricted"] == pytest.approx(5 / 8)
    assert res["top5"] == pytest.approx(1.0)  # 7 and 300 (≥ 0) always beat the other logits (−1)
    assert res["per_class_restricted"][7] == pytest.approx(3 / 4)
    # counted in blocks (as a build caches and distributes them; restricted to the whole set's classes)
    # and summed: the same numbers, exactly
    blocks = [mt.accuracy_counts(ColourNet(), spec, files[i:i + 3], [7, 300], batch_size=2) for i in range(0, 8, 3)]
    assert [b["n"] for b in blocks] == [3, 3, 2]
    assert mt.accuracy_from_counts(blocks, [7, 300]) == res
