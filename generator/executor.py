"""Where the model work runs: in this process, or fanned out over Ray — through one call.

:func:`compute` is the one way a stage gets keyed results: ``compute(ctx, keys, fn, args_of)``
reads the cache hits and computes the misses in chunks, each by ``fn(*args_of(indices))``
(a module-level function of the model, settings and CPU tensors, one result per index, in
order), with a progress bar (``fn`` calls :func:`tick` per photo or batch it finishes) and,
here, out-of-memory back-off (a chunk that runs out of memory is split in halves). Whether
the chunks run here or as Ray tasks is the executor's business, never the stage's. Every
result is written to the content cache (by the worker, and by the driver when the worker's
file is not visible to it) and read back from there, so a distributed build and a local
build write the same pages and figures, and an interrupted one resumes chunk by chunk.

* :class:`LocalExecutor` (default): calls ``fn`` here, chunk after chunk; needs no Ray.
* :class:`RayExecutor` (``--executor ray``; ``--ray-address`` joins an existing cluster, a
  local one is started otherwise): one task per chunk, one GPU per task where the cluster
  has GPUs (else one CPU), workers with ``OMP_NUM_THREADS=1`` and this checkout's code. A
  chunk whose worker died is run again (up to ``RETRIES`` times), with one line saying so.

Ray is imported only when a :class:`RayExecutor` is made.

:func:`network` times model work: the build's clock of network seconds (:func:`network_seconds`)
runs while ``fn`` computes misses (or while the driver waits for Ray's chunks) and while the plan
calibrates; :func:`not_network` takes out what such a function knows is not network work (the
atlas stream's photo decoding). Everything else a stage spends — cache reads and writes,
bootstrap intervals, drawing, encoding and writing figures, pages — is the rest (the end-of-build
breakdown and the page "About this build").
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .cache import LOCK_CHUNK, Cache

CACHE_NEUTRAL = True  # where work runs does not change its results (see generator.cache.key)
ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Runs every chunk in this process, in order."""

    distributed = False
    workers = 1

    def run_chunks(self, tasks: Sequence[tuple], what: str = "") -> list[Any]:
        """Each task ``(fn, args, cache_root, cache_enabled, keys)`` through :func:`_store_chunk`."""
        return [_store_chunk(*t) for t in tasks]

    def cached(self, cache: Cache, keys: list[dict], size: int, args_of: Callable[[list[int]], tuple],
               fn: Callable[..., list[Any]], what: str = "") -> list[Any]:
        """Results for ``keys``: cache hits as they are; the misses in chunks of ``size``
        (indices into ``keys``), each computed by ``fn(*args_of(chunk))`` (one result per
        key of the chunk, in order) and written to the cache."""
        out = [cache.get(k) for k in keys]
        todo = split([i for i, o in enumerate(out) if o is None], size)
        results = self.run_chunks([(fn, args_of(idx), cache.root, cache.enabled, [keys[i] for i in idx])
                                   for idx in todo], what)
        for idx, res in zip(todo, results, strict=True):
            for i, r in zip(idx, res, strict=True):
                out[i] = r if (not cache.enabled or cache.path(keys[i]).is_file()) else cache.put(keys[i], r)
        return out

    def close(self) -> None:
        pass


def _store_chunk(fn: Callable[..., list[Any]], args: tuple, root: Path, enabled: bool, keys: list[dict]) -> list[Any]:
    """Run one chunk and write its results to the cache (on the worker)."""
    res = fn(*args)
    if len(res) != len(keys):
        raise RuntimeError(f"a chunk of {len(keys)} photos gave {len(res)} results")
    cache = Cache(root, enabled)
    for k, r in zip(keys, res):
        cache.put(k, r)
    return res


def _ray_task(fn, root, enabled, keys, device_type, *args):  # pragma: no cover - runs in a Ray worker
    import torch

    from .allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = tuple(_to_device(a, device_type) for a in args)
    return [_to_device(r, "cpu") for r in _store_chunk(fn, args, root, enabled, keys)]


def _to_device(obj, device_type: str):
    """Models (anything with ``.to``) onto the worker's device: its GPU when Ray gave it one."""
    if device_type == "cuda" and hasattr(obj, "to") and hasattr(obj, "net"):
        return obj.to("cuda")
    return obj


class RayExecutor(LocalExecutor):
    """Fans chunks out as Ray tasks; see the module docstring."""

    distributed = True
    RETRIES = 3

    def __init__(self, address: str = "", say: Callable[[str], None] = print, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is in requirements.txt
            raise RuntimeError("--executor ray needs Ray: pip install 'ray>=2.9' (or the [ray] extra)") from None
        self.ray, self.say = ray, say
        env = {"env_vars": {"OMP_NUM_THREADS": "1", "CNNVIS_NO_PROGRESS": "1"}}
        if address:
            # an existing cluster: ship this checkout's code (not the data, caches or the venv)
            env.update(working_dir=str(ROOT), excludes=[".venv", ".cache", "site", "site_src", ".rehearsal",
                                                        "data/images", ".git", "*.pt", "*.pth"])
        else:
            env["env_vars"]["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address or None, num_cpus=None if address else num_cpus, runtime_env=env,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            self._started = True
            self._env = None
        else:
            self._env = env  # joined a Ray session someone else started (tests): the env goes per task
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        self.workers = self.gpus or int(res.get("CPU", 1))
        self._remote = ray.remote(max_retries=0)(_ray_task)
        say(f"executor: ray, {self.workers} worker slot(s) ({'one GPU' if self.gpus else 'one CPU'} per task)")

    def run_chunks(self, tasks: Sequence[tuple], what: str = "") -> list[Any]:
        ray = self.ray
        if not tasks:
            return []
        opts: dict[str, Any] = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        if self._env is not None:
            opts["runtime_env"] = self._env
        device = "cuda" if self.gpus else "cpu"
        shared: dict[int, Any] = {}

        def put(a):  # a model goes to the object store once per call, not once per chunk
            if hasattr(a, "net"):
                if id(a) not in shared:
                    shared[id(a)] = ray.put(a)
                return shared[id(a)]
            return a

        def submit(i: int):
            inner, args, *rest = tasks[i]
            # arguments at the top level, so Ray resolves the object-store references among them
            return self._remote.options(**opts).remote(inner, *rest, device, *(put(a) for a in args))

        refs = {submit(i): i for i in range(len(tasks))}
        tries = [0] * len(tasks)
        out: list[Any] = [None] * len(tasks)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                i = refs.pop(ref)
                try:
                    out[i] = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError) as e:
                    tries[i] += 1
                    if tries[i] > self.RETRIES:
                        raise RuntimeError(f"{what} chunk {i + 1}/{len(tasks)}: its worker died "
                                           f"{tries[i]} times; giving up") from e
                    self.say(f"executor: the worker of {what} chunk {i + 1}/{len(tasks)} died "
                             f"({type(e).__name__}); running that chunk again (try {tries[i] + 1})")
                    refs[submit(i)] = i
        return out

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def distributed(ctx) -> bool:
    """Whether ``ctx`` (a build context) fans chunks out (contexts without an executor: no)."""
    return bool(getattr(getattr(ctx, "executor", None), "distributed", False))


# ------------------------------------------------------------------------------ the network clock

_CLOCK = {"seconds": 0.0, "depth": 0}
_BY_MODEL: dict[str, float] = {}  # model tag → network seconds of the compute calls whose keys name that model
_TAGGED = {"open": False, "less": 0.0}


@contextlib.contextmanager
def network(model: str | None = None):
    """Count the block's wall time as network work (nested blocks count once). ``model`` (a tag,
    :func:`model_tag`) also counts it for that model, unless an outer block already does."""
    _CLOCK["depth"] += 1
    tag = model is not None and not _TAGGED["open"]
    if tag:
        _TAGGED["open"], _TAGGED["less"] = True, 0.0
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        _CLOCK["depth"] -= 1
        if _CLOCK["depth"] == 0:
            _CLOCK["seconds"] += dt
        if tag:
            _TAGGED["open"] = False
            _BY_MODEL[model] = _BY_MODEL.get(model, 0.0) + dt - _TAGGED["less"]


def not_network(seconds: float) -> None:
    """Take ``seconds`` spent inside a :func:`network` block on other work (decoding photos) out of it."""
    if _CLOCK["depth"] > 0:
        _CLOCK["seconds"] -= float(seconds)
    if _TAGGED["open"]:
        _TAGGED["less"] += float(seconds)


def network_seconds() -> float:
    """Network seconds counted in this process so far (finished blocks)."""
    return _CLOCK["seconds"]


def network_by_model() -> dict[str, float]:
    """Network seconds per model tag counted so far (the compute calls whose keys name a model)."""
    return dict(_BY_MODEL)


def model_tag(key_model) -> str:
    """The tag of a cache key's ``model`` part (a loaded model's ``cache_id``, or a spec's description)."""
    return json.dumps(key_model, sort_keys=True, default=str)


def _tag_of(keys: list[dict], idx: list[int]) -> str | None:
    k = keys[idx[0]] if idx else None
    return model_tag(k["model"]) if isinstance(k, dict) and "model" in k else None


# ------------------------------------------------------------------------------ the one call

_BAR: contextvars.ContextVar = contextvars.ContextVar("generator_executor_bar", default=None)


def tick(n: int = 1) -> None:
    """Advance the progress bar of the :func:`compute` call running ``fn`` (no-op elsewhere,
    e.g. in a Ray worker)."""
    bar = _BAR.get()
    if bar is not None:
        bar.update(n)


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _backoff(fn: Callable[..., list[Any]], args_of: Callable[[list[int]], tuple], idx: list[int]) -> list[Any]:
    """``fn(*args_of(idx))``; on out-of-memory the chunk is split in halves (down to one key)."""
    try:
        return list(fn(*args_of(idx)))
    except (RuntimeError, MemoryError) as e:
        if len(idx) < 2 or not (_is_oom(e) or isinstance(e, MemoryError)):
            raise
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(idx) // 2
    return _backoff(fn, args_of, idx[:half]) + _backoff(fn, args_of, idx[half:])


def compute(ctx, keys: list[dict], fn: Callable[..., list[Any]], args_of: Callable[[list[int]], tuple], *,
            what: str, unit: int | None = None, chunk: int = 0, total: int | None = None,
            bar_unit: str = "img", here: bool = False) -> list[Any]:
    """Results for ``keys`` (see the module docstring): hits from ``ctx.cache``, misses by
    ``fn(*args_of(idx))`` through ``ctx.executor``.

    ``unit``: keys per indivisible piece of work (default ``ctx.batch_size``: keys of photos;
    1 for keys of layers or blocks); a distributed chunk is a multiple of it. ``chunk``: keys per
    step of a local run, each step stored before the next starts (0: all misses in one step), so
    an interrupted build resumes within the call. ``total``: the bar's total (default: the misses;
    give it when ``fn`` ticks per photo while a key holds several). ``here``: run in this process
    whatever the executor (work on objects only this process holds, e.g. the DGN-AM generator on
    the build's device); ``fn`` may then be any callable."""
    cache, executor = ctx.cache, getattr(ctx, "executor", None) or LocalExecutor()
    if getattr(executor, "distributed", False) and not here:
        import torch

        cpu = lambda a: a.cpu() if isinstance(a, torch.Tensor) else a  # noqa: E731
        size = chunk_size(executor, len(keys), ctx.batch_size if unit is None else unit)
        with network(_tag_of(keys, list(range(len(keys))))):  # the driver waits for the workers' model work
            return executor.cached(cache, keys, size, lambda idx: tuple(cpu(a) for a in args_of(idx)), fn,
                                   what=what)
    out: list[Any] = [cache.get(k) for k in keys]
    misses = [i for i, o in enumerate(out) if o is None]
    if not misses:
        return out
    from .progress import bar as make_bar

    bar = make_bar(total=total if total is not None else len(misses), desc=what, unit=bar_unit)
    token = _BAR.set(bar)
    try:
        step = chunk if chunk > 0 else len(misses)
        if cache.enabled:
            step = min(step, LOCK_CHUNK)  # open lock files at a time
        for part in split(misses, step):
            with cache.lock(keys[i] for i in part):
                got = {i: cache._read(keys[i]) if cache.enabled else None for i in part}
                todo = [i for i in part if got[i] is None]  # what another build stored meanwhile is read
                if todo:
                    ticked = getattr(bar, "n", 0)
                    with network(_tag_of(keys, todo)):
                        res = _backoff(fn, args_of, todo)
                    if getattr(bar, "n", 0) == ticked:  # fn does not tick: count its keys
                        bar.update(len(todo))
                    if len(res) != len(todo):
                        raise RuntimeError(f"{what}: {len(todo)} keys gave {len(res)} results")
                    for i, r in zip(todo, res):
                        got[i] = cache.put(keys[i], r)
            for i in part:
                out[i] = got[i]
    finally:
        _BAR.reset(token)
        bar.close()
    return out


def make_executor(name: str, address: str = "", say: Callable[[str], None] = print):
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, say)
    raise ValueError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")


def split(indices: list[int], size: int) -> list[list[int]]:
    """``indices`` in consecutive chunks of ``size`` (the last may be shorter)."""
    size = max(1, int(size))
    return [indices[s : s + size] for s in range(0, len(indices), size)]


def chunk_size(executor, n: int, batch: int) -> int:
    """Photos per task: a multiple of ``batch`` (so chunks batch as a local run does), about
    two tasks per worker slot so a lost chunk costs little and slots stay busy."""
    if not executor.distributed:
        return max(n, 1)
    per = -(-n // max(1, 2 * executor.workers))
    return max(batch, -(-per // batch) * batch)
