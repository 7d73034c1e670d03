"""The update step on a tiny real model: minibatches, optimizer and scheduler steps, and the passes
that must see the policy without dropout (behaviour and reference log-probs)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lensrl.config import RolloutConfig, load_config
from lensrl.core.advantages import grpo_advantages
from lensrl.policy.forward import behaviour_logprobs, trimmed_logprobs
from lensrl.policy.models import load_policy, load_tokenizer, reference_policy
from lensrl.records import ScoredRollout
from lensrl.rollout.sample import sample
from lensrl.testbed import generate_problems
from lensrl.training.update import minibatch_groups, update_policy
from tests.conftest import tiny_overrides

G = 2
ROLLOUT = RolloutConfig(group_size=G, max_new_tokens=8, generation_batch_size=64)


def _config(model_dir, *extra):
    return load_config(
        overrides=tiny_overrides(
            model_dir,
            "unused",
            "rollout.questions_per_step=8",
            f"rollout.group_size={G}",
            "optim.updates_per_rollout=4",
            *extra,
        )
    )


def _rollout(model, tokenizer, correct_per_group):
    """A real rollout of len(correct_per_group) problems x G, with the given correctness and pi_old."""
    problems = generate_problems(len(correct_per_group), seed=3)
    rollout = sample(model, tokenizer, problems, ROLLOUT, seed=0)
    rollout = ScoredRollout.of(
        rollout,
        torch.tensor([c for group in correct_per_group for c in group], dtype=torch.float32),
        *behaviour_logprobs(model, rollout, 1.0, 4),
    )
    return rollout


class _Counting(torch.optim.AdamW):
    steps = 0

    def step(self, closure=None):
        type(self).steps += 1
        return super().step(closure)


def _update(model_dir, correct_per_group, *extra):
    config = _config(model_dir, *extra)
    model, tokenizer = load_policy(config.model)
    rollout = _rollout(model, tokenizer, correct_per_group)
    _Counting.steps = 0
    optimizer = _Counting(model.parameters(), lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    advantages = grpo_advantages(rollout.correct, G)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = update_policy(
        model, None, optimizer, scheduler, rollout, advantages, config, torch.Generator().manual_seed(0)
    )
    changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return metrics, _Counting.steps, scheduler.last_epoch, changed


MIXED, NEGATIVE = (1, 0), (0, 0)


def test_every_minibatch_is_one_optimizer_and_one_scheduler_step(tiny_model_dir):
    metrics, optimizer_steps, scheduler_steps, changed = _update(tiny_model_dir, [MIXED] * 8)
    assert (optimizer_steps, scheduler_steps) == (4, 4) and changed
    assert metrics["groups/updated"] == 1.0 and metrics["skipped_updates"] == 0
    assert set(metrics) >= {"loss/policy", "clipfrac", "approx_kl", "grad_norm", "lr"}


def test_filtering_keeps_the_number_of_minibatches(tiny_model_dir):
    # 5 of 8 groups have a signal under GRPO. torch.chunk would cut 5 groups into 3 minibatches of
    # 2, 2, 1 (3 optimizer steps where an unfiltered arm takes 4); the rule is 4 minibatches of
    # 2, 1, 1, 1 groups: the same number of optimizer and scheduler steps for every arm.
    groups = [MIXED] * 5 + [NEGATIVE] * 3
    metrics, optimizer_steps, scheduler_steps, _ = _update(
        tiny_model_dir, groups, "algo.advantage=grpo", "algo.filter_groups=true"
    )
    assert (optimizer_steps, scheduler_steps) == (4, 4)
    assert metrics["groups/updated"] == 5 / 8


def test_filtering_to_fewer_groups_than_minibatches_still_steps_the_scheduler(tiny_model_dir):
    groups = [MIXED] * 3 + [NEGATIVE] * 5  # 3 kept groups, 4 minibatches: one is empty (no optimizer step)
    _, optimizer_steps, scheduler_steps, _ = _update(
        tiny_model_dir, groups, "algo.advantage=grpo", "algo.filter_groups=true"
    )
    assert (optimizer_steps, scheduler_steps) == (3, 4)
    _, optimizer_steps, scheduler_steps, changed = _update(
        tiny_model_dir, [NEGATIVE] * 8, "algo.advantage=grpo", "algo.filter_groups=true"
    )
    assert (optimizer_steps, scheduler_steps, changed) == (0, 4, False)


def test_minibatches_under_filtering_are_whole_kept_groups(tiny_model_dir):
    config = _config(tiny_model_dir, "algo.advantage=lens", "algo.filter_groups=true")
    model, tokenizer = load_policy(config.model)
    rollout = _rollout(model, tokenizer, [MIXED, NEGATIVE, (1, 1), MIXED, NEGATIVE, (1, 1), MIXED, (1, 1)])
    parts = minibatch_groups(rollout, config, torch.Generator().manual_seed(0))
    # LENS keeps negative groups (they carry its signal) and drops only the all-correct ones
    assert len(parts) == 4 and sorted(torch.cat(parts).tolist()) == [0, 1, 3, 4, 6]
    assert [len(p) for p in parts] == [2, 1, 1, 1]


def test_zero_advantages_leave_the_weights_unchanged(tiny_model_dir):
    # every group all-correct: GRPO advantages are 0, so is the gradient, and AdamW's step is 0
    metrics, optimizer_steps, _, changed = _update(tiny_model_dir, [(1, 1)] * 8, "algo.advantage=grpo")
    assert optimizer_steps == 4 and not changed and metrics["grad_norm"] == 0.0


def test_micro_batch_size_does_not_change_the_update(tiny_model_dir):
    # the micro-batch losses are normalised by the whole minibatch, so their gradients sum to it
    weights = []
    for micro in (1, 8):
        config = _config(tiny_model_dir, f"optim.micro_batch_size={micro}", "optim.updates_per_rollout=1")
        model, tokenizer = load_policy(config.model)
        rollout = _rollout(model, tokenizer, [MIXED] * 8)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        update_policy(
            model,
            None,
            optimizer,
            scheduler,
            rollout,
            grpo_advantages(rollout.correct, G),
            config,
            torch.Generator().manual_seed(0),
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)


# --- eval mode for the passes that stand for a fixed policy ---------------------------------------


def _dropout_model(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, attention_dropout=0.5)
    return model, load_tokenizer(str(model_dir))


def test_behaviour_logprobs_are_taken_without_dropout(tiny_model_dir):
    model, tokenizer = _dropout_model(tiny_model_dir)
    rollout = sample(model, tokenizer, generate_problems(4, seed=1), ROLLOUT, seed=0)
    expected, _ = behaviour_logprobs(model.eval(), rollout, 1.0, 4)
    model.train()  # as it is after the first update: pi_old must not be a noisy draw of the policy
    torch.manual_seed(1)
    got, _ = behaviour_logprobs(model, rollout, 1.0, 4)
    assert torch.equal(got, expected)
    assert model.training  # the mode is restored


def test_reference_logprobs_are_taken_without_dropout(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _dropout_model(tiny_model_dir)
    rollout = sample(model, tokenizer, generate_problems(4, seed=1), ROLLOUT, seed=0)
    model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.5, target_modules="all-linear"))
    rows = torch.arange(len(rollout.completions))
    model.train()
    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad(), reference_policy(model, None) as ref:
            draws.append(trimmed_logprobs(ref, rollout, rows, 1.0)[0])
    assert torch.equal(draws[0], draws[1]) and model.training
    with pytest.raises(AssertionError):  # the check can fail: in train mode the same pass is noisy
        torch.manual_seed(1)
        with torch.no_grad(), model.disable_adapter():
            noisy = trimmed_logprobs(model, rollout, rows, 1.0)[0]
        assert torch.equal(noisy, draws[0])


def test_normalizing_by_the_kept_rows_scales_the_loss_as_filtering_does(tiny_model_dir):
    # One minibatch of 8 groups of G = 2: 5 mixed (a signal) and 3 all-wrong (GRPO advantage 0). The
    # seq-mean loss is the sum of the 16 responses' terms over the rows it averages: "all" divides by
    # 16, "kept" by the 10 rows of the 5 mixed groups, so its gradient is 16 / 10 = 1.6 times GRPO's,
    # the factor by which filtering's own minibatches enlarge it, with every group still updated. (The
    # loss itself is about 0 at ratio 1: GRPO's advantages sum to 0 in every group.)
    groups = [MIXED] * 5 + [NEGATIVE] * 3
    norms = {}
    for rule in ("all", "kept"):
        config = _config(
            tiny_model_dir, "algo.advantage=grpo", f"algo.normalize_by={rule}", "optim.updates_per_rollout=1"
        )
        model, tokenizer = load_policy(config.model)
        rollout = _rollout(model, tokenizer, groups)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        metrics = update_policy(
            model,
            None,
            optimizer,
            scheduler,
            rollout,
            grpo_advantages(rollout.correct, G),
            config,
            torch.Generator().manual_seed(0),
        )
        norms[rule] = metrics["grad_norm"]  # before clipping
        assert metrics["groups/updated"] == 1.0
    assert norms["all"] > 0.0
    assert norms["kept"] == pytest.approx(norms["all"] * 16 / 10, rel=1e-5)
