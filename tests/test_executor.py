"""Scale-out with Ray (generator/executor.py): a build with ``--executor ray`` on a local
2-worker cluster writes exactly the files of a local build, also when a worker dies."""
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from generator.build import run_build
from generator.config import ROOT, Config
from generator.metrics import unit_stats

PHOTOS = ["tabby-cat-chelsea.jpg", "espresso.jpg", "dahlia.jpg"]


def test_merged_chunk_states_equal_one_stream():
    """Top-k (with ties), histogram counts and predictions of chunks merged in order equal
    those of one pass over all photos (the property the Ray atlas relies on)."""
    g = torch.Generator().manual_seed(0)
    n, C, k = 12, 5, 4
    best = torch.randn(n, C, generator=g) * torch.logspace(-2, 2, n)[:, None]
    best[3] = best[1]  # ties between photos
    best[8] = best[1]
    pos = torch.randint(0, 7, (n, C, 2), generator=g)

    def stream(ids):
        st = unit_stats.AtlasState.empty({"l": C}, k, n, (8, 4))
        for s in range(0, len(ids), 2):
            b = torch.tensor(ids[s : s + 2])
            st.topk["l"].update_reduced(best[b], pos[b], b)
            st.hist["l"].update(best[b])
            st.pred[b] = b
            st.done += len(b)
        return st

    whole = stream(list(range(n)))
    merged = unit_stats.merge_states([stream([0, 1, 2, 3]), stream([4, 5]), stream(list(range(6, n)))])
    for a, b in [(whole.topk["l"].values, merged.topk["l"].values), (whole.topk["l"].index, merged.topk["l"].index),
                 (whole.topk["l"].pos, merged.topk["l"].pos), (whole.hist["l"].counts, merged.hist["l"].counts),
                 (whole.hist["l"].exp, merged.hist["l"].exp), (whole.pred, merged.pred),
                 (whole.hist["l"].active, merged.hist["l"].active)]:
        assert torch.equal(a, b)
    assert torch.allclose(whole.hist["l"].sum, merged.hist["l"].sum, rtol=1e-12)
    assert (merged.done, merged.hist["l"].n) == (n, n)


def test_local_executor_computes_only_the_misses_in_chunks_and_caches_them(tmp_path):
    from generator.cache import Cache
    from generator.executor import LocalExecutor

    cache = Cache(tmp_path)
    keys = [{"what": "square", "i": i} for i in range(7)]
    cache.put(keys[2], torch.tensor(4))
    calls = []

    def args_of(idx):
        calls.append(list(idx))
        return (idx,)

    got = LocalExecutor().cached(cache, keys, 2, args_of, lambda idx: [torch.tensor(i * i) for i in idx])
    assert [int(v) for v in got] == [i * i for i in range(7)]
    assert calls == [[0, 1], [3, 4], [5, 6]]
    assert all(cache.path(k).is_file() for k in keys)


def test_an_unknown_executor_is_a_config_error(tmp_path):
    from generator.config import ConfigError

    cfg = Config.load()
    cfg.override(executor="spark", out=str(tmp_path / "out"), cache=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="executor"):
        run_build(cfg, say=lambda m: None)


# ---------------------------------------------------------------------------------
# builds (slow: a local Ray cluster)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(ROOT / "data" / "images" / name, d / name)
    # a labelled ImageFolder (WordNet-id folders + README table) for unit selectivity and accuracy
    lab = labelled(d)
    lab.mkdir()
    (lab / "README.md").write_text("| wnid | index | label |\n|---|---|---|\n"
                                              "| n02123045 | 281 | tabby |\n| n07920052 | 967 | espresso |\n")
    for wnid, name in (("n02123045", PHOTOS[0]), ("n07920052", PHOTOS[1])):
        (lab / wnid).mkdir()
        shutil.copy(ROOT / "data" / "images" / name, lab / wnid / name)
    return d


def labelled(photos: Path) -> Path:
    """The labelled folder that sits beside the photo folder."""
    return photos.parent / f"{photos.name}-labelled"


def tiny_config(folder: Path, photos: Path, **build) -> Config:
    cfg = Config.load()
    cfg.override(models=["efficientnet_lite0"], images=str(photos), out=str(folder / "out"),
                 cache=str(folder / "cache"), stages=["attribution", "findings", "atlas"], offline=True, device="cpu",
                 batch_size=1, **build)
    cfg.data["attribution"] = {"methods": ["saliency", "gradcam", "integrated_gradients"], "gallery_images": 2,
                               "neurons": 0, "method_params": {"integrated_gradients": {"steps": 8}}}
    cfg.data["atlas"] = {"folder": str(photos), "max_channels_per_layer": 2, "top_k": 2, "layers": ["stage3"],
                         "batch_size": 1, "projections": False}
    # findings on the two labelled photos (no ../shared): every per-photo check, units and accuracy
    cfg.data["findings"] = {"probe_folder": str(labelled(photos)), "probe_sample": "",
                            "accuracy_folder": str(labelled(photos)), "selectivity_images": 2,
                            "methods": ["saliency", "gradcam", "integrated_gradients"], "expensive_images": 2,
                            "sanity_images": 2, "sanity_expensive_images": 1, "cascade_steps": 2,
                            "faithfulness_steps": 3, "fragility_steps": 2,
                            "method_params": {"integrated_gradients": {"steps": 4}}}
    return cfg


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a build's output, less the "About this build" page (this run's clock: date, speeds, times)."""
    from generator.plan import PAGE

    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != PAGE}


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, photos):
    """A local build with one thread, as the Ray workers run (the order of float sums in a
    multi-threaded convolution can move the last bits of a map)."""
    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_build(tiny_config(folder, photos), say=lambda m: None).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    return files(folder / "out")


@pytest.fixture(scope="module")
def cluster():
    """One local 2-worker Ray cluster for the module (Ray starts slowly)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


#: what must run as Ray tasks (the executor's ``what`` of each fanned-out computation)
FANNED_OUT = ["saliency efficientnet_lite0", "atlas efficientnet_lite0", "findings maps saliency",
              "findings randomisation", "findings deletion/insertion", "findings invariance saliency",
              "findings fragility attack", "findings fragility gradcam", "findings units",
              "findings accuracy"]


def ray_build(folder: Path, photos: Path) -> tuple[dict[str, bytes], list[str]]:
    from generator.executor import RayExecutor

    msgs: list[str] = []
    fanned: list[str] = []
    run_chunks = RayExecutor.run_chunks

    def recording(self, tasks, what=""):
        if tasks:
            fanned.append(what)
        return run_chunks(self, tasks, what)

    RayExecutor.run_chunks = recording
    try:
        res = run_build(tiny_config(folder, photos, executor="ray"), say=msgs.append)
    finally:
        RayExecutor.run_chunks = run_chunks
    assert res.exit_code == 0
    assert [w for w in FANNED_OUT if not any(f.startswith(w) for f in fanned)] == [], fanned
    assert res.ctx.timer.times.get("atlas stream efficientnet_lite0", 0) > 0  # the benchmark reads it
    assert any(m.startswith("executor: ray, 2 worker slot(s)") for m in msgs), msgs
    assert res.ctx.cache.misses > 0  # computed here, not read from a shared cache
    return files(folder / "out"), msgs


@pytest.mark.slow
def test_ray_build_writes_the_files_of_a_local_build(tmp_path, photos, local_build, cluster):
    got, _ = ray_build(tmp_path, photos)
    assert len(local_build) > 10
    assert sorted(got) == sorted(local_build)
    assert [name for name in got if got[name] != local_build[name]] == []


def _task_pids() -> list[int]:
    """Ray workers running a chunk (Ray titles them ``ray::_ray_task``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_chunk(tmp_path, photos, local_build, cluster):
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        while not stop.is_set() and not killed:
            for pid in _task_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        got, msgs = ray_build(tmp_path, photos)
    finally:
        stop.set()
        t.join()
    assert killed, "no chunk was seen running"
    retried = [m for m in msgs if "died" in m and "running that chunk again" in m]
    assert len(retried) == 1, msgs
    assert sorted(got) == sorted(local_build)
    assert [name for name in got if got[name] != local_build[name]] == []


def test_network_work_is_counted_per_model_once_and_per_stage(tmp_path):
    """compute() counts its model work for the model its keys name; a block inside another model's
    block is counted once (for the outer one); the stage timer splits it per stage."""
    from types import SimpleNamespace

    from generator import executor
    from generator.cache import Cache
    from generator.util import StageTimer

    timer = StageTimer(network=executor.network_seconds, by_model=executor.network_by_model)
    ctx = SimpleNamespace(cache=Cache(tmp_path), executor=executor.LocalExecutor(), batch_size=2)
    a, b = executor.model_tag(["net-a", 1]), executor.model_tag(["net-b", 2])

    def slow(sec):
        def fn(idx):
            time.sleep(sec)
            return [torch.tensor(i) for i in idx]
        return fn

    with timer.stage("one"):
        executor.compute(ctx, [{"what": "x", "model": ["net-a", 1], "i": i} for i in range(2)], slow(0.05),
                         lambda idx: (idx,), what="a")
    with timer.stage("two"):
        executor.compute(ctx, [{"what": "y", "model": ["net-b", 2], "i": i} for i in range(2)], slow(0.12),
                         lambda idx: (idx,), what="b")
        with executor.network(a):  # an outer block of model a holds a compute call of model b: counted for a
            executor.compute(ctx, [{"what": "z", "model": ["net-b", 2], "i": i} for i in range(2)], slow(0.05),
                             lambda idx: (idx,), what="c")
        executor.compute(ctx, [{"what": "y", "model": ["net-b", 2], "i": i} for i in range(2)], slow(1.0),
                         lambda idx: (idx,), what="hits")  # all hits: no network work
    with timer.stage("three"):  # photo decoding inside a model's block is not its network work
        def decode_then_run(idx):
            time.sleep(0.3)
            executor.not_network(0.3)
            return [torch.tensor(i) for i in idx]
        executor.compute(ctx, [{"what": "d", "model": ["net-a", 1], "i": i} for i in range(2)], decode_then_run,
                         lambda idx: (idx,), what="decode")
    assert timer.network_by_model["three"][a] < 0.15 and timer.network["three"] < 0.15
    one, two = timer.network_by_model["one"], timer.network_by_model["two"]
    assert set(one) == {a} and 0.05 <= one[a] < 0.5
    assert 0.12 <= two[b] < 0.6 and 0.05 <= two[a] < 0.5
    assert timer.network["two"] == pytest.approx(two[a] + two[b], abs=0.02)


def test_the_plan_compares_each_model_and_stage_with_its_measured_network_work():
    from generator import plan

    p = plan.Plan(["attribution", "atlas"], ["m1", "m2"],
                  [plan.Row("m1", "attribution", plan.Work(), 100.0), plan.Row("m2", "attribution", plan.Work(), 40.0),
                   plan.Row("m1", "atlas", plan.Work(), 0.2), plan.Row("m2", "atlas", plan.Work(), 0.1)], {}, None)
    table = p.compare_models({"attribution": {"m1": 120.0, "m2": 30.0}, "atlas": {"m1": 0.3}})
    rows = table.splitlines()
    assert rows[2] == "| attribution | 1.7 min / 2.0 min (1.20) | 40 s / 30 s (0.75) |"
    assert len(rows) == 3  # the atlas: under a second either way, left out
    assert any("(1.20)" in line for line in p.model_lines({"attribution": {"m1": 120.0}}))
