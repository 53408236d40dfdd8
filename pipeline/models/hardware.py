"""Whether this machine computes bfloat16 natively: the one question behind every ``auto``
precision setting (the vllm engine's and PPM scorer's ``dtype``, training's ``bf16``).

Without bf16 instructions a CPU emulates bf16 through fp32 conversions and runs it slower than
fp32 (vLLM searched 4.0x slower on an AVX2-only EPYC); with them (AVX-512 BF16, AMX, Arm's
``bf16``) it is the faster one: a SmolLM2 SFT step took 3.49 s against 5.32 s in fp32 on a
2-core Xeon with AMX (benchmarks/bench_train.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 / AMX, Arm (aarch64)


@functools.cache  # the hardware does not change within a process; training asks every step
def native_bf16(cpuinfo: str | None = None) -> bool:
    """True on a GPU, or on a CPU whose ``/proc/cpuinfo`` flags (or ``cpuinfo``) include bf16."""
    if cpuinfo is None:
        if on_gpu():
            return True
        cpuinfo = _read_cpuinfo()
    return not set(BF16_CPU_FLAGS).isdisjoint(cpuinfo.split())


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so the precision that is fast everywhere
        return ""
