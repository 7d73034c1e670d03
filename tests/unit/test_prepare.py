"""`prepare`: the policy and the problems formatted for it, as train, sft, eval and grad-diff use them."""

import pytest

from lensrl.config import PromptConfig, load_config
from lensrl.data.prompts import format_prompt
from lensrl.policy.models import load_tokenizer
from lensrl.policy.prepare import prepare
from lensrl.records import Problem

SHORT = Problem(prompt="What is 2+3?", answer="5", id="short")
OTHER = Problem(prompt="What is 4+4?", answer="8", id="other")
LONG = Problem(prompt="1+" * 40 + "1", answer="41", id="long")


def _config(tiny_model_dir):
    """Prompts may be as long as SHORT's formatted prompt (OTHER's is as long); longer ones are skipped."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    limit = len(tokenizer(format_prompt(tokenizer, SHORT.prompt, PromptConfig()), add_special_tokens=False).input_ids)
    return load_config(
        overrides=[
            f"model.name_or_path={tiny_model_dir}",
            "data.skip_bad_rows=true",
            f"rollout.max_prompt_tokens={limit}",
        ]
    )


def test_problems_are_formatted_checked_and_the_training_set_ordered(tiny_model_dir):
    config = _config(tiny_model_dir)
    with pytest.warns(UserWarning, match="skipped 1 problem"):  # once: the evaluation set has no long prompt
        p = prepare(config, [SHORT, LONG, OTHER], [OTHER])
    assert [q.id for q in p.train_set] == ["short", "other"] and [q.id for q in p.eval_set] == ["other"]
    assert p.train_set[0].prompt == format_prompt(p.tokenizer, SHORT.prompt, config.prompt)
    assert p.order.size == 2 and sorted(p.order.take(2)) == [0, 1]  # an order over the kept problems


def test_lengths_are_left_alone_where_not_checked_and_a_set_may_be_left_out(tiny_model_dir):
    p = prepare(_config(tiny_model_dir), eval_problems=[LONG], check_lengths=False)  # as `lensrl eval` does
    assert p.train_set == [] and [q.id for q in p.eval_set] == ["long"]


def test_weights_and_device_replace_the_configured_ones(tiny_model_dir):
    config = load_config(overrides=["model.device=cuda"])  # the testbed's policy, on a GPU: neither is used
    p = prepare(config, [SHORT], weights=str(tiny_model_dir), device="cpu")
    assert p.model.config.hidden_size == 32 and p.model.device.type == "cpu"  # the tiny model's
