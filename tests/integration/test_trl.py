"""LENS inside TRL's GRPOTrainer (lensrl.integrations.trl) on tiny random models, on the CPU."""

import dataclasses
import functools
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from lensrl import lens_advantages, selective_logprobs  # noqa: E402
from lensrl.core.advantages import LOGPROB_ROUNDOFF, LensSettings, group_metrics  # noqa: E402
from lensrl.integrations.trl import LensGRPOConfig, LensGRPOTrainer, math_reward  # noqa: E402

G = 4
TEMPERATURE = 0.7


def _config(cls, tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        max_steps=2,
        per_device_train_batch_size=2 * G,
        num_generations=G,
        max_completion_length=8,
        temperature=TEMPERATURE,
        learning_rate=1e-2,
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
        shuffle_dataset=False,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def _text_dataset():
    # even rows always score 0 (a negative group), odd rows score by completion length (usually mixed)
    rows = [{"prompt": f"Q{i}: {i}+{i}=", "answer": "neg" if i % 2 == 0 else "len"} for i in range(8)]
    return Dataset.from_list(rows)


def _parity_reward():
    def parity_reward(completions, answer, **kwargs):
        rewards = [0.0 if a == "neg" else float(len(c) % 2 == 0) for c, a in zip(completions, answer, strict=True)]
        parity_reward.calls.append(rewards)
        return rewards

    parity_reward.calls = []
    return parity_reward


class _Recorder:
    """Records what `_generate_and_score_completions` returned, and the no-grad log-prob passes inside it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []
        self._nograd_logp_calls = 0

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            self._nograd_logp_calls += 1
        return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        calls = self._nograd_logp_calls
        out = super()._generate_and_score_completions(inputs)
        record = {"answers": [x["answer"] for x in inputs], "logp_passes": self._nograd_logp_calls - calls}
        record.update({k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)})
        record["reference_logps"] = self._reference_logps(out)
        record["lens"] = getattr(self, "lens_last_batch", None)
        self.records.append(record)
        return out

    @torch.no_grad()
    def _reference_logps(self, out):
        # log pi of the completion tokens at the sampling temperature, from the plain model forward (not TRL's
        # fused head) at the weights that sampled: nothing has been updated since generation
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        c = out["completion_ids"].size(1)
        lp, _ = selective_logprobs(logits[:, -c - 1 : -1], out["completion_ids"], temperature=TEMPERATURE)
        return lp


class RecordingLensTrainer(_Recorder, LensGRPOTrainer):
    pass


class RecordingGRPOTrainer(_Recorder, GRPOTrainer):
    pass


NATIVE_METRICS = (
    "groups/negative",
    "groups/mixed",
    "groups/all_correct",
    "pibar/correct",
    "pibar/wrong",
    "adv/negative_group_share",
)


def _params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_lens_trainer_trains_tiny_chat_model_and_logs_lens_metrics(tiny_chat_model_dir, tmp_path):
    questions = [("What is 2+3?", "5"), ("Compute 12-7.", "5"), ("What is 1+1?", "2"), ("What is 3*3?", "9")]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in questions * 2])
    args = _config(  # TRL's default gradient checkpointing stays on; one evaluation at the end
        LensGRPOConfig,
        tmp_path,
        lens_alpha=0.5,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=G,
    )
    trainer = LensGRPOTrainer(
        model=str(tiny_chat_model_dir),
        reward_funcs=math_reward,
        train_dataset=ds,
        eval_dataset=ds.select([0]),
        args=args,
    )
    assert trainer.lens_alpha == 0.5 and trainer.lens_scope == "all" and trainer.lens_d_estimator == "normalized"
    assert trainer.args.gradient_checkpointing
    before = _params(trainer)
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "groups/negative" in entry]
    assert len(logs) == 2
    assert any("eval_groups/negative" in entry for entry in trainer.state.log_history)
    for key in NATIVE_METRICS:  # the native trainer's names (pibar/correct: None, as no answer is right)
        assert key in logs[0], key
    assert not any(key.startswith("lens/") for entry in trainer.state.log_history for key in entry)
    # a random model never boxes the right answer: every group is negative, so GRPO would not move at all
    assert all(entry["groups/negative"] == 1.0 for entry in logs)
    assert all(entry["adv/negative_group_share"] == 1.0 for entry in logs)
    after = _params(trainer)
    assert any(not torch.equal(before[n], after[n]) for n in before), "no parameter changed"
    assert trainer.lens_last_batch["advantages"].abs().max() > 0


@pytest.mark.parametrize(
    "schedule",
    [
        # on-policy: TRL skips old_per_token_logps, the LENS trainer runs one no-grad pass itself
        dict(per_device_train_batch_size=2 * G),
        # steps_per_generation=2 > gradient_accumulation_steps=1: TRL computes them and LENS reuses them
        dict(per_device_train_batch_size=G, steps_per_generation=2),
    ],
    ids=["on_policy", "trl_old_logps"],
)
def test_negative_group_gets_lens_advantages_and_zero_under_grpo(tiny_model_dir, tmp_path, schedule):
    ds, trl_has_old = _text_dataset(), "steps_per_generation" in schedule
    reward = _parity_reward()
    lens = RecordingLensTrainer(
        model=str(tiny_model_dir),
        reward_funcs=reward,
        train_dataset=ds,
        args=_config(LensGRPOConfig, tmp_path / "lens", **schedule),
    )
    lens.train()
    assert len(lens.records) == len(reward.calls) == (1 if trl_has_old else 2)
    for rec, rewards in zip(lens.records, reward.calls, strict=True):
        answers = rec["answers"]
        assert len(answers) == 2 * G
        assert all(len(set(answers[i : i + G])) == 1 for i in range(0, 2 * G, G))  # groups are consecutive
        assert ("old_per_token_logps" in rec) == trl_has_old
        assert rec["logp_passes"] == 1  # TRL's pass or the LENS trainer's, never both

        # the inputs LENS must use: TRL's old log-probs when it has them, else the sampling policy's, both at
        # the sampling temperature, summed over the completion mask
        mask = rec["completion_mask"]
        correct, lengths = torch.tensor(rewards), mask.sum(dim=1)
        reference = (rec["reference_logps"] * mask).sum(dim=1)
        if trl_has_old:
            seq = (rec["old_per_token_logps"] * mask).sum(dim=1)
            torch.testing.assert_close(seq, reference, atol=1e-4, rtol=1e-4)
            tol = dict(atol=1e-6, rtol=1e-6)
        else:
            seq, tol = reference, dict(atol=1e-4, rtol=1e-3)
        expected = lens_advantages(correct, seq, lengths, G)  # alpha=0.25, scope="all", d_estimator="normalized"
        torch.testing.assert_close(rec["advantages"], expected, **tol)
        assert torch.equal(rec["lens"]["correct"], correct)
        assert torch.equal(rec["lens"]["lengths"], lengths)

        neg = torch.tensor([a == "neg" for a in answers])
        assert neg.any() and (correct[neg] == 0).all()
        assert rec["advantages"][neg].abs().min() > 0, "a negative group got zero LENS advantages"

    grpo = RecordingGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=_parity_reward(),
        train_dataset=ds,
        args=_config(GRPOConfig, tmp_path / "grpo", **schedule),
    )
    grpo.train()
    assert grpo.records
    for rec in grpo.records:
        neg = torch.tensor([a == "neg" for a in rec["answers"]])
        assert neg.any()
        assert torch.equal(rec["advantages"][neg], torch.zeros(int(neg.sum())))


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama made confident, saved and loaded back like any checkpoint. A random init has near-uniform
    next-token distributions, whose log-probs barely move with the temperature; its (untied) LM head scaled up
    gives logits of std about 3, where log pi at temperature 0.7 is far from log pi at 1. The EOS row is then
    raised along the mean final hidden state, so that many completions stop early and leave padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert not model.config.tie_word_embeddings
    with torch.no_grad():
        hidden = model.model(**tokenizer(["Q12: 12+12="], return_tensors="pt")).last_hidden_state[0]
        mean = hidden.mean(dim=0)
        head = model.lm_head.weight
        head.mul_(30.0)
        head[tokenizer.eos_token_id] += 8.0 * mean / mean.square().sum()  # EOS logit +8 along the mean state
    path = tmp_path_factory.mktemp("sharp_llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class LogprobRecordingLensTrainer(LensGRPOTrainer):
    """Records, per generation batch, the per-token log-probs LENS summed (TRL's `old_per_token_logps`, or the
    LENS trainer's own pass when TRL has none), the sums and lengths LENS used, how many no-grad passes went
    through TRL's fused LM head (`add_fused_lm_head`'s forward with `fused_lm_head=True`), and references from
    the model's own forward (full logits) at the sampling temperature and at 1."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []
        self._own_logps = None
        self._fused_nograd_passes = 0
        forward = self.model.forward  # TRL's wrapper around the model's own forward

        @functools.wraps(forward)  # generate validates its model kwargs against the signature
        def counting_forward(*args, **kwargs):
            if kwargs.get("fused_lm_head") and not torch.is_grad_enabled():
                self._fused_nograd_passes += 1
            return forward(*args, **kwargs)

        self.model.forward = counting_forward

    def _lens_old_logprobs(self, output, mode):
        self._own_logps = super()._lens_old_logprobs(output, mode)
        return self._own_logps

    def _generate_and_score_completions(self, inputs):
        self._own_logps, passes = None, self._fused_nograd_passes
        out = super()._generate_and_score_completions(inputs)
        trl_old = out.get("old_per_token_logps")
        self.records.append(
            {
                "trl_old": trl_old is not None,
                "own": self._own_logps is not None,
                "per_token": (trl_old if trl_old is not None else self._own_logps).detach().clone(),
                "mask": out["completion_mask"].bool(),
                "prompt_mask": out["prompt_mask"].bool(),
                "seq_logprobs": self.lens_last_batch["seq_logprobs"],
                "lengths": self.lens_last_batch["lengths"],
                "fused_passes": self._fused_nograd_passes - passes,
                "reference": self._plain_logps(out, TEMPERATURE),
                "untempered": self._plain_logps(out, 1.0),
            }
        )
        return out

    @torch.no_grad()
    def _plain_logps(self, out, temperature):
        # log_softmax(logits / T) at the sampled completion tokens, from the full logits of the model's own forward
        # (no fused head), at the weights that sampled: nothing has been updated since generation
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        logits = self.model(input_ids=ids, attention_mask=attention).logits.float()
        c = out["completion_ids"].size(1)
        logps = torch.log_softmax(logits[:, -c - 1 : -1] / temperature, dim=-1)
        return logps.gather(-1, out["completion_ids"].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize(
    "overrides, trl_has_old",
    [
        (dict(), False),  # TRL's defaults (num_iterations=1, on-policy): the LENS trainer's own pass
        (dict(num_iterations=2), True),  # TRL computes old_per_token_logps for the ratio; LENS reuses them
        (dict(cast_lm_head_to_fp32=True), False),  # the fused head's other option: the head outside autocast
    ],
    ids=["on_policy", "num_iterations_2", "fp32_lm_head"],
)
def test_confidences_are_fused_head_logprobs_at_the_sampling_temperature(
    sharp_model_dir, tmp_path, overrides, trl_has_old
):
    # TRL 1.16 always scores completions through its fused LM head (add_fused_lm_head, with the config's
    # temperature), never through full logits; LENS's confidences must still be log pi_old(token) at the
    # sampling temperature, here 0.7, over the completion mask. The step's two prompts differ in length (left padding).
    prompts = Dataset.from_list([{"prompt": f"Q{n}: {n}+{n}=", "answer": "len"} for n in (1, 222, 33, 4)])
    trainer = LogprobRecordingLensTrainer(
        model=str(sharp_model_dir),
        reward_funcs=_parity_reward(),
        train_dataset=prompts,
        args=_config(LensGRPOConfig, tmp_path, max_steps=1, **overrides),
    )
    assert trainer.args.temperature == TEMPERATURE != 1.0
    trainer.train()
    assert len(trainer.records) == 1
    (rec,) = trainer.records
    assert (rec["trl_old"], rec["own"]) == (trl_has_old, not trl_has_old)
    assert rec["fused_passes"] == 1  # TRL's pass or the LENS trainer's, through the fused head either way

    mask, reference = rec["mask"], rec["reference"]
    assert (~mask).any() and mask.any(dim=1).all(), "no completion stopped early: the mask is not exercised"
    assert rec["prompt_mask"].sum(dim=1).unique().numel() == 2  # left-padded prompts of two lengths
    # Tolerance: both sides are float32 log-probs (down to about -10 here) of the same weights and tokens. The fused
    # head folds the logits into an online logsumexp, the reference takes log_softmax of the full logits, and the
    # two forwards batch the rows differently, so they differ by float32 round-off: measured <= 1.2e-6 per token
    # and <= 6e-6 per sum of at most 8 tokens. 1e-4 leaves room for other CPUs' kernels and stays far below what a
    # wrong temperature does (checked last: more than 0.1 on some token).
    torch.testing.assert_close(rec["per_token"][mask], reference[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(rec["seq_logprobs"], (reference * mask).sum(dim=1), atol=1e-4, rtol=0)
    assert torch.equal(rec["lengths"], mask.sum(dim=1))
    # the check has teeth: the log-probs at temperature 1 are far from the ones at the sampling temperature
    assert (rec["untempered"] - reference)[mask].abs().max() > 0.1


class EvenConfidenceLensTrainer(_Recorder, LensGRPOTrainer):
    """Its second generation batch has every completion equally confident (as when the G samples of every
    prompt coincide): LENS gives those all-wrong groups no advantage at all."""

    def _lens_sequence_logprobs(self, output, mode):
        seq, lengths = super()._lens_sequence_logprobs(output, mode)
        if len(self.records) == 1:
            seq, lengths = torch.full_like(seq, -2.0), torch.full_like(lengths, 4)
        return seq, lengths


def test_a_logging_window_logs_the_native_metrics_and_the_share_of_its_whole_advantage_mass(tiny_model_dir, tmp_path):
    # every reward 0: every group of both generation batches (one a step, two steps a log) is negative.
    # Batch 1 gets LENS advantages; batch 2 none (equal confidences). The negative groups hold the whole
    # advantage mass of the window, so the share is 1; averaging the batches' shares (1 and 0, TRL's mean of
    # a metric's values over the window) read 0.5, in a run where every group was negative.
    trainer = EvenConfidenceLensTrainer(
        model=str(tiny_model_dir),
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
        train_dataset=_text_dataset(),
        args=_config(LensGRPOConfig, tmp_path, logging_steps=2),
    )
    trainer.train()
    first, second = (rec["lens"] for rec in trainer.records)
    assert first["advantages"].abs().sum() > 0 and torch.equal(second["advantages"], torch.zeros(2 * G))
    (logged,) = [entry for entry in trainer.state.log_history if "groups/negative" in entry]
    assert logged["adv/negative_group_share"] == 1.0
    # every other metric is the shared function's, per batch, averaged over the window as TRL averages its own
    per_batch = [
        group_metrics(b["correct"], b["seq_logprobs"], b["lengths"], b["advantages"], G) for b in (first, second)
    ]
    for key in ("groups/negative", "groups/mixed", "groups/all_correct", "pibar/wrong"):
        assert logged[key] == pytest.approx((per_batch[0][key] + per_batch[1][key]) / 2, rel=1e-12), key
    assert logged["groups/negative"] == 1.0 and logged["pibar/correct"] is None  # no right answer in the window
    assert per_batch[1]["pibar/wrong"] == pytest.approx(math.exp(-2.0 / 4))


def test_non_binary_rewards_raise(tiny_model_dir, tmp_path):
    trainer = LensGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=lambda completions, **kw: [0.5] * len(completions),
        train_dataset=_text_dataset(),
        args=_config(LensGRPOConfig, tmp_path, max_steps=1),
    )
    with pytest.raises(ValueError, match="LENS needs binary verifiable rewards"):
        trainer.train()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("lens_scope", "both", r"^lens_scope: scope must be one of .*got 'both'"),
        ("lens_alpha", -1.0, r"^lens_alpha: alpha must be a finite number >= 0, got -1.0"),
        ("lens_alpha", math.nan, r"^lens_alpha: alpha must be a finite number"),
        ("lens_alpha", "0.5", r"^lens_alpha: alpha must be a finite number"),
        ("lens_d_estimator", "seq", r"^lens_d_estimator: d_estimator must be one of .*got 'seq'"),
    ],
    ids=["scope", "negative_alpha", "nan_alpha", "string_alpha", "d_estimator"],
)
def test_config_rejects_bad_lens_settings_naming_the_field(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        _config(LensGRPOConfig, tmp_path, **{field: value})


def test_config_rejects_truncation_masking(tmp_path):
    with pytest.raises(ValueError, match="mask_truncated_completions"):
        _config(LensGRPOConfig, tmp_path, mask_truncated_completions=True)


def test_lens_settings_take_their_defaults_from_core(tmp_path):
    from lensrl.integrations.trl import _settings_from_args

    defaults = {f.name: f.default for f in dataclasses.fields(LensGRPOConfig) if f.name.startswith("lens_")}
    core = LensSettings()
    assert defaults == {
        "lens_alpha": core.alpha,
        "lens_scope": core.scope,
        "lens_d_estimator": core.d_estimator,
        "lens_normalize_negative": core.normalize_negative,
    }
    assert _settings_from_args(_config(LensGRPOConfig, tmp_path)) == core
    assert _settings_from_args(_config(GRPOConfig, tmp_path)) == core  # a plain GRPOConfig: the defaults
    custom = _config(LensGRPOConfig, tmp_path, lens_alpha=0.5, lens_scope="negative", lens_d_estimator="sequence")
    assert _settings_from_args(custom) == LensSettings(alpha=0.5, scope="negative", d_estimator="sequence")
    normalised = _config(LensGRPOConfig, tmp_path, lens_normalize_negative=True)
    assert _settings_from_args(normalised) == LensSettings(normalize_negative=True)
    with pytest.raises(ValueError, match="^lens_scope: "):  # what the trainer runs on its args, too
        _settings_from_args(SimpleNamespace(lens_alpha=0.25, lens_scope="everything"))
    # the fields' --help is LensSettings' own description of each setting
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(LensGRPOConfig) if f.name.startswith("lens_")}
    assert helps["lens_alpha"] == "LENS: Weight of negative-group advantages (the paper uses 0.25 throughout)."
    assert helps["lens_d_estimator"].startswith("LENS: D_imp from length-normalised confidences (pibar)")


def test_plain_grpo_config_gets_default_lens_settings(tiny_model_dir, tmp_path):
    trainer = LensGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=_parity_reward(),
        train_dataset=_text_dataset(),
        args=_config(GRPOConfig, tmp_path),
    )
    assert trainer.lens_settings == LensSettings()
    assert (trainer.lens_alpha, trainer.lens_scope, trainer.lens_d_estimator) == (0.25, "all", "normalized")


def test_model_card_names_lens_with_its_tag_and_citation_beside_grpo(tiny_model_dir, tmp_path):
    trainer = LensGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=_parity_reward(),
        train_dataset=_text_dataset(),
        args=_config(LensGRPOConfig, tmp_path),
    )
    trainer.create_model_card(model_name="tiny-lens")
    card = (tmp_path / "out" / "README.md").read_text()
    tags = card.split("---")[1]
    assert "- lens" in tags and "- grpo" in tags and "- trl" in tags
    assert "trained with LENS (GRPO with LENS advantages)" in card
    assert "2510.08696" in card and "@article{feng2025lens," in card
    assert "2402.03300" in card  # GRPO's citation is kept beside LENS's


def _bare_trainer(**settings):
    """A LensGRPOTrainer without TRL's setup: enough for the sequence log-prob and advantage steps."""
    trainer = object.__new__(LensGRPOTrainer)
    trainer.lens_settings = LensSettings(**settings)
    return trainer


def test_sequence_logprob_sum_slightly_above_zero_reads_as_zero():
    # one group of G: row 0 is a near-certain completion whose float32 token log-probs sum to +5e-4
    # (round-off), row 2 has a token a hair above 0 inside an ordinary negative sum; padding holds junk
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    old = torch.tensor(
        [
            [2.5e-4, 2.5e-4, 0.0, 9.0],
            [-0.3, -1.2, 7.0, 7.0],
            [-0.5, 1e-5, -0.2, -0.9],
            [-2.0, 5.0, 5.0, 5.0],
        ]
    )
    trainer = _bare_trainer(alpha=0.5)
    seq, lengths = trainer._lens_sequence_logprobs({"completion_mask": mask, "old_per_token_logps": old}, "train")
    assert 0 < seq[0].item() <= LOGPROB_ROUNDOFF and torch.equal(lengths, torch.tensor([3, 2, 4, 1]))
    torch.testing.assert_close(seq[2], torch.tensor(-0.5 + 1e-5 - 0.2 - 0.9))  # not clamped token by token
    for correct in ([0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]):  # a mixed and a negative group
        correct = torch.tensor(correct)
        adv = trainer._lens_advantages(correct, seq, lengths, G)
        as_zero = torch.cat([torch.zeros(1), seq[1:]])
        torch.testing.assert_close(adv, lens_advantages(correct, as_zero, lengths, G, alpha=0.5), rtol=0, atol=0)
        assert adv.abs().max() > 0

    old[0, 1] = 0.5  # clearly above 0: not round-off
    seq, lengths = trainer._lens_sequence_logprobs({"completion_mask": mask, "old_per_token_logps": old}, "train")
    with pytest.raises(ValueError, match="seq_logprobs must be <= 0"):
        trainer._lens_advantages(torch.zeros(G), seq, lengths, G)


def test_math_reward_reads_text_and_chat_completions():
    completions = [
        "so the answer is \\boxed{5}",
        [{"role": "assistant", "content": "12-7 = \\boxed{5}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{4}"}]}],
        "no answer",
    ]
    assert math_reward(completions, answer=["5", "5", "5", "5"]) == [1.0, 1.0, 0.0, 0.0]


def test_lensrl_imports_without_trl():
    code = (
        "import sys; sys.modules['trl'] = None\n"  # makes `import trl` fail
        "import lensrl, lensrl.integrations; lensrl.lens_advantages\n"
        "try:\n    import lensrl.integrations.trl\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ERR" in result.stdout and "pip install" in result.stdout


_TWO_PROCESS_WORKER = """
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, {root!r})
from tests.integration import test_trl as t

model_dir, out, schedule = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
rows = [{{"prompt": f"Q{{i}}: {{i}}+{{i}}=", "answer": "neg" if i % 2 == 0 else "len"}} for i in range(12)]
ds = t.Dataset.from_list(rows)
reward = t._parity_reward()
trainer = t.RecordingLensTrainer(
    model=model_dir, reward_funcs=reward, train_dataset=ds, args=t._config(t.LensGRPOConfig, out, **schedule))
trainer.train()
rank = trainer.accelerator.process_index
torch.save({{"records": trainer.records, "rewards": reward.calls}}, f"{{out}}/rank{{rank}}.pt")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "schedule",
    [dict(per_device_train_batch_size=6), dict(per_device_train_batch_size=6, steps_per_generation=2)],
    ids=["on_policy", "trl_old_logps"],
)
def test_two_processes_compute_lens_over_groups_that_span_processes(tiny_model_dir, tmp_path, schedule):
    # 2 CPU processes x 6 rows: the middle group of each 12-row generation batch is split between the processes
    import json
    from pathlib import Path

    script = tmp_path / "worker.py"
    script.write_text(_TWO_PROCESS_WORKER.format(root=str(Path(__file__).resolve().parents[2])))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(script),
        str(tiny_model_dir),
        str(tmp_path),
        json.dumps(schedule),
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert len(ranks[0]["records"]) == len(ranks[1]["records"]) > 0
    for k, (rec0, rec1) in enumerate(zip(ranks[0]["records"], ranks[1]["records"], strict=True)):
        answers = rec0["answers"] + rec1["answers"]
        assert all(len(set(answers[i : i + G])) == 1 for i in range(0, len(answers), G))
        correct = torch.tensor(ranks[0]["rewards"][k] + ranks[1]["rewards"][k])
        key = "old_per_token_logps" if "steps_per_generation" in schedule else "reference_logps"
        seq = torch.cat([(rec[key] * rec["completion_mask"]).sum(dim=1) for rec in (rec0, rec1)])
        lengths = torch.cat([rec["completion_mask"].sum(dim=1) for rec in (rec0, rec1)])
        expected = lens_advantages(correct, seq, lengths, G)
        torch.testing.assert_close(torch.cat([rec0["advantages"], rec1["advantages"]]), expected, atol=1e-4, rtol=1e-3)
        assert rec0["logp_passes"] == rec1["logp_passes"] == 1
