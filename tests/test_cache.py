import os

import pytest
import torch

from generator import util
from generator.cache import Cache


def test_hit_miss_and_batched(tmp_path):
    c = Cache(tmp_path)
    assert c.get({"a": 1}) is None and c.misses == 1
    c.put({"a": 1}, {"t": torch.arange(3)})
    assert torch.equal(c.get({"a": 1})["t"], torch.arange(3)) and c.hits == 1
    calls = []

    def compute(idx):
        calls.append(list(idx))
        return [torch.tensor(i) for i in idx]

    keys = [{"a": i} for i in range(4)]
    out = c.batched(keys, compute)
    assert calls == [[0, 2, 3]]  # key {"a": 1} already held a value: only the misses, in one batch
    assert isinstance(out[1], dict) and [int(out[i]) for i in (0, 2, 3)] == [0, 2, 3]
    calls.clear()
    c.batched(keys, compute)
    assert calls == []  # everything cached: no work


def test_hits_on_results_an_earlier_run_stored_are_counted_apart(tmp_path):
    """``earlier_hits``: hits on files this Cache did not write (what makes a stage warm for the plan's history)."""
    first = Cache(tmp_path)
    first.put({"a": 1}, torch.ones(1))
    assert first.get({"a": 1}) is not None and (first.hits, first.earlier_hits) == (1, 0)  # its own result
    second = Cache(tmp_path)  # the next run
    second.put({"b": 2}, torch.ones(1))
    assert second.get({"a": 1}) is not None and second.get({"b": 2}) is not None
    assert (second.hits, second.earlier_hits) == (2, 1)


def test_key_order_does_not_matter_and_values_do(tmp_path):
    c = Cache(tmp_path)
    assert c.path({"a": 1, "b": 2}) == c.path({"b": 2, "a": 1})
    assert c.path({"a": 1, "b": 2}) != c.path({"a": 1, "b": 3})


def test_interrupted_write_leaves_nothing_and_resumes(tmp_path, monkeypatch):
    c = Cache(tmp_path)
    real_replace = os.replace

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(util.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        c.put({"k": 1}, torch.ones(10))
    monkeypatch.setattr(util.os, "replace", real_replace)
    assert not c.path({"k": 1}).exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp file left either
    assert c.get({"k": 1}) is None
    c.put({"k": 1}, torch.ones(10))
    assert torch.equal(c.get({"k": 1}), torch.ones(10))


def test_damaged_file_is_a_miss(tmp_path):
    c = Cache(tmp_path)
    p = c.path({"x": 1})
    p.parent.mkdir(parents=True)
    p.write_bytes(b"garbage")
    assert c.get({"x": 1}) is None


def test_md_escape():
    s = util.md_escape("A *b* [c](d) <script>|x $y$ (z)")
    assert "<script>" not in s and "&lt;script&gt;" in s
    assert r"\*b\*" in s and r"\[c\]" in s and r"\|" in s
    assert "$" not in s and "&#36;y&#36;" in s and "(z)" in s and r"\(" not in s


def test_a_result_the_cache_could_not_read_back_is_refused_when_stored(tmp_path):
    """torch.load(weights_only=True) refuses NumPy values: such a result would be stored, then missed
    and recomputed on every later build. put() says so instead, naming where the value sits."""
    import numpy as np

    c = Cache(tmp_path)
    for bad in ({"sel": np.zeros(3)}, {"layers": [{"rho": np.float64(0.5)}]}):
        with pytest.raises(TypeError, match="NumPy"):
            c.put({"k": 1}, bad)
    assert not list(tmp_path.glob("*/*.pt"))  # nothing written
    good = {"sel": torch.from_numpy(np.zeros(3)), "n": 3, "names": ["a"], "x": 0.5}
    c.put({"k": 2}, good)
    back = Cache(tmp_path).get({"k": 2})
    assert back is not None and torch.equal(back["sel"], good["sel"]) and back["names"] == ["a"]
