"""The built-in testbed: seeded arithmetic problems and a small warm-started policy to run RL on.

`base_policy_path()` is the folder of the committed base policy (loadable with the Auto classes);
`lensrl.testbed.profile` measures how hard the problems are for it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lensrl.testbed.problems import generate_problems, make_problem
from lensrl.testbed.tokenizer import build_tokenizer

if TYPE_CHECKING:
    from lensrl.testbed.warmstart import WarmStartConfig, build_base_policy

__all__ = [
    "WarmStartConfig",
    "base_policy_path",
    "build_base_policy",
    "build_tokenizer",
    "generate_problems",
    "make_problem",
]

COMMITTED_POLICY = Path(__file__).resolve().parent / "base_policy"
WEIGHTS_FILE = "model.safetensors"


def __getattr__(name: str) -> Any:
    # The warm-start names load on first use, so `python -m lensrl.testbed.warmstart` does not find
    # its own module already imported by this package (runpy warns about that).
    if name in ("WarmStartConfig", "build_base_policy"):
        from lensrl.testbed import warmstart

        return getattr(warmstart, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def base_policy_path(cache_dir: str | Path | None = None) -> Path:
    """Folder of the base policy: the committed one, else one built once into `cache_dir`.

    `cache_dir` defaults to `~/.cache/lensrl/testbed_base_policy`. The build (a few minutes on CPU)
    writes into a temporary sibling folder and renames it, so an interrupted build leaves no half policy.
    """
    if (COMMITTED_POLICY / WEIGHTS_FILE).is_file():
        return COMMITTED_POLICY
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "lensrl" / "testbed_base_policy"
    if (cache / WEIGHTS_FILE).is_file():
        return cache
    from lensrl.testbed.warmstart import build_base_policy

    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    try:
        build_base_policy(staging)
        shutil.rmtree(cache, ignore_errors=True)  # a folder without weights is an old, broken build
        staging.rename(cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache
