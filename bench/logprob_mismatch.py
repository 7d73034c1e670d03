"""How far the compact sampler's own log-probs are from the forward pass's (`rollout.behaviour_logprobs`).

With `rollout.behaviour_logprobs=sampler` the behaviour log-probs log pi_old come from the logits each
token was drawn from (the KV-cache path, one token at a time) instead of a no-grad forward pass over
the finished responses. The two compute the same quantity and differ only by float round-off, which
bf16 autocast makes larger. This measures it on one rollout of a config: per response token,
|sampler - forward|; per response, the difference of the summed log-probs (what LENS's confidence
reads); and the importance ratio the first update would see, exp(forward - sampler) per token (1
when the two agree; the clipped loss clips it at 1 -+ 0.2).

    python -m bench.logprob_mismatch --config configs/smollm2/rl_chain_sum.yaml model.adapter=null \\
        --out results/smollm2/logprob_mismatch.json

It compares two of lensrl's internal code paths, so unlike the other scripts here it imports them
from their modules (the policy and rollout stages) rather than from `lensrl`'s public names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lensrl.config import load_config
from lensrl.data.sources import load_problems
from lensrl.policy.forward import behaviour_logprobs
from lensrl.policy.models import autocast
from lensrl.policy.prepare import prepare
from lensrl.rollout.sample import sample


def quantiles(x: torch.Tensor) -> dict[str, float]:
    x = x.double()
    q = torch.quantile(x, torch.tensor([0.5, 0.99], dtype=torch.float64))
    return {"mean": x.mean().item(), "median": q[0].item(), "p99": q[1].item(), "max": x.max().item()}


def measure(config_path: str | None, overrides: list[str], seed: int) -> dict:
    config = load_config(config_path, [*overrides, "rollout.sampler=compact", "rollout.behaviour_logprobs=sampler"])
    p = prepare(config, load_problems(config.data, config.run.seed)[0])
    problems = [p.train_set[i] for i in p.order.take(config.rollout.questions_per_step)]
    with autocast(config.model, p.model.device)():
        rollout = sample(p.model, p.tokenizer, problems, config.rollout, seed)
        forward, _ = behaviour_logprobs(p.model, rollout, config.rollout.temperature, config.optim.micro_batch_size)
    mask = rollout.response_mask > 0
    sampler_lp, forward_lp = rollout.logprobs_old[mask], forward[mask]
    ratio = (forward_lp.double() - sampler_lp.double()).exp()
    clip = config.algo.clip_low, config.algo.clip_high
    return {
        "config": config_path,
        "overrides": overrides,
        "autocast": config.model.autocast,
        "responses": int(mask.shape[0]),
        "tokens": int(mask.sum()),
        "token_abs_diff": quantiles((sampler_lp - forward_lp).abs()),
        "sequence_abs_diff": quantiles((rollout.seq_logprobs - (forward * rollout.response_mask).sum(1)).abs()),
        "ratio": {
            **quantiles(ratio),
            "min": ratio.min().item(),
            "outside_clip": ((ratio < 1 - clip[0]) | (ratio > 1 + clip[1])).double().mean().item(),
        },
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--seed", type=int, default=1, help="the rollout's sampling seed")
    parser.add_argument("--out")
    args, overrides = parser.parse_known_args(argv)
    result = {
        "command": "python -m bench.logprob_mismatch " + " ".join(argv),
        **measure(args.config, overrides, args.seed),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
