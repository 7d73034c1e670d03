"""LENS's settings and the names of the estimators' options: plain Python, no torch, so that the run
config (`lensrl.config`) can validate them without loading the tensor code."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

AdvantageScale = Literal["group", "batch", "none"]
LensScope = Literal["all", "mixed", "negative"]
DEstimator = Literal["normalized", "sequence"]


@dataclass(frozen=True)
class LensSettings:
    """LENS's settings with the paper's defaults; the one definition the trainer, TRL and verl share.

    `SETTING_HELP` describes each one. Invalid values raise a ValueError naming the setting.
    """

    alpha: float = 0.25
    scope: LensScope = "all"
    d_estimator: DEstimator = "normalized"
    eps: float = 1e-6
    normalize_negative: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not (
            math.isfinite(self.alpha) and self.alpha >= 0
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.scope not in get_args(LensScope):
            raise ValueError(f"scope must be one of {', '.join(map(repr, get_args(LensScope)))}, got {self.scope!r}")
        if self.d_estimator not in get_args(DEstimator):
            raise ValueError(
                f"d_estimator must be one of {', '.join(map(repr, get_args(DEstimator)))}, got {self.d_estimator!r}"
            )
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not (
            math.isfinite(self.eps) and self.eps > 0
        ):
            raise ValueError(f"eps must be a finite number > 0, got {self.eps!r}")
        if not isinstance(self.normalize_negative, bool):
            raise ValueError(f"normalize_negative must be true or false, got {self.normalize_negative!r}")


SETTING_HELP: dict[str, str] = {
    "alpha": "Weight of negative-group advantages (the paper uses 0.25 throughout).",
    "scope": "Ablation: recalibrate wrong answers in all groups, in mixed groups only, or in negative groups only.",
    "d_estimator": "D_imp from length-normalised confidences (pibar) or raw sequence probabilities (paper Eq. 14).",
    "eps": "Added to the group std in mixed groups (and in negative groups with normalize_negative).",
    "normalize_negative": (
        "Negative groups: alpha (r~ - mean) / (std + eps), normalised like mixed groups, instead of alpha (r~ - mean)."
    ),
}
"""Setting name -> its one-line description (the help of TRL's `lens_*` fields)."""

SETTINGS: tuple[str, ...] = tuple(SETTING_HELP)
"""The names of LENS's settings, in `LensSettings`' order."""


def read_lens_settings(values: Mapping[str, Any], where: str) -> LensSettings:
    """The `LensSettings` of `values` (setting name -> value; `LensSettings`' defaults for those not given):
    the one parser the run config, TRL and verl share.

    Each caller spells the settings its own way (`algo.alpha`, `lens_alpha`, `algorithm.lens.alpha`):
    `where` is the caller's prefix of a setting's key ("algo.", "lens_", "algorithm.lens."). An
    unknown name, or a value `LensSettings` rejects, raises a ValueError that begins with the key
    at fault, e.g. "lens_alpha: alpha must be a finite number >= 0, got -1.0".
    """
    unknown = [name for name in values if name not in SETTINGS]
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown LENS setting; known: {', '.join(where + s for s in SETTINGS)}")
    for name, value in values.items():  # one at a time, so that the error names the one at fault
        try:
            LensSettings(**{name: value})
        except ValueError as exc:
            raise ValueError(f"{where}{name}: {exc}") from None
    return LensSettings(**values)
