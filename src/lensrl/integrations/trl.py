"""LENS in TRL: `GRPOTrainer` with LENS advantages (docs/algorithm.md Sec. 3; arXiv 2510.08696 Sec. 5.1).

`LensGRPOTrainer` is TRL's `GRPOTrainer` with one change: the per-completion advantages are LENS
advantages, computed by `lensrl.core.advantages.lens_advantages`, instead of GRPO's. Generation
(transformers or vLLM), the clipped loss and its variants (`loss_type`), DeepSpeed, FSDP, PEFT and
logging are TRL's own. `LensGRPOConfig` is `GRPOConfig` plus `lens_alpha`, `lens_scope`,
`lens_d_estimator` and `lens_normalize_negative` (the fields of `lensrl.core.advantages.LensSettings`
but eps); `math_reward` is a 0/1 Math-Verify reward function for a dataset with an `answer` column.
Needs `pip install "trl>=1.16,<2"`.

docs/trl.md ("LENS in TRL") has a complete, tested example, the settings, what LENS does with TRL's
options (binary rewards only, its own normalisation, no masking of truncated completions), where the
confidence log-probs come from, how groups that span processes are handled, and the logged metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    import trl
    from trl import GRPOConfig, GRPOTrainer
except ImportError as exc:  # pragma: no cover - exercised only without TRL
    raise ImportError('lensrl.integrations.trl needs TRL, which is not installed: pip install "trl>=1.16,<2"') from exc

try:
    from trl.models.utils import disable_gradient_checkpointing
except ImportError:  # pragma: no cover - older or newer TRL layouts

    def disable_gradient_checkpointing(model: Any, gradient_checkpointing_kwargs: Any = None) -> Any:
        return nullcontext()


from lensrl.core.advantages import (
    DEstimator,
    LensScope,
    LensSettings,
    advantage_mass,
    group_metrics,
    lens_advantages,
)
from lensrl.core.settings import SETTING_HELP, read_lens_settings

_HOOKS = ("_generate_and_score_completions", "_calculate_rewards", "_get_per_token_logps_and_entropies")
_missing = [name for name in _HOOKS if not hasattr(GRPOTrainer, name)]
if _missing:  # pragma: no cover - depends on the installed TRL
    raise ImportError(
        f"TRL {trl.__version__} has no GRPOTrainer.{', '.join(_missing)}; "
        'lensrl.integrations.trl supports pip install "trl>=1.16,<2"'
    )

# Model inputs besides ids and masks that `_generate_and_score_completions` returns and the
# log-prob helper takes (multimodal models); the same keys TRL's `_compute_loss` passes on.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
_BINARY_ATOL = 1e-6  # a weighted sum of 0/1 rewards in float32 may miss 0 or 1 by rounding
_SHARE = "adv/negative_group_share"  # of a logging window's advantage mass, not a mean of its batches' shares

__all__ = ["LensGRPOConfig", "LensGRPOTrainer", "math_reward"]

_LENS_CITATION = """\
@article{feng2025lens,
    title        = {{Don't Waste Mistakes: Leveraging Negative RL-Groups via Confidence Reweighting}},
    author       = {Yunzhen Feng and Parag Jain and Anthony Hartshorn and Yaqi Duan and Julia Kempe},
    year         = 2025,
    eprint       = {arXiv:2510.08696},
}"""


# LensSettings fields that LensGRPOConfig has as lens_<name>
_CONFIG_SETTINGS = ("alpha", "scope", "d_estimator", "normalize_negative")


def _settings_from_args(args: Any) -> LensSettings:
    """The `LensSettings` of a config's `lens_*` fields (defaults for those it lacks); errors name the field."""
    return read_lens_settings(
        {name: getattr(args, f"lens_{name}") for name in _CONFIG_SETTINGS if hasattr(args, f"lens_{name}")}, "lens_"
    )


def _reject_truncation_masking(args: Any) -> None:
    if getattr(args, "mask_truncated_completions", False):
        raise ValueError(
            "LENS does not support mask_truncated_completions=True: truncated responses are scored and take part "
            "in the LENS calibration (docs/algorithm.md Sec. 4), and TRL would mask them out of the forward pass "
            "that gives their log-probs. Set mask_truncated_completions=False."
        )


@dataclass
class LensGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus the LENS settings; every GRPO field keeps its TRL meaning and default."""

    lens_alpha: float = field(default=LensSettings.alpha, metadata={"help": f"LENS: {SETTING_HELP['alpha']}"})
    lens_scope: LensScope = field(default=LensSettings.scope, metadata={"help": f"LENS: {SETTING_HELP['scope']}"})
    lens_d_estimator: DEstimator = field(
        default=LensSettings.d_estimator, metadata={"help": f"LENS: {SETTING_HELP['d_estimator']}"}
    )
    lens_normalize_negative: bool = field(
        default=LensSettings.normalize_negative, metadata={"help": f"LENS: {SETTING_HELP['normalize_negative']}"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _settings_from_args(self)
        _reject_truncation_masking(self)


class LensGRPOTrainer(GRPOTrainer):
    """TRL's `GRPOTrainer` with LENS advantages; takes exactly `GRPOTrainer`'s arguments.

    The LENS settings come from `args` (a `LensGRPOConfig`) as one `LensSettings`, `self.lens_settings`;
    a plain `GRPOConfig` gets `LensSettings()`'s defaults. See the module docstring.
    """

    # What TRL's `create_model_card` reads: the card's tags, "trained with ...", and the citations
    _tag_names = [*GRPOTrainer._tag_names, "lens"]
    _name = "LENS (GRPO with LENS advantages)"
    _paper = {
        "title": "Don't Waste Mistakes: Leveraging Negative RL-Groups via Confidence Reweighting",
        "id": "2510.08696",
        "citation": _LENS_CITATION + "\n\n" + GRPOTrainer._paper.get("citation", ""),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lens_settings: LensSettings = _settings_from_args(self.args)
        _reject_truncation_masking(self.args)
        self._lens_rewards_per_func: torch.Tensor | None = None
        self.lens_last_batch: dict[str, Any] | None = None
        self._lens_mass: dict[str, list[float]] = {}  # per mode: the logging window's negative and total sum |A|

    @property
    def lens_alpha(self) -> float:
        return self.lens_settings.alpha

    @property
    def lens_scope(self) -> str:
        return self.lens_settings.scope

    @property
    def lens_d_estimator(self) -> str:
        return self.lens_settings.d_estimator

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # noqa: ANN001, ANN202
        # TRL returns the rewards gathered across processes, in process order; keep them for LENS
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._lens_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):  # noqa: ANN001, ANN202
        self._lens_rewards_per_func = None
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._lens_rewards_per_func = self._lens_rewards_per_func, None
        if rewards_per_func is None:
            raise RuntimeError(
                f"LensGRPOTrainer: GRPOTrainer._generate_and_score_completions of TRL {trl.__version__} did not call "
                '_calculate_rewards; this TRL version is not supported (pip install "trl>=1.16,<2")'
            )
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        if group_size < 2:  # evaluation with num_generations_eval=1: no groups, keep TRL's advantages
            return output

        correct = self._lens_correctness(rewards_per_func)  # (N,) all processes
        local_logprobs, local_lengths = self._lens_sequence_logprobs(output, mode)  # (n_local,)
        seq_logprobs = self.accelerator.gather(local_logprobs)  # same process order as the rewards
        lengths = self.accelerator.gather(local_lengths)
        if seq_logprobs.numel() != correct.numel():
            raise RuntimeError(
                f"LensGRPOTrainer: {correct.numel()} gathered rewards but {seq_logprobs.numel()} gathered log-probs"
            )
        advantages = self._lens_advantages(correct, seq_logprobs, lengths, group_size)

        n_local = local_logprobs.numel()
        process_slice = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        old = output["advantages"]
        output["advantages"] = advantages[process_slice].to(device=old.device, dtype=old.dtype)
        self._lens_log(mode, correct, seq_logprobs, lengths, advantages, group_size)
        self.lens_last_batch = {
            "correct": correct.detach().cpu(),
            "seq_logprobs": seq_logprobs.detach().cpu(),
            "lengths": lengths.detach().cpu(),
            "advantages": advantages.detach().cpu(),
            "group_size": group_size,
            "process_slice": process_slice,
        }
        return output

    def _lens_advantages(
        self, correct: torch.Tensor, seq_logprobs: torch.Tensor, lengths: torch.Tensor, group_size: int
    ) -> torch.Tensor:
        """LENS advantages of the gathered batch with this trainer's settings."""
        return lens_advantages(correct, seq_logprobs, lengths, group_size, **dataclasses.asdict(self.lens_settings))

    def _lens_correctness(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """0/1 correctness from TRL's gathered (N, n_funcs) rewards, summed with the reward weights as TRL does."""
        unscored = torch.isnan(rewards_per_func).all(dim=1)
        if unscored.any():
            raise ValueError(
                f"LENS needs binary verifiable rewards for every completion, but every reward function returned None "
                f"for {int(unscored.sum())} of {unscored.numel()} completions."
            )
        weights = self.reward_weights.to(rewards_per_func.device, rewards_per_func.dtype)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        is_one = (rewards - 1).abs() <= _BINARY_ATOL
        binary = is_one | (rewards.abs() <= _BINARY_ATOL)
        if not binary.all():
            examples = sorted({round(v, 6) for v in rewards[~binary].tolist()})[:5]
            raise ValueError(
                "LENS needs binary verifiable rewards: the weighted sum of the reward functions must be 0 (wrong) or "
                f"1 (right) for every completion, got {examples} for {int((~binary).sum())} of {binary.numel()} "
                "completions. Use a single 0/1 verifier (e.g. lensrl.integrations.trl.math_reward), or reward "
                "weights that keep the sum in {0, 1}."
            )
        return is_one.float()

    def _lens_sequence_logprobs(self, output: dict[str, Any], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Local sum of pi_old token log-probs over each completion's policy tokens, and their number."""
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        old = output.get("old_per_token_logps")
        if old is None:  # on-policy: TRL skipped them and reuses the current log-probs in the loss
            old = self._lens_old_logprobs(output, mode)
        mask = mask.bool()
        # summed as they come: a sum a hair above 0 (float32 round-off when the completion is near-certain) is
        # lens_advantages' to judge, which reads it as 0 up to LOGPROB_ROUNDOFF and rejects larger ones
        token_logprobs = torch.where(mask, old.detach().float(), torch.zeros((), device=old.device))
        return token_logprobs.sum(dim=1), mask.sum(dim=1)

    def _lens_old_logprobs(self, output: dict[str, Any], mode: str) -> torch.Tensor:
        """Per-token log-probs of the completions under the current (= sampling) weights, as TRL computes them."""
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        forward_kwargs = {key: output[key] for key in _FORWARD_KEYS if key in output}
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            result = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                output["completion_ids"].size(1),
                batch_size=batch_size,
                **forward_kwargs,
            )
        return result[0]  # (logps, entropies, aux_loss) in TRL 1.10-1.16

    def _lens_log(
        self,
        mode: str,
        correct: torch.Tensor,
        seq_logprobs: torch.Tensor,
        lengths: torch.Tensor,
        advantages: torch.Tensor,
        group_size: int,
    ) -> None:
        """The native trainer's metrics of one generation batch (`group_metrics`, the same names), which
        TRL averages over the batches of a logging window (NaN values left out) in `log`; the negative
        groups' share of the advantage mass is summed over the window instead (`log`)."""
        metrics = self._metrics[mode]
        for key, value in group_metrics(correct, seq_logprobs, lengths, advantages, group_size).items():
            if key != _SHARE:
                metrics[key].append(value)
        window = self._lens_mass.setdefault(mode, [0.0, 0.0])
        for i, mass in enumerate(advantage_mass(advantages, correct, group_size)):
            window[i] += mass
        # TRL has just appended its GRPO advantages for the completions table: show LENS's instead
        logged = self._logs["advantages"]
        for _ in range(min(advantages.numel(), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # adv/negative_group_share of the window: its negative groups' sum |A| over its whole sum |A| (0 without
        # any), as the native trainer's share of one step. A mean of the batches' shares would count a batch
        # without advantage mass (every sample of each group equally confident) as a share of 0.
        mode = "train" if self.model.training else "eval"  # as TRL's own `log` picks the metrics
        mass = self._lens_mass.pop(mode, None)
        if mass is not None:
            negative, total = mass
            self._metrics[mode][_SHARE] = [negative / total if total > 0 else 0.0]
        super().log(logs, start_time)


def _completion_text(completion: Any) -> str:
    """The text of a completion: a string, or chat messages whose assistant content is joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        parts = []
        for message in assistant:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):  # content blocks: [{"type": "text", "text": ...}, ...]
                parts.extend(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        return "\n".join(p for p in parts if p)
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def math_reward(completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 when the completion's final answer matches the gold `answer` (Math-Verify), else 0.0.

    Completions may be text or chat messages (the assistant content is checked). Plug a dataset with an
    `answer` column directly; see `lensrl.verify_math` for how the final answer is found.
    """
    from lensrl.rollout.verify import verify_math

    if len(completions) != len(answer):
        raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
    return [float(verify_math(_completion_text(c), str(a))) for c, a in zip(completions, answer, strict=True)]
