"""Groups of different sizes through the pipeline: records, the chunk rule, both samplers, a collected
rollout's advantages and update on the tiny model, the rollout metrics and the sample log; and with
every count equal to G, the default path bit for bit."""

import pytest
import torch

from lensrl.config import ModelConfig, RolloutConfig, load_config, switch_estimator
from lensrl.core.advantages import grpo_advantages, lens_advantages
from lensrl.policy.models import load_policy
from lensrl.records import Problem, Rollout
from lensrl.rollout.collect import collect_rollout
from lensrl.rollout.compact import decode_compact
from lensrl.rollout.gather import merge_rollouts
from lensrl.rollout.sample import sample
from lensrl.runs.samples import sample_record
from lensrl.seeds import chunk_lengths, first_chunk, first_sized_chunk, problems_per_chunk
from lensrl.testbed import generate_problems
from lensrl.training.diagnostics import gradient_comparison
from lensrl.training.metrics import rollout_metrics
from lensrl.training.update import group_rows, minibatch_groups, update_policy
from tests.conftest import tiny_overrides

SIZES = (2, 4, 3, 5)  # 14 rows


# ---------------------------------------------------------------- records and the chunk rule


def _bare_rollout(group_size, n_problems, rows):
    return Rollout(
        problems=[Problem(f"Q{i}", "1") for i in range(n_problems)],
        group_size=group_size,
        input_ids=torch.zeros(rows, 3, dtype=torch.long),
        prompt_mask=torch.ones(rows, 1),
        response_mask=torch.ones(rows, 2),
        completions=[""] * rows,
        truncated=torch.zeros(rows, dtype=torch.bool),
    )


def test_a_rollout_knows_its_group_sizes_and_offsets():
    unequal = _bare_rollout([2, 4, 3, 5], 4, 14)
    assert unequal.group_size == SIZES and unequal.group_sizes == SIZES
    assert unequal.group_offsets == (0, 2, 6, 9, 14)
    equal = _bare_rollout(3, 4, 12)
    assert equal.group_size == 3 and equal.group_sizes == (3, 3, 3, 3) and equal.group_offsets == (0, 3, 6, 9, 12)
    assert _bare_rollout((3, 3, 3, 3), 4, 12).group_size == 3  # equal sizes are the int G
    with pytest.raises(ValueError, match="3 group sizes for 4 problems"):
        _bare_rollout((2, 4, 8), 4, 14)
    with pytest.raises(ValueError, match="summing to 13 for 14 rows"):
        _bare_rollout((2, 4, 3, 4), 4, 14)
    merged = merge_rollouts([equal, unequal, equal], pad_token_id=0)
    assert merged.group_size == (3,) * 4 + SIZES + (3,) * 4
    assert merge_rollouts([equal, equal], pad_token_id=0).group_size == 3


def test_chunks_hold_whole_groups_up_to_the_batch_rows():
    # sizes 2, 4, 3, 5: with 6 rows a chunk, [2 + 4], [3] (3 + 5 > 6), [5]; with 5 rows every group
    # alone but none left out; a group larger than the batch is a chunk of its own
    assert chunk_lengths(SIZES, 6) == [2, 1, 1]
    assert chunk_lengths(SIZES, 8) == [2, 2]
    assert chunk_lengths(SIZES, 5) == [1, 1, 1, 1]
    assert chunk_lengths(SIZES, 1) == [1, 1, 1, 1]
    assert chunk_lengths(SIZES, 100) == [4]
    # rank 1 of 2 samples groups (3, 5): after rank 0's one chunk of (2, 4)
    assert first_sized_chunk(1, [(2, 4), (3, 5)], 6) == 1 and first_sized_chunk(0, [(2, 4), (3, 5)], 6) == 0
    # every count G: the equal-size rule and numbering
    for g, batch, q in [(4, 8, 10), (4, 3, 5), (3, 10, 7), (16, 512, 32)]:
        per_chunk = problems_per_chunk(batch, g)
        assert chunk_lengths([g] * q, batch) == [per_chunk] * (q // per_chunk) + (
            [q % per_chunk] if q % per_chunk else []
        )
        for rank in range(3):
            assert first_sized_chunk(rank, [[g] * q] * 3, batch) == first_chunk(rank, q, per_chunk)


# ---------------------------------------------------------------- sampling


def _rows(rollout):
    """Each row's prompt and response tokens, without padding."""
    p = rollout.prompt_len
    return [
        (ids[:p][pm > 0].tolist(), ids[p:][rm > 0].tolist())
        for ids, pm, rm in zip(rollout.input_ids, rollout.prompt_mask, rollout.response_mask)
    ]


def _assert_rows_are_their_problems(rollout, tokenizer, problems, sizes):
    assert rollout.group_sizes == tuple(sizes) and len(rollout.completions) == sum(sizes)
    assert rollout.input_ids.shape[0] == rollout.response_mask.shape[0] == rollout.truncated.shape[0] == sum(sizes)
    rows, offsets = _rows(rollout), rollout.group_offsets
    for q, problem in enumerate(problems):
        prompt = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        assert all(rows[i][0] == prompt for i in range(offsets[q], offsets[q + 1])), q


SAMPLERS = {
    "generate": {},
    "compact": {"sampler": "compact"},
    "compact-shared": {"sampler": "compact", "share_prompts": True, "behaviour_logprobs": "sampler"},
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_counts_per_problem(tiny_model_dir, sampler):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    problems = generate_problems(4, levels=[1, 3, 5], seed=2)  # prompts of different lengths
    config = RolloutConfig(group_size=4, max_new_tokens=10, generation_batch_size=6, **SAMPLERS[sampler])
    rollout = sample(model, tokenizer, problems, config, seed=3, samples=list(SIZES))
    _assert_rows_are_their_problems(rollout, tokenizer, problems, SIZES)
    if config.behaviour_logprobs == "sampler":
        assert rollout.sampler_logprobs.shape == rollout.response_mask.shape
    # chunks [2 + 4], [3], [5] are seeded on their own: the last two problems sampled alone from
    # chunk 1 on draw the same rows (what a second rank sampling them does)
    rest = sample(model, tokenizer, problems[2:], config, seed=3, samples=SIZES[2:], first_chunk=1)
    assert _rows(rest) == _rows(rollout)[6:]
    # every count G is the rollout of group_size G, bit for bit
    equal = sample(model, tokenizer, problems, config, seed=3, samples=[4] * 4)
    default = sample(model, tokenizer, problems, config, seed=3)
    assert equal.group_size == default.group_size == 4
    for name in ("input_ids", "prompt_mask", "response_mask", "truncated", "sampler_logprobs"):
        a, b = getattr(equal, name), getattr(default, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    assert equal.completions == default.completions


def test_sample_checks_the_counts(tiny_model_dir):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    problems = generate_problems(2, seed=2)
    config = RolloutConfig(group_size=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="3 sample counts for 2 problems"):
        sample(model, tokenizer, problems, config, seed=0, samples=[2, 2, 2])
    with pytest.raises(ValueError, match="ints >= 1"):
        sample(model, tokenizer, problems, config, seed=0, samples=[2, 0])
    with pytest.raises(ValueError, match="not both"):
        sample(model, tokenizer, problems, config, seed=0, samples=[2, 3], group_size=2)


def test_shared_prompts_in_runs_of_different_lengths_draw_what_the_unshared_prefill_draws():
    # as for runs of one length (test_sampler): on the testbed's policy on CPU the prefill of one
    # prompt rounds exactly as that of its copies, so the draws are the same tokens for the seed
    model, tokenizer = load_policy(ModelConfig(name_or_path="testbed"))
    problems = generate_problems(5, levels=[1, 3, 5], seed=2)
    runs = [4, 2, 5, 3, 2]
    enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = (enc[k].repeat_interleave(torch.tensor(runs), 0) for k in ("input_ids", "attention_mask"))
    stop = [tokenizer.eos_token_id]
    torch.manual_seed(1)
    unshared = decode_compact(model, ids, mask, 1.0, 1.0, 48, stop, tokenizer.pad_token_id)
    torch.manual_seed(1)
    shared = decode_compact(model, ids, mask, 1.0, 1.0, 48, stop, tokenizer.pad_token_id, shared_prompts=runs)
    assert torch.equal(shared, unshared)
    with pytest.raises(ValueError, match="runs of identical prompts"):
        decode_compact(model, ids, mask, 1.0, 1.0, 4, stop, tokenizer.pad_token_id, shared_prompts=[5, 1, 5, 3, 2])
    with pytest.raises(ValueError, match="sum to the 16 rows"):
        decode_compact(model, ids, mask, 1.0, 1.0, 4, stop, tokenizer.pad_token_id, shared_prompts=[4, 2, 5, 3])


# ---------------------------------------------------------------- a step: collect, advantages, update


def _config(model_dir, *extra):
    return load_config(
        overrides=tiny_overrides(
            model_dir,
            "unused",
            "rollout.questions_per_step=4",
            "rollout.group_size=4",
            "rollout.generation_batch_size=6",
            "optim.updates_per_rollout=2",
            "optim.micro_batch_size=3",
            *extra,
        )
    )


class _Recording:
    """A verifier that notes the gold answer of every call: the problem `score` paired each row with."""

    def __init__(self):
        self.answers = []

    def __call__(self, completion, answer):
        self.answers.append(answer)
        return len(completion) % 3 == 0  # right and wrong answers in no particular pattern


def _step(model_dir, samples, *extra):
    config = _config(model_dir, *extra)
    model, tokenizer = load_policy(config.model)
    problems = generate_problems(4, levels=[1, 2, 3], seed=5)
    verifier = _Recording()
    rollout = collect_rollout(model, tokenizer, problems, config, 7, verifier, samples=samples).rollout
    advantages = config.algo.advantages(rollout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    metrics = update_policy(
        model, None, optimizer, scheduler, rollout, advantages, config, torch.Generator().manual_seed(0)
    )
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return config, tokenizer, problems, verifier, rollout, advantages, metrics, weights, model


def test_a_step_with_groups_of_different_sizes(tiny_model_dir):
    before = torch.cat([p.detach().flatten() for p in load_policy(_config(tiny_model_dir).model)[0].parameters()])
    config, tokenizer, problems, verifier, rollout, advantages, metrics, weights, model = _step(tiny_model_dir, SIZES)
    _assert_rows_are_their_problems(rollout, tokenizer, problems, SIZES)
    offsets = rollout.group_offsets
    assert verifier.answers == [problems[q].answer for q in range(4) for _ in range(SIZES[q])]
    assert rollout.correct.shape == rollout.seq_logprobs.shape == advantages.shape == (14,)
    # the estimators read each group with its own size
    lens = lens_advantages(rollout.correct, rollout.seq_logprobs, rollout.lengths, SIZES)
    assert torch.equal(advantages, lens)  # LENS is the default estimator
    for q, (a, b) in enumerate(zip(offsets, offsets[1:])):
        alone = lens_advantages(rollout.correct[a:b], rollout.seq_logprobs[a:b], rollout.lengths[a:b], b - a)
        torch.testing.assert_close(advantages[a:b], alone, msg=f"group {q}")
    grpo = switch_estimator(config.algo, "grpo").advantages(rollout)
    torch.testing.assert_close(grpo, grpo_advantages(rollout.correct, SIZES))
    assert grpo.abs().sum() > 0 and advantages.abs().sum() > 0  # some group is mixed
    # the update: minibatches of whole groups, every one of them updated, and the weights moved
    assert metrics["groups/updated"] == 1.0 and metrics["skipped_updates"] == 0
    assert not torch.equal(weights, before)
    parts = minibatch_groups(rollout, config, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == [0, 1, 2, 3] and [len(p) for p in parts] == [2, 2]
    for part in parts:
        rows = group_rows(part, rollout.group_size, torch.device("cpu")).tolist()
        assert rows == [i for q in part.tolist() for i in range(offsets[q], offsets[q + 1])]
    # the GRPO-vs-LENS gradient comparison on the first minibatch (groups of their own sizes)
    diag = gradient_comparison(model, rollout, config, torch.Generator().manual_seed(0))
    first = parts[0].tolist()
    negative = [q for q in first if rollout.correct[offsets[q] : offsets[q + 1]].sum() == 0]
    assert diag["diag/negative_groups"] == len(negative) / len(first)
    assert diag["diag/grad_norm_other"] > 0
    # the metrics and the sample log, with groups of their own sizes
    step = rollout_metrics(rollout, advantages, config.algo)
    assert step["reward"] == pytest.approx(rollout.correct.mean().item())
    assert sum(step[f"groups/{k}"] for k in ("negative", "mixed", "all_correct")) == pytest.approx(1.0)
    record = sample_record(rollout, advantages, config.algo, step=1, groups=4)
    assert [len(g["samples"]) for g in record["groups"]] == list(SIZES)
    assert [s["advantage"] for g in record["groups"] for s in g["samples"]] == pytest.approx(advantages.tolist())


def test_every_count_equal_to_g_is_the_default_step_bit_for_bit(tiny_model_dir):
    default = _step(tiny_model_dir, None)
    equal = _step(tiny_model_dir, [4] * 4)
    assert equal[4].group_size == default[4].group_size == 4
    for name in ("input_ids", "response_mask", "correct", "logprobs_old", "entropy"):
        assert torch.equal(getattr(equal[4], name), getattr(default[4], name)), name
    assert torch.equal(equal[5], default[5])  # advantages
    assert equal[6] == default[6]  # update metrics
    assert torch.equal(equal[7], default[7])  # weights


def test_micro_batches_and_filtering_with_groups_of_different_sizes(tiny_model_dir):
    # the micro-batch losses are normalised by the whole minibatch's sequences: its size does not
    # change the update; filtering keeps whole groups of their own sizes
    weights = [_step(tiny_model_dir, SIZES, f"optim.micro_batch_size={m}")[7] for m in (1, 14)]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)
    config, _, _, _, rollout, _, metrics, _, _ = _step(tiny_model_dir, SIZES, "algo.filter_groups=true")
    right = [int(rollout.correct[a:b].sum()) for a, b in zip(rollout.group_offsets, rollout.group_offsets[1:])]
    kept = [q for q, n in enumerate(right) if n < SIZES[q]]  # LENS keeps negative and mixed groups
    assert len(kept) < 4  # some group is all correct
    assert metrics["groups/updated"] == len(kept) / 4
    parts = minibatch_groups(rollout, config, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == kept
