"""`lensrl plot` / `plot_runs`: a PNG of run curves from synthetic run folders and from a real tiny run."""

import json
import math

import pytest
from matplotlib.image import imread

from lensrl.cli import main
from lensrl.research.plots import plot_runs, running_mean

STEPS = 12


def _metrics(step: int, lens: bool) -> dict:
    record = {
        "step": step,
        "reward": 0.2 + 0.03 * step,
        "groups/negative": 0.5 - 0.02 * step,
        "groups/mixed": 0.4,
        "adv/negative_group_share": 0.3 if lens else 0.0,
        "approx_kl": 0.001 * step,
        "clipfrac": 0.05,
        "entropy": 1.5 - 0.05 * step,
        "response_len/mean": 40 + step,
        "response_len/max": 64,
        "pibar/wrong": math.nan,
        "time/step": 2.0,
        "time/sample": 1.2,
        "time/logprobs": 0.3,
        "time/update": 0.5,
        "lr": 1e-6,
        "grad_norm": 0.7,
    }
    if lens:
        record |= {"lens/calibrated_reward": 0.1 + 0.02 * step, "kl_ref": 0.002 * step}
    return record


def _eval(step: int, levels: bool) -> dict:
    overall = {"pass@1": 0.2 + step / 100, "pass@2": 0.3 + step / 100, "pass@4": 0.4 + step / 100}
    per_level = {str(lv): {k: v / lv for k, v in overall.items()} for lv in (1, 2, 3)} if levels else {}
    return {
        "step": step,
        "overall": overall,
        "per_level": per_level,
        "all_wrong": 0.3,
        "all_wrong_per_level": {lv: 0.3 for lv in per_level},
        "n_problems": 6,
        "samples": 4,
    }


def _write_run(folder, lens: bool, levels: bool, finished: bool = True):
    folder.mkdir(parents=True)
    lines = [json.dumps(_metrics(s, lens)) for s in range(1, STEPS + 1)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "eval.jsonl").write_text("".join(json.dumps(_eval(s, levels)) + "\n" for s in (0, 6, 12)))
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


@pytest.fixture
def lens_run(tmp_path):
    return _write_run(tmp_path / "lens_run", lens=True, levels=True)


@pytest.fixture
def grpo_run(tmp_path):
    return _write_run(tmp_path / "grpo_run", lens=False, levels=False)


def _assert_png(path):
    assert path.is_file()
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 800
    assert image.std() > 0.01  # something is drawn


def test_one_run_defaults_to_curves_png_in_the_run_folder(lens_run):
    out = plot_runs([lens_run])
    assert out == lens_run / "curves.png"
    _assert_png(out)


def test_two_runs_overlaid_with_labels(lens_run, grpo_run, tmp_path):
    out = plot_runs([lens_run, grpo_run], tmp_path / "figs" / "both.png", labels=["LENS", "GRPO"])
    assert out == tmp_path / "figs" / "both.png"
    _assert_png(out)


def test_several_runs_default_to_curves_png_here(lens_run, grpo_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = plot_runs([lens_run, grpo_run])
    assert out.resolve() == tmp_path / "curves.png"
    _assert_png(tmp_path / "curves.png")


def test_a_run_in_progress_plots_what_it_has(tmp_path):
    run = _write_run(tmp_path / "running", lens=False, levels=False, finished=False)
    (run / "eval.jsonl").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 13, "rew')  # a line being written
    _assert_png(plot_runs([run], tmp_path / "running.png"))


def test_a_folder_without_metrics_is_not_a_run(lens_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is not a run folder: no metrics.jsonl"):
        plot_runs([lens_run, tmp_path / "empty"], tmp_path / "x.png")


def test_labels_must_match_the_runs(lens_run, grpo_run, tmp_path):
    with pytest.raises(ValueError, match="labels"):
        plot_runs([lens_run, grpo_run], tmp_path / "x.png", labels=["only one"])
    assert not (tmp_path / "x.png").exists()


def test_running_mean_skips_nans():
    assert running_mean([1.0, 3.0, math.nan, 5.0], window=2) == [1.0, 2.0, 3.0, 5.0]
    assert math.isnan(running_mean([math.nan])[0])


def test_cli_plot(lens_run, grpo_run, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert main(["plot", str(lens_run), str(grpo_run), "--output", str(out), "--labels", "a,b"]) == 0
    assert str(out) in capsys.readouterr().out
    _assert_png(out)


def test_a_real_tiny_run(tiny_model_dir, tmp_path):
    from lensrl.config import load_config
    from lensrl.training.trainer import train
    from tests.conftest import tiny_overrides

    train(load_config(overrides=tiny_overrides(tiny_model_dir, tmp_path / "run", "run.sample_every=0")))
    _assert_png(plot_runs([tmp_path / "run"]))


def test_a_run_with_no_steps_yet_and_panels_without_data(grpo_run, tmp_path):
    import matplotlib.pyplot as plt

    from lensrl.research.plots import _levels_panel, load_run

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").touch()
    _assert_png(plot_runs([fresh], tmp_path / "fresh.png"))
    fig, ax = plt.subplots()
    _levels_panel(ax, [load_run(grpo_run, "grpo")])  # evaluations without levels
    assert [t.get_text() for t in ax.texts] == ["no per-level evaluations in any run"]
    plt.close(fig)
