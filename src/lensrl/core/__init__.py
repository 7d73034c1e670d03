"""The algorithm as pure tensor functions: advantages, the policy loss, log-probs, pass@k, and Knapsack RL's
allocation of a step's samples over its prompts.

`lensrl.core.settings` (LENS's settings) is plain Python; the rest imports torch. Names are imported
on first use, so that reading the settings does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LensSettings": "lensrl.core.settings",
    "read_lens_settings": "lensrl.core.settings",
    "GROUP_KINDS": "lensrl.core.advantages",
    "GroupSizes": "lensrl.core.advantages",
    "advantage_mass": "lensrl.core.advantages",
    "group_metrics": "lensrl.core.advantages",
    "log_pibar": "lensrl.core.advantages",
    "group_kinds": "lensrl.core.advantages",
    "group_layout": "lensrl.core.advantages",
    "group_outcomes": "lensrl.core.advantages",
    "group_rows": "lensrl.core.advantages",
    "grpo_advantages": "lensrl.core.advantages",
    "kept_groups": "lensrl.core.advantages",
    "lens_advantages": "lensrl.core.advantages",
    "lens_rewards": "lensrl.core.advantages",
    "negative_group_signal_share": "lensrl.core.advantages",
    "ngrpo_advantages": "lensrl.core.advantages",
    "pibar": "lensrl.core.advantages",
    "uniform_negative_advantages": "lensrl.core.advantages",
    "w_reinforce_advantages": "lensrl.core.advantages",
    "head_logprobs": "lensrl.core.logprobs",
    "selective_logprobs": "lensrl.core.logprobs",
    "k3_kl": "lensrl.core.loss",
    "policy_loss": "lensrl.core.loss",
    "pass_at_k": "lensrl.core.passk",
    "allocate_samples": "lensrl.core.knapsack",
    "estimate_success": "lensrl.core.knapsack",
    "knapsack_extras": "lensrl.core.knapsack",
    "knapsack_value": "lensrl.core.knapsack",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lensrl.core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
