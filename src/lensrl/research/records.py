"""A study's committed record of one run (`runs/<arm>_seed<s>.json`): what its report and figures are
made from, without the run folder."""

from __future__ import annotations

from dataclasses import dataclass

from lensrl.evaluation.evaluate import EvalResult

# logged only every few steps (None in a run's curves at the other steps, absent from older records)
DIAGNOSTICS = ("diag/cosine", "diag/rel_diff", "diag/negative_share")
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
)


@dataclass
class RunRecord:
    """One (arm, seed) run of a study, the part of it that is committed (`runs/<arm>_seed<s>.json`):
    its evaluations, its per-step curves (`CURVE_METRICS` and "step", a list per key, None at the steps
    that do not log the key), the samples it drew per step and its resolved config (`TrainConfig.model_dump()`:
    with it, the record stands for the finished run, `train_arms` reuses it). `to_json` writes back
    exactly the JSON `from_json` read."""

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
