"""The estimators (`algo`'s models, the one registry) and a step's rollout metrics, on a hand-built rollout."""

import math
from dataclasses import asdict, fields
from typing import Literal

import pytest
import torch

from lensrl.config import ALGOS, AlgoBase, ConfigError, GRPOAlgo, LensAlgo, load_config, switch_estimator
from lensrl.core.advantages import (
    grpo_advantages,
    lens_advantages,
    ngrpo_advantages,
    uniform_negative_advantages,
    w_reinforce_advantages,
)
from lensrl.core.settings import SETTING_HELP, SETTINGS, LensSettings, read_lens_settings
from lensrl.evaluation.evaluate import summarise
from lensrl.records import Problem, ScoredRollout
from lensrl.runs.lifecycle import eval_metrics
from lensrl.training.metrics import progress_postfix, rollout_metrics


def _rollout() -> ScoredRollout:
    """Q = 2 groups of G = 2: group 0 mixed (right, wrong), group 1 negative (wrong, wrong).

    Response lengths 2, 1, 2, 2 tokens; token log-probs chosen so that pibar = 0.5, 0.25, 0.8, 0.4.
    """
    lp = torch.tensor([[0.5, 0.5], [0.25, 1.0], [0.8, 0.8], [0.4, 0.4]]).log()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    return ScoredRollout(
        problems=[Problem("Q:1+1\nA:", "2", level=1), Problem("Q:2+2\nA:", "4", level=2)],
        group_size=2,
        input_ids=torch.zeros(4, 3, dtype=torch.long),
        prompt_mask=torch.ones(4, 1),
        response_mask=mask,
        completions=["\\boxed{2}", "3", "\\boxed{5}", "\\boxed{6}"],
        truncated=torch.tensor([False, True, False, False]),
        correct=torch.tensor([1.0, 0.0, 0.0, 0.0]),
        logprobs_old=lp * mask,
        entropy=torch.tensor([[1.0, 3.0], [2.0, 9.0], [0.0, 0.0], [1.0, 1.0]]),
    )


def test_each_estimator_computes_its_core_function():
    rollout, algo = _rollout(), LensAlgo(alpha=0.5, scope="mixed")
    args = (rollout.correct, rollout.seq_logprobs, rollout.lengths, 2)
    cases = {
        "grpo": grpo_advantages(rollout.correct, 2, "group", 1e-6),
        "lens": lens_advantages(*args, **asdict(LensSettings(0.5, "mixed"))),
        "uniform_negative": uniform_negative_advantages(rollout.correct, 2, 0.5),  # alpha is shared by name
        "w_reinforce": w_reinforce_advantages(rollout.correct, 0.1),
        "nsr": w_reinforce_advantages(rollout.correct, 0.0),
        "ngrpo": ngrpo_advantages(rollout.correct, 2, 1.0, 1e-6),
    }
    assert set(cases) == set(ALGOS)
    for name, expected in cases.items():
        assert torch.equal(switch_estimator(algo, name).advantages(rollout), expected)


def test_the_algo_union_is_the_one_registry():
    # every model of the union names itself and computes its own advantages
    assert all(model.model_fields["advantage"].default == name for name, model in ALGOS.items())
    assert all(model.advantages is not AlgoBase.advantages for model in ALGOS.values())
    signal = {name for name, model in ALGOS.items() if model.negative_groups_signal}
    assert signal == {"lens", "uniform_negative", "w_reinforce", "nsr", "ngrpo"}  # all but GRPO


def test_an_unknown_estimator_is_an_error_naming_the_known_ones():
    known = "grpo, lens, ngrpo, nsr, uniform_negative, w_reinforce"
    with pytest.raises(ConfigError, match=f"unknown advantage estimator 'ppo'; known: {known}$"):
        load_config(overrides=["algo.advantage=ppo"])


class ConstantAlgo(AlgoBase):
    negative_groups_signal = False
    advantage: Literal["constant"] = "constant"
    value: float = 1.0

    def advantages(self, rollout):
        return torch.full_like(rollout.correct, self.value)

    def metrics(self, rollout):
        return {"constant/value": self.value}


def test_a_new_estimator_is_one_model_with_its_advantages():
    algo, rollout = ConstantAlgo(value=2.0), _rollout()
    assert algo.advantages(rollout).tolist() == [2.0] * 4
    assert rollout_metrics(rollout, torch.ones(4), algo)["constant/value"] == 2.0
    assert not algo.negative_groups_signal


def test_rollout_metrics_by_hand():
    rollout = _rollout()
    advantages = torch.tensor([1.0, -1.0, 0.25, -0.25])
    m = rollout_metrics(rollout, advantages, GRPOAlgo())
    assert m["reward"] == 0.25  # 1 right of 4
    assert (m["groups/negative"], m["groups/mixed"], m["groups/all_correct"]) == (0.5, 0.5, 0.0)
    assert m["pibar/correct"] == pytest.approx(0.5)
    assert m["pibar/wrong"] == pytest.approx((0.25 + 0.8 + 0.4) / 3)
    # entropy: token mean over the 7 response tokens (row 1's second column is padding)
    assert m["entropy"] == pytest.approx((1 + 3 + 2 + 0 + 0 + 1 + 1) / 7)
    assert (m["response_len/mean"], m["response_len/max"]) == (1.75, 2.0)
    assert m["prompt_len/mean"] == 1.0  # every row has one real prompt token
    assert m["truncated"] == 0.25 and m["no_final_answer"] == 0.25  # row 1: cut short, no \boxed{}
    assert m["adv/abs_mean"] == pytest.approx(0.625)
    assert m["adv/negative_group_share"] == pytest.approx(0.5 / 2.5)  # |A| of group 1 over all |A|
    assert "lens/calibrated_reward" not in m and not math.isnan(m["pibar/wrong"])


def test_the_share_without_a_final_answer_is_not_called_unparseable():
    # row 1 ("3") has no \boxed{} and no ####: 1 of 4 responses. That share is measured by extraction, whatever
    # the verifier (one reading bare numbers would parse "3"); `unparseable` is the verifier's own count
    # (verify/unparseable), so the extraction-based share goes by another name, per step and per evaluation
    m = rollout_metrics(_rollout(), torch.zeros(4), GRPOAlgo())
    assert m["no_final_answer"] == 0.25 and not any("unparseable" in key for key in m)
    # an evaluation keeps the share in eval.jsonl's `unparseable` field (the committed records' key); its
    # tracker metric takes the per-step name: 1 of 4 samples
    result = summarise(0, [Problem("a", "1")], n_correct=[1], samples=4, n_unparseable=[1], response_tokens=[8])
    assert result.unparseable == 0.25 and result.to_json()["unparseable"] == 0.25
    logged = eval_metrics(result)
    assert logged["eval/no_final_answer"] == 0.25 and not any("unparseable" in key for key in logged)


def test_lens_adds_its_calibrated_reward():
    # group 0 (mixed, G = 2): D_imp = 1 / ((1/2)(1/0.5)) = 1; floor 2 x 0.5 = 1; D = 1:
    #   wrong (pibar 0.25): -(1/2) 0.25 / 0.75 = -1/6.  group 1 (negative): D = 2 x 0.8 = 1.6:
    #   -(1/2) 0.8 / 0.8 = -1/2 and -(1/2) 0.4 / 1.2 = -1/6.  Mean of (1, -1/6, -1/2, -1/6) = 1/24.
    m = rollout_metrics(_rollout(), torch.zeros(4), LensAlgo())
    assert m["lens/calibrated_reward"] == pytest.approx(1 / 24)


def test_the_progress_bar_shows_the_pass_rate_as_reward_and_lens_calibrated_reward_apart():
    # the rollout above: 1 right of 4 (reward 0.25, as in metrics.jsonl); LENS's mean calibrated
    # reward 1/24 (test above) is shown as lens_r; half the groups are negative
    step = {**rollout_metrics(_rollout(), torch.zeros(4), LensAlgo()), "approx_kl": 0.00123, "clipfrac": 0.0625}
    assert progress_postfix(step) == {
        "reward": "0.250",
        "lens_r": "0.042",
        "neg": "0.50",
        "kl": "0.0012",
        "clip": "0.062",
    }
    # GRPO logs no calibrated reward, and a skipped update no kl or clip fraction
    grpo = rollout_metrics(_rollout(), torch.zeros(4), GRPOAlgo())
    assert progress_postfix(grpo) == {"reward": "0.250", "neg": "0.50", "kl": "nan", "clip": "nan"}


def test_lens_settings_have_one_definition():
    defaults = LensSettings()
    algo = LensAlgo()
    assert algo.lens == defaults and (algo.alpha, algo.scope, algo.d_estimator, algo.eps) == (
        defaults.alpha,
        defaults.scope,
        defaults.d_estimator,
        defaults.eps,
    )
    assert LensAlgo(alpha=0.5, scope="negative").lens == LensSettings(alpha=0.5, scope="negative")
    for bad in (
        {"alpha": -1.0},
        {"alpha": math.nan},
        {"scope": "some"},
        {"d_estimator": "raw"},
        {"eps": 0.0},
        {"normalize_negative": "maybe"},
    ):
        ((key, value),) = bad.items()
        with pytest.raises(ValueError, match=f"^{key} must be"):
            LensSettings(**bad)
        # the config names the key as it spells it; the values allowed are core's (its Literal types and LensSettings)
        with pytest.raises(ConfigError, match=rf"\n  algo\.{key}: ({key} must be|Input should be )"):
            load_config(overrides=[f"algo.{key}={value}"])


def test_every_lens_setting_has_its_help_and_no_other():
    assert SETTINGS == tuple(f.name for f in fields(LensSettings)) == tuple(SETTING_HELP)


def test_the_one_reader_of_lens_settings_names_the_key_as_its_caller_spells_it():
    assert read_lens_settings({}, "algo.") == LensSettings()
    assert read_lens_settings({"scope": "mixed", "alpha": 1}, "lens_") == LensSettings(alpha=1, scope="mixed")
    with pytest.raises(ValueError, match=r"^lens_alpha: alpha must be a finite number >= 0, got -1$"):
        read_lens_settings({"alpha": -1, "scope": "mixed"}, "lens_")
    with pytest.raises(ValueError, match=r"^algorithm\.lens\.d_estimator: d_estimator must be one of"):
        read_lens_settings({"d_estimator": "raw"}, "algorithm.lens.")
    with pytest.raises(
        ValueError,
        match=r"^algo\.alfa: unknown LENS setting; known: algo\.alpha, algo\.scope, "
        r"algo\.d_estimator, algo\.eps, algo\.normalize_negative$",
    ):
        read_lens_settings({"alfa": 0.5}, "algo.")
    # the settings' descriptions are LensSettings' own attribute docstrings (what TRL's --help shows)
    assert SETTING_HELP["alpha"] == "Weight of negative-group advantages (the paper uses 0.25 throughout)."
    assert list(SETTING_HELP) == ["alpha", "scope", "d_estimator", "eps", "normalize_negative"]
