"""The GRPO-vs-LENS gradient comparison on a tiny real model: its numbers against a direct computation
with `torch.autograd.grad`, the case where both estimators give the same advantages, and that it
leaves weights, gradients, the minibatch generator and the global random state as they were."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lensrl.config import BOOKKEEPING, RolloutConfig, load_config, switch_estimator
from lensrl.core.loss import policy_loss
from lensrl.policy.distributed import World
from lensrl.policy.forward import behaviour_logprobs, by_length, trimmed_logprobs
from lensrl.policy.models import load_policy, load_tokenizer
from lensrl.records import ScoredRollout
from lensrl.rollout.sample import sample
from lensrl.testbed import generate_problems
from lensrl.training.diagnostics import (
    first_minibatch,
    format_gradient_table,
    gradient_comparison,
    gradient_stats,
    mean_metrics,
)
from lensrl.training.trainer import check_layout
from lensrl.training.update import group_rows
from tests.conftest import tiny_overrides

G = 4
MIXED, NEGATIVE, ALL_CORRECT = (1, 0, 0, 1), (0, 0, 0, 0), (1, 1, 1, 1)


def _config(model_dir, *extra):
    # 8 groups in 2 minibatches of 4; micro-batches of 3 rows do not line up with groups
    return load_config(
        overrides=tiny_overrides(
            model_dir,
            "unused",
            "model.device=cpu",
            "rollout.questions_per_step=8",
            f"rollout.group_size={G}",
            "optim.micro_batch_size=3",
            *extra,
        )
    )


def _rollout(model, tokenizer, correct_per_group):
    """A real rollout of len(correct_per_group) problems x G with the given correctness, and its pi_old."""
    rollout = sample(
        model,
        tokenizer,
        generate_problems(len(correct_per_group), seed=3),
        RolloutConfig(group_size=G, max_new_tokens=8, generation_batch_size=64),
        seed=0,
    )
    rollout = ScoredRollout.of(
        rollout,
        torch.tensor([c for group in correct_per_group for c in group], dtype=torch.float32),
        *behaviour_logprobs(model, rollout, 1.0, 4),
    )
    return rollout


def _direct_gradient(model, rollout, advantages, rows, config, train=True):
    """The first minibatch's loss in one pass over all its rows, differentiated with autograd.grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.train(train)
    logprobs, _ = trimmed_logprobs(model, rollout, rows, config.rollout.temperature)
    loss, _ = policy_loss(
        logprobs,
        rollout.logprobs_old[rows],
        advantages[rows],
        rollout.response_mask[rows],
        clip_low=config.algo.clip_low,
        clip_high=config.algo.clip_high,
        agg=config.algo.loss_agg,
        norm_length=config.rollout.max_new_tokens,
    )
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]).double()


def _expected(model, rollout, config, generator):
    """The diag/* metrics straight from their definitions, with flattened gradients."""
    groups = first_minibatch(rollout, config, generator)
    rows = group_rows(groups, G, rollout.input_ids.device)
    grpo, lens = (switch_estimator(config.algo, name).advantages(rollout) for name in ("grpo", "lens"))
    negative_group = rollout.correct.view(-1, G).sum(dim=1) == 0
    lens_negative = lens * negative_group.repeat_interleave(G)
    g_grpo, g_lens, g_neg = (_direct_gradient(model, rollout, a, rows, config) for a in (grpo, lens, lens_negative))
    return {
        "diag/cosine": torch.nn.functional.cosine_similarity(g_grpo, g_lens, dim=0).item(),
        "diag/rel_diff": ((g_lens - g_grpo).norm() / g_grpo.norm()).item(),
        "diag/negative_share": (g_neg.norm() / g_lens.norm()).item(),
        "diag/grad_norm_grpo": g_grpo.norm().item(),
        "diag/grad_norm_other": g_lens.norm().item(),
        "diag/negative_groups": negative_group[groups].double().mean().item(),
    }


@pytest.mark.parametrize(
    "groups, extra",
    [
        ([MIXED, (0, 1, 1, 1), (1, 0, 0, 0), (0, 1, 0, 1)] * 2, ["algo.loss_agg=seq-mean-token-mean"]),  # all mixed
        (
            [MIXED, NEGATIVE, ALL_CORRECT, NEGATIVE, (0, 1, 0, 0), NEGATIVE, MIXED, (1, 1, 0, 1)],
            ["algo.loss_agg=token-mean"],
        ),
        (
            [MIXED, NEGATIVE] * 4,
            ["algo.loss_agg=seq-mean-token-sum-norm", "algo.alpha=1.0", "algo.d_estimator=sequence"],
        ),
    ],
)
def test_the_comparison_equals_a_direct_computation(tiny_model_dir, groups, extra):
    config = _config(tiny_model_dir, *extra)
    model, tokenizer = load_policy(config.model)
    rollout = _rollout(model, tokenizer, groups)
    generator = torch.Generator().manual_seed(5)
    got = gradient_comparison(model, rollout, config, generator)
    expected = _expected(model, rollout, config, generator)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert 1 - got["diag/cosine"] == pytest.approx(1 - expected["diag/cosine"], rel=1e-3)  # cosine is near 1
    assert 0 < got["diag/rel_diff"] and got["diag/cosine"] < 1 - 1e-6  # LENS moves mixed groups too
    if all(sum(g) not in (0, G) for g in groups):  # every group mixed: nothing from negative groups
        assert got["diag/negative_share"] == 0 and got["diag/negative_groups"] == 0
    else:
        assert got["diag/negative_share"] > 0 and got["diag/negative_groups"] > 0


def test_the_other_estimators_norm_is_named_for_no_estimator_in_particular(tiny_model_dir):
    # an NGRPO run compares GRPO with NGRPO: the second norm is NGRPO's gradient's, so no key may call it LENS's
    config = _config(tiny_model_dir, "algo.advantage=ngrpo")
    model, tokenizer = load_policy(config.model)
    rollout = _rollout(model, tokenizer, [MIXED, NEGATIVE] * 4)
    generator = torch.Generator().manual_seed(5)
    got = gradient_comparison(model, rollout, config, generator)
    rows = group_rows(first_minibatch(rollout, config, generator), G, rollout.input_ids.device)
    ngrpo = _direct_gradient(model, rollout, config.algo.advantages(rollout), rows, config)
    assert got["diag/grad_norm_other"] == pytest.approx(ngrpo.norm().item(), rel=1e-5)
    assert not any("lens" in key for key in got)


def _dropout_model(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, attention_dropout=0.5)
    return model, load_tokenizer(str(model_dir))


def test_equal_advantages_give_cosine_one_and_no_difference_even_with_dropout(tiny_model_dir):
    # scope=negative: mixed groups are plain GRPO; alpha=0: negative groups get 0, as under GRPO
    config = _config(tiny_model_dir, "algo.scope=negative", "algo.alpha=0")
    model, tokenizer = _dropout_model(tiny_model_dir)
    rollout = _rollout(model, tokenizer, [MIXED, NEGATIVE, (1, 1, 0, 1), NEGATIVE] * 2)
    grpo, lens = (switch_estimator(config.algo, name).advantages(rollout) for name in ("grpo", "lens"))
    assert torch.equal(grpo, lens) and grpo.abs().sum() > 0
    generator = torch.Generator().manual_seed(0)
    got = gradient_comparison(model, rollout, config, generator)
    # the passes draw the same dropout masks: identical gradients, not merely close ones
    assert got["diag/rel_diff"] == 0.0 and got["diag/negative_share"] == 0.0
    assert got["diag/cosine"] == pytest.approx(1.0, abs=1e-12)
    assert got["diag/grad_norm_grpo"] == got["diag/grad_norm_other"] > 0
    odd = [int(q) % 2 for q in first_minibatch(rollout, config, generator)]  # the odd groups are negative
    assert got["diag/negative_groups"] == sum(odd) / 4 > 0


def test_weights_gradients_generator_and_random_state_are_left_as_they_were(tiny_model_dir):
    config = _config(tiny_model_dir)
    model, tokenizer = _dropout_model(tiny_model_dir)  # in train mode dropout draws from torch's generator
    rollout = _rollout(model, tokenizer, [MIXED, NEGATIVE] * 4)
    params = list(model.parameters())
    for i, p in enumerate(params):  # gradients left by an earlier update, and one never computed
        p.grad = None if i == 0 else torch.randn_like(p)
    weights = [p.detach().clone() for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    generator = torch.Generator().manual_seed(7)
    generator_state, random_state = generator.get_state(), torch.get_rng_state()
    model.eval()
    got = gradient_comparison(model, rollout, config, generator)
    assert got["diag/grad_norm_other"] > 0
    assert all(torch.equal(p, w) for p, w in zip(params, weights))
    assert params[0].grad is None and all(torch.equal(p.grad, g) for p, g in zip(params[1:], grads[1:]))
    assert torch.equal(generator.get_state(), generator_state) and torch.equal(torch.get_rng_state(), random_state)
    assert not model.training
    # the check can fail: a train-mode pass of this model does draw from the global generator
    model.train()
    trimmed_logprobs(model, rollout, torch.arange(4), 1.0)
    assert not torch.equal(torch.get_rng_state(), random_state)


def test_nothing_to_compare_gives_no_metrics(tiny_model_dir):
    # GRPO with filtering drops negative groups: an all-negative rollout leaves every minibatch empty
    config = _config(tiny_model_dir, "algo.advantage=grpo", "algo.filter_groups=true")
    model, tokenizer = load_policy(config.model)
    rollout = _rollout(model, tokenizer, [NEGATIVE] * 8)
    assert gradient_comparison(model, rollout, config, torch.Generator().manual_seed(0)) == {}
    rollout.logprobs_old[0, 0] = math.nan  # non-finite behaviour log-probs: no LENS advantages
    assert gradient_comparison(model, rollout, _config(tiny_model_dir), torch.Generator().manual_seed(0)) == {}


def test_gradient_stats_by_hand():
    g_grpo, g_lens = [torch.tensor([3.0, 0.0]), torch.tensor([0.0])], [torch.tensor([3.0, 4.0]), torch.tensor([0.0])]
    stats = gradient_stats(g_grpo, g_lens, negative_norm=2.0)
    assert stats == pytest.approx(
        {
            "diag/cosine": 9 / 15,
            "diag/rel_diff": 4 / 3,
            "diag/negative_share": 2 / 5,
            "diag/grad_norm_grpo": 3.0,
            "diag/grad_norm_other": 5.0,
        }
    )
    zero = [torch.zeros(2), torch.zeros(1)]  # e.g. a minibatch of negative groups: GRPO's gradient is 0
    stats = gradient_stats(zero, g_lens, negative_norm=5.0)
    assert math.isnan(stats["diag/cosine"]) and math.isnan(stats["diag/rel_diff"])
    assert stats["diag/negative_share"] == 1.0


def test_means_skip_undefined_values_and_the_table_shows_them():
    records = [{"diag/cosine": 0.5, "diag/rel_diff": math.nan}, {"diag/cosine": 1.0, "diag/rel_diff": math.nan}, {}]
    means = mean_metrics(records)
    assert means["diag/cosine"] == 0.75 and math.isnan(means["diag/rel_diff"])
    table = format_gradient_table({"models": {"runs/x": {"rollouts": records, "mean": means}}})
    lines = table.splitlines()
    assert lines[0].split() == ["model", "rollout", "cosine", "rel_diff", "negative_share", "negative_groups"]
    assert lines[-1].split()[:4] == ["runs/x", "mean", "0.750000", "nan"] and len(lines) == 5


def test_the_option_is_bookkeeping_and_needs_a_single_process():
    config = load_config(
        overrides=["run.diagnostic_every=5", "rollout.questions_per_step=8", "optim.updates_per_rollout=2"]
    )
    assert "run.diagnostic_every" in BOOKKEEPING
    check_layout(config, World())
    with pytest.raises(ValueError, match="run.diagnostic_every needs a single process"):
        check_layout(config, World(rank=0, size=2))
    check_layout(
        load_config(overrides=["rollout.questions_per_step=8", "optim.updates_per_rollout=2"]), World(rank=0, size=2)
    )


def test_gradients_are_taken_in_train_mode_as_the_update_takes_them(tiny_model_dir):
    # one micro-batch (longest rows first, as `by_length` orders them) and a fixed random state: the
    # GRPO pass draws the same dropout masks as a direct train-mode pass over those rows
    config = _config(tiny_model_dir, "optim.micro_batch_size=64")
    model, tokenizer = _dropout_model(tiny_model_dir)
    rollout = _rollout(model, tokenizer, [MIXED, NEGATIVE] * 4)
    generator = torch.Generator().manual_seed(0)
    rows = group_rows(first_minibatch(rollout, config, generator), G, rollout.input_ids.device)
    rows = by_length(rows, rollout.lengths, len(rows))[0]
    grpo = switch_estimator(config.algo, "grpo").advantages(rollout)
    torch.manual_seed(11)
    train_norm = _direct_gradient(model, rollout, grpo, rows, config).norm().item()
    model.eval()
    torch.manual_seed(11)
    got = gradient_comparison(model, rollout, config, generator)
    assert got["diag/grad_norm_grpo"] == pytest.approx(train_norm, rel=1e-6)
    eval_norm = _direct_gradient(model.eval(), rollout, grpo, rows, config, train=False).norm().item()
    assert eval_norm != pytest.approx(train_norm, rel=1e-3)  # the check can fail: dropout changes the gradient
