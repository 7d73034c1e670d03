"""Rollouts: sample G responses per question, score them, and take the behaviour log-probs (the three
together, with the gather across ranks: `lensrl.rollout.collect`).

Layout of a rollout's token tensors (N = Q x G rows, groups contiguous):
    input_ids = [left-padded prompt (P) | response (R), right-padded after its first EOS]
The response mask covers the generated tokens up to and including the first EOS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import RolloutConfig
from lensrl.core.logprobs import head_logprobs, selective_logprobs
from lensrl.data.problem import Problem
from lensrl.policy.distributed import World, all_gather_objects, is_sharded
from lensrl.policy.models import eval_mode, unwrapped
from lensrl.rollout.verifier import VerifierLike
from lensrl.rollout.verify import as_verifier
from lensrl.seeds import chunk_seed, problems_per_chunk


@dataclass
class Rollout:
    """One rollout batch: Q problems, G sampled responses each, and everything the update needs."""

    problems: list[Problem]  # Q
    group_size: int  # G
    input_ids: torch.Tensor  # (N, P+R)
    prompt_mask: torch.Tensor  # (N, P) 1 on real prompt tokens
    response_mask: torch.Tensor  # (N, R) 1 on generated tokens up to the first EOS
    completions: list[str]  # N decoded responses
    truncated: torch.Tensor  # (N,) bool, no EOS within max_new_tokens
    correct: torch.Tensor | None = None  # (N,) float 0/1
    logprobs_old: torch.Tensor | None = None  # (N, R) behaviour policy at the sampling temperature
    entropy: torch.Tensor | None = None  # (N, R) behaviour-policy token entropies

    @property
    def prompt_len(self) -> int:
        return self.prompt_mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.response_mask.sum(dim=1)

    @property
    def seq_logprobs(self) -> torch.Tensor:  # (N,)
        assert self.logprobs_old is not None, "behaviour log-probs not computed yet"
        return (self.logprobs_old * self.response_mask).sum(dim=1)

    def to(self, device: torch.device | str) -> Rollout:
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return Rollout(**moved)


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


def _pad(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    extra = width - t.shape[1]
    return torch.nn.functional.pad(t, (extra, 0) if left else (0, extra), value=value)


def merge_rollouts(parts: Sequence[Rollout], pad_token_id: int) -> Rollout:
    """One rollout from several (chunks, or the shares of data-parallel ranks), in order.

    Prompts are re-padded on the left and responses on the right to the widest part; padding has mask 0.
    """
    if len(parts) == 1:
        return parts[0]
    p = max(r.prompt_len for r in parts)
    w = max(r.response_mask.shape[1] for r in parts)

    def cat(get, width: int, value: float, left: bool) -> torch.Tensor:
        return torch.cat([_pad(get(r), width, value, left) for r in parts])

    def cat_optional(name: str) -> torch.Tensor | None:  # (n,) per-row values, or (n, R) per-token ones
        values = [getattr(r, name) for r in parts]
        if any(v is None for v in values):
            return None
        return torch.cat([v if v.dim() == 1 else _pad(v, w, 0.0, left=False) for v in values])

    return Rollout(
        problems=[q for r in parts for q in r.problems],
        group_size=parts[0].group_size,
        input_ids=torch.cat(
            [
                cat(lambda r: r.input_ids[:, : r.prompt_len], p, pad_token_id, left=True),
                cat(lambda r: r.input_ids[:, r.prompt_len :], w, pad_token_id, left=False),
            ],
            dim=1,
        ),
        prompt_mask=cat(lambda r: r.prompt_mask, p, 0, left=True),
        response_mask=cat(lambda r: r.response_mask, w, 0.0, left=False),
        completions=[c for r in parts for c in r.completions],
        truncated=torch.cat([r.truncated for r in parts]),
        correct=cat_optional("correct"),
        logprobs_old=cat_optional("logprobs_old"),
        entropy=cat_optional("entropy"),
    )


def gather_rollout(world: World, rollout: Rollout, pad_token_id: int) -> Rollout:
    """Every rank's share, merged in rank order, on every rank (the whole rollout of the step)."""
    if not world.distributed:
        return rollout
    parts = all_gather_objects(world, rollout.to("cpu"))
    return merge_rollouts(parts, pad_token_id).to(rollout.input_ids.device)


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
) -> Rollout:
    """Sample `group_size` (None: `config.group_size`) responses per problem with the rollout config's
    temperature, top-p, response length, generation batch size and sampler (pure sampling: top_k off).

    Problems go to `generate` in chunks of whole groups (`seeds.problems_per_chunk`). Each chunk is
    padded on its own and seeded by `seeds.chunk_seed(seed, first_chunk + c)` (`generate` draws from
    torch's global generator), so a chunk's samples do not depend on the other chunks: data-parallel
    ranks that each sample some of the chunks reproduce a single process exactly. `synced_gpus` keeps
    sharded ranks decoding in lockstep until all of them are done. `sampler="compact"` decodes with
    `decode_compact` instead of `generate`: the same distribution, other draws; with
    `behaviour_logprobs="sampler"` the rollout also holds the sampler's log-probs and entropies
    (`logprobs_old`, `entropy`).
    """
    if config.sampler == "compact" and synced_gpus:
        raise ValueError("rollout.sampler=compact cannot keep sharded ranks in lockstep; use sampler=generate")
    group_size = config.group_size if group_size is None else group_size
    per_chunk = problems_per_chunk(config.generation_batch_size, group_size)
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
    starts = range(0, len(problems), per_chunk)
    with eval_mode(model), _without_generation_defaults(model):
        for c, start in enumerate(tqdm(starts, desc="sampling", leave=False, disable=not progress)):
            parts.append(
                _sample_chunk(
                    model,
                    tokenizer,
                    list(problems[start : start + per_chunk]),
                    group_size,
                    sampling,
                    stop_ids,
                    chunk_seed(seed, first_chunk + c),
                    synced_gpus,
                    config.sampler,
                    config.share_prompts,
                    config.behaviour_logprobs == "sampler",
                )
            )
    return merge_rollouts(parts, tokenizer.pad_token_id)


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
    group_size: int,
    sampling: GenerationConfig,
    stop_ids: list[int],
    seed: int,
    synced_gpus: bool,
    sampler: str,
    share_prompts: bool = False,
    sampler_logprobs: bool = False,
) -> Rollout:
    enc = tokenizer([q.prompt for q in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].repeat_interleave(group_size, dim=0).to(model.device)  # (n, P)
    mask = enc["attention_mask"].repeat_interleave(group_size, dim=0).to(model.device)
    torch.manual_seed(seed)
    logprobs = entropy = None
    if sampler == "compact":
        decoded = decode_compact(
            model,
            ids,
            mask,
            sampling.temperature,
            sampling.top_p,
            sampling.max_new_tokens,
            stop_ids,
            sampling.pad_token_id,
            shared_prompts=group_size if share_prompts else 1,
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
        logprobs_old=None if logprobs is None else logprobs * response_mask,
        entropy=None if entropy is None else entropy * response_mask,
    )


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:  # (n, V) -> (n, V)
    """The distribution `generate` samples from with do_sample, this temperature and top-p, top-k off.

    Temperature first; then top-p drops, in ascending order of probability, the tokens whose
    cumulative probability is at most 1 - top_p, always keeping the most likely one.
    """
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - top_p
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits.softmax(dim=-1)


@torch.no_grad()
def decode_compact(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # (n, P) left-padded prompts
    attention_mask: torch.Tensor,  # (n, P)
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_token_id: int,
    shared_prompts: int = 1,
    with_logprobs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (n, R) [, (n, R), (n, R)]
    """Sampling with a KV cache that drops finished rows from the batch.

    `generate` decodes every row until the last one stops; with responses of very different lengths
    most of that work is on rows already done. Here a row leaves the batch (and its cache) at its
    stop token, so each step costs only the rows still going. Draws come from `sampling_probs` with
    torch's global generator, one `multinomial` per step over the rows still going.

    `shared_prompts` = G > 1 says the rows come in contiguous runs of G identical prompts (a
    rollout's groups): each prompt is then run through the model once and its KV cache and
    next-token logits are copied to its G rows, so the prompt costs 1/G of the forward passes. The
    distribution and the draws are those of the unshared prefill up to float round-off (a kernel may
    round a batch of one prompt differently from a batch of G copies).

    `with_logprobs` also returns each drawn token's log-prob and the entropy at `temperature` (the
    tempered policy, before top-p: what the behaviour log-probs are), from the logits it sampled
    with; 0 after a row's stop token.
    """
    n, device = input_ids.shape[0], input_ids.device
    if shared_prompts < 1 or n % shared_prompts:
        raise ValueError(f"shared_prompts={shared_prompts} must be >= 1 and divide the {n} rows")
    stop = torch.as_tensor(list(stop_ids), device=device)
    responses = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    base = unwrapped(model)
    cache = DynamicCache(config=base.config)  # filled in place by every forward pass
    cache_kw = {"cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values": cache}
    first = slice(None, None, shared_prompts)  # one row of each run of identical prompts
    if (
        shared_prompts > 1
        and not (input_ids.view(-1, shared_prompts, input_ids.shape[1]) == input_ids[first, None]).all()
    ):
        raise ValueError(f"shared_prompts={shared_prompts}: the rows do not come in runs of identical prompts")
    logits = model(
        input_ids=input_ids[first],
        attention_mask=attention_mask[first],
        position_ids=position_ids[first],
        use_cache=True,
        logits_to_keep=1,
        **cache_kw,
    ).logits[:, -1]
    if shared_prompts > 1:
        cache.batch_repeat_interleave(shared_prompts)
        logits = logits.repeat_interleave(shared_prompts, dim=0)
    rows = torch.arange(n, device=device)  # the rows still going, as indices into the batch
    mask, position = attention_mask, position_ids[:, -1]
    logprobs = torch.zeros(n, max_new_tokens, device=device) if with_logprobs else None
    entropy = torch.zeros_like(logprobs) if with_logprobs else None
    for t in range(max_new_tokens):  # noqa: B007 (after the loop t is the last step taken)
        token = torch.multinomial(sampling_probs(logits, temperature, top_p), 1).squeeze(1)
        responses[rows, t] = token
        if with_logprobs:
            lp, ent = selective_logprobs(logits[:, None], token[:, None], temperature, with_entropy=True)
            logprobs[rows, t], entropy[rows, t] = lp[:, 0], ent[:, 0]
        going = ~torch.isin(token, stop)
        if t + 1 == max_new_tokens or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        position = position + 1
        logits = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None], use_cache=True, **cache_kw
        ).logits[:, -1]
    if with_logprobs:
        return responses[:, : t + 1], logprobs[:, : t + 1], entropy[:, : t + 1]
    return responses[:, : t + 1]


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


_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # head != plain linear layer


def _decoder_and_head(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The transformer body and output layer when logits are exactly head(body(x)), else None."""
    config = model.config
    if any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    if is_sharded(model):  # FSDP2 gathers the output layer's weights only in the root's own forward
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def response_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # (n, P+R)
    prompt_mask: torch.Tensor,  # (n, P)
    response_len: int,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (n, R), (n, R) or None
    """Log-probs of the response tokens under `model` at `temperature`.

    Only the response positions reach the output layer, chunk by chunk (`head_logprobs`), so the
    full (n, P+R, V) logits are never made; models whose logits are not a plain linear head of the
    hidden states fall back to `logits_to_keep`.
    """
    n = input_ids.shape[0]
    attention_mask = torch.cat(
        [prompt_mask, torch.ones(n, response_len, dtype=prompt_mask.dtype, device=prompt_mask.device)], dim=1
    )
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # as `generate` does for left padding
    tokens = input_ids[:, -response_len:]
    parts = _decoder_and_head(model)
    if parts is None:
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=response_len + 1,
        ).logits[:, :-1]  # (n, R, V): position P-1+t predicts response token t
        return selective_logprobs(logits, tokens, temperature, with_entropy)
    decoder, head = parts
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return head_logprobs(hidden[:, -response_len - 1 : -1], head, tokens, temperature, with_entropy)


def by_length(rows: torch.Tensor, lengths: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """`rows` longest response first, in micro-batches of `size`: rows of similar length share one."""
    order = torch.argsort(lengths[rows], descending=True, stable=True)
    return rows[order].split(size)


def trimmed_logprobs(
    model: PreTrainedModel, rollout: Rollout, rows: torch.Tensor, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (n, R), (n, R) or None
    """`response_logprobs` of some rows of a rollout, over only the columns they use.

    Prompt columns that are padding in every row and response columns past the rows' longest
    response are dropped before the forward pass and the result is padded back to the rollout's
    width with zeros (those positions are masked out everywhere). Positions come from the attention
    mask, so the kept tokens see exactly what they saw before.
    """
    prompt_mask, response_mask = rollout.prompt_mask[rows], rollout.response_mask[rows]
    p, width = prompt_mask.shape[1], response_mask.shape[1]
    first = int(prompt_mask.any(dim=0).int().argmax())  # prompts are left-padded
    used = response_mask.any(dim=0).nonzero()
    r = int(used.max()) + 1 if len(used) else 1
    lp, ent = response_logprobs(
        model, rollout.input_ids[rows, first : p + r], prompt_mask[:, first:], r, temperature, with_entropy
    )
    pad = (0, width - r)
    return torch.nn.functional.pad(lp, pad), (torch.nn.functional.pad(ent, pad) if ent is not None else None)


@torch.no_grad()
def behaviour_logprobs(
    model: PreTrainedModel, rollout: Rollout, temperature: float, micro_batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:  # (N, R), (N, R)
    """Behaviour-policy log-probs and entropies of a rollout (in eval mode: no dropout), in
    micro-batches of similar lengths."""
    n = rollout.input_ids.shape[0]
    logprobs = entropy = None
    with eval_mode(model):
        for rows in by_length(torch.arange(n, device=rollout.input_ids.device), rollout.lengths, micro_batch_size):
            lp, ent = trimmed_logprobs(model, rollout, rows, temperature, with_entropy=True)
            if logprobs is None:
                logprobs, entropy = lp.new_zeros(n, lp.shape[1]), ent.new_zeros(n, ent.shape[1])
            logprobs[rows], entropy[rows] = lp, ent
    return logprobs, entropy
