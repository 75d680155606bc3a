"""DeePSim generator, DGN-AM, PPGN and pixel-space AM on tiny CPU networks."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from generator.deepsim import DeePSimFC6, load_deepsim_fc6, load_generator
from generator.deepsim.dgn_am import DGNAMSettings, dgn_am
from generator.deepsim.nets import Comparator, Generator, GeneratorConfig, make_train_config
from generator.deepsim.ppgn import PPGNSettings, chain_diversity, ppgn_sample, step_size
from generator.deepsim.train import Trainer, batch_indices, build_parser, export_generator, init_weights
from generator.methods.objectives import Target, UnitObjective
from generator.methods.pixel_am import PixelAMSettings, pixel_am

CODE = 16


class TinyNet(nn.Module):
    """A tiny pixel-space classifier: conv → relu → conv → pool → linear (5 classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 5)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x):
        z = torch.relu(self.conv2(torch.relu(self.conv1(x - 0.5))))
        return self.fc(z.mean((2, 3)))


def tiny_g(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(code_dim=CODE, size=16, fc_dims=(32,), base_channels=16, min_channels=8)).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def stats() -> dict:
    return {"mean": torch.full((CODE,), 0.5), "std": torch.linspace(0.2, 1.0, CODE)}


TARGETS = [Target(0), Target(3), Target(2, layer="conv1"), Target(5, layer="conv2")]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_dgn_am_raises_every_target_and_respects_bounds(optimizer):
    net, G = TinyNet(), tiny_g()
    st = stats()
    s = DGNAMSettings(steps=30, lr_start=0.5, lr_end=0.0, decay=0.01, init="mean", optimizer=optimizer)
    res = dgn_am(G, net, TARGETS, st, s, input_size=16)
    start, end = res.trajectory[:, 0], res.final
    assert (end > start + 1e-3).all(), (start, end)
    # the final image's activation is the last trajectory entry and matches a fresh evaluation
    assert torch.allclose(res.trajectory[:, -1], end)
    with torch.no_grad():
        logits = net(res.images)
    assert torch.allclose(logits[0, 0], end[0], atol=1e-5) and torch.allclose(logits[1, 3], end[1], atol=1e-5)
    hi = 3.0 * st["std"]
    assert (res.codes >= 0).all() and (res.codes <= hi + 1e-6).all()
    assert res.settings["steps"] == 30 and res.trajectory.shape == (4, 31)


def test_dgn_am_decay_without_steps_is_geometric():
    net, G = TinyNet(), tiny_g()
    s = DGNAMSettings(steps=10, lr_start=0.0, lr_end=0.0, decay=0.1, init="mean")
    res = dgn_am(G, net, TARGETS[:2], stats(), s, input_size=16)
    assert torch.allclose(res.codes, torch.full((2, CODE), 0.5 * 0.9**10), atol=1e-6)


def test_dgn_am_clip_tight_bound_holds():
    net, G = TinyNet(), tiny_g()
    s = DGNAMSettings(steps=5, lr_start=50.0, lr_end=50.0, decay=0.0, clip_sigma=0.5, init="zeros")
    res = dgn_am(G, net, TARGETS, stats(), s, input_size=16)
    hi = 0.5 * stats()["std"]
    assert (res.codes >= 0).all() and (res.codes <= hi + 1e-6).all()
    assert (res.codes == hi).any() or (res.codes == 0).any()  # huge steps hit the bounds


def test_ppgn_chain_reproducible_from_seed_and_raises_log_prob():
    net, G = TinyNet(), tiny_g()
    enc = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, CODE))
    for p in enc.parameters():
        p.requires_grad_(False)
    s = PPGNSettings(steps=20, eps1=0.1, eps2=1.0, eps3=0.05, lr=1.0, lr_end=None, cycle=0, update="raw",
                     normalize_grad=True, save_every=5, burn_in=0, seed=7)
    a = ppgn_sample(G, enc, net, TARGETS[:2], stats(), s, input_size=16)
    b = ppgn_sample(G, enc, net, TARGETS[:2], stats(), s, input_size=16)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.codes, b.codes)
    s.seed = 8
    c = ppgn_sample(G, enc, net, TARGETS[:2], stats(), s, input_size=16)
    assert not torch.equal(a.codes, c.codes)
    assert a.samples.shape[:2] == (2, 5) and a.sample_steps == [0, 5, 10, 15, 20]
    # without prior and noise the chain is gradient ascent on log p(y=c): it must rise
    q = ppgn_sample(G, None, net, TARGETS[:2], stats(),
                    PPGNSettings(steps=20, eps1=0.0, eps3=0.0, lr=0.5, lr_end=None, cycle=0, update="raw",
                                 normalize_grad=True, burn_in=0), input_size=16)
    assert (q.trajectory[:, -1] > q.trajectory[:, 0] + 1e-3).all()
    d = chain_diversity(a.codes)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(chain_diversity(a.codes[:, :1].repeat(1, 3, 1)), torch.zeros(2), atol=1e-6)


def test_ppgn_step_size_schedules():
    const = PPGNSettings(steps=100, lr=0.3, lr_end=None, cycle=0)
    assert [step_size(const, t) for t in (0, 50, 99)] == [0.3, 0.3, 0.3]
    lin = PPGNSettings(steps=100, lr=0.5, lr_end=0.1, cycle=0)
    assert step_size(lin, 0) == 0.5 and step_size(lin, 50) == pytest.approx(0.3) and step_size(lin, 100) == pytest.approx(0.1)
    cyc = PPGNSettings(steps=100, lr=0.5, lr_end=0.02, cycle=20)
    assert step_size(cyc, 0) == pytest.approx(0.5) and step_size(cyc, 20) == pytest.approx(0.5)
    assert step_size(cyc, 10) == pytest.approx(0.26) and step_size(cyc, 30) == pytest.approx(0.26)
    assert step_size(cyc, 19) < 0.025  # each cycle ends near lr_end, where a sample is saved
    seq = [step_size(cyc, t) for t in range(20)]
    assert all(a > b for a, b in zip(seq, seq[1:]))


def test_ppgn_normalized_update_moves_h_by_the_step_size():
    """The authors' update: mean |Δh| per chain = lr_t · mean code std, whatever the gradient's scale."""
    net, G = TinyNet(), tiny_g()
    st = {"mean": torch.full((CODE,), 5.0), "std": torch.linspace(0.2, 1.0, CODE)}  # far from the 0 bound
    s = PPGNSettings(steps=12, eps1=0.0, eps3=0.0, lr=0.05, lr_end=0.01, cycle=6, update="normalized",
                     clip_sigma=100.0, save_every=1, burn_in=0, init="mean")
    r = ppgn_sample(G, None, net, TARGETS[:2], st, s, input_size=16)
    moved = (r.codes[:, 1:] - r.codes[:, :-1]).abs().mean(2)  # B×steps
    want = torch.tensor([step_size(s, t) for t in range(12)]) * st["std"].mean()
    assert torch.allclose(moved, want.expand_as(moved), rtol=1e-4), (moved, want)
    # the direction is the ascent direction: log p rises over the first (small) steps
    assert (r.trajectory[:, 3] > r.trajectory[:, 0]).all()


def test_ppgn_default_cyclical_chain_saves_cycle_ends_and_resets():
    net, G = TinyNet(), tiny_g()
    s = PPGNSettings(steps=40, cycle=10, save_every=10, burn_in=10, eps1=0.0, seed=3)
    r = ppgn_sample(G, None, net, TARGETS[:2], stats(), s, input_size=16)
    assert r.sample_steps == [10, 20, 30, 40] and r.samples.shape[:2] == (2, 4)
    assert (chain_diversity(r.codes) > 0).all()
    # reset_every restarts from fresh random codes: the chain right after a reset is a new start
    rs = PPGNSettings(steps=4, lr=0.01, lr_end=None, cycle=0, reset_every=2, save_every=1, burn_in=0, eps1=0.0,
                      init_scale=1.0, seed=3)
    q = ppgn_sample(G, None, net, TARGETS[:2], stats(), rs, input_size=16)
    small = (q.codes[:, 1] - q.codes[:, 0]).abs().mean()
    jump = (q.codes[:, 2] - q.codes[:, 1]).abs().mean()
    assert jump > 5 * small


@pytest.mark.parametrize("method", ["plain", "regularized", "fourier"])
def test_pixel_am_raises_activation(method):
    net = TinyNet()
    res = pixel_am(net, TARGETS, PixelAMSettings(method=method, steps=15, size=16, jitter=2, lr=0.05))
    assert (res["final"] > res["trajectory"][:, 0]).all()
    assert res["images"].min() >= 0 and res["images"].max() <= 1


def _fake_loaded(net: nn.Module):
    return types.SimpleNamespace(net=net, module_path=lambda name: name)


def _data(n=24):
    torch.manual_seed(3)
    h = torch.rand(n, CODE)
    # images that depend on the code, so there is something to learn
    x = torch.sigmoid(torch.einsum("nc,chw->nhw", h, torch.randn(CODE, 16, 16))).unsqueeze(1).repeat(1, 3, 1, 1)
    return h, x


def _trainer():
    cfg = make_train_config("tiny", w_adv=0.01, adv_start=2, lr=2e-3)
    return Trainer(cfg, Comparator(_fake_loaded(TinyNet()), ("conv1", "conv2"), 16), seed=0)


def _run(tr, h, x, steps):
    out = []
    while tr.step_n < steps:
        idx = batch_indices(len(h), tr.cfg.batch_size, tr.step_n, seed=0)
        out.append(tr.step(h[idx], x[idx]))
    return out


def test_training_lowers_loss_and_resume_matches(tmp_path):
    h, x = _data()
    tr = _trainer()
    logs = _run(tr, h, x, 40)
    first = sum(l["pix"] + l["feat"] for l in logs[:6]) / 6
    last = sum(l["pix"] + l["feat"] for l in logs[-6:]) / 6
    assert last < 0.8 * first, (first, last)

    a = _trainer()
    _run(a, h, x, 10)
    torch.save({"trainer": a.state_dict()}, tmp_path / "ck.pt")
    _run(a, h, x, 16)
    b = _trainer()
    b.load_state_dict(torch.load(tmp_path / "ck.pt", weights_only=True)["trainer"])
    assert b.step_n == 10
    _run(b, h, x, 16)
    for (k, va), vb in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(va, vb), k
    for va, vb in zip(a.D.state_dict().values(), b.D.state_dict().values()):
        assert torch.equal(va, vb)


def test_init_from_checkpoint_or_export_copies_weights_not_optimiser(tmp_path):
    h, x = _data()
    a = _trainer()
    _run(a, h, x, 6)
    torch.save({"trainer": a.state_dict()}, tmp_path / "ck.pt")
    export_generator(a.G, tmp_path / "g.pt", {"code_stats": stats()})
    b = _trainer()
    init_weights(b, tmp_path / "ck.pt")
    assert b.step_n == 0 and not b.opt_g.state  # a fresh run that starts from a's networks
    for k, v in a.G.state_dict().items():
        assert torch.equal(v, b.G.state_dict()[k]), k
    for k, v in a.D.state_dict().items():
        assert torch.equal(v, b.D.state_dict()[k]), k
    c = _trainer()
    d0 = {k: v.clone() for k, v in c.D.state_dict().items()}
    init_weights(c, tmp_path / "g.pt")  # an exported generator: G only (fp16), D untouched
    hh = torch.rand(2, CODE)
    assert torch.allclose(a.G.eval()(hh), c.G.eval()(hh), atol=2e-3)
    assert all(torch.equal(v, c.D.state_dict()[k]) for k, v in d0.items())
    bad = Trainer(make_train_config("tiny", w_adv=0.01), Comparator(_fake_loaded(TinyNet()), ("conv1",), 32))
    bad.G = Generator(GeneratorConfig(code_dim=CODE + 1, size=16, fc_dims=(32,), base_channels=16, min_channels=8))
    with pytest.raises(ValueError, match="do not match"):
        init_weights(bad, tmp_path / "ck.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="neither"):
        init_weights(b, tmp_path / "junk.pt")


def test_batch_indices_cover_epoch_and_depend_on_step_only():
    idx = torch.cat([batch_indices(20, 5, s, seed=1) for s in range(4)])
    assert sorted(idx.tolist()) == list(range(20))
    assert torch.equal(batch_indices(20, 5, 6, 1), batch_indices(20, 5, 6, 1))


def test_export_roundtrip_and_gpu_config_one_step(tmp_path):
    G = tiny_g()
    export_generator(G, tmp_path / "g.pt", {"code_stats": stats(), "encoder": {"encoder": "tiny"}})
    G2, meta = load_generator(tmp_path / "g.pt")
    h = torch.rand(2, CODE)
    assert torch.allclose(G(h), G2(h), atol=2e-3)  # fp16 storage
    assert torch.equal(meta["code_stats"]["std"], stats()["std"])
    # the GPU preset (128 px, AMP only on CUDA) builds and trains one step on CPU
    cfg = make_train_config("gpu", batch_size=2)
    cfg.generator = GeneratorConfig(**{**cfg.generator.to_dict(), "fc_dims": (64,), "code_dim": CODE})
    tr = Trainer(cfg, Comparator(_fake_loaded(TinyNet()), ("conv1",), 32), amp=True)
    assert not tr.amp  # AMP is CUDA-only
    logs = tr.step(torch.rand(2, CODE), torch.rand(2, 3, 128, 128))
    assert tr.G(torch.rand(1, CODE)).shape == (1, 3, 128, 128) and logs["loss"] > 0


def test_deepsim_fc6_loader_on_synthetic_file(tmp_path):
    # same key layout and conventions as the published port, with small widths
    ref = DeePSimFC6()
    shapes = {"defc7.weight": (64, 32), "defc6.weight": (64, 64), "defc5.weight": (16 * 16, 64)}
    small = DeePSimFC6({**shapes, "deconv5.weight": (16, 8, 4, 4), "conv5_1.weight": (8, 8, 3, 3),
                        "deconv4.weight": (8, 8, 4, 4), "conv4_1.weight": (8, 8, 3, 3), "deconv3.weight": (8, 8, 4, 4),
                        "conv3_1.weight": (8, 8, 3, 3), "deconv2.weight": (8, 8, 4, 4), "deconv1.weight": (8, 4, 4, 4),
                        "deconv0.weight": (4, 3, 4, 4)})
    sd = {"G." + k.split(".", 1)[1]: v for k, v in small.state_dict().items()}
    torch.save(sd, tmp_path / "fc6.pt")
    G, meta = load_deepsim_fc6(tmp_path / "fc6.pt")
    h = torch.rand(2, 32)
    out = G(h)
    assert out.shape == (2, 3, 256, 256) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out, small(h))
    assert ref.code_dim == 4096 and meta["code_stats"]["std"].shape == (32,)
    with pytest.raises(ValueError):
        torch.save({"x.weight": torch.zeros(1)}, tmp_path / "bad.pt")
        load_deepsim_fc6(tmp_path / "bad.pt")


def test_dgn_am_stage_takes_the_fc6_layout_and_drops_the_prior_without_alexnet(tmp_path, tmp_torch_home):
    from generator.deepsim import load_any_generator
    from generator.deepsim.ppgn import prior_encoder

    shapes = {"defc7.weight": (64, 32), "defc6.weight": (64, 64), "defc5.weight": (16 * 16, 64),
              "deconv5.weight": (16, 8, 4, 4), "conv5_1.weight": (8, 8, 3, 3), "deconv4.weight": (8, 8, 4, 4),
              "conv4_1.weight": (8, 8, 3, 3), "deconv3.weight": (8, 8, 4, 4), "conv3_1.weight": (8, 8, 3, 3),
              "deconv2.weight": (8, 8, 4, 4), "deconv1.weight": (8, 4, 4, 4), "deconv0.weight": (4, 3, 4, 4)}
    torch.manual_seed(0)
    torch.save(DeePSimFC6(shapes).state_dict(), tmp_path / "fc6.pt")  # un-prefixed "fc.defc7.weight" keys: invalid
    with pytest.raises(ValueError, match="neither"):
        load_any_generator(tmp_path / "fc6.pt")
    g = DeePSimFC6(shapes)
    with torch.no_grad():  # signal-preserving init and Caffe's 0..255 output scale: not a near-constant image
        for m in g.modules():
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.3, mode="fan_in" if isinstance(m, nn.Linear) else "fan_out")
        g.up.deconv0.weight.mul_(60)
    torch.save({k.split(".", 1)[1]: v for k, v in g.state_dict().items()}, tmp_path / "fc6.pt")
    G, meta = load_any_generator(tmp_path / "fc6.pt")
    assert meta["format"] == "deepsim-fc6" and meta["encoder"]["encoder"] == "alexnet"
    model = types.SimpleNamespace(name="tiny")
    enc, why = prior_encoder(meta, model, models=[], device="cpu")
    assert enc is None and "alexnet" in why and "ε1" in why
    # DGN-AM through it still drives the target (256-px output resized to the tiny net's input)
    net = TinyNet()
    r = dgn_am(G, net, TARGETS[:2], meta["code_stats"], DGNAMSettings(steps=15, init="mean"), input_size=16)
    assert (r.final > r.trajectory[:, 0]).all() and (r.codes > 0).any()  # (the 256→16 px resize damps the gain)
    # our own format loads through the same function
    g = tiny_g()
    export_generator(g, tmp_path / "own.pt", {"code_stats": stats(), "encoder": {"encoder": "tiny"}})
    G2, meta2 = load_any_generator(tmp_path / "own.pt")
    assert meta2["format"] == "cnnvis-deepsim-generator/1"
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_any_generator(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "own.pt").read_bytes()[:2000])  # an interrupted copy
    with pytest.raises(ValueError, match="cannot be read"):
        load_any_generator(tmp_path / "cut.pt")


def test_cli_has_help():
    p = build_parser()
    assert "--resume" in p.format_help() and "--export" in p.format_help()


def test_all_units_matches_per_row_objective():
    net = TinyNet()
    obj = UnitObjective(net, TARGETS)
    x = torch.rand(len(TARGETS), 3, 16, 16)
    per_row, _ = obj(x)
    full = obj.all_units(x)
    assert full.shape == (4, 4) and torch.allclose(full.diagonal(), per_row)


def test_channel_objective_is_the_spatial_mean_and_keeps_unit_keys():
    net = TinyNet()
    targets = [Target(2, layer="conv1"), Target(2, layer="conv1", where="mean"), Target(1)]
    x = torch.rand(3, 3, 16, 16)
    act, logits = UnitObjective(net, targets)(x)
    conv1 = net.conv1(x - 0.5)
    assert torch.allclose(act[0], conv1[0, 2, 8, 8]) and torch.allclose(act[1], conv1[1, 2].mean())
    assert torch.allclose(act[2], logits[2, 1])
    assert [t.key for t in targets] == ["conv1:2", "conv1:2:mean", "logit:1"]  # cache keys of units unchanged
    with pytest.raises(ValueError):
        Target(0, layer="conv1", where="max")


def test_generator_output_depends_on_code_at_init():
    # He init + code standardisation: the code is not drowned by the biases (a flat grey image
    # for every code was the failure mode of PyTorch's default init on this deep LeakyReLU stack)
    cfg = GeneratorConfig(code_dim=CODE, size=32, fc_dims=(64,), base_channels=64, min_channels=16)
    torch.manual_seed(0)
    G = Generator(cfg)
    G.set_code_stats(torch.full((CODE,), 0.2), torch.full((CODE,), 0.3))
    h = (0.2 + 0.3 * torch.randn(32, CODE)).clamp_min(0)
    with torch.no_grad():
        y = G(h)
    assert y.std(0).mean() > 0.03
    # the standardisation is part of the state dict (saved with the weights)
    assert torch.equal(G.state_dict()["code_mean"], torch.full((CODE,), 0.2))


def test_ppgn_hidden_unit_condition_raises_activation():
    net, G = TinyNet(), tiny_g()
    units = [Target(2, layer="conv1"), Target(5, layer="conv2")]
    s = PPGNSettings(steps=20, eps1=0.0, eps3=0.0, lr=0.5, lr_end=None, cycle=0, update="raw", normalize_grad=True,
                     save_every=10, burn_in=0)
    r = ppgn_sample(G, None, net, units, stats(), s, input_size=16)
    assert (r.trajectory[:, -1] > r.trajectory[:, 0] + 1e-3).all()
    assert torch.allclose(r.prob[:, -1], r.trajectory[:, -1])  # unit chains report the activation itself


def test_gather_excludes_named_photos_and_precompute_mirrors_with_own_codes(tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    from generator.deepsim.train import gather, precompute, read_exclude
    rng = np.random.default_rng(0)
    for folder, names in (("a/c1", ["p0.png", "p1.png"]), ("b", ["q0.png", "keep.png"])):
        (tmp_path / folder).mkdir(parents=True)
        for n in names:
            PILImage.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / folder / n)
    (tmp_path / "ex.txt").write_text("# judge photos\nq0.png\n\np1.png  # reconstructed\n")
    ex = read_exclude(tmp_path / "ex.txt")
    assert ex == {"q0.png", "p1.png"}
    paths = gather([tmp_path / "a", tmp_path / "b"], ex)
    assert [p.name for p in paths] == ["p0.png", "keep.png"]

    class Asym(torch.nn.Module):  # a code that is not mirror-invariant: mean of the left half
        def forward(self, x):
            return x[..., : x.shape[-1] // 2].mean(dim=(2, 3))

    plain = precompute(paths, Asym(), 8, tmp_path / "c0", 16, 16)
    both = precompute(paths, Asym(), 8, tmp_path / "c1", 16, 16, flip=True)
    assert len(both["codes"]) == 2 * len(plain["codes"]) == 4
    assert torch.equal(both["codes"][:2], plain["codes"]) and torch.equal(both["images"][:2], plain["images"])
    assert torch.equal(both["images"][2:], plain["images"].flip(-1))  # mirrored small copies
    assert not torch.allclose(both["codes"][2:], plain["codes"])      # mirrored photos get their own codes
    assert both["paths"][2:] == [p + "#mirror" for p in plain["paths"]]
