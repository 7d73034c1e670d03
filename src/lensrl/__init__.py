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
    "LensSettings": "lensrl.core.settings",
    "w_reinforce_advantages": "lensrl.core.advantages",
    "ngrpo_advantages": "lensrl.core.advantages",
    "policy_loss": "lensrl.core.loss",
    "k3_kl": "lensrl.core.loss",
    "selective_logprobs": "lensrl.core.logprobs",
    "head_logprobs": "lensrl.core.logprobs",
    "pass_at_k": "lensrl.core.passk",
    "verify_math": "lensrl.rollout.verify",
    "extract_answer": "lensrl.data.answers",
    "MathVerifier": "lensrl.rollout.verify",
    "Verifier": "lensrl.rollout.verifier",
    "FunctionVerifier": "lensrl.rollout.verifier",
    "Problem": "lensrl.records",
    "load_jsonl": "lensrl.data.sources",
    "load_source": "lensrl.data.sources",
    "load_problems": "lensrl.data.sources",
    "load_eval_problems": "lensrl.data.sources",
    "load_train_problems": "lensrl.data.sources",
    "format_prompt": "lensrl.data.prompts",
    "load_policy": "lensrl.policy.models",
    "sft": "lensrl.training.sft",
    "TrainConfig": "lensrl.config",
    "load_config": "lensrl.config",
    "apply_overrides": "lensrl.config",
    "train": "lensrl.training.trainer",
    "evaluate": "lensrl.evaluation.evaluate",
    "EvalSettings": "lensrl.evaluation.evaluate",
    "EvalResult": "lensrl.evaluation.evaluate",
    "evaluate_and_log": "lensrl.runs.lifecycle",
    "train_or_resume": "lensrl.training.trainer",
    "DataOrder": "lensrl.seeds",
    "warmstart_problems": "lensrl.testbed",
    "Rollout": "lensrl.records",
    "ScoredRollout": "lensrl.records",
    "paired_difference": "lensrl.research.stats",
    "PairedDifference": "lensrl.research.stats",
    "sign_flip_p": "lensrl.research.stats",
    "gradient_comparison": "lensrl.training.diagnostics",
    "measure_gradients": "lensrl.training.diagnostics",
    "Study": "lensrl.research.arms",
    "Arm": "lensrl.research.arms",
    "load_studies": "lensrl.research.arms",
    "run_study": "lensrl.research.study",
    "report_from_records": "lensrl.research.study",
    "run_record": "lensrl.research.study",
    "finished_run": "lensrl.research.study",
    "compare": "lensrl.research.compare",
    "RunRecord": "lensrl.research.records",
    "measure_profile": "lensrl.evaluation.profile",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from lensrl.config import TrainConfig, apply_overrides, load_config
    from lensrl.core.advantages import (
        grpo_advantages,
        lens_advantages,
        lens_rewards,
        ngrpo_advantages,
        w_reinforce_advantages,
    )
    from lensrl.core.logprobs import head_logprobs, selective_logprobs
    from lensrl.core.loss import k3_kl, policy_loss
    from lensrl.core.passk import pass_at_k
    from lensrl.core.settings import LensSettings
    from lensrl.data.answers import extract_answer
    from lensrl.data.prompts import format_prompt
    from lensrl.data.sources import load_eval_problems, load_jsonl, load_problems, load_source, load_train_problems
    from lensrl.evaluation.evaluate import EvalResult, EvalSettings, evaluate
    from lensrl.evaluation.profile import measure_profile
    from lensrl.policy.models import load_policy
    from lensrl.records import Problem, Rollout, ScoredRollout
    from lensrl.research.arms import Arm, Study, load_studies
    from lensrl.research.compare import compare
    from lensrl.research.records import RunRecord
    from lensrl.research.stats import PairedDifference, paired_difference, sign_flip_p
    from lensrl.research.study import finished_run, report_from_records, run_record, run_study
    from lensrl.rollout.verifier import FunctionVerifier, Verifier
    from lensrl.rollout.verify import MathVerifier, verify_math
    from lensrl.runs.lifecycle import evaluate_and_log
    from lensrl.seeds import DataOrder
    from lensrl.testbed import warmstart_problems
    from lensrl.training.diagnostics import gradient_comparison, measure_gradients
    from lensrl.training.sft import sft
    from lensrl.training.trainer import train, train_or_resume


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lensrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
