"""The advantage-estimator registry and a step's rollout metrics, on a hand-built rollout."""

import math
from dataclasses import asdict

import pytest
import torch

from lensrl import estimators
from lensrl.config import AlgoConfig, ConfigError, load_config
from lensrl.core.advantages import LensSettings, grpo_advantages, lens_advantages, uniform_negative_advantages
from lensrl.estimators import compute_advantages, get_estimator, register
from lensrl.rollout.metrics import rollout_metrics
from lensrl.data.problem import Problem
from lensrl.rollout.sampler import Rollout


def _rollout() -> Rollout:
    """Q = 2 groups of G = 2: group 0 mixed (right, wrong), group 1 negative (wrong, wrong).

    Response lengths 2, 1, 2, 2 tokens; token log-probs chosen so that pibar = 0.5, 0.25, 0.8, 0.4.
    """
    lp = torch.tensor([[0.5, 0.5], [0.25, 1.0], [0.8, 0.8], [0.4, 0.4]]).log()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    return Rollout(
        problems=[Problem("Q:1+1\nA:", "2", level=1), Problem("Q:2+2\nA:", "4", level=2)], group_size=2,
        input_ids=torch.zeros(4, 3, dtype=torch.long), prompt_mask=torch.ones(4, 1), response_mask=mask,
        completions=["\\boxed{2}", "3", "\\boxed{5}", "\\boxed{6}"], truncated=torch.tensor([False, True, False, False]),
        correct=torch.tensor([1.0, 0.0, 0.0, 0.0]), logprobs_old=lp * mask,
        entropy=torch.tensor([[1.0, 3.0], [2.0, 9.0], [0.0, 0.0], [1.0, 1.0]]),
    )


def test_each_registered_name_dispatches_to_its_core_function():
    rollout, algo = _rollout(), AlgoConfig(alpha=0.5, scope="mixed")
    args = (rollout.correct, rollout.seq_logprobs, rollout.lengths, 2)
    cases = {
        "grpo": grpo_advantages(rollout.correct, 2, algo.scale, algo.eps),
        "lens": lens_advantages(*args, **asdict(LensSettings(0.5, "mixed"))),
        "uniform_negative": uniform_negative_advantages(rollout.correct, 2, 0.5),
    }
    assert set(cases) <= set(estimators.ESTIMATORS)
    for name, expected in cases.items():
        assert torch.equal(compute_advantages(algo.model_copy(update={"advantage": name}), rollout), expected)


def test_an_unknown_estimator_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'; known: grpo, lens, uniform_negative"):
        get_estimator("ppo")
    with pytest.raises(ConfigError, match="unknown advantage estimator 'ppo'"):
        load_config(overrides=["algo.advantage=ppo"])


def test_a_new_estimator_is_one_function_and_its_registration(monkeypatch):
    monkeypatch.setattr(estimators, "ESTIMATORS", dict(estimators.ESTIMATORS))  # leave the real registry alone

    @register("constant", negative_groups_signal=True, metrics=lambda rollout, algo: {"constant/value": 1.0})
    def constant(rollout, algo):
        return torch.ones_like(rollout.correct)

    algo = AlgoConfig(advantage="constant")  # the config accepts it
    rollout = _rollout()
    assert compute_advantages(algo, rollout).tolist() == [1.0] * 4
    assert get_estimator("constant").negative_groups_signal
    assert rollout_metrics(rollout, torch.ones(4), algo)["constant/value"] == 1.0
    with pytest.raises(ValueError, match="already registered"):
        register("constant")(constant)


def test_rollout_metrics_by_hand():
    rollout = _rollout()
    advantages = torch.tensor([1.0, -1.0, 0.25, -0.25])
    m = rollout_metrics(rollout, advantages, AlgoConfig(advantage="grpo"))
    assert m["reward"] == 0.25  # 1 right of 4
    assert (m["groups/negative"], m["groups/mixed"], m["groups/all_correct"]) == (0.5, 0.5, 0.0)
    assert m["pibar/correct"] == pytest.approx(0.5)
    assert m["pibar/wrong"] == pytest.approx((0.25 + 0.8 + 0.4) / 3)
    # entropy: token mean over the 7 response tokens (row 1's second column is padding)
    assert m["entropy"] == pytest.approx((1 + 3 + 2 + 0 + 0 + 1 + 1) / 7)
    assert (m["response_len/mean"], m["response_len/max"]) == (1.75, 2.0)
    assert m["prompt_len/mean"] == 1.0  # every row has one real prompt token
    assert m["truncated"] == 0.25 and m["unparseable"] == 0.25  # row 1: cut short, no \boxed{}
    assert m["adv/abs_mean"] == pytest.approx(0.625)
    assert m["adv/negative_group_share"] == pytest.approx(0.5 / 2.5)  # |A| of group 1 over all |A|
    assert "lens/calibrated_reward" not in m and not math.isnan(m["pibar/wrong"])


def test_lens_adds_its_calibrated_reward():
    # group 0 (mixed, G = 2): D_imp = 1 / ((1/2)(1/0.5)) = 1; floor 2 x 0.5 = 1; D = 1:
    #   wrong (pibar 0.25): -(1/2) 0.25 / 0.75 = -1/6.  group 1 (negative): D = 2 x 0.8 = 1.6:
    #   -(1/2) 0.8 / 0.8 = -1/2 and -(1/2) 0.4 / 1.2 = -1/6.  Mean of (1, -1/6, -1/2, -1/6) = 1/24.
    m = rollout_metrics(_rollout(), torch.zeros(4), AlgoConfig(advantage="lens"))
    assert m["lens/calibrated_reward"] == pytest.approx(1 / 24)


def test_lens_settings_have_one_definition():
    defaults = LensSettings()
    algo = AlgoConfig()
    assert algo.lens == defaults and (algo.alpha, algo.scope, algo.d_estimator, algo.eps) == (
        defaults.alpha, defaults.scope, defaults.d_estimator, defaults.eps)
    for bad in ({"alpha": -1.0}, {"alpha": math.nan}, {"scope": "some"}, {"d_estimator": "raw"}, {"eps": 0.0}):
        (key,) = bad
        with pytest.raises(ValueError, match=key):
            LensSettings(**bad)
        with pytest.raises(ConfigError, match=key):
            load_config(overrides=[f"algo.{key}={next(iter(bad.values()))}"])
