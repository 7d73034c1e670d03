"""Studies and plots on a compute axis: run records with compute totals, arms that end at different
steps (a budget), the compute at the final evaluation, and `lensrl plot --x`, by hand."""

import json
from pathlib import Path

import pytest

from lensrl.evaluation.evaluate import EvalResult
from lensrl.research.arms import load_studies
from lensrl.research.plots import at_evaluations, compute_axis, mean_and_std, plot_runs
from lensrl.research.study import RunRecord, aggregate, format_study_table, write_report

ROOT = Path(__file__).resolve().parents[2]
STUDIES = load_studies(ROOT / "experiments" / "studies.py")


def _eval(step: int, p1: float) -> EvalResult:
    return EvalResult(
        step=step,
        overall={"pass@1": p1, "pass@2": p1 + 0.1},
        per_level={"5": {"pass@1": p1, "pass@2": p1}},
        all_wrong=0.0,
        all_wrong_per_level={"5": 0.0},
        n_problems=4,
        samples=2,
    )


def _record(arm: str, seed: int, evals: list[tuple[int, float]], tokens_per_step: list[int] | None) -> RunRecord:
    """A run of len(tokens_per_step) steps of 16 samples (8 updated) with these tokens; None: a record
    from before compute accounting (no totals, 4 steps)."""
    steps = len(tokens_per_step) if tokens_per_step else 4
    curves: dict = {"step": list(range(1, steps + 1)), "groups/negative": [0.5] * steps}
    if tokens_per_step:
        totals = [sum(tokens_per_step[: i + 1]) for i in range(steps)]
        curves |= {
            "compute/total_prompts": [4 * s for s in curves["step"]],
            "compute/total_samples": [16 * s for s in curves["step"]],
            "compute/total_tokens": totals,
            "compute/total_samples_updated": [8 * s for s in curves["step"]],
        }
    return RunRecord(arm, seed, [_eval(s, p) for s, p in evals], curves, samples_per_step=16, config={})


def test_a_record_maps_any_step_to_its_compute_and_round_trips():
    record = _record("lens", 0, [(0, 0.1), (2, 0.2), (3, 0.3)], [100, 120, 90])
    assert record.has_tokens
    assert [record.tokens_at(s) for s in (0, 1, 2, 3)] == [0, 100, 220, 310]
    assert [record.samples_at(s) for s in (0, 2, 3)] == [0, 32, 48]
    assert (
        record.total_at("compute/total_samples_updated", 3) == 24 and record.total_at("compute/total_tokens", 9) is None
    )
    assert [record.compute_at(axis, 2) for axis in ("step", "samples", "tokens")] == [2, 32, 220]
    text = json.dumps(record.to_json())
    assert json.dumps(RunRecord.from_json(json.loads(text)).to_json()) == text
    # a record from before compute accounting: samples from samples_per_step, tokens unknown
    old = _record("lens", 0, [(0, 0.1), (4, 0.2)], None)
    assert not old.has_tokens and old.samples_at(4) == 64 and old.tokens_at(4) is None
    with pytest.raises(ValueError, match="unknown axis"):
        old.compute_at("flops", 1)


def test_evaluations_align_last_with_last_for_runs_that_end_at_different_steps():
    # seed 0 ends at step 3 (evaluations 0, 2, 3), seed 1 at step 5 (0, 2, 4, 5): the final ones share
    # the last column, seed 0 has nothing in the third
    runs = [
        _record("lens", 0, [(0, 0.1), (2, 0.2), (3, 0.3)], [100] * 3),
        _record("lens", 1, [(0, 0.1), (2, 0.4), (4, 0.5), (5, 0.7)], [60] * 5),
    ]
    assert at_evaluations(runs, lambda r, e: e.step) == [[0, 2, None, 3], [0, 2, 4, 5]]
    steps, _ = mean_and_std(at_evaluations(runs, lambda r, e: e.step))
    assert steps == [0, 2, 4, 4]  # the final column at the seeds' mean step (3 + 5) / 2
    tokens, _ = mean_and_std(at_evaluations(runs, lambda r, e: r.tokens_at(e.step)))
    assert tokens == [0, 160, 240, 300]  # (200 + 120) / 2; 240; (300 + 300) / 2
    # runs with the same evaluations: one column per evaluation, as before
    same = [_record("lens", s, [(0, 0.1), (2, 0.2)], [100, 100]) for s in (0, 1)]
    assert at_evaluations(same, lambda r, e: e.step) == [[0, 2], [0, 2]]


def _budget_records() -> dict[str, list[RunRecord]]:
    """Two arms under one token budget of 300: grpo's responses are longer, so it ends sooner."""
    return {
        "grpo": [
            _record("grpo", 0, [(0, 0.1), (2, 0.2), (3, 0.25)], [100, 100, 100]),
            _record("grpo", 1, [(0, 0.1), (2, 0.3), (4, 0.3)], [80, 80, 80, 80]),
        ],
        "lens": [
            _record("lens", 0, [(0, 0.1), (2, 0.3), (4, 0.4), (5, 0.45)], [60] * 5),
            _record("lens", 1, [(0, 0.1), (2, 0.3), (4, 0.5), (6, 0.55)], [50] * 6),
        ],
    }


def test_the_final_pass_at_k_is_each_runs_last_evaluation_and_the_compute_there_is_reported():
    agg = aggregate(STUDIES["main"], _budget_records())
    assert agg["arms"]["grpo"]["all"]["pass@1"]["values"] == [0.25, 0.3]  # steps 3 and 4
    assert agg["arms"]["lens"]["all"]["pass@1"]["values"] == [0.45, 0.55]  # steps 5 and 6
    # grpo: steps 3 and 4 -> 3.5; samples 48 and 64 -> 56; tokens 300 and 320 -> 310
    # lens: steps 5 and 6 -> 5.5; samples 80 and 96 -> 88; tokens 300 and 300 -> 300
    assert agg["compute"] == {
        "grpo": {"step": 3.5, "samples": 56, "tokens": 310},
        "lens": {"step": 5.5, "samples": 88, "tokens": 300},
    }
    table = format_study_table(agg, 2)
    assert "| arm | step | samples | tokens |" in table
    assert "| grpo | 3.5 | 56 | 310 |" in table and "| lens | 5.5 | 88 | 300 |" in table
    # records from before compute accounting: no compute in the aggregate or the table
    old = {arm: [_record(arm, s, [(0, 0.1), (4, 0.2)], None) for s in (0, 1)] for arm in ("grpo", "lens")}
    agg = aggregate(STUDIES["main"], old)
    assert "compute" not in agg and "Compute at the final evaluation" not in format_study_table(agg, 2)
    # a mix: the old runs' tokens are unknown
    mixed = {"grpo": old["grpo"], "lens": _budget_records()["lens"]}
    compute = aggregate(STUDIES["main"], mixed)["compute"]
    assert compute["grpo"] == {"step": 4, "samples": 64, "tokens": None}
    assert "| grpo | 4 | 64 | n/a |" in format_study_table(aggregate(STUDIES["main"], mixed), 2)


def test_the_report_draws_the_curves_on_the_asked_axis_and_tokens_fall_back_to_samples(tmp_path):
    records = _budget_records()
    assert compute_axis(records, "tokens") == ("tokens", "")
    for x in ("samples", "tokens", "step"):
        (tmp_path / x).mkdir()
        write_report(STUDIES["main"], [0, 1], records, tmp_path / x, "lensrl study main", "study", x=x)
        assert (tmp_path / x / "study_curves.png").stat().st_size > 10_000
        assert (tmp_path / x / "study.png").stat().st_size > 10_000
    old = {arm: [_record(arm, s, [(0, 0.1), (4, 0.2)], None) for s in (0, 1)] for arm in ("grpo", "lens")}
    assert compute_axis(old, "tokens") == ("samples", "tokens: not recorded by every run, so samples")
    assert compute_axis(old, "samples") == ("samples", "")
    with pytest.raises(ValueError, match="unknown x axis"):
        write_report(STUDIES["main"], [0, 1], old, tmp_path, "lensrl study main", "study", x="flops")


def _write_run(folder: Path, with_compute: bool) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for step in range(1, 7):
        row = {"step": step, "reward": 0.1 * step, "groups/negative": 0.5, "response_len/mean": 10.0}
        if with_compute:
            row |= {"compute/total_samples": 16 * step, "compute/total_tokens": 160 * step}
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = [_eval(s, 0.1 * s).to_json() for s in (0, 3, 6)]
    (folder / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return folder


def test_plot_puts_the_curves_on_the_samples_or_tokens_generated(tmp_path, capsys):
    import matplotlib.pyplot as plt

    from lensrl.cli import main
    from lensrl.research.plots import _passk_panel, _series, load_run

    run = _write_run(tmp_path / "run", with_compute=True)
    loaded = load_run(run, "run")
    assert _series(loaded.metrics, "reward", "tokens")[0] == [160, 320, 480, 640, 800, 960]
    assert _series(loaded.metrics, "reward", "samples")[0] == [16, 32, 48, 64, 80, 96]
    assert _series(loaded.metrics, "reward")[0] == [1, 2, 3, 4, 5, 6]
    assert loaded.describe("tokens") == "run: 6 steps, 960 tokens, no summary yet"
    fig, ax = plt.subplots()
    _passk_panel(ax, [loaded], "tokens")  # evaluations at steps 0, 3, 6: 0, 480 and 960 tokens
    assert list(ax.lines[0].get_xdata()) == [0, 480, 960] and ax.get_xlabel() == "tokens generated"
    plt.close(fig)
    for x in ("samples", "tokens"):
        out = tmp_path / f"{x}.png"
        assert main(["plot", str(run), "--x", x, "--output", str(out)]) == 0
        assert out.stat().st_size > 10_000
    # a run from before compute accounting: only --x step
    old = _write_run(tmp_path / "old", with_compute=False)
    assert main(["plot", str(old), "--output", str(tmp_path / "old.png")]) == 0
    capsys.readouterr()
    assert main(["plot", str(run), str(old), "--x", "tokens", "--output", str(tmp_path / "x.png")]) == 2
    assert "has no compute/total_tokens" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown x axis"):
        plot_runs([run], tmp_path / "y.png", x="flops")
