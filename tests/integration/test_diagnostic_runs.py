"""The GRPO-vs-LENS gradient comparison in a training run and in `lensrl grad-diff`.

`run.diagnostic_every` is bookkeeping: a run with the diagnostic must end exactly like one without
it. The model here has dropout, so a random draw taken by the diagnostic would change the update's
dropout masks and with them every later step; the reward function makes mixed groups on a random
model, so every part of the comparison is defined.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lensrl.cli import main
from lensrl.config import load_config
from lensrl.testbed import build_tokenizer
from lensrl.training.diagnostics import measure_gradients
from lensrl.training.trainer import train
from tests.conftest import nan_behaviour_logprobs_at, tiny_overrides

STEPS = 3


def _odd_length(completion: str, gold: str) -> bool:
    """A reward a random model earns about half the time: mixed groups, and some negative ones."""
    return len(completion) % 2 == 1


@pytest.fixture(scope="module")
def dropout_model_dir(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama_dropout")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.2).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def _run(model_dir, out, every: int):
    overrides = tiny_overrides(
        model_dir,
        out,
        f"run.steps={STEPS}",
        "run.save_every=1",
        "run.keep_checkpoints=5",
        "run.sample_every=1",
        f"run.diagnostic_every={every}",
    )
    train(load_config(overrides=overrides), verifier=_odd_length)
    return out


@pytest.fixture(scope="module")
def run_without(dropout_model_dir, tmp_path_factory):
    return _run(dropout_model_dir, tmp_path_factory.mktemp("without"), 0)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _without_diagnostic(record):
    return {k: v for k, v in record.items() if not k.startswith(("diag/", "time/"))}


@pytest.mark.parametrize("every, steps_with", [(1, [1, 2, 3]), (2, [2])])
def test_the_diagnostic_changes_nothing_in_training(dropout_model_dir, run_without, tmp_path, every, steps_with):
    run = _run(dropout_model_dir, tmp_path / "with", every)
    with_, without = _metrics(run), _metrics(run_without)
    assert [_without_diagnostic(r) for r in with_] == [_without_diagnostic(r) for r in without]
    assert [r["step"] for r in with_ if "diag/cosine" in r] == steps_with
    keys = {
        "diag/cosine",
        "diag/rel_diff",
        "diag/negative_share",
        "diag/grad_norm_grpo",
        "diag/grad_norm_other",
        "diag/negative_groups",
        "time/diagnostic",
    }
    for record in with_:
        assert keys <= set(record) if record["step"] in steps_with else not keys & set(record)
        if record["step"] in steps_with:
            assert 0 < record["diag/rel_diff"] and -1 <= record["diag/cosine"] < 1 and record["time/diagnostic"] > 0
    assert not any(k.startswith("diag/") for r in without for k in r)
    for step in range(1, STEPS + 1):  # weights, optimizer, generator and random states after every step
        checkpoint = f"checkpoints/step_{step:06d}"
        mine, theirs = (
            load_file(run / checkpoint / "model.safetensors"),
            load_file(run_without / checkpoint / "model.safetensors"),
        )
        assert all(torch.equal(mine[name], theirs[name]) for name in theirs) and mine.keys() == theirs.keys()
        for state in ("trainer_state.pt", "rng_rank0.pt"):
            assert _same(
                torch.load(run / checkpoint / state, weights_only=False),
                torch.load(run_without / checkpoint / state, weights_only=False),
            ), (step, state)
    for log in ("eval.jsonl", "samples.jsonl"):
        assert (run / log).read_text() == (run_without / log).read_text()


def _same(a, b) -> bool:
    """Nested checkpoint states compared exactly (tensors and arrays element by element)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if hasattr(a, "shape"):  # numpy arrays
        return bool((a == b).all())
    return a == b


def test_a_step_with_nonfinite_logprobs_has_no_diagnostic(tiny_model_dir, tmp_path, monkeypatch):
    nan_behaviour_logprobs_at(monkeypatch, 2)
    out = tmp_path / "run"
    train(
        load_config(overrides=tiny_overrides(tiny_model_dir, out, f"run.steps={STEPS}", "run.diagnostic_every=1")),
        verifier=_odd_length,
    )
    diagnosed = [any(k.startswith("diag/") or k == "time/diagnostic" for k in m) for m in _metrics(out)]
    assert diagnosed == [True, False, True] and [m["skipped_updates"] for m in _metrics(out)] == [0, 2, 0]


def test_grad_diff_reproduces_the_first_step_and_reads_run_folders(tmp_path, capsys):
    # the testbed policy gets mixed groups from the real verifier; its run's step 1 is grad-diff's rollout 0
    run = tmp_path / "run"
    train(
        load_config(
            overrides=tiny_overrides(
                "testbed", run, "run.steps=1", "run.diagnostic_every=1", "rollout.max_new_tokens=40", "optim.lr=1e-5"
            )
        )
    )
    step_1 = {k: v for k, v in _metrics(run)[0].items() if k.startswith("diag/")}
    out = tmp_path / "out" / "grad_diff.json"
    assert (
        main(
            [
                "grad-diff",
                "testbed",
                str(run),
                "--rollouts",
                "2",
                "--config",
                str(run / "config.yaml"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["command"].startswith("lensrl grad-diff testbed ")
    assert list(report["models"]) == ["testbed", str(run)]
    base = report["models"]["testbed"]
    assert base["rollouts"][0] == pytest.approx(step_1, rel=1e-9)
    assert 0 < step_1["diag/rel_diff"] and 0 < step_1["diag/negative_share"] < 1  # mixed and negative groups
    trained = report["models"][str(run)]  # the run's final checkpoint, with its config.yaml
    assert len(trained["rollouts"]) == 2 and trained["rollouts"][0] != base["rollouts"][0]
    for result in report["models"].values():
        for key, mean in result["mean"].items():
            assert mean == pytest.approx(sum(r[key] for r in result["rollouts"]) / 2)
    printed = capsys.readouterr().out
    assert "negative_share" in printed and f"results: {out}" in printed
    assert f"{run}     mean" in printed


def test_grad_diff_on_a_run_folder_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert main(["grad-diff", str(tmp_path / "run"), "--output", str(tmp_path / "x.json")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_grad_diff_scores_with_the_verifier_it_is_given(tiny_model_dir, tmp_path):
    # a run trained with _odd_length; grad-diff with the same plain function reproduces its step 1
    # (Math-Verify would score every response of this random model wrong: no mixed group at all)
    run = tmp_path / "run"
    train(
        load_config(overrides=tiny_overrides(tiny_model_dir, run, "run.steps=1", "run.diagnostic_every=1")),
        verifier=_odd_length,
    )
    step_1 = {k: v for k, v in _metrics(run)[0].items() if k.startswith("diag/")}
    calls = []

    def odd_length(completion: str, gold: str) -> bool:
        calls.append(completion)
        return _odd_length(completion, gold)

    report = measure_gradients([str(tiny_model_dir)], 1, str(run / "config.yaml"), verifier=odd_length)
    assert len(calls) == 4 * 4  # questions_per_step x group_size, every one through the given verifier
    assert report["models"][str(tiny_model_dir)]["rollouts"][0] == pytest.approx(step_1, rel=1e-9)
    assert 0 < step_1["diag/negative_groups"] < 1  # mixed groups: _odd_length's verdicts, not Math-Verify's
