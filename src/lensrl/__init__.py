"""lensrl: RL with verifiable rewards for language models, with LENS (arXiv 2510.08696).

The algorithm is a handful of pure tensor functions (`lensrl.core`); `lensrl.train` runs it on any
Hugging Face causal LM; `lensrl.testbed` is the built-in arithmetic setting. Names are imported on
first use, so `lensrl --help` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "grpo_advantages": "lensrl.core.advantages",
    "lens_rewards": "lensrl.core.advantages",
    "lens_advantages": "lensrl.core.advantages",
    "LensSettings": "lensrl.core.advantages",
    "policy_loss": "lensrl.core.loss",
    "k3_kl": "lensrl.core.loss",
    "selective_logprobs": "lensrl.core.logprobs",
    "head_logprobs": "lensrl.core.logprobs",
    "pass_at_k": "lensrl.core.passk",
    "verify_math": "lensrl.verify",
    "extract_answer": "lensrl.verify",
    "Problem": "lensrl.data",
    "load_jsonl": "lensrl.data",
    "load_source": "lensrl.data",
    "load_problems": "lensrl.data",
    "format_prompt": "lensrl.prompts",
    "load_policy": "lensrl.models",
    "sft": "lensrl.sft",
    "TrainConfig": "lensrl.config",
    "load_config": "lensrl.config",
    "train": "lensrl.trainer",
    "evaluate": "lensrl.evaluate",
    "paired_difference": "lensrl.stats",
    "gradient_comparison": "lensrl.diagnostics",
    "run_study": "lensrl.study",
    "measure_profile": "lensrl.testbed.profile",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from lensrl.config import TrainConfig, load_config
    from lensrl.core.advantages import LensSettings, grpo_advantages, lens_advantages, lens_rewards
    from lensrl.core.logprobs import head_logprobs, selective_logprobs
    from lensrl.core.loss import k3_kl, policy_loss
    from lensrl.core.passk import pass_at_k
    from lensrl.data import Problem, load_jsonl, load_problems, load_source
    from lensrl.diagnostics import gradient_comparison
    from lensrl.evaluate import evaluate
    from lensrl.models import load_policy
    from lensrl.prompts import format_prompt
    from lensrl.sft import sft
    from lensrl.stats import paired_difference
    from lensrl.study import run_study
    from lensrl.testbed.profile import measure_profile
    from lensrl.trainer import train
    from lensrl.verify import extract_answer, verify_math


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lensrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
