"""Advantage estimators: GRPO, LENS, and the negative-group remedies they are compared with
(docs/algorithm.md Secs. 3-4 and 9; LENS paper Sec. 5.1, Eqs. 14-15).

Pure functions over tensors. Shapes: N = Q questions x G samples, the G rows of one group contiguous.
Groups may also differ in size (`GroupSizes`): then group q has its own n_q >= 2 rows, N = sum of
the n_q, the groups in order, and every per-group formula reads G as that group's n_q.

```text
GRPO:  A_i = (r_i - mean_g r) / (std_g r + eps)
LENS:  pibar_i = exp(logp_i / |o_i|)
       D = max(D_imp, 2 max_j pibar_j) in a mixed group,
           2 max_j pibar_j in a negative group,
           D_imp = 1 / ((1/G) sum_i r_i / pibar_i)
       r~_i = r_i - (1 - r_i) (1/G) pibar_i / (D - pibar_i)
       A_i = GRPO-normalised r~ (mixed), alpha (r~_i - mean r~) (negative),
             0 (all correct).
```
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from lensrl.core.settings import AdvantageScale, DEstimator, LensScope, LensSettings

LOGPROB_ROUNDOFF = 1e-3
"""A sum of token log-probs can only exceed 0 by float round-off: sums in (0, LOGPROB_ROUNDOFF] count
as 0 (probability 1), larger ones are an error (docs/algorithm.md Sec. 4)."""


GroupSizes = int | Sequence[int] | torch.Tensor
"""The group layout of N rows, which every function here taking `group_size` accepts: an int G (Q = N / G
groups of G rows), or the Q group sizes n_1..n_Q (a sequence or a 1-D tensor of ints, each >= 2, summing to
N; group q holds the n_q rows after those of groups 1..q-1). Equal sizes give exactly the result of the int."""


def group_layout(n: int, group_size: GroupSizes) -> int | tuple[int, ...]:
    """The layout of N rows: G when every group has G rows (an int, or Q sizes that are all G), else the Q
    sizes as a tuple of ints; a ValueError when the layout does not fit N rows."""
    if isinstance(group_size, torch.Tensor):
        if group_size.dim() != 1 or group_size.is_floating_point() or group_size.is_complex():
            raise ValueError(
                f"group sizes as a tensor must be 1-D integers, got {group_size.dtype} {tuple(group_size.shape)}"
            )
        group_size = group_size.tolist()
    elif isinstance(group_size, numbers.Integral) and not isinstance(group_size, bool):
        _check_groups(n, group_size)
        return group_size
    if not isinstance(group_size, Sequence) or isinstance(group_size, str):
        raise ValueError(f"group_size must be an int or a sequence of group sizes, got {group_size!r}")
    sizes = tuple(group_size)
    if not sizes:
        raise ValueError("group sizes must name at least one group")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"group sizes must be ints, got {sizes!r}")
    sizes = tuple(int(s) for s in sizes)
    if min(sizes) < 2:
        raise ValueError(f"every group size must be >= 2 to normalise within a group, got {min(sizes)}")
    if sum(sizes) != n:
        raise ValueError(f"the {len(sizes)} group sizes sum to {sum(sizes)}, not to the N={n} rows")
    if len(set(sizes)) == 1:
        return sizes[0]
    return sizes


def group_rows(groups: torch.Tensor, group_size: int | Sequence[int]) -> torch.Tensor:  # (k,) -> (rows,)
    """The rows of some groups (indices, in the order given), each group's rows in order: group q's rows
    are q G .. q G + G - 1 for an int G, else those after the rows of groups 0..q-1 (`group_size` the Q sizes)."""
    groups = groups.long()
    if isinstance(group_size, numbers.Integral):
        return (groups[:, None] * group_size + torch.arange(group_size, device=groups.device)).flatten()
    sizes = torch.as_tensor(group_size, dtype=torch.long, device=groups.device)
    counts = sizes[groups]
    before = torch.cumsum(counts, 0) - counts  # position of each chosen group's first row in the result
    starts = torch.cumsum(sizes, 0) - sizes  # each group's first row in the rollout
    total = int(counts.sum())
    return (starts[groups] - before).repeat_interleave(counts, output_size=total) + torch.arange(
        total, device=groups.device
    )


def _by_size(
    sizes: tuple[int, ...], compute: Callable[..., torch.Tensor], *columns: torch.Tensor, per_group: bool = False
) -> torch.Tensor:
    """Groups of different sizes: `compute(g, *columns)` once per distinct size g, on the rows of all the
    groups of that size (vectorised within a size), its results put back in row order (`per_group`: one
    result per group, in group order): each group by the int G path's arithmetic, as if alone (up to the
    round-off of a reduction vectorised over more groups)."""
    device = columns[0].device
    size_of = torch.tensor(sizes)
    out = None
    for g in sorted(set(sizes)):
        groups = (size_of == g).nonzero().squeeze(1)
        rows = group_rows(groups, sizes)
        result = compute(g, *(c[rows.to(device)] for c in columns))
        where = (groups if per_group else rows).to(result.device)
        if out is None:
            out = result.new_empty(len(sizes) if per_group else sum(sizes))
        out[where] = result
    return out


def _per_row(per_group: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:  # (Q,) -> (N,)
    return per_group.repeat_interleave(torch.tensor(sizes, device=per_group.device), output_size=sum(sizes))


def _check_groups(n: int, group_size: int) -> int:
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 to normalise within a group, got {group_size}")
    if n % group_size != 0:
        raise ValueError(f"N={n} samples is not divisible by group_size={group_size}")
    return n // group_size


def _check_1d(name: str, x: torch.Tensor, n: int | None = None) -> None:
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D of shape (N,), got shape {tuple(x.shape)}")
    if n is not None and x.numel() != n:
        raise ValueError(f"{name} has {x.numel()} entries, expected N={n}")


def grpo_advantages(
    rewards: torch.Tensor,  # (N,)
    group_size: GroupSizes,
    scale: AdvantageScale = "group",
    eps: float = 1e-6,
) -> torch.Tensor:  # (N,)
    """GRPO advantages: reward minus its group mean, divided by the group's (or batch's) unbiased std.

    scale="group": (r - mean_g) / (std_g + eps); "batch": (r - mean_g) / (std over all N + eps);
    "none": r - mean_g (Dr. GRPO). Groups of different sizes (`GroupSizes`): each group's mean and
    std are its own n_q rows'; "batch" divides every group by the std over all N rows.
    """
    _check_1d("rewards", rewards)
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    group_size = group_layout(rewards.numel(), group_size)
    if isinstance(group_size, tuple):
        if scale != "batch":
            return _by_size(group_size, lambda g, r: grpo_advantages(r, g, scale, eps), rewards)
        centred = _by_size(group_size, lambda g, r: grpo_advantages(r, g, "none", eps), rewards.double())
        return (centred / (rewards.double().std() + eps)).to(_out_dtype(rewards))
    q = _check_groups(rewards.numel(), group_size)
    r = rewards.double().view(q, group_size)  # (Q, G)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = centred / (r.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        adv = centred / (r.std() + eps)
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return adv.view(-1).to(_out_dtype(rewards))


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def _check_lens_inputs(
    correct: torch.Tensor, seq_logprobs: torch.Tensor, lengths: torch.Tensor, group_size: int
) -> int:
    _check_1d("correct", correct)
    n = correct.numel()
    _check_1d("seq_logprobs", seq_logprobs, n)
    _check_1d("lengths", lengths, n)
    q = _check_groups(n, group_size)
    if not ((correct == 0) | (correct == 1)).all():
        raise ValueError("LENS is defined for binary correctness: `correct` must hold only 0/1 (or bool)")
    if not torch.isfinite(seq_logprobs).all():
        raise ValueError("seq_logprobs contain NaN or inf")
    if (seq_logprobs > LOGPROB_ROUNDOFF).any():
        raise ValueError(
            f"seq_logprobs must be <= 0 (sums of token log-probabilities; up to {LOGPROB_ROUNDOFF:g} above 0 is "
            f"read as float round-off), got a maximum of {seq_logprobs.max().item():.6g}"
        )
    if (lengths <= 0).any():
        raise ValueError("lengths must be >= 1: a response with 0 tokens has no confidence pibar")
    return q


def _lens_layout(
    correct: torch.Tensor, seq_logprobs: torch.Tensor, lengths: torch.Tensor, group_size: GroupSizes
) -> int | tuple[int, ...]:
    _check_1d("correct", correct)
    _check_1d("seq_logprobs", seq_logprobs, correct.numel())
    _check_1d("lengths", lengths, correct.numel())
    return group_layout(correct.numel(), group_size)


def log_pibar(seq_logprobs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # (N,), (N,) -> (N,) float64
    """log pibar_i = logp_i / |o_i|, the log of the policy's length-normalised confidence in a response
    (docs/algorithm.md Sec. 3); a sum of log-probs above 0 is float round-off and reads as 0."""
    return seq_logprobs.double().clamp(max=0.0) / lengths.double()


def pibar(seq_logprobs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # (N,), (N,) -> (N,) float64
    """pibar_i = exp(logp_i / |o_i|), the geometric-mean token probability: LENS's confidence, in (0, 1]."""
    return log_pibar(seq_logprobs, lengths).exp()


def lens_rewards(
    correct: torch.Tensor,  # (N,) 0/1 or bool
    seq_logprobs: torch.Tensor,  # (N,) sum of behaviour-policy token log-probs
    lengths: torch.Tensor,  # (N,) number of tokens in that sum
    group_size: GroupSizes,
    d_estimator: DEstimator = "normalized",
) -> torch.Tensor:  # (N,)
    """Calibrated LENS rewards r~ (docs/algorithm.md Sec. 3 steps 1-3); right answers keep 1, wrong ones lie in [-1/G, 0).

    Groups of different sizes (`GroupSizes`): each group's D and 1/G are its own (G = n_q).
    """
    group_size = _lens_layout(correct, seq_logprobs, lengths, group_size)
    if isinstance(group_size, tuple):
        return _by_size(group_size, lambda g, *x: lens_rewards(*x, g, d_estimator), correct, seq_logprobs, lengths)
    q = _check_lens_inputs(correct, seq_logprobs, lengths, group_size)
    LensSettings(d_estimator=d_estimator)  # validates the name
    g = group_size
    r = correct.double().view(q, g)  # (Q, G)
    log_conf = log_pibar(seq_logprobs, lengths).view(q, g)
    conf = log_conf.exp()  # pibar
    # D_imp from pibar, or from the raw sequence probability as printed in the paper's Eq. 14
    log_q = log_conf if d_estimator == "normalized" else seq_logprobs.double().clamp(max=0.0).view(q, g)

    # log D_imp = log G - log sum_{i correct} 1/q_i, kept in log space so tiny q_i cannot overflow
    inv_q = torch.where(r > 0, -log_q, torch.full_like(log_q, -math.inf))
    d_imp = (math.log(g) - torch.logsumexp(inv_q, dim=1, keepdim=True)).exp()  # inf in negative groups
    floor = 2.0 * conf.max(dim=1, keepdim=True).values
    has_correct = r.sum(dim=1, keepdim=True) > 0
    d = torch.where(has_correct, torch.maximum(d_imp, floor), floor)  # (Q, 1)

    penalty = conf / (d - conf) / g  # in (0, 1/G]
    calibrated = r - (1.0 - r) * penalty
    return calibrated.view(-1).to(_out_dtype(seq_logprobs))


def lens_advantages(
    correct: torch.Tensor,  # (N,)
    seq_logprobs: torch.Tensor,  # (N,)
    lengths: torch.Tensor,  # (N,)
    group_size: GroupSizes,
    alpha: float = LensSettings.alpha,
    scope: LensScope = LensSettings.scope,
    d_estimator: DEstimator = LensSettings.d_estimator,
    eps: float = LensSettings.eps,
    normalize_negative: bool = LensSettings.normalize_negative,
) -> torch.Tensor:  # (N,)
    """LENS advantages (docs/algorithm.md Sec. 3 step 4) with the scope ablations of Sec. 4.

    scope="all": mixed groups normalise r~ like GRPO, negative groups get alpha (r~ - mean r~), or
    alpha (r~ - mean r~) / (std r~ + eps) with `normalize_negative` (Sec. 9);
    scope="mixed": negative groups keep 0; scope="negative": mixed groups are plain GRPO on r.
    All-correct groups always get 0. The settings are those of `LensSettings` (validated there).
    Groups of different sizes (`GroupSizes`): every group as above with its own n_q for G.
    """
    LensSettings(alpha, scope, d_estimator, eps, normalize_negative)
    group_size = _lens_layout(correct, seq_logprobs, lengths, group_size)
    if isinstance(group_size, tuple):
        settings = (alpha, scope, d_estimator, eps, normalize_negative)
        return _by_size(group_size, lambda g, *x: lens_advantages(*x, g, *settings), correct, seq_logprobs, lengths)
    calibrated = lens_rewards(correct, seq_logprobs, lengths, group_size, d_estimator).double()
    q = correct.numel() // group_size
    r = correct.double().view(q, group_size)
    rt = calibrated.view(q, group_size)
    n_correct = r.sum(dim=1, keepdim=True)
    negative = n_correct == 0  # (Q, 1)
    mixed = (n_correct > 0) & (n_correct < group_size)

    mixed_source = r if scope == "negative" else rt
    mixed_adv = (mixed_source - mixed_source.mean(dim=1, keepdim=True)) / (mixed_source.std(dim=1, keepdim=True) + eps)
    negative_adv = alpha * (rt - rt.mean(dim=1, keepdim=True))
    if normalize_negative:
        negative_adv = negative_adv / (rt.std(dim=1, keepdim=True) + eps)
    if scope == "mixed":
        negative_adv = torch.zeros_like(negative_adv)

    adv = torch.where(mixed, mixed_adv, torch.where(negative, negative_adv, torch.zeros_like(rt)))
    return adv.view(-1).to(_out_dtype(seq_logprobs))


def uniform_negative_advantages(
    correct: torch.Tensor,  # (N,) 0/1
    group_size: GroupSizes,
    alpha: float = 0.25,
    scale: AdvantageScale = "group",
    eps: float = 1e-6,
) -> torch.Tensor:  # (N,)
    """The simple remedy for negative groups: GRPO, plus a flat -alpha on every sample of a
    negative group, whatever the policy's confidence in it (LENS instead weighs each wrong answer by it)."""
    group_size = group_layout(correct.numel(), group_size)
    adv = grpo_advantages(correct, group_size, scale, eps)
    if isinstance(group_size, tuple):
        negative = _per_row(group_kinds(correct, group_size) == GROUP_KINDS.index("negative"), group_size)
        return torch.where(negative.to(adv.device), torch.full_like(adv, -alpha), adv)
    q = _check_groups(correct.numel(), group_size)
    negative = (correct.view(q, group_size).sum(dim=1) == 0).repeat_interleave(group_size)  # (N,)
    return torch.where(negative, torch.full_like(adv, -alpha), adv)


def w_reinforce_advantages(
    correct: torch.Tensor,  # (N,) 0/1 or bool
    positive_weight: float = 0.1,
) -> torch.Tensor:  # (N,)
    """W-REINFORCE (Zhu et al. 2025, arXiv 2506.01347): REINFORCE on the rewards +1 / -1 with the
    positive term weighted by lambda = `positive_weight`, so A_i = lambda for a right answer and -1 for
    a wrong one, in every group, with no baseline and no normalisation. lambda = 0 is NSR (negative
    samples only), lambda = 1 plain REINFORCE on +1 / -1; the paper's W-REINFORCE uses 0.1."""
    _check_1d("correct", correct)
    if not ((correct == 0) | (correct == 1)).all():
        raise ValueError("W-REINFORCE is defined for binary correctness: `correct` must hold only 0/1 (or bool)")
    if isinstance(positive_weight, bool) or not (math.isfinite(positive_weight) and positive_weight >= 0):
        raise ValueError(f"positive_weight must be a finite number >= 0, got {positive_weight!r}")
    r = correct.double()
    return (positive_weight * r - (1.0 - r)).to(_out_dtype(correct))


def ngrpo_advantages(
    rewards: torch.Tensor,  # (N,)
    group_size: GroupSizes,
    r_max: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:  # (N,)
    """NGRPO's advantage calibration (Nan et al. 2025, arXiv 2509.18851): GRPO's group normalisation
    with one virtual sample of the maximum reward `r_max` added to each group's statistics only,
    A_i = (r_i - mean') / (std' + eps), mean' and the unbiased std' over the G + 1 rewards
    {r_1..r_G, r_max}. An all-wrong group gets the same negative advantage on every sample (binary
    rewards: -1/sqrt(G + 1)); an all-correct group gets 0. (NGRPO's other part, clipping positive and
    negative advantages asymmetrically, is a setting of the loss, not part of this function: the ratio
    bounds `clip_high` for positive and `clip_low` for negative advantages, 0.24 and 0.16 in the
    authors' script.) Groups of different sizes (`GroupSizes`): each group's statistics are over its
    own n_q + 1 rewards."""
    _check_1d("rewards", rewards)
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    group_size = group_layout(rewards.numel(), group_size)
    if isinstance(group_size, tuple):
        return _by_size(group_size, lambda g, r: ngrpo_advantages(r, g, r_max, eps), rewards)
    q = _check_groups(rewards.numel(), group_size)
    r = rewards.double().view(q, group_size)
    augmented = torch.cat([r, torch.full((q, 1), float(r_max), dtype=r.dtype, device=r.device)], dim=1)
    adv = (r - augmented.mean(dim=1, keepdim=True)) / (augmented.std(dim=1, keepdim=True) + eps)
    return adv.view(-1).to(_out_dtype(rewards))


GROUP_KINDS = ("negative", "mixed", "all_correct")
"""The outcomes of a group, indexed by `group_kinds`' codes: no right answer, some, all right."""


def group_kinds(correct: torch.Tensor, group_size: GroupSizes) -> torch.Tensor:  # (N,) -> (Q,) long
    """Each group's outcome as an index into GROUP_KINDS: 0 negative (all wrong), 1 mixed, 2 all correct."""
    group_size = group_layout(correct.numel(), group_size)
    if isinstance(group_size, tuple):
        return _by_size(group_size, lambda g, c: group_kinds(c, g), correct, per_group=True)
    q = _check_groups(correct.numel(), group_size)
    n_correct = correct.double().view(q, group_size).sum(dim=1)
    return (n_correct > 0).long() + (n_correct == group_size).long()


def kept_groups(correct: torch.Tensor, group_size: GroupSizes, keep_negative: bool) -> torch.Tensor:  # (Q,) bool
    """Groups that DAPO-style filtering keeps: those with both right and wrong answers, and the negative
    groups too when the estimator gives them a signal (LENS: dropping them would delete its signal;
    docs/algorithm.md Sec. 4)."""
    kinds = group_kinds(correct, group_size)
    keep = kinds == GROUP_KINDS.index("mixed")
    return keep | (kinds == GROUP_KINDS.index("negative")) if keep_negative else keep


def group_outcomes(correct: torch.Tensor, group_size: GroupSizes) -> dict[str, float]:
    """Shares of negative (all wrong), mixed and all-correct groups: groups/negative, groups/mixed, groups/all_correct."""
    kinds = group_kinds(correct, group_size)
    return {f"groups/{name}": (kinds == i).double().mean().item() for i, name in enumerate(GROUP_KINDS)}


def advantage_mass(advantages: torch.Tensor, correct: torch.Tensor, group_size: GroupSizes) -> tuple[float, float]:
    """The advantage mass sum |A_i| (the per-sample policy-gradient weight) of the negative groups, and
    of all groups."""
    group_size = group_layout(correct.numel(), group_size)
    negative = group_kinds(correct, group_size) == GROUP_KINDS.index("negative")
    if isinstance(group_size, tuple):
        abs_adv = advantages.double().abs()
        return abs_adv[_per_row(negative, group_size).to(abs_adv.device)].sum().item(), abs_adv.sum().item()
    abs_adv = advantages.double().abs().view(len(negative), group_size)
    return abs_adv[negative].sum().item(), abs_adv.sum().item()


def negative_group_signal_share(advantages: torch.Tensor, correct: torch.Tensor, group_size: GroupSizes) -> float:
    """Share of the advantage mass sum |A_i| (the per-sample policy-gradient weight) held by negative groups;
    0 when there is no mass. Over several batches, the share of their summed mass (`advantage_mass`),
    which a mean of the batches' shares is not: a batch without mass would count as a 0."""
    negative, total = advantage_mass(advantages, correct, group_size)
    return negative / total if total > 0 else 0.0


def group_metrics(
    correct: torch.Tensor,  # (N,) 0/1
    seq_logprobs: torch.Tensor,  # (N,)
    lengths: torch.Tensor,  # (N,)
    advantages: torch.Tensor,  # (N,)
    group_size: GroupSizes,
) -> dict[str, float]:
    """The negative-group health numbers of a batch, under the names the trainer and TRL both log:
    groups/negative, groups/mixed, groups/all_correct (`group_outcomes`), pibar/correct and pibar/wrong
    (mean confidence of right and wrong responses, NaN without any) and adv/negative_group_share
    (`negative_group_signal_share`)."""
    confidence, right = pibar(seq_logprobs, lengths), correct > 0
    return {
        **group_outcomes(correct, group_size),
        "pibar/correct": confidence[right].mean().item() if right.any() else math.nan,
        "pibar/wrong": confidence[~right].mean().item() if (~right).any() else math.nan,
        "adv/negative_group_share": negative_group_signal_share(advantages, correct, group_size),
    }
