"""generator.allocator: freed large buffers stay in the process (glibc), measured by page faults in a fresh process."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from generator import plan, plan_history

ROOT = Path(__file__).resolve().parents[1]

# a small convolutional net's forward and input gradient at 8 × 32 × 256 × 256 activations (67 MB each, above
# glibc's largest mmap threshold), five passes after one to warm up: the page faults they cost, and what
# keep_freed_memory answered
SCRIPT = """
import json, resource, torch
from generator import allocator, plan
ok = allocator.keep_freed_memory()
again = allocator.keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 3, padding=1))
x = torch.rand(8, 3, 256, 256)
def step():
    xi = x.clone().requires_grad_(True)
    torch.autograd.grad(net(xi).sum(), xi)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
f0 = faults()
for _ in range(5):
    step()
print(json.dumps({"ok": ok, "again": again, "describe": allocator.describe(), "faults": faults() - f0,
                  "machine": plan.machine("cpu")["allocator"]}))
"""


def _run(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_buffers_are_reused_instead_of_faulting_in_again():
    kept, system = _run(CNNVIS_ALLOCATOR=""), _run(CNNVIS_ALLOCATOR="system")
    assert kept["ok"] is True and kept["again"] is True and kept["describe"] == kept["machine"] == "freed memory kept (glibc)"
    assert system["ok"] is False and system["describe"] == system["machine"] == "system default"
    if system["faults"] < 100_000:  # huge pages for every buffer: nothing to compare on this machine
        pytest.skip(f"glibc's defaults cost only {system['faults']} faults here")
    # with glibc's defaults every activation is a fresh mapping, faulted in page by page at each pass (measured
    # here: 1.44 million faults against 66,000 kept, 22 times fewer)
    assert kept["faults"] * 5 < system["faults"], (kept, system)


def test_the_allocator_is_part_of_the_machine_the_plan_learns_for():
    here = plan.machine("cpu")
    assert "allocator" in here
    other = {**here, "allocator": "system default" if here["allocator"] != "system default" else "x"}
    assert plan_history.machine_key(here) != plan_history.machine_key(other)
