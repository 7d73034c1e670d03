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

import bisect
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
from lensrl.rollout.sample import sample, sample_counts
from lensrl.rollout.verifier import VerifierLike, VerifyCounts
from lensrl.rollout.verify import as_verifier
from lensrl.seeds import first_chunk, first_sized_chunk, problems_per_chunk
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
    samples: Sequence[int] | None = None,
) -> Collected:
    """Sample `config.rollout.group_size` responses per problem with sampling seed `seed`, score them
    with `verifier`, take the behaviour log-probs (micro-batches of `optim.micro_batch_size`, autocast
    as `config.model` says) and gather the ranks' shares. `synced_gpus`: the model is sharded (FSDP).
    `timer` gets the seconds of "sample", "reward" and "logprobs" (the log-probs and the gather).

    `samples`: `samples[q]` responses to problem q (each >= 2) in place of `group_size` each, for
    groups of different sizes (`Rollout.group_size` then holds the Q sizes). Ranks still take shares
    of whole groups by their number, so their rows differ; each numbers its sampling chunks after
    those of the ranks before it (`seeds.first_sized_chunk`). Not with a sharded model (FSDP ranks
    must run the same passes)."""
    ro, amp, verifier, timer = (
        config.rollout,
        autocast(config.model, model.device),
        as_verifier(verifier),
        timer or Timer(),
    )
    mine = problems[world.share(len(problems))]
    if samples is None:
        first = first_chunk(world.rank, len(mine), problems_per_chunk(ro.generation_batch_size, ro.group_size))
    else:
        samples, first = sample_shares(samples, len(problems), world, ro.generation_batch_size, synced_gpus)
    with timer("sample"), amp():
        rollout = sample(
            model,
            tokenizer,
            mine,
            ro,
            seed,
            synced_gpus=synced_gpus,
            first_chunk=first,
            samples=samples,
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


def sample_shares(
    samples: Sequence[int], n_problems: int, world: World, batch_size: int, sharded: bool
) -> tuple[tuple[int, ...], int]:
    """This rank's sample counts of its share of the problems, and its first sampling chunk."""
    samples = sample_counts(samples, n_problems, minimum=2)
    if sharded and len(set(samples)) > 1:
        raise ValueError("groups of different sizes need run.parallel=ddp: FSDP ranks must run the same passes")
    shares = [samples[World(rank, world.size).share(n_problems)] for rank in range(world.size)]
    return shares[world.rank], first_sized_chunk(world.rank, shares, batch_size)


def score(rollout: Rollout, verifier: VerifierLike) -> torch.Tensor:
    """(N,) 0/1 correctness of every completion against its problem's gold answer (`verify.as_verifier`
    makes a plain function a verifier, which counts its calls).

    The verifier is user code: an exception in it, or a verdict that is not True/False (or 0/1),
    stops the run with an error naming the problem, never a silently wrong reward.
    """
    verifier = as_verifier(verifier)
    verdicts, offsets = [], rollout.group_offsets
    for i, completion in enumerate(rollout.completions):
        q = bisect.bisect_right(offsets, i) - 1  # the group of row i
        problem = rollout.problems[q]
        where = f"problem {problem.id!r} (gold {problem.answer!r}), sample {i - offsets[q]}"
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
