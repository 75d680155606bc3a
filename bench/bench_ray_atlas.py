"""The atlas stream over a photo folder with ``--executor ray``: 1 vs 2 workers of a local
Ray cluster (and the local executor), alternating, each run with an empty cache.

    OMP_NUM_THREADS=1 python bench/bench_ray_atlas.py [--folder ../shared/imagenette/val]
        [--max-images 480] [--reps 2] [--model efficientnet_lite0]

Prints seconds of the "atlas stream" stage per run, photos/s, and the ratios to 1 worker.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CNNVIS_NO_PROGRESS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def one_run(folder: str, n: int, model: str, executor: str, work: Path) -> float:
    from generator.build import run_build
    from generator.config import Config

    cfg = Config.load()
    cfg.override(models=[model], images=str(ROOT / "data" / "images"), out=str(work / "out"), cache=str(work / "cache"),
                 stages=["atlas"], offline=True, device="cpu", executor=executor)
    cfg.data["atlas"] = {"folder": folder, "max_images": n, "max_channels_per_layer": 1, "projections": False,
                         "top_k": 4}
    res = run_build(cfg, say=lambda m: None)
    return sum(v for k, v in res.ctx.timer.times.items() if k.startswith("atlas stream"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(ROOT.parent / "shared" / "imagenette" / "val"))
    ap.add_argument("--max-images", type=int, default=480)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--model", default="efficientnet_lite0")
    a = ap.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"local": [], "ray 1 worker": [], "ray 2 workers": []}
    for rep in range(a.reps):
        for label in times:  # alternating, so a busy machine slows every variant alike
            with tempfile.TemporaryDirectory() as tmp:
                if label.startswith("ray"):
                    ray.init(num_cpus=int(label.split()[1]), include_dashboard=False, log_to_driver=False)
                    # warm the workers (Python + torch imports) outside the timed stream
                    ray.get([ray.remote(lambda: __import__("torch").__version__).remote() for _ in range(2)])
                try:
                    t = one_run(a.folder, a.max_images, a.model, "ray" if label.startswith("ray") else "local", Path(tmp))
                finally:
                    if label.startswith("ray"):
                        ray.shutdown()
            times[label].append(t)
            print(f"rep {rep + 1}: {label:14s} {t:7.1f} s", flush=True)
    base = statistics.median(times["ray 1 worker"])
    print(f"\n{a.model}, atlas stream of {a.max_images} photos of {a.folder}, median of {a.reps}")
    print("| run | seconds | photos/s | speed-up vs 1 worker |\n|---|---|---|---|")
    for label, ts in times.items():
        m = statistics.median(ts)
        print(f"| {label} | {m:.1f} | {a.max_images / m:.1f} | {base / m:.2f} |")


if __name__ == "__main__":
    main()
