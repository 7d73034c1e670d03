"""The compacting sampler: the distribution of `generate`, exact draws before any row stops, and a
cache that stays right when finished rows leave the batch."""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from lensrl.config import ModelConfig, RolloutConfig
from lensrl.policy.models import load_policy
from lensrl.rollout.compact import decode_compact, sampling_probs
from lensrl.rollout.sample import sample
from lensrl.testbed import generate_problems


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_sampling_probs_equal_transformers_warpers(temperature, top_p):
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    warped = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1.0:
        warped = TopPLogitsWarper(top_p)(None, warped)
    torch.testing.assert_close(sampling_probs(logits, temperature, top_p), warped.softmax(-1), rtol=0, atol=1e-7)


def _prompts(tokenizer, n_problems=3, group=4):
    problems = generate_problems(n_problems, levels=[1, 3, 5], seed=2)  # different lengths: left padding
    enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].repeat_interleave(group, 0), enc["attention_mask"].repeat_interleave(group, 0)


def test_draws_equal_generate_while_no_row_has_stopped(tiny_model_dir):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    ids, mask = _prompts(tokenizer)
    never = [len(tokenizer)]  # an id past the vocabulary: no row ever stops, so both draw over every row
    torch.manual_seed(5)
    mine = decode_compact(model, ids, mask, 0.8, 0.9, 12, never, tokenizer.pad_token_id)
    torch.manual_seed(5)
    config = GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_p=0.9,
        top_k=0,
        max_new_tokens=12,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=never,
    )
    model.generation_config = GenerationConfig()
    theirs = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1] :]
    assert torch.equal(mine, theirs)


def _reference(model, ids, mask, temperature, top_p, max_new_tokens, stop, pad):
    """No cache, no compaction: every step re-reads each going row's whole text; the same draws per step."""
    responses = torch.full((len(ids), max_new_tokens), pad)
    going = torch.arange(len(ids))
    for t in range(max_new_tokens):
        full_ids = torch.cat([ids[going], responses[going, :t]], dim=1)
        full_mask = torch.cat([mask[going], torch.ones(len(going), t, dtype=mask.dtype)], dim=1)
        position_ids = (full_mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids).logits[:, -1]
        token = torch.multinomial(sampling_probs(logits, temperature, top_p), 1).squeeze(1)
        responses[going, t] = token
        going = going[~torch.isin(token, torch.tensor(stop))]
        if len(going) == 0:
            return responses[:, : t + 1]
    return responses


def test_rows_that_stop_leave_the_batch_and_the_rest_decode_as_without_a_cache():
    # the testbed's trained policy: its next token depends on the whole text, so a cache row that went
    # to the wrong sample would change the draws; its answers end at EOS after 10-40 tokens
    model, tokenizer = load_policy(ModelConfig(name_or_path="testbed"))
    ids, mask = _prompts(tokenizer, n_problems=6)
    stop = [tokenizer.eos_token_id]
    torch.manual_seed(1)
    mine = decode_compact(model, ids, mask, 1.5, 1.0, 48, stop, tokenizer.pad_token_id)
    torch.manual_seed(1)
    reference = _reference(model, ids, mask, 1.5, 1.0, 48, stop, tokenizer.pad_token_id)
    stopped_at = {int((row == tokenizer.eos_token_id).int().argmax()) for row in reference if (row == stop[0]).any()}
    assert len(stopped_at) >= 4  # rows stop at many different steps
    assert torch.equal(mine, reference)


def test_sample_with_the_compact_sampler_gives_a_scored_rollout(tiny_model_dir):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    problems = generate_problems(4, levels=[1, 2], seed=0)
    config = RolloutConfig(group_size=4, max_new_tokens=10, generation_batch_size=64, sampler="compact")
    rollout = sample(model, tokenizer, problems, config, seed=3)
    again = sample(model, tokenizer, problems, config, seed=3)
    assert torch.equal(rollout.input_ids, again.input_ids)  # seeded
    assert rollout.input_ids.shape[0] == 16 and len(rollout.completions) == 16
    assert (rollout.lengths >= 1).all() and (rollout.lengths <= 10).all()


def test_compact_sampler_runs_a_lora_model(tiny_chat_model_dir):
    config = ModelConfig(name_or_path=str(tiny_chat_model_dir), lora={"r": 4})
    model, tokenizer = load_policy(config)
    problems = generate_problems(2, levels=[1], seed=0)
    rollout = sample(
        model, tokenizer, problems, RolloutConfig(group_size=3, max_new_tokens=6, sampler="compact"), seed=0
    )
    assert rollout.input_ids.shape[0] == 6 and (rollout.lengths >= 1).all()


def test_shared_prompts_draw_what_the_unshared_prefill_draws():
    # each prompt through the model once, its cache copied to its G rows: on the testbed's policy (the
    # carry one, and signs, on CPU) the prefill of one prompt rounds exactly as that of G copies, so the
    # draws are the same tokens for the seed, rows that stop early included
    for name in ("testbed", "testbed:signs"):
        model, tokenizer = load_policy(ModelConfig(name_or_path=name))
        ids, mask = _prompts(tokenizer, n_problems=6)
        stop = [tokenizer.eos_token_id]
        torch.manual_seed(1)
        unshared = decode_compact(model, ids, mask, 1.0, 1.0, 48, stop, tokenizer.pad_token_id)
        torch.manual_seed(1)
        shared = decode_compact(model, ids, mask, 1.0, 1.0, 48, stop, tokenizer.pad_token_id, shared_prompts=4)
        assert torch.equal(shared, unshared), name
    with pytest.raises(ValueError, match="runs of identical prompts"):
        decode_compact(model, ids, mask, 1.0, 1.0, 4, stop, tokenizer.pad_token_id, shared_prompts=8)
    with pytest.raises(ValueError, match="must be >= 1 and divide"):
        decode_compact(model, ids, mask, 1.0, 1.0, 4, stop, tokenizer.pad_token_id, shared_prompts=5)


def test_share_prompts_is_an_option_of_the_compact_sampler(tiny_model_dir):
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    problems = generate_problems(4, levels=[1, 2], seed=0)
    config = RolloutConfig(group_size=4, max_new_tokens=10, sampler="compact")
    shared = sample(model, tokenizer, problems, config.model_copy(update={"share_prompts": True}), seed=3)
    assert torch.equal(shared.input_ids, sample(model, tokenizer, problems, config, seed=3).input_ids)
    with pytest.raises(ValueError, match="share_prompts needs sampler=compact"):
        RolloutConfig(share_prompts=True)


def test_sampler_logprobs_equal_the_forward_pass_up_to_round_off():
    # behaviour_logprobs="sampler": the log-probs and entropies of the logits each token was drawn
    # from, against the no-grad forward pass over the finished responses (what "forward" computes);
    # the same tokens either way, the values equal up to float32 round-off of the KV-cache path
    from lensrl.policy.forward import behaviour_logprobs

    model, tokenizer = load_policy(ModelConfig(name_or_path="testbed:signs"))
    problems = generate_problems(6, levels=[1, 3, 5], seed=4)
    config = RolloutConfig(group_size=4, max_new_tokens=48, sampler="compact", temperature=0.9, top_p=0.95)
    forward = sample(model, tokenizer, problems, config, seed=2)
    mine = sample(model, tokenizer, problems, config.model_copy(update={"behaviour_logprobs": "sampler"}), seed=2)
    assert forward.sampler_logprobs is None and torch.equal(mine.input_ids, forward.input_ids)
    lp, ent = behaviour_logprobs(model, forward, 0.9, micro_batch_size=8)
    m = forward.response_mask
    torch.testing.assert_close(mine.sampler_logprobs, lp * m, rtol=0, atol=1e-4)
    torch.testing.assert_close(mine.sampler_entropy, ent * m, rtol=0, atol=1e-4)
    assert (mine.sampler_logprobs[m == 0] == 0).all() and (mine.sampler_logprobs[m > 0] < 0).any()
    with pytest.raises(ValueError, match='behaviour_logprobs="sampler" needs sampler=compact'):
        RolloutConfig(behaviour_logprobs="sampler")
