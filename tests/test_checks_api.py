"""The findings' checks called directly, as functions of an explainer callable (or of the model) and
photos, on a tiny network where the answer is known; their typed results through the cache."""
from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from generator import executor
from generator.cache import Cache, key
from generator.metrics import checks, class_check, faithfulness, fragility, invariance, model_table, sanity, selectivity
from generator.metrics.bootstrap import Interval
from generator.models import REGISTRY, load_model

from test_findings import TINY, _labelled_folder

torch.set_num_threads(1)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(REGISTRY, "tiny_test", TINY)
    return load_model(TINY, allow_random=True, seed=0)


def _x(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 0.8 + 0.1


def the_input(x, targets):
    """A map that is the input itself (channel sum): no model, no class in it."""
    return x.sum(1)


# ------------------------------------------------------------------------------------- class check


def test_class_maps_ask_the_explainer_for_every_class_of_every_photo():
    x = _x(3, 16)
    targets = torch.tensor([[1, 5], [2, 6], [3, 7]])
    res = class_check.class_maps(lambda xx, t: xx[:, 0] * t.view(-1, 1, 1), x, targets)
    assert [type(r) for r in res] == [class_check.ClassMaps] * 3
    for j, r in enumerate(res):
        assert r.maps.shape == (2, 16, 16) and r.seconds >= 0
        assert torch.allclose(r.maps[0], x[j, 0] * targets[j, 0]) and torch.allclose(r.maps[1], x[j, 0] * targets[j, 1])
    sens = class_check.class_sensitivity(torch.stack([r.maps for r in res]))  # a map scaled by the class: same ranking
    assert np.allclose(sens.spearman, 1.0) and sens.spearman.shape == (3,)
    maps = torch.stack([r.maps for r in class_check.class_maps(the_input, x, targets)])
    assert np.allclose(class_check.class_sensitivity(maps).spearman, 1.0)  # ignores the class: insensitive
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    assert class_check.targets_of(logits, 3).tolist() == [[1, 2], [0, 2]]


# ------------------------------------------------------------------------------------- cascade


def test_cascade_of_a_map_that_is_the_input_is_flat_at_one(tiny):
    x, top1 = _x(2), torch.tensor([1, 2])
    groups = sanity.model_groups(tiny, x[:1])
    steps = sanity.choose_steps(len(groups), 3)
    ref = {"input": the_input(x, top1)}
    calls = []

    def explain_of(view, name):
        calls.append(view.weights_id)
        return the_input

    res = sanity.cascade_check(tiny, explain_of, ["input"], x, top1, ref, [("input", 0), ("input", 1)],
                               seed=0, steps=steps, thumb=8)
    assert len(calls) == len(steps) and all("sanity-random" in c for c in calls)  # always on a randomised copy
    for r in res:
        assert r.steps == steps and r.thumbs.shape == (len(steps), 8, 8)
        for m in ("spearman", "ssim", "hog"):
            assert torch.allclose(getattr(r, m), torch.ones(len(steps), dtype=torch.float64), atol=1e-6), m
    cas = sanity.cascade_of(groups, steps, {"input": res})
    assert cas.labels[0] == f"{groups[0].name} only" and cas.labels[-1] == "all layers"
    assert cas.fraction[-1] == pytest.approx(1.0) and cas.n_groups == len(groups)
    assert cas.methods["input"].spearman.shape == (len(steps), 2)


def test_cascade_of_the_gradient_moves_away_from_the_trained_map(tiny):
    x, top1 = _x(2), torch.tensor([1, 2])
    groups = sanity.model_groups(tiny, x[:1])
    steps = sanity.choose_steps(len(groups), 2)
    grad = lambda view, name: checks.explainer(view, "saliency", {}, 8)  # noqa: E731
    ref = {"saliency": grad(tiny, "saliency")(x, top1).float()}
    # (the stand-in "trained" model is random-init seed 0: the donor must differ from it)
    res = sanity.cascade_check(tiny, grad, ["saliency"], x, top1, ref, [("saliency", 0), ("saliency", 1)],
                               seed=1, steps=steps, thumb=0)
    assert all(float(r.spearman[-1]) < 0.99 for r in res)  # all layers random: another map
    task = sanity.cascade_task(tiny, ["saliency"], {"saliency": {}}, 8, 1, steps, 0, x, top1,
                               {"saliency": ref["saliency"]}, [("saliency", 0), ("saliency", 1)])
    assert all(torch.equal(a.spearman, b.spearman) for a, b in zip(res, task))  # the task is the check


# ------------------------------------------------------------------------------------- faithfulness


class Bright(torch.nn.Module):
    """Class 0's logit grows with the image's mean brightness; class 1's is 0."""

    def forward(self, x):
        return torch.stack([20 * (x.mean((1, 2, 3)) - 0.3), torch.zeros(len(x))], 1)


def test_deleting_the_brightest_pixels_first_is_the_fastest_deletion():
    x = _x(2, 16)
    top1 = torch.tensor([0, 0])
    maps = {"input": the_input(x, top1)}
    orders = faithfulness.orders_of(maps, 3, 16, 16, seed=0)  # one row past the method's photos: a random order
    assert set(orders) == {"input", "random", "centre"} and all(len(o) == 3 for o in orders.values())
    pairs = [(n, i) for i in range(2) for n in ("input", "random", "centre")]
    res = faithfulness.curves_check(Bright(), x, top1, {n: o[:2] for n, o in orders.items()}, pairs, steps=4,
                                    baseline=[0.0, 0.0, 0.0], blur_sigma=1.0, batch_size=4)
    got = dict(zip(pairs, res))
    fai = faithfulness.faithfulness_of(4, [0.0] * 3, {n: [got[(n, i)] for i in range(2)] for n in ("input", "random", "centre")})
    assert (fai.curves["input"].deletion_auc < fai.curves["random"].deletion_auc).all()
    assert (fai.curves["input"].insertion_auc > fai.curves["random"].insertion_auc).all()
    p_photo = torch.softmax(Bright()(x), 1)[:, 0].double()
    for (n, i), c in got.items():  # every order's curves start at the photo and delete down to the baseline
        assert c.deletion[0] == pytest.approx(float(p_photo[i])) and c.insertion[-1] == pytest.approx(float(p_photo[i]))
        assert c.deletion[-1] == pytest.approx(float(torch.softmax(torch.tensor([-6.0, 0.0]), 0)[0]))
    assert np.allclose(fai.curves["random"].deletion_auc, faithfulness.auc(torch.from_numpy(fai.curves["random"].deletion)).numpy())
    assert fai.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


# ------------------------------------------------------------------------------------- invariance


def test_invariance_of_a_map_that_is_the_input_is_the_shift_itself():
    x, shift = _x(3, 8), [0.1, 0.2, 0.3]
    res = invariance.invariance_check(the_input, x, torch.zeros(3, dtype=torch.long), the_input(x, None), shift)
    m = x.sum(1).flatten(1)
    expected = (0.6 * torch.ones_like(m)).norm(dim=1) / m.norm(dim=1)
    assert [r.relative_change for r in res] == pytest.approx(expected.tolist(), rel=1e-5)
    assert [r.spearman for r in res] == pytest.approx([1.0] * 3)  # a constant added: the ranking stays
    inv = invariance.Invariance.of(res)
    assert inv.spearman.shape == (3,) and inv.relative_change.dtype == np.float64


def test_the_gradient_on_the_shift_absorbing_copy_is_invariant(tiny):
    x, top1 = _x(2), torch.tensor([3, 4])
    shift = [0.25, 0.25, 0.25]
    ref = checks.explainer(tiny, "saliency", {}, 8)(x, top1).float()
    res = invariance.invariance_task(invariance.shifted_model(tiny, shift), "saliency", {}, 8, shift, x, top1, ref)
    assert all(r.spearman > 0.999 and r.relative_change < 1e-3 for r in res)


# ------------------------------------------------------------------------------------- fragility


def test_attack_stays_in_its_ball_and_a_fixed_map_never_moves(tiny):
    x = _x(3)
    with torch.no_grad():
        top1 = tiny.net(x).argmax(1)
    region = fragility.topk_mask(the_input(x, top1), 0.1)
    eps = 8 / 255
    att = fragility.attack_check(tiny, x, top1, region, eps=eps, steps=2, max_prob_change=0.1, batch_size=2)
    assert [type(a) for a in att] == [fragility.Attacked] * 3
    for a in att:
        assert a.delta.abs().max() <= eps + 1e-6 and a.kept and abs(a.p1 - a.p0) <= 0.1 + 1e-6
    frag = fragility.Fragility.of(att, 8.0, 0.1)
    assert frag.attacked.tolist() == [bool(a.delta.abs().amax() > 0) for a in att] and frag.methods == {}
    delta = torch.stack([a.delta for a in att])
    xa, xn = x + delta, fragility.matched_noise(x, delta, seed=0)
    fixed = the_input(_x(3, seed=9), None)
    ov = fragility.overlap_check(lambda xx, t: fixed[: len(xx) // 2].repeat(2, 1, 1), xa, xn, top1, fixed, 0.05)
    assert [(o.attack, o.noise) for o in ov] == [(1.0, 1.0)] * 3  # a map that ignores the photo cannot be moved
    assert fragility.Overlaps.of(ov).attack.tolist() == [1.0] * 3
    empty = fragility.Fragility.empty(8.0, 0.05)
    assert len(empty.kept) == 0 and empty.eps255 == 8.0


# ------------------------------------------------------------------------------------- units, accuracy


def test_units_check_per_layer_and_what_the_atlas_gets(tiny):
    x = _x(6)
    labels = torch.tensor([7, 300, 7, 300, 7, 300])
    layers = ["stem", "blocks", "head"]
    res = selectivity.units_check(tiny, layers, layers, per=2, seed=5, batch_size=4, x=x, labels=labels)
    assert [type(r) for r in res] == [selectivity.LayerUnits] * 3
    ok = [r for r in res if not r.error]
    channels = {l: selectivity.unit_responses(tiny.net, {l: tiny.module(l)}, x[:1])[l].shape[1] for l in layers}
    assert ok and all(r.channels == selectivity.choose_units(channels[l], 2, 5, l) for l, r in zip(layers, res) if not r.error)
    for r in ok:
        assert ((0 <= r.selectivity) & (r.selectivity <= 1)).all() and 0 <= r.base_acc <= 1
        assert set(r.preferred.tolist()) <= {7, 300}
        assert r.class_acc_drop.shape == (2, 2) and r.classes.tolist() == [7, 300]  # per unit and class (Zhou et al.)
    u = selectivity.layer_summary(ok[0], seed=0)
    assert isinstance(u.rho, Interval) and u.rho.n == 2 and np.isnan(u.rho.lo)  # 2 units: no interval
    units = selectivity.Units(6, 2, {"stem": u})
    imp = selectivity.importance(units, "tiny_test", tiny.labels)
    assert set(imp) == {("tiny_test", "stem", c) for c in ok[0].channels}  # the units drawn, not channels 0..k-1
    assert all(-1 <= v["class_drop"] <= 1 and v["worst_class"] in tiny.labels for v in imp.values())
    assert sorted(v["rank"] for v in imp.values()) in ([1, 2], [1, 1])


def test_accuracy_blocks_sum_to_one_count(tmp_path, tiny):
    folder = _labelled_folder(tmp_path / "lab")
    files = model_table.list_imagefolder(folder, model_table.read_wnid_map(folder))
    classes = sorted({c for _p, c in files})
    whole = model_table.accuracy_counts(tiny.net, tiny.spec, files, classes, 2, tiny.device)
    blocks = model_table.accuracy_blocks(tiny, [[(str(p), c) for p, c in files[:3]], [(str(p), c) for p, c in files[3:]]],
                                         classes, 2)
    assert [b.n for b in blocks] == [3, len(files) - 3]
    assert model_table.accuracy_from_counts(blocks, classes) == model_table.accuracy_from_counts([whole], classes)


# ------------------------------------------------------------------------------------- through the cache


def test_typed_results_round_trip_through_the_cache(tmp_path):
    t = torch.arange(6, dtype=torch.float64)
    values = [
        class_check.ClassMaps(torch.rand(2, 4, 4), 0.5),
        sanity.CascadeMaps([1, 3], t[:2], t[2:4], t[4:], torch.rand(2, 3, 3).half(), 1.0),
        faithfulness.Curves(t, t * 2, 0.25),
        invariance.InvarianceMap(0.9, 0.1, 0.01),
        fragility.Attacked(torch.rand(3, 4, 4), True, 0.8, 0.79, 2.0),
        fragility.Overlap(0.5, 0.75, 0.1),
        selectivity.LayerUnits(0.3, "", [0, 1], t[:2], torch.tensor([7, 300]), t[:2], t[2:4], 0.5),
        selectivity.LayerUnits(0.3, "", [0, 1], t[:2], torch.tensor([7, 300]), t[:2], t[2:4], 0.5, t[:4].view(2, 2),
                               torch.tensor([7, 300])),
        selectivity.LayerUnits(0.1, error="ValueError: skip connection"),
        model_table.AccuracyCounts(4, 2, 3, 3, {7: [1, 2], 300: [2, 2]}, 0.2),
    ]
    cache = Cache(tmp_path)
    for i, v in enumerate(values):
        k = key("test-typed", model=None, code=type(v), i=i)
        cache.put(k, v)
        got = Cache(tmp_path).get(k)
        assert type(got) is type(v)
        for f in dataclasses.fields(v):
            a, b = getattr(v, f.name), getattr(got, f.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else (a == b or (a != a and b != b)), f.name


def test_a_check_through_the_one_compute_call(tmp_path, tiny):
    """``maps_task`` is what the stage hands to ``executor.compute``: cached typed results, read back."""
    x, targets = _x(3), torch.tensor([[1, 500], [2, 501], [3, 502]])
    ctx = types.SimpleNamespace(cache=Cache(tmp_path), batch_size=2, executor=None)
    keys = [key("test-maps", model=tiny, code=class_check.maps_task, image=i) for i in range(3)]
    args_of = lambda idx: (tiny, "saliency", {}, 2, x[idx], targets[idx])  # noqa: E731
    first = executor.compute(ctx, keys, class_check.maps_task, args_of, what="maps")
    again = executor.compute(types.SimpleNamespace(cache=Cache(tmp_path), batch_size=2, executor=None), keys,
                             class_check.maps_task, lambda idx: pytest.fail("recomputed"), what="maps")
    assert all(torch.equal(a.maps, b.maps) for a, b in zip(first, again))
    direct = class_check.class_maps(checks.explainer(tiny, "saliency", {}, 2), x, targets)
    assert all(torch.equal(a.maps, b.maps) for a, b in zip(first, direct))


def test_ticks_count_results_in_proportion(monkeypatch):
    got = []
    monkeypatch.setattr(checks, "tick", got.append)
    t = checks.Ticks(work=10, keys=3)
    for _ in range(10):
        t.update(1)
    assert sum(got) == 3 and all(g > 0 for g in got)
