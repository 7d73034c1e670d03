"""Bad values and bad input fail loudly or are skipped and counted, never turned into a silent result.

Faults are injected into a real tiny model (a gradient hook) or at the trainer's seams (the log-prob
pass, the reward function); everything else runs as usual.
"""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

import lensrl.policy.prepare as prepare
from lensrl.cli import main
from lensrl.config import RolloutConfig, load_config
from lensrl.data.prompts import check_prompt_lengths
from lensrl.policy.models import load_tokenizer
from lensrl.records import Problem
from lensrl.rollout.verifier import FunctionVerifier
from lensrl.training.trainer import train
from lensrl.training.update import NonFiniteError
from tests.conftest import nan_behaviour_logprobs_at, tiny_overrides

# tiny_overrides: 4 questions x 4 samples, 2 minibatches of 2 groups, micro-batches of 4 rows:
BACKWARDS_PER_STEP = 4


def _nan_gradients_in_step_2(monkeypatch):
    """Every gradient of the output layer is NaN during step 2's update (a real backward pass)."""
    load_policy = prepare.load_policy

    def faulty(*args, **kwargs):
        model, tokenizer = load_policy(*args, **kwargs)
        calls = [0]

        def hook(grad):
            calls[0] += 1
            return grad * float("nan") if BACKWARDS_PER_STEP < calls[0] <= 2 * BACKWARDS_PER_STEP else grad

        model.get_output_embeddings().weight.register_hook(hook)
        return model, tokenizer

    monkeypatch.setattr(prepare, "load_policy", faulty)


def _weights(out, step):
    return load_file(out / "checkpoints" / f"step_{step:06d}" / "model.safetensors")


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_nan_gradients_skip_the_update_and_count_it(tiny_model_dir, tmp_path, monkeypatch):
    _nan_gradients_in_step_2(monkeypatch)
    out = tmp_path / "skip"
    train(
        load_config(
            overrides=tiny_overrides(tiny_model_dir, out, "run.steps=3", "run.save_every=1", "run.keep_checkpoints=5")
        )
    )
    assert [m["skipped_updates"] for m in _metrics(out)] == [0, 2, 0]  # both minibatches of step 2
    assert json.loads((out / "summary.json").read_text())["skipped_updates"] == 2
    before, after, final = _weights(out, 1), _weights(out, 2), _weights(out, 3)
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 2 left the weights alone
    assert all(torch.isfinite(t).all() for t in final.values())
    assert any(not torch.equal(after[k], final[k]) for k in after)  # and training went on


def test_nan_gradients_stop_the_run_and_keep_the_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    _nan_gradients_in_step_2(monkeypatch)
    out = tmp_path / "stop"
    config = load_config(
        overrides=tiny_overrides(tiny_model_dir, out, "run.steps=3", "run.save_every=1", "run.on_nonfinite=stop")
    )
    with pytest.raises(NonFiniteError, match="step 2: non-finite loss or gradients"):
        train(config)
    assert [m["step"] for m in _metrics(out)] == [1]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000001"]
    assert all(torch.isfinite(t).all() for t in _weights(out, 1).values())


def test_nan_behaviour_logprobs_skip_the_whole_update(tiny_model_dir, tmp_path, monkeypatch):
    nan_behaviour_logprobs_at(monkeypatch, 2)
    out = tmp_path / "logprobs"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, out, "run.steps=2", "run.save_every=1")))
    assert [m["skipped_updates"] for m in _metrics(out)] == [0, 2]
    assert all(torch.equal(a, b) for a, b in zip(_weights(out, 1).values(), _weights(out, 2).values()))


def _raises(completion, gold):
    raise ZeroDivisionError("bug in the reward function")


@pytest.mark.parametrize(
    "verifier, error, match",
    [
        (
            _raises,
            RuntimeError,
            r"reward function _raises raised ZeroDivisionError: bug in the reward function on "
            r"problem '.+' \(gold '.+'\), sample 0",
        ),
        (lambda c, g: "yes", ValueError, r"returned 'yes' on problem .+; it must return True/False"),
        (lambda c, g: 0.5, ValueError, r"returned 0\.5 on problem"),
        (lambda c, g: float("nan"), ValueError, r"returned nan on problem"),
    ],
)
def test_a_broken_reward_function_is_a_clear_error(tiny_model_dir, tmp_path, verifier, error, match):
    config = load_config(overrides=tiny_overrides(tiny_model_dir, tmp_path / "run", "run.steps=1"))
    with pytest.raises(error, match=match):
        train(config, verifier)


def test_a_user_verifiers_timeouts_and_errors_are_counted_in_every_step(tiny_model_dir, tmp_path):
    calls = [0]

    def flaky(completion, gold):  # by call: a timeout, an error, then two wrong answers, over and over
        calls[0] += 1
        if calls[0] % 4 == 1:
            raise TimeoutError("too slow")
        if calls[0] % 4 == 2:
            raise ZeroDivisionError("bug")
        return False

    verifier = FunctionVerifier(flaky, on_error="wrong")
    out = tmp_path / "counted"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, out)), verifier)
    # 4 questions x 4 samples = 16 calls a step: any 16 calls in a row hold 4 of each kind
    step = {
        "verify/calls": 16,
        "verify/unparseable": 0,
        "verify/timeouts": 4,
        "verify/retries": 0,
        "verify/errors": 4,
        "verify/worker_restarts": 0,
    }
    assert [{k: v for k, v in m.items() if k.startswith("verify/")} for m in _metrics(out)] == [step, step]
    assert verifier.counts.calls == calls[0]  # the evaluations were scored (and counted) by it too
    assert verifier.counts.timeouts == (calls[0] + 3) // 4


def test_prompts_over_the_limit_are_an_error_or_skipped_and_counted(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model_config = AutoConfig.from_pretrained(tiny_model_dir)  # 256 positions
    problems = [
        Problem(prompt="What is 2+3?", answer="5", id="short"),
        Problem(prompt="1+" * 40 + "1", answer="41", id="long"),
    ]
    lengths = [len(tokenizer(p.prompt, add_special_tokens=False).input_ids) for p in problems]
    limit = RolloutConfig(max_prompt_tokens=lengths[0])
    assert lengths[1] > lengths[0]
    with pytest.raises(
        ValueError,
        match=rf"problem 'long' has a prompt of {lengths[1]} tokens, over the limit of "
        rf"{lengths[0]}.*data.skip_bad_rows",
    ):
        check_prompt_lengths(problems, tokenizer, model_config, limit)
    with pytest.warns(UserWarning, match="skipped 1 problem"):
        assert check_prompt_lengths(problems, tokenizer, model_config, limit, skip=True) == problems[:1]
    # without a limit of its own, the context (256) minus max_new_tokens bounds the prompt
    with pytest.raises(ValueError, match=f"over the limit of {256 - 250}"):
        check_prompt_lengths(problems, tokenizer, model_config, RolloutConfig(max_new_tokens=250))
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        check_prompt_lengths(problems, tokenizer, model_config, RolloutConfig(max_new_tokens=256))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prompt_lengths(problems, tokenizer, model_config, RolloutConfig()) == problems


def test_tokenizer_without_pad_token_pads_with_eos_and_without_eos_is_an_error(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no_pad")
    with pytest.warns(UserWarning, match="has no pad token; using its EOS token"):
        padded = load_tokenizer(str(tmp_path / "no_pad"))
    assert padded.pad_token_id == padded.eos_token_id is not None
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "no_eos")
    with pytest.raises(ValueError, match="has no EOS token"):
        load_tokenizer(str(tmp_path / "no_eos"))


def test_cli_reports_bad_input_without_a_traceback(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = ["train", *tiny_overrides(tiny_model_dir, tmp_path / "run", f"data.train={empty}")]
    assert main(args) == 2
    assert "empty.jsonl' is empty: it holds no rows" in capsys.readouterr().err
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path / "run", "run.on_nonfinite=maybe")]) == 2
    assert "run.on_nonfinite" in capsys.readouterr().err
