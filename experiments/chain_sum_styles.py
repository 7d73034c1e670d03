"""What RL changed in SmolLM2's chain-sum answers: worked or direct, and how often each is right.

    python -m experiments.chain_sum_styles NAME=ADAPTER@STEP [...] [--config YAML] [--out FILE]

Each adapter is evaluated on its config's held-out set exactly as `lensrl eval ADAPTER --step STEP`
does (the config is ADAPTER/config.yaml when there is one, else --config), so its pass@k reproduce
the run's eval.jsonl row at that step; every sample is also sorted by style (a direct answer starts
with "The final answer", a worked one with its first operation) and counted per level. Writes the
rows and the style table as JSON (default results/smollm2/chain_sum/styles.json), adding to what the
file already holds: adapters it has are not evaluated again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

import torch

from lensrl import (
    EvalResult,
    EvalSettings,
    Rollout,
    evaluate_and_log,
    format_prompt,
    load_config,
    load_eval_problems,
    load_policy,
)

DIRECT = "The final answer"


def style_counts(rollout: Rollout, correct: torch.Tensor, counts: Counter) -> None:
    """Add each sample of the chunk (with its verdicts `correct`) to counts[(level, style, correct)]."""
    for i, completion in enumerate(rollout.completions):
        level = rollout.problems[i // rollout.group_size].level
        style = "direct" if completion.lstrip().startswith(DIRECT) else "worked"
        counts[(level, style, bool(correct[i]))] += 1


def style_table(counts: Counter) -> dict:
    """Per level and overall: share of direct answers and the accuracy of each style."""
    table = {}
    for level in [*sorted({lv for lv, _, _ in counts}), "all"]:

        def n(style: str, correct: bool | None = None, level=level) -> int:
            return sum(
                c
                for (lv, s, ok), c in counts.items()
                if (level == "all" or lv == level) and s == style and (correct is None or ok == correct)
            )

        total = n("direct") + n("worked")
        table[str(level)] = {
            "samples": total,
            "direct_share": n("direct") / total,
            **{f"{s}_accuracy": (n(s, True) / n(s) if n(s) else None) for s in ("direct", "worked")},
        }
    return table


def analyse(adapter: Path, step: int, config_path: Path) -> dict:
    config = load_config(config_path, ["model.adapter=null", "run.output_dir=null", "run.progress=false"])
    problems = load_eval_problems(config.data, config.run.seed)
    model, tokenizer = load_policy(config.model, str(adapter))
    problems = [dataclasses.replace(p, prompt=format_prompt(tokenizer, p.prompt, config.prompt)) for p in problems]
    counts: Counter = Counter()
    settings = EvalSettings.of_run(config, step)  # the run's own evaluation at that step
    result = evaluate_and_log(
        model,
        tokenizer,
        problems,
        settings,
        config.model,
        on_chunk=lambda chunk, correct: style_counts(chunk, correct, counts),
    )
    return {
        "adapter": str(adapter),
        "step": step,
        "seed": config.run.seed,
        "eval": result.to_json(),
        "styles": style_table(counts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="+", metavar="NAME=ADAPTER@STEP")
    parser.add_argument("--config", type=Path, help="config for adapters without a config.yaml")
    parser.add_argument("--out", type=Path, default=Path("results/smollm2/chain_sum/styles.json"))
    args = parser.parse_args(argv)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.adapters:
        name, rest = spec.split("=", 1)
        adapter, step = rest.rsplit("@", 1)
        if name not in report:  # each adapter is written as soon as it is done, so a rerun goes on
            config = Path(adapter) / "config.yaml" if (Path(adapter) / "config.yaml").exists() else args.config
            report[name] = analyse(Path(adapter), int(step), config)
            args.out.write_text(json.dumps(report, indent=2))
        s = report[name]["styles"]["all"]
        pass1 = EvalResult.from_json(report[name]["eval"]).pass_at("all", 1)
        print(
            f"{name}: pass@1 {100 * pass1:.2f}, direct answers {100 * s['direct_share']:.1f}%, "
            f"right: direct {s['direct_accuracy']}, worked {s['worked_accuracy']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
