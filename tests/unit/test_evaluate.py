"""pass@k summaries by level, hand-worked."""

import pytest

from lensrl.data.sources import Problem
from lensrl.evaluation.evaluate import format_table, ks_for, summarise


def test_summarise_hand_worked():
    # three problems, 4 samples each, with c = 0, 2, 4 correct; levels 1, 1, 2
    problems = [Problem("a", "1", level=1), Problem("b", "1", level=1), Problem("c", "1", level=2)]
    res = summarise(step=5, problems=problems, n_correct=[0, 2, 4], samples=4)
    # pass@1 = mean(c/n) = (0 + 0.5 + 1) / 3 = 0.5
    assert res.overall["pass@1"] == pytest.approx(0.5)
    # pass@2 at c=2: 1 - C(2,2)/C(4,2) = 5/6, so (0 + 5/6 + 1) / 3 = 11/18
    assert res.overall["pass@2"] == pytest.approx(11 / 18)
    # pass@4 at c=2: n - c = 2 < 4, so 1; hence (0 + 1 + 1) / 3
    assert res.overall["pass@4"] == pytest.approx(2 / 3)
    assert res.per_level["1"]["pass@1"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert res.per_level["2"]["pass@4"] == 1.0
    assert res.all_wrong == pytest.approx(1 / 3)
    assert res.all_wrong_per_level == {"1": 0.5, "2": 0.0}
    assert res.step == 5 and res.n_problems == 3
    table = format_table({"x": res})
    assert "pass@4" in table and "all-wrong" in table


def test_summarise_unparseable_share_and_mean_length():
    # 2 problems x 4 samples: 1 + 3 samples without a box out of 8 -> 0.5;
    # response tokens summed per problem 40 and 24 -> 64 / 8 samples = 8.0 on average
    problems = [Problem("a", "1"), Problem("b", "1")]
    res = summarise(0, problems, n_correct=[1, 0], samples=4, n_unparseable=[1, 3], response_tokens=[40, 24])
    assert res.unparseable == 0.5 and res.response_tokens == 8.0
    assert "50.0% of samples without a final answer, 8.0 response tokens" in format_table({"x": res})
    assert summarise(0, problems, [1, 0], 4).unparseable is None  # not measured: no line in the table
    assert "without a final answer" not in format_table({"x": summarise(0, problems, [1, 0], 4)})


def test_ks_for():
    assert ks_for(16) == [1, 2, 4, 8, 16]
    assert ks_for(6) == [1, 2, 4]


def test_pass_at_reads_a_scope_and_k_and_names_the_known_ones():
    # the hand-worked summary above: overall pass@2 = 11/18, level 1's pass@1 = 0.25, level 2's pass@4 = 1
    problems = [Problem("a", "1", level=1), Problem("b", "1", level=1), Problem("c", "1", level=2)]
    res = summarise(step=5, problems=problems, n_correct=[0, 2, 4], samples=4)
    assert res.scopes == ["all", "1", "2"]
    assert res.pass_at("all", 2) == pytest.approx(11 / 18) and res.pass_at("1", 1) == pytest.approx(0.25)
    assert res.pass_at("2", 4) == 1.0
    with pytest.raises(ValueError, match=r"no scope '3' .*known: all, 1, 2"):
        res.pass_at("3", 1)
    with pytest.raises(ValueError, match=r"no pass@8 .*4 samples.*known k: 1, 2, 4"):
        res.pass_at("all", 8)


def test_an_eval_line_reads_and_writes_back_unchanged():
    from lensrl.evaluation.evaluate import EvalResult

    res = summarise(0, [Problem("a", "1")], n_correct=[1], samples=2, n_unparseable=[0], response_tokens=[6])
    line = res.to_json()
    assert line["unparseable"] == 0.0 and EvalResult.from_json(line) == res
    assert EvalResult.from_json(line).to_json() == line
    unmeasured = summarise(0, [Problem("a", "1")], n_correct=[1], samples=2).to_json()
    assert unmeasured["unparseable"] is None and unmeasured["response_tokens"] is None  # written, as null
    assert EvalResult.from_json(unmeasured).to_json() == unmeasured
