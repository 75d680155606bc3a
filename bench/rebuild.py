"""A rebuild with nothing changed, per number of render workers: its time, its split into network work and
the rest, and the site's size — the numbers of the issue on waste around the networks (a rebuild in a minute,
a build that is its network work, a site under 80 MB).

``python bench/rebuild.py [--workers 0 1 2] [--reps 1]`` runs ``make site ARGS="--render-workers N"`` in this
checkout for each N in turn (``--reps`` rounds, the workers taking turns, so a change in the machine's load
falls on all of them), after one warm-up run that fills the cache where it is cold. For each run it prints
the wall time of ``make site`` (set-up check, generator, MkDocs), the generator's own time, its network work
and the rest (the build's closing line ``generator: network work …``), the cache misses (0 for a no-change rebuild) and the
built site's size (``du -sb site`` and the 4-KiB-block size ``du -sh`` shows), then each worker count's median
time as a ratio to the first one's. It never runs in the test suite: times belong on the Performance page,
with the machine and the date.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = re.compile(r"^generator: network work (\d+) s, the rest (\d+) s \((\d+) % of its (\d+) s")
CACHE = re.compile(r"^cache: (\d+) hits, (\d+) misses")
TOTAL = re.compile(r"^\s+total \(wall\)\s+([\d.]+) s")


def run(workers: int | None, extra: str = "") -> dict:
    args = " ".join(x for x in ([f"--render-workers {workers}"] if workers is not None else []) + [extra] if x)
    t0 = time.perf_counter()
    p = subprocess.run(["make", "site", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"make site failed (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    out = {"wall": wall}
    for line in p.stdout.splitlines():
        if m := STAGES.match(line):
            out.update(network=int(m[1]), rest=int(m[2]), share=int(m[3]))
        elif m := CACHE.match(line):
            out.update(hits=int(m[1]), misses=int(m[2]))
        elif m := TOTAL.match(line):
            out["generator"] = float(m[1])
    site = ROOT / "site"
    out["bytes"] = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    du = subprocess.run(["du", "-sk", str(site)], capture_output=True, text=True).stdout.split()
    out["du_kib"] = int(du[0]) if du else 0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--args", default="", help="more generator flags for every run")
    a = ap.parse_args(argv)
    warm = run(None, a.args)
    print(f"warm-up: {warm['wall']:.0f} s, {warm.get('misses', '?')} cache misses")
    rows: dict[int, list[dict]] = {w: [] for w in a.workers}
    for _ in range(a.reps):
        for w in a.workers:
            r = run(w, a.args)
            rows[w].append(r)
            print(f"render workers {w}: make site {r['wall']:.1f} s, generator {r.get('generator', 0):.1f} s "
                  f"(network {r.get('network', '?')} s, rest {r.get('rest', '?')} s = {r.get('share', '?')} %), "
                  f"{r.get('misses', '?')} misses; site {r['bytes'] / 1e6:.1f} MB ({r['du_kib'] / 1024:.0f} MiB in "
                  f"4-KiB blocks)", flush=True)
    base = statistics.median(r["wall"] for r in rows[a.workers[0]])
    print("\nmedian make site time, as a ratio to render workers = " f"{a.workers[0]}:")
    for w in a.workers:
        m = statistics.median(r["wall"] for r in rows[w])
        print(f"  {w}: {m:.1f} s  ({m / base:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
