"""The sample log (`lensrl.runs.samples`): groups chosen, values recorded, the table, the terminal view, the CLI,
on a hand-built rollout; and a real tiny run that logs samples without changing its numbers."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lensrl.cli import main
from lensrl.config import AlgoConfig, GRPOAlgo, LensAlgo, load_config, save_config
from lensrl.core.advantages import lens_rewards
from lensrl.records import Problem, ScoredRollout
from lensrl.runs.checkpoint import latest_checkpoint
from lensrl.runs.samples import (
    COLUMNS,
    choose_groups,
    format_samples,
    print_samples,
    read_samples,
    sample_record,
    sample_table,
)
from tests.conftest import tiny_overrides

# Q = 5 groups of G = 2 (rows 2q, 2q+1), token log-probs chosen so that pibar is:
#   group 0  all correct  right 0.5 (2 tokens), right 0.5 (2 tokens)
#   group 1  negative     wrong 0.4 (2 tokens), wrong 0.8 (2 tokens)
#   group 2  mixed        right 0.5 (2 tokens), wrong 0.25 (1 token)
#   group 3  negative     wrong 0.2 (1 token),  wrong 0.6 (2 tokens, cut short)
#   group 4  mixed        wrong 0.9 (1 token),  right 0.3 (1 token)
PIBAR = [0.5, 0.5, 0.4, 0.8, 0.5, 0.25, 0.2, 0.6, 0.9, 0.3]
LENGTHS = [2, 2, 2, 2, 2, 1, 1, 2, 1, 1]
CORRECT = [1, 1, 0, 0, 1, 0, 0, 0, 0, 1]
# LENS's r~ (r~_i = -(1/G) pibar_i / (D - pibar_i) for wrong answers, 1 for right ones), G = 2:
#   group 1 (negative): D = 2 max pibar = 1.6: -(1/2) 0.4/1.2 = -1/6, -(1/2) 0.8/0.8 = -1/2
#   group 2 (mixed): D_imp = 1 / ((1/2)(1/0.5)) = 1, floor 2 x 0.5 = 1, D = 1: -(1/2) 0.25/0.75 = -1/6
#   group 3 (negative): D = 1.2: -(1/2) 0.2/1.0 = -0.1, -(1/2) 0.6/0.6 = -1/2
#   group 4 (mixed): D_imp = 1 / ((1/2)(1/0.3)) = 0.6, floor 2 x 0.9 = 1.8, D = 1.8: -(1/2) 0.9/0.9 = -1/2
CALIBRATED = [1, 1, -1 / 6, -1 / 2, 1, -1 / 6, -0.1, -1 / 2, -1 / 2, 1]
ADVANTAGES = [x / 4 - 1 for x in range(10)]  # exactly representable: -1, -0.75, ..., 1.25


def _rollout() -> ScoredRollout:
    lp = torch.tensor([[p, p] if n == 2 else [p, 1.0] for p, n in zip(PIBAR, LENGTHS)]).log()
    mask = torch.tensor([[1.0, 1.0] if n == 2 else [1.0, 0.0] for n in LENGTHS])
    problems = [Problem(f"Q: {q}+{q}?\nA:", str(2 * q), level=q % 5 + 1, id=f"p{q}") for q in range(5)]
    completions = [f"row {i}: \\boxed{{{i}}}" for i in range(10)]
    completions[7] = "step one\nstep two " + "x" * 300  # long, two lines, cut short
    return ScoredRollout(
        problems=problems,
        group_size=2,
        input_ids=torch.zeros(10, 3, dtype=torch.long),
        prompt_mask=torch.ones(10, 1),
        response_mask=mask,
        completions=completions,
        truncated=torch.tensor([i == 7 for i in range(10)]),
        correct=torch.tensor(CORRECT, dtype=torch.float),
        logprobs_old=lp * mask,
        entropy=torch.zeros_like(mask),
    )


def _record(groups: int = 5, algo: AlgoConfig | None = None, step: int = 7) -> dict:
    return sample_record(_rollout(), torch.tensor(ADVANTAGES), algo or LensAlgo(), step, groups)


def test_groups_alternate_negative_and_mixed_then_the_rest_and_all_correct_last():
    # negative groups 1, 3 and mixed groups 2, 4 alternate by index: 1, 2, 3, 4; then all-correct 0
    assert [g["index"] for g in _record(3)["groups"]] == [1, 2, 3]
    assert [g["index"] for g in _record(2)["groups"]] == [1, 2]
    assert [g["index"] for g in _record(1)["groups"]] == [1]
    assert [g["index"] for g in _record(4)["groups"]] == [1, 2, 3, 4]
    assert [g["index"] for g in _record(9)["groups"]] == [0, 1, 2, 3, 4]  # fewer groups than asked: all of them
    # one kind runs out: the other fills in before all-correct groups
    assert choose_groups(["all_correct", "mixed", "mixed", "mixed"], 2) == [1, 2]
    assert choose_groups(["negative", "all_correct", "negative", "mixed", "negative"], 3) == [0, 2, 3]
    assert choose_groups(["negative", "all_correct", "negative", "negative"], 3) == [0, 2, 3]
    assert choose_groups(["all_correct", "all_correct"], 1) == [0]


def test_the_choice_is_deterministic_and_draws_no_random_numbers():
    state = torch.get_rng_state()
    first, second = _record(3), _record(3)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == second


def test_whole_groups_with_their_problem_and_kind():
    record = _record(3)
    assert (record["step"], record["algorithm"]) == (7, "lens")
    for group in record["groups"]:
        q = group["index"]
        assert len(group["samples"]) == 2  # whole groups: all G responses
        assert [s["completion"] for s in group["samples"]] == _rollout().completions[2 * q : 2 * q + 2]
        assert (group["problem_id"], group["prompt"], group["answer"], group["level"]) == (
            f"p{q}",
            f"Q: {q}+{q}?\nA:",
            str(2 * q),
            q % 5 + 1,
        )
    assert [g["kind"] for g in record["groups"]] == ["negative", "mixed", "negative"]
    assert _record(5)["groups"][0]["kind"] == "all_correct"


def test_pibar_calibrated_reward_and_advantage_of_every_response():
    record = _record(5)
    samples = [s for g in record["groups"] for s in g["samples"]]  # groups 0..4: rows in rollout order
    assert [s["pibar"] for s in samples] == pytest.approx(PIBAR)
    assert [s["calibrated_reward"] for s in samples] == pytest.approx(CALIBRATED)
    assert [s["advantage"] for s in samples] == ADVANTAGES  # passed through exactly
    assert [s["correct"] for s in samples] == [bool(c) for c in CORRECT]
    assert [s["truncated"] for s in samples] == [i == 7 for i in range(10)]
    assert [s["length"] for s in samples] == LENGTHS
    for s in samples:  # plain Python values: the entry is JSON as it is
        assert type(s["correct"]) is bool and type(s["pibar"]) is float and type(s["length"]) is int
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_calibrated_rewards_are_lens_whatever_the_estimator_with_the_runs_d_estimator():
    grpo = _record(5, GRPOAlgo())
    assert grpo["algorithm"] == "grpo"
    assert [s["calibrated_reward"] for g in grpo["groups"] for s in g["samples"]] == pytest.approx(CALIBRATED)
    # one group of G = 3: right (pibar 0.2, 2 tokens: sequence probability 0.04), wrong 0.1, wrong 0.05
    #   normalized: D_imp = 1 / ((1/3)(1/0.2)) = 0.6 > floor 2 x 0.2 = 0.4: r~ = -(1/3) 0.1/0.5 = -1/15
    #   sequence:   D_imp = 1 / ((1/3)(1/0.04)) = 0.12 < floor 0.4:         r~ = -(1/3) 0.1/0.3 = -1/9
    lp = torch.tensor([[0.2, 0.2], [0.1, 1.0], [0.05, 1.0]]).log()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    rollout = ScoredRollout(
        problems=[Problem("q", "a")],
        group_size=3,
        input_ids=torch.zeros(3, 3, dtype=torch.long),
        prompt_mask=torch.ones(3, 1),
        response_mask=mask,
        completions=["a", "b", "c"],
        truncated=torch.zeros(3, dtype=torch.bool),
        correct=torch.tensor([1.0, 0.0, 0.0]),
        logprobs_old=lp * mask,
        entropy=torch.zeros_like(mask),
    )
    for estimator, expected in (("normalized", -1 / 15), ("sequence", -1 / 9)):
        record = sample_record(rollout, torch.zeros(3), LensAlgo(d_estimator=estimator), 1, 1)
        assert record["groups"][0]["kind"] == "mixed"
        assert record["groups"][0]["samples"][1]["calibrated_reward"] == pytest.approx(expected)
        assert record["groups"][0]["samples"][1]["calibrated_reward"] == pytest.approx(
            lens_rewards(rollout.correct, rollout.seq_logprobs, rollout.lengths, 3, estimator)[1].item()
        )


def test_log_probs_that_are_not_finite_give_nulls_not_an_error():
    rollout = _rollout()
    rollout.logprobs_old[3, 0] = math.nan
    advantages = torch.tensor(ADVANTAGES)
    advantages[2] = math.inf
    record = sample_record(rollout, advantages, LensAlgo(), 1, 5)
    samples = [s for g in record["groups"] for s in g["samples"]]
    assert samples[3]["pibar"] is None and samples[2]["pibar"] == pytest.approx(0.4)
    assert all(s["calibrated_reward"] is None for s in samples)  # LENS is not defined for this rollout
    assert samples[2]["advantage"] is None and samples[4]["advantage"] == 0.0
    json.dumps(record, allow_nan=False)
    format_samples(record)  # renders the nulls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tensors_on_the_gpu():
    record = sample_record(_rollout().to("cuda"), torch.tensor(ADVANTAGES, device="cuda"), LensAlgo(), 7, 5)
    samples = [s for g in record["groups"] for s in g["samples"]]
    assert [s["pibar"] for s in samples] == pytest.approx(PIBAR)
    assert [s["calibrated_reward"] for s in samples] == pytest.approx(CALIBRATED)
    assert [s["advantage"] for s in samples] == ADVANTAGES
    json.dumps(record, allow_nan=False)


def test_sample_table_has_one_row_per_response():
    columns, rows = sample_table(_record(3))
    assert (
        columns
        == COLUMNS
        == [
            "step",
            "group",
            "kind",
            "level",
            "prompt",
            "answer",
            "completion",
            "correct",
            "pibar",
            "calibrated_reward",
            "advantage",
            "truncated",
        ]
    )
    assert len(rows) == 3 * 2 and all(len(row) == len(columns) for row in rows)
    # first row: group 1's first response (row 2 of the rollout)
    row = dict(zip(columns, rows[0]))
    assert (row["step"], row["group"], row["kind"], row["level"], row["answer"], row["completion"]) == (
        7,
        1,
        "negative",
        2,
        "2",
        "row 2: \\boxed{2}",
    )
    assert (row["correct"], row["advantage"], row["truncated"]) == (False, -0.5, False)
    assert row["pibar"] == pytest.approx(0.4) and row["calibrated_reward"] == pytest.approx(-1 / 6)


def _response_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("  ✗", "  ✓"))]


def _group_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("negative ·", "mixed ·", "all-correct ·"))]


def test_format_orders_negative_groups_first_and_confident_mistakes_first():
    text = format_samples(_record(5))
    assert text.splitlines()[0].startswith("step 7 · lens · 5 groups logged (2 negative, 2 mixed, 1 all correct)")
    assert [line.split(" · ")[:2] for line in _group_lines(text)] == [
        ["negative", "group 1"],
        ["negative", "group 3"],
        ["mixed", "group 2"],
        ["mixed", "group 4"],
        ["all-correct", "group 0"],
    ]
    assert "level 2 · gold 2 · Q: 1+1? A:" in _group_lines(text)[0]
    lines = _response_lines(text)
    # group 1: wrong 0.8 before wrong 0.4; group 3: 0.6 (cut) before 0.2; group 2: wrong 0.25, then right 0.5;
    # group 4: wrong 0.9, then right 0.3; group 0: the two right answers
    assert [line.split()[:2] for line in lines] == [
        ["✗", "0.800"],
        ["✗", "0.400"],
        ["✗", "0.600"],
        ["✗", "0.200"],
        ["✗", "0.250"],
        ["✓", "0.500"],
        ["✗", "0.900"],
        ["✓", "0.300"],
        ["✓", "0.500"],
        ["✓", "0.500"],
    ]
    assert lines[0].split()[2:4] == ["-0.500", "-0.250"]  # r~ of row 3, its advantage signed
    assert lines[5].split()[2:4] == ["+1.000", "+0.000"]  # row 4: right, advantage 0 (exactly -1 + 4/4)
    assert lines[2].split()[4] == "cut" and "step one⏎step two xxx" in lines[2]
    assert all(len(line) <= 100 for line in text.splitlines())  # the 300-character completion is shortened
    assert lines[2].endswith("…")


def test_format_negative_only_and_limit():
    text = format_samples(_record(5), negative_only=True)
    assert [line.split(" · ")[1] for line in _group_lines(text)] == ["group 1", "group 3"]
    assert len(_response_lines(text)) == 4
    text = format_samples(_record(5), limit=3)
    assert [line.split(" · ")[1] for line in _group_lines(text)] == ["group 1", "group 3", "group 2"]
    assert "3 shown" in text.splitlines()[0]
    assert [line.split(" · ")[1] for line in _group_lines(format_samples(_record(5), True, 1))] == ["group 1"]
    only_mixed = {**_record(5), "groups": [g for g in _record(5)["groups"] if g["kind"] != "negative"]}
    assert "(no negative groups in this entry)" in format_samples(only_mixed, negative_only=True)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        format_samples(_record(5), limit=-1)


def test_chat_prompts_are_shown_on_one_line_with_the_question_kept():
    record = _record(1)
    record["groups"][0]["prompt"] = (
        "<|im_start|>system\n" + "You are a careful assistant. " * 5 + "<|im_end|>\n"
        "<|im_start|>user\nWhat is 7*6?<|im_end|>\n<|im_start|>assistant\n"
    )
    (line,) = _group_lines(format_samples(record))
    assert line.endswith("What is 7*6? assistant") and "<|" not in line and "…" in line and len(line) <= 100


def _write_log(run_dir, steps):
    run_dir.mkdir(exist_ok=True)
    with (run_dir / "samples.jsonl").open("w") as f:
        for step in steps:
            f.write(json.dumps(_record(2, step=step)) + "\n")


def test_read_and_print_samples(tmp_path, capsys):
    _write_log(tmp_path, [1, 3])
    assert [e["step"] for e in read_samples(tmp_path)] == [1, 3]
    print_samples(tmp_path)  # the latest step
    out = capsys.readouterr().out
    assert out.startswith("step 3 · lens") and "group 1" in out and "group 2" in out
    print_samples(tmp_path, step=1, negative_only=True)
    out = capsys.readouterr().out
    assert out.startswith("step 1 · lens") and "group 1" in out and "group 2" not in out
    # a last line cut short by a killed run is left out
    with (tmp_path / "samples.jsonl").open("a") as f:
        f.write('{"step": 5, "algo')
    assert [e["step"] for e in read_samples(tmp_path)] == [1, 3]


def test_print_samples_errors_for_a_missing_log_and_a_missing_step(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"has no samples\.jsonl and no readable config\.yaml: is it a run folder"):
        print_samples(tmp_path)
    assert main(["samples", str(tmp_path)]) == 2
    assert "has no samples.jsonl" in capsys.readouterr().err
    _write_log(tmp_path, [2, 4])
    with pytest.raises(ValueError, match="no sample-log entry for step 3; steps with one: 2, 4"):
        print_samples(tmp_path, step=3)


def test_a_missing_sample_log_is_explained_from_the_runs_config_and_metrics(tmp_path, capsys):
    assert main(["samples", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err == f"lensrl: no such folder {tmp_path / 'typo'}\n"
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(overrides=["run.sample_every=10"]), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    with pytest.raises(ValueError) as raised:
        print_samples(run)
    assert str(raised.value) == (
        f"{run} has no samples.jsonl: the run logs samples every run.sample_every=10 steps and has logged "
        "2 steps so far"
    )
    save_config(load_config(overrides=["run.sample_every=0"]), run / "config.yaml")
    with pytest.raises(ValueError, match=r"has no samples\.jsonl: run\.sample_every=0: this run logs no samples$"):
        print_samples(run)


def test_a_tiny_run_logs_samples_without_changing_its_numbers(tiny_model_dir, tmp_path, capsys):
    from lensrl.training.trainer import train

    logged, quiet = tmp_path / "run", tmp_path / "quiet"
    train(load_config(overrides=tiny_overrides(tiny_model_dir, logged, "run.sample_every=1")))
    train(load_config(overrides=tiny_overrides(tiny_model_dir, quiet, "run.sample_every=0")))

    entries = read_samples(logged)
    assert [e["step"] for e in entries] == [1, 2]  # run.steps=2, every step
    for entry in entries:  # 4 questions x 4 samples; run.sample_groups=4 takes all of them
        assert entry["algorithm"] == "lens" and len(entry["groups"]) == 4
        assert all(len(g["samples"]) == 4 for g in entry["groups"])
    capsys.readouterr()
    assert main(["samples", str(logged)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("step 2 · lens")
    for group in entries[-1]["groups"]:
        assert f"group {group['index']} · level {group['level']} · gold {group['answer']}" in out
    assert len(_response_lines(out)) == 16

    assert not (quiet / "samples.jsonl").exists()

    def metrics(run_dir):
        return [
            {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]

    assert metrics(logged) == metrics(quiet)
    a, b = latest_checkpoint(logged), latest_checkpoint(quiet)
    assert a.name == b.name == "step_000002"
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert files and files == sorted(p.name for p in b.glob("*.safetensors"))
    for name in files:
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
