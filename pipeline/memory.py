"""Keep memory that a process frees for its next allocations instead of returning it to the OS.

glibc serves a large allocation with a fresh ``mmap`` and unmaps it when it is freed (above a
threshold that adapts up to 32 MiB), so every training step's logits (tokens x a 49k vocabulary)
and every batch's activations are new pages that the kernel must fault in and zero again. On
the 2-core AMD EPYC VMs this project is measured on, that was about half of a tiny model's SFT
step and a quarter of SmolLM2's (benchmarks/bench_memory.py). Raising the mmap and trim
thresholds keeps such blocks in the heap for reuse; a process then holds on to its peak memory
until it exits, which suits stages that are one process each.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
LARGEST = 2**31 - 1  # the largest value mallopt takes: blocks over 2 GiB are still mmapped


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where the C library is
    not glibc (musl and macOS have no such thresholds) and nothing changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))
