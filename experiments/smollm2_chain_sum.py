"""SmolLM2-135M-Instruct learns chain sums on CPU: LoRA warm-start, then GRPO and LENS from the same start.

    python -m experiments.smollm2_chain_sum [--seeds 0,1]

1. `lensrl sft` with configs/smollm2/sft_chain_sum.yaml (a LoRA adapter on the GGUF base model);
   with --probes, then the plan's learning-rate probes (GRPO, seed 0, one run per lr in PROBE_LRS)
   and its rule (results/smollm2/chain_sum/PLAN.md), recorded in results.json;
2. `lensrl compare` with configs/smollm2/rl_chain_sum.yaml: GRPO and LENS per seed, each continuing
   the warm-start's adapter (model.adapter), evaluated on the 200 held-out problems every 10 steps;
3. the report in results/smollm2/chain_sum/: results.json (command, machine, timings, the warm
   start's evaluation, every run's evaluations and per-phase step times), compare.md/.png,
   compare_curves.png, each run's final adapter with its config under adapters/<arm>_seed<S>/, and
   what each run logged (config, metrics.jsonl, eval.jsonl; the warm start's too) under logs/<run>/.

With --lr LR the comparison runs at LR instead of the config's (a post hoc study, results/smollm2/
chain_sum/lr5e-5/PLAN.md): its runs go to RUNS_DIR/rl_lr<LR>, the probe at LR is its GRPO
seed 0, and no adapters are kept (give it its own --results-dir).

Every stage goes on from what is already in --runs-dir (finished runs are reused, interrupted ones
resume). A committed adapter is evaluated with its run's config; --step makes the sampling that of
the run's own final evaluation, so the row is reproduced:

    lensrl eval results/smollm2/chain_sum/adapters/grpo_seed0 --step 20 \\
        --config results/smollm2/chain_sum/adapters/grpo_seed0/config.yaml
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from lensrl import (
    EvalResult,
    TrainConfig,
    apply_overrides,
    compare,
    finished_run,
    load_config,
    paired_difference,
    sft,
    train_or_resume,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "smollm2"
PROBE_LRS = ("5e-5", "2e-4")  # as written in the probes' folder names and commands
TARGET = 0.05  # the plan's primary endpoint is met when GRPO's held-out pass@1 rises by at least 5 points
PHASES = ("time/sample", "time/logprobs", "time/update", "time/step", "prompt_len/mean", "response_len/mean")


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a finished run's JSON-lines log (metrics.jsonl, eval.jsonl)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_profile(run_dir: Path) -> dict[str, float]:
    """Mean per-step seconds of each phase, and mean prompt / response tokens, over the run's steps, with
    the seconds of all its steps together (its evaluations not included)."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    return {
        **{key: statistics.fmean(m[key] for m in metrics) for key in PHASES},
        "training_seconds": sum(m["time/step"] for m in metrics),
    }


def gains(run_dirs: dict[str, Path], seeds: list[int]) -> dict:
    """Each arm's change from step 0 to its final evaluation, per seed and paired over seeds (the plan's
    primary endpoint is GRPO's overall pass@1 change), for pass@1 and pass@8, overall and per level."""
    evals = {name: [EvalResult.from_json(e) for e in read_jsonl(d / "eval.jsonl")] for name, d in run_dirs.items()}
    scopes = ["all", *sorted(evals[f"grpo_seed{seeds[0]}"][0].per_level)]

    def change(arm: str, scope: str, k: int) -> dict:
        before = [evals[f"{arm}_seed{s}"][0].pass_at(scope, k) for s in seeds]
        after = [evals[f"{arm}_seed{s}"][-1].pass_at(scope, k) for s in seeds]
        by_seed = {s: b - a for s, a, b in zip(seeds, before, after)}
        return {"by_seed": by_seed, **paired_difference(before, after).to_json()}

    out: dict = {
        arm: {scope: {f"pass@{k}": change(arm, scope, k) for k in (1, 8)} for scope in scopes}
        for arm in ("grpo", "lens")
    }
    out["target_met"] = out["grpo"]["all"]["pass@1"]["diff"] >= TARGET
    return out


def lr_probes(rl_config: TrainConfig, runs: Path) -> dict:
    """The plan's probes (GRPO, seed 0, one run per lr in PROBE_LRS), each trained or read from `runs`,
    and the lr its rule (`choose_lr`) picks."""
    probes = {}
    for lr in PROBE_LRS:
        config = apply_overrides(
            rl_config,
            ["algo.advantage=grpo", "run.seed=0", f"optim.lr={lr}", f"run.output_dir={runs / f'probe_lr{lr}'}"],
        )
        folder = finished_run(config) or train_or_resume(config).output_dir
        metrics = read_jsonl(folder / "metrics.jsonl")
        first, second = metrics[: len(metrics) // 2], metrics[len(metrics) // 2 :]
        probes[lr] = {
            "command": f"lensrl train --config configs/smollm2/rl_chain_sum.yaml --output-dir {config.run.output_dir} "
            f"model.adapter={config.model.adapter} algo.advantage=grpo run.seed=0 optim.lr={lr}",
            "reward": [m["reward"] for m in metrics],
            "reward_first_half": statistics.fmean(m["reward"] for m in first),
            "reward_second_half": statistics.fmean(m["reward"] for m in second),
            "max_unparseable_second_half": max(m["no_final_answer"] for m in second),
            "evals": read_jsonl(folder / "eval.jsonl"),
        }
    return {"probes": probes, "chosen_lr": choose_lr(probes)}


def choose_lr(probes: dict[str, dict]) -> str:
    """The plan's rule: the largest lr whose training reward rose from the first half of the steps to the
    second, with at most 10% unparseable samples at every step of the second half; else the smallest."""
    passing = [
        lr
        for lr, p in probes.items()
        if p["reward_second_half"] > p["reward_first_half"] and p["max_unparseable_second_half"] <= 0.10
    ]
    return max(passing, key=float, default=min(probes, key=float))


def keep_adapter(run_dir: Path, into: Path) -> Path:
    """Copy the run's final adapter and its config, without this machine's paths: the base model is named
    by its spec, and the run's own paths (the starting adapter and the run folder) are cleared, so that
    `lensrl eval` with it logs to no folder unless given `--output-dir`."""
    final = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(final / "adapter_model.safetensors", into / "adapter_model.safetensors")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    adapter = json.loads((final / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = config["model"]["name_or_path"]
    (into / "adapter_config.json").write_text(json.dumps(adapter, indent=2))
    config["model"]["adapter"], config["run"]["output_dir"] = None, None
    (into / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return into


def keep_logs(run_dir: Path, into: Path) -> None:
    """Copy what a run logged (its config, per-step metrics and evaluations), for the diagnostics."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl", "eval.jsonl"):
        shutil.copy(run_dir / name, into / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs-dir", default="runs/smollm2_chain_sum")
    parser.add_argument("--results-dir", default="results/smollm2/chain_sum")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--probes", action="store_true", help="also run (or read) the plan's lr probes")
    parser.add_argument(
        "--lr",
        help="post hoc: compare at this lr instead of the config's, in RUNS_DIR/rl_lr<LR>, "
        "reusing the probe at this lr as GRPO seed 0 (no adapters are kept)",
    )
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, results = Path(args.runs_dir), Path(args.results_dir)
    progress = f"run.progress={not args.no_progress}"

    t0 = time.perf_counter()
    sft_config = load_config(CONFIGS / "sft_chain_sum.yaml", [progress, f"run.output_dir={runs / 'sft'}"])
    summary = runs / "sft" / "summary.json"
    if not summary.exists():
        sft(sft_config)
    warm = json.loads(summary.read_text())
    t1 = time.perf_counter()
    rl_dir = runs / ("rl" if args.lr is None else f"rl_lr{args.lr}")
    rl_config = load_config(
        CONFIGS / "rl_chain_sum.yaml",
        [
            progress,
            f"model.adapter={warm['model']}",
            f"run.output_dir={rl_dir}",
            *([f"optim.lr={args.lr}"] if args.lr else []),
        ],
    )
    probes = lr_probes(rl_config, runs) if args.probes else None
    lr = args.lr or (probes or {}).get("chosen_lr")
    if lr and float(lr) != rl_config.optim.lr:
        print(f"note: the probes' rule picks lr {lr}; the config has {rl_config.optim.lr:g}")
    elif lr and (runs / f"probe_lr{lr}" / "summary.json").exists() and not (rl_dir / "grpo_seed0").exists():
        # the probe at the comparison's lr has GRPO seed 0's config: it is that run (finished, so no
        # process holds its folder)
        shutil.copytree(runs / f"probe_lr{lr}", rl_dir / "grpo_seed0")
    report = compare(rl_config, seeds)
    t2 = time.perf_counter()

    results.mkdir(parents=True, exist_ok=True)
    for name in ("compare.md", "compare.png", "compare_curves.png"):
        shutil.copy(report.output_dir / name, results / name)
    run_dirs = {
        f"{arm}_seed{seed}": report.output_dir / f"{arm}_seed{seed}" for arm in ("grpo", "lens") for seed in seeds
    }
    for name, run_dir in {"sft": runs / "sft", **run_dirs}.items():
        keep_logs(run_dir, results / "logs" / name)
    if args.lr is None:  # the post hoc study keeps no adapters
        for name, run_dir in run_dirs.items():
            keep_adapter(run_dir, results / "adapters" / name)
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({threads} threads)"
    record = {
        "command": "python -m experiments.smollm2_chain_sum " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "device": device,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "base_model": {"name_or_path": sft_config.model.name_or_path, "gguf_file": sft_config.model.gguf_file},
        # wall time of this invocation's stages: what it reused from --runs-dir took no time here
        "seconds_this_invocation": {"sft": round(t1 - t0, 1), "rl": round(t2 - t1, 1)},
        "sft": {
            "config": sft_config.model_dump(),
            "before": warm["first_eval"],
            "after": warm["last_eval"],
            "sft_seconds_per_step": statistics.fmean(
                m["time/step"] for m in read_jsonl(runs / "sft" / "metrics.jsonl")
            ),
        },
        "rl": {"config": rl_config.model_dump(), "post_hoc_lr": args.lr, **report.aggregate},
        "gains_from_step_0": gains(run_dirs, seeds),
        "lr_probes": probes,
        "runs": {
            name: {"evals": read_jsonl(d / "eval.jsonl"), "step_profile": step_profile(d)}
            for name, d in run_dirs.items()
        },
    }
    (results / "results.json").write_text(json.dumps(record, indent=2))
    print(report.table)
    for arm in ("grpo", "lens"):
        g = record["gains_from_step_0"][arm]["all"]["pass@1"]
        print(
            f"{arm}: held-out pass@1 from step 0 to the end {100 * g['diff']:+.1f} points "
            f"(by seed {', '.join(f'{100 * v:+.1f}' for v in g['by_seed'].values())})"
        )
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
