"""Unit atlas: running top-k and histograms against brute force, resumability, patch
crops, and the stage's pages (links resolve, caching works, DGN-AM linked when present)."""
from __future__ import annotations

import io
import posixpath
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from generator import image_folder
from generator.imagenet import labels as imagenet_labels
from generator.metrics import unit_stats
from generator.methods.base import capture_outputs
from generator.models import Classifier, Layer, LoadedModel, ModelSpec, Preprocess
from generator.receptive_field import receptive_field
from generator.render import unit_tiles


def toy_net() -> Classifier:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 10),
    )
    with torch.no_grad():  # channel 5 of the first conv is dead: all-zero maxima, ties everywhere
        body[0].weight[5].zero_()
        body[0].bias[5] = -1.0
    net = Classifier(body, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


MODULES = {"c1": "body.1", "c2": "body.4"}


def make_folder(root: Path, n_per_class: int = 11) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("n01440764", "other_class"):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(n_per_class):
            h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
            a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"img{i:02d}.png")
    (root / "n01440764" / "broken.png").write_bytes(b"not an image at all")
    return root


def brute_force(net, listing, indices, S, R):
    x = torch.stack([image_folder.load_input(listing.root / listing.files[i], Preprocess(S, R)) for i in indices])
    mods = {n: net.get_submodule(p) for n, p in MODULES.items()}
    with torch.no_grad(), capture_outputs(mods) as out:
        net(x)
    res = {}
    for n, a in out.items():
        B, C, h, w = a.shape
        best, where = a.reshape(B, C, h * w).max(2)
        order = torch.sort(best.T, dim=1, descending=True, stable=True).indices  # C × B
        res[n] = (best, where, order, w)
    return res


def stream(net, listing, indices, k, batch, state=None, stop_after=None):
    mods = {n: net.get_submodule(p) for n, p in MODULES.items()}
    if state is None:
        state = unit_stats.AtlasState.empty(unit_stats.layer_channels(net, mods, 32), k, len(listing), (12, 4))
    todo = indices[state.done:]
    if stop_after is not None:
        todo = todo[:stop_after]
    return unit_stats.stream_topk(net, mods, image_folder.iterate_batches(listing, todo, Preprocess(32, 36), batch,
                                                                          workers=0), state)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> image_folder.FolderListing:
    return image_folder.list_folder(make_folder(tmp_path_factory.mktemp("imgs")))


def test_running_topk_equals_brute_force(folder):
    net = toy_net()
    k = 4
    st = stream(net, folder, list(range(len(folder))), k, batch=5)
    bad = folder.files.index("n01440764/broken.png")
    assert st.failed == [bad]
    good = [i for i in range(len(folder)) if i != bad]
    bf = brute_force(net, folder, good, 32, 36)
    for n, (best, where, order, w) in bf.items():
        tk = st.topk[n]
        exp_index = torch.tensor(good)[order[:, :k]]
        assert torch.equal(tk.index, exp_index)
        assert torch.allclose(tk.values, best.T.gather(1, order[:, :k]), atol=1e-5)
        pos = where.T.gather(1, order[:, :k])
        assert torch.equal(tk.pos[..., 0], pos // w) and torch.equal(tk.pos[..., 1], pos % w)
    # the dead channel: all maxima 0, the earliest images win the ties
    assert (st.topk["c1"].values[5] == 0).all()
    assert st.topk["c1"].index[5].tolist() == good[:k]
    # predictions recorded for every readable file, -1 for the broken one
    assert st.pred[bad] == -1 and (st.pred[good] >= 0).all()


def test_histogram_matches_brute_force_and_ignores_order(folder):
    net = toy_net()
    good = [i for i in range(len(folder)) if not folder.files[i].endswith("broken.png")]
    a = stream(net, folder, good, 3, batch=4)
    b = stream(net, folder, good[::-1], 3, batch=7)
    bf = brute_force(net, folder, good, 32, 36)
    for n in MODULES:
        ha, hb = a.hist[n], b.hist[n]
        assert torch.equal(ha.exp, hb.exp) and torch.equal(ha.counts, hb.counts)
        assert ha.n == len(good) and (ha.counts.sum(1) == len(good)).all()
        best = bf[n][0]
        for c in range(best.shape[1]):
            edges = ha.edges(c).numpy()
            expect, _ = np.histogram(best[:, c].double().numpy(), bins=edges)
            # np.histogram closes the last bin on the right; ours is half-open: values never reach it
            assert ha.counts[c].tolist() == expect.tolist()
            assert best[:, c].max() < edges[-1]
            # the smallest power-of-two width that fits: half of it would not
            assert best[:, c].max() >= edges[-1] / 2 or ha.exp[c] == unit_stats.MaxHistogram.E_MIN
        assert torch.allclose(ha.sum, best.double().sum(0), atol=1e-3)


def test_stream_resumes_from_a_checkpoint(folder):
    net = toy_net()
    idx = list(range(len(folder)))
    once = stream(net, folder, idx, 3, batch=4)
    part = stream(net, folder, idx, 3, batch=4, stop_after=9)
    assert part.done == 9
    buf = io.BytesIO()
    torch.save(part.to_dict(), buf)
    buf.seek(0)
    resumed = unit_stats.AtlasState.from_dict(torch.load(buf, weights_only=True))
    resumed = stream(net, folder, idx, 3, batch=4, state=resumed)
    assert resumed.done == len(idx) and resumed.failed == once.failed
    for n in MODULES:
        assert torch.equal(resumed.topk[n].index, once.topk[n].index)
        assert torch.equal(resumed.topk[n].pos, once.topk[n].pos)
        assert torch.equal(resumed.hist[n].counts, once.hist[n].counts)


def test_subset_is_spread_and_listing_is_stable(folder):
    idx = folder.subset(6)
    assert len(idx) == 6 and idx == sorted(set(idx))
    assert {folder.classes[i] for i in idx} == {"n01440764", "other_class"}
    assert folder.subset(0) == list(range(len(folder)))
    again = image_folder.list_folder(folder.root)
    assert again.files == folder.files and again.fingerprint == folder.fingerprint
    assert image_folder.class_label("n01440764", imagenet_labels()) == "tench"
    assert image_folder.class_label("other_class", imagenet_labels()) == "other_class"


def test_unit_examples_crop_the_receptive_field_at_borders():
    net = toy_net()
    module = net.get_submodule("body.4")  # c2: field 8 px, stride 2, offset -3 (hand: 3 → pool 4 → +2·2)
    rf = receptive_field(net, module, (32, 32))
    assert (rf.y.size, rf.y.stride, rf.y.offset) == (8, 2, -3)
    torch.manual_seed(1)
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), capture_outputs({"m": module}) as out:
        net(img)
    assert out["m"][1, 3, 6, 8] > 0  # an active unit: its projection cannot be blank
    picks = torch.tensor([[0, 1, 0, 0], [1, 3, 6, 8], [1, 0, 15, 15]])
    crops = unit_stats.unit_crops(net, module, img, picks)
    res = {**crops, "patches": unit_tiles(crops["patches"], 8, crops["marks"]), "deconv": unit_tiles(crops["deconv"], 8)}
    assert res["boxes"].tolist() == [[0, 0, 5, 5], [9, 13, 17, 21], [27, 27, 32, 32]]
    assert res["display"].tolist() == [[-3, -3, 5, 5], [9, 13, 17, 21], [27, 27, 35, 35]]
    to8 = lambda t: (t * 255 + 0.5).to(torch.uint8)
    p = res["patches"]
    assert p.shape == (3, 3, 8, 8)
    # interior unit: exactly the 8×8 crop; border units: grey where the field leaves the image
    assert (p[1].int() - to8(img[1, :, 9:17, 13:21]).int()).abs().max() <= 1
    assert (p[0, :, :3, :] == 128).all() and (p[0, :, :, :3] == 128).all()
    assert (p[0, :, 3:, 3:].int() - to8(img[0, :, 0:5, 0:5]).int()).abs().max() <= 1
    assert (p[2, :, 5:, :] == 128).all() and (p[2, :, :, 5:] == 128).all()
    # projections: only inside the field differs from grey, and they are not blank
    d = res["deconv"]
    assert d.shape == (3, 3, 8, 8)
    assert (d[0, :, :3, :] == 128).all()
    assert (d[1].int() - 128).abs().max() > 20


def _links(md: str) -> list[str]:
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", md) if not m.startswith(("http", "#"))]


def test_stage_pages_link_correctly_and_rerun_is_cached(tmp_path, folder):
    from generator.build import BuildContext
    from generator.cache import Cache
    from generator.config import Config
    from generator.site import SiteWriter
    from generator.stages import atlas as stage
    from generator.util import StageTimer

    net = toy_net()
    spec = ModelSpec(name="toy", title="Toy net", family="torchvision", arch="toy", input_size=32, resize_size=36,
                     layers=(Layer("c1", "1"), Layer("c2", "4"), Layer("fc", "7", "fc")), default_layers=("c1", "c2", "fc"))
    lm = LoadedModel(spec, net, "random-init:seed=0", None, False, imagenet_labels())
    out = tmp_path / "generated"
    cfg = Config({"build": {"images": str(folder.root)},
                  "atlas": {"folder": str(folder.root), "top_k": 4, "max_channels_per_layer": 3, "batch_size": 6,
                            "workers": 0, "tile": 24, "max_images": 16}})

    def make_ctx():
        return BuildContext(config=cfg, models=[lm], missing={}, images=[], skipped=[], notes=[],
                            cache=Cache(tmp_path / "cache"), site=SiteWriter(out), device=torch.device("cpu"),
                            batch_size=4, timer=StageTimer(), out=out)

    dgn = out / "figures" / "dgn_am" / "toy" / "c1" / "0.webp"
    dgn.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(dgn, "WEBP")
    stale = out / "figures" / "dgn_am" / "toy" / "c1" / "1.webp"  # an earlier run's file, not this run's
    Image.new("RGB", (8, 8)).save(stale, "WEBP")
    ctx = make_ctx()
    ctx.provide("unit_images", {("toy", "c1", 0): "figures/dgn_am/toy/c1/0.webp"})  # what the dgn_am stage hands on
    ctx.provide("unit_importance", {("toy", "c1", 0): {  # what the findings stage hands on
        "selectivity": 0.625, "acc_drop": 0.02, "prob_drop": 0.0314, "preferred": "tench", "n": 50, "n_classes": 10,
        "rho": {}, "rank": 1, "of": 4}})
    stage.run(ctx)
    ctx.site.finish()
    (out / "findings").mkdir(exist_ok=True)
    (out / "findings" / "selectivity.md").write_text("# Selectivity\n")  # the page the importance line links to
    pages = sorted(p.relative_to(out).as_posix() for p in (out / "units").rglob("*.md"))
    assert "units/toy/c1/0.md" in pages and "units/toy/c2/2.md" in pages and "units/toy/c2/index.md" in pages
    assert "units/toy/c1/3.md" not in pages  # capped at 3 channels
    assert not any("/fc/" in p for p in pages)  # fully connected layers have no atlas
    n_links = 0
    for rel in pages + ["methods/atlas.md", "models/toy.md"]:
        md = (out / rel).read_text()
        for target in _links(md):
            n_links += 1
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            assert (out / resolved).is_file(), f"{rel}: broken link {target}"
    assert n_links > 50
    unit0 = (out / "units/toy/c1/0.md").read_text()
    assert "dgn_am/toy/c1/0.webp" in unit0
    assert "class selectivity\n0.62" in unit0 or "class selectivity 0.62" in unit0.replace("\n", " ")
    assert "0.031 of the\ntrue class" in unit0 or "0.031 of the true class" in unit0.replace("\n", " ")
    assert "Selectivity vs importance" not in (out / "units/toy/c1/1.md").read_text()
    assert "dgn_am" not in (out / "units/toy/c1/1.md").read_text()
    assert "tench" in unit0 or "other\\_class" in unit0  # wnid folders get ImageNet labels
    layer = (out / "units/toy/c1/index.md").read_text()
    assert layer.count("-thumb.webp") == 3 and "first 3 of 6 channels" in layer
    # rerun: everything from the cache
    ctx2 = make_ctx()
    stage.run(ctx2)
    assert ctx2.cache.misses == 0 and ctx2.cache.hits > 0


def test_stage_stream_resumes_after_an_interruption(tmp_path, folder, monkeypatch):
    from generator.cache import Cache
    from generator.stages import atlas as stage

    net = toy_net()
    spec = ModelSpec(name="toy", title="Toy net", family="torchvision", arch="toy", input_size=32, resize_size=36,
                     layers=(Layer("c1", "1"), Layer("c2", "4")), default_layers=("c1", "c2"))
    lm = LoadedModel(spec, net, "random-init:seed=0", None, False, imagenet_labels())
    cfg = {**stage.DEFAULTS, "top_k": 3, "batch_size": 4, "workers": 0, "checkpoint_every": 1, "hist_bins": 12}
    idx = list(range(len(folder)))

    class Ctx:
        cache = Cache(tmp_path / "cache")
        device = torch.device("cpu")

    ctx = Ctx()
    real = image_folder.iterate_decoded

    def interrupted(*a, **kw):
        for n, b in enumerate(real(*a, **kw)):
            if n == 3:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(image_folder, "iterate_decoded", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage._stream_all(ctx, [(lm, ["c1", "c2"], None)], folder, idx, cfg)[0]
    fed = []

    def counting(listing, todo, *a, **kw):
        fed.append(len(todo))
        return real(listing, todo, *a, **kw)

    monkeypatch.setattr(image_folder, "iterate_decoded", counting)
    resumed = stage._stream_all(ctx, [(lm, ["c1", "c2"], None)], folder, idx, cfg)[0]
    assert fed == [len(idx) - 3 * 4]  # three batches were checkpointed before the interruption
    once = stream(net, folder, idx, 3, batch=4)
    for n in ("c1", "c2"):
        assert torch.equal(resumed.topk[n].index, once.topk[n].index)
        assert torch.equal(resumed.hist[n].counts, once.hist[n].counts)
    assert resumed.done == len(idx)
    # finished: the next call is a pure cache hit
    fed.clear()
    stage._stream_all(ctx, [(lm, ["c1", "c2"], None)], folder, idx, cfg)[0]
    assert fed == []


def test_models_share_one_decoding_and_get_the_same_results_as_alone(tmp_path, folder, monkeypatch):
    """Two models with different input sizes streamed together: every file is decoded
    once, and each model's state is exactly what its own stream gives; a model resumed
    from a checkpoint and one starting fresh share the pass."""
    from generator.cache import Cache
    from generator.stages import atlas as stage

    def toy(name, size, resize, seed):
        torch.manual_seed(seed)
        net = toy_net()
        with torch.no_grad():
            for q in net.parameters():
                q.add_(0.1 * torch.randn_like(q))
        spec = ModelSpec(name=name, title=name, family="torchvision", arch="toy", input_size=size, resize_size=resize,
                         layers=(Layer("c1", "1"), Layer("c2", "4")), default_layers=("c1", "c2"))
        return LoadedModel(spec, net, f"random-init:seed={seed}", None, False, imagenet_labels())

    a, b = toy("toy_a", 32, 36, 1), toy("toy_b", 40, 44, 2)
    cfg = {**stage.DEFAULTS, "top_k": 3, "batch_size": 4, "workers": 0, "checkpoint_every": 1, "hist_bins": 12}
    idx = list(range(len(folder)))

    class Ctx:
        def __init__(self, root):
            self.cache = Cache(root)
            self.device = torch.device("cpu")

    alone = {}
    for m in (a, b):
        c = Ctx(tmp_path / f"alone-{m.name}")
        alone[m.name] = stage._stream_all(c, [(m, ["c1", "c2"], None)], folder, idx, cfg)[0]
    # model a streamed halfway (interrupted), then both together
    ctx = Ctx(tmp_path / "shared")
    real = image_folder.iterate_decoded

    def interrupted(*args, **kw):
        for n, batch in enumerate(real(*args, **kw)):
            if n == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(image_folder, "iterate_decoded", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage._stream_all(ctx, [(a, ["c1", "c2"], None)], folder, idx, cfg)[0]
    monkeypatch.setattr(image_folder, "iterate_decoded", real)
    decoded = []
    real_load = image_folder.load_rgb

    def counting_load(path):
        decoded.append(Path(path).name)
        return real_load(path)

    monkeypatch.setattr(image_folder, "load_rgb", counting_load)
    jobs = [(m, ["c1", "c2"], unit_stats.FastCopy(m, cfg)) for m in (a, b)]
    together = stage._stream_all(ctx, jobs, folder, idx, cfg)
    assert len(decoded) == len(idx)  # model b needed every file, model a the second part: one decoding each
    for m, st in zip((a, b), together):
        ref = alone[m.name]
        assert st.done == ref.done == len(idx) and st.failed == ref.failed and len(st.failed) == 1
        assert torch.equal(st.pred, ref.pred)
        for n in ("c1", "c2"):
            assert torch.equal(st.topk[n].index, ref.topk[n].index)
            assert torch.equal(st.topk[n].values, ref.topk[n].values)
            assert torch.equal(st.topk[n].pos, ref.topk[n].pos)
            assert torch.equal(st.hist[n].counts, ref.hist[n].counts)
    # the two models really differ (else the test could not tell them apart)
    assert not torch.equal(together[0].topk["c1"].values, together[1].topk["c1"].values)
    decoded.clear()
    again = stage._stream_all(ctx, jobs, folder, idx, cfg)
    assert decoded == [] and torch.equal(again[1].hist["c2"].counts, together[1].hist["c2"].counts)
