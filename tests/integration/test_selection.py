"""`rollout.selection` through the trainer: DAPO's dynamic sampling on the tiny model, whose answers are
all wrong, so under GRPO no group has a signal and every step samples `max_rounds` rounds."""

import json

import torch
from safetensors.torch import load_file

from lensrl.config import load_config
from lensrl.training.trainer import train, train_or_resume
from tests.conftest import tiny_overrides

DYNAMIC = ("algo.advantage=grpo", "rollout.selection={kind: dynamic, max_rounds: 2}", "run.save_every=1")


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_dynamic_sampling_counts_every_round_and_resumes_exactly(tiny_model_dir, tmp_path):
    reference = tmp_path / "reference"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, reference, "run.steps=3", *DYNAMIC)))
    rows = _metrics(reference)
    # 2 rounds of Q = 4 prompts x G = 4 samples a step, none kept (all wrong): 32 samples generated a step,
    # and the step trains on the last round's 4 groups, whose GRPO advantages are 0
    assert [r["selection/rounds"] for r in rows] == [2, 2, 2]
    assert [r["selection/short"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["compute/samples"] for r in rows] == [32, 32, 32]
    assert [r["compute/total_prompts"] for r in rows] == [8, 16, 24]
    state = torch.load(reference / "checkpoints/step_000003/trainer_state.pt", weights_only=False)
    visits = state["selection"]["history"]
    assert sum(len(v) for v in visits.values()) == 24  # every generated group, dropped ones too
    # a run of 2 steps extended to 3 from its checkpoint: the same steps (data order, history and totals
    # carried over) and the same weights (its extra evaluation at step 2 aside)
    resumed = tmp_path / "resumed"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, resumed, "run.steps=2", *DYNAMIC)))
    train_or_resume(load_config(overrides=tiny_overrides(tiny_model_dir, resumed, "run.steps=3", *DYNAMIC)))
    untimed = [
        [{k: v for k, v in r.items() if not k.startswith("time/")} for r in _metrics(out)]
        for out in (resumed, reference)
    ]
    assert untimed[0] == untimed[1]
    final = "checkpoints/step_000003/model.safetensors"
    mine, theirs = load_file(resumed / final), load_file(reference / final)
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
    again = torch.load(resumed / "checkpoints/step_000003/trainer_state.pt", weights_only=False)
    assert again["selection"] == state["selection"]
