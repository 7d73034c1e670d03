"""The policy's forward passes over a rollout: the response tokens' log-probs (and entropies) at the
sampling temperature, in micro-batches of similar lengths over only the columns they use. The
behaviour log-probs log pi_old, the update's log pi and the reference policy's all come from here.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from lensrl.core.logprobs import head_logprobs, selective_logprobs
from lensrl.policy.distributed import is_sharded
from lensrl.policy.models import eval_mode
from lensrl.records import Rollout

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
