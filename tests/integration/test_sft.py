"""`lensrl sft` on tiny models (real loading path): the loss falls, files are written, the result trains on, and
an interrupted warm-start resumes to exactly where an uninterrupted one ends."""

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from lensrl.cli import main
from lensrl.config import ModelConfig, PromptConfig, load_config
from lensrl.data.prompts import format_problems
from lensrl.policy.models import load_policy
from lensrl.records import Problem
from lensrl.training.sft import IGNORE_INDEX, encode_batch, sft

ROWS = [  # GSM8K local layout: the solution ends in "#### N", which the loader turns into \boxed{N}
    {
        "question": f"What is {a}+{b}?",
        "solution": f"{a}+{b}=<<{a}+{b}={a + b}>>{a + b}\n#### {a + b}",
        "answer": str(a + b),
    }
    for a in range(1, 7)
    for b in range(1, 5)
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_learns_the_solutions_and_leaves_a_loadable_model(tiny_chat_model_dir, tmp_path, capsys):
    data = _write(tmp_path / "gsm.jsonl", ROWS)
    out = tmp_path / "sft"
    args = [
        "sft",
        "--output-dir",
        str(out),
        f"model.name_or_path={tiny_chat_model_dir}",
        f"data.train=[{{path: {data}, kind: gsm8k, rows: ':-4'}}]",
        f"data.eval=[{{path: {data}, kind: gsm8k, rows: '-4:'}}]",
        "sft.steps=30",
        "sft.batch_size=8",
        "sft.micro_batch_size=4",
        "sft.lr=3e-3",
        "sft.warmup_steps=2",
        "run.eval_samples=2",
        "rollout.max_new_tokens=8",
        "run.progress=false",
    ]
    assert main(args) == 0
    for name in ("config.yaml", "metrics.jsonl", "eval.jsonl", "summary.json"):
        assert (out / name).exists(), name
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    # a random 2-layer model starts near log(V) ~ 5.7 nats per token; 30 steps on 20 solutions cut that by > 25%
    assert len(losses) == 30 and sum(losses[-5:]) < 0.75 * sum(losses[:5])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "sft" and summary["model"].endswith("step_000030")
    model, _ = load_policy(ModelConfig(name_or_path=summary["model"]))  # an ordinary HF folder
    assert model.config.model_type == "qwen2"
    assert "before" in capsys.readouterr().out


def test_encode_batch_masks_prompt_and_truncates_the_solution_end(tiny_chat_model_dir):
    _, tokenizer = load_policy(ModelConfig(name_or_path=str(tiny_chat_model_dir)))
    (p,) = format_problems(
        [Problem(prompt="What is 2+3?", answer="5", solution="2+3=5 so \\boxed{5}")], tokenizer, PromptConfig()
    )
    n_prompt = len(tokenizer(p.prompt, add_special_tokens=False).input_ids)
    n_target = len(tokenizer(p.solution, add_special_tokens=False).input_ids) + 1  # + EOS
    ids, mask, labels = encode_batch([p], tokenizer)
    assert ids.shape[1] == n_prompt + n_target and int((labels != IGNORE_INDEX).sum()) == n_target
    assert labels[0, -1] == tokenizer.eos_token_id and (labels[0, :n_prompt] == IGNORE_INDEX).all()
    ids, mask, labels = encode_batch([p], tokenizer, max_length=n_prompt + 3)
    assert ids.shape[1] == n_prompt + 3 and int((labels != IGNORE_INDEX).sum()) == 3
    assert torch.equal(ids[0, :n_prompt], torch.tensor(tokenizer(p.prompt, add_special_tokens=False).input_ids))


SFT_STEPS = 6


def _sft_overrides(model_dir, out, *extra):
    """A warm-start of the tiny testbed model on testbed solutions that takes a few seconds on a CPU."""
    return [
        f"model.name_or_path={model_dir}",
        f"run.output_dir={out}",
        "run.progress=false",
        "data.train={path: testbed, size: 64}",
        "data.eval={path: testbed, per_level: 1}",
        "run.eval_samples=2",
        "rollout.max_new_tokens=8",
        f"sft.steps={SFT_STEPS}",
        "sft.batch_size=4",
        "sft.micro_batch_size=3",
        "sft.lr=3e-3",
        "sft.warmup_steps=2",
        *extra,
    ]


def _without_timings(path):
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
        for line in path.read_text().splitlines()
    ]


def _signal_during_step(monkeypatch, step: int, signum: signal.Signals) -> None:
    """Deliver `signum` to this process while sft computes the gradient of `step` (1-based)."""
    from lensrl.training import sft as sft_module

    original, calls = sft_module.sft_step, [0]

    def step_then_signal(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            signal.raise_signal(signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(sft_module, "sft_step", step_then_signal)


@pytest.mark.parametrize("weights", [[], ["model.lora.r=4", "model.lora.dropout=0.1"]], ids=["full", "lora"])
def test_an_interrupted_sft_resumes_to_exactly_the_uninterrupted_run(
    tiny_model_dir, tmp_path, monkeypatch, capsys, weights
):
    # LoRA with dropout: the adapter, and the random state its dropout draws from, must come back too
    reference = tmp_path / "reference"
    sft(load_config(overrides=_sft_overrides(tiny_model_dir, reference, *weights)))

    out = tmp_path / "stopped"
    _signal_during_step(monkeypatch, 3, signal.SIGTERM)
    status = main(["sft", *_sft_overrides(tiny_model_dir, out, *weights)])
    assert status == 128 + signal.SIGTERM  # step 3 finished and saved, nothing after it
    err = capsys.readouterr().err
    assert "lensrl: SIGTERM: finishing this step's update, then saving a checkpoint and stopping" in err
    assert f"lensrl sft --resume --output-dir {out}" in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000003"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 and not (out / "summary.json").exists()
    monkeypatch.undo()

    with pytest.raises(ValueError, match=r"differs in sft\.steps"):  # the lr schedule depends on the step count
        sft(load_config(str(out / "config.yaml"), [f"sft.steps={SFT_STEPS + 1}"]), resume=True)
    assert main(["sft", "--resume", "--output-dir", str(out)]) == 0  # the run folder's config.yaml is the config

    final = f"checkpoints/step_{SFT_STEPS:06d}"
    files = sorted(p.name for p in (reference / final).glob("*.safetensors"))  # the model's, or the adapter's
    assert files == ["adapter_model.safetensors" if weights else "model.safetensors"]
    mine, theirs = load_file(out / final / files[0]), load_file(reference / final / files[0])
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    for log in ("metrics.jsonl", "eval.jsonl"):  # nothing lost, nothing doubled, every loss and lr the same
        assert _without_timings(out / log) == _without_timings(reference / log), log
    summary, expected = (json.loads((run / "summary.json").read_text()) for run in (out, reference))
    assert summary.pop("model") == str(out / final) and expected.pop("model") == str(reference / final)
    assert summary == expected
