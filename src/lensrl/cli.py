"""`lensrl` command line: one subcommand per job, each dispatched to its function by argparse
(`set_defaults(func=...)`). Heavy libraries are imported inside those functions, after the arguments
parse, so --help is instant."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

EPILOG = """Overrides are key=value pairs over the typed defaults, e.g. algo.alpha=0.5 run.steps=100
model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct data.train=train.jsonl. Sections: model, prompt,
data, rollout, algo, optim, run, sft. Every field with its type, default and meaning: the Configuration
page of the documentation (docs/configuration.md); a run folder's config.yaml holds every value it used."""


# ------------------------------------------------------------------------------------ the commands


def _train(args: argparse.Namespace) -> int:
    from lensrl.training.trainer import train

    return _finished(train(_config(args), resume=args.resume), "train")


def _sft(args: argparse.Namespace) -> int:
    from lensrl.training.sft import sft

    return _finished(sft(_config(args), resume=args.resume), "sft")


def _finished(result, command: str) -> int:  # noqa: ANN001 (RunResult: imported only here)
    """Print a run's before / after table and folder, or, stopped by a signal, how to go on; the exit status."""
    from lensrl.evaluation.evaluate import format_table

    if result.stopped_by:
        print(
            f"stopped by {result.stopped_by} after saving a checkpoint; go on with: "
            f"lensrl {command} --resume --output-dir {result.output_dir}",
            file=sys.stderr,
        )
        return 128 + getattr(signal.Signals, result.stopped_by, signal.SIGTERM).value
    print(format_table({"before": result.first_eval, "after": result.last_eval}))
    print(f"run folder: {result.output_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lensrl.config import load_config, save_config
    from lensrl.data.sources import load_eval_problems
    from lensrl.evaluation.evaluate import EvalSettings, format_table
    from lensrl.policy.prepare import prepare
    from lensrl.runs.lifecycle import RunFolder, evaluate_and_log, owned, resolve_model

    # the log goes where the command line says (--output-dir, or a run.output_dir= override), never to a
    # config file's run.output_dir: a run's own config.yaml names that run's folder
    overrides = ["run.output_dir=null", *args.overrides]
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    if args.checkpoint:  # a run folder: its newest checkpoint, with its config.yaml unless --config is given
        config, weights = resolve_model(args.checkpoint, args.config, overrides)
    else:
        config, weights = load_config(args.config, overrides), None
    # the evaluation sources only (data errors before the model loads); the training sources are read
    # only when an `unseen` evaluation source must leave their problems out
    problems = load_eval_problems(config.data, config.run.seed)
    p = prepare(config, eval_problems=problems, weights=weights, check_lengths=False)
    settings = EvalSettings.of_run(config, args.step)
    if not config.run.output_dir:
        result = evaluate_and_log(p.model, p.tokenizer, p.eval_set, settings, config.model)
    else:
        with owned(config.run.output_dir) as out:
            save_config(config, out / "config.yaml")
            result = evaluate_and_log(p.model, p.tokenizer, p.eval_set, settings, config.model, RunFolder(out))
    print(format_table({"eval": result}))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lensrl.research.compare import compare

    report = compare(_config(args), args.seeds)
    print(report.table)
    print(f"results: {report.output_dir}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from lensrl.research.arms import find_study, load_studies
    from lensrl.research.study import report_from_records, run_study

    studies = load_studies(args.studies)
    study = find_study(args.name, studies, args.studies)
    overrides, others = list(args.overrides), list(studies.values())
    if args.report_only:
        result = report_from_records(
            study, args.seeds, args.config, overrides, args.results_dir, studies=others, x=args.x
        )
    else:
        result = run_study(
            study, args.seeds, args.config, overrides, args.runs_dir, args.results_dir, args.jobs, others, args.x
        )
    print(result.table)
    print(f"results: {result.output_dir}")
    return 0


def _samples(args: argparse.Namespace) -> int:
    from lensrl.runs.samples import print_samples

    print_samples(Path(args.run), step=args.step, negative_only=args.negative, limit=args.limit)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from lensrl.research.plots import plot_runs

    labels = args.labels.split(",") if args.labels else None
    output = Path(args.output) if args.output else None
    print(f"plot: {plot_runs([Path(r) for r in args.runs], output, labels, args.x)}")
    return 0


def _grad_diff(args: argparse.Namespace) -> int:
    from lensrl.training.diagnostics import format_gradient_table, measure_gradients

    # MODEL and key=value positionals arrive together: an item with "=" that is no path is an override
    models = [m for m in args.models if "=" not in m or Path(m).exists()]
    overrides = [m for m in args.models if m not in models] + list(args.overrides)
    if not models:
        raise ValueError('grad-diff needs at least one MODEL (a model folder, hub id, "testbed" or run folder)')
    report = {
        "command": shlex.join(["lensrl", *args.argv]),
        **measure_gradients(models, args.rollouts, args.config, overrides),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(format_gradient_table(report))
    print(f"results: {args.output}")
    return 0


def _testbed_build(args: argparse.Namespace) -> int:
    from lensrl.training.warmstart import build_base_policy, committed_config

    given = {name: getattr(args, name) for name in _WARMSTART_FLAGS if getattr(args, name) is not None}
    config = committed_config(args.testbed).model_copy(update=given)
    config = type(config).model_validate(config.model_dump())  # validated as a whole, like a fresh config
    path = build_base_policy(args.output_dir, config, progress=not args.no_progress)
    print(f"base policy written to {path}")
    return 0


def _testbed_profile(args: argparse.Namespace) -> int:
    from lensrl.evaluation.profile import measure_profile, report
    from lensrl.seeds import EVAL_SEED

    profile = measure_profile(
        args.testbed,
        args.model_dir,
        args.problems_per_level,
        args.samples,
        EVAL_SEED if args.seed is None else args.seed,
        device=args.device,
        sampler=args.sampler,
        progress=True,
    )
    json_path, png_path = (Path(p) if p else None for p in (args.json, args.png))
    results = report(profile, json_path, png_path, shlex.join(["lensrl", *args.argv]))
    return 0 if all(results.values()) else 1


def _config(args: argparse.Namespace):  # noqa: ANN202 (TrainConfig: imported only here)
    """The resolved config of a run command: --config (or, resuming, the run folder's config.yaml),
    then the overrides, --output-dir last."""
    from lensrl.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    config_path = args.config
    saved = Path(args.output_dir or ".") / "config.yaml"
    if getattr(args, "resume", False) and config_path is None and args.output_dir and saved.exists():
        config_path = str(saved)
    return load_config(config_path, overrides)


# ------------------------------------------------------------------------------------ the parser


def _common(p: argparse.ArgumentParser, output_help: str = "run folder (default: a new folder under runs/)") -> None:
    p.add_argument("--config", help="YAML file of deltas over the defaults")
    p.add_argument("--output-dir", help=output_help)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# `lensrl testbed-build`: one flag per field of `lensrl.training.warmstart.WarmStartConfig` but `testbed`
# (type, help), written out so that --help needs no import of the trainer
_WARMSTART_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "optimizer steps (a fixed count, never a time budget)"),
    "batch_size": (int, "sequences per step; levels cycle evenly inside every batch"),
    "micro_batch_size": (int, "sequences per forward pass"),
    "lr": (float, "peak AdamW learning rate"),
    "warmup_steps": (int, "steps of linear warm-up before the cosine decay to zero"),
    "weight_decay": (float, "AdamW decoupled weight decay"),
    "max_grad_norm": (float, "gradient-norm clipping threshold"),
    "seed": (int, "seed of the weight init and of the training problems"),
    "levels": (int, "difficulty levels of the training problems, cycled evenly"),
    "hidden_size": (int, "width of the residual stream"),
    "intermediate_size": (int, "width of the SwiGLU MLP"),
    "num_layers": (int, "transformer blocks"),
    "num_heads": (int, "attention heads"),
    "tie_word_embeddings": (bool, "share the input embedding and the output projection"),
    "max_position_embeddings": (int, "longest sequence the model is configured for"),
    "num_threads": (int, "CPU threads while training (fixed, so the weights do not depend on the machine)"),
}


def _version() -> str:
    """The installed distribution's version (importlib.metadata: no import of the package's modules)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lensrl")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lensrl",
        description="RL with verifiable rewards: GRPO and LENS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lensrl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train", help="train with LENS (default) or GRPO; prints pass@k by level before and after", epilog=EPILOG
    )
    _common(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on from the newest complete checkpoint in --output-dir (whose config.yaml is the "
        "config unless --config is given); overrides may only extend run.steps or bookkeeping",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: pass@{1,2,4,8,16} overall and per level", epilog=EPILOG)
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="model folder, hub id, a run's checkpoint, or a run folder (its newest complete checkpoint, and "
        "its config.yaml unless --config is given) (default: model.name_or_path)",
    )
    p.add_argument(
        "--step",
        type=int,
        default=0,
        help="sample with the seed of a run's evaluation at this step (with run.seed), so that a run's "
        "checkpoint reproduces that run's row of eval.jsonl (default: 0)",
    )
    _common(
        p,
        "folder to log the evaluation to (config.yaml, eval.jsonl; default: a run.output_dir=... override, "
        "else none; never a config file's run.output_dir)",
    )
    p.set_defaults(func=_eval)

    p = sub.add_parser("compare", help="GRPO vs LENS with the same seeds: table and PNG plot", epilog=EPILOG)
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds, e.g. 0,1,2 (default: 0)")
    _common(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "study",
        help="a resumable multi-seed study of a studies file: JSON, table and plots in its results folder",
        epilog=EPILOG,
    )
    p.add_argument("name", help="which study: a name in the studies file's STUDIES")
    p.add_argument(
        "--studies",
        default="experiments/studies.py",
        help="Python file that defines STUDIES, a dict of lensrl.Study by name (default: experiments/studies.py "
        "in the current directory)",
    )
    p.add_argument("--seeds", type=_int_list, help="comma-separated seeds (default: the study's)")
    p.add_argument("--results-dir", help="default: the study's results folder (results/NAME unless it names one)")
    p.add_argument("--runs-dir", help="default: runs/study/NAME")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at a time, each in its own process with cpu_count / JOBS threads (default: 1)",
    )
    p.add_argument(
        "--config",
        help="base config of every arm, in place of the study's own (default: the study's, "
        "e.g. testbed:signs, else the typed defaults)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the report from the run records in RESULTS_DIR/runs/",
    )
    p.add_argument(
        "--x",
        choices=("samples", "tokens", "step"),
        default="samples",
        help="x axis of study_curves.png: the samples generated (default), the response tokens generated "
        "(samples where a run's record has no token counts) or the step",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides under every arm")
    p.set_defaults(func=_study)

    p = sub.add_parser(
        "sft", help="supervised warm-start on worked solutions (teaches the answer format)", epilog=EPILOG
    )
    _common(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on from the newest complete checkpoint in --output-dir (whose config.yaml is the "
        "config unless --config is given); overrides may only change bookkeeping (sft.steps sets the "
        "learning-rate schedule and stays)",
    )
    p.set_defaults(func=_sft)

    p = sub.add_parser("samples", help="print a run's sample log (samples.jsonl): most confident mistakes first")
    p.add_argument("run", help="run folder")
    p.add_argument("--step", type=int, help="only this step's entry (default: the latest)")
    p.add_argument("--negative", action="store_true", help="only negative (all-wrong) groups")
    p.add_argument("--limit", type=int, default=None, help="at most this many groups")
    p.set_defaults(func=_samples)

    p = sub.add_parser("plot", help="one PNG of the curves of one or more runs, overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--output", help="PNG path (default: RUN/curves.png for one run, curves.png for several)")
    p.add_argument("--labels", help="comma-separated labels, one per run (default: the folder names)")
    p.add_argument(
        "--x",
        choices=("step", "samples", "tokens"),
        default="step",
        help="x axis: the step (default), or the samples or response tokens generated since step 1",
    )
    p.set_defaults(func=_plot)

    p = sub.add_parser(
        "grad-diff",
        help="GRPO vs LENS without seeds: the first minibatch's gradient under both, "
        "on fresh rollouts of models, run folders or checkpoints (cosine, rel_diff, negative_share)",
        epilog=EPILOG,
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help='model folder, hub id, "testbed", or run folder (its newest checkpoint, and its config.yaml '
        "unless --config is given)",
    )
    p.add_argument("--rollouts", type=int, default=3, help="rollouts per model (default: 3)")
    p.add_argument("--output", default="grad_diff.json", help="JSON path (default: grad_diff.json)")
    p.add_argument("--config", help="YAML file of deltas over the defaults (or over a run folder's config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_grad_diff)

    p = sub.add_parser(
        "testbed-build",
        help="rebuild a testbed's base policy by supervised warm-start (defaults: its committed warm-start)",
    )
    p.add_argument("--output-dir", required=True, help="folder to write the Hugging Face model into")
    p.add_argument("--testbed", default="carry", help="which testbed: carry (default) or signs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for name, (kind, text) in _WARMSTART_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, type=kind, nargs="+" if name == "levels" else None, default=None, help=text)
    p.set_defaults(func=_testbed_build)

    p = sub.add_parser(
        "testbed-profile",
        help="what RL starts from on a testbed: pass@k by level at step 0, the "
        "confidence of right and wrong answers, LENS's negative-group share, and the testbed's checks",
    )
    p.add_argument("--testbed", default="carry", help="carry (default) or signs")
    p.add_argument("--model-dir", help="policy folder (default: the testbed's base policy)")
    p.add_argument("--problems-per-level", type=int, default=200, help="held-out problems per level (default: 200)")
    p.add_argument("--samples", type=int, default=16, help="samples per problem, G (default: 16)")
    p.add_argument("--seed", type=int, help="seed of the problems and samples (default: the evaluation seed)")
    p.add_argument("--sampler", default="generate", choices=("generate", "compact"), help="default: generate")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the profile and the checks to this JSON file")
    p.add_argument("--png", help="also plot the confidence histograms into this PNG")
    p.set_defaults(func=_testbed_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may follow options (argparse cannot place positionals after an optional by itself)
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "overrides"):
        args.overrides += extra
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "checkpoint", None) and "=" in args.checkpoint and not Path(args.checkpoint).exists():
        args.overrides.insert(0, args.checkpoint)  # `lensrl eval key=value ...`: an override, not a folder
        args.checkpoint = None
    try:
        return args.func(args)
    except (
        ValueError
    ) as e:  # bad input (ConfigError included): a message, not a traceback (LENSRL_TRACEBACK=1 shows it)
        if os.environ.get("LENSRL_TRACEBACK"):
            raise
        print(f"lensrl: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
