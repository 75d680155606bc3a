"""The one cache-key helper (generator.cache.key) and the one compute call (generator.executor.compute)."""
from __future__ import annotations

import pytest
import torch

from generator import cache as cache_mod
from generator.cache import Cache, clear_fingerprints, code_fingerprint, key, module_closure
from generator.executor import compute, tick


@pytest.fixture
def patched_source(monkeypatch):
    """Replace the source text of package modules (as an edit of the code would) for the test."""
    edits: dict[str, str] = {}
    real = cache_mod._module_source

    def source(name: str) -> str:
        return real(name) + edits.get(name, "")

    monkeypatch.setattr(cache_mod, "_module_source", source)
    clear_fingerprints()
    yield edits
    clear_fingerprints()


class _Model:
    """The two things key() reads from a loaded model."""

    def __init__(self, weights: str, pre: str) -> None:
        self.cache_id = f"toy@{weights}"
        self.spec = type("Spec", (), {"preprocess": type("Pre", (), {"key": pre})()})()


def _f(x):  # a computing function of this test module
    return x


def test_key_holds_weights_preprocessing_and_code():
    k = key("maps", model=_Model("w1", "pre1"), code=_f, image="abc")
    assert k["model"] == "toy@w1" and k["input"] == "pre1" and k["image"] == "abc" and len(k["code"]) == 20
    assert key("maps", model=_Model("w2", "pre1"), code=_f, image="abc") != k
    assert key("maps", model=_Model("w1", "pre2"), code=_f, image="abc") != k
    assert key("maps", model=_Model("w1", "pre1"), code=_f, image="abd") != k
    with pytest.raises(ValueError):
        key("maps", model=_Model("w1", "pre1"), code=_f, input="x")  # a part may not override what key() sets


def test_closure_follows_imports_at_any_depth_and_inside_functions():
    closure = module_closure("generator.stages.attribution")
    # stages.attribution → methods.attribution → methods.relu_rules (two steps down)
    assert {"generator.methods.attribution", "generator.methods.relu_rules", "generator.methods.base"} <= set(closure)
    # modules that cannot change a value are left out
    assert "generator.progress" not in closure and "generator.util" not in closure
    # generator.images imports torchvision's labels inside a function: still found from models
    assert "generator.models" in module_closure("generator.stages.attribution")


def test_fingerprint_changes_with_the_code_a_value_depends_on(patched_source):
    from generator.stages import attribution

    before = code_fingerprint(attribution._maps_chunk)
    patched_source["generator.progress"] = "\n# a progress-bar tweak\n"
    clear_fingerprints()
    assert code_fingerprint(attribution._maps_chunk) == before  # CACHE_NEUTRAL: no recompute
    patched_source["generator.methods.relu_rules"] = "\n# a fix in the rectifier rules\n"
    clear_fingerprints()
    after = code_fingerprint(attribution._maps_chunk)
    assert after != before
    # a value that does not use the rectifier rules keeps its key
    from generator.metrics import bootstrap

    assert "generator.methods.relu_rules" not in module_closure(bootstrap.__name__)


def test_no_stage_builds_a_key_by_hand():
    """Every key comes from cache.key(): no stage writes a {"what": …} dict or calls the cache directly."""
    import re
    from pathlib import Path

    root = Path(cache_mod.__file__).parent
    offenders = []
    for p in sorted((root / "stages").glob("*.py")) + [root / "build.py"]:
        src = p.read_text(encoding="utf-8")
        for pat in (r"\{\s*\"what\"\s*:", r"\bCODE_VERSION\b", r"cache\.(batched|get_or_compute)\(",
                    r"\bdistributed\(ctx\)", r"methods_fingerprint"):
            if re.search(pat, src):
                offenders.append(f"{p.name}: {pat}")
    assert offenders == []


class _Ctx:
    def __init__(self, root, batch_size=4):
        self.cache = Cache(root)
        self.batch_size = batch_size


def _square(xs: list[int]) -> list[int]:
    tick(len(xs))
    return [x * x for x in xs]


def test_compute_reads_hits_computes_misses_and_resumes(tmp_path):
    ctx = _Ctx(tmp_path / "c")
    keys = [key("sq", model=None, code=_square, i=i) for i in range(7)]
    calls = []

    def fn(xs):
        calls.append(list(xs))
        return _square(xs)

    assert compute(ctx, keys[:3], fn, lambda idx: ([i for i in idx],), what="sq") == [0, 1, 4]
    got = compute(ctx, keys, fn, lambda idx: ([i for i in idx],), what="sq", chunk=2)
    assert got == [i * i for i in range(7)]
    assert calls == [[0, 1, 2], [3, 4], [5, 6]]  # hits are not recomputed; misses in steps of 2
    calls.clear()
    assert compute(ctx, keys, fn, lambda idx: ([i for i in idx],), what="sq") == got and calls == []


def test_compute_halves_a_chunk_that_runs_out_of_memory(tmp_path):
    ctx = _Ctx(tmp_path / "c")
    keys = [key("sq", model=None, code=_square, i=i) for i in range(6)]
    sizes = []

    def fn(xs):
        sizes.append(len(xs))
        if len(xs) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return _square(xs)

    assert compute(ctx, keys, fn, lambda idx: (list(idx),), what="sq") == [i * i for i in range(6)]
    assert sizes == [6, 3, 1, 2, 3, 1, 2]
    # any other error is raised as it is
    keys2 = [key("sq2", model=None, code=_square, i=i) for i in range(4)]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        compute(ctx, keys2, lambda xs: (_ for _ in ()).throw(RuntimeError("shape mismatch")),
                lambda idx: (list(idx),), what="sq")


def test_dataclass_results_round_trip_through_the_cache(tmp_path):
    from generator.metrics.bootstrap import Interval

    c = Cache(tmp_path / "c")
    k = key("iv", model=None, code=Interval, n=1)
    c.put(k, {"ci": [Interval(0.5, 0.25, 0.75, 20)], "t": torch.arange(3)})
    got = Cache(tmp_path / "c").get(k)
    assert got["ci"] == [Interval(0.5, 0.25, 0.75, 20)] and torch.equal(got["t"], torch.arange(3))


def test_a_method_fix_recomputes_the_gallery_and_the_findings_maps_alike(tmp_path, patched_source, monkeypatch,
                                                                         one_thread):
    """The stale-cache defect: a change to methods/attribution.py must recompute the galleries' maps
    *and* the findings' maps (before, the galleries kept serving the old ones), and both must agree."""
    from generator.methods.attribution import ATTRIBUTION_METHODS, make
    from generator.stages import attribution as gallery
    from generator.stages import findings
    from generator.models import REGISTRY, load_model
    from tests.test_attribution_stage import TINY, _ctx, _items

    monkeypatch.setitem(REGISTRY, TINY.name, TINY)
    model = load_model(TINY, allow_random=True, seed=0)  # stands in for a trained model (test only)
    items = _items(3)
    ctx = _ctx(tmp_path, model, items)
    targets = ctx.targets(model)
    x = ctx.batch(model, items)
    two = torch.stack([targets, (targets + 1) % 1000], 1)  # the findings' (top-1, other) pair per photo
    s = {"method_params": {}}
    calls = []
    cls = ATTRIBUTION_METHODS["saliency"]
    real = cls.attribute
    monkeypatch.setattr(cls, "attribute", lambda self, xx, t: (calls.append(len(xx)), real(self, xx, t))[1])

    def both():
        calls.clear()
        g = gallery._maps(ctx, model, "saliency", make("saliency", model, batch_size=8), targets)
        f = findings.trained_maps(ctx, model, {"saliency": make("saliency", model)}, items, x, two,
                                  findings.Timing(), {"saliency": len(items)}, s)[0]["saliency"]  # (maps, signed)
        return torch.stack([r["heatmap"] for r in g]), f, sum(calls)

    g1, f1, n1 = both()
    assert n1 > 0
    g2, f2, n2 = both()
    assert n2 == 0  # nothing changed: all cache hits
    patched_source["generator.methods.attribution"] = "\n# a bug fix\n"
    clear_fingerprints()
    g3, f3, n3 = both()
    assert n3 == n1  # both the gallery's and the findings' maps were computed again
    torch.testing.assert_close(g3, f3[:, 0], rtol=1e-5, atol=1e-7)  # the same map for the same photo and class
    torch.testing.assert_close(g3, g1)
