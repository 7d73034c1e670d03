"""The `lensrl` command line on a tiny model: train, eval, compare, and config errors."""

import json
import subprocess
import sys

import pytest

from lensrl.cli import main
from tests.conftest import tiny_overrides


def test_help_needs_no_heavy_imports():
    # --help must not import torch/transformers (it is meant to be instant)
    code = "import sys; from lensrl.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_prints_before_after_table(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_model_dir, out)]) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "pass@16" not in printed  # 2 samples: k <= 2
    assert "pass@2" in printed
    assert (out / "summary.json").exists()


def test_eval_writes_pass_at_k_by_level(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "run.progress=false",
        "data.eval={path: testbed, per_level: 2}",
        "run.eval_samples=4",
        "rollout.max_new_tokens=8",
    ]
    assert main(args) == 0
    record = json.loads((out / "eval.jsonl").read_text().splitlines()[0])
    assert set(record["overall"]) == {"pass@1", "pass@2", "pass@4"}
    assert set(record["per_level"]) == {"1", "2", "3", "4", "5"}
    # 10 problems x 4 samples of at most 8 tokens each: a share and a mean length within those bounds
    assert 0.0 <= record["unparseable"] <= 1.0 and 1.0 <= record["response_tokens"] <= 8.0
    printed = capsys.readouterr().out
    assert "level" in printed and "response tokens on average" in printed


def test_eval_reads_only_the_evaluation_sources(tiny_model_dir, tmp_path):
    # data.train names a file that does not exist (it could as well be a hub dataset): eval never opens it,
    # and evaluates exactly as with any other training set
    rows = []
    for train in (str(tmp_path / "missing.jsonl"), "testbed"):
        out = tmp_path / ("eval_" + str(len(rows)))
        args = ["eval", str(tiny_model_dir), *tiny_overrides(tiny_model_dir, out, f"data.train={train}")]
        assert main(args) == 0
        rows.append(json.loads((out / "eval.jsonl").read_text()))
    assert rows[0] == rows[1]


def test_eval_of_a_checkpoint_at_its_step_reproduces_the_runs_row(tiny_model_dir, tmp_path):
    # `--step 2` seeds the sampling as the run's own evaluation after step 2 did: the same row exactly
    run, again = tmp_path / "run", tmp_path / "again"
    assert main(["train", *tiny_overrides(tiny_model_dir, run)]) == 0
    assert (
        main(["eval", str(run / "checkpoints" / "step_000002"), "--step", "2", *tiny_overrides(tiny_model_dir, again)])
        == 0
    )
    last = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and json.loads((again / "eval.jsonl").read_text()) == last


def test_eval_of_a_run_folder_takes_its_newest_checkpoint_and_config_and_logs_only_where_asked(
    tiny_model_dir, tmp_path, capsys
):
    run, again = tmp_path / "run", tmp_path / "again"
    assert main(["train", *tiny_overrides(tiny_model_dir, run, "run.save_every=1")]) == 0
    rows = (run / "eval.jsonl").read_text()
    # the run's config.yaml (its seed, data, sampling) and checkpoints/step_000002: the run's last row
    assert main(["eval", str(run), "--step", "2", "--output-dir", str(again)]) == 0
    assert json.loads((again / "eval.jsonl").read_text()) == json.loads(rows.splitlines()[-1])
    # a checkpoint with the run's config.yaml and no --output-dir: printed, logged nowhere
    checkpoint = run / "checkpoints" / "step_000001"
    assert main(["eval", str(checkpoint), "--config", str(run / "config.yaml"), "--step", "1"]) == 0
    assert (run / "eval.jsonl").read_text() == rows and "pass@1" in capsys.readouterr().out


def test_eval_of_a_folder_with_no_model_and_no_checkpoints_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", str(empty)]) == 2
    assert capsys.readouterr().err.startswith(f"lensrl: {empty} holds no model (no config.json) and no checkpoints/")


def test_compare_writes_table_json_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--seeds", "0,1", *tiny_overrides(tiny_model_dir, out, "run.steps=1")]) == 0
    report = json.loads((out / "compare.json").read_text())  # the main study's aggregate, on this config
    assert report["seeds"] == [0, 1] and report["reference"] == "grpo"
    assert set(report["arms"]) == {"grpo", "lens"}
    # the base row is the mean of each seed's own step-0 evaluation of the (shared) base policy
    runs = [json.loads((out / "runs" / f"grpo_seed{seed}.json").read_text()) for seed in (0, 1)]
    starts = [run["evals"][0]["overall"]["pass@1"] for run in runs]
    assert report["base"]["all"]["pass@1"] == pytest.approx(sum(starts) / 2)
    assert report["arms"]["lens"]["all"]["pass@1"]["values"] == [
        json.loads((out / "runs" / f"lens_seed{seed}.json").read_text())["evals"][-1]["overall"]["pass@1"]
        for seed in (0, 1)
    ]
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "compare_curves.png").stat().st_size > 10_000
    assert {run["samples_per_step"] for run in runs} == {16}  # 4 questions x 4 samples, from each run's config
    assert "| all | lens |" in (out / "compare.md").read_text()
    for algo in ("grpo", "lens"):
        for seed in (0, 1):
            assert (out / f"{algo}_seed{seed}" / "eval.jsonl").exists()


def test_invalid_override_is_a_clear_error(capsys):
    assert main(["train", "algo.alpha=-2"]) == 2
    assert "algo.alpha" in capsys.readouterr().err


def test_a_yaml_syntax_error_in_the_config_file_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  steps: 3\n   seed: 1\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lensrl: {path}:3:") and "Traceback" not in err


def test_version_prints_the_installed_version_without_heavy_imports():
    from importlib.metadata import version

    code = (
        "import sys\nfrom lensrl.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"lensrl {version('lensrl')}", "False 0"]
