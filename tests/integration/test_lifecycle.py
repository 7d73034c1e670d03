"""The run lifecycle as a user meets it: one owner per run folder, and bad input as a one-line
`lensrl:` error (exit 2) before any model is loaded."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import lensrl.policy.prepare as prepare
import lensrl.training.trainer as trainer
from lensrl.cli import main
from lensrl.config import load_config
from tests.conftest import tiny_overrides


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _lock(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"}))


def test_a_live_owner_keeps_a_second_train_out(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    owner = _sleeper()
    try:
        _lock(out, owner.pid)
        for resume in ([], ["--resume"]):
            assert main(["train", *resume, *tiny_overrides(tiny_model_dir, out)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("lensrl: ") and f"in use by process {owner.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # nothing was touched
    finally:
        owner.kill()
        owner.wait()


def test_a_stale_lock_does_not_block_a_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_model_dir, out, "run.steps=1")]) == 0
    assert not (out / "run.lock").exists()  # released at the end
    dead = _sleeper()
    dead.kill()
    dead.wait()  # a process killed while it owned the folder
    _lock(out, dead.pid)
    with pytest.warns(UserWarning, match="taking over the lock"):
        assert main(["train", "--resume", *tiny_overrides(tiny_model_dir, out, "run.steps=2")]) == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / "run.lock").exists()


def test_a_second_train_while_the_first_runs_is_refused(tiny_model_dir, tmp_path):
    # two real processes: the first trains (slowly), the second is refused while the first lives
    out = tmp_path / "run"
    args = ["-m", "lensrl.cli", "train", *tiny_overrides(tiny_model_dir, out, "run.steps=200", "run.save_every=0")]
    first = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (out / "metrics.jsonl").exists():
                break
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, *args[:3], "--resume", *args[3:]], capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2 and f"in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_bad_model_paths_are_one_line_errors(tmp_path, capsys):
    assert (
        main(
            ["train", "model.name_or_path=/nonexistent/model", "run.progress=false", f"run.output_dir={tmp_path / 'a'}"]
        )
        == 2
    )
    assert "lensrl: cannot load the tokenizer from '/nonexistent/model': no such folder" in capsys.readouterr().err
    assert main(["eval", "/nonexistent"]) == 2
    assert "lensrl: cannot load the tokenizer from '/nonexistent': no such folder" in capsys.readouterr().err


def test_an_override_that_is_not_yaml_is_a_one_line_error(capsys):
    assert main(["train", "prompt.template={prompt}:x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lensrl: override 'prompt.template={prompt}:x'") and "quote it" in err


def test_data_errors_come_before_the_model_loads(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{not json\n')

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(prepare, "load_policy", no_model)  # train, eval and sft all load it there
    for command in ("train", "eval", "sft"):
        # a model that does not exist: only the data error can be reported first
        assert (
            main(
                [
                    command,
                    "model.name_or_path=/nonexistent/model",
                    f"data.train={bad}",
                    f"data.eval={bad}",
                    f"run.output_dir={tmp_path / command}",
                    "run.progress=false",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("lensrl: ") and f"{bad}:2" in err, (command, err)


def test_lock_owner_is_recorded_while_running(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    setup = trainer.setup

    def spy(config, *args):
        seen.append(json.loads((tmp_path / "run" / "run.lock").read_text()))
        return setup(config, *args)

    monkeypatch.setattr(trainer, "setup", spy)
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path / "run", "run.steps=1")]) == 0
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()


def test_the_first_signal_is_one_plain_line_on_stderr_saying_what_finishes_first(capsys, recwarn):
    import signal

    from lensrl.runs.lifecycle import GracefulStop

    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
    assert stop.requested == "SIGINT" and not recwarn.list  # no UserWarning attributed to some library file
    err = capsys.readouterr().err.strip()
    assert err == (
        "lensrl: SIGINT: finishing this step's update, then saving a checkpoint and stopping "
        "(send it again to stop at once)"
    )


def test_resume_without_a_run_folder_names_the_flag_that_gives_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in tiny_overrides(tiny_model_dir, "x") if not o.startswith("run.output_dir")]
    assert main(["train", "--resume", *overrides]) == 2
    assert "lensrl train --resume --output-dir RUN_DIR" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no new folder was made for it


def test_resume_of_a_folder_that_holds_no_run_is_an_error_naming_it(tiny_model_dir, tmp_path, capsys):
    typo, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    for folder, reason in ((typo, "no such folder"), (empty, "it holds no config.yaml and no checkpoints/")):
        assert main(["train", "--resume", "--output-dir", str(folder), *tiny_overrides(tiny_model_dir, folder)]) == 2
        assert f"lensrl: no run to resume in {folder} ({reason})" in capsys.readouterr().err
    assert not typo.exists() and list(empty.iterdir()) == []  # no fresh run was started in either


def test_a_resumed_run_says_from_which_step(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_model_dir, out, "run.steps=1")]) == 0
    assert "resuming" not in capsys.readouterr().err
    assert main(["train", "--resume", "--output-dir", str(out), "run.steps=2"]) == 0
    assert f"resuming {out} from step 1\n" in capsys.readouterr().err


def test_a_tool_that_owns_its_folders_still_starts_a_new_run_by_resuming(tiny_model_dir, tmp_path):
    out = tmp_path / "study" / "lens_seed0"
    result = trainer.train_or_resume(load_config(overrides=tiny_overrides(tiny_model_dir, out, "run.steps=1")))
    assert result.output_dir == out and (out / "summary.json").exists()
