"""experiments/chain_sum_styles.py: sorting chain-sum samples into worked and direct answers."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

import experiments.chain_sum_styles as styles


def test_styles_counted_per_level_and_summarised():
    # Two problems (levels 1 and 2), G = 3. Level 1: direct right, worked right, worked wrong.
    # Level 2: direct wrong, direct wrong, worked right. The verdicts come beside the chunk, as
    # `evaluate`'s on_chunk gives them.
    chunk = SimpleNamespace(
        problems=[SimpleNamespace(level=1), SimpleNamespace(level=2)],
        group_size=3,
        completions=[
            "The final answer is \\boxed{3}.",
            "1 + 2 = 3\nThe final answer is \\boxed{3}.",
            "1 + 2 = 4\nThe final answer is \\boxed{4}.",
            " The final answer is \\boxed{9}.",
            "The final answer is \\boxed{8}.",
            "5 - 1 = 4\n4 + 3 = 7\nThe final answer is \\boxed{7}.",
        ],
    )
    counts = Counter()
    styles.style_counts(chunk, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0]), counts)
    assert counts == Counter(
        {
            (1, "direct", True): 1,
            (1, "worked", True): 1,
            (1, "worked", False): 1,
            (2, "direct", False): 2,
            (2, "worked", True): 1,
        }
    )
    table = styles.style_table(counts)
    # level 1: 1 of 3 direct; direct 1/1 right, worked 1/2
    assert table["1"] == {
        "samples": 3,
        "direct_share": pytest.approx(1 / 3),
        "direct_accuracy": 1.0,
        "worked_accuracy": 0.5,
    }
    # level 2: 2 of 3 direct, both wrong; the worked one right
    assert table["2"] == {
        "samples": 3,
        "direct_share": pytest.approx(2 / 3),
        "direct_accuracy": 0.0,
        "worked_accuracy": 1.0,
    }
    # all: 3 of 6 direct (1 right), 3 worked (2 right)
    assert table["all"] == {
        "samples": 6,
        "direct_share": 0.5,
        "direct_accuracy": pytest.approx(1 / 3),
        "worked_accuracy": pytest.approx(2 / 3),
    }


def test_a_style_without_samples_has_no_accuracy():
    table = styles.style_table(Counter({(3, "worked", False): 2}))
    assert table["3"] == {"samples": 2, "direct_share": 0.0, "direct_accuracy": None, "worked_accuracy": 0.0}
