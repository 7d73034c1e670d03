"""An opt-in allocator setting: keep freed CPU memory for reuse instead of handing it back.

glibc's malloc serves large requests (above a threshold that grows to at most 32 MB) with fresh
`mmap` pages and unmaps them on free, so every large tensor an operation makes starts with page
faults: on a 2-core CPU an `exp` over a (720, 49152) float32 tensor takes 35 ms into a new tensor
and 11 ms into an existing one. `keep_freed_memory` turns `mmap` off and stops the heap from being
trimmed, so freed blocks are reused: the same values, computed sooner (a SmolLM2 LoRA update
micro-batch 3.56 -> 2.93 s).

Off by default, because resident memory then only grows: tensors whose sizes creep up step by step
(a KV cache grown by one token per decode step) leave holes the next, larger one does not fit, and
two SmolLM2-135M chain-sum runs side by side grew to 11 and 13 GiB within 10 steps and an
evaluation, until one was killed for memory (a run needs about 6-7 GiB by default). Use it for
short measurements (`bench/bench.py`'s `+keepmem` engines) or where memory is plentiful. The same
setting from the environment, for any program: `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`.

Left alone when the user has chosen: any `MALLOC_*` setting in the environment, or another
allocator preloaded (jemalloc, tcmalloc). A no-op where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory in this process; True if it was switched (once per process)."""
    if any(k.startswith("MALLOC_") for k in os.environ) or os.environ.get("LD_PRELOAD"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; the trim threshold's maximum is the largest int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
