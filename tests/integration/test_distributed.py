"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global batch and seed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lensrl
from tests.conftest import tiny_overrides


def _run(nproc: int, overrides: list[str]) -> None:
    _launch(nproc, ["lensrl.cli", "train", *overrides])


def _launch(nproc: int, module_args: list[str]) -> None:
    # the processes import the lensrl this test imported (a checkout's src/ on PYTHONPATH included)
    path = os.pathsep.join([str(Path(lensrl.__file__).parents[1]), os.getcwd()])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + ["-m", *module_args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(tiny_model_dir, tmp_path, parallel):
    # 4 questions x 4 samples, 2 updates: every minibatch holds 2 groups, one per rank. Sampling chunks
    # of 8 rows (2 groups) coincide with each rank's share, so both layouts draw the same samples.
    extra = ["run.steps=1", "rollout.generation_batch_size=8", "algo.kl_coef=0.01", f"run.parallel={parallel}"]
    _run(1, tiny_overrides(tiny_model_dir, tmp_path / "one", *extra))
    _run(2, tiny_overrides(tiny_model_dir, tmp_path / "two", *extra))
    one, two = (load_file(str(tmp_path / d / "checkpoints/step_000001/model.safetensors")) for d in ("one", "two"))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    assert one.keys() == two.keys()
    assert any(not torch.equal(before[k], one[k]) for k in one)  # the step did change the weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=1e-5)
    m1, m2 = (json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("one", "two"))
    for key in ("reward", "groups/negative", "adv/abs_mean", "response_len/mean", "verify/calls"):
        assert m1[key] == m2[key], key  # the same samples, scored the same (the ranks' verifier counts summed)
    for key in ("compute/prompts", "compute/samples", "compute/tokens", "compute/samples_updated"):
        assert m1[key] == m2[key], key  # what the whole step generated and updated on, not one rank's share
    assert m2["compute/samples"] == 16 and m2["compute/total_tokens"] == m2["compute/tokens"]
    for key in ("loss/policy", "clipfrac", "approx_kl", "kl_ref", "grad_norm"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-7), key
    e1, e2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert e2["world_size"] == 2 and e1["last_eval"]["n_problems"] == e2["last_eval"]["n_problems"]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_resume_exactly(tiny_model_dir, tmp_path, parallel):
    # a 2-step run extended to 3 steps by --resume (per-rank RNG states, optimizer shards under FSDP)
    # ends with the same weights as an uninterrupted 3-step run with 2 processes
    extra = ["rollout.generation_batch_size=8", "run.save_every=1", f"run.parallel={parallel}"]
    _run(2, tiny_overrides(tiny_model_dir, tmp_path / "straight", "run.steps=3", *extra))
    _run(2, tiny_overrides(tiny_model_dir, tmp_path / "resumed", "run.steps=2", *extra))
    _run(2, ["--resume", "--output-dir", str(tmp_path / "resumed"), "run.steps=3"])
    straight, resumed = (
        load_file(str(tmp_path / d / "checkpoints/step_000003/model.safetensors")) for d in ("straight", "resumed")
    )
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    rows = [
        [
            {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in ("straight", "resumed")
    ]
    assert rows[0] == rows[1]


def test_two_ranks_match_one_process_with_groups_of_different_sizes(tiny_model_dir, tmp_path):
    # groups of 2, 4, 3 and 5 samples (tests/integration/group_sizes_step.py): rank 0 samples 6 rows,
    # rank 1 8 rows, and each minibatch's ranks hold groups of different sizes; the gathered rollout,
    # its advantages, the metrics and the weights after the update are those of one process
    _launch(1, ["tests.integration.group_sizes_step", str(tiny_model_dir), str(tmp_path / "one.pt")])
    _launch(2, ["tests.integration.group_sizes_step", str(tiny_model_dir), str(tmp_path / "two.pt")])
    one, two = (torch.load(tmp_path / f, weights_only=False) for f in ("one.pt", "two.pt"))
    assert one["group_size"] == two["group_size"] == (2, 4, 3, 5)
    for k in ("input_ids", "response_mask", "correct"):
        assert torch.equal(one["rollout"][k], two["rollout"][k]), k
    torch.testing.assert_close(two["rollout"]["logprobs_old"], one["rollout"]["logprobs_old"], rtol=0, atol=1e-6)
    torch.testing.assert_close(two["advantages"], one["advantages"], rtol=1e-5, atol=1e-6)
    assert one["advantages"].abs().sum() > 0
    for k in ("reward", "groups/negative", "groups/mixed", "response_len/mean", "groups/updated"):
        assert one["metrics"][k] == two["metrics"][k], k
    for k in ("loss/policy", "clipfrac", "approx_kl", "grad_norm"):
        assert two["metrics"][k] == pytest.approx(one["metrics"][k], rel=1e-4, abs=1e-7), k
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], one["weights"][k]) for k in before if k in one["weights"])
    for k in one["weights"]:
        torch.testing.assert_close(two["weights"][k], one["weights"][k], atol=1e-6, rtol=1e-5)


def test_fsdp_refuses_groups_of_different_sizes(tiny_model_dir, tmp_path):
    # FSDP's ranks must run the same forward passes; with different row counts they would not
    with pytest.raises(AssertionError, match="need run.parallel=ddp"):
        _launch(2, ["tests.integration.group_sizes_step", str(tiny_model_dir), str(tmp_path / "x.pt"), "fsdp"])
