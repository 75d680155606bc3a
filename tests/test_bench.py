"""The Captum comparison benchmark runs end to end on a tiny model and prints a row per
method (no timing is checked: it is a benchmark, not a test)."""
import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("captum")
ROOT = Path(__file__).resolve().parent.parent
# model, method, ours img/s, Captum img/s, ours/Captum, plain/Captum, ours/plain′, Captum's work (∇ and F
# images), agreement
ROW = r"^TAG\s+(\w+)\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+[\d.]+x\s+[\d.]+x\s+(\d+)∇ (\d+)F\s+(.*)$"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "bench" / "bench_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_captum_benchmark_prints_a_row_per_method(capsys):
    bench = load_bench()
    assert bench.main(["--models", "tiny", "--size", "64", "--images", "2", "--reps", "1", "--device", "cpu",
                       "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m.group(0) for m in re.finditer(ROW.replace("TAG", r"tiny\*"), out, re.M)}
    assert set(rows) == set(bench.CAPTUM_METHODS)
    # the tiny net has only nn.ReLU modules: Captum computes the same maps there
    for name in ("saliency", "guided_backprop", "deconvnet", "gradcam", "integrated_gradients", "occlusion"):
        err = float(re.search(r"rel\. error (\S+)", rows[name]).group(1))
        assert err < 1e-2, rows[name]
    assert "Captum differs: its own noise" in rows["smoothgrad"]
    # the plain column runs Captum's counted work: one input-gradient pass per photo for the gradient methods,
    # one per noisy copy / path step, forward only for Grad-CAM (input needs no gradient) and occlusion
    # (the photo, then 2×2 windows of 32 px on 64 px)
    work = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(ROW.replace("TAG", r"tiny\*"), out, re.M)}
    light = {n: bench.method_params(n, False) for n in bench.CAPTUM_METHODS}
    assert work == {"saliency": (2, 0), "guided_backprop": (2, 0), "deconvnet": (2, 0), "gradcam": (0, 2),
                    "smoothgrad": (2 * light["smoothgrad"]["samples"], 0),
                    "integrated_gradients": (2 * light["integrated_gradients"]["steps"], 0),
                    "occlusion": (0, 2 * (1 + 4))}


def test_captum_benchmark_says_where_captum_misses_relu6(capsys):
    bench = load_bench()
    assert bench.main(["--models", "tiny6", "--size", "32", "--images", "1", "--reps", "1", "--device", "cpu",
                       "--threads", "1", "--methods", "guided_backprop", "deconvnet", "saliency"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m.group(4) for m in re.finditer(ROW.replace("TAG", r"tiny6\*"), out, re.M)}
    assert set(rows) == {"guided_backprop", "deconvnet", "saliency"}
    for name in ("guided_backprop", "deconvnet"):
        assert rows[name].startswith("Captum differs: it hooks only nn.ReLU modules (0 of 2 rectifier calls"), rows[name]
    assert rows["saliency"].startswith("rel. error")


def test_generator_never_imports_captum():
    for path in (ROOT / "generator").rglob("*.py"):
        assert "captum" not in path.read_text(encoding="utf-8"), path


def test_pass_count_floor_adds_images_times_measured_seconds(tmp_path, capsys, monkeypatch, one_thread):
    spec = importlib.util.spec_from_file_location("count_passes", ROOT / "bench" / "count_passes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    counts = tmp_path / "counts.json"
    counts.write_text('[["findings", "faithfulness_results", 224, false, 1000], ["findings", "trained_maps", 224, true, 200],'
                      ' ["atlas", "-", 260, false, 50], ["x", "-", 999, false, 7]]')
    speed = {"efficientnet_lite0": (0.01, 0.03), "efficientnet_lite2": (0.02, 0.05)}
    monkeypatch.setattr(mod, "per_image_seconds", lambda name: speed[name])
    assert mod.main(["floor", "--counts", str(counts), "--threads", "1"]) == 0  # (``one_thread`` restores the count)
    out = capsys.readouterr().out
    # 1000 × 0.01 + 200 × 0.03 + 50 × 0.02 = 17 s; the 999-px row matches no listed model and is left out
    assert "floor of the counted work: 17 s" in out
    assert re.search(r"trained_maps\s+efficientnet_lite0\s+0\s+200\s+6\.0", out)


def test_plain_runner_does_exactly_the_counted_work():
    bench = load_bench()
    torch = pytest.importorskip("torch")
    net = bench.TinyNet().eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    for work in ((7, 0), (0, 5), (40, 33)):
        assert bench.network_work(net, bench.plain_runner(net, x, t, work, batch=16)) == work
