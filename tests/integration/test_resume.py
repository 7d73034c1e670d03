"""Runs survive being killed: a resumed run ends exactly where an uninterrupted one does.

The tiny random model answers everything wrong, so under LENS every step updates the weights (negative
groups carry the signal) and any state lost or replayed on resume would change the final parameters.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lensrl.cli import main
from lensrl.config import load_config
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides

STEPS = 6


def _config(model_dir, out, *extra):
    return load_config(
        overrides=tiny_overrides(model_dir, out, f"run.steps={STEPS}", "run.save_every=1", "run.eval_every=2", *extra)
    )


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir, tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    train(_config(tiny_model_dir, out))
    return out


def _records(path: Path) -> list[dict]:
    """A log without its wall-clock timings."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def assert_same_run(run: Path, reference: Path, steps: int = STEPS) -> None:
    final = f"checkpoints/step_{steps:06d}/model.safetensors"
    mine, theirs = load_file(run / final), load_file(reference / final)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    for log in ("metrics.jsonl", "eval.jsonl"):
        assert _records(run / log) == _records(reference / log), log  # nothing lost, nothing doubled
    totals = [[r["compute/total_tokens"] for r in _records(folder / "metrics.jsonl")] for folder in (run, reference)]
    assert totals[0] == totals[1]  # the compute totals carried over the resume, as every metric above
    assert json.loads((run / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())


def _launch(model_dir, out, *extra) -> subprocess.Popen:
    overrides = tiny_overrides(model_dir, out, f"run.steps={STEPS}", "run.save_every=1", "run.eval_every=2", *extra)
    return subprocess.Popen(
        [sys.executable, "-m", "lensrl.cli", "train", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the test could signal it:\n{proc.stderr.read()}")
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def _metric_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(tiny_model_dir, tmp_path, reference_run):
    out = tmp_path / "killed"
    proc = _launch(tiny_model_dir, out)
    _wait_for(lambda: (out / "checkpoints" / "step_000002").exists(), proc)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: possibly mid-step or mid-checkpoint
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "summary.json").exists()

    result = train(_config(tiny_model_dir, out), resume=True)
    assert result.stopped_by is None
    assert_same_run(out, reference_run)


def test_sigterm_finishes_the_step_saves_and_exits_then_resumes(tiny_model_dir, tmp_path, reference_run):
    out = tmp_path / "terminated"
    proc = _launch(tiny_model_dir, out, "run.save_every=0")  # no periodic checkpoints: the signal makes one
    _wait_for(lambda: _metric_steps(out) >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    done = _metric_steps(out)
    assert done < STEPS and [p.name for p in (out / "checkpoints").iterdir()] == [f"step_{done:06d}"]
    assert not (out / "summary.json").exists()

    # the run folder's config.yaml is the config; only bookkeeping may change
    assert main(["train", "--resume", "--output-dir", str(out), "run.save_every=1"]) == 0
    assert_same_run(out, reference_run)


def test_a_finished_run_extends_to_more_steps_exactly(tiny_model_dir, tmp_path, reference_run):
    out = tmp_path / "extended"
    train(
        load_config(
            overrides=tiny_overrides(tiny_model_dir, out, "run.steps=2", "run.save_every=1", "run.eval_every=2")
        )
    )
    train(_config(tiny_model_dir, out), resume=True)
    assert_same_run(out, reference_run)


def test_resume_refuses_another_config_and_a_fresh_start_refuses_a_used_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, out, "run.steps=1")))
    with pytest.raises(ValueError, match=r"differs in optim\.lr"):
        train(load_config(overrides=tiny_overrides(tiny_model_dir, out, "run.steps=1", "optim.lr=0.5")), resume=True)
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run"):
        train(load_config(overrides=tiny_overrides(tiny_model_dir, out, "run.steps=1")))


def test_a_checkpoint_from_before_compute_accounting_resumes_with_its_totals_rebuilt(
    tiny_model_dir, tmp_path, reference_run
):
    out = tmp_path / "old"
    train(
        load_config(
            overrides=tiny_overrides(tiny_model_dir, out, "run.steps=2", "run.save_every=1", "run.eval_every=2")
        )
    )
    # as an older version left it: no compute in the trainer state, no compute/* in metrics.jsonl
    for checkpoint in (out / "checkpoints").iterdir():
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        del state["compute"]
        torch.save(state, checkpoint / "trainer_state.pt")
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        manifest["files"]["trainer_state.pt"] = (checkpoint / "trainer_state.pt").stat().st_size
        (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    old = [{k: v for k, v in row.items() if not k.startswith("compute/")} for row in rows]
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in old))

    train(_config(tiny_model_dir, out), resume=True)
    # the totals from the old log's response lengths and group shares: the steps after it, with their
    # totals, and the summary are the uninterrupted run's
    assert _records(out / "metrics.jsonl")[2:] == _records(reference_run / "metrics.jsonl")[2:]
    assert json.loads((out / "summary.json").read_text()) == json.loads((reference_run / "summary.json").read_text())
