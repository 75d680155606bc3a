"""The findings' new checks on tiny networks where the answer is known."""
import numpy as np
import torch
from torch import nn

from generator.methods.attribution import make
from generator.metrics import bootstrap, fragility, invariance, selectivity


def _toy(seed=0, classes=3):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _confident_toy(n):
    """A 2-class toy with larger weights (probabilities away from 1/2 that a perturbation can move),
    ``n`` photos, their predicted classes and a random top-10 % region for the attack."""
    torch.manual_seed(3)
    net = _toy(seed=3, classes=2)
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.mul_(4)
    x = torch.rand(n, 3, 24, 24) * 0.6 + 0.2
    region = fragility.topk_mask(torch.rand(n, 24, 24, generator=torch.Generator().manual_seed(1)), 0.1)
    return net, x, net(x).argmax(1), region


def test_bootstrap_interval_covers_known_mean_at_stated_rate():
    rng = np.random.default_rng(1)
    trials, hits = 300, 0
    for t in range(trials):
        v = rng.exponential(2.0, size=60)  # skewed, true mean 2
        iv = bootstrap.mean_ci(v, resamples=1000, seed=t)
        hits += iv.lo <= 2.0 <= iv.hi
    rate = hits / trials
    assert 0.89 <= rate <= 0.99, rate  # 95 % nominal; percentile bootstrap at n = 60


def test_verdict_waits_for_the_interval():
    clear = bootstrap.mean_ci(np.full(50, 0.9) + np.linspace(-0.01, 0.01, 50))
    assert bootstrap.verdict(clear, 0.5, "fails", "passes") == "fails"
    assert bootstrap.verdict(bootstrap.mean_ci(np.linspace(0.0, 0.2, 50)), 0.5, "fails", "passes") == "passes"
    wide = bootstrap.mean_ci([0.1, 0.9, 0.2, 0.8] * 5)
    assert bootstrap.verdict(wide, 0.5, "fails", "passes") == "undecided at n = 20"
    few = bootstrap.mean_ci([0.9, 0.91, 0.92, 0.93])  # clear of the threshold, but only 4 photos
    assert bootstrap.verdict(few, 0.5, "fails", "passes") == "not enough photos (n = 4 < 20): the full build decides"
    assert not bootstrap.decided(bootstrap.verdict(few, 0.5, "fails", "passes"))


def test_shifted_copy_same_logits_gradient_unchanged_gradient_times_input_changes():
    net = _toy()
    x = torch.rand(4, 3, 16, 16)
    shift = torch.tensor([0.2, -0.1, 0.3])
    copy = invariance.ShiftAbsorbed(net, shift).eval()
    xs = x + shift.view(1, 3, 1, 1)
    assert torch.allclose(net(x), copy(xs), atol=1e-5)
    t = net(x).argmax(1)
    g0 = make("saliency", net).attribute(x, t)
    g1 = make("saliency", copy).attribute(xs, t)
    assert torch.allclose(g0, g1, atol=1e-5)
    ch = invariance.map_change(g0.abs().amax(1), g1.abs().amax(1))
    assert (ch["spearman"] > 0.999).all() and (ch["relative_change"] < 1e-4).all()
    gxi0, gxi1 = (g0 * x).abs().sum(1), (g1 * xs).abs().sum(1)
    ch = invariance.map_change(gxi0, gxi1)
    assert (ch["relative_change"] > 0.05).all()


def test_fragility_attack_keeps_class_and_moves_map_more_than_noise():
    torch.manual_seed(3)
    net = _toy(seed=3, classes=2)
    x = torch.rand(32, 3, 24, 24) * 0.6 + 0.2
    t = net(x).argmax(1)

    def gxi(xx, graph=False):  # gradient × input, differentiable for the attack
        with torch.enable_grad():
            xx = xx if xx.requires_grad else xx.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(net(xx).gather(1, t.view(-1, 1)).sum(), xx, create_graph=graph)
        m = (g * xx).abs().sum(1)
        return m if graph else m.detach()

    m0 = gxi(x)
    region = fragility.topk_mask(m0, 0.1)
    eps = 8 / 255
    res = fragility.attack(net, net[2], x, t, region, eps=eps, steps=8, map_fn=lambda xx: gxi(xx, graph=True))
    assert res["kept"].all()
    assert (res["x"] - x).abs().max() <= eps + 1e-6
    delta = res["x"] - x
    assert (delta.flatten(1).abs().amax(1) > 0).all()  # every photo perturbed: the comparison is on all 32
    noisy = fragility.matched_noise(x, delta, seed=0)  # the control: the same size, random signs
    assert torch.allclose((noisy - x).abs()[(noisy > 0) & (noisy < 1)], delta.abs()[(noisy > 0) & (noisy < 1)], atol=1e-6)
    ov_attack = fragility.topk_overlap(m0, gxi(res["x"]), 0.1)
    ov_noise = fragility.topk_overlap(m0, gxi(noisy), 0.1)
    assert ov_attack.mean() < ov_noise.mean() - 0.05, (ov_attack.mean(), ov_noise.mean())
    assert (ov_attack < ov_noise).double().mean() >= 0.75  # photo by photo, not only on average


def test_matched_noise_has_the_perturbations_size_and_no_direction():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 0.5 + 0.25
    delta = (torch.rand(4, 3, 16, 16, generator=g) - 0.5) * 0.1
    delta[1] = 0  # a photo the attack left alone: its control is the photo itself
    n = fragility.matched_noise(x, delta, seed=1) - x
    assert torch.allclose(n.abs(), delta.abs(), atol=1e-6)
    assert torch.equal(n[1], torch.zeros_like(n[1]))
    agree = (torch.sign(n) == torch.sign(delta))[[0, 2, 3]].float().mean()
    assert 0.4 < float(agree) < 0.6  # signs independent of the attack's


def test_ablating_a_unit_that_carries_a_class_costs_that_class():
    # two classes told apart by unit 0 (red) and unit 1 (green) of the first layer
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
        conv.weight[2, 2] = 1.0  # unit 2 (blue) carries nothing the classifier uses
    head = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]))
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 8, 8, generator=g) * 0.2
    labels = torch.arange(40) % 2
    x[labels == 0, 0] += 0.5
    x[labels == 1, 1] += 0.5
    res = selectivity.ablation_costs(net, net[1], [0, 1, 2], x, labels, batch_size=8)
    assert res["base_correct"].all()
    acc = res["correct"].float()
    assert acc[0, labels == 0].mean() < 0.5 and acc[0, labels == 1].mean() == 1.0
    assert acc[1, labels == 1].mean() < 0.5 and acc[1, labels == 0].mean() == 1.0
    assert acc[2].mean() == 1.0
    resp = selectivity.unit_responses(net, {"relu": net[1]}, x)["relu"]
    si = selectivity.selectivity_index(resp, labels.tolist())
    assert si[0] > 0.5 and si[1] > 0.5 and si[2] < 0.1
    assert list(selectivity.preferred_class(resp, labels.tolist())[:2]) == [0, 1]


def test_ablated_units_are_drawn_at_random_seeded_and_reproducible():
    """The units ablated per layer: the configured count, drawn with the seed (the same draw every time and for
    every photo), not the first k channels; another seed or layer gives another draw; 0 or k ≥ C: every channel."""
    a = selectivity.choose_units(96, 32, seed=0, layer="stage3")
    assert a == selectivity.choose_units(96, 32, seed=0, layer="stage3")  # reproducible
    assert len(a) == 32 == len(set(a)) and a == sorted(a) and all(0 <= c < 96 for c in a)
    assert a != list(range(32))
    assert selectivity.choose_units(96, 32, seed=1, layer="stage3") != a
    assert selectivity.choose_units(96, 32, seed=0, layer="stage4") != a
    assert selectivity.choose_units(16, 32, seed=0) == list(range(16)) == selectivity.choose_units(16, 0, seed=0)


def _one_unit_per_class(K=8, extra=1, per_class=10, seed=0):
    """K classes, each told apart by its own unit (channel k bright on class k's photos), plus ``extra`` units the
    classifier ignores; the head reads unit k into class k's logit only."""
    C = K + extra
    conv = nn.Conv2d(C, C, 1, bias=False)
    head = nn.Linear(C, K, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
        head.weight.copy_(torch.eye(K, C))
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(K * per_class) % K
    x = torch.rand(len(labels), C, 6, 6, generator=g) * 0.1
    x[torch.arange(len(labels)), labels] += 0.5
    return net, x, labels


def test_per_class_ablation_a_unit_that_feeds_one_class():
    """Zhou et al. 2018: a unit that carries one class of K costs that class all its photos (a per-class drop of
    1) and the whole set only 1/K; a unit the classifier ignores costs nothing; one batched call for every unit."""
    K = 8
    net, x, labels = _one_unit_per_class(K)
    res = selectivity.ablation_costs(net, net[1], list(range(K + 1)), x, labels, batch_size=16)
    assert res["base_correct"].all()
    drop, classes = selectivity.class_accuracy_drop(res["correct"], res["base_correct"], labels.tolist())
    assert drop.shape == (K + 1, K) and classes.tolist() == list(range(K))
    for k in range(K):  # unit k: all of class k's photos lost, no other class's
        assert drop[k, k] == 1.0 and np.allclose(np.delete(drop[k], k), 0.0)
    assert np.allclose(drop[K], 0.0)  # the ignored unit
    overall = res["base_correct"].float().mean().item() - res["correct"].float().mean(1).numpy()
    assert np.allclose(overall[:K], 1.0 / K) and overall[K] == 0.0  # small overall, large per class
    # what the page gets: the largest per-class drop and its class beside the overall drop
    resp = selectivity.unit_responses(net, {"relu": net[1]}, x)["relu"]
    r = selectivity.LayerUnits(0.0, "", list(range(K + 1)), torch.from_numpy(selectivity.selectivity_index(resp, labels.tolist())),
                               torch.from_numpy(selectivity.preferred_class(resp, labels.tolist())), torch.from_numpy(overall),
                               torch.zeros(K + 1, dtype=torch.float64), 1.0, torch.from_numpy(drop), torch.from_numpy(classes))
    u = selectivity.layer_summary(r, seed=0)
    assert u.class_drop.tolist() == [1.0] * K + [0.0] and u.worst_class[:K].tolist() == list(range(K))
    assert np.allclose(u.acc_drop[:K], 1.0 / K)
    assert u.class_mean.mean > u.acc_mean.mean * (K - 1)  # the per-class mean drop: ~K times the overall one


def test_class_accuracy_drop_by_hand():
    correct = np.array([[1, 0, 1, 1], [1, 1, 0, 0]], bool)  # 2 units, 4 photos
    base = np.array([1, 1, 1, 0], bool)
    drop, classes = selectivity.class_accuracy_drop(correct, base, [5, 5, 9, 9])
    assert classes.tolist() == [5, 9]
    assert np.allclose(drop, [[0.5, -0.5], [0.0, 0.5]])  # a drop may be negative: the ablation fixed a photo


def test_fragility_attack_keeps_the_probability_within_the_stated_change():
    """"Leaves the class and its probability almost unchanged": with ``max_prob_change`` every
    returned photo's class probability stays within it — a bound the unconstrained attack breaks."""
    net, x, t, region = _confident_toy(8)
    eps = 16 / 255
    free = fragility.attack(net, net[2], x, t, region, eps=eps, steps=8)
    tol = 0.5 * float((free["p1"] - free["p0"]).abs().max())
    assert tol > 1e-4  # the free attack does move the probability: the bound below is not vacuous
    held = fragility.attack(net, net[2], x, t, region, eps=eps, steps=8, max_prob_change=tol)
    assert ((held["p1"] - held["p0"]).abs() <= tol + 1e-6).all()
    assert held["kept"].all() and (held["x"] - x).abs().max() <= eps + 1e-6
    assert (held["x"] != x).flatten(1).any(1).any()  # and still perturbs where it can


def test_fragility_attack_holds_a_tight_probability_bound_and_still_perturbs():
    """The step leaves the class's log-probability alone to first order (its gradient is projected
    out, steps that break the bound are undone and halved): even with the probability held within
    0.001 every photo gets a perturbation."""
    net, x, t, region = _confident_toy(16)
    eps, tol = 8 / 255, 1e-3
    res = fragility.attack(net, net[2], x, t, region, eps=eps, steps=5, max_prob_change=tol)
    delta = res["x"] - x
    assert (delta.flatten(1).abs().amax(1) > 0).all()
    assert ((res["p1"] - res["p0"]).abs() <= tol + 1e-6).all() and res["kept"].all()


# ------------------------------------------------------------------ randomisation cascade: signed maps


def _signed_maps(b=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, w, generator=g)


def test_cascade_signed_spearman_sees_a_sign_flip_that_abs_hides():
    from generator.metrics import sanity
    from generator.metrics import similarity as si

    a = _signed_maps()
    ones = torch.ones(3, dtype=torch.float64)
    # the negated map: |map| identical, signed ranking reversed
    assert torch.allclose(si.compare(a.abs(), (-a).abs())["spearman"], ones)
    neg = sanity.compare_signed(a, -a)
    assert set(neg) == set(sanity.SIGNED_METRICS)
    assert torch.allclose(neg["spearman_signed"], -ones)
    assert (neg["ssim_signed"] < 0.5).all()  # the signed structure is inverted around the middle grey
    same = sanity.compare_signed(a, a.clone())
    for m, v in same.items():
        assert torch.allclose(v, ones, atol=1e-9), m
    # by hand against scipy: no absolute value
    from scipy.stats import spearmanr

    b = _signed_maps(seed=1)
    got = sanity.compare_signed(a, b)["spearman_signed"]
    want = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(3)]
    assert np.allclose(got.numpy(), want)
    # the SSIM scaling keeps 0 at the middle and ±max|value| at the ends; an all-zero map is all middle
    sc = sanity.signed_scale(torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]]))
    assert torch.allclose(sc, torch.tensor([[[0.0, 0.5], [0.75, 1.0]]], dtype=torch.float64))
    assert torch.equal(sanity.signed_scale(torch.zeros(1, 2, 2)), torch.full((1, 2, 2), 0.5, dtype=torch.float64))
    # the signed map of pixel-space attributions is the channel sum
    att = torch.randn(2, 3, 4, 4)
    assert torch.allclose(sanity.signed_map(att), att.sum(1))


def _tiny():
    from generator.models import load_model
    from test_findings import TINY

    return TINY, load_model(TINY, allow_random=True, seed=0)


def test_cascade_carries_signed_numbers_only_for_signed_methods(monkeypatch):
    from generator.metrics import sanity
    from generator.models import REGISTRY

    spec, tiny = _tiny()
    monkeypatch.setitem(REGISTRY, "tiny_test", spec)
    g = torch.Generator().manual_seed(0)
    x, top1 = torch.rand(3, 3, 32, 32, generator=g), torch.tensor([0, 1, 2])
    centred = x.sum(1) - x.sum(1).mean((1, 2), keepdim=True)  # takes both signs
    centred[2] = centred[2].abs()  # photo 2: no negative value in its trained signed map

    def explain_of(view, name):
        flip = -1.0 if "sanity-random" in view.weights_id else 1.0  # randomised copies: the sign flips
        if name == "signed":
            return lambda xx, t: (centred.abs(), centred * flip)
        return lambda xx, t: centred.abs()

    groups = sanity.model_groups(tiny, x[:1])
    steps = sanity.choose_steps(len(groups), 2)
    ref = {"signed": centred.abs(), "plain": centred.abs()}
    pairs = [(n, i) for i in range(3) for n in ("signed", "plain")]
    res = dict(zip(pairs, sanity.cascade_check(tiny, explain_of, ["signed", "plain"], x, top1, ref, pairs, seed=1,
                                               steps=steps, thumb=0, signed={"signed": centred})))
    ones = torch.ones(len(steps), dtype=torch.float64)
    for i in (0, 1):
        r = res[("signed", i)]
        assert r.signed and torch.allclose(r.spearman, ones)  # |map| cannot see the flip …
        assert torch.allclose(r.spearman_signed, -ones)  # … the signed rank correlation can
        assert r.ssim_signed.shape == r.hog_signed.shape == (len(steps),)
    assert not res[("signed", 2)].signed  # nonnegative on this photo: |map| only
    assert not any(res[("plain", i)].signed for i in range(3))
    assert all(res[("plain", i)].spearman_signed is None for i in range(3))
    # the model's cascade: signed curves only where every photo of the method has them
    cas = sanity.cascade_of(groups, steps, {"signed": [res[("signed", i)] for i in (0, 1)],
                                            "plain": [res[("plain", i)] for i in (0, 1)]})
    assert cas.methods["signed"].signed and cas.methods["signed"].spearman_signed.shape == (len(steps), 2)
    assert not cas.methods["plain"].signed and cas.methods["plain"].hog_signed is None
    mixed = sanity.cascade_of(groups, steps, {"signed": [res[("signed", i)] for i in range(3)]})
    assert not mixed.methods["signed"].signed


def test_cascade_task_signed_for_gradient_not_for_gradcam(monkeypatch, tmp_path):
    from generator.cache import Cache, key
    from generator.metrics import sanity
    from generator.metrics.checks import explainer, explainer_with_signed
    from generator.models import REGISTRY

    spec, tiny = _tiny()
    monkeypatch.setitem(REGISTRY, "tiny_test", spec)
    g = torch.Generator().manual_seed(0)
    x, top1 = torch.rand(2, 3, 32, 32, generator=g), torch.tensor([1, 2])
    names = ["saliency", "gradcam", "smoothgrad_sq"]
    params = {"saliency": {}, "gradcam": {}, "smoothgrad_sq": {"samples": 2}}
    ref = {n: explainer(tiny, n, params[n], 8)(x, top1).float() for n in names}
    # the trained signed maps: the maps step's (one attribution gives heatmap and signed map), pixel-space methods only
    got = {n: explainer_with_signed(tiny, n, params[n], 8)(x, top1) for n in names}
    signed = {n: g[1] for n, g in got.items() if isinstance(g, tuple)}
    assert sorted(signed) == ["saliency", "smoothgrad_sq"]
    assert all(torch.equal(got[n][0], ref[n]) for n in signed)
    groups = sanity.model_groups(tiny, x[:1])
    steps = sanity.choose_steps(len(groups), 2)
    pairs = [(n, i) for i in range(2) for n in names]
    res = dict(zip(pairs, sanity.cascade_task(tiny, names, params, 8, 1, steps, 0, x, top1, ref, pairs, signed)))
    assert all(res[("saliency", i)].signed for i in range(2))  # the gradient takes both signs
    assert not any(res[(n, i)].signed for n in ("gradcam", "smoothgrad_sq") for i in range(2))  # ReLU'd / squared
    # the signed Spearman is the rank correlation of the channel sums, without the absolute value
    assert all(((r.spearman_signed >= -1) & (r.spearman_signed <= 1)).all() for r in
               (res[("saliency", i)] for i in range(2)))
    # the result, signed fields included, goes through the cache
    cache = Cache(tmp_path)
    k = key("test-cascade", model=None, code=sanity.CascadeMaps)
    cache.put(k, res[("saliency", 0)])
    back = cache.get(k)
    assert isinstance(back, sanity.CascadeMaps) and torch.equal(back.spearman_signed, res[("saliency", 0)].spearman_signed)
    cache.put(k2 := key("test-cascade-2", model=None, code=sanity.CascadeMaps), res[("gradcam", 0)])
    assert cache.get(k2).spearman_signed is None


def test_cascade_page_shows_the_signed_numbers():
    from generator.metrics import bootstrap, verdict_randomisation
    from generator.metrics.sanity import CascadeCurves
    from generator.stages import findings
    from generator.config import Config
    from test_findings import TITLES, _fake, _render, _summary

    s = findings.settings(Config({}))
    fake = _fake("Net", {"a": [0.95, 0.8, 0.6], "b": [0.2, 0.1, 0.0], "c": [0.5, 0.5, 0.5]},
                 {"a": 0.97, "b": 0.1, "c": 0.8}, {"a": 0.25, "b": 0.05, "c": 0.35}, {"a": 0.35, "b": 0.7, "c": 0.5})
    cas = fake[1]
    n = cas.methods["a"].spearman.shape[1]
    jit = np.linspace(-0.01, 0.01, n)
    c = cas.methods["a"]  # method A is signed: its signed maps decorrelate, its |map| does not
    cas.methods["a"] = CascadeCurves(c.spearman, c.ssim, c.hog, c.thumbs,
                                     spearman_signed=np.array([v + jit for v in (0.4, 0.1, -0.05)]),
                                     ssim_signed=np.full((3, n), 0.3), hog_signed=np.full((3, n), 0.2))
    sm = _summary(fake, s)
    sm.figures, sm.photos = {"sanity": "sanity.svg", "sanity_maps": "sanity-maps.webp"}, [{"title": "Photo"}]
    ra, rb = (next(r for r in sm.rows if r["name"] == k) for k in ("a", "b"))
    assert "cascade_signed" not in rb  # unsigned: |map| only
    assert ra["signed_reads"] == "passes" and ra["abs_reads"] == "fails"  # by the rule, before Holm
    assert ra["sanity_verdict"] == "fails"  # the verdict still uses |map|
    assert ra["signed_minus_abs"].hi < 0
    assert "Method A" in sm.signed_said and "lower than the |map| one for Method A" in sm.signed_said
    assert "read differently for Method A" in sm.signed_said
    page = _render(s, ["a", "b", "c"], TITLES, sm, template="sanity", n_sanity_of={"a": n, "b": n, "c": n},
                   command="cmd")
    mean = bootstrap.fmt(ra["cascade_signed_mean"])
    assert mean.startswith("0.15") and mean in page  # the signed cascade mean, with its interval
    for iv in ra["cascade_signed"]:
        assert bootstrap.fmt(iv) in page
    assert bootstrap.fmt(ra["last_signed"]["ssim"]) in page and bootstrap.fmt(ra["signed_minus_abs"]) in page
    assert sm.signed_said in page
    assert "The verdict uses the |map| rank correlation for every" in page
    signed_table = [l for l in page.splitlines() if l.startswith("| [") and "passes / fails" in l]
    assert len(signed_table) == 1 and signed_table[0].startswith("| [Method A]")
    # no signed method: the sentence says so
    plain = _summary(_fake("Net", {"a": [0.2, 0.1, 0.0]}, {"a": 0.1}, {"a": 0.1}, {"a": 0.5}), s)
    assert plain.signed_said.startswith("No method measured here has attributions that take both signs")
    assert verdict_randomisation.signed_cascade(fake[1].methods["b"], 0.5) == {}
