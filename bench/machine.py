"""One line that says what machine a measurement ran on, for the records that results commit.

CPUs differ: bfloat16 matmuls are 2-3x faster, and round differently, on CPUs with AVX-512 BF16 or
AMX than on AVX2-only ones, so a committed time or a bf16 number names the CPU model and whether it
has those instructions.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX), which make bf16 autocast pay."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def describe_machine() -> str:
    """The GPU, or the CPU's model, core count and bf16 support; and torch's version."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or platform.machine()
    isa = "bf16 instructions (AVX-512 BF16 or AMX)" if cpu_has_bf16() else "no bf16 instructions"
    return f"{model}, {os.cpu_count()} CPU cores, {isa}, torch {torch.__version__}"
