"""`lensrl study` on a tiny model: every arm and seed runs once, a rerun resumes without retraining."""

import json
import shlex
import shutil
from pathlib import Path

import pytest

from lensrl.cli import build_parser, main
from lensrl.config import load_config
from lensrl.research.arms import find_study, load_studies
from lensrl.research.study import RunRecord, report_from_records
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
STUDIES_FILE = ROOT / "experiments" / "studies.py"
STUDIES = load_studies(STUDIES_FILE)  # this repository's studies
REGISTERED = [(name, study.results_dir) for name, study in STUDIES.items()]
COMMITTED = [(n, f) for n, f in REGISTERED if (ROOT / f / "study.json").exists()]  # every finished study's report
STUDIES_WITHOUT_REPORT = [(n, f) for n, f in REGISTERED if (n, f) not in COMMITTED]  # in progress
# the main study rerun from scratch, whose report the study code of its time wrote (differences against
# GRPO with unpaired standard errors): its records are committed, its report is kept as written then
RERUN = Path("results/carry/main/rerun")


def _study_args(model_dir, tmp_path, *extra, name="main", seeds="0,1", runs="runs", results="results"):
    overrides = [o for o in tiny_overrides(model_dir, tmp_path / "unused") if not o.startswith("run.output_dir")]
    return [
        "study",
        name,
        "--studies",
        str(STUDIES_FILE),
        "--seeds",
        seeds,
        "--runs-dir",
        str(tmp_path / runs),
        "--results-dir",
        str(tmp_path / results),
        *overrides,
        "run.steps=1",
        "run.eval_every=1",
        *extra,
    ]


def test_study_runs_every_arm_and_seed_then_resumes(tiny_model_dir, tmp_path, capsys):
    assert main(_study_args(tiny_model_dir, tmp_path)) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["grpo_seed0", "grpo_seed1", "lens_seed0", "lens_seed1"]
    study = json.loads((tmp_path / "results" / "study.json").read_text())
    assert study["reference"] == "grpo" and study["seeds"] == [0, 1]
    assert set(study["arms"]) == {"grpo", "lens"} and "vs_reference" in study["arms"]["lens"]["all"]["pass@1"]
    for name in ("study.md", "study.png", "study_curves.png", "runs/lens_seed1.json"):
        assert (tmp_path / "results" / name).exists(), name
    record = json.loads((tmp_path / "results" / "runs" / "lens_seed1.json").read_text())
    assert record["seed"] == 1 and [e["step"] for e in record["evals"]] == [0, 1]

    stamps = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    (tmp_path / "runs" / "lens_seed1" / "summary.json").unlink()  # as if killed before it finished:
    (tmp_path / "results" / "runs" / "lens_seed1.json").unlink()  # no summary, no record
    assert main(_study_args(tiny_model_dir, tmp_path)) == 0
    after = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert {k for k in stamps if stamps[k] != after[k]} == {"lens_seed1"}  # only the unfinished run reran
    assert "lens" in capsys.readouterr().out

    # the run folders gone (a fresh clone): the committed records, which hold their configs, stand for
    # the runs, so nothing is trained again and the records and the report come out as they were
    records = {p.name: p.read_text() for p in (tmp_path / "results" / "runs").iterdir()}
    report = (tmp_path / "results" / "study.json").read_text()
    shutil.rmtree(tmp_path / "runs")
    assert main(_study_args(tiny_model_dir, tmp_path)) == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert {p.name: p.read_text() for p in (tmp_path / "results" / "runs").iterdir()} == records
    assert (tmp_path / "results" / "study.json").read_text() == report
    # a record of another config is no stand-in: changing an override trains that arm again
    assert main(_study_args(tiny_model_dir, tmp_path, "algo.clip_high=0.3", seeds="0")) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["grpo_seed0", "lens_seed0"]

    assert main(_study_args(tiny_model_dir, tmp_path, "optim.lr=2e-3")) == 0  # a changed config reruns all
    changed = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert all(changed[k] != after[k] for k in after)


def test_a_study_reuses_the_runs_another_study_already_trained(tiny_model_dir, tmp_path):
    assert (
        main(_study_args(tiny_model_dir, tmp_path, name="main", seeds="0", runs="study/main", results="results_main"))
        == 0
    )
    assert (
        main(
            _study_args(
                tiny_model_dir, tmp_path, name="remedies", seeds="0", runs="study/remedies", results="results_remedies"
            )
        )
        == 0
    )
    # grpo and lens are the same configs in both studies: only the two new arms were trained
    assert sorted(p.name for p in (tmp_path / "study" / "remedies").iterdir()) == [
        "grpo_filtered_seed0",
        "uniform_negative_seed0",
    ]
    for arm in ("grpo", "lens"):
        main_run = json.loads((tmp_path / "results_main" / "runs" / f"{arm}_seed0.json").read_text())
        reused = json.loads((tmp_path / "results_remedies" / "runs" / f"{arm}_seed0.json").read_text())
        assert reused["evals"] == main_run["evals"]
    study = json.loads((tmp_path / "results_remedies" / "study.json").read_text())
    assert list(study["arms"]) == ["grpo", "grpo_filtered", "uniform_negative", "lens"]


def test_unknown_study_is_a_clear_error(capsys):
    assert main(["study", "nope", "--studies", str(STUDIES_FILE)]) == 2
    assert f"unknown study 'nope' in {STUDIES_FILE}; known: main, ablation" in capsys.readouterr().err


def test_the_study_help_lists_no_study():
    # the studies are the studies file's, read when the command runs: --help names none of them
    help_text = build_parser()._subparsers._group_actions[0].choices["study"].format_help()
    assert "--studies" in help_text and "signs-negative" not in help_text and "smollm2" not in help_text
    assert "signs-negative" not in build_parser().format_help()


def test_filtered_groups_leave_an_all_negative_rollout_without_update(tiny_model_dir, tmp_path):
    # the random tiny model is always wrong: filtering drops every group under GRPO (nothing to learn),
    # but under LENS the negative groups stay in the update
    for algo, share in (("grpo", 0.0), ("lens", 1.0)):
        out = tmp_path / algo
        train(
            load_config(
                overrides=tiny_overrides(
                    tiny_model_dir, out, f"algo.advantage={algo}", "algo.filter_groups=true", "run.steps=1"
                )
            )
        )
        metrics = json.loads((out / "metrics.jsonl").read_text())
        assert metrics["groups/negative"] == 1.0 and metrics["groups/updated"] == share


def test_jobs_train_the_same_runs_in_worker_processes(tiny_model_dir, tmp_path):
    # `lensrl study --jobs 2`: every run in one of two worker processes; the records are those of the
    # runs trained one after the other in this process (but the timings)
    assert main(_study_args(tiny_model_dir, tmp_path, runs="serial", results="serial_results")) == 0
    assert main([*_study_args(tiny_model_dir, tmp_path, runs="jobs", results="jobs_results"), "--jobs", "2"]) == 0

    def record(folder, name):
        rec = json.loads((tmp_path / folder / "runs" / name).read_text())
        return {**rec, "curves": {k: v for k, v in rec["curves"].items() if not k.startswith("time/")}}

    names = sorted(p.name for p in (tmp_path / "serial_results" / "runs").iterdir())
    assert names == ["grpo_seed0.json", "grpo_seed1.json", "lens_seed0.json", "lens_seed1.json"]
    for name in names:
        assert record("jobs_results", name) == record("serial_results", name), name


def test_a_longer_arm_extends_a_finished_shorter_run_exactly(tiny_model_dir, tmp_path):
    # a 3-step run started from a finished 1-step run of the same config equals a 3-step run from scratch:
    # same metrics at every step (but timings), same evaluations, same final weights
    from safetensors.torch import load_file

    from lensrl.research.study import Arm, Study, arm_config, train_arms

    base = [o for o in tiny_overrides(tiny_model_dir, tmp_path / "unused") if not o.startswith("run.")]
    base.append("run.eval_every=1")
    short = Study("short", "q", (Arm("grpo", ("algo.advantage=grpo",)),), overrides=(*base, "run.steps=1"))
    long = Study(
        "long", "q", (Arm("grpo", ("algo.advantage=grpo",), steps_factor=3),), overrides=(*base, "run.steps=1")
    )
    for study in (short, long):
        runs = tmp_path / "study" / study.name
        train_arms(
            study,
            [0],
            lambda arm, seed, s=study, r=runs: arm_config(s, arm, seed, r, None, ["run.progress=false"]),
            tmp_path / "records" / study.name,
            search_root=tmp_path / "study",
        )
    extended = tmp_path / "study" / "long" / "grpo_seed0"
    assert (extended / "checkpoints" / "step_000003").is_dir()
    first_step = [
        (run / "metrics.jsonl").read_text().splitlines()[0]
        for run in (extended, tmp_path / "study" / "short" / "grpo_seed0")
    ]
    assert first_step[0] == first_step[1]  # step 1 was not retrained: its timings are the short run's
    scratch = load_config(
        None,
        [*base, "algo.advantage=grpo", "run.steps=3", "run.progress=false", f"run.output_dir={tmp_path / 'scratch'}"],
    )
    train(scratch)

    def lines(run, name):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]

    for name in ("metrics.jsonl", "eval.jsonl"):
        assert lines(extended, name) == lines(tmp_path / "scratch", name), name
    weights = [
        load_file(run / "checkpoints" / "step_000003" / "model.safetensors") for run in (extended, tmp_path / "scratch")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


def test_an_interrupted_study_keeps_the_records_of_its_finished_runs(tiny_model_dir, tmp_path):
    # the second arm's model does not exist, so the study stops there; the first arm's record is
    # already written (a study killed mid-way loses only its unfinished runs)
    from lensrl.research.study import Arm, Study, arm_config, train_arms

    base = [o for o in tiny_overrides(tiny_model_dir, tmp_path / "unused") if not o.startswith("run.")]
    study = Study(
        "interrupted",
        "q",
        (Arm("grpo", ("algo.advantage=grpo",)), Arm("broken", (f"model.name_or_path={tmp_path / 'missing'}",))),
        overrides=(*base, "run.steps=1"),
    )
    runs, records = tmp_path / "study" / study.name, tmp_path / "records"
    with pytest.raises(ValueError, match="cannot load the tokenizer"):
        train_arms(
            study, [0], lambda arm, seed: arm_config(study, arm, seed, runs, None, ["run.progress=false"]), records
        )
    assert sorted(p.name for p in records.iterdir()) == ["grpo_seed0.json"]
    assert json.loads((records / "grpo_seed0.json").read_text())["evals"]


def test_every_committed_study_report_is_a_registered_study_or_the_rerun():
    found = sorted(p.parent.relative_to(ROOT) for p in ROOT.glob("results/**/study.json"))
    assert found == sorted([RERUN, *(folder for _, folder in COMMITTED)])


def test_a_registered_study_without_a_report_is_one_in_progress_with_its_plan():
    # a plan that covers several studies (one per regime) sits in the folder above theirs
    for _, folder in STUDIES_WITHOUT_REPORT:
        plans = [ROOT / folder / "PLAN.md", (ROOT / folder).parent / "PLAN.md"]
        assert any(p.exists() for p in plans), f"{folder}: no study.json and no PLAN.md"


@pytest.mark.parametrize(("name", "folder"), COMMITTED, ids=[str(folder) for _, folder in COMMITTED])
def test_a_committed_study_report_regenerates_byte_for_byte_from_its_records(name, folder, tmp_path):
    # the report's own command (in study.json) parsed as the CLI does (overrides may follow options),
    # then --report-only into a copy of the records: study.json and study.md come out identical (the
    # figures' bytes depend on the matplotlib and FreeType build, so they are not compared here)
    committed = ROOT / folder
    command = shlex.split(json.loads((committed / "study.json").read_text())["command"])
    args, overrides = build_parser().parse_known_args(command[1:])
    assert (command[0], args.command, args.name) == ("lensrl", "study", name) and all("=" in o for o in overrides)
    shutil.copytree(committed / "runs", tmp_path / folder.name / "runs")
    study = find_study(args.name, load_studies(ROOT / args.studies), ROOT / args.studies)  # from the repository root
    report_from_records(
        study, args.seeds, args.config, [*args.overrides, *overrides], tmp_path / folder.name, figures=False, x=args.x
    )
    for file in ("study.json", "study.md"):
        assert (tmp_path / folder.name / file).read_bytes() == (committed / file).read_bytes(), file


def test_committed_run_records_load_and_write_back_unchanged():
    paths = sorted(ROOT.glob("results/**/runs/*_seed*.json"))
    assert len(paths) >= 100
    for path in paths:
        text = path.read_text()
        assert json.dumps(RunRecord.from_json(json.loads(text)).to_json()) == text, path


def test_the_long_study_gains_regenerate_byte_for_byte_from_its_records(tmp_path, capsys):
    import experiments.signs_long_gains as module

    shutil.copytree(ROOT / "results/signs/long/runs", tmp_path / "runs")
    assert module.main([str(tmp_path)]) == 0
    assert (tmp_path / "gains.json").read_bytes() == (ROOT / "results/signs/long/gains.json").read_bytes()
    assert "GRPO saturates (its gain's CI contains 0 or lies below it): False" in capsys.readouterr().out


def test_the_negative_groups_answer_regenerates_from_its_records(tmp_path, monkeypatch):
    # the answer reads signs-main's records by a path relative to the repository root (its replay check)
    import experiments.signs_negative_answer as module

    monkeypatch.chdir(ROOT)
    committed = ROOT / "results/signs/negative"
    shutil.copytree(committed / "runs", tmp_path / "runs")
    module.main(["--results", str(tmp_path)])
    # the command names the copy's folder; every number and line after it comes out as committed
    written, expected = (json.loads((folder / "answer.json").read_text()) for folder in (tmp_path, committed))
    assert written.pop("command").endswith(str(tmp_path)) and expected.pop("command")
    assert written == expected
    tail = (tmp_path / "answer.md").read_text().split("\n", 1)[1]
    assert tail == (committed / "answer.md").read_text().split("\n", 1)[1]
