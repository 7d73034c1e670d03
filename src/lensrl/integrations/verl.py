"""LENS in verl: a `lens` advantage estimator for verl's PPO trainers (docs/algorithm.md Sec. 3; arXiv 2510.08696).

The paper trained with verl; this module runs LENS there. The advantages come from
`lensrl.core.advantages.lens_advantages`; rollout, the clipped loss, FSDP/Megatron and logging are
verl's own. Needs `pip install "verl>=0.8,<0.10"` (tested against verl 0.8.0 and 0.9.1; `import
lensrl` never needs verl, only this module does).

Public API

* `install()`: registers the estimator under the name "lens" in verl's registry
  (`core_algos.register_adv_est`; `core_algos.get_adv_estimator_fn("lens")` finds it) and routes
  `adv_estimator == "lens"` in verl's `compute_advantage` to `compute_lens_advantage` (see
  Plumbing). Idempotent; importing this module has no side effect.
* `compute_lens_outcome_advantage(token_level_rewards, response_mask, index, old_log_probs, config)`:
  the estimator, verl's signature plus `old_log_probs`; returns `(advantages, returns)`, each of
  shape (bs, response_length): the sequence advantage on every response token, 0 on padding.
* `compute_lens_advantage(data, config) -> DataProto`: the same on a `DataProto`; reads
  `token_level_rewards`, `response_mask`, `old_log_probs` and `non_tensor_batch["uid"]`, writes
  `advantages` and `returns`.
* `compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float`: a 0/1
  reward for verl's `reward.custom_reward_function` (`lensrl.verify_math`: last `\\boxed{}` against
  the gold answer with Math-Verify); `reward_kwargs.timeout_s` sets the verifier's time limit.
* `write_verl_parquet(problems, path, ...)`: `lensrl.records.Problem`s to verl's RL parquet layout.
* `main()` / `python -m lensrl.integrations.verl`: verl's PPO entry point with LENS installed.

What the estimator does. Correctness is the sequence score, the sum of `token_level_rewards`,
and must be exactly 0 or 1 (anything else raises a ValueError: LENS is for binary verifiable
rewards, so `algorithm.use_kl_in_reward` must stay False, as it folds a KL term into the rewards).
The confidence inputs are, per response, the sum of `old_log_probs` over `response_mask` and the
number of those tokens. verl's actor computes `old_log_probs` with the logits divided by the
rollout temperature (`batch.meta_info["temperature"]`), the log-probs of the PPO ratio, as
docs/algorithm.md Sec. 4 asks. The sum is passed on as it is: `lens_advantages` reads a sum up to
`lensrl.core.advantages.LOGPROB_ROUNDOFF` above 0 (float round-off) as 0 and raises on a larger
one. verl groups responses by `uid` (one per prompt), and the rows of a group need not be adjacent
(`trainer.balance_batch` reorders them): the estimator gathers each group's rows (groups in order
of first appearance), calls `lens_advantages` on the contiguous layout and scatters the result
back. All groups must have the same size (`actor_rollout_ref.rollout.n`, at least 2), else
ValueError. A group none of whose responses has a token in `response_mask` gets advantage 0 and
is left out of that check: such rows carry no gradient whatever their advantage, and verl 0.9's v1
trainer appends such a group (one uid, responses fully masked) to make its batch divisible by the
data-parallel and mini-batch sizes.

Settings, in verl's algorithm config (Hydra adds a new key with `+`; every field is optional), the
fields of `lensrl.core.advantages.LensSettings`, with its defaults and its validation:

```text
algorithm.adv_estimator=lens
+algorithm.lens.alpha=0.25              # weight of negative groups (the paper's 0.25)
+algorithm.lens.scope=all               # "all", "mixed" or "negative" (ablations)
+algorithm.lens.d_estimator=normalized  # or "sequence"
+algorithm.lens.eps=1e-6                # added to the group std
```

An unknown key or an invalid value under `algorithm.lens` raises a ValueError naming it.
`algorithm.norm_adv_by_std_in_grpo` has no effect: LENS normalises by its own rule.

Plumbing. verl's `compute_advantage` (verl/trainer/ppo/ray_trainer.py, the same in 0.8 and 0.9)
calls a registered estimator with `token_level_rewards`, `response_mask`, `config` and `index`
only: not `old_log_probs`, which are in the batch by then. `install()` therefore also replaces
`compute_advantage` in `verl.trainer.ppo.ray_trainer`, and in every loaded `verl.*` module that
imported it by name, by a wrapper that sends `adv_estimator == "lens"` to
`compute_lens_advantage(data, config)` and every other estimator to verl's function unchanged.
A module that imports it by name after `install()` gets the wrapper. The trainers that call it:

* verl 0.8: `RayPPOTrainer` (`verl.trainer.main_ppo`, the default) through the module's own
  name, and the TransferQueue trainer `verl.trainer.main_ppo_sync`, which imports it by name.
* verl 0.9: the v1 trainer (`trainer.use_v1=True`, the default; `verl.trainer.ppo.v1`), whose
  `_compute_advantage` reads the batch from TransferQueue, old_log_probs included, and calls
  `verl.trainer.ppo.v1.utils.compute_advantage_for_multi_trajectories`, which hands every
  estimator but GRPO to `compute_advantage` imported by name into `verl.trainer.ppo.v1.utils`;
  and the legacy `RayPPOTrainer` (`trainer.use_v1=False`, `verl.trainer.main_ppo_v0`), as in 0.8.
  `verl.trainer.main_ppo_sync` is gone.

Without `install()` in the trainer's process the estimator raises a RuntimeError that
says so. verl runs the trainer (and `compute_advantage`) in a Ray actor, the TaskRunner
(`TaskRunnerV1` for the v1 trainer), not in the launching process, so `install()` must run
there: `python -m lensrl.integrations.verl` calls it in the launcher and adds the Hydra override
`++ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=lensrl.integrations.verl.install`,
with which Ray runs `install()` at the start of every worker process of the job. Any launcher
can add that override itself and keep `python -m verl.trainer.main_ppo`. lensrl must be
installed on every node.

Launch: docs/verl.md ("LENS in verl") holds the launch command with the paper's settings
(Qwen-2.5-3B-Base, 8 GPUs, vLLM rollout), the data conversion and the caveats; the tests check that
command's overrides against verl's config. Not run end to end yet: that needs GPUs and a Ray
cluster. The tests check the estimator, the plumbing through verl's real `compute_advantage` (and,
under verl 0.9, the v1 trainer's `_compute_advantage` on a batch stored as TransferQueue stores
it), and (marked slow) that Ray's setup hook installs LENS in a worker.

The entry module is `verl.trainer.main_ppo` unless a leading `--verl-entry=MODULE` names another.
Under verl 0.8, `--verl-entry=verl.trainer.main_ppo_sync` runs verl's TransferQueue trainer; under
verl 0.9 that module is gone and `verl.trainer.main_ppo` picks the trainer with `trainer.use_v1`.

Limits. Rollout-correction rejection sampling that masks out whole responses leaves them with no
tokens, which LENS rejects (no confidence) unless it masks out a whole group (advantage 0). With
`algorithm.rollout_correction.bypass_mode=True` verl sets `old_log_probs` to the rollout engine's
log-probs, which LENS then uses as well.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

try:
    from verl import DataProto
    from verl.trainer.ppo import core_algos
except ImportError as exc:  # pragma: no cover - exercised only without verl
    raise ImportError(
        f'lensrl.integrations.verl needs verl, which could not be imported ({exc}): pip install "verl>=0.8,<0.10"'
    ) from exc

from lensrl.core.advantages import LensSettings, lens_advantages
from lensrl.core.settings import read_lens_settings

__all__ = [
    "ESTIMATOR_NAME",
    "LENS_DEFAULTS",
    "SETUP_HOOK",
    "SETUP_HOOK_OVERRIDE",
    "compute_lens_advantage",
    "compute_lens_outcome_advantage",
    "compute_score",
    "install",
    "lens_settings",
    "main",
    "write_verl_parquet",
]

ESTIMATOR_NAME = "lens"
LENS_DEFAULTS: dict[str, Any] = dataclasses.asdict(LensSettings())  # the keys allowed under algorithm.lens
SETUP_HOOK = "lensrl.integrations.verl.install"
SETUP_HOOK_OVERRIDE = f"++ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={SETUP_HOOK}"
DEFAULT_ENTRY = "verl.trainer.main_ppo"

_NOT_INSTALLED = (
    "the 'lens' advantage estimator needs the old (behaviour-policy) log-probs, which verl's stock "
    "compute_advantage does not pass to estimators: run lensrl.integrations.verl.install() in the process "
    "that runs the trainer (verl's TaskRunner Ray actor), e.g. launch with `python -m lensrl.integrations.verl "
    "...` or add the Hydra override " + SETUP_HOOK_OVERRIDE
)


# ------------------------------------------------------------------------------------ estimator


def _number(value: Any) -> Any:
    """Hydra hands over `1e-5` as a string and `1` as an int: both as a float; anything else as it is."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass  # LensSettings rejects it, naming the key
    return value


def lens_settings(config: Any = None) -> dict[str, Any]:
    """LENS settings from verl's algorithm config (`config.lens`, a mapping), as a dict: the fields of a
    validated `LensSettings` (its defaults for keys not given), keyword arguments of `lens_advantages`.

    `config` may be an OmegaConf node, verl's `AlgoConfig`, a dict or None. An unknown key, or a value
    that `LensSettings` rejects, raises a ValueError naming `algorithm.lens.<key>`.
    """
    node = None
    if config is not None:
        node = config.get("lens", None) if hasattr(config, "get") else getattr(config, "lens", None)
    if node is None:
        return dataclasses.asdict(LensSettings())
    if not hasattr(node, "items"):
        raise ValueError(f"algorithm.lens must be a mapping of LENS settings, got {node!r}")
    given = {key: _number(value) if key in ("alpha", "eps") else value for key, value in node.items()}
    return dataclasses.asdict(read_lens_settings(given, "algorithm.lens."))


def _group_permutation(index: Any, has_tokens: Sequence[bool]) -> tuple[torch.Tensor, int]:
    """Row order that makes the groups (equal uids) contiguous, in order of first appearance, and G.

    A group none of whose rows has a token (`has_tokens`) is left out: no gradient flows through it
    (verl 0.9's v1 trainer pads its batch with such a group). G is 0 when no group is left.
    """
    n = len(has_tokens)
    uids = np.asarray(index, dtype=object).reshape(-1).tolist()
    if len(uids) != n:
        raise ValueError(f"index (uid) has {len(uids)} entries, the batch has {n} responses")
    rows: dict[Any, list[int]] = {}
    for i, uid in enumerate(uids):
        rows.setdefault(uid, []).append(i)
    groups = [r for r in rows.values() if any(has_tokens[i] for i in r)]
    if not groups:
        return torch.zeros(0, dtype=torch.long), 0
    sizes = Counter(len(r) for r in groups)
    if len(sizes) != 1:
        raise ValueError(
            "LENS needs every prompt group (responses sharing a uid) to hold the same number of responses; "
            f"got group sizes {dict(sorted(sizes.items()))} (size: number of groups)"
        )
    group_size = next(iter(sizes))
    if group_size < 2:
        raise ValueError(
            f"LENS needs at least 2 responses per prompt (actor_rollout_ref.rollout.n >= 2), got {group_size}"
        )
    return torch.tensor([i for r in groups for i in r], dtype=torch.long), group_size


def compute_lens_outcome_advantage(
    token_level_rewards: torch.Tensor,  # (bs, response_length)
    response_mask: torch.Tensor,  # (bs, response_length)
    index: np.ndarray,  # (bs,) uid of each response's prompt
    old_log_probs: torch.Tensor | None = None,  # (bs, response_length), at the rollout temperature
    config: Any = None,  # verl's algorithm config; LENS settings under `lens`
    **kwargs: Any,  # other fields verl passes to every estimator (e.g. reward_baselines): unused
) -> tuple[torch.Tensor, torch.Tensor]:
    """LENS advantages in verl's estimator format: `(advantages, returns)`, equal, (bs, response_length)."""
    if old_log_probs is None:
        raise RuntimeError(_NOT_INSTALLED)
    if token_level_rewards.dim() != 2 or response_mask.shape != token_level_rewards.shape:
        raise ValueError(
            "token_level_rewards and response_mask must both be (bs, response_length), got "
            f"{tuple(token_level_rewards.shape)} and {tuple(response_mask.shape)}"
        )
    if old_log_probs.shape != token_level_rewards.shape:
        raise ValueError(
            f"old_log_probs has shape {tuple(old_log_probs.shape)}, expected {tuple(token_level_rewards.shape)}"
        )
    settings = lens_settings(config)
    perm, group_size = _group_permutation(index, (response_mask.sum(dim=-1) > 0).tolist())
    with torch.no_grad():
        device = token_level_rewards.device
        perm = perm.to(device)
        mask = response_mask.to(device=device, dtype=torch.float64)
        scores = token_level_rewards.double().sum(dim=-1)
        not_binary = ~((scores[perm] == 0) | (scores[perm] == 1))  # rows of groups left out are not read
        if not_binary.any():
            bad = scores[perm][not_binary][:5].tolist()
            raise ValueError(
                "LENS is defined for binary verifiable rewards: every sequence score (the sum of "
                f"token_level_rewards) must be 0 or 1, got {int(not_binary.sum())} other value(s), e.g. {bad}. "
                "Use a 0/1 reward (e.g. lensrl.integrations.verl.compute_score) and algorithm.use_kl_in_reward=False."
            )
        lengths = mask.sum(dim=-1)
        if (lengths[perm] <= 0).any():
            raise ValueError(
                f"{int((lengths[perm] <= 0).sum())} response(s) have no token in response_mask: LENS needs at "
                "least one token per response for its confidence (rollout-correction rejection sampling that masks "
                "whole responses is not supported)"
            )
        valid = mask > 0
        # padding ignored; a sum a hair above 0 is lens_advantages' to judge (LOGPROB_ROUNDOFF)
        seq_logprobs = torch.where(valid, old_log_probs.to(device).double(), 0.0).sum(dim=-1)
        per_sequence = torch.zeros_like(scores)  # 0 for the rows of groups left out
        if group_size:
            per_sequence[perm] = lens_advantages(
                scores[perm], seq_logprobs[perm], lengths[perm], group_size, **settings
            ).double()  # computed with the rows of a group contiguous
        advantages = per_sequence.unsqueeze(-1) * mask
        out_dtype = token_level_rewards.dtype if token_level_rewards.is_floating_point() else torch.float32
        advantages = advantages.to(out_dtype)
    return advantages, advantages


compute_lens_outcome_advantage._lensrl_estimator = True  # type: ignore[attr-defined]


def compute_lens_advantage(data: DataProto, config: Any = None) -> DataProto:
    """LENS on a verl batch: writes `advantages` and `returns` into `data.batch` and returns `data`.

    Reads `token_level_rewards`, `response_mask` (derived from `attention_mask` when absent, as verl
    does), `old_log_probs` and `non_tensor_batch["uid"]`; `config` is verl's algorithm config.
    """
    batch = data.batch
    if "response_mask" not in batch.keys():
        from verl.trainer.ppo.ray_trainer import compute_response_mask

        batch["response_mask"] = compute_response_mask(data)
    missing = [key for key in ("token_level_rewards", "old_log_probs") if key not in batch.keys()]
    if missing:
        raise KeyError(f"LENS needs batch fields {missing}, missing from the DataProto (have {sorted(batch.keys())})")
    if "uid" not in data.non_tensor_batch:
        raise KeyError("LENS needs non_tensor_batch['uid'] (the prompt id of each response) to form groups")
    advantages, returns = compute_lens_outcome_advantage(
        token_level_rewards=batch["token_level_rewards"],
        response_mask=batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        old_log_probs=batch["old_log_probs"],
        config=config,
    )
    batch["advantages"] = advantages
    batch["returns"] = returns
    return data


# ------------------------------------------------------------------------------------ plumbing


def _is_lens(adv_estimator: Any) -> bool:
    return getattr(adv_estimator, "value", adv_estimator) == ESTIMATOR_NAME


def _wrap_compute_advantage(original: Any) -> Any:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def compute_advantage(data: DataProto, adv_estimator: Any, *args: Any, **kwargs: Any) -> DataProto:
        if _is_lens(adv_estimator):
            config = signature.bind(data, adv_estimator, *args, **kwargs).arguments.get("config")
            return compute_lens_advantage(data, config)
        return original(data, adv_estimator, *args, **kwargs)

    compute_advantage._lensrl_original = original  # type: ignore[attr-defined]
    return compute_advantage


def _register() -> None:
    try:
        existing = core_algos.get_adv_estimator_fn(ESTIMATOR_NAME)
    except ValueError:  # not registered yet
        existing = None
    if existing is None:
        core_algos.register_adv_est(ESTIMATOR_NAME)(compute_lens_outcome_advantage)
    elif not getattr(existing, "_lensrl_estimator", False):  # a copy of this module may have registered it
        raise ValueError(f"verl already has a different advantage estimator named {ESTIMATOR_NAME!r}: {existing}")


def install() -> None:
    """Register the `lens` estimator and route `adv_estimator == "lens"` in verl's `compute_advantage`.

    Idempotent. Usable as Ray's `worker_process_setup_hook` (it takes no argument).
    """
    _register()
    from verl.trainer.ppo import ray_trainer

    current = ray_trainer.compute_advantage
    original = getattr(current, "_lensrl_original", current)
    wrapper = current if original is not current else _wrap_compute_advantage(original)
    if "config" not in inspect.signature(original).parameters:
        raise RuntimeError(
            "this verl's compute_advantage has no `config` argument; lensrl.integrations.verl supports verl>=0.8,<0.10"
        )
    ray_trainer.compute_advantage = wrapper
    for name, module in list(sys.modules.items()):  # modules that did `from ray_trainer import compute_advantage`
        if name.startswith("verl") and module is not None and getattr(module, "compute_advantage", None) is original:
            module.compute_advantage = wrapper


# ------------------------------------------------------------------------------------ reward and data


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    timeout_s: float = 3.0,
    **kwargs: Any,
) -> float:
    """1.0 when the last `\\boxed{}` (or `#### N`) of the response equals the gold answer (Math-Verify), else 0.0.

    verl's custom reward function signature; `timeout_s` can be set with
    `reward.custom_reward_function.reward_kwargs.timeout_s`.
    """
    from lensrl.rollout.verify import verify_math

    return 1.0 if verify_math(solution_str, str(ground_truth), timeout_s=timeout_s) else 0.0


def write_verl_parquet(
    problems: Sequence[Any],
    path: str,
    *,
    template: str = "{prompt}",
    system: str | None = None,
    data_source: str = "lensrl",
    split: str = "train",
) -> int:
    """Write `lensrl.records.Problem`s in verl's RL parquet layout; returns the number of rows.

    Columns: `data_source`, `prompt` (chat messages: an optional system message and the user
    message `template` with `{prompt}` replaced by the question; verl applies the tokenizer's chat
    template), `ability` ("math"), `reward_model` ({"style": "rule", "ground_truth": answer}) and
    `extra_info` ({"split", "index", "id", "level"}).
    """
    import pandas as pd

    rows = []
    for i, problem in enumerate(problems):
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": template.replace("{prompt}", problem.prompt)})
        rows.append(
            {
                "data_source": data_source,
                "prompt": messages,
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
                "extra_info": {"split": split, "index": i, "id": str(problem.id), "level": problem.level},
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return len(rows)


# ------------------------------------------------------------------------------------ entry point


def _entry_module(entry: str) -> Any:
    try:
        return importlib.import_module(entry)
    except ModuleNotFoundError as exc:
        if exc.name != entry:
            raise  # the module exists; something it imports is missing
        hint = ""
        if entry == "verl.trainer.main_ppo_sync":
            hint = (
                ": verl 0.9 removed it; its verl.trainer.main_ppo runs the TransferQueue (v1) trainer by default "
                "(trainer.use_v1=True), so drop --verl-entry"
            )
        raise ModuleNotFoundError(f"no verl entry module {entry!r}{hint}", name=entry) from exc


def main(argv: Sequence[str] | None = None, entry: str = DEFAULT_ENTRY) -> None:
    """verl's PPO entry point (`entry`.main, Hydra) with LENS installed here and in every Ray worker.

    `argv`: Hydra overrides (default: the command line); a leading `--verl-entry=MODULE` picks the
    verl entry module (verl 0.8: `verl.trainer.main_ppo_sync` for its TransferQueue trainer; verl 0.9
    has no such module and selects its trainer with `trainer.use_v1`). Adds `SETUP_HOOK_OVERRIDE`
    unless the overrides already set a setup hook.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith("--verl-entry="):
        entry = args.pop(0).split("=", 1)[1]
    hooks = [a for a in args if "worker_process_setup_hook" in a]
    if not hooks:
        args.append(SETUP_HOOK_OVERRIDE)
    elif not any(a.endswith("=" + SETUP_HOOK) for a in hooks):
        warnings.warn(
            f"a worker_process_setup_hook is already set ({hooks[-1]}); it must call {SETUP_HOOK}() "
            "or the 'lens' estimator will fail in the trainer's Ray actor",
            RuntimeWarning,
            stacklevel=2,
        )
    install()
    module = _entry_module(entry)
    saved = sys.argv
    sys.argv = [saved[0] if saved else entry, *args]  # Hydra reads the overrides from sys.argv
    try:
        module.main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    from lensrl.integrations.verl import main as _main  # the importable module, not this __main__ copy

    _main()
