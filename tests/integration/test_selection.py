"""`rollout.selection` through the trainer: DAPO's dynamic sampling and GRESO on the tiny model, whose
answers are all wrong, so under GRPO no group has a signal and every step samples `max_rounds` rounds."""

import json

import pytest
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
    _extended_run_equals(tiny_model_dir, tmp_path, reference, DYNAMIC)


def _extended_run_equals(tiny_model_dir, tmp_path, reference, options, verifier=None):
    """A run of 2 steps extended to 3 from its checkpoint makes the same steps as the 3-step `reference`
    (data order, selector state and totals carried over) and ends with the same weights (its extra
    evaluation at step 2 aside)."""
    resumed = tmp_path / "resumed"
    verify = (verifier,) if verifier else ()
    train(load_config(overrides=tiny_overrides(tiny_model_dir, resumed, "run.steps=2", *options)), *verify)
    train_or_resume(load_config(overrides=tiny_overrides(tiny_model_dir, resumed, "run.steps=3", *options)), *verify)
    untimed = [
        [{k: v for k, v in r.items() if not k.startswith("time/")} for r in _metrics(out)]
        for out in (resumed, reference)
    ]
    assert untimed[0] == untimed[1]
    final = "checkpoints/step_000003/model.safetensors"
    mine, theirs = load_file(resumed / final), load_file(reference / final)
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
    state, again = (
        torch.load(out / "checkpoints/step_000003/trainer_state.pt", weights_only=False) for out in (reference, resumed)
    )
    assert again["selection"] == state["selection"]


GRESO = (
    "algo.advantage=grpo",
    "rollout.selection={kind: greso, max_rounds: 2}",
    "data.train={path: testbed, size: 8}",
    "run.save_every=1",
)


def test_greso_skips_returning_all_wrong_prompts_and_resumes_exactly(tiny_model_dir, tmp_path):
    reference = tmp_path / "reference"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, reference, "run.steps=3", *GRESO)))
    rows = _metrics(reference)
    # Q = 4: rounds of 1.5 Q = 6 kept prompts (the most, as no group has a signal), 2 rounds of 6 x 4
    # samples a step; of 8 training prompts, those that come back all wrong are skipped with
    # probability 1 - p_hard^streak, and the skipped ones are not counted as generated
    assert [r["selection/rounds"] for r in rows] == [2, 2, 2]
    assert [r["compute/samples"] for r in rows] == [48, 48, 48]
    assert [r["compute/total_prompts"] for r in rows] == [12, 24, 36]
    assert [r["selection/all_wrong"] for r in rows] == [1.0, 1.0, 1.0]
    assert sum(r["selection/skipped"] for r in rows) > 0
    # every group all wrong (>= the 2/3 * 0.25 target): p_hard falls a step at a time, p_easy rises;
    # step 1 already meets prompts again (12 > 8), so p adapts from its end on
    assert [r["selection/p_hard"] for r in rows] == pytest.approx([0.5, 0.49, 0.48])
    assert [r["selection/p_easy"] for r in rows] == pytest.approx([0.5, 0.51, 0.52])
    state = torch.load(reference / "checkpoints/step_000003/trainer_state.pt", weights_only=False)
    assert state["selection"]["p_hard"] == pytest.approx(0.47)
    assert sum(len(v) for v in state["selection"]["history"].values()) == 36
    _extended_run_equals(tiny_model_dir, tmp_path, reference, GRESO)


KNAPSACK = (
    "algo.advantage=lens",
    "rollout.selection={kind: knapsack}",
    "run.save_every=1",
    "data.train={path: testbed, size: 4}",
)


def _some_right(completion: str, gold: str) -> bool:
    """A stand-in verifier that calls some answers right (the tiny model's are all wrong), by their text."""
    return sum(map(ord, completion)) % 3 == 0


def test_knapsack_gives_returning_prompts_their_own_group_sizes_and_resumes_exactly(tiny_model_dir, tmp_path):
    # a pool of 4 prompts and Q = 4: every prompt comes back every step, with an estimate from step 2 on
    # (G = 4 rewards seen); the 16 samples a step are then spread by the estimates
    reference = tmp_path / "reference"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, reference, "run.steps=3", *KNAPSACK)), _some_right)
    rows = _metrics(reference)
    assert [r["selection/unseen"] for r in rows] == [4, 0, 0]
    assert [r["compute/samples"] for r in rows] == [16, 16, 16]  # the budget, Q x G, every step
    assert rows[0]["selection/samples_max"] == rows[0]["selection/samples_min"] == 4
    assert any(r["selection/samples_max"] > r["selection/samples_min"] for r in rows[1:])  # sizes that differ
    _extended_run_equals(tiny_model_dir, tmp_path, reference, KNAPSACK, verifier=_some_right)
