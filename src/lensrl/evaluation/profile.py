"""What RL starts from on a testbed: difficulty, confidence of right and wrong answers, and LENS's share.

Held-out problems of every level (the training mix: levels in equal shares) are sampled G = `samples`
times at temperature 1 (no top-k, no top-p) and verified, exactly as an evaluation at step 0 would
(the pass@k and all-wrong shares are an ordinary `EvalResult`). Each chunk of samples also gets its
behaviour log-probs, from which the profile reports

* pibar (the geometric-mean token probability, LENS's confidence) of right and of wrong answers:
  mean and quantiles, and on testbeds that know their wrong rule, of rule mistakes and other slips;
* the spread of pibar inside negative groups (what LENS's negative-group term acts on);
* LENS's negative-group share of the advantage mass sum |A_i| (alpha = 0.25), the share of answers
  without a final \\boxed{} and of responses cut at the token limit.

Each testbed has its own checks: `carry` those of its base policy, `signs` the targets of a testbed
with RL headroom (docs in README "Testbeds").

    lensrl testbed-profile [--testbed signs] [--model-dir DIR] [--json profile.json] [--png pibar.png]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lensrl.config import LensAlgo, ModelConfig, RolloutConfig
from lensrl.core.advantages import GROUP_KINDS, group_kinds
from lensrl.data.answers import extract_answer
from lensrl.evaluation.evaluate import EvalResult, EvalSettings, evaluate, format_table
from lensrl.policy.forward import behaviour_logprobs
from lensrl.policy.models import load_policy
from lensrl.records import Rollout, ScoredRollout
from lensrl.rollout.verify import verify_math
from lensrl.seeds import EVAL_SEED
from lensrl.testbed import task

QUANTILES = (0.1, 0.5, 0.9)


def describe(values: Sequence[float]) -> dict[str, float]:
    """Count, mean and 10/50/90% quantiles of `values` (nan when empty)."""
    if not values:
        return {"n": 0, "mean": float("nan"), **{f"q{int(100 * q)}": float("nan") for q in QUANTILES}}
    t = torch.tensor(values, dtype=torch.float64)
    return {"n": len(values), "mean": t.mean().item(), **{f"q{int(100 * q)}": t.quantile(q).item() for q in QUANTILES}}


@dataclass
class Profile:
    """A testbed policy's starting point (`to_json` is the profile JSON)."""

    testbed: str
    eval: EvalResult
    pibar_right: list[float] = field(default_factory=list)
    pibar_wrong: list[float] = field(default_factory=list)
    pibar_rule_mistakes: list[float] = field(default_factory=list)  # wrong answers a known wrong rule gives
    negative_group_std: list[float] = field(default_factory=list)  # pibar std inside each negative group
    negative_group_range: list[float] = field(default_factory=list)  # max - min pibar inside each negative group
    abs_advantage: list[float] = field(default_factory=list)  # |A_i| under LENS, every sample
    abs_advantage_negative: list[float] = field(default_factory=list)  # ... of samples in negative groups
    unparseable: int = 0
    truncated: int = 0
    responses: int = 0

    def summary(self) -> dict:
        mass = sum(self.abs_advantage)
        return {
            "pibar_right": describe(self.pibar_right),
            "pibar_wrong": describe(self.pibar_wrong),
            "pibar_rule_mistakes": describe(self.pibar_rule_mistakes),
            "rule_mistake_share_of_wrong": len(self.pibar_rule_mistakes) / max(1, len(self.pibar_wrong)),
            "negative_group_pibar_std": describe(self.negative_group_std),
            "negative_group_pibar_range": describe(self.negative_group_range),
            # the trainer's adv/negative_group_share, over the whole profile
            "lens_negative_group_share": sum(self.abs_advantage_negative) / mass if mass > 0 else 0.0,
            "unparseable": self.unparseable / max(1, self.responses),
            "truncated": self.truncated / max(1, self.responses),
        }

    def to_json(self) -> dict:
        return {"testbed": self.testbed, **self.eval.to_json(), "confidence": self.summary()}

    def observe(self, chunk: ScoredRollout, wrong_rule_answers: list[set[str]] | None) -> None:
        """Add one scored chunk of samples with its behaviour log-probs."""
        g = chunk.group_size
        pibar = chunk.pibar
        correct = chunk.correct.bool()
        negative = (group_kinds(chunk.correct, g) == GROUP_KINDS.index("negative")).tolist()
        advantages = LensAlgo().advantages(chunk).double()
        self.pibar_right += pibar[correct].tolist()
        self.pibar_wrong += pibar[~correct].tolist()
        answers = [extract_answer(c) for c in chunk.completions]
        self.unparseable += sum(a is None for a in answers)
        self.truncated += int(chunk.truncated.sum())
        self.responses += len(answers)
        self.abs_advantage += advantages.abs().tolist()
        for q in range(len(chunk.problems)):
            rows = slice(q * g, (q + 1) * g)
            if wrong_rule_answers is not None:
                self.pibar_rule_mistakes += [
                    p
                    for p, ok, a in zip(pibar[rows].tolist(), correct[rows].tolist(), answers[rows])
                    if not ok and a in wrong_rule_answers[q]
                ]
            if negative[q]:
                self.negative_group_std.append(pibar[rows].std().item())
                self.negative_group_range.append((pibar[rows].max() - pibar[rows].min()).item())
                self.abs_advantage_negative += advantages[rows].abs().tolist()


def measure_profile(
    testbed: str = "carry",
    model_dir: str | Path | None = None,
    problems_per_level: int = 200,
    samples: int = 16,
    seed: int = EVAL_SEED,
    levels: Sequence[int] | None = None,
    device: str = "cpu",
    sampler: str = "generate",
    progress: bool = False,
) -> Profile:
    """The profile of `model_dir` (default: the testbed's base policy) on `problems_per_level` held-out
    problems per level, G = `samples` at T = 1. Problems and samples are both seeded by `seed` (the
    held-out set's own seed, so the profile depends on no run); the pass@k part equals `lensrl eval`'s
    at that seed."""
    generator = task(testbed)
    levels = tuple(levels or generator.LEVELS)
    problems = generator.generate_problems(problems_per_level * len(levels), levels, seed=seed)
    model, tokenizer = load_policy(ModelConfig(name_or_path=str(model_dir or f"testbed:{testbed}"), device=device))
    rollout_config = RolloutConfig(group_size=samples, sampler=sampler)
    wrong_rule = getattr(generator, "wrong_rule_answers", None)
    profile = Profile(testbed, eval=None)  # type: ignore[arg-type]

    def observe(chunk: Rollout, correct: torch.Tensor) -> None:
        logprobs, entropy = behaviour_logprobs(model, chunk, rollout_config.temperature, micro_batch_size=64)
        scored = ScoredRollout.of(chunk, correct, logprobs, entropy)
        profile.observe(scored, [wrong_rule(p) for p in chunk.problems] if wrong_rule else None)

    settings = EvalSettings(rollout_config, samples, seed, progress=progress)
    profile.eval = evaluate(model, tokenizer, problems, verify_math, settings, on_chunk=observe)
    return profile


def carry_checks(result: EvalResult) -> dict[str, bool]:
    """The carry testbed's requirements on its base policy (T = 1, G = 16)."""
    top = f"pass@{result.samples}"
    level1, level5 = result.per_level["1"], result.per_level["5"]
    return {
        "level-1 pass@1 >= 0.60": level1["pass@1"] >= 0.60,
        "level-5 pass@1 <= 0.15": level5["pass@1"] <= 0.15,
        f"level-5 {top} >= 2 x pass@1": level5[top] >= 2 * level5["pass@1"],
        "all-wrong share on the L1-5 mix in [0.20, 0.60]": 0.20 <= result.all_wrong <= 0.60,
    }


def signs_checks(profile: Profile) -> dict[str, bool]:
    """The targets of a testbed with RL headroom, at step 0 on the training mix with G = 16, T = 1."""
    result, confidence = profile.eval, profile.summary()
    levels = list(result.all_wrong_per_level)
    hardest = levels[-2:]
    top = f"pass@{result.samples}"
    negative_hard = sum(result.all_wrong_per_level[lv] for lv in hardest)
    negative_all = sum(result.all_wrong_per_level.values())
    return {
        "responses without a final \\boxed{} <= 5%": confidence["unparseable"] <= 0.05,
        "overall pass@1 in [15%, 40%]": 0.15 <= result.overall["pass@1"] <= 0.40,
        f"overall {top} >= 75%": result.overall[top] >= 0.75,
        "negative groups in [20%, 45%] of the mix": 0.20 <= result.all_wrong <= 0.45,
        f"over half of the negative groups on levels {' and '.join(hardest)}": negative_all > 0
        and negative_hard / negative_all > 0.5,
    }


def checks(profile: Profile) -> dict[str, bool]:
    return signs_checks(profile) if profile.testbed == "signs" else carry_checks(profile.eval)


def format_confidence(profile: Profile) -> str:
    """The confidence part of the profile as a few plain-text lines."""
    c = profile.summary()

    def dist(d: dict[str, float]) -> str:
        return f"mean {d['mean']:.3f}, 10/50/90% {d['q10']:.3f} / {d['q50']:.3f} / {d['q90']:.3f} (n = {d['n']})"

    lines = [f"pibar, right answers: {dist(c['pibar_right'])}", f"pibar, wrong answers: {dist(c['pibar_wrong'])}"]
    if c["pibar_rule_mistakes"]["n"]:
        lines.append(
            f"pibar, wrong-rule answers ({100 * c['rule_mistake_share_of_wrong']:.0f}% of the wrong): "
            f"{dist(c['pibar_rule_mistakes'])}"
        )
    lines += [
        f"pibar std inside negative groups: {dist(c['negative_group_pibar_std'])}",
        f"pibar max - min inside negative groups: {dist(c['negative_group_pibar_range'])}",
        f"LENS (alpha 0.25): negative groups hold {100 * c['lens_negative_group_share']:.2f}% of sum |A|",
        f"no final \\boxed{{}}: {100 * c['unparseable']:.1f}%, cut at the token limit: {100 * c['truncated']:.1f}%",
    ]
    return "\n".join(lines)


def plot_confidence(profile: Profile, path: Path) -> None:
    """Histograms of pibar for right and wrong answers, and of its spread inside negative groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    low = min(profile.pibar_right + profile.pibar_wrong, default=0.0)
    bins = [low + (1 - low) * i / 50 for i in range(51)]
    axes[0].hist(profile.pibar_right, bins=bins, alpha=0.6, density=True, label="right")
    axes[0].hist(profile.pibar_wrong, bins=bins, alpha=0.6, density=True, label="wrong")
    if profile.pibar_rule_mistakes:
        axes[0].hist(
            profile.pibar_rule_mistakes, bins=bins, histtype="step", density=True, color="k", label="wrong rule"
        )
    axes[0].set(
        xlabel="pibar (geometric-mean token probability)",
        ylabel="density",
        title=f"{profile.testbed}: confidence at step 0",
    )
    axes[0].legend(fontsize=8)
    axes[1].hist(profile.negative_group_range, bins=30, color="C3", alpha=0.7)
    axes[1].set(
        xlabel="max - min pibar inside a negative group",
        ylabel="groups",
        title=f"negative groups ({len(profile.negative_group_range)})",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(
    profile: Profile, json_path: Path | None = None, png_path: Path | None = None, command: str = ""
) -> dict[str, bool]:
    """Print the table, the confidence lines and the checks of a measured profile; optionally write JSON
    (with `command`, the one that measured it) and PNG (`lensrl testbed-profile`). Returns the checks."""
    results = checks(profile)
    print(format_table({"base": profile.eval}))
    print(format_confidence(profile))
    for name, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if json_path is not None:
        record = {**profile.to_json(), "checks": results, "command": command}
        json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if png_path is not None:
        plot_confidence(profile, png_path)
    return results
