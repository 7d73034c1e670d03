"""Which prompts a step samples (`rollout.selection`): the prompt history, the group selection a
selector builds its rollout from, the round seeds, and DAPO's dynamic sampling and GRESO's skipping on a
stand-in sampler."""

import pytest
import torch

from lensrl.config import load_config
from lensrl.records import Compute, Problem, ScoredRollout
from lensrl.rollout.collect import Collected
from lensrl.rollout.gather import select_groups
from lensrl.rollout.select import (
    PromptHistory,
    Round,
    adapted,
    greso_round_size,
    keep_probability,
    selector,
    zero_variance_streak,
)
from lensrl.rollout.verifier import VerifyCounts
from lensrl.seeds import rollout_seed, round_seed, skip_seed


def scored(problems, correct, sizes):
    """A scored rollout of the given groups: one prompt token, responses of 1 + (row % 3) tokens."""
    n, width = len(correct), 4
    lengths = torch.tensor([1 + i % 3 for i in range(n)])
    mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
    return ScoredRollout(
        problems=list(problems),
        group_size=tuple(sizes),
        input_ids=torch.arange(n * (1 + width)).view(n, 1 + width),
        prompt_mask=torch.ones(n, 1),
        response_mask=mask,
        completions=[f"c{i}" for i in range(n)],
        truncated=torch.zeros(n, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.float32),
        logprobs_old=-0.1 * mask,
        entropy=mask,
    )


def problems(*ids):
    return [Problem(prompt=f"q{i}", answer="1", id=str(i)) for i in ids]


def test_select_groups_keeps_each_groups_rows_in_the_order_given():
    rollout = scored(problems(0, 1, 2), [1, 0, 0, 0, 0, 1, 1, 1, 0], (2, 3, 4))
    part = select_groups(rollout, torch.tensor([2, 0]))
    # group 2 is rows 5..8, group 0 rows 0..1
    assert [p.id for p in part.problems] == ["2", "0"] and part.group_size == (4, 2)
    assert part.correct.tolist() == [1, 1, 1, 0, 1, 0]
    assert part.completions == ["c5", "c6", "c7", "c8", "c0", "c1"]
    assert torch.equal(part.input_ids, rollout.input_ids[[5, 6, 7, 8, 0, 1]])


def test_the_history_records_every_group_and_survives_json():
    history = PromptHistory()
    history.record(scored(problems(0, 1), [1, 0, 0, 0, 0], (2, 3)), step=1)
    history.record(scored(problems(1), [1, 1], (2,)), step=2)
    assert history.visits == {"0": [(1, 2, 1)], "1": [(1, 3, 0), (2, 2, 2)]}
    assert PromptHistory.from_json(history.to_json()) == history


def test_round_zero_is_the_steps_rollout_seed_and_later_rounds_differ():
    assert round_seed(3, 7, 0) == rollout_seed(3, 7)
    later = {round_seed(3, 7, r) for r in range(1, 5)}
    assert len(later) == 4 and rollout_seed(3, 7) not in later


class FakeSampler:
    """`collect`: the verdicts of each prompt id come from a table; records what was asked."""

    def __init__(self, verdicts):
        self.verdicts, self.calls = verdicts, []

    def __call__(self, batch, seed, samples):
        self.calls.append(([p.id for p in batch], seed))
        correct = [v for p in batch for v in self.verdicts[p.id]]
        rollout = scored(batch, correct, [len(self.verdicts[p.id]) for p in batch])
        return Collected(rollout, VerifyCounts(calls=len(correct)), Compute.of(rollout))


def order(n):
    ids = iter(range(n))
    return lambda k: problems(*[next(ids) for _ in range(k)])


MIXED, WRONG, RIGHT = [1, 0], [0, 0], [1, 1]


def dynamic(*overrides):
    config = load_config(
        overrides=[
            "rollout.questions_per_step=2",
            "rollout.group_size=2",
            "optim.updates_per_rollout=1",
            "rollout.selection={kind: dynamic}",
            *overrides,
        ]
    )
    return config, selector(config, pad_token_id=0)


def test_dynamic_sampling_refills_until_q_groups_with_a_signal_are_kept():
    # GRPO, Q = 2: round 0 gives prompts 0 (all wrong) and 1 (mixed), round 1 prompts 2 (all right) and
    # 3 (mixed): the kept groups are 1 and 3, and the four groups' samples are all counted
    config, sel = dynamic("algo.advantage=grpo")
    sampler = FakeSampler({"0": WRONG, "1": MIXED, "2": RIGHT, "3": MIXED, "4": MIXED})
    selected = sel.select(5, order(10), sampler)
    rollout = selected.collected.rollout
    assert [p.id for p in rollout.problems] == ["1", "3"] and rollout.correct.tolist() == [1, 0, 1, 0]
    assert sampler.calls == [(["0", "1"], round_seed(0, 5, 0)), (["2", "3"], round_seed(0, 5, 1))]
    assert selected.collected.compute.samples == 8 and selected.collected.compute.prompts == 4
    assert selected.collected.verified.calls == 8
    assert selected.metrics == {"selection/rounds": 2, "selection/kept_groups": 2, "selection/short": 0.0}
    # every generated group is in the history, dropped ones too
    assert sorted(sel.history.visits) == ["0", "1", "2", "3"]


def test_dynamic_sampling_keeps_the_first_q_and_lens_keeps_all_wrong_groups():
    # LENS gives all-wrong groups a signal, so they are kept; with Q = 2 the first two kept groups win
    config, sel = dynamic("algo.advantage=lens", "rollout.selection={kind: dynamic, round_prompts: 3}")
    sampler = FakeSampler({"0": RIGHT, "1": WRONG, "2": MIXED, "3": MIXED})
    selected = sel.select(1, order(10), sampler)
    assert [p.id for p in selected.collected.rollout.problems] == ["1", "2"]
    assert selected.metrics["selection/rounds"] == 1


def test_dynamic_sampling_trains_on_what_it_has_after_max_rounds():
    config, sel = dynamic("algo.advantage=grpo", "rollout.selection={kind: dynamic, max_rounds: 2}")
    sampler = FakeSampler({"0": WRONG, "1": WRONG, "2": MIXED, "3": RIGHT})
    selected = sel.select(1, order(10), sampler)
    assert [p.id for p in selected.collected.rollout.problems] == ["2"]
    assert selected.metrics == {"selection/rounds": 2, "selection/kept_groups": 1, "selection/short": 1.0}
    # nothing kept at all: the last round's groups (advantages 0 under GRPO, so no update)
    config, sel = dynamic("algo.advantage=grpo", "rollout.selection={kind: dynamic, max_rounds: 1}")
    selected = sel.select(1, order(10), FakeSampler({"0": WRONG, "1": RIGHT}))
    assert [p.id for p in selected.collected.rollout.problems] == ["0", "1"]


def test_a_selector_restores_its_history_from_a_checkpoint_state():
    config, sel = dynamic("algo.advantage=grpo")
    sel.select(1, order(10), FakeSampler({str(i): MIXED for i in range(10)}))
    again = selector(config, 0, sel.state())
    assert again.history == sel.history and type(again) is type(sel)


def test_an_unknown_selection_kind_is_a_config_error():
    from lensrl.config import ConfigError

    with pytest.raises(ConfigError):
        load_config(overrides=["rollout.selection={kind: everything}"])


# GRESO


class Cycle:
    """A data order over the given ids, round and round; `position` counts the prompts taken."""

    def __init__(self, ids):
        self.ids, self.position = list(ids), 0

    def __call__(self, k):
        out = problems(*[self.ids[(self.position + i) % len(self.ids)] for i in range(k)])
        self.position += k
        return out


def greso(*options, algo="grpo"):
    selection = ", ".join(["kind: greso", *options])
    config = load_config(
        overrides=[
            "rollout.questions_per_step=2",
            "rollout.group_size=2",
            "optim.updates_per_rollout=1",
            f"algo.advantage={algo}",
            f"rollout.selection={{{selection}}}",
        ]
    )
    return config, selector(config, pad_token_id=0)


def test_the_streak_counts_the_latest_zero_variance_visits_in_a_row():
    assert zero_variance_streak([]) == (0, None)
    assert zero_variance_streak([(1, 4, 4), (2, 4, 2)]) == (0, None)  # the last visit was mixed
    assert zero_variance_streak([(1, 4, 0), (2, 4, 4), (3, 2, 2)]) == (2, "easy")
    assert zero_variance_streak([(1, 4, 2), (2, 4, 0), (3, 4, 0), (5, 4, 0)]) == (3, "hard")
    assert zero_variance_streak([(1, 4, 4), (2, 4, 0)]) == (1, "hard")


def test_a_prompt_is_kept_with_p_to_its_streak_and_never_below_the_floor():
    assert keep_probability(0, 0.05, 0.01) == 1.0  # no streak (or never seen): always kept
    assert keep_probability(1, 0.5, 0.01) == 0.5
    assert keep_probability(3, 0.5, 0.01) == 0.125
    assert keep_probability(7, 0.5, 0.01) == 0.01  # 0.5^7 = 0.0078 is below the 1% floor
    assert keep_probability(2, 0.05, 0.01) == 0.01


def test_p_moves_one_step_toward_the_target_and_stays_in_its_bounds():
    config, _ = greso()
    options = config.rollout.selection
    assert (options.p_initial, options.p_step, options.p_min, options.p_max) == (0.5, 0.01, 0.05, 0.95)
    assert adapted(0.5, 0.3, 0.25, options) == pytest.approx(0.49)  # too many zero-variance groups: skip more
    assert adapted(0.5, 0.25, 0.25, options) == pytest.approx(0.49)  # at the target too (the authors' >=)
    assert adapted(0.5, 0.2, 0.25, options) == pytest.approx(0.51)
    assert adapted(0.055, 0.3, 0.25, options) == 0.05 and adapted(0.05, 1.0, 0.25, options) == 0.05
    assert adapted(0.945, 0.0, 0.25, options) == 0.95 and adapted(0.95, 0.0, 0.25, options) == 0.95


def test_rounds_are_sized_from_the_last_rounds_share_of_groups_with_a_signal():
    config, _ = greso()
    options, q = config.rollout.selection, 32
    assert greso_round_size(options, q, 32, None) == 48  # the first round: 1.5 Q (the authors' 384 for 256)
    assert greso_round_size(options, q, 4, Round(48, 24, 12, 12)) == 10  # 4 / (24/48) * 1.25
    assert greso_round_size(options, q, 2, Round(48, 40, 4, 4)) == 8  # 3, raised to Q/4 (the authors' 64)
    assert greso_round_size(options, q, 30, Round(48, 2, 40, 6)) == 48  # 900, capped at 1.5 Q
    assert greso_round_size(options, q, 30, Round(48, 0, 40, 8)) == 48  # no signal at all: the most


HISTORY = {
    "A": [(1, 2, 0), (2, 2, 0)],  # hard, streak 2: kept with p_hard^2 = 0.25
    "B": [(1, 2, 2)],  # easy, streak 1: p_easy = 0.5
    "C": [(1, 2, 1)],  # mixed last: always kept
    "D": [(1, 2, 1), (2, 2, 0), (3, 2, 0), (4, 2, 0)],  # hard, streak 3: 0.125
    "E": [(1, 2, 0), (2, 2, 2), (3, 2, 2)],  # easy, streak 2: 0.25
}


def test_greso_skips_with_seeded_coins_and_skipped_prompts_use_up_the_order():
    config, sel = greso()
    sel.history = PromptHistory({k: list(v) for k, v in HISTORY.items()})
    # step 1's coins, one per prompt with a streak, in data order: A 0.293 (>= 0.25: skipped), B 0.469
    # (< 0.5: kept), D 0.719 (>= 0.125: skipped), E 0.056 (< 0.25: kept); C needs no coin
    coins = torch.Generator().manual_seed(skip_seed(config.run.seed, 1))
    assert [round(torch.rand((), generator=coins).item(), 3) for _ in range(4)] == [0.293, 0.469, 0.719, 0.056]
    data = Cycle(["A", "B", "C", "D", "E", "0", "1", "2"])
    sampler = FakeSampler({k: MIXED for k in data.ids})
    selected = sel.select(1, data, sampler)
    # the first round is 1.5 Q = 3 kept prompts: B, C, E; its mixed groups fill Q = 2 at once
    assert sampler.calls == [(["B", "C", "E"], round_seed(0, 1, 0))]
    assert [p.id for p in selected.collected.rollout.problems] == ["B", "C"]
    assert data.position == 5  # A and D used up their places in the order
    assert selected.metrics["selection/skipped"] == 2
    assert selected.collected.compute.prompts == 3 and selected.collected.compute.samples == 6
    assert sorted(sel.history.visits["A"]) == HISTORY["A"]  # a skipped prompt gets no visit


def test_greso_keeps_a_streaked_prompt_with_its_probability_and_a_new_prompt_always():
    # 1000 independent steps: A (hard, streak 2) is kept with 0.5^2, B (easy, streak 1) with 0.5;
    # prompts never generated are never skipped
    config, _ = greso()
    kept, n = {"A": 0, "B": 0}, 1000
    for step in range(1, n + 1):
        sel = selector(config, 0, {"history": PromptHistory(dict(HISTORY)).to_json()})
        data = Cycle(["A", "B", "n1", "n2", "n3"])
        sampler = FakeSampler({k: MIXED for k in data.ids})
        selected = sel.select(step, data, sampler)
        first = sampler.calls[0][0]
        for key in kept:
            kept[key] += key in first
        old = [k for k in ("A", "B") if k in first]
        assert first == old + ["n1", "n2", "n3"][: 3 - len(old)]  # the new prompts are all kept
        assert selected.metrics["selection/skipped"] == 2 - len(old) and data.position == 5 - len(old)
    assert kept["A"] / n == pytest.approx(0.25, abs=0.05) and kept["B"] / n == pytest.approx(0.5, abs=0.06)


def test_greso_adapts_p_toward_the_target_shares_of_every_group_of_the_step():
    # alpha = 0.3: targets 0.1 all-right, 0.2 all-wrong. Prompts 0-2 were generated before (mixed, so
    # never skipped); round 1 (3 prompts) keeps 1 mixed group under GRPO, so round 2 samples
    # 1 / (1/3) * 1.25 = 3 more. Over the step's 6 groups 1/6 were all right (>= 0.1: p_easy falls) and
    # 1/6 all wrong (< 0.2: p_hard rises)
    config, sel = greso("target_zero_variance: 0.3")
    sel.history = PromptHistory({k: [(0, 2, 1)] for k in ("0", "1", "2")})
    sampler = FakeSampler({"0": RIGHT, "1": WRONG, "2": MIXED, "3": MIXED, "4": MIXED, "5": MIXED})
    selected = sel.select(1, Cycle(range(6)), sampler)
    assert [call[0] for call in sampler.calls] == [["0", "1", "2"], ["3", "4", "5"]]
    assert [p.id for p in selected.collected.rollout.problems] == ["2", "3"]
    m = selected.metrics
    assert (m["selection/rounds"], m["selection/kept_groups"], m["selection/short"]) == (2, 2, 0.0)
    assert m["selection/all_right"] == m["selection/all_wrong"] == pytest.approx(1 / 6)
    assert m["selection/p_easy"] == m["selection/p_hard"] == 0.5  # the values this step skipped with
    assert sel.p_easy == pytest.approx(0.49) and sel.p_hard == pytest.approx(0.51)
    # bounds: a large step stops at p_min and p_max
    config, sel = greso("target_zero_variance: 0.3", "p_step: 0.2", "p_min: 0.4", "p_max: 0.6")
    sel.history = PromptHistory({k: [(0, 2, 1)] for k in ("0", "1", "2")})
    sel.select(1, Cycle(range(6)), sampler)
    assert (sel.p_easy, sel.p_hard) == (0.4, 0.6)


def test_greso_does_not_adapt_p_before_it_meets_a_prompt_generated_before():
    # as the authors, who adapt from the second epoch on: before any prompt comes back there is
    # nothing to skip, and the shares do not depend on p
    config, sel = greso()
    data, sampler = Cycle(range(40)), FakeSampler({str(i): RIGHT for i in range(40)})
    assert sel.select(1, data, sampler).metrics["selection/rounds"] == 10  # 30 new prompts, all right
    assert (sel.p_easy, sel.p_hard) == (0.5, 0.5)
    sel.select(2, data, sampler)  # prompts 0-9 come back: p adapts (all right: p_easy falls)
    assert (sel.p_easy, sel.p_hard) == (pytest.approx(0.49), pytest.approx(0.51))


def test_greso_trains_on_what_it_has_after_max_rounds_and_keeps_lens_negative_groups():
    config, sel = greso("max_rounds: 2")
    selected = sel.select(1, Cycle(range(20)), FakeSampler({str(i): WRONG for i in range(20)}))
    # no signal under GRPO: round 2 is again the most, 3 prompts; the step trains on round 2's groups
    assert selected.metrics["selection/rounds"] == 2 and selected.metrics["selection/short"] == 1.0
    assert [p.id for p in selected.collected.rollout.problems] == ["3", "4", "5"]
    assert selected.collected.compute.prompts == 6
    config, sel = greso(algo="lens")
    selected = sel.select(1, Cycle(range(20)), FakeSampler({str(i): WRONG for i in range(20)}))
    assert [p.id for p in selected.collected.rollout.problems] == ["0", "1"]


def run_greso(sel, steps, data, sampler):
    return [sel.select(step, data, sampler).metrics for step in steps]


def test_greso_resumed_from_its_state_skips_as_an_uninterrupted_run():
    verdicts = {"0": RIGHT, "1": WRONG, "2": MIXED, "3": WRONG, "4": RIGHT, "5": MIXED}
    config, whole = greso()
    data, sampler = Cycle(verdicts), FakeSampler(verdicts)
    metrics = run_greso(whole, range(1, 9), data, sampler)
    assert sum(m["selection/skipped"] for m in metrics) > 0
    config, first = greso()
    data_again, sampler_again = Cycle(verdicts), FakeSampler(verdicts)
    metrics_again = run_greso(first, range(1, 5), data_again, sampler_again)
    state = first.state()
    assert set(state) == {"history", "p_easy", "p_hard"}
    resumed = selector(config, 0, state)
    assert (resumed.history, resumed.p_easy, resumed.p_hard) == (first.history, first.p_easy, first.p_hard)
    metrics_again += run_greso(resumed, range(5, 9), data_again, sampler_again)
    assert metrics_again == metrics and sampler_again.calls == sampler.calls
    assert resumed.state() == whole.state()


def knapsack(*overrides):
    config = load_config(
        overrides=[
            "rollout.questions_per_step=3",
            "rollout.group_size=4",
            "optim.updates_per_rollout=1",
            "rollout.selection={kind: knapsack, max_samples: 8}",
            "algo.advantage=grpo",
            *overrides,
        ]
    )
    return config, selector(config, pad_token_id=0)


def test_knapsack_spreads_q_x_g_samples_by_each_prompts_history():
    # Q = 3 prompts, G = 4: budget 12; estimates from 2 G = 8 rewards, none before G = 4 rewards.
    # Prompt 0 was seen once, 1 of 4 right: p = 0.25 (an effective item); prompt 1 once, 0 of 4: p = 0
    # (all wrong); prompt 2 never: the default, G = 4. `allocate_samples([0.25, 0.0, None], 12, 4,
    # min_samples=2, max_samples=8)` decides the split (tests/unit/test_knapsack.py checks its rule);
    # here the selector must ask for exactly that split and sample it.
    from lensrl.core.knapsack import allocate_samples

    config, sel = knapsack()
    sel.history.visits = {"0": [(1, 4, 1)], "1": [(1, 4, 0)]}
    verdicts = {"0": [1, 0, 0, 0] * 3, "1": [0] * 12, "2": [1, 0] * 6}

    def sampler(batch, seed, samples):
        correct = [v for p, n in zip(batch, samples) for v in verdicts[p.id][:n]]
        rollout = scored(batch, correct, samples)
        return Collected(rollout, VerifyCounts(calls=len(correct)), Compute.of(rollout))

    expected = allocate_samples([0.25, 0.0, None], 12, 4, min_samples=2, max_samples=8)
    selected = sel.select(2, order(10), sampler)
    rollout = selected.collected.rollout
    assert rollout.group_sizes == tuple(expected) and sum(expected) == 12
    assert selected.collected.compute.samples == 12
    assert selected.metrics["selection/unseen"] == 1 and selected.metrics["selection/estimated_all_wrong"] == 1
    # the step's groups join each prompt's history
    assert sel.history.visits["2"] == [(2, expected[2], sum(verdicts["2"][: expected[2]]))]


def test_knapsack_with_no_history_is_g_samples_each():
    config, sel = knapsack()
    selected = sel.select(1, order(10), FakeSampler({str(i): [1, 0, 0, 0] for i in range(3)}))
    assert selected.collected.rollout.group_size == 4
