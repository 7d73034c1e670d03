"""`lensrl sft` on a tiny chat model (real loading path): the loss falls, files are written, the result trains on."""

import json

import torch

from lensrl.cli import main
from lensrl.config import ModelConfig, PromptConfig
from lensrl.data.prompts import format_problems
from lensrl.policy.models import load_policy
from lensrl.records import Problem
from lensrl.training.sft import IGNORE_INDEX, encode_batch

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
