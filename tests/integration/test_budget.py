"""Compute accounting in a real run of the tiny model, and the budget stop (`run.max_samples`,
`run.max_tokens`): the final evaluation and checkpoint at the step that reaches the budget, a summary
that says so, and a resumed finished budget run that does nothing more."""

import json
from pathlib import Path

from lensrl.cli import main
from lensrl.config import load_config
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides

PER_STEP = 16  # tiny_overrides: 4 questions x 4 samples


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run folder (its checkpoints included), by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_every_step_logs_what_it_generated_and_the_totals(tiny_model_dir, tmp_path):
    # GRPO with filtering on an always-wrong model: every group is negative and none reaches the update
    out = tmp_path / "run"
    train(
        load_config(
            overrides=tiny_overrides(
                tiny_model_dir, out, "run.steps=3", "algo.advantage=grpo", "algo.filter_groups=true"
            )
        )
    )
    metrics = _lines(out / "metrics.jsonl")
    total_tokens = 0
    for m in metrics:
        assert (m["compute/prompts"], m["compute/samples"], m["compute/samples_updated"]) == (4, PER_STEP, 0)
        # the response tokens: the mean response length over the step's 16 samples, times 16
        assert m["compute/tokens"] == round(m["response_len/mean"] * PER_STEP)
        total_tokens += m["compute/tokens"]
        assert m["compute/total_tokens"] == total_tokens
        assert m["compute/total_samples"] == PER_STEP * m["step"] and m["compute/total_prompts"] == 4 * m["step"]
        assert m["compute/total_samples_updated"] == 0
        for phase in ("sample", "reward", "logprobs", "update", "step", "rollout"):  # time per phase, kept
            assert m[f"time/{phase}"] >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["ended_by"]) == (3, "run.steps")
    assert summary["compute"] == {"prompts": 12, "samples": 48, "tokens": total_tokens, "samples_updated": 0}


def test_a_token_budget_ends_the_run_at_the_step_that_reaches_it_and_resume_does_nothing_more(tiny_model_dir, tmp_path):
    out, budget = tmp_path / "budget", 400  # 10-12 tokens a response: reached at step 3 of at most 20
    overrides = tiny_overrides(tiny_model_dir, out, "run.steps=20", f"run.max_tokens={budget}", "run.eval_every=2")
    train(load_config(overrides=overrides))
    metrics = _lines(out / "metrics.jsonl")
    end = metrics[-1]["step"]
    assert 1 < end < 20
    assert metrics[-1]["compute/total_tokens"] >= budget > metrics[-2]["compute/total_tokens"]  # the first step
    # the final evaluation (the whole evaluation set) and checkpoint at that step; the evaluation
    # every 2 steps before it
    assert [e["step"] for e in _lines(out / "eval.jsonl")] == [*range(0, end, 2), end]
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == f"step_{end:06d}"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["ended_by"], summary["last_eval"]["step"]) == (end, "run.max_tokens", end)
    assert summary["compute"] == {
        "prompts": 4 * end,
        "samples": PER_STEP * end,
        "tokens": metrics[-1]["compute/total_tokens"],
        "samples_updated": PER_STEP * end,
    }

    # resuming the finished budget run trains, evaluates and saves nothing more (also with more steps)
    before = _files(out)
    assert main(["train", "--resume", "--output-dir", str(out)]) == 0
    assert main(["train", "--resume", "--output-dir", str(out), "run.steps=30"]) == 0
    after = _files(out)
    assert before.keys() == after.keys()
    assert {k for k in before if before[k] != after[k]} <= {"config.yaml"}  # run.steps=30 is written down
    # a changed budget is another run: refused
    assert main(["train", "--resume", "--output-dir", str(out), "run.max_tokens=2000"]) == 2


def test_a_sample_budget_and_a_budget_that_run_steps_cap(tiny_model_dir, tmp_path):
    # 20 samples: step 1 has 16, step 2 reaches 32; a budget of 1000 samples: run.steps=2 ends the run first
    for budget, steps, ended_by in ((20, 5, "run.max_samples"), (1000, 2, "run.steps")):
        out = tmp_path / f"samples{budget}"
        train(
            load_config(
                overrides=tiny_overrides(tiny_model_dir, out, f"run.steps={steps}", f"run.max_samples={budget}")
            )
        )
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["steps"], summary["ended_by"], summary["compute"]["samples"]) == (2, ended_by, 32)
        assert [m["step"] for m in _lines(out / "metrics.jsonl")] == [1, 2]
        assert [e["step"] for e in _lines(out / "eval.jsonl")] == [0, 2]


def test_an_interrupted_budget_run_resumes_to_the_same_end(tiny_model_dir, tmp_path):
    # a budget run stopped after 2 steps (run.steps=2 there) and resumed with the full run.steps ends
    # where the uninterrupted one does: the same step, metrics, totals, evaluations and summary
    def config(out, steps):
        return load_config(
            overrides=tiny_overrides(
                tiny_model_dir, out, f"run.steps={steps}", "run.max_tokens=700", "run.eval_every=2", "run.save_every=1"
            )
        )

    train(config(tmp_path / "whole", 20))
    train(config(tmp_path / "resumed", 2))
    train(config(tmp_path / "resumed", 20), resume=True)

    def without_timings(run, name):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in _lines(run / name)]

    for name in ("metrics.jsonl", "eval.jsonl"):
        assert without_timings(tmp_path / "resumed", name) == without_timings(tmp_path / "whole", name), name
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("resumed", "whole")]
    assert summaries[0] == summaries[1] and summaries[0]["ended_by"] == "run.max_tokens"


def test_a_study_of_arms_with_equal_token_budgets(tiny_model_dir, tmp_path):
    # `lensrl study` with run.max_tokens and a large run.steps: every run ends at its own step; the
    # report's final pass@k is each run's last evaluation, study.json gives the compute there, the
    # curves are drawn against tokens, and --report-only rebuilds the same report from the records
    import shlex

    from lensrl.cli import build_parser
    from lensrl.research.arms import find_study, load_studies
    from lensrl.research.study import report_from_records

    studies_file = Path(__file__).resolve().parents[2] / "experiments" / "studies.py"
    overrides = [o for o in tiny_overrides(tiny_model_dir, "unused") if not o.startswith("run.")]
    results = tmp_path / "results"
    args = ["study", "main", "--studies", str(studies_file), "--seeds", "0,1", "--x", "tokens"]
    args += ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(results)]
    assert main([*args, *overrides, "run.steps=20", "run.max_tokens=250", "run.eval_every=2"]) == 0
    study = json.loads((results / "study.json").read_text())
    assert " --x tokens " in study["command"]
    for arm in ("grpo", "lens"):
        ends, tokens, samples = [], [], []
        for seed in (0, 1):
            record = json.loads((results / "runs" / f"{arm}_seed{seed}.json").read_text())
            curves, last = record["curves"], record["evals"][-1]
            totals = curves["compute/total_tokens"]
            assert totals[-1] >= 250 > totals[-2] and last["step"] == curves["step"][-1] < 20
            summary = json.loads((tmp_path / "runs" / f"{arm}_seed{seed}" / "summary.json").read_text())
            assert summary["ended_by"] == "run.max_tokens" and summary["last_eval"] == last
            assert study["arms"][arm]["all"]["pass@1"]["values"][seed] == last["overall"]["pass@1"]
            ends.append(last["step"])
            tokens.append(totals[-1])
            samples.append(curves["compute/total_samples"][-1])
        assert study["compute"][arm] == {"step": sum(ends) / 2, "samples": sum(samples) / 2, "tokens": sum(tokens) / 2}
    assert "| arm | step | samples | tokens |" in (results / "study.md").read_text()
    assert (results / "study_curves.png").stat().st_size > 10_000

    # the report from the records alone, by the command it records: the same bytes
    written = {name: (results / name).read_bytes() for name in ("study.json", "study.md")}
    parsed, extra = build_parser().parse_known_args(shlex.split(study["command"])[1:])
    report_from_records(
        find_study("main", load_studies(studies_file)),
        parsed.seeds,
        parsed.config,
        [*parsed.overrides, *extra],
        results,
        figures=False,
        x=parsed.x,
    )
    assert {name: (results / name).read_bytes() for name in written} == written
