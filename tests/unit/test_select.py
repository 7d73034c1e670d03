"""Which prompts a step samples (`rollout.selection`): the prompt history, the group selection a
selector builds its rollout from, the round seeds, and DAPO's dynamic sampling on a stand-in sampler."""

import pytest
import torch

from lensrl.config import load_config
from lensrl.records import Compute, Problem, ScoredRollout
from lensrl.rollout.collect import Collected
from lensrl.rollout.gather import select_groups
from lensrl.rollout.select import PromptHistory, selector
from lensrl.rollout.verifier import VerifyCounts
from lensrl.seeds import rollout_seed, round_seed


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
