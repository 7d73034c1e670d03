"""Collecting a rollout: steps 1-3 of a training step, the one definition the trainer and the diagnostic share.

    sample    each rank samples its contiguous share of the step's problems (whole groups), chunk
              seeds numbered as if one process sampled them all (`seeds.first_chunk`)
    score     the verifier's 0/1 verdicts, and what it counted meanwhile
    logprobs  the behaviour log-probs log pi_old and entropies at the sampling temperature (no grad):
              a forward pass, or the sampler's own (`rollout.behaviour_logprobs`)
    gather    every rank's share, merged in rank order, on every rank (`sampler.gather_rollout`)

In one process the share is every problem and the gather does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import TrainConfig
from lensrl.data.problem import Problem
from lensrl.policy.distributed import World
from lensrl.policy.models import autocast
from lensrl.rollout.sampler import Rollout, behaviour_logprobs, gather_rollout, sample, score
from lensrl.rollout.verifier import VerifierLike, VerifyCounts
from lensrl.rollout.verify import as_verifier
from lensrl.seeds import first_chunk, problems_per_chunk


@dataclass
class Collected:
    """A scored rollout with behaviour log-probs, and what collecting this rank's share of it took."""

    rollout: Rollout  # the whole step's: correct, logprobs_old and entropy set
    verified: VerifyCounts  # what the verifier counted while scoring this rank's share
    sample_s: float  # seconds sampling
    reward_s: float  # seconds scoring
    logprobs_s: float  # seconds for the behaviour log-probs and the gather


def collect_rollout(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],  # Q, the step's; this rank samples its share
    config: TrainConfig,
    seed: int,
    verifier: VerifierLike,
    world: World = World(),
    synced_gpus: bool = False,
) -> Collected:
    """Sample `config.rollout.group_size` responses per problem with sampling seed `seed`, score them
    with `verifier`, take the behaviour log-probs (micro-batches of `optim.micro_batch_size`, autocast
    as `config.model` says) and gather the ranks' shares. `synced_gpus`: the model is sharded (FSDP)."""
    ro, amp, verifier = config.rollout, autocast(config.model, model.device), as_verifier(verifier)
    mine = problems[world.share(len(problems))]
    start = time.perf_counter()
    with amp():
        rollout = sample(
            model,
            tokenizer,
            mine,
            ro,
            seed,
            synced_gpus=synced_gpus,
            first_chunk=first_chunk(world.rank, len(mine), problems_per_chunk(ro.generation_batch_size, ro.group_size)),
        )
    sampled = time.perf_counter()
    before = verifier.counts.copy()
    rollout.correct = score(rollout, verifier)
    verified = verifier.counts - before
    scored = time.perf_counter()
    if ro.behaviour_logprobs == "forward":  # else the sampler's are already in the rollout
        with amp():
            rollout.logprobs_old, rollout.entropy = behaviour_logprobs(
                model, rollout, ro.temperature, config.optim.micro_batch_size
            )
    rollout = gather_rollout(world, rollout, tokenizer.pad_token_id)
    return Collected(
        rollout, verified, sample_s=sampled - start, reward_s=scored - sampled, logprobs_s=time.perf_counter() - scored
    )
