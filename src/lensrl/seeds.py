"""Every seed a run derives, and the rule that cuts sampling into seeded chunks.

One run seed `s` fans out into independent streams; each rule below is the only place it is written:

    training data order, epoch e          s * 1_000_003 + e     (`DataOrder`)
    rollout sampling at step t            s * 1_000_003 + t     (`rollout_seed`)
    evaluation sampling at step t         s * 7_919 + t         (`eval_seed`)
    training source i (file samples)      s + i * 1_000_003     (`source_seed`; eval sources use EVAL_SEED for s)
    sampling chunk c of a seed x          x for c = 0, else SeedSequence([x, c])   (`chunk_seed`)
    evaluation chunk c of a seed x        x + c                 (`eval_chunk_seed`; each is sampled alone)

Sampling runs in chunks of whole groups (`problems_per_chunk`), each seeded on its own, so a chunk's
samples do not depend on the others: data-parallel ranks that each sample some chunks reproduce one
process exactly (`first_chunk` numbers a rank's chunks after those of the ranks before it).
"""

from __future__ import annotations

import numpy as np
import torch

STRIDE = 1_000_003  # a prime far above any step or epoch count: streams of different seeds never meet
EVAL_STRIDE = 7_919
EVAL_SEED = 12345
"""Seed of the evaluation sources in place of the run seed: the held-out set is the same for every run."""


def rollout_seed(seed: int, step: int) -> int:
    """Seed of the rollout sampled at training step `step`."""
    return seed * STRIDE + step


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
