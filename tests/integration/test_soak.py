"""Soak test (slow, on demand: `pytest -m slow tests/integration/test_soak.py`): a long run killed at
random moments, by SIGKILL or SIGTERM, and resumed each time, ends exactly like an uninterrupted one.

Each launch is killed a random 0-1 s after it has logged 1-4 new steps (so every launch makes
progress and the kill lands mid-step, mid-evaluation or mid-checkpoint), or, one time in eight,
during start-up. LENSRL_SOAK_STEPS sets the run's length (default 40 steps, a few minutes on 2 cores).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lensrl.config import load_config
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides
from tests.integration.test_resume import assert_same_run

pytestmark = pytest.mark.slow


def _logged_step(run_dir, since: float) -> int:
    """The newest step this launch has logged (0 before it has logged one)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists() or path.stat().st_mtime < since:
        return 0
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line being written
            pass
    return max(steps, default=0)


def _checkpointed_step(run_dir) -> int:
    return max((int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*")), default=0)


def test_random_kills_and_resumes_lose_and_repeat_nothing(tiny_model_dir, tmp_path):
    steps = int(os.environ.get("LENSRL_SOAK_STEPS", "40"))
    overrides = tiny_overrides(
        tiny_model_dir, tmp_path / "unused", f"run.steps={steps}", "run.save_every=2", "run.eval_every=5"
    )
    overrides = [o for o in overrides if not o.startswith("run.output_dir")]
    reference, soaked = tmp_path / "reference", tmp_path / "soaked"
    train(load_config(overrides=[*overrides, f"run.output_dir={reference}"]))

    rng = random.Random(0)
    launches = kills = 0
    while not (soaked / "summary.json").exists():
        assert launches < 4 * steps, "the run never finished"
        start, target = time.time(), _checkpointed_step(soaked) + rng.randint(1, 4)
        resume = ["--resume"] if (soaked / "config.yaml").exists() else []  # --resume needs a run to go on from
        proc = subprocess.Popen(
            [sys.executable, "-m", "lensrl.cli", "train", *resume, "--output-dir", str(soaked), *overrides],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        launches += 1
        if rng.random() < 1 / 8:
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            while proc.poll() is None and _logged_step(soaked, start) < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGTERM]))
            kills += 1
        _, stderr = proc.communicate()
        # SIGTERM before training starts (still importing) ends the process the default way
        assert proc.returncode in (0, -signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), stderr
    assert kills >= 3, f"only {kills} kills in {launches} launches: the test did not exercise resuming"
    assert_same_run(soaked, reference, steps)
