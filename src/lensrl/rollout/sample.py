"""Sampling: G responses per problem, with Hugging Face `generate` or the compacting sampler
(`lensrl.rollout.compact`), in seeded chunks of whole groups (`lensrl.seeds`).

The result is a `Rollout` (`lensrl.records`): the tokens, masks and decoded text; scoring it and taking
the behaviour log-probs is `lensrl.rollout.collect`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import numbers
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import RolloutConfig
from lensrl.policy.models import eval_mode, unwrapped
from lensrl.records import Problem, Rollout
from lensrl.rollout.compact import decode_compact
from lensrl.rollout.gather import merge_rollouts
from lensrl.seeds import chunk_lengths, chunk_seed, problems_per_chunk


def response_mask_from_tokens(tokens: torch.Tensor, stop_ids: int | Sequence[int]) -> torch.Tensor:
    """(N, R) 1 up to and including the first stop token (EOS) of each row, 0 after it."""
    stop = torch.as_tensor(stop_ids, device=tokens.device).reshape(-1)
    is_stop = torch.isin(tokens, stop).int()
    stop_before = is_stop.cumsum(dim=1) - is_stop  # stop tokens strictly before position t
    return (stop_before == 0).float()


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS plus any the model's generation config names (chat models often have several)."""
    configured = model.generation_config.eos_token_id
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    return sorted({tokenizer.eos_token_id, *configured})


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    config: RolloutConfig,
    seed: int,
    group_size: int | None = None,
    progress: bool = False,
    first_chunk: int = 0,
    synced_gpus: bool = False,
    samples: Sequence[int] | None = None,
) -> Rollout:
    """Sample `group_size` (None: `config.group_size`) responses per problem with the rollout config's
    temperature, top-p, response length, generation batch size and sampler (pure sampling: top_k off);
    or `samples[q]` responses to problem q (groups of different sizes; not with `group_size`).

    Problems go to `generate` in chunks of whole groups (`seeds.problems_per_chunk`). Each chunk is
    padded on its own and seeded by `seeds.chunk_seed(seed, first_chunk + c)` (`generate` draws from
    torch's global generator), so a chunk's samples do not depend on the other chunks: data-parallel
    ranks that each sample some of the chunks reproduce a single process exactly. `synced_gpus` keeps
    sharded ranks decoding in lockstep until all of them are done. `sampler="compact"` decodes with
    `decode_compact` instead of `generate`: the same distribution, other draws; with
    `behaviour_logprobs="sampler"` the rollout also holds the sampler's log-probs and entropies
    (`sampler_logprobs`, `sampler_entropy`). With `samples`, a chunk holds consecutive whole groups
    while their rows fit in the generation batch size (`seeds.chunk_lengths`); the rollout's
    `group_size` is then the Q counts (an int when they are all equal: with every count G, the
    rollout of `group_size=G`, bit for bit).
    """
    if config.sampler == "compact" and synced_gpus:
        raise ValueError("rollout.sampler=compact cannot keep sharded ranks in lockstep; use sampler=generate")
    if samples is None:
        group_size = config.group_size if group_size is None else group_size
        per_chunk = problems_per_chunk(config.generation_batch_size, group_size)
        chunks = [(start, per_chunk, group_size) for start in range(0, len(problems), per_chunk)]
    else:
        if group_size is not None:
            raise ValueError("sample takes group_size or samples (one count per problem), not both")
        samples = sample_counts(samples, len(problems))
        starts = [0, *itertools.accumulate(chunk_lengths(samples, config.generation_batch_size))]
        chunks = [(a, b - a, samples[a:b]) for a, b in itertools.pairwise(starts)]
    stop_ids = stop_token_ids(model, tokenizer)
    sampling = GenerationConfig(
        do_sample=True,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=0,
        max_new_tokens=config.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids,
    )
    parts = []
    with eval_mode(model), _without_generation_defaults(model):
        for c, (start, length, sizes) in enumerate(tqdm(chunks, desc="sampling", leave=False, disable=not progress)):
            parts.append(
                _sample_chunk(
                    model,
                    tokenizer,
                    list(problems[start : start + length]),
                    config,
                    sizes,
                    sampling,
                    chunk_seed(seed, first_chunk + c),
                    synced_gpus,
                )
            )
    return merge_rollouts(parts, tokenizer.pad_token_id)


def sample_counts(samples: Sequence[int], n_problems: int, minimum: int = 1) -> tuple[int, ...]:
    """`samples` checked as one sample count per problem, each an int >= `minimum`."""
    counts = tuple(samples)
    if len(counts) != n_problems:
        raise ValueError(f"{len(counts)} sample counts for {n_problems} problems: give one count per problem")
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= minimum for n in counts):
        raise ValueError(f"sample counts must be ints >= {minimum}, got {list(counts)}")
    return tuple(int(n) for n in counts)


@contextlib.contextmanager
def _without_generation_defaults(model: PreTrainedModel) -> Iterator[None]:
    """Set the model's own generation config aside while sampling.

    `generate` fills what the given config leaves unset from the model's generation config; a
    repetition penalty, top-k or minimum length there would draw the samples from another
    distribution than the tempered policy whose log-probs the loss and LENS use.
    """
    target = unwrapped(model)
    saved, target.generation_config = target.generation_config, GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


def _sample_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chunk: list[Problem],
    config: RolloutConfig,
    group_size: int | tuple[int, ...],  # G, or each problem's sample count
    sampling: GenerationConfig,  # `config` as `generate` takes it, with the stop tokens
    seed: int,
    synced_gpus: bool,
) -> Rollout:
    if not isinstance(group_size, int):
        group_size = group_size[0] if len(set(group_size)) == 1 else tuple(group_size)
    sampler_logprobs = config.behaviour_logprobs == "sampler"
    stop_ids = sampling.eos_token_id
    repeats = group_size if isinstance(group_size, int) else torch.tensor(group_size)
    enc = tokenizer([q.prompt for q in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].repeat_interleave(repeats, dim=0).to(model.device)  # (n, P)
    mask = enc["attention_mask"].repeat_interleave(repeats, dim=0).to(model.device)
    torch.manual_seed(seed)
    logprobs = entropy = None
    if config.sampler == "compact":
        decoded = decode_compact(
            model,
            ids,
            mask,
            sampling.temperature,
            sampling.top_p,
            sampling.max_new_tokens,
            stop_ids,
            sampling.pad_token_id,
            shared_prompts=group_size if config.share_prompts else 1,
            with_logprobs=sampler_logprobs,
        )
        responses, logprobs, entropy = decoded if sampler_logprobs else (decoded, None, None)
    else:
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=sampling, synced_gpus=synced_gpus)
        responses = out[:, ids.shape[1] :]  # (n, R)
    response_mask = response_mask_from_tokens(responses, stop_ids)
    ended = (torch.isin(responses, torch.tensor(stop_ids, device=responses.device)) & (response_mask > 0)).any(1)
    responses = responses.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(
        [resp[m > 0] for resp, m in zip(responses, response_mask)], skip_special_tokens=True
    )
    return Rollout(
        problems=chunk,
        group_size=group_size,
        input_ids=torch.cat([ids, responses], dim=1),
        prompt_mask=mask,
        response_mask=response_mask,
        completions=completions,
        truncated=~ended,
        sampler_logprobs=None if logprobs is None else logprobs * response_mask,
        sampler_entropy=None if entropy is None else entropy * response_mask,
    )
