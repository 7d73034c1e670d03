"""End-to-end training of a tiny random model through the real loading path (AutoModel from a folder)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GenerationConfig

from lensrl.config import RolloutConfig, load_config
from lensrl.policy.forward import behaviour_logprobs
from lensrl.policy.models import load_policy
from lensrl.rollout.sample import sample
from lensrl.testbed import generate_problems
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides


def _params(path):
    return load_file(str(path / "model.safetensors"))


def test_lens_trains_tiny_model_and_writes_run_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = train(load_config(overrides=tiny_overrides(tiny_model_dir, out)))
    assert result.output_dir == out
    for name in ("config.yaml", "metrics.jsonl", "eval.jsonl", "summary.json"):
        assert (out / name).exists(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for key in (
        "reward",
        "groups/negative",
        "groups/mixed",
        "groups/all_correct",
        "pibar/wrong",
        "clipfrac",
        "approx_kl",
        "entropy",
        "response_len/mean",
        "adv/negative_group_share",
        "grad_norm",
    ):
        assert key in metrics[0], key
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2]
    assert set(evals[0]["per_level"]) == {"1", "2", "3", "4", "5"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_eval"]["step"] == 0 and summary["last_eval"]["step"] == 2

    ckpt = out / "checkpoints" / "step_000002"
    AutoModelForCausalLM.from_pretrained(ckpt)  # the checkpoint reloads with the Auto classes
    before, after = _params(tiny_model_dir), _params(ckpt)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed"


def test_negative_groups_train_under_lens_but_not_grpo(tiny_model_dir, tmp_path):
    # A random model never writes a correct boxed answer, so every group is negative: GRPO's advantages
    # are all zero (AdamW with zero gradients and no weight decay leaves weights untouched), LENS's are not.
    results = {}
    for algo in ("grpo", "lens"):
        out = tmp_path / algo
        train(load_config(overrides=tiny_overrides(tiny_model_dir, out, f"algo.advantage={algo}")))
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(m["groups/negative"] == 1.0 for m in metrics)
        before, after = _params(tiny_model_dir), _params(out / "checkpoints" / "step_000002")
        results[algo] = max((before[k] - after[k]).abs().max().item() for k in before)
        results[algo + "_adv"] = metrics[0]["adv/abs_mean"]
    assert results["grpo"] == 0.0 and results["grpo_adv"] == 0.0
    assert results["lens"] > 0.0 and results["lens_adv"] > 0.0


def test_behaviour_logprobs_match_sampling_distribution(tiny_model_dir):
    # The log-probs the ratio and LENS use must be those of the distribution the tokens were drawn from:
    # recompute them with one forward pass and compare with generate's own (tempered) scores.
    model, tokenizer = load_policy(load_config(overrides=[f"model.name_or_path={tiny_model_dir}"]).model)
    problems = generate_problems(3, levels=[1, 3, 5], seed=1)  # prompts of different lengths: left padding
    rollout = sample(
        model,
        tokenizer,
        problems,
        RolloutConfig(group_size=2, temperature=0.7, max_new_tokens=8, generation_batch_size=64),
        seed=0,
    )
    lp, _ = behaviour_logprobs(model, rollout, temperature=0.7, micro_batch_size=4)

    torch.manual_seed(0)
    enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        input_ids=enc["input_ids"].repeat_interleave(2, 0),
        attention_mask=enc["attention_mask"].repeat_interleave(2, 0),
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        max_new_tokens=8,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    scores = torch.stack(out.scores, dim=1).log_softmax(-1)  # (N, R, V), already divided by T
    tokens = out.sequences[:, enc["input_ids"].shape[1] :]
    assert torch.equal(tokens, rollout.input_ids[:, rollout.prompt_len :])
    expected = scores.gather(-1, tokens[..., None]).squeeze(-1)
    mask = rollout.response_mask > 0
    torch.testing.assert_close(lp[mask], expected[mask], atol=1e-4, rtol=1e-4)


def test_default_testbed_policy_trains_one_step(tmp_path):
    # the built-in default: model.name_or_path="testbed" resolves to the committed base policy
    overrides = tiny_overrides("testbed", tmp_path / "run", "run.steps=1", "rollout.max_new_tokens=96")
    result = train(load_config(overrides=overrides))
    metrics = json.loads((result.output_dir / "metrics.jsonl").read_text())
    assert metrics["reward"] > 0  # the warm-started policy already solves some problems
    assert result.last_eval.samples == 2


def test_lora_run_with_kl_trains_adapters_and_its_checkpoint_evaluates(tiny_chat_model_dir, tmp_path):
    # LoRA + KL: the reference is the policy with its adapter off (no second model); the checkpoint
    # holds the adapter only, and `lensrl eval` loads it onto the configured base model.
    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_chat_model_dir, out, "model.lora.r=4", "algo.kl_coef=0.05", "run.steps=1")
    train(load_config(overrides=overrides))
    metrics = json.loads((out / "metrics.jsonl").read_text())
    assert metrics["kl_ref"] >= 0 and "verify/timeouts" in metrics and "verify/unparseable" in metrics
    ckpt = out / "checkpoints" / "step_000001"
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "model.safetensors").exists()
    adapter = load_file(str(ckpt / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0

    from lensrl.cli import main

    args = [
        "eval",
        str(ckpt),
        "--output-dir",
        str(tmp_path / "eval"),
        f"model.name_or_path={tiny_chat_model_dir}",
        "model.lora.r=4",
        "data.eval={path: testbed, per_level: 1}",
        "run.eval_samples=2",
        "rollout.max_new_tokens=4",
        "run.progress=false",
    ]
    assert main(args) == 0
    assert (tmp_path / "eval" / "eval.jsonl").exists()


def test_a_run_continues_training_a_saved_adapter(tiny_chat_model_dir, tmp_path):
    # model.adapter: the second run starts from the first run's adapter and trains it further, so its
    # final adapter is the whole change from the base model (what a LoRA warm-start then RL needs).
    first, second = tmp_path / "first", tmp_path / "second"
    train(load_config(overrides=tiny_overrides(tiny_chat_model_dir, first, "model.lora.r=4", "run.steps=1")))
    start = first / "checkpoints" / "step_000001"
    train(load_config(overrides=tiny_overrides(tiny_chat_model_dir, second, f"model.adapter={start}", "run.steps=1")))
    from lensrl.cli import main

    # the second run's step-0 evaluation is `lensrl eval` of the saved adapter (same seed, same policy)
    assert (
        main(
            [
                "eval",
                str(start),
                "--output-dir",
                str(tmp_path / "eval"),
                f"model.name_or_path={tiny_chat_model_dir}",
                "data.eval={path: testbed, per_level: 2}",
                "run.eval_samples=2",
                "rollout.max_new_tokens=12",
                "run.progress=false",
            ]
        )
        == 0
    )
    evals = [json.loads((run / "eval.jsonl").read_text().splitlines()[0]) for run in (tmp_path / "eval", second)]
    assert evals[0] == evals[1]
    before, after = (
        load_file(str(start / "adapter_model.safetensors")),
        load_file(str(second / "checkpoints" / "step_000001" / "adapter_model.safetensors")),
    )
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    with pytest.raises(ValueError, match="must then stay 0"):
        load_config(overrides=[f"model.adapter={start}", "model.lora.r=4"])
    with pytest.raises(ValueError, match="KL reference"):
        load_config(overrides=[f"model.adapter={start}", "algo.kl_coef=0.1"])
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        load_policy(
            load_config(overrides=[f"model.name_or_path={tiny_chat_model_dir}", f"model.adapter={tmp_path}"]).model
        )


def test_sampling_ignores_the_models_generation_defaults(tiny_model_dir, tmp_path):
    # A repetition penalty or top-k in the model's generation config would make the samples come from
    # another distribution than the tempered policy whose log-probs the loss uses: sample() must not use them.
    model, tokenizer = load_policy(load_config(overrides=[f"model.name_or_path={tiny_model_dir}"]).model)
    model.generation_config = GenerationConfig(repetition_penalty=3.0, top_k=5, min_new_tokens=20, do_sample=True)
    problems = generate_problems(2, levels=[1, 2], seed=3)
    config = RolloutConfig(group_size=16, max_new_tokens=24, generation_batch_size=64)
    rollout = sample(model, tokenizer, problems, config, seed=0)
    assert model.generation_config.repetition_penalty == 3.0  # put back afterwards

    def generate(model_defaults):
        saved, model.generation_config = model.generation_config, model_defaults
        enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        out = model.generate(
            input_ids=enc["input_ids"].repeat_interleave(16, 0),
            attention_mask=enc["attention_mask"].repeat_interleave(16, 0),
            generation_config=GenerationConfig(
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=24,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=[tokenizer.eos_token_id],
            ),
        )
        model.generation_config = saved
        return out[:, enc["input_ids"].shape[1] :]

    def same(tokens):
        width = min(tokens.shape[1], rollout.response_mask.shape[1])
        mine = rollout.input_ids[:, -rollout.response_mask.shape[1] :][:, :width]
        return bool(((mine == tokens[:, :width]) | (rollout.response_mask[:, :width] == 0)).all())

    assert same(generate(GenerationConfig()))  # pure tempered sampling
    assert not same(generate(model.generation_config))  # the penalised distribution draws other tokens


def test_intermediate_evaluations_can_take_a_smaller_budget(tiny_model_dir, tmp_path):
    # run.mid_eval_per_level: the evaluations between the first and the last use the first problems of
    # each level only; steps 0 and 4 use the whole set (2 per level, 5 levels), steps 2 one per level
    config = load_config(
        None,
        tiny_overrides(tiny_model_dir, tmp_path / "run", "run.steps=4", "run.eval_every=2", "run.mid_eval_per_level=1"),
    )
    train(config)
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["n_problems"]) for e in evals] == [(0, 10), (2, 5), (4, 10)]


@pytest.mark.parametrize("options", [["rollout.share_prompts=true"], ["rollout.behaviour_logprobs=sampler"]])
def test_the_compact_sampler_options_train(tiny_model_dir, tmp_path, options):
    # each option trains a run whose first rollout is today's (the same draws; log-probs equal up to
    # round-off), so its first step's reward is the default run's
    runs = {}
    for name, extra in (("default", []), ("option", options)):
        overrides = tiny_overrides(tiny_model_dir, tmp_path / name, "rollout.sampler=compact", "run.steps=1", *extra)
        train(load_config(None, overrides))
        runs[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
    assert runs["option"]["reward"] == runs["default"]["reward"]
    assert runs["option"]["loss/policy"] == pytest.approx(runs["default"]["loss/policy"], abs=1e-5)
