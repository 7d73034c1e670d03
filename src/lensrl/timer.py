"""Wall-clock seconds per named phase of a step, summed over the blocks timed under each name."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Timer:
    """`with timer("sample"): ...` adds the block's seconds to `timer.seconds["sample"]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
