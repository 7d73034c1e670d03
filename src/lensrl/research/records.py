"""A study's committed record of one run (`runs/<arm>_seed<s>.json`): what its report and figures are
made from, without the run folder."""

from __future__ import annotations

from dataclasses import dataclass

from lensrl.evaluation.evaluate import EvalResult

# logged only every few steps (None in a run's curves at the other steps, absent from older records)
DIAGNOSTICS = ("diag/cosine", "diag/rel_diff", "diag/negative_share")
# the run's compute since step 1 after each step (absent from records of runs before compute accounting)
COMPUTE_TOTALS = (
    "compute/total_prompts",
    "compute/total_samples",
    "compute/total_tokens",
    "compute/total_samples_updated",
)
CURVE_METRICS = (
    "reward",
    "groups/negative",
    "adv/negative_group_share",
    "response_len/mean",
    "entropy",
    "grad_norm",
    "clipfrac",
    "groups/updated",
    "time/step",
    "time/update",
    *DIAGNOSTICS,
    *COMPUTE_TOTALS,
)


@dataclass
class RunRecord:
    """One (arm, seed) run of a study, the part of it that is committed (`runs/<arm>_seed<s>.json`):
    its evaluations, its per-step curves (`CURVE_METRICS` and "step", a list per key, None at the steps
    that do not log the key), the samples it drew per step and its resolved config (`TrainConfig.model_dump()`:
    with it, the record stands for the finished run, `train_arms` reuses it). `to_json` writes back
    exactly the JSON `from_json` read.

    The curves' `COMPUTE_TOTALS` map any step, so any evaluation, to the samples and tokens generated
    up to it (`samples_at`, `tokens_at`); records of runs from before compute accounting lack them:
    their samples are step x `samples_per_step` (every step generated that many), their tokens unknown."""

    arm: str
    seed: int
    evals: list[EvalResult]
    curves: dict[str, list[float | None]]
    samples_per_step: int
    config: dict

    @classmethod
    def from_json(cls, record: dict) -> RunRecord:
        return cls(
            record["arm"],
            record["seed"],
            [EvalResult.from_json(e) for e in record["evals"]],
            record["curves"],
            record["samples_per_step"],
            record["config"],
        )

    def to_json(self) -> dict:
        return {
            "arm": self.arm,
            "seed": self.seed,
            "evals": [e.to_json() for e in self.evals],
            "curves": self.curves,
            "samples_per_step": self.samples_per_step,
            "config": self.config,
        }

    def total_at(self, key: str, step: int) -> float | None:
        """The recorded total `key` (one of `COMPUTE_TOTALS`) after `step`: 0 at step 0, None where the
        record does not have it."""
        if step == 0:
            return 0
        values, steps = self.curves.get(key), self.curves.get("step", [])
        return values[steps.index(step)] if values and step in steps else None

    def samples_at(self, step: int) -> float:
        """The samples generated up to `step`: recorded, else step x `samples_per_step`."""
        recorded = self.total_at("compute/total_samples", step)
        return step * self.samples_per_step if recorded is None else recorded

    def tokens_at(self, step: int) -> float | None:
        """The response tokens generated up to `step`; None where the record has no token counts."""
        return self.total_at("compute/total_tokens", step) if self.has_tokens else None

    @property
    def has_tokens(self) -> bool:
        """The record counts generated tokens (a run since compute accounting)."""
        return any(v is not None for v in self.curves.get("compute/total_tokens", []))

    def compute_at(self, axis: str, step: int) -> float | None:
        """The x of `step` on a compute axis: "step" (the step itself), "samples" or "tokens" (`samples_at`,
        `tokens_at`)."""
        if axis == "step":
            return step
        if axis == "samples":
            return self.samples_at(step)
        if axis == "tokens":
            return self.tokens_at(step)
        raise ValueError(f"unknown axis {axis!r}: step, samples or tokens")
