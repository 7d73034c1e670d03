"""LENS in verl (lensrl.integrations.verl): registry, batch format, verl's compute_advantage, launch config.

CPU only; skipped where verl (with ray, tensordict, hydra) is not installed.
"""

import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
lv = pytest.importorskip("lensrl.integrations.verl")
ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from lensrl.core.advantages import LOGPROB_ROUNDOFF, LensSettings, lens_advantages  # noqa: E402

G = 4
L = 7  # padded response length
OUTCOMES = {"mixed": [1, 0, 1, 0], "negative": [0, 0, 0, 0], "all_correct": [1, 1, 1, 1], "one_right": [0, 0, 1, 0]}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "verl.md"


@pytest.fixture(scope="module", autouse=True)
def installed():
    lv.install()


def make_batch(seed=0, outcomes=OUTCOMES, group_size=None):
    """A verl batch: reward on the last valid token, varying lengths, junk old_log_probs on padding, shuffled uids."""
    gen = torch.Generator().manual_seed(seed)
    uids = [f"uid-{name}" for name, rs in outcomes.items() for _ in rs]
    correct = torch.tensor([r for rs in outcomes.values() for r in rs], dtype=torch.float32)
    n = len(uids)
    lengths = torch.randint(1, L + 1, (n,), generator=gen)
    lengths[0] = L  # one full-length response
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (n, L), verl's int attention-mask dtype
    rewards = torch.zeros(n, L)
    rewards[torch.arange(n), lengths - 1] = correct
    old_log_probs = torch.where(mask.bool(), -1.5 * torch.rand(n, L, generator=gen), torch.full((n, L), float("nan")))
    perm = torch.randperm(n, generator=gen)  # rows of a group end up scattered
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": rewards[perm],
            "response_mask": mask[perm],
            "old_log_probs": old_log_probs[perm],
        },
        non_tensors={"uid": np.array(uids, dtype=object)[perm.numpy()]},
    )
    return data


def expected_advantages(data, **settings):
    """lensrl's lens_advantages group by group (rows regrouped by uid), broadcast over valid tokens."""
    mask = data.batch["response_mask"].double()
    scores = data.batch["token_level_rewards"].double().sum(-1)
    seq = data.batch["old_log_probs"].double().nan_to_num(0.0).mul(mask).sum(-1)  # padding holds NaN junk
    lengths = mask.sum(-1)
    uids = data.non_tensor_batch["uid"]
    out = torch.zeros(len(uids), dtype=torch.float64)
    for uid in dict.fromkeys(uids.tolist()):
        rows = torch.tensor(np.flatnonzero(uids == uid))
        out[rows] = lens_advantages(scores[rows], seq[rows], lengths[rows], len(rows), **settings).double()
    return (out.unsqueeze(-1) * mask).float()


def group_rows(data, name):
    return torch.tensor(np.flatnonzero(data.non_tensor_batch["uid"] == f"uid-{name}"))


def test_lens_is_registered_in_verl_registry():
    assert core_algos.get_adv_estimator_fn("lens") is lv.compute_lens_outcome_advantage
    lv.install()  # idempotent
    assert core_algos.get_adv_estimator_fn("lens") is lv.compute_lens_outcome_advantage
    assert ray_trainer.compute_advantage.__wrapped__ is not ray_trainer.compute_advantage


def test_install_patches_modules_that_imported_compute_advantage(monkeypatch):
    """Like verl.trainer.main_ppo_sync, which does `from ray_trainer import compute_advantage`."""
    import types

    stock = ray_trainer.compute_advantage.__wrapped__
    module = types.ModuleType("verl._lensrl_probe")
    module.compute_advantage = stock
    monkeypatch.setitem(sys.modules, "verl._lensrl_probe", module)
    lv.install()
    assert module.compute_advantage is ray_trainer.compute_advantage


def test_estimator_matches_lensrl_on_verl_batch():
    data = make_batch()
    b = data.batch
    adv, ret = lv.compute_lens_outcome_advantage(
        token_level_rewards=b["token_level_rewards"],
        response_mask=b["response_mask"],
        index=data.non_tensor_batch["uid"],
        old_log_probs=b["old_log_probs"],
    )
    expected = expected_advantages(data, alpha=0.25)
    assert adv.shape == (len(data), L) and adv.dtype == torch.float32
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ret, adv)
    assert (adv[b["response_mask"] == 0] == 0).all()
    # each response carries one advantage on all its valid tokens
    per_seq = adv[:, 0]
    assert torch.allclose(adv, per_seq.unsqueeze(-1) * b["response_mask"])

    negative = group_rows(data, "negative")
    assert (per_seq[negative].abs() > 0).all()
    assert (per_seq[group_rows(data, "all_correct")] == 0).all()
    grpo, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=b["token_level_rewards"],
        response_mask=b["response_mask"],
        index=data.non_tensor_batch["uid"],
    )
    assert (grpo[negative] == 0).all()  # GRPO wastes the negative group
    assert grpo[group_rows(data, "mixed")].abs().sum() > 0


def test_compute_advantage_runs_lens_through_verl():
    data = make_batch(seed=1)
    config = OmegaConf.create({"adv_estimator": "lens", "gamma": 1.0, "lam": 1.0, "lens": {"alpha": 0.5}})
    out = ray_trainer.compute_advantage(
        data,
        adv_estimator=config.adv_estimator,
        gamma=1.0,
        lam=1.0,
        num_repeat=G,
        norm_adv_by_std_in_grpo=True,
        config=config,
    )
    torch.testing.assert_close(out.batch["advantages"], expected_advantages(data, alpha=0.5), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.batch["returns"], out.batch["advantages"])

    # verl's AlgoConfig dataclass (no `lens` section): the defaults; positional config works too
    data = make_batch(seed=1)
    out = ray_trainer.compute_advantage(data, "lens", 1.0, 1.0, G, True, AlgoConfig(adv_estimator="lens"))
    torch.testing.assert_close(out.batch["advantages"], expected_advantages(data, alpha=0.25), rtol=1e-5, atol=1e-7)

    # other estimators are verl's, unchanged
    data = make_batch(seed=1)
    out = ray_trainer.compute_advantage(data, adv_estimator=core_algos.AdvantageEstimator.GRPO, num_repeat=G)
    grpo, _ = core_algos.compute_grpo_outcome_advantage(
        data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch["uid"]
    )
    torch.testing.assert_close(out.batch["advantages"], grpo)


def test_response_mask_derived_when_absent():
    data = make_batch(seed=2)
    expected = expected_advantages(data)
    mask = data.batch.pop("response_mask")
    prompts = torch.ones(len(data), 3, dtype=torch.long)
    data.batch["attention_mask"] = torch.cat([prompts, mask], dim=1)
    data.batch["responses"] = torch.zeros(len(data), L, dtype=torch.long)
    out = lv.compute_lens_advantage(data, None)
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-7)


def test_stock_compute_advantage_without_plumbing_raises():
    stock = ray_trainer.compute_advantage.__wrapped__  # verl's own function: no old_log_probs for estimators
    with pytest.raises(RuntimeError, match="install"):
        stock(make_batch(), adv_estimator="lens", num_repeat=G, config=AlgoConfig(adv_estimator="lens"))


def test_settings_from_algorithm_config():
    data = make_batch(seed=3)
    negative = group_rows(data, "negative")

    def run(lens):
        config = OmegaConf.create({"adv_estimator": "lens", **({"lens": lens} if lens is not None else {})})
        return lv.compute_lens_advantage(make_batch(seed=3), config).batch["advantages"][:, 0]

    base = run(None)
    torch.testing.assert_close(run({"alpha": 0.5})[negative], 2 * base[negative])
    assert (run({"scope": "mixed"})[negative] == 0).all()
    assert lv.lens_settings({"lens": {"d_estimator": "sequence", "eps": "1e-5"}})["eps"] == 1e-5
    with pytest.raises(ValueError, match=r"^algorithm\.lens\.alpah: unknown LENS setting; known: algorithm\.lens\."):
        run({"alpah": 0.5})
    with pytest.raises(ValueError, match=r"^algorithm\.lens\.scope: scope must be one of"):
        run({"scope": "everything"})


def test_settings_take_their_defaults_from_core():
    core = dataclasses.asdict(LensSettings())
    assert lv.LENS_DEFAULTS == core
    assert lv.lens_settings(None) == core
    assert lv.lens_settings(AlgoConfig(adv_estimator="lens")) == core  # verl's dataclass has no `lens` section
    assert lv.lens_settings(OmegaConf.create({"adv_estimator": "lens", "lens": {}})) == core
    given = lv.lens_settings(OmegaConf.create({"lens": {"alpha": 1, "scope": "negative"}}))
    assert given == dataclasses.asdict(LensSettings(alpha=1.0, scope="negative"))
    assert isinstance(given["alpha"], float)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("alpha", -1.0, "alpha must be a finite number >= 0, got -1.0"),
        ("alpha", "lots", "alpha must be a finite number >= 0, got 'lots'"),
        ("alpha", "nan", "alpha must be a finite number"),
        ("scope", "both", "scope must be one of .*got 'both'"),
        ("d_estimator", "seq", "d_estimator must be one of .*got 'seq'"),
        ("eps", 0.0, "eps must be a finite number > 0, got 0.0"),
    ],
    ids=["negative_alpha", "text_alpha", "nan_alpha", "scope", "d_estimator", "zero_eps"],
)
def test_invalid_settings_name_the_key(key, value, match):
    config = OmegaConf.create({"adv_estimator": "lens", "lens": {"alpha": 0.5, key: value}})
    with pytest.raises(ValueError, match=rf"^algorithm\.lens\.{key}: {match}"):
        lv.lens_settings(config)
    with pytest.raises(ValueError, match=rf"^algorithm\.lens\.{key}: "):  # the estimator's own entry point
        lv.compute_lens_advantage(make_batch(), config)
    with pytest.raises(ValueError, match="algorithm.lens must be a mapping"):
        lv.lens_settings({"lens": 0.5})


def test_logprob_sum_slightly_above_zero_is_read_as_zero():
    # one group of G through verl's estimator: row 0 is a near-certain response whose token log-probs sum to
    # +5e-4 (round-off), row 3 has a token a hair above 0 inside a negative sum; padding holds junk
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    old = torch.tensor([[3e-4, 2e-4, 8.0], [-0.4, -0.1, -1.0], [-1.5, 8.0, 8.0], [-0.2, 1e-5, 8.0]])
    rewards = torch.zeros(G, 3)
    index = np.array(["u"] * G, dtype=object)
    lengths = mask.sum(-1).double()
    for correct in ([0, 1, 0, 1], [0, 0, 0, 0]):  # a mixed and a negative group
        rewards[:, 0] = torch.tensor(correct, dtype=torch.float32)
        adv, _ = lv.compute_lens_outcome_advantage(rewards, mask, index, old_log_probs=old)
        seq = torch.where(mask.bool(), old.double(), 0.0).sum(-1)
        assert 0 < seq[0].item() <= LOGPROB_ROUNDOFF
        as_zero = torch.cat([torch.zeros(1, dtype=torch.float64), seq[1:]])
        expected = lens_advantages(torch.tensor(correct).double(), as_zero, lengths, G).float()
        torch.testing.assert_close(adv[:, 0], expected, rtol=1e-6, atol=1e-7)
        assert adv[:, 0].abs().max() > 0

    old[0, 1] = 0.5  # clearly above 0: not round-off
    with pytest.raises(ValueError, match="seq_logprobs must be <= 0"):
        lv.compute_lens_outcome_advantage(rewards, mask, index, old_log_probs=old)


def test_non_binary_rewards_raise():
    data = make_batch()
    data.batch["token_level_rewards"][0, 0] += 0.5
    with pytest.raises(ValueError, match="binary"):
        lv.compute_lens_advantage(data, None)


@pytest.mark.parametrize(
    "outcomes, match",
    [
        ({"a": [1, 0, 1], "b": [0, 0, 0, 0]}, "same number"),
        ({"a": [1], "b": [0]}, "at least 2"),
    ],
)
def test_bad_groups_raise(outcomes, match):
    with pytest.raises(ValueError, match=match):
        lv.compute_lens_advantage(make_batch(outcomes=outcomes), None)


def test_missing_fields_raise():
    data = make_batch()
    data.batch.pop("old_log_probs")
    with pytest.raises(KeyError, match="old_log_probs"):
        lv.compute_lens_advantage(data, None)
    data = make_batch()
    data.non_tensor_batch.pop("uid")
    with pytest.raises(KeyError, match="uid"):
        lv.compute_lens_advantage(data, None)


def test_compute_score_through_verl_loader():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://lensrl.integrations.verl",
                    "name": "compute_score",
                    "reward_kwargs": {"timeout_s": 2.0},
                }
            }
        }
    )
    score = get_custom_reward_fn(config)
    right = score(data_source="math", solution_str="So the total is \\boxed{42}.", ground_truth="42", extra_info={})
    wrong = score(data_source="math", solution_str="So the total is \\boxed{41}.", ground_truth="42", extra_info={})
    assert (right, wrong) == (1.0, 0.0)
    assert lv.compute_score("math", "no final answer", "42") == 0.0
    assert lv.compute_score("math", "#### 1,234", 1234) == 1.0


def test_write_verl_parquet(tmp_path):
    import pandas as pd

    from lensrl.records import Problem

    problems = [Problem(prompt="1+1?", answer="2", level=1, id="p0"), Problem(prompt="2+3?", answer="5", id="p1")]
    path = tmp_path / "train.parquet"
    assert lv.write_verl_parquet(problems, str(path), template="Q: {prompt}", system="Be brief.") == 2
    df = pd.read_parquet(path)
    assert set(df.columns) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert [m["role"] for m in df.prompt[0]] == ["system", "user"] and df.prompt[0][1]["content"] == "Q: 1+1?"
    assert df.reward_model[1]["ground_truth"] == "5" and df.reward_model[1]["style"] == "rule"

    from verl.utils.dataset.rl_dataset import RLHFDataset  # verl's own loader reads it

    from lensrl.testbed import build_tokenizer

    config = OmegaConf.create({"max_prompt_length": 64, "filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    row = RLHFDataset(data_files=[str(path)], tokenizer=build_tokenizer(), config=config, processor=None)[1]
    assert row["raw_prompt"][-1]["content"] == "Q: 2+3?" and row["reward_model"]["ground_truth"] == "5"


def documented_command(text):
    """The overrides of the `python -m lensrl.integrations.verl` command in `text` (backslash continuations)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("python -m lensrl.integrations.verl"))
    command = []
    for line in lines[start:]:
        line = line.strip()
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(command))[3:]


def test_documented_overrides_name_keys_of_verl_config():
    """Without Hydra: every plain override names a key of verl's config, every `+` override a new key."""
    import verl.trainer.config as config_pkg

    config = OmegaConf.load(Path(config_pkg.__file__).parent / "_generated_ppo_trainer.yaml")
    overrides = documented_command(DOCS.read_text())
    assert "algorithm.adv_estimator=lens" in overrides

    def has_key(dotted):
        parent, _, leaf = dotted.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        return OmegaConf.is_dict(node) and leaf in node.keys()

    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("+"):
            assert not has_key(key.lstrip("+")), f"{key}: already in verl's config, drop the '+'"
        else:
            assert has_key(key), f"{key}: not a key of verl's config"
    assert has_key("ray_kwargs.ray_init")  # where SETUP_HOOK_OVERRIDE adds runtime_env.worker_process_setup_hook


def hydra_composes_verl_config():
    import hydra
    from packaging.version import Version

    return Version(hydra.__version__) < Version("1.4.0.dev0")


@pytest.mark.skipif(
    not hydra_composes_verl_config(),
    reason="verl 0.8's Hydra config ('..' paths in defaults lists) needs hydra-core 1.3, and hydra-core 1.3 needs "
    "antlr4-python3-runtime 4.9 (an environment with Math-Verify on antlr 4.13 has hydra-core 1.4)",
)
@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
def test_documented_launch_command_reaches_verl_main(monkeypatch, tmp_path):
    """The documented overrides compose with verl's Hydra config, get the setup hook, and reach run_ppo."""
    import verl.trainer.main_ppo as main_ppo

    overrides = documented_command(DOCS.read_text())
    captured = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: captured.setdefault("config", config))
    monkeypatch.chdir(tmp_path)  # Hydra's output directory
    lv.main(overrides)
    c = captured["config"]
    assert c.algorithm.adv_estimator == "lens" and lv.lens_settings(c.algorithm)["alpha"] == 0.25
    assert c.algorithm.use_kl_in_reward is False and c.actor_rollout_ref.actor.use_kl_loss is False
    assert c.actor_rollout_ref.rollout.n == 16 and c.actor_rollout_ref.rollout.temperature == 1.0
    assert c.actor_rollout_ref.rollout.top_p == 1.0
    assert c.data.train_batch_size == 128 and c.data.max_response_length == 4096
    assert c.actor_rollout_ref.actor.ppo_mini_batch_size == 32 and c.actor_rollout_ref.actor.clip_ratio == 0.2
    assert c.actor_rollout_ref.actor.optim.lr == 1e-6 and c.actor_rollout_ref.actor.entropy_coeff == 0
    assert c.reward.custom_reward_function.path == "pkg://lensrl.integrations.verl"
    assert c.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == "lensrl.integrations.verl.install"


@pytest.mark.slow
def test_ray_setup_hook_installs_lens_in_workers():
    """Ray runs install() in a fresh worker process (as in verl's TaskRunner actor)."""
    ray = pytest.importorskip("ray")

    def probe():
        from verl.trainer.ppo import core_algos, ray_trainer

        return core_algos.get_adv_estimator_fn("lens").__name__, hasattr(ray_trainer.compute_advantage, "__wrapped__")

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"worker_process_setup_hook": lv.SETUP_HOOK})
    try:
        assert ray.get(ray.remote(probe).remote()) == ("compute_lens_outcome_advantage", True)
    finally:
        ray.shutdown()


def test_clear_import_error_without_verl(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "verl", None)  # as if verl were not installed
    monkeypatch.delitem(sys.modules, "lensrl.integrations.verl")
    with pytest.raises(ImportError, match="pip install"):
        importlib.import_module("lensrl.integrations.verl")
    import lensrl

    assert callable(lensrl.lens_advantages)  # lensrl itself never needs verl
