"""The remedies' advantages, group filtering, and the study's aggregate, tables, records and plots, with
hand-worked values (the paired statistics themselves: test_stats.py)."""

import json
import math
from pathlib import Path

import pytest
import torch

from lensrl.config import GRPOAlgo, LensAlgo, TrainConfig, UniformNegativeAlgo
from lensrl.core.advantages import grpo_advantages, kept_groups, uniform_negative_advantages
from lensrl.evaluation.evaluate import EvalResult
from lensrl.research.arms import load_studies
from lensrl.research.study import RunRecord, aggregate, format_study_table

ROOT = Path(__file__).resolve().parents[2]
STUDIES_FILE = ROOT / "experiments" / "studies.py"
STUDIES = load_studies(STUDIES_FILE)  # this repository's studies


def test_uniform_negative_is_grpo_plus_a_flat_penalty_on_negative_groups():
    # group 1: [1, 0] mixed -> GRPO: mean 0.5, unbiased std 0.7071 -> +-0.7071; group 2: [0, 0] -> -alpha each
    correct = torch.tensor([1.0, 0.0, 0.0, 0.0])
    adv = uniform_negative_advantages(correct, group_size=2, alpha=0.3)
    torch.testing.assert_close(adv[:2], grpo_advantages(correct, 2)[:2])
    torch.testing.assert_close(adv[:2], torch.tensor([0.70710, -0.70710]), atol=1e-4, rtol=0)
    torch.testing.assert_close(adv[2:], torch.tensor([-0.3, -0.3]))


def test_kept_groups_keep_negative_groups_only_where_they_carry_a_signal():
    correct = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # mixed, negative, all correct
    assert kept_groups(correct, 2, keep_negative=False).tolist() == [True, False, False]  # GRPO
    assert kept_groups(correct, 2, keep_negative=True).tolist() == [True, True, False]  # LENS, uniform_negative
    assert LensAlgo.negative_groups_signal and UniformNegativeAlgo.negative_groups_signal
    assert not GRPOAlgo.negative_groups_signal


def _record(p1_by_step, level_p1, seed, curves=None, arm="lens"):
    evals = [
        EvalResult(
            step=s,
            overall={"pass@1": v, "pass@2": v + 0.1},
            per_level={"5": {"pass@1": level_p1, "pass@2": level_p1}},
            all_wrong=0.0,
            all_wrong_per_level={"5": 0.0},
            n_problems=4,
            samples=2,
        )
        for s, v in p1_by_step
    ]
    return RunRecord(
        arm, seed, evals, curves or {"step": [1], "groups/negative": [0.5]}, samples_per_step=16, config={}
    )


def test_aggregate_and_table_use_the_last_evaluation_of_every_seed():
    # the two seeds evaluate the base policy at 0.3 and 0.4 (their own samples): base 0.35 +- 0.0707
    records = {
        "grpo": [_record([(0, 0.3), (10, 0.30)], 0.1, 0), _record([(0, 0.4), (10, 0.32)], 0.1, 1)],
        "lens": [_record([(0, 0.3), (10, 0.40)], 0.2, 0), _record([(0, 0.3), (10, 0.43)], 0.2, 1)],
    }
    agg = aggregate(STUDIES["main"], records)
    cell = agg["arms"]["lens"]["all"]["pass@1"]
    assert cell["mean"] == pytest.approx(0.415) and cell["values"] == [0.40, 0.43]
    # seed-paired: d = [0.10, 0.11], mean 0.105, sd 0.0070711, SE 0.005, t_{0.975,1} = 12.706:
    # CI 0.105 +- 0.06353 = (0.04147, 0.16853); MDE = (12.706 + t_{0.80,1} = 1.3764) * 0.005 = 0.07041
    w = cell["vs_reference"]
    assert w["diff"] == pytest.approx(0.105) and w["sd"] == pytest.approx(0.0070711, abs=1e-6) and w["n"] == 2
    assert w["ci_low"] == pytest.approx(0.04147, abs=1e-5) and w["ci_high"] == pytest.approx(0.16853, abs=1e-5)
    assert w["significant"] and w["mde"] == pytest.approx(0.07041, abs=1e-5)
    # exact sign-flip p: of the sums +-0.10 +-0.11 only (+,+) and (-,-) reach |0.21|: 2 / 4
    assert not w["constant"] and w["p_exact"] == pytest.approx(0.5)
    assert set(w) == {"diff", "sd", "n", "constant", "ci_low", "ci_high", "p", "p_exact", "significant", "mde"}
    assert "vs_reference" not in agg["arms"]["grpo"]["all"]["pass@1"]
    assert agg["base"]["all"]["pass@1"] == pytest.approx(0.35) and agg["scopes"] == ["all", "5"]
    assert agg["base_std"]["all"]["pass@1"] == pytest.approx(math.sqrt(0.005))
    assert "diagnostics" not in agg  # no run logs them
    table = format_study_table(agg, 2)
    assert "| all | base | 35.0 +- 7.1 | 45.0 +- 7.1 |" in table
    assert "| all | lens | 41.5 +- 2.1 [d +10.5* (+4.1, +16.9)]" in table
    # level 5: d = [0.1, 0.1], sd 0: the same difference in every seed, no interval; exact p 2 / 4
    assert "| 5 | lens | 20.0 +- 0.0 [d +10.0 in every seed, exact p 0.5]" in table
    assert agg["arms"]["lens"]["5"]["pass@1"]["vs_reference"]["constant"]
    assert "- lens vs grpo (n = 2): pass@1 7.0, pass@2 7.0" in table
    assert "Diagnostics" not in table


def test_differences_pair_seeds_and_use_only_the_seeds_both_arms_have():
    # the reference lacks seed 2, and lens lists its seeds in another order: pairs (0: 0.1 -> 0.2),
    # (1: 0.5 -> 0.7), so d = [0.1, 0.2], n = 2 (by position it would pair 0.1 with 0.7)
    records = {
        "grpo": [_record([(0, 0.1), (10, 0.1)], 0.1, 0), _record([(0, 0.1), (10, 0.5)], 0.1, 1)],
        "lens": [
            _record([(0, 0.1), (10, 0.7)], 0.1, 1),
            _record([(0, 0.1), (10, 0.9)], 0.1, 2),
            _record([(0, 0.1), (10, 0.2)], 0.1, 0),
        ],
    }
    w = aggregate(STUDIES["main"], records)["arms"]["lens"]["all"]["pass@1"]["vs_reference"]
    assert w["n"] == 2 and w["diff"] == pytest.approx(0.15) and w["sd"] == pytest.approx(math.sqrt(0.005))


def test_one_seed_reports_a_difference_without_interval():
    records = {"grpo": [_record([(0, 0.3), (10, 0.30)], 0.1, 0)], "lens": [_record([(0, 0.3), (10, 0.35)], 0.1, 0)]}
    agg = aggregate(STUDIES["main"], records)
    w = agg["arms"]["lens"]["all"]["pass@1"]["vs_reference"]
    assert w["diff"] == pytest.approx(0.05) and w["ci_low"] is None and w["mde"] is None and not w["significant"]
    table = format_study_table(agg, 1)
    assert "| all | lens | 35.0 +- 0.0 [d +5.0] |" in table and "pass@1 n/a, pass@2 n/a" in table


def test_a_non_finite_result_is_an_error_naming_the_arm_seed_and_cell():
    # one failed evaluation (nan) among the seeds: not averaged over, not dropped, named
    records = {
        "grpo": [_record([(0, 0.3), (10, 0.30)], 0.1, 0), _record([(0, 0.4), (10, 0.32)], 0.1, 1)],
        "lens": [_record([(0, 0.3), (10, 0.40)], 0.2, 0), _record([(0, 0.3), (10, math.nan)], 0.2, 1)],
    }
    with pytest.raises(
        ValueError, match=r"arm 'lens', level 'all', pass@1 is not finite in seed 1 \(evaluation at step 10\): nan"
    ):
        aggregate(STUDIES["main"], records)
    # the reference arm's base evaluation (step 0) is read first
    records["lens"][1] = _record([(0, 0.3), (10, 0.43)], 0.2, 1)
    records["grpo"][0] = _record([(0, math.inf), (10, 0.30)], 0.1, 0)
    with pytest.raises(
        ValueError, match=r"arm 'grpo', level 'all', pass@1 is not finite in seed 0 \(evaluation at step 0\): inf"
    ):
        aggregate(STUDIES["main"], records)


def test_diagnostics_average_each_run_over_its_logged_steps_then_the_seeds():
    # grpo seed 0 logs cosine at steps 2 and 4: (0.2 + 0.4) / 2 = 0.3; seed 1 at step 4 only: 0.5;
    # arm mean 0.4. lens logs none: None. rel_diff nowhere: None. The groups curve has a gap too.
    def curves(cosine):
        return {"step": [1, 2, 3, 4], "groups/negative": [0.5, None, 0.4, 0.3], "diag/cosine": cosine}

    records = {
        "grpo": [
            _record([(0, 0.3), (4, 0.3)], 0.1, 0, curves([None, 0.2, None, 0.4])),
            _record([(0, 0.3), (4, 0.3)], 0.1, 1, curves([None, None, None, 0.5])),
        ],
        "lens": [
            _record([(0, 0.3), (4, 0.3)], 0.1, 0, curves([None] * 4)),
            _record([(0, 0.3), (4, 0.3)], 0.1, 1, {"step": [1], "groups/negative": [0.5]}),
        ],
    }
    agg = aggregate(STUDIES["main"], records)
    assert agg["diagnostics"]["grpo"]["diag/cosine"] == pytest.approx(0.4)
    assert agg["diagnostics"]["lens"]["diag/cosine"] is None and agg["diagnostics"]["grpo"]["diag/rel_diff"] is None
    table = format_study_table(agg, 2)
    assert "| arm | diag/cosine | diag/rel_diff | diag/negative_share |" in table
    assert "| grpo | 0.4 | - | - |" in table


def test_report_writes_every_file_and_tolerates_gaps_in_the_curves(tmp_path):
    from lensrl.research.study import write_report

    gappy = {"step": [1, 2, 3], "groups/negative": [0.5, None, 0.4], "diag/cosine": [None, 0.1, None]}
    records = {
        arm: [_record([(0, 0.3), (5, p), (10, p + 0.01)], 0.1, s, gappy) for s in (0, 1)]
        for arm, p in (("grpo", 0.3), ("lens", 0.35))
    }
    result = write_report(STUDIES["main"], [0, 1], records, tmp_path, "lensrl study main", "study")
    for name in ("study.json", "study.md", "study.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "study_curves.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "study.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["arms"]["lens"]["all"]["pass@1"]["vs_reference"]["n"] == 2 and "diagnostics" in saved
    assert result.table in (tmp_path / "study.md").read_text()


def test_curve_helpers_by_hand():
    from lensrl.research.plots import finite, mean_and_std, running_mean

    # columns (1, 3) and (2, 6): means 2 and 4, stds sqrt(2) and sqrt(8)
    mean, std = mean_and_std([[1.0, 2.0], [3.0, 6.0]])
    assert mean == [2.0, 4.0] and std == pytest.approx([math.sqrt(2), math.sqrt(8)])
    # a column with one number (None and NaN skipped) has std 0; one with none has mean nan
    mean, std = mean_and_std([[None, 4.0, None], [math.nan, None, None]])
    assert math.isnan(mean[0]) and mean[1:2] == [4.0] and std[:2] == [0.0, 0.0]
    assert finite([None, 1.0, math.nan, 2.0]) == [1.0, 2.0]
    # window 2: [1], [1, 3], [3, 5] -> 1, 2, 4
    assert running_mean([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_overview_merges_arms_that_share_runs_and_plots(tmp_path):
    from lensrl.research.plots import overview_rows
    from lensrl.research.study import overview_studies, testbed_studies, write_overview

    def cell(values):
        c = {"mean": sum(values) / len(values), "std": _std(values), "values": values}
        return {"all": {"pass@1": c, "pass@16": c}}

    def _std(v):
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    for name, arms in {
        "main": {"grpo": [0.30, 0.34], "lens": [0.31, 0.33]},
        "alpha": {"lens_alpha0.25": [0.31, 0.33], "lens_alpha1": [0.20, 0.20]},
    }.items():
        (tmp_path / name).mkdir()
        study = {"base": {"all": {"pass@1": 0.3, "pass@16": 0.3}}, "arms": {a: cell(v) for a, v in arms.items()}}
        (tmp_path / name / "study.json").write_text(json.dumps(study))
    # the carry studies found in their folders, in the studies file's order (main before alpha); signs-main's
    # folder is also named "main", but signs is another testbed: its studies are not among main's
    carry = testbed_studies(STUDIES["main"], STUDIES.values())
    assert "signs-main" not in [s.name for s in carry]
    assert "signs-main" in [s.name for s in testbed_studies(STUDIES["signs-long"], STUDIES.values())]
    assert testbed_studies(STUDIES["main"]) == [STUDIES["main"]]  # no other studies given: it alone
    studies = overview_studies(tmp_path, carry)
    assert [name for name, _ in studies] == ["main", "alpha"]
    rows = overview_rows(studies, ["pass@1", "pass@16"])
    # main's lens and alpha's lens_alpha0.25 hold the same runs: one row named by both
    assert [r["names"] for r in rows] == [["main/grpo"], ["main/lens", "alpha/lens_alpha0.25"], ["alpha/lens_alpha1"]]
    # grpo [0.30, 0.34]: std 0.02 * sqrt(2) = 0.02828, SE = std / sqrt(2) = 0.02
    assert rows[0]["mean"]["pass@1"] == pytest.approx(0.32) and rows[0]["se"]["pass@1"] == pytest.approx(0.02)
    assert rows[0]["seeds"] == 2 and rows[2]["se"]["pass@16"] == 0.0
    # arms equal at one k only are different runs: a row each, the same rows in both panels
    studies[1][1]["arms"]["lens_alpha1"]["all"]["pass@16"] = studies[0][1]["arms"]["grpo"]["all"]["pass@16"]
    assert len(overview_rows(studies, ["pass@1", "pass@16"])) == 3
    write_overview(tmp_path, STUDIES["main"], STUDIES.values())
    assert (tmp_path / "study_overview.png").stat().st_size > 10_000


def test_every_study_names_its_arms_uniquely():
    for study in STUDIES.values():
        names = [a.name for a in study.arms]
        assert len(names) == len(set(names)) >= 2, study.name


def test_alpha_zero_arm_is_the_mixed_only_ablation_so_its_runs_are_shared(tmp_path):
    # alpha scales only negative-group advantages (test_advantages checks alpha=0 equals scope="mixed"),
    # so the alpha study's alpha = 0 arm is configured as the ablation's mixed-only arm, and
    # `finished_run` reuses those runs; every other alpha arm sets algo.alpha itself
    from lensrl.config import save_config
    from lensrl.research.study import arm_config, finished_run

    alpha, ablation = STUDIES["alpha"], STUDIES["ablation"]
    arms = {a.name: a for a in alpha.arms}
    assert list(arms) == ["lens_alpha0.25", "lens_alpha0", "lens_alpha0.1", "lens_alpha0.5", "lens_alpha1"]
    mixed_only = next(a for a in ablation.arms if a.name == "lens_mixed_only")
    trained = arm_config(ablation, mixed_only, 2, tmp_path / "study" / "ablation", None, [])
    run_dir = tmp_path / "study" / "ablation" / "lens_mixed_only_seed2"
    run_dir.mkdir(parents=True)
    save_config(trained, run_dir / "config.yaml")
    (run_dir / "summary.json").write_text("{}")
    wanted = arm_config(alpha, arms["lens_alpha0"], 2, tmp_path / "study" / "alpha", None, [])
    assert finished_run(wanted, tmp_path / "study") == run_dir
    half = arm_config(alpha, arms["lens_alpha0.5"], 2, tmp_path / "study" / "alpha", None, [])
    assert half.algo.alpha == 0.5 and half.algo.scope == "all" and finished_run(half, tmp_path / "study") is None


def _finished(config, run_dir):
    from lensrl.config import save_config

    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    (run_dir / "summary.json").write_text("{}")


def test_signs_studies_use_their_config_folders_and_share_runs(tmp_path):
    # a stand-in for the signs testbed's config, given as --config (config_path) in place of the study's
    from lensrl.research.study import arm_config, finished_run

    base = tmp_path / "signs.yaml"
    base.write_text("run:\n  steps: 7\n  eval_every: 7\n")
    signs = {name: STUDIES[f"signs-{name}"] for name in ("main", "ablation", "alpha", "remedies", "long")}
    assert all(s.config == "testbed:signs" and s.overrides == () for s in signs.values())
    assert [str(s.results_dir) for s in signs.values()] == [f"results/signs/{n}" for n in signs]
    assert signs["main"].seeds == (0, 1, 2, 3, 4) and signs["alpha"].seeds == (0, 1, 2)
    assert [a.name for a in signs["alpha"].arms] == ["lens_alpha0.25", "lens_alpha1", "lens_alpha4", "lens_alpha16"]
    assert STUDIES["main"].results_dir == Path("results/carry/main") and STUDIES["main"].config is None

    runs = tmp_path / "study"
    arms = {(s.name, a.name): a for s in signs.values() for a in s.arms}
    lens = arm_config(signs["main"], arms[("signs-main", "lens")], 1, runs / "signs-main", str(base), [])
    grpo = arm_config(signs["main"], arms[("signs-main", "grpo")], 1, runs / "signs-main", str(base), [])
    assert lens.run.steps == 7 and lens.run.eval_every == 7
    _finished(lens, runs / "signs-main" / "lens_seed1")
    _finished(grpo, runs / "signs-main" / "grpo_seed1")
    # alpha 0.25 is the default: the alpha study's first arm is main's lens, and reuses its run
    quarter = arm_config(
        signs["alpha"], arms[("signs-alpha", "lens_alpha0.25")], 1, runs / "signs-alpha", str(base), []
    )
    assert finished_run(quarter, runs) == runs / "signs-main" / "lens_seed1"
    four = arm_config(signs["alpha"], arms[("signs-alpha", "lens_alpha4")], 1, runs / "signs-alpha", str(base), [])
    assert four.algo.alpha == 4.0 and finished_run(four, runs) is None
    remedies_grpo = arm_config(
        signs["remedies"], arms[("signs-remedies", "grpo")], 1, runs / "signs-remedies", str(base), []
    )
    assert finished_run(remedies_grpo, runs) == runs / "signs-main" / "grpo_seed1"
    # the long study's arms train three times the config's steps (after the extra overrides), so never reuse
    long_grpo = arm_config(signs["long"], arms[("signs-long", "grpo")], 1, runs / "signs-long", str(base), [])
    assert long_grpo.run.steps == 21 and long_grpo.algo.advantage == "grpo" and finished_run(long_grpo, runs) is None
    extended = arm_config(
        signs["long"], arms[("signs-long", "lens")], 1, runs / "signs-long", str(base), ["run.steps=5"]
    )
    assert extended.run.steps == 15 and extended.algo.advantage == "lens"


def test_a_study_config_is_the_base_unless_one_is_given(tmp_path, monkeypatch):
    import lensrl.research.study as study_module
    from lensrl.config import load_config

    seen = []

    def recording(path, overrides):
        seen.append(path)
        return load_config(None, overrides)

    monkeypatch.setattr(study_module, "load_config", recording)
    arm = STUDIES["signs-main"].arms[0]
    study_module.arm_config(STUDIES["signs-main"], arm, 0, tmp_path, None, [])
    study_module.arm_config(STUDIES["signs-main"], arm, 0, tmp_path, "mine.yaml", [])
    study_module.arm_config(STUDIES["main"], arm, 0, tmp_path, None, [])
    assert seen == ["testbed:signs", "mine.yaml", None]


def test_report_only_rebuilds_the_report_from_the_records(tmp_path, capsys):
    from lensrl.cli import main
    from lensrl.research.study import load_records

    results = tmp_path / "main"
    (results / "runs").mkdir(parents=True)
    for arm, p in (("grpo", 0.30), ("lens", 0.33)):
        for seed in (0, 1):
            record = _record([(0, 0.3), (10, p + seed / 100)], 0.1, seed, arm=arm)
            (results / "runs" / f"{arm}_seed{seed}.json").write_text(json.dumps(record.to_json()))
    records = load_records(STUDIES["main"], [0, 1], results / "runs")
    assert [r.samples_per_step for r in records["lens"]] == [16, 16]
    assert [r.seed for r in records["grpo"]] == [0, 1]

    args = ["--report-only", "--seeds", "0,1", "--results-dir", str(results), "--studies", str(STUDIES_FILE)]
    assert main(["study", "main", *args, "run.progress=false"]) == 0
    assert "[d +3.0" in capsys.readouterr().out
    saved = json.loads((results / "study.json").read_text())
    assert saved["command"] == "lensrl study main --seeds 0,1 run.progress=false"
    assert saved["arms"]["lens"]["all"]["pass@1"]["vs_reference"]["n"] == 2
    for name in ("study.md", "study.png", "study_curves.png"):
        assert (results / name).exists(), name
    assert (tmp_path / "study_overview.png").exists()  # results/carry/study_overview.png, from every study there

    assert main(["study", "main", "--report-only", "--seeds", "0,3", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "grpo_seed3.json" in err and "lens_seed3.json" in err


def test_a_run_record_writes_back_the_json_it_read():
    # every field explicit: the optional measurements null where not measured, the resolved config
    evaluation = {
        "step": 0,
        "overall": {"pass@1": 0.25},
        "per_level": {"1": {"pass@1": 0.25}},
        "all_wrong": 0.5,
        "all_wrong_per_level": {"1": 0.5},
        "n_problems": 2,
        "samples": 1,
    }
    record = {
        "arm": "grpo",
        "seed": 0,
        "evals": [{**evaluation, "unparseable": None, "response_tokens": 12.5}],
        "curves": {"step": [1], "reward": [0.5]},
        "samples_per_step": 8,
        "config": TrainConfig().model_dump(),
    }
    assert json.dumps(RunRecord.from_json(record).to_json()) == json.dumps(record)
    assert RunRecord.from_json(record).evals[0].response_tokens == 12.5
    # a record lacks nothing: one without its config or samples per step is not a record
    for key in ("config", "samples_per_step"):
        with pytest.raises(KeyError, match=key):
            RunRecord.from_json({k: v for k, v in record.items() if k != key})


def test_a_studies_file_is_read_by_name_and_its_errors_say_where_it_looked(tmp_path, monkeypatch, capsys):
    from lensrl.cli import main
    from lensrl.research.arms import find_study

    (tmp_path / "mine.py").write_text(
        "from lensrl import Arm, Study\n"
        "STUDIES = {'tiny': Study('tiny', 'q', (Arm('grpo', ('algo.advantage=grpo',)), Arm('lens')))}\n"
    )
    studies = load_studies(tmp_path / "mine.py")
    assert list(studies) == ["tiny"] and studies["tiny"].results_dir == Path("results/tiny")
    with pytest.raises(ValueError, match=r"unknown study 'main' in .*mine\.py; known: tiny"):
        find_study("main", studies, tmp_path / "mine.py")
    (tmp_path / "none.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match=r"none\.py defines no STUDIES"):
        load_studies(tmp_path / "none.py")
    # the default file is experiments/studies.py under the current directory: none here
    monkeypatch.chdir(tmp_path)
    assert main(["study", "main"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lensrl: no studies file experiments/studies.py") and str(tmp_path) in err
    assert main(["study", "nope", "--studies", "mine.py"]) == 2
    assert "unknown study 'nope' in mine.py; known: tiny" in capsys.readouterr().err
