"""How this process gets host memory for large tensors (Linux with glibc only; elsewhere nothing changes).

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns it to the kernel on ``free``; the next allocation of that size page-faults every page again and the
kernel zeroes it. A CPU forward and backward pass allocates and frees such activation buffers at every layer,
so at batch 16 (the build's default) a large share of a gradient pass went to the kernel. Measured on
EfficientNet-Lite2 (260 px) on a 2-core AVX2 machine, 2026-12-07, a fresh process each: forward + input
gradient 49.0 ms per image at batch 16 (20 ms of it system time, 193,000 page faults a pass), 39.0 ms with the
freed memory kept (1 ms system time, 6,300 faults); at batch 8 39 ms either way. On 4 photos, same machine:
Integrated Gradients (16 → 121 points) 23.3 → 18.4 s, SmoothGrad 4.9 → 3.3 s, occlusion (forward passes only)
14.9 → 14.8 s; the largest resident size 2.8 GB either way.

:func:`keep_freed_memory` turns glibc's mmap path off (``M_MMAP_MAX = 0``) and raises the trim threshold, so
freed buffers stay in the heap for the next pass. ``CNNVIS_ALLOCATOR=system`` leaves glibc's defaults (to
compare). The build calls it before its calibration, so the plan measures the speed its stages run at."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

CACHE_NEUTRAL = True  # where freed memory goes does not change a result
ENV = "CNNVIS_ALLOCATOR"
#: mallopt parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: free memory at the heap's top above this goes back to the kernel (glibc's default is dynamic, from 128 KiB;
#: mallopt takes an int)
TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Keep large freed blocks in this process's heap for reuse (glibc only; once per process).
    True where glibc took the settings; False elsewhere, with ``CNNVIS_ALLOCATOR=system``, or if a
    ``mallopt`` call failed (nothing else changes then)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "").strip().lower() == "system" or platform.system() != "Linux":
        return _applied
    if platform.libc_ver()[0] != "glibc":
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold first, so a failure leaves mmap on (the default)
    _applied = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))
    return _applied


def describe() -> str:
    """How this process allocates host memory, for the build's machine line and the plan's keys."""
    return "freed memory kept (glibc)" if _applied else "system default"
