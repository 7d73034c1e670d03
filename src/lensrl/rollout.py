"""Rollouts: sample G responses per question, score them, and take the behaviour log-probs.

Layout of a rollout's token tensors (N = Q x G rows, groups contiguous):
    input_ids = [left-padded prompt (P) | response (R), right-padded after its first EOS]
The response mask covers the generated tokens up to and including the first EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.core.logprobs import head_logprobs, selective_logprobs
from lensrl.data import Problem

Verifier = Callable[[str, str], bool]  # (completion, gold answer) -> correct


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


def response_mask_from_tokens(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(N, R) 1 up to and including the first EOS of each row, 0 after it."""
    is_eos = (tokens == eos_token_id).int()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # EOS tokens strictly before position t
    return (eos_before == 0).float()


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    group_size: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
) -> Rollout:
    """Sample `group_size` responses per problem (pure sampling: top_k off, top_p as given).

    Hugging Face `generate` draws from torch's global generator, so it is seeded here from `seed`.
    """
    device = model.device
    enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, dim=0).to(device)  # (N, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, dim=0).to(device)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    rows_per_chunk = max(1, batch_size // group_size) * group_size
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    chunks = []
    starts = range(0, prompt_ids.shape[0], rows_per_chunk)
    for start in tqdm(starts, desc="sampling", leave=False, disable=not progress):
        ids, mask = prompt_ids[start : start + rows_per_chunk], prompt_mask[start : start + rows_per_chunk]
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        chunks.append(out[:, ids.shape[1] :])
    model.train(was_training)

    width = max(c.shape[1] for c in chunks)
    responses = torch.full((prompt_ids.shape[0], width), pad, dtype=prompt_ids.dtype, device=device)
    response_mask = torch.zeros(responses.shape, device=device)
    row = 0
    for chunk in chunks:
        n, r = chunk.shape
        responses[row : row + n, :r] = chunk
        response_mask[row : row + n, :r] = response_mask_from_tokens(chunk, eos)
        row += n
    ended = ((responses == eos) & (response_mask > 0)).any(dim=1)
    completions = tokenizer.batch_decode(
        [resp[m > 0] for resp, m in zip(responses, response_mask)], skip_special_tokens=True
    )
    return Rollout(
        problems=list(problems),
        group_size=group_size,
        input_ids=torch.cat([prompt_ids, responses], dim=1),
        prompt_mask=prompt_mask,
        response_mask=response_mask,
        completions=completions,
        truncated=~ended,
    )


def score(rollout: Rollout, verifier: Verifier) -> torch.Tensor:
    """(N,) 0/1 correctness of every completion against its problem's gold answer."""
    golds = [p.answer for p in rollout.problems for _ in range(rollout.group_size)]
    verdicts = [verifier(c, g) for c, g in zip(rollout.completions, golds)]
    for v in verdicts:
        if not isinstance(v, (bool, int, float)) or v not in (0, 1):
            raise ValueError(f"verifier must return True/False (or 0/1), got {v!r}")
    return torch.tensor([float(v) for v in verdicts], device=rollout.input_ids.device)


_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # head != plain linear layer


def _decoder_and_head(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The transformer body and output layer when logits are exactly head(body(x)), else None."""
    config = model.config
    if any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS):
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
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            logits_to_keep=response_len + 1,
        ).logits[:, :-1]  # (n, R, V): position P-1+t predicts response token t
        return selective_logprobs(logits, tokens, temperature, with_entropy)
    decoder, head = parts
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return head_logprobs(hidden[:, -response_len - 1 : -1], head, tokens, temperature, with_entropy)


@torch.no_grad()
def behaviour_logprobs(
    model: PreTrainedModel, rollout: Rollout, temperature: float, micro_batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:  # (N, R), (N, R)
    """Behaviour-policy log-probs and entropies of a rollout, in micro-batches."""
    r = rollout.response_mask.shape[1]
    lps, ents = [], []
    for start in range(0, rollout.input_ids.shape[0], micro_batch_size):
        sl = slice(start, start + micro_batch_size)
        lp, ent = response_logprobs(
            model, rollout.input_ids[sl], rollout.prompt_mask[sl], r, temperature, with_entropy=True
        )
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps), torch.cat(ents)
