"""The sample log: whole groups of a rollout with what each response got.

TO BE IMPLEMENTED (see the brief). Interface used by the trainer and `lensrl.lifecycle`:
"""

from __future__ import annotations


def sample_record(rollout, advantages, algo, step: int, groups: int) -> dict:
    raise NotImplementedError


def sample_table(record: dict) -> tuple[list[str], list[list]]:
    raise NotImplementedError
