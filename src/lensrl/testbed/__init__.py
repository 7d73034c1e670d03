"""The built-in testbed: seeded arithmetic problems and a small warm-started policy to run RL on.

`base_policy_path()` is the folder of the committed base policy (loadable with the Auto classes);
`lensrl.testbed.warmstart` rebuilds it and `lensrl.testbed.profile` measures how hard the problems
are for it.
"""

from __future__ import annotations

from pathlib import Path

from lensrl.testbed.problems import generate_problems, make_problem
from lensrl.testbed.tokenizer import build_tokenizer

__all__ = ["base_policy_path", "build_tokenizer", "generate_problems", "make_problem"]

COMMITTED_POLICY = Path(__file__).resolve().parent / "base_policy"
WEIGHTS_FILE = "model.safetensors"


def base_policy_path() -> Path:
    """Folder of the committed base policy.

    Loading a policy never trains one: when the committed weights are missing (a checkout without
    them), this is an error that says how to rebuild them.
    """
    if not (COMMITTED_POLICY / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"the testbed's base policy is missing ({COMMITTED_POLICY / WEIGHTS_FILE} not found). Restore it with "
            f"`git checkout -- {COMMITTED_POLICY}`, or rebuild it (a few minutes on CPU) with "
            "`lensrl testbed-build --output-dir DIR` and train with model.name_or_path=DIR"
        )
    return COMMITTED_POLICY
