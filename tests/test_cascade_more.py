"""The randomisation check beside the cascade (Adebayo et al. 2018): the edge-detector reference, the
independent-layer randomisation, more seeds of the random weights, the trained signed maps taken from the
maps step (no pass of their own), and the sentences each of them writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.metrics import sanity, verdict_randomisation
from generator.metrics.sanity import Cascade, CascadeCurves
from generator.models import REGISTRY, load_model
from test_findings import TINY, _ctx, _labelled_folder


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(REGISTRY, "tiny_test", TINY)
    return load_model(TINY, allow_random=True, seed=0)  # stands in for a trained model (test only)


# ------------------------------------------------------------------------------ the edge-detector reference


def test_sobel_edges_of_a_ramp_and_a_map_equal_to_them():
    # a horizontal ramp in the red channel only: luma = 0.299 · red; Sobel's x filter sums 2 + 4 + 2 steps
    # in the interior (8 × the step), 4 × at the replicated left and right borders; no vertical gradient
    h, w, step = 12, 16, 0.05
    x = torch.zeros(1, 3, h, w)
    x[0, 0] = torch.arange(w, dtype=torch.float32) * step
    e = sanity.sobel_edges(x)
    assert e.shape == (1, h, w)
    assert torch.allclose(e[0, :, 1:-1], torch.full((h, w - 2), 8 * 0.299 * step, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(e[0, :, 0], torch.full((h,), 4 * 0.299 * step, dtype=torch.float64), atol=1e-6)
    # a flat photo has no edges
    assert torch.allclose(sanity.sobel_edges(torch.full((2, 3, 8, 8), 0.4)), torch.zeros(2, 8, 8, dtype=torch.float64),
                          atol=1e-12)

    # a square on a dark ground: a map equal to its edge map correlates perfectly with it, on every measure
    g = torch.Generator().manual_seed(0)
    photos = 0.1 * torch.rand(3, 3, 32, 32, generator=g)
    photos[:, :, 8:24, 10:20] += 0.8
    edges = sanity.sobel_edges(photos)
    same = sanity.edge_similarity(edges.float(), photos)
    for m in ("spearman", "ssim", "hog"):
        assert torch.allclose(same[m], torch.ones(3, dtype=torch.float64), atol=1e-6), m
    # |map| is what is compared: the negated edge map is the same map
    assert torch.allclose(sanity.edge_similarity(-edges.float(), photos)["spearman"], torch.ones(3, dtype=torch.float64))
    # a constant map has no ordering: rank correlation 0 (as everywhere on the site)
    flat = sanity.edge_similarity(torch.full((3, 32, 32), 0.7), photos)
    assert torch.equal(flat["spearman"], torch.zeros(3, dtype=torch.float64))
    # a map of the square's inside (not its edges) correlates less than the edge map itself
    inside = torch.zeros(3, 32, 32)
    inside[:, 10:22, 12:18] = 1.0
    assert (sanity.edge_similarity(inside, photos)["spearman"] < 0.9).all()
    # the cached task: one result per method, the same numbers
    task = sanity.edge_task([edges.float(), torch.full((3, 32, 32), 0.7)], photos)
    assert len(task) == 2 and torch.equal(task[0]["spearman"], same["spearman"])


# ------------------------------------------------------------------------------ independent randomisation


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_independent_randomisation_changes_only_the_chosen_group_and_restores_it(tiny):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before_out = tiny.net(x)
    before = _state(tiny.net)
    groups = sanity.model_groups(tiny, x[:1])
    assert len(groups) >= 3
    donor = sanity.fresh_donor(tiny, seed=3)
    random = donor.state_dict()
    steps = list(range(1, len(groups) + 1))
    seen, work = [], None
    for k, work in sanity.independent(tiny.net, groups, donor, steps):
        mine = {f"{p}.{n}" for p in groups[k - 1].modules
                for n, _t in [*work.get_submodule(p).named_parameters(recurse=False),
                              *work.get_submodule(p).named_buffers(recurse=False)]}
        now = work.state_dict()
        changed = {name for name in before if not torch.equal(now[name], before[name])}
        assert changed and changed <= mine, (k, changed - mine)  # only the chosen group …
        assert all(torch.equal(now[name], random[name]) for name in mine)  # … and all of it, the donor's values
        seen.append(k)
    assert seen == steps
    # the working copy is restored after the last step; the trained model was never touched
    assert all(torch.equal(work.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(tiny.net.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(tiny.net(x), before_out)  # no leak: a plain forward after equals before
    # a caller that stops early gets its copy restored too
    it = sanity.independent(tiny.net, groups, donor, steps)
    _k, early = next(it)
    assert any(not torch.equal(early.state_dict()[k], v) for k, v in before.items())
    it.close()
    assert all(torch.equal(early.state_dict()[k], v) for k, v in before.items())
    # the cascade's first step (the top group alone) is the independent one's first step
    casc = dict((k, _state(w)) for k, w in sanity.cascade(tiny.net, groups, donor, [1]))
    ind = dict((k, _state(w)) for k, w in sanity.independent(tiny.net, groups, donor, [1]))
    assert all(torch.equal(casc[1][k], ind[1][k]) for k in before)


def test_independent_mode_of_the_check_measures_each_group_alone(tiny):
    g = torch.Generator().manual_seed(0)
    x, top1 = torch.rand(2, 3, 64, 64, generator=g), torch.tensor([1, 2])
    before = _state(tiny.net)
    ref = {"saliency": sanity.explainer_with_signed(tiny, "saliency", {}, 8)(x, top1)[0].float()}
    groups = sanity.model_groups(tiny, x[:1])
    steps = sanity.choose_steps(len(groups), 3)
    pairs = [("saliency", i) for i in range(2)]
    res = sanity.cascade_task(tiny, ["saliency"], {"saliency": {}}, 8, 5, steps, 0, x, top1, ref, pairs, None,
                              "independent")
    casc = sanity.cascade_task(tiny, ["saliency"], {"saliency": {}}, 8, 5, steps, 0, x, top1, ref, pairs, None)
    assert all(r.steps == steps and r.spearman.shape == (len(steps),) for r in res)
    # step 1 is the same network in both modes (the top group alone random); the last step is not
    assert all(torch.allclose(a.spearman[0], b.spearman[0]) for a, b in zip(res, casc))
    assert any(not torch.allclose(a.spearman[-1], b.spearman[-1]) for a, b in zip(res, casc))
    assert all(torch.equal(tiny.net.state_dict()[k], v) for k, v in before.items())
    cas = sanity.cascade_of(groups, steps, {"saliency": casc}, independent={"saliency": res})
    assert cas.independent_labels == [f"{groups[k - 1].name} only" for k in steps]
    assert cas.independent["saliency"].spearman.shape == (len(steps), 2)


# ------------------------------------------------------------------------------ seeds


def test_two_seeds_give_different_random_weights(tiny):
    assert sanity.donor_seeds(7, 2) == [7, 8] and sanity.donor_seeds(7, 1) == [7] and sanity.donor_seeds(0, 0) == [0]
    a, b, a2 = (sanity.fresh_donor(tiny, s).state_dict() for s in (0, 1, 0))
    weights = [k for k, v in a.items()  # the random tensors (not the input normalisation's constants)
               if v.is_floating_point() and v.numel() > 1 and v.std() > 0 and not k.startswith("normalize.")]
    assert weights and all(torch.equal(a[k], a2[k]) for k in a)  # a seed is reproducible
    assert all(not torch.equal(a[k], b[k]) for k in weights)  # another seed: other random weights


# ------------------------------------------------------------------------------ the stage: passes and the page


def test_the_signed_maps_come_from_the_maps_step_and_the_page_reports_seeds_and_independent(tmp_path, tiny):
    """One method (Saliency: one gradient pass per image and call) through the stage, every image into the
    classifier counted: the randomisation check sends exactly (seeds × its photos + the independent photos)
    × steps images through the randomised copies and none through the trained model (the signed maps come
    from the maps step), and the plan counts the same."""
    from generator import plan
    from generator.metrics import class_check
    from generator.stages import findings

    folder = _labelled_folder(tmp_path / "labelled")
    ctx = _ctx(tmp_path, tiny, folder)
    ctx.config.data["findings"].update({"methods": ["saliency"], "images": 8, "sanity_images": 3, "cascade_seeds": 2,
                                        "independent_images": 2})
    s = ctx.stage_settings("findings")
    before = _state(tiny.net)
    with plan.count_images(checks=("trained_maps", "cascade_results")) as counts:
        findings.run(ctx)
    ctx.site.finish()
    assert all(torch.equal(tiny.net.state_dict()[k], v) for k, v in before.items())
    sm = ctx.artifacts["findings_summaries"][0]
    n = sm.n_sanity
    groups = sanity.model_groups(tiny)
    steps = sanity.choose_steps(len(groups), int(s["cascade_steps"]))
    n_ind = findings.independent_n(s, n, False)
    assert n >= 2 and n_ind == 2
    by = lambda check, grad: sum(v for (_st, c, _sz, g), v in counts.items() if c == check and g == grad)  # noqa: E731
    assert by("cascade_results", True) == (2 * n + n_ind) * len(steps)  # was + n: the trained signed maps again
    assert by("cascade_results", False) == 0
    assert by("trained_maps", True) == 2 * len(sm.photos)  # top-1 and the second class, one call
    # the plan's calls of the check are exactly these
    d = plan.work_dict(ctx, "findings", tiny)
    w = plan.price_calls([c for c in d["calls"] if c["photos"][0] == "cascade"], tiny)
    assert (w.forward, w.gradient) == (0, (2 * n + n_ind) * len(steps))

    # the maps step keeps the signed maps of the same attribution (pixel-space methods only)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([[1, 5], [2, 6]])
    sal = class_check.maps_task(tiny, "saliency", {}, 8, x, t)
    a = sanity.explainer_with_signed(tiny, "saliency", {}, 8)(x, t[:, 0])
    assert torch.allclose(sal[0].signed[0], a[1][0], atol=1e-6) and torch.allclose(sal[0].maps[0], a[0][0], atol=1e-6)
    assert all(r.signed is None for r in class_check.maps_task(tiny, "gradcam", {}, 8, x, t))

    # the page: both seeds, which one the verdict uses, the independent table with its n, the edge reference
    page = (ctx.out / "findings" / "randomisation.md").read_text()
    seed = int(s["seed"])
    assert f"**Seeds.** 2 draws of the random weights (seeds {seed} and {seed + 1})" in page
    assert f"the verdict uses the first (seed {seed})" in page
    assert f"| Method | Seed {seed} | Seed {seed + 1} | Seed {seed + 1} − seed {seed} (paired) |" in page
    assert f"**Independent randomisation** (one layer group at a time, every other group trained; {n_ind} photos" in page
    assert f"| Saliency (gradient) | {n_ind} |" in page
    assert "Reference: trained map vs Sobel edge map" in page and "**Edge-detector reference.**" in page
    assert "seeds of the random weights in the randomisation cascade 2 (set in the config)" in page
    row = sm.rows[0]
    assert row["seed_means"][0].mean == pytest.approx(row["cascade_mean"].mean)  # the verdict's seed is the first
    assert len(row["seed_means"]) == 2 and len(row["independent"]) == len(steps)


# ------------------------------------------------------------------------------ the sentences flip


def _fake(edge=0.8, independent=(0.8, 0.8), second=0.8, n=20, seeds=(0, 1), title="Method *A*"):
    rng = np.random.default_rng(0)
    arr = lambda v: v + 0.01 * rng.standard_normal(n)  # noqa: E731
    curves = lambda vals: CascadeCurves(spearman=np.stack([arr(v) for v in vals]), ssim=np.zeros((len(vals), n)),  # noqa: E731
                                        hog=np.zeros((len(vals), n)), thumbs=np.zeros((len(vals), n, 1, 1)))
    cas = Cascade([1, 2], ["logits only", "all layers"], ["logits", "stem"], [0.5, 1.0], 2, {"m": curves([0.8, 0.8])},
                  seeds=list(seeds), other_seeds={"m": [curves([second, second])]} if len(seeds) > 1 else {},
                  independent={"m": curves(independent)} if independent else {},
                  independent_labels=["logits only", "stem only"], independent_fraction=[0.5, 0.5],
                  edges={"m": {"spearman": arr(edge), "ssim": arr(0.3), "hog": arr(0.3)}})
    return [{"title": title, "expensive": False, **verdict_randomisation.randomisation_extras(cas, "m", 0.5)}]


def test_the_edge_sentence_flips_at_the_threshold():
    above = verdict_randomisation.edge_overview(_fake(edge=0.7), 0.5, 20)
    below = verdict_randomisation.edge_overview(_fake(edge=0.3), 0.5, 20)
    assert "entirely at or above 0.5" in above and "Method \\*A\\*" in above and "entirely below" not in above
    assert "entirely below 0.5 for Method \\*A\\*" in below and "at or above" not in below
    assert "across 0.5 (undecided)" in verdict_randomisation.edge_overview(_fake(edge=0.5), 0.5, 20)
    assert "numbers, not findings" in verdict_randomisation.edge_overview(_fake(edge=0.7, n=5), 0.5, 20)


def test_the_independent_sentence_flips_at_the_threshold():
    one = verdict_randomisation.independent_overview(_fake(independent=(0.8, 0.2)), 0.5, 20)
    none = verdict_randomisation.independent_overview(_fake(independent=(0.8, 0.8)), 0.5, 20)
    assert "falls entirely below 0.5 when only one group is random for Method \\*A\\* (stem only)" in one
    assert "at no single group" not in one
    assert "at no single group for Method \\*A\\*" in none and "falls entirely below" not in none
    assert "20 photos per method" in none
    skipped = verdict_randomisation.independent_overview(_fake(independent=()), 0.5, 20)
    assert "Not measured in this build" in skipped


def test_the_seeds_sentence_flips_when_the_rule_reads_differently_on_a_seed():
    same = verdict_randomisation.seeds_overview(_fake(second=0.8), [0, 1], 0.5, 20)
    apart = verdict_randomisation.seeds_overview(_fake(second=0.2), [0, 1], 0.5, 20)
    assert "every seed reads the same for every method" in same and "no paired difference" in same
    assert "the seeds read differently for Method \\*A\\*" in apart and "excludes 0 for Method \\*A\\*" in apart
    assert "the verdict uses the first (seed 0)" in same
    one = verdict_randomisation.seeds_overview(_fake(seeds=(4,)), [4], 0.5, 20)
    assert "One draw of the random weights (seed 4; `cascade_seeds` = 1)" in one


def test_a_prepared_reference_gives_the_same_similarities():
    """The cascade computes the trained maps' ranks and HOG once for every step: the numbers are the
    same as comparing from scratch, for |map| and for signed maps."""
    from generator.metrics import similarity

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 40, 40, generator=g), torch.randn(3, 40, 40, generator=g)
    b[1] = a[1] * 2  # one pair perfectly related (|b| = 2 |a|)
    plain, ready = similarity.compare(a, b), similarity.compare(a, b, similarity.prepare(a))
    assert all(torch.equal(plain[k], ready[k]) for k in plain) and plain["spearman"][1] == pytest.approx(1.0)
    sp, sr = sanity.compare_signed(a, b), sanity.compare_signed(a, b, similarity.prepare(a, absolute=False))
    assert all(torch.equal(sp[k], sr[k]) for k in sp)
