"""lensrl: RL with verifiable rewards for language models, with LENS (arXiv 2510.08696).

The algorithm is a handful of pure tensor functions (`lensrl.core`); `lensrl.trainer.train` runs it
on any Hugging Face causal LM; `lensrl.testbed` is the built-in arithmetic setting.
"""

from lensrl.core import (
    grpo_advantages,
    k3_kl,
    lens_advantages,
    lens_rewards,
    pass_at_k,
    policy_loss,
    selective_logprobs,
)
from lensrl.verify import extract_answer, verify_math

__all__ = [
    "grpo_advantages",
    "k3_kl",
    "lens_advantages",
    "lens_rewards",
    "pass_at_k",
    "policy_loss",
    "selective_logprobs",
    "extract_answer",
    "verify_math",
    "load_config",
    "train",
    "TrainConfig",
]


def __getattr__(name: str):
    # the trainer and config pull in transformers/pydantic: import them only when asked for
    if name in ("train", "TrainConfig", "load_config"):
        import lensrl.config
        import lensrl.trainer

        return {"train": lensrl.trainer.train, "TrainConfig": lensrl.config.TrainConfig,
                "load_config": lensrl.config.load_config}[name]
    raise AttributeError(f"module 'lensrl' has no attribute {name!r}")
