"""Every seed a run derives, and the rule that cuts sampling into seeded chunks.

One run seed `s` fans out into independent streams; each rule below is the only place it is written:

    training data order, epoch e          s * 1_000_003 + e     (`DataOrder`)
    rollout sampling at step t            s * 1_000_003 + t     (`rollout_seed`)
    generation round r > 0 of step t      SeedSequence([x, 2^32 - 1, r]), x = rollout_seed   (`round_seed`)
    prompt-skipping coins of step t       SeedSequence([x, 2^32 - 2]), x = rollout_seed   (`skip_seed`)
    evaluation sampling at step t         s * 7_919 + t         (`eval_seed`)
    training source i (file samples)      s + i * 1_000_003     (`source_seed`; eval sources use EVAL_SEED for s)
    sampling chunk c of a seed x          x for c = 0, else SeedSequence([x, c])   (`chunk_seed`)
    evaluation chunk c of a seed x        x + c                 (`eval_chunk_seed`; each is sampled alone)

and the chunks themselves (B = rollout.generation_batch_size):

    groups of G samples each              B // G problems a chunk (at least 1)   (`problems_per_chunk`)
    n_q samples for problem q             consecutive whole groups while their rows fit in B
                                          (at least 1 group a chunk)             (`chunk_lengths`)
    a rank's first chunk                  after every chunk of the ranks before it
                                          (`first_chunk`; `first_sized_chunk` for counts n_q)

Sampling runs in chunks of whole groups, each seeded on its own, so a chunk's samples do not depend
on the others: data-parallel ranks that each sample some chunks reproduce one process exactly where
their shares end on chunk boundaries. With every n_q = G the two chunk rules, and the two
numberings, are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

STRIDE = 1_000_003  # a prime far above any step or epoch count: streams of different seeds never meet
EVAL_STRIDE = 7_919
EVAL_SEED = 12345
"""Seed of the evaluation sources in place of the run seed: the held-out set is the same for every run."""


def rollout_seed(seed: int, step: int) -> int:
    """Seed of the rollout sampled at training step `step`."""
    return seed * STRIDE + step


def round_seed(seed: int, step: int, round_: int) -> int:
    """Seed of generation round `round_` of step `step` (`rollout.selection` strategies that sample several
    rounds a step): round 0 is the step's rollout seed, later rounds independent streams of it (the entry
    2^32 - 1 keeps them apart from `chunk_seed`'s)."""
    x = rollout_seed(seed, step)
    return x if round_ == 0 else int(np.random.SeedSequence([x, 2**32 - 1, round_]).generate_state(1)[0])


def skip_seed(seed: int, step: int) -> int:
    """Seed of the coins with which step `step` skips prompts before its rollout (`rollout.selection` kind
    "greso"): one stream a step, so a resumed run draws the same coins as an uninterrupted one."""
    x = rollout_seed(seed, step)
    return int(np.random.SeedSequence([x, 2**32 - 2]).generate_state(1)[0])


def eval_seed(seed: int, step: int) -> int:
    """Seed of the evaluation at training step `step` (step 0: the policy before training)."""
    return seed * EVAL_STRIDE + step


def source_seed(seed: int, index: int) -> int:
    """Seed of data source `index` (source 0 uses `seed` itself)."""
    return seed + index * STRIDE


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of sampling chunk `chunk` (chunk 0 uses `seed` itself), independent across chunks."""
    return seed if chunk == 0 else int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def eval_chunk_seed(seed: int, chunk: int) -> int:
    """Seed of evaluation chunk `chunk`: evaluation samples one chunk per `sample` call, seeded by this."""
    return seed + chunk


def problems_per_chunk(batch_size: int, group_size: int) -> int:
    """Problems sampled together: whole groups, at most `batch_size` rows (at least one problem)."""
    return max(1, batch_size // group_size)


def first_chunk(rank: int, problems_per_rank: int, per_chunk: int) -> int:
    """Index of a rank's first sampling chunk when every rank samples `problems_per_rank` problems."""
    return rank * -(-problems_per_rank // per_chunk)


def chunk_lengths(samples: Sequence[int], batch_size: int) -> list[int]:
    """Problems in each sampling chunk when problem q gets `samples[q]` samples: consecutive whole
    groups, as many as fit in `batch_size` rows (at least one group a chunk). With every count G, chunks
    of `problems_per_chunk(batch_size, G)` problems and the rest in the last."""
    lengths: list[int] = []
    rows = 0
    for n in samples:
        if lengths and rows + n <= batch_size:
            lengths[-1] += 1
            rows += n
        else:
            lengths.append(1)
            rows = n
    return lengths


def first_sized_chunk(rank: int, shares: Sequence[Sequence[int]], batch_size: int) -> int:
    """Index of a rank's first sampling chunk when rank k samples problems with the sample counts
    `shares[k]` (`chunk_lengths`): after every chunk of the ranks before it."""
    return sum(len(chunk_lengths(share, batch_size)) for share in shares[:rank])


class DataOrder:
    """Seeded reshuffle of a training set every epoch; `position` is enough to resume it."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.position = size, seed, 0
        self._epoch, self._perm = -1, []

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.position, self.size)
            if epoch != self._epoch:
                gen = torch.Generator().manual_seed(self.seed * STRIDE + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen).tolist()
            out.append(self._perm[offset])
            self.position += 1
        return out
