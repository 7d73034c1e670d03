"""Typed run configuration: defaults here, YAML files and `key=value` overrides are deltas over them.

Every field has a bound and a one-line docstring; invalid values and unknown keys raise a
`ConfigError` that names the key. The resolved config is written into every run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(_Section):
    name_or_path: str = "testbed"
    """Hub id or local folder of an AutoModelForCausalLM; "testbed" is the built-in base policy."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype for training and sampling."""
    device: str = "auto"
    """"auto" (CUDA if present, else CPU), "cpu", "cuda" or "cuda:N"."""


class DataConfig(_Section):
    train: str = "testbed"
    """"testbed" (generated arithmetic) or a JSON Lines file of problems."""
    eval: str = "testbed"
    """"testbed" (held-out generated problems) or a JSON Lines file of problems."""
    train_levels: list[int] = [1, 2, 3, 4, 5]
    """Testbed levels mixed evenly into the training set."""
    train_size: int = Field(20_000, ge=1)
    """Number of generated testbed training problems."""
    eval_levels: list[int] = [1, 2, 3, 4, 5]
    """Levels evaluated (testbed), or kept from the eval file (rows without a level are kept)."""
    eval_per_level: int = Field(100, ge=1)
    """Evaluation problems per level (testbed), or the cap per level for an eval file."""
    prompt_field: str = "problem"
    """Field holding the question in a JSON Lines file."""
    answer_field: str = "answer"
    """Field holding the gold answer in a JSON Lines file."""
    prompt_template: str = "{prompt}"
    """Text around the question; `{prompt}` is replaced by it (files only)."""


class RolloutConfig(_Section):
    questions_per_step: int = Field(32, ge=1)
    """Questions per rollout batch (Q)."""
    group_size: int = Field(16, ge=2)
    """Samples per question (G)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; behaviour log-probs are taken at the same temperature."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling threshold (1.0 = off)."""
    max_new_tokens: int = Field(96, ge=1)
    """Longest response; longer ones are cut and scored as they are."""
    generation_batch_size: int = Field(512, ge=1)
    """Sequences sampled together."""


class AlgoConfig(_Section):
    advantage: Literal["lens", "grpo"] = "lens"
    """Advantage estimator: LENS (calibrated rewards for wrong answers) or plain GRPO."""
    alpha: float = Field(0.25, ge=0)
    """LENS weight of negative-group advantages (the paper uses 0.25)."""
    scope: Literal["all", "mixed", "negative"] = "all"
    """LENS ablation: recalibrate wrong answers in all groups, mixed groups only, negative groups only."""
    d_estimator: Literal["normalized", "sequence"] = "normalized"
    """LENS D(q) importance estimate from length-normalised (pibar) or raw sequence probabilities."""
    scale: Literal["group", "batch", "none"] = "group"
    """GRPO advantage scale: group std, batch std, or none."""
    eps: float = Field(1e-6, gt=0)
    """Added to the std in advantage normalisation."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """Lower ratio clip: rho >= 1 - clip_low."""
    clip_high: float = Field(0.2, ge=0)
    """Upper ratio clip: rho <= 1 + clip_high."""
    loss_agg: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = "seq-mean-token-mean"
    """How per-token losses are averaged (paper Eq. 3 is the default)."""
    kl_coef: float = Field(0.0, ge=0)
    """k3 KL penalty to the initial policy; the reference model is loaded only when > 0."""


class OptimConfig(_Section):
    lr: float = Field(3e-5, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up in optimizer steps, then constant."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    updates_per_rollout: int = Field(4, ge=1)
    """Minibatches (optimizer steps) per rollout batch; the paper uses 4."""
    micro_batch_size: int = Field(128, ge=1)
    """Sequences per forward/backward pass (gradient accumulation inside a minibatch)."""


class RunConfig(_Section):
    steps: int = Field(40, ge=0)
    """Rollout steps (each does `updates_per_rollout` optimizer steps)."""
    seed: int = 0
    """Seed of data order, sampling and initialisation."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every this many steps (0: only before and after training)."""
    eval_samples: int = Field(16, ge=1)
    """Samples per evaluation problem (pass@k up to this k)."""
    save_every: int = Field(0, ge=0)
    """Checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    output_dir: str | None = None
    """Run folder; default: a new folder under runs/."""
    progress: bool = True
    """Show progress bars."""


class TrainConfig(_Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        n = self.rollout.questions_per_step
        if n % self.optim.updates_per_rollout != 0:
            raise ValueError(
                f"rollout.questions_per_step={n} must be divisible by optim.updates_per_rollout="
                f"{self.optim.updates_per_rollout} (each minibatch holds whole groups)"
            )
        for lvl in self.data.train_levels + self.data.eval_levels:
            if not 1 <= lvl <= 5:
                raise ValueError(f"levels must lie in 1..5, got {lvl}")
        return self


def _merge(base: dict[str, Any], delta: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. algo.alpha=0.5)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file's deltas, then `key=value` overrides; validated."""
    data: dict[str, Any] = TrainConfig().model_dump()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        delta = yaml.safe_load(path.read_text()) or {}
        if not isinstance(delta, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections")
        data = _merge(data, delta)
    for item in overrides or []:
        data = _merge(data, _parse_override(item))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            got = f" (got {err.get('input')!r})" if loc else ""
            lines.append(f"  {loc or '(config)'}: {msg}{got}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
