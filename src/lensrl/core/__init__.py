"""The algorithm as pure tensor functions: advantages, the policy loss, log-probs, pass@k."""

from lensrl.core.advantages import (
    LensSettings,
    group_outcomes,
    grpo_advantages,
    lens_advantages,
    lens_rewards,
    negative_group_signal_share,
    ngrpo_advantages,
    w_reinforce_advantages,
)
from lensrl.core.logprobs import head_logprobs, selective_logprobs
from lensrl.core.loss import k3_kl, policy_loss
from lensrl.core.passk import pass_at_k

__all__ = [
    "LensSettings",
    "grpo_advantages",
    "group_outcomes",
    "head_logprobs",
    "k3_kl",
    "lens_advantages",
    "lens_rewards",
    "negative_group_signal_share",
    "ngrpo_advantages",
    "pass_at_k",
    "policy_loss",
    "selective_logprobs",
    "w_reinforce_advantages",
]
