"""Collecting a rollout: steps 1-3 of a training step, the one definition the trainer and the diagnostic share.

    sample    each rank samples its contiguous share of the step's problems (whole groups), chunk
              seeds numbered as if one process sampled them all (`seeds.first_chunk`)
    score     the verifier's 0/1 verdicts (`score`), and what it counted meanwhile
    logprobs  the behaviour log-probs log pi_old and entropies at the sampling temperature (no grad):
              a forward pass, or the sampler's own (`rollout.behaviour_logprobs`)
    gather    every rank's share, merged in rank order, on every rank (`gather.gather_rollout`)

In one process the share is every problem and the gather does nothing.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import TrainConfig
from lensrl.policy.distributed import World
from lensrl.policy.forward import behaviour_logprobs
from lensrl.policy.models import autocast
from lensrl.records import Compute, Problem, Rollout, ScoredRollout
from lensrl.rollout.gather import gather_rollout
from lensrl.rollout.sample import sample
from lensrl.rollout.verifier import VerifierLike, VerifyCounts
from lensrl.rollout.verify import as_verifier
from lensrl.seeds import first_chunk, problems_per_chunk
from lensrl.timer import Timer


@dataclass(frozen=True)
class Collected:
    """The step's whole scored rollout, what the verifier counted while scoring this rank's share, and
    what generating the whole rollout cost (every rank's share: counted after the gather)."""

    rollout: ScoredRollout
    verified: VerifyCounts
    compute: Compute  # prompts, samples and response tokens generated (samples_updated 0: the update's)


def collect_rollout(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],  # Q, the step's; this rank samples its share
    config: TrainConfig,
    seed: int,
    verifier: VerifierLike,
    world: World = World(),
    synced_gpus: bool = False,
    timer: Timer | None = None,
) -> Collected:
    """Sample `config.rollout.group_size` responses per problem with sampling seed `seed`, score them
    with `verifier`, take the behaviour log-probs (micro-batches of `optim.micro_batch_size`, autocast
    as `config.model` says) and gather the ranks' shares. `synced_gpus`: the model is sharded (FSDP).
    `timer` gets the seconds of "sample", "reward" and "logprobs" (the log-probs and the gather)."""
    ro, amp, verifier, timer = (
        config.rollout,
        autocast(config.model, model.device),
        as_verifier(verifier),
        timer or Timer(),
    )
    mine = problems[world.share(len(problems))]
    with timer("sample"), amp():
        rollout = sample(
            model,
            tokenizer,
            mine,
            ro,
            seed,
            synced_gpus=synced_gpus,
            first_chunk=first_chunk(world.rank, len(mine), problems_per_chunk(ro.generation_batch_size, ro.group_size)),
        )
    with timer("reward"):
        before = verifier.counts.copy()
        correct = score(rollout, verifier)
        verified = verifier.counts - before
    with timer("logprobs"):
        if ro.behaviour_logprobs == "sampler":
            logprobs, entropy = rollout.sampler_logprobs, rollout.sampler_entropy
        else:
            with amp():
                logprobs, entropy = behaviour_logprobs(model, rollout, ro.temperature, config.optim.micro_batch_size)
        scored = gather_rollout(world, ScoredRollout.of(rollout, correct, logprobs, entropy), tokenizer.pad_token_id)
    return Collected(scored, verified, Compute.of(scored))


def score(rollout: Rollout, verifier: VerifierLike) -> torch.Tensor:
    """(N,) 0/1 correctness of every completion against its problem's gold answer (`verify.as_verifier`
    makes a plain function a verifier, which counts its calls).

    The verifier is user code: an exception in it, or a verdict that is not True/False (or 0/1),
    stops the run with an error naming the problem, never a silently wrong reward.
    """
    verifier = as_verifier(verifier)
    verdicts = []
    for i, completion in enumerate(rollout.completions):
        problem = rollout.problems[i // rollout.group_size]
        where = f"problem {problem.id!r} (gold {problem.answer!r}), sample {i % rollout.group_size}"
        try:
            v = verifier(completion, problem.answer)
        except Exception as e:
            raise RuntimeError(f"reward function {verifier.name} raised {type(e).__name__}: {e} on {where}") from e
        if isinstance(v, (bool, np.bool_, numbers.Integral, float)) and v in (0, 1):
            verdicts.append(float(v))
        else:
            raise ValueError(
                f"reward function {verifier.name} returned {v!r} on {where}; it must return True/False (or 0/1)"
            )
    return torch.tensor(verdicts, device=rollout.input_ids.device)
