"""How differently GRPO and another estimator would move the policy on the same rollout: a comparison
that needs no seeds.

Training curves of two estimators differ by the seeds' noise as well as by the estimators; this
takes one rollout and one set of weights and changes nothing but the advantages. The other
estimator is the run's own (`algo.advantage`), or LENS in a GRPO run (`compared_estimator`). The
gradient of the update's first minibatch (the first part `update.minibatch_groups` makes) is taken
three times:

    g_grpo   with GRPO's advantages (`algo.scale`, `algo.eps`)
    g_other  with the other estimator's advantages (LENS: `algo.alpha`, `scope`, `d_estimator`, ...)
    g_neg    with the other estimator's advantages kept on the rows of negative (all-wrong) groups
             and 0 elsewhere

(each with the run's `algo` settings where the estimator reads them, else its defaults) and, over
all trainable parameters as one vector:

    diag/cosine           cos(g_grpo, g_other): 1 when the other estimator only rescales GRPO's step
    diag/rel_diff         ||g_other - g_grpo|| / ||g_grpo||: how far its step is from GRPO's
    diag/negative_share   ||g_neg|| / ||g_other||: the negative groups' part of its step
    diag/grad_norm_grpo   ||g_grpo||
    diag/grad_norm_other  ||g_other||: the other estimator's, whichever it is (LENS, NSR, NGRPO, ...)
    diag/negative_groups  the minibatch's share of negative groups

A ratio whose denominator is 0 is NaN (a minibatch of negative groups only: GRPO's gradient is 0).

The loss is `update_policy`'s (`update.micro_batch_loss`: the clipped surrogate, `algo.loss_agg`,
micro-batches normalised by the whole minibatch), taken in train mode as the update takes it, with
gradients before clipping (like the trainer's `grad_norm`). The KL term is left out: it does not
depend on the advantages, so it would add the same vector to both gradients and blur what differs.

Nothing the run computes changes: the minibatch is drawn from a copy of the trainer's generator,
gradients come from `torch.autograd.grad` (no `.grad` is written, no optimizer step), the model is
put back in its former mode, and every pass starts from the same global random state, which is
restored after it (dropout, if any, draws the same masks in all three passes and nothing later sees
a draw). So `run.diagnostic_every` is bookkeeping. `measure_gradients` is `lensrl grad-diff`: the
comparison on fresh rollouts of saved models, run folders and checkpoints.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lensrl.config import AlgoConfig, GRPOAlgo, TrainConfig, switch_estimator
from lensrl.core.advantages import GROUP_KINDS, group_kinds
from lensrl.data.sources import load_train_problems
from lensrl.policy.forward import by_length
from lensrl.policy.prepare import prepare
from lensrl.records import ScoredRollout
from lensrl.rollout.collect import collect_rollout
from lensrl.rollout.verifier import VerifierLike
from lensrl.rollout.verify import MATH_VERIFIER, as_verifier
from lensrl.runs.lifecycle import resolve_model
from lensrl.seeds import rollout_seed
from lensrl.training.update import all_finite, group_rows, micro_batch_loss, minibatch_groups

TABLE_COLUMNS = {
    "cosine": "diag/cosine",
    "rel_diff": "diag/rel_diff",
    "negative_share": "diag/negative_share",
    "negative_groups": "diag/negative_groups",
}

# ------------------------------------------------------------------------------------ the comparison


def first_minibatch(rollout: ScoredRollout, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Group indices of the update's first minibatch, drawn from a copy of `generator` (left as it was)."""
    return minibatch_groups(rollout, config, torch.Generator().set_state(generator.get_state()))[0]


def compared_estimator(algo: AlgoConfig) -> AlgoConfig:
    """The estimator the diagnostic compares with GRPO: the run's own, or LENS (with the run's settings
    where LENS reads them, `config.switch_estimator`) in a GRPO run."""
    return switch_estimator(algo, "lens") if isinstance(algo, GRPOAlgo) else algo


def trainable_parameters(model: PreTrainedModel) -> list[torch.nn.Parameter]:
    """The parameters the trainer's optimizer updates."""
    return [p for p in model.parameters() if p.requires_grad]


def minibatch_gradient(
    model: PreTrainedModel, rollout: ScoredRollout, advantages: torch.Tensor, rows: torch.Tensor, config: TrainConfig
) -> list[torch.Tensor]:
    """The gradient of the minibatch loss over `rows` (no KL term) for each trainable parameter.

    Micro-batched as `update_policy` does it; the gradients are returned, never written to `.grad`.
    """
    config = config.model_copy(update={"algo": config.algo.model_copy(update={"kl_coef": 0.0})})
    params = trainable_parameters(model)
    n_seqs, n_tokens = len(rows), int(rollout.response_mask[rows].sum().item())
    total = [torch.zeros_like(p) for p in params]
    for micro in by_length(rows, rollout.lengths, config.optim.micro_batch_size):
        loss, _ = micro_batch_loss(model, None, rollout, advantages, micro, config, n_seqs, n_tokens)
        for acc, grad in zip(total, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
            if grad is not None:
                acc += grad
    return total


def _norm(tensors: Iterable[torch.Tensor]) -> float:
    return math.sqrt(math.fsum(float(t.double().square().sum()) for t in tensors))


def _inner(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return math.fsum(float((x.double() * y.double()).sum()) for x, y in zip(a, b, strict=True))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def gradient_stats(
    g_grpo: Sequence[torch.Tensor], g_other: Sequence[torch.Tensor], negative_norm: float
) -> dict[str, float]:
    """cosine, rel_diff, negative_share and both norms of the two gradients (given per parameter)."""
    norm_grpo, norm_other = _norm(g_grpo), _norm(g_other)
    return {
        "diag/cosine": _ratio(_inner(g_grpo, g_other), norm_grpo * norm_other),
        "diag/rel_diff": _ratio(
            _norm(y.double() - x.double() for x, y in zip(g_grpo, g_other, strict=True)), norm_grpo
        ),
        "diag/negative_share": _ratio(negative_norm, norm_other),
        "diag/grad_norm_grpo": norm_grpo,
        "diag/grad_norm_other": norm_other,
    }


@contextlib.contextmanager
def _training(model: PreTrainedModel) -> Iterator[None]:
    """The model in train mode (as in the update) inside the block, in its former mode after it."""
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)


def _same_random_state(device: torch.device) -> contextlib.AbstractContextManager:
    """Inside: torch's global random state (CPU, and the model's GPU); as it was on entry after it."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def gradient_comparison(
    model: PreTrainedModel, rollout: ScoredRollout, config: TrainConfig, generator: torch.Generator
) -> dict[str, float]:
    """The diag/* metrics (module docstring) of a scored rollout with behaviour log-probs, taken on
    the update's first minibatch at the current weights; {} when that minibatch is empty (filtering
    left no group) or the log-probs or either estimator's advantages are not finite. Single process."""
    groups = first_minibatch(rollout, config, generator)
    if not len(groups) or not all_finite(rollout.logprobs_old):
        return {}
    grpo = switch_estimator(config.algo, "grpo").advantages(rollout)
    other = compared_estimator(config.algo).advantages(rollout)
    if not all_finite(grpo, other):
        return {}
    g = rollout.group_size
    negative = group_kinds(rollout.correct, g) == GROUP_KINDS.index("negative")
    negative_rows = negative.repeat_interleave(torch.tensor(rollout.group_sizes, device=negative.device))
    other_negative = torch.where(negative_rows, other, torch.zeros_like(other))
    rows = group_rows(groups, g, rollout.input_ids.device)

    def gradient(advantages: torch.Tensor) -> list[torch.Tensor]:
        with _same_random_state(model.device):
            return minibatch_gradient(model, rollout, advantages, rows, config)

    with _training(model):
        negative_norm = _norm(gradient(other_negative))  # first: at most two gradients are held at once
        stats = gradient_stats(gradient(grpo), gradient(other), negative_norm)
    return {**stats, "diag/negative_groups": negative[groups.to(negative.device)].double().mean().item()}


# ------------------------------------------------------------------------------------ lensrl grad-diff


def measure_model(
    config: TrainConfig, weights: str, rollouts: int, name: str = "", verifier: VerifierLike = MATH_VERIFIER
) -> list[dict[str, float]]:
    """`gradient_comparison` on `rollouts` fresh rollouts of a model; rollout r is step r + 1 of a run
    of `config` from these weights without updates: its problems, sampling seed and minibatch shuffle,
    and the trainer's rollout (`collect_rollout`), scored with `verifier` (as `train` takes it: a plain
    function is wrapped by `verify.as_verifier`)."""
    verifier = as_verifier(verifier)
    train_problems = load_train_problems(config.data, config.run.seed)  # data errors before the model loads
    p = prepare(config, train_problems, weights=weights)
    generator = torch.Generator().manual_seed(config.run.seed)
    results = []
    for r in tqdm(range(rollouts), desc=name or weights, disable=not config.run.progress):
        problems = [p.train_set[i] for i in p.order.take(config.rollout.questions_per_step)]
        rollout = collect_rollout(
            p.model, p.tokenizer, problems, config, rollout_seed(config.run.seed, r + 1), verifier
        ).rollout
        results.append(gradient_comparison(p.model, rollout, config, generator))
        minibatch_groups(rollout, config, generator)  # the shuffle moves on as that step's update would
    return results


def mean_metrics(records: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the records where it is defined (not NaN, present); NaN where it never is."""
    keys = dict.fromkeys(k for record in records for k in record)
    means = {}
    for key in keys:
        values = [r[key] for r in records if key in r and not math.isnan(r[key])]
        means[key] = math.fsum(values) / len(values) if values else math.nan
    return means


def measure_gradients(
    models: Sequence[str],
    rollouts: int = 3,
    config_path: str | None = None,
    overrides: Sequence[str] = (),
    verifier: VerifierLike = MATH_VERIFIER,
) -> dict[str, Any]:
    """`lensrl grad-diff`: {"models": {MODEL: {"rollouts": [diag metrics per rollout], "mean": {...}}}};
    the rollouts are scored with `verifier` (that of the runs being compared, for their steps to be
    reproduced)."""
    if rollouts < 1:
        raise ValueError(f"--rollouts must be >= 1, got {rollouts}")
    report = {}
    for name in models:
        config, weights = resolve_model(name, config_path, overrides)
        records = measure_model(config, weights, rollouts, name, verifier)
        report[name] = {"rollouts": records, "mean": mean_metrics(records)}
    return {"models": report}


def format_gradient_table(report: dict[str, Any]) -> str:
    """One line per model and rollout, and each model's mean."""
    width = max([len("model"), *(len(name) for name in report["models"])])
    lines = [f"{'model':<{width}}  {'rollout':>7}" + "".join(f"  {c:>15}" for c in TABLE_COLUMNS)]
    for name, result in report["models"].items():
        rows = [*((str(r), rec) for r, rec in enumerate(result["rollouts"])), ("mean", result["mean"])]
        for label, record in rows:
            cells = "".join(f"  {record.get(key, math.nan):>15.6f}" for key in TABLE_COLUMNS.values())
            lines.append(f"{name:<{width}}  {label:>7}{cells}")
    return "\n".join(lines)
