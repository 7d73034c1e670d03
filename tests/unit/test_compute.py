"""Compute accounting by hand: what a rollout cost (`records.Compute`), the update's samples, the
metrics, the totals rebuilt from an older log, and the budgets."""

import pytest
import torch

from lensrl.config import RunConfig, load_config
from lensrl.records import Compute, Problem, Rollout
from lensrl.training.metrics import compute_from_metrics, compute_metrics
from lensrl.training.trainer import budgets_reached


def _rollout(lengths: list[int], group_size: int, width: int = 6) -> Rollout:
    """A rollout whose responses have these lengths (response-mask ones), prompts of 3 tokens."""
    n = len(lengths)
    mask = torch.tensor([[1.0] * k + [0.0] * (width - k) for k in lengths])
    problems = [Problem(f"q{i}", "1") for i in range(n // group_size)]
    return Rollout(
        problems,
        group_size,
        input_ids=torch.zeros(n, 3 + width, dtype=torch.long),
        prompt_mask=torch.ones(n, 3),
        response_mask=mask,
        completions=[""] * n,
        truncated=torch.tensor([k == width for k in lengths]),
    )


def test_a_rollout_costs_its_prompts_samples_and_response_tokens():
    # 2 prompts x 3 samples, responses of 3, 1, 6, 2, 2, 0 tokens: 14 tokens (the prompts' 18 do not count)
    rollout = _rollout([3, 1, 6, 2, 2, 0], group_size=3)
    assert Compute.of(rollout) == Compute(prompts=2, samples=6, tokens=14, samples_updated=0)


def test_compute_adds_field_by_field_and_round_trips():
    # two rounds of generation in one step, then the update's samples: everything adds up
    first, second = Compute(2, 6, 14), Compute(1, 3, 5, 3)
    total = first + second
    assert total == Compute(prompts=3, samples=9, tokens=19, samples_updated=3)
    assert sum([first, second], Compute()) == total and Compute() + first == first
    assert Compute.from_json(total.to_json()) == total
    assert total.to_json() == {"prompts": 3, "samples": 9, "tokens": 19, "samples_updated": 3}
    with pytest.raises(TypeError):
        total + 1  # noqa: B018


def test_metrics_of_a_step_and_of_the_totals():
    step = Compute(4, 16, 177, 8)
    assert compute_metrics(step) == {
        "compute/prompts": 4,
        "compute/samples": 16,
        "compute/tokens": 177,
        "compute/samples_updated": 8,
    }
    assert compute_metrics(step, "total_") == {
        "compute/total_prompts": 4,
        "compute/total_samples": 16,
        "compute/total_tokens": 177,
        "compute/total_samples_updated": 8,
    }


def test_totals_are_rebuilt_from_a_log_written_before_compute_accounting():
    config = load_config(overrides=["rollout.questions_per_step=4", "rollout.group_size=4"])
    old = [
        # 4 x 4 samples of mean length 11.0625: 177 tokens; all 4 groups updated: 16 samples
        {"step": 1, "response_len/mean": 11.0625, "groups/updated": 1.0},
        # 3 of 4 groups updated (filtered): 12 samples; 16 x 12.0 = 192 tokens
        {"step": 2, "response_len/mean": 12.0, "groups/updated": 0.75},
        # a step whose whole update was skipped logs no groups/updated: 0 samples updated
        {"step": 3, "response_len/mean": 0.5, "skipped_updates": 2},
    ]
    assert compute_from_metrics(old, config) == Compute(
        prompts=12, samples=48, tokens=177 + 192 + 8, samples_updated=28
    )
    # a record that logs its compute gives its own numbers, whatever the config says
    new = {"step": 4, "response_len/mean": 1.0, **compute_metrics(Compute(1, 2, 3, 2))}
    assert compute_from_metrics([*old, new], config) == Compute(13, 50, 380, 30)
    assert compute_from_metrics([], config) == Compute()


def test_budgets_are_reached_when_the_totals_reach_them():
    total = Compute(prompts=8, samples=32, tokens=369)
    assert budgets_reached(RunConfig(), total) == []  # no budget
    assert budgets_reached(RunConfig(max_samples=33), total) == []
    assert budgets_reached(RunConfig(max_samples=32), total) == ["run.max_samples"]  # reached exactly
    assert budgets_reached(RunConfig(max_tokens=300, max_samples=100), total) == ["run.max_tokens"]
    assert budgets_reached(RunConfig(max_tokens=369, max_samples=32), total) == ["run.max_samples", "run.max_tokens"]
    with pytest.raises(ValueError, match="max_tokens"):
        RunConfig(max_tokens=0)


def test_budget_fields_are_part_of_what_a_run_computes():
    from lensrl.config import BOOKKEEPING

    assert "run.max_samples" not in BOOKKEEPING and "run.max_tokens" not in BOOKKEEPING
    # a budget that run.steps does not reach is allowed: run.steps is the cap
    config = load_config(overrides=["run.steps=1", "run.max_tokens=1000000000", "run.max_samples=1000000000"])
    assert (config.run.max_tokens, config.run.max_samples) == (10**9, 10**9)


def test_the_update_counts_the_samples_of_the_groups_it_used(tiny_model_dir):
    from lensrl.core.advantages import grpo_advantages
    from lensrl.policy.forward import behaviour_logprobs
    from lensrl.policy.models import load_policy
    from lensrl.records import ScoredRollout
    from lensrl.rollout.sample import sample
    from lensrl.testbed import generate_problems
    from lensrl.training.update import skip_update, update_policy
    from tests.conftest import tiny_overrides

    # 8 groups of 2, 5 of them mixed: GRPO with filtering updates on 5 groups, 10 samples; without, 16
    correct = torch.tensor([1.0, 0.0] * 5 + [0.0, 0.0] * 3)
    for filtering, samples in (("true", 10), ("false", 16)):
        config = load_config(
            overrides=tiny_overrides(
                tiny_model_dir,
                "unused",
                "rollout.questions_per_step=8",
                "rollout.group_size=2",
                "rollout.max_new_tokens=8",
                "optim.updates_per_rollout=4",
                "algo.advantage=grpo",
                f"algo.filter_groups={filtering}",
            )
        )
        model, tokenizer = load_policy(config.model)
        rollout = sample(model, tokenizer, generate_problems(8, seed=3), config.rollout, seed=0)
        rollout = ScoredRollout.of(rollout, correct, *behaviour_logprobs(model, rollout, 1.0, 4))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        metrics = update_policy(
            model, None, optimizer, scheduler, rollout, grpo_advantages(correct, 2), config, torch.Generator()
        )
        assert metrics["compute/samples_updated"] == samples
    assert skip_update(scheduler, 4)["compute/samples_updated"] == 0  # a step skipped whole updates nothing
