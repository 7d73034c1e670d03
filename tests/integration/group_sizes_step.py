"""One training step with groups of different sizes, in one process or under torchrun (test_distributed):
the trainer's session (`setup`), then its rollout, advantages, update and metrics, with a sample count
per problem. Rank 0 saves what the step made to the file named by its second argument.

    python -m tests.integration.group_sizes_step MODEL_DIR OUT [PARALLEL]
"""

import sys

import torch

from lensrl.config import load_config
from lensrl.policy.distributed import init_world
from lensrl.rollout.collect import collect_rollout
from lensrl.testbed import generate_problems
from lensrl.training.metrics import rollout_metrics
from lensrl.training.trainer import setup
from lensrl.training.update import update_policy
from tests.conftest import tiny_overrides

SIZES = (2, 4, 3, 5)
"""Rank 0 of 2 samples groups of 2 and 4 (one chunk of 6 rows), rank 1 groups of 3 and 5 (two chunks,
numbered 1 and 2): the chunks of one process. Each of the 2 minibatches holds 2 groups, one a rank."""


def verifier(completion: str, answer: str) -> bool:
    return len(completion) % 3 == 0  # right and wrong answers in no particular pattern


def main(model_dir: str, out: str, parallel: str = "ddp") -> None:
    config = load_config(
        overrides=tiny_overrides(
            model_dir,
            "unused",
            f"rollout.questions_per_step={len(SIZES)}",
            "rollout.generation_batch_size=6",
            "optim.micro_batch_size=2",
            f"run.parallel={parallel}",
        )
    )
    world = init_world(config.model.device)
    s = setup(config, world, None, (generate_problems(8, levels=[1, 2, 3], seed=5), []))
    problems = [s.train_set[i] for i in s.order.take(len(SIZES))]
    rollout = collect_rollout(
        s.model, s.tokenizer, problems, config, 11, verifier, world, synced_gpus=s.sharded, samples=SIZES
    ).rollout
    advantages = config.algo.advantages(rollout)
    update = update_policy(
        s.model, None, s.optimizer, s.scheduler, rollout, advantages, config, s.generator, world, step=1
    )
    if world.is_main:
        torch.save(
            {
                "group_size": rollout.group_size,
                "rollout": {k: getattr(rollout, k) for k in ("input_ids", "response_mask", "correct", "logprobs_old")},
                "advantages": advantages,
                "metrics": {**rollout_metrics(rollout, advantages, config.algo), **update},
                "weights": {n: p.detach().clone() for n, p in s.model.named_parameters()},
            },
            out,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
