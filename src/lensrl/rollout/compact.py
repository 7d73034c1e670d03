"""The compacting sampler (`rollout.sampler=compact`): KV-cache decoding that drops finished rows from
the batch, drawing from the same distribution as Hugging Face `generate`."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from lensrl.core.logprobs import selective_logprobs
from lensrl.policy.models import unwrapped


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
    shared_prompts: int | Sequence[int] = 1,
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
    round a batch of one prompt differently from a batch of G copies). Runs of different lengths
    (groups of different sizes) are given as the list of their lengths, which sum to n.

    `with_logprobs` also returns each drawn token's log-prob and the entropy at `temperature` (the
    tempered policy, before top-p: what the behaviour log-probs are), from the logits it sampled
    with; 0 after a row's stop token.
    """
    n, device = input_ids.shape[0], input_ids.device
    runs = starts = None  # when runs differ in length: the run of each row, the first row of each run
    if not isinstance(shared_prompts, int):
        lengths = [int(r) for r in shared_prompts]
        if not lengths or min(lengths) < 1 or sum(lengths) != n:
            raise ValueError(f"shared_prompts={lengths} must be run lengths >= 1 that sum to the {n} rows")
        if len(set(lengths)) == 1:
            shared_prompts = lengths[0]
        else:
            sizes = torch.tensor(lengths, device=device)
            runs, starts = torch.repeat_interleave(sizes, output_size=n), sizes.cumsum(0) - sizes
    if runs is None and (shared_prompts < 1 or n % shared_prompts):
        raise ValueError(f"shared_prompts={shared_prompts} must be >= 1 and divide the {n} rows")
    stop = torch.as_tensor(list(stop_ids), device=device)
    responses = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    base = unwrapped(model)
    cache = DynamicCache(config=base.config)  # filled in place by every forward pass
    cache_kw = {"cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values": cache}
    first = slice(None, None, shared_prompts) if runs is None else starts  # one row of each run
    if runs is not None and not (input_ids == input_ids[first][runs]).all():
        raise ValueError(f"shared_prompts={lengths}: the rows do not come in runs of identical prompts")
    if (
        runs is None
        and shared_prompts > 1
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
    if runs is not None:
        cache.batch_select_indices(runs)
        logits = logits[runs]
    elif shared_prompts > 1:
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
