"""The remedies' advantages, group filtering, and the study's statistics, with hand-worked values."""

import json
import math

import pytest
import torch

from lensrl.core.advantages import grpo_advantages, kept_groups, uniform_negative_advantages
from lensrl.estimators import get_estimator
from lensrl.study import STUDIES, aggregate, format_study_table, welch


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
    assert get_estimator("lens").negative_groups_signal and get_estimator("uniform_negative").negative_groups_signal
    assert not get_estimator("grpo").negative_groups_signal


def test_welch_by_hand():
    # a = [1, 3]: mean 2, var 2; b = [4, 6]: mean 5, var 2; SE = sqrt(2/2 + 2/2) = sqrt(2); t = 3 / 1.4142
    w = welch([1.0, 3.0], [4.0, 6.0])
    assert w["diff"] == 3.0 and w["se"] == pytest.approx(math.sqrt(2)) and w["t"] == pytest.approx(2.1213, abs=1e-4)
    assert w["exceeds_noise"]  # 3 > 2 * 1.414
    assert not welch([1.0, 3.0], [2.0, 4.0])["exceeds_noise"]  # 1 < 2.83
    assert math.isnan(welch([1.0], [2.0])["t"])  # one seed: no noise estimate, never "exceeds"


def _record(p1_by_step, level_p1):
    evals = [{"step": s, "samples": 2, "overall": {"pass@1": v, "pass@2": v + 0.1},
              "per_level": {"5": {"pass@1": level_p1, "pass@2": level_p1}}} for s, v in p1_by_step]
    return {"evals": evals, "curves": {"step": [1], "groups/negative": [0.5]}}


def test_aggregate_and_table_use_the_last_evaluation_of_every_seed():
    # the two seeds evaluate the base policy at 0.3 and 0.4 (their own samples): base 0.35 +- 0.0707
    records = {"grpo": [_record([(0, 0.3), (10, 0.30)], 0.1), _record([(0, 0.4), (10, 0.32)], 0.1)],
               "lens": [_record([(0, 0.3), (10, 0.40)], 0.2), _record([(0, 0.3), (10, 0.42)], 0.2)]}
    agg = aggregate(STUDIES["main"], records)
    cell = agg["arms"]["lens"]["all"]["pass@1"]
    assert cell["mean"] == pytest.approx(0.41) and cell["values"] == [0.40, 0.42]
    assert cell["vs_reference"]["diff"] == pytest.approx(0.10) and cell["vs_reference"]["exceeds_noise"]
    assert "vs_reference" not in agg["arms"]["grpo"]["all"]["pass@1"]
    assert agg["base"]["all"]["pass@1"] == pytest.approx(0.35) and agg["scopes"] == ["all", "5"]
    assert agg["base_std"]["all"]["pass@1"] == pytest.approx(math.sqrt(0.005))
    table = format_study_table(agg, 2)
    assert "| all | base | 35.0 +- 7.1 | 45.0 +- 7.1 |" in table
    assert "| all | lens | 41.0 +- 1.4 [d +10.0*]" in table


def test_curve_helpers_by_hand():
    from lensrl.plots import running_mean
    from lensrl.study import _mean_and_std

    # columns (1, 3) and (2, 6): means 2 and 4, stds sqrt(2) and sqrt(8)
    mean, std = _mean_and_std([[1.0, 2.0], [3.0, 6.0]])
    assert mean == [2.0, 4.0] and std == pytest.approx([math.sqrt(2), math.sqrt(8)])
    # window 2: [1], [1, 3], [3, 5] -> 1, 2, 4
    assert running_mean([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_overview_merges_arms_that_share_runs_and_plots(tmp_path):
    from lensrl.study import overview_rows, plot_overview

    def cell(values):
        c = {"mean": sum(values) / len(values), "std": _std(values), "values": values}
        return {"all": {"pass@1": c, "pass@16": c}}

    def _std(v):
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    for name, arms in {"main": {"grpo": [0.30, 0.34], "lens": [0.31, 0.33]},
                       "alpha": {"lens_alpha0.25": [0.31, 0.33], "lens_alpha1": [0.20, 0.20]}}.items():
        (tmp_path / f"study_{name}").mkdir()
        study = {"base": {"all": {"pass@1": 0.3, "pass@16": 0.3}}, "arms": {a: cell(v) for a, v in arms.items()}}
        (tmp_path / f"study_{name}" / "study.json").write_text(json.dumps(study))
    rows = overview_rows(tmp_path, "pass@1")
    # main's lens and alpha's lens_alpha0.25 hold the same runs: one row named by both
    assert [r["names"] for r in rows] == [["main/grpo"], ["main/lens", "alpha/lens_alpha0.25"], ["alpha/lens_alpha1"]]
    # grpo [0.30, 0.34]: std 0.02 * sqrt(2) = 0.02828, SE = std / sqrt(2) = 0.02
    assert rows[0]["mean"] == pytest.approx(0.32) and rows[0]["se"] == pytest.approx(0.02) and rows[0]["seeds"] == 2
    assert rows[2]["se"] == 0.0
    plot_overview(tmp_path / "study_overview.png")
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
    from lensrl.study import arm_config, finished_run

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
