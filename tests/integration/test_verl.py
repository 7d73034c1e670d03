"""LENS in verl (lensrl.integrations.verl): registry, batch format, verl's compute_advantage, launch config.

CPU only; skipped where verl (with ray, tensordict, hydra) is not installed. `.ci/run` runs this file
against verl 0.8.0 and 0.9.1; the tests of one version's trainers skip under the other (`only_verl08`,
`only_verl09`). Under verl 0.9 the v1 trainer's tests need TransferQueue and fail without it.
"""

import dataclasses
import math
import shlex
import sys
import types
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
lv = pytest.importorskip("lensrl.integrations.verl")
ray_trainer = pytest.importorskip("verl.trainer.ppo.ray_trainer")

from omegaconf import OmegaConf  # noqa: E402
from packaging.version import Version  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from lensrl.core.advantages import LOGPROB_ROUNDOFF, LensSettings, lens_advantages  # noqa: E402

G = 4
L = 7  # padded response length
OUTCOMES = {"mixed": [1, 0, 1, 0], "negative": [0, 0, 0, 0], "all_correct": [1, 1, 1, 1], "one_right": [0, 0, 1, 0]}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "verl.md"

VERL_VERSION = Version(installed_version("verl"))
only_verl08 = pytest.mark.skipif(
    VERL_VERSION >= Version("0.9"), reason=f"verl 0.8's TransferQueue trainer (main_ppo_sync); have verl {VERL_VERSION}"
)
only_verl09 = pytest.mark.skipif(
    VERL_VERSION < Version("0.9"), reason=f"verl 0.9's trainers (trainer.use_v1); have verl {VERL_VERSION}"
)


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


# A batch worked by hand (G = 2, alpha = 0.25). Every token of a response has the same old log-prob
# log(pibar), so pibar = exp(log-prob sum / tokens) is that token probability.
#   group m, mixed: right pibar 0.5 (3 tokens), wrong pibar 0.25 (2 tokens)
#     D_imp = 1 / ((1/2)(1/0.5)) = 1, floor 2 * 0.5 = 1, so D = 1; wrong r~ = -(1/2) 0.25/(1 - 0.25) = -1/6
#     r~ = [1, -1/6], GRPO-normalised (G = 2, unbiased std (7/6)/sqrt(2)): +-(7/12)/((7/6)/sqrt(2)) = +-0.70711
#   group n, negative: pibar 0.5 (2 tokens) and 0.25 (4 tokens); D = 2 * 0.5 = 1
#     r~ = [-(1/2) 0.5/0.5, -(1/2) 0.25/0.75] = [-1/2, -1/6], mean -1/3
#     A = 0.25 (r~ - mean) = [-1/24, +1/24] = [-0.041667, +0.041667]: the more confident wrong answer is pushed down
#   group c, all right: 0 (GRPO gives group n 0 as well)
HAND = [  # uid, right, tokens, pibar, advantage; groups interleaved as a trainer may order them
    ("m", 1, 3, 0.5, 1 / math.sqrt(2)),
    ("n", 0, 2, 0.5, -1 / 24),
    ("m", 0, 2, 0.25, -1 / math.sqrt(2)),
    ("c", 1, 2, 0.5, 0.0),
    ("n", 0, 4, 0.25, 1 / 24),
    ("c", 1, 1, 0.25, 0.0),
]
HAND_G = 2


def verl_config(**overrides):
    """verl's full PPO trainer config (its generated YAML) with dotted overrides, as the trainer receives it."""
    import verl.trainer.config as config_pkg

    config = OmegaConf.load(Path(config_pkg.__file__).parent / "_generated_ppo_trainer.yaml")
    return OmegaConf.merge(config, OmegaConf.from_dotlist([f"{key}={value}" for key, value in overrides.items()]))


def lens_trainer_config():
    config = verl_config(**{"algorithm.adv_estimator": "lens", "actor_rollout_ref.rollout.n": HAND_G})
    config.algorithm.lens = {"alpha": 0.25}  # what +algorithm.lens.alpha=0.25 adds
    return config


def test_legacy_trainer_step_computes_lens_advantages():
    """RayPPOTrainer.fit's advantage step (verl 0.8's default trainer, verl 0.9's trainer.use_v1=False), by hand."""
    length = max(tokens for _, _, tokens, _, _ in HAND)
    mask = torch.tensor([[1] * t + [0] * (length - t) for _, _, t, _, _ in HAND])
    scores = torch.zeros(len(HAND), length)
    scores[torch.arange(len(HAND)), mask.sum(-1) - 1] = torch.tensor([float(right) for _, right, *_ in HAND])
    old = torch.tensor([math.log(pibar) for *_, pibar, _ in HAND]).unsqueeze(-1) * mask  # 0 on padding, as verl
    batch = DataProto.from_dict(
        tensors={"response_mask": mask, "old_log_probs": old, "token_level_scores": scores},
        non_tensors={"uid": np.array([uid for uid, *_ in HAND], dtype=object)},
    )
    config = lens_trainer_config()
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]  # use_kl_in_reward=False
    out = ray_trainer.compute_advantage(  # the call in RayPPOTrainer.fit, verbatim but for `self.`
        batch,
        adv_estimator=config.algorithm.adv_estimator,
        gamma=config.algorithm.gamma,
        lam=config.algorithm.lam,
        num_repeat=config.actor_rollout_ref.rollout.n,
        norm_adv_by_std_in_grpo=config.algorithm.get("norm_adv_by_std_in_grpo", True),
        config=config.algorithm,
    )
    expected = torch.tensor([adv for *_, adv in HAND], dtype=torch.float32).unsqueeze(-1) * mask
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.batch["returns"], expected, rtol=1e-5, atol=1e-5)
    if VERL_VERSION >= Version("0.9"):  # verl 0.9's legacy trainer calls this module's function by its name
        from verl.trainer import main_ppo_v0

        assert main_ppo_v0.RayPPOTrainer is ray_trainer.RayPPOTrainer
        assert ray_trainer.RayPPOTrainer.fit.__globals__["compute_advantage"] is ray_trainer.compute_advantage


class KVStore:
    """TransferQueue's kv_batch_put / kv_batch_get over a dict: a put merges fields into the rows of its keys
    (creating them), a get returns the selected fields that every row has, as TransferQueue returns them
    (one row per key; equal-length tensors stacked, ragged ones nested, strings a NonTensorStack)."""

    def __init__(self):
        self.rows = {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        from transfer_queue import KVBatchMeta

        for i, key in enumerate(keys):
            row = self.rows.setdefault((partition_id, key), {})
            for name in fields.keys():
                value = fields[name][i]
                row[name] = value if isinstance(value, torch.Tensor) else getattr(value, "data", value)
        return KVBatchMeta(keys=list(keys), tags=list(tags) if tags else [{} for _ in keys], partition_id=partition_id)

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        rows = [self.rows[(partition_id, key)] for key in keys]
        names = [name for name in (select_fields or rows[0]) if all(name in row for row in rows)]
        return list_of_dict_to_tensordict([{name: row[name] for name in names} for row in rows])


def v1_trainer_step(tq, trainer_base, padding_utils):
    """The v1 trainer's path to its advantages on the HAND batch, with `tq` as TransferQueue.

    The agent loop's rows (as AgentLoopWorkerTQ puts them, reward on the last token), the padding that
    _balance_batch adds to make 6 rows a multiple of 8 (two fully masked rows of one new uid), the old
    log-probs of _compute_old_log_prob, then PPOTrainer._compute_advantage itself. Returns the advantages
    and returns of each row (after padding) as lists.
    """
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    keys, rows, tags, sessions = [], [], [], {}
    for uid, right, tokens, pibar, _ in HAND:
        sessions[uid] = sessions.get(uid, -1) + 1
        keys.append(f"{uid}_{sessions[uid]}_0")  # {uid}_{session_id}_{index}
        prompt, response = torch.tensor([5, 6, 7]), torch.arange(10, 10 + tokens)
        rm_scores = torch.zeros(tokens)
        rm_scores[-1] = right
        rows.append(
            {
                "uid": uid,
                "prompts": prompt,
                "responses": response,
                "input_ids": torch.cat([prompt, response]),
                "attention_mask": torch.ones(3 + tokens, dtype=torch.int64),
                "response_mask": torch.ones(tokens, dtype=torch.int64),
                "rm_scores": rm_scores,
                "rollout_log_probs": torch.full((tokens,), math.log(pibar)),  # rollout.calculate_log_probs
            }
        )
        tags.append({"status": "success", "seq_len": 3 + tokens})
    batch = tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=tags)
    batch = padding_utils.upsample_batch_to_divisible_size(batch, 8, eos_token_id=0)
    old = [torch.full((tokens,), math.log(pibar)) for _, _, tokens, pibar, _ in HAND]
    old += [torch.tensor([-0.3])] * (len(batch) - len(HAND))  # the padding rows' one (masked) token
    tq.kv_batch_put(
        keys=batch.keys, partition_id="train", fields=list_of_dict_to_tensordict([{"old_log_probs": o} for o in old])
    )
    trainer = types.SimpleNamespace(config=lens_trainer_config())
    trainer_base.PPOTrainer._compute_advantage(trainer, batch, metrics={})
    out = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "returns"])
    return [out["advantages"][i].tolist() for i in range(len(batch))], [
        out["returns"][i].tolist() for i in range(len(batch))
    ]


def assert_hand_advantages(advantages):
    assert len(advantages) == 8
    for row, (_, _, tokens, _, adv) in zip(advantages, HAND):
        assert row == pytest.approx([adv] * tokens, rel=1e-5, abs=1e-6)
    assert advantages[6:] == [[0.0], [0.0]]  # the padding group: no token, advantage 0


@only_verl09
def test_v1_trainer_step_computes_lens_advantages(monkeypatch):
    """verl 0.9's default trainer: PPOTrainer._compute_advantage reads the batch from TransferQueue (here a
    dict with its interface) and hands "lens" to compute_advantage through compute_advantage_for_multi_trajectories."""
    from verl.trainer.ppo import padding_utils
    from verl.trainer.ppo.v1 import trainer_base
    from verl.trainer.ppo.v1 import utils as v1_utils

    assert v1_utils.compute_advantage is ray_trainer.compute_advantage  # install() reached the v1 trainer's import
    tq = KVStore()
    monkeypatch.setattr(trainer_base, "tq", tq)
    monkeypatch.setattr(padding_utils, "tq", tq)
    advantages, returns = v1_trainer_step(tq, trainer_base, padding_utils)
    assert_hand_advantages(advantages)
    assert returns == advantages


@only_verl09
def test_v1_trainer_module_gets_the_wrapper_in_either_import_order(monkeypatch):
    """verl.trainer.ppo.v1.utils imports compute_advantage by name: loaded before install() it is patched, loaded
    after it (as in the TaskRunnerV1 actor, where the Ray setup hook runs first) it imports the wrapper."""
    import importlib

    from verl.trainer.ppo import v1

    stock = ray_trainer.compute_advantage.__wrapped__
    monkeypatch.setattr(v1.utils, "compute_advantage", stock)  # loaded before install()
    lv.install()
    assert v1.utils.compute_advantage is ray_trainer.compute_advantage

    loaded = v1.utils
    monkeypatch.setattr(v1, "utils", loaded)  # the import below rebinds it; restored afterwards, with sys.modules
    monkeypatch.delitem(sys.modules, "verl.trainer.ppo.v1.utils")
    fresh = importlib.import_module("verl.trainer.ppo.v1.utils")  # loaded after install()
    assert fresh is not loaded and fresh.compute_advantage is ray_trainer.compute_advantage


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


def test_fully_masked_group_gets_zero_and_other_groups_are_unchanged():
    """A group with no token in response_mask (verl 0.9's v1 padding) is left out; a partly masked one still raises."""
    data = make_batch(seed=4, outcomes={**OUTCOMES, "padding": [0, 0, 0]})  # 3 rows: not G, yet no error
    padding = group_rows(data, "padding")
    data.batch["response_mask"][padding] = 0
    data.batch["token_level_rewards"][padding] = 0.0
    real = torch.tensor([i for i in range(len(data)) if i not in set(padding.tolist())])
    expected = expected_advantages(data.select_idxs(real.numpy()))
    out = lv.compute_lens_advantage(data, None).batch["advantages"]
    torch.testing.assert_close(out[real], expected, rtol=1e-5, atol=1e-7)
    assert (out[padding] == 0).all() and out[real].abs().sum() > 0

    data = make_batch(seed=4)
    data.batch["response_mask"][group_rows(data, "mixed")[0]] = 0  # one response of a real group
    with pytest.raises(ValueError, match=r"1 response\(s\) have no token"):
        lv.compute_lens_advantage(data, None)

    data = make_batch(seed=4)
    data.batch["response_mask"][:] = 0  # nothing left: all zeros
    assert (lv.compute_lens_advantage(data, None).batch["advantages"] == 0).all()


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


def test_compute_score_through_verl_reward_loop_worker(tmp_path):
    """Both trainers (verl 0.8 and 0.9, v1 and legacy) score a rollout with RewardLoopWorker.compute_score,
    which loads reward.custom_reward_function through verl's reward manager; the row as the agent loop builds it."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    from lensrl.testbed import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")  # the worker loads it from actor_rollout_ref.model.path
    config = verl_config(
        **{
            "actor_rollout_ref.model.path": str(tmp_path / "tokenizer"),
            "reward.custom_reward_function.path": "pkg://lensrl.integrations.verl",
            "reward.custom_reward_function.name": "compute_score",
        }
    )
    worker = RewardLoopWorker(config)

    def score(response):
        prompt = torch.tensor(tokenizer.encode("What is 6*7?"))
        ids = torch.tensor(tokenizer.encode(response))
        data = DataProto.from_dict(
            tensors={
                "prompts": prompt[None],
                "responses": ids[None],
                "input_ids": torch.cat([prompt, ids])[None],
                "attention_mask": torch.ones(1, len(prompt) + len(ids), dtype=torch.long),
            },
            non_tensors={
                "data_source": np.array(["math"], dtype=object),
                "reward_model": np.array([{"style": "rule", "ground_truth": "42"}], dtype=object),
                "extra_info": np.array([{"split": "train", "index": 0}], dtype=object),
            },
        )
        return worker.loop.run_until_complete(worker.compute_score(data))["reward_score"]

    assert (score("So the answer is \\boxed{42}."), score("So the answer is \\boxed{41}.")) == (1.0, 0.0)


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
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, **kw: captured.update(config=config, **kw))
    monkeypatch.chdir(tmp_path)  # Hydra's output directory
    lv.main(overrides)
    c = captured["config"]
    if VERL_VERSION >= Version("0.9"):  # the default trainer: v1
        assert c.trainer.use_v1 is True and captured["task_runner_class"] is main_ppo.TaskRunnerV1
    assert c.algorithm.adv_estimator == "lens" and lv.lens_settings(c.algorithm)["alpha"] == 0.25
    assert c.algorithm.use_kl_in_reward is False and c.actor_rollout_ref.actor.use_kl_loss is False
    assert c.actor_rollout_ref.rollout.n == 16 and c.actor_rollout_ref.rollout.temperature == 1.0
    assert c.actor_rollout_ref.rollout.top_p == 1.0
    assert c.data.train_batch_size == 128 and c.data.max_response_length == 4096
    assert c.actor_rollout_ref.actor.ppo_mini_batch_size == 32 and c.actor_rollout_ref.actor.clip_ratio == 0.2
    assert c.actor_rollout_ref.actor.optim.lr == 1e-6 and c.actor_rollout_ref.actor.entropy_coeff == 0
    assert c.reward.custom_reward_function.path == "pkg://lensrl.integrations.verl"
    assert c.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == "lensrl.integrations.verl.install"


def launch(monkeypatch, tmp_path, module, overrides):
    """lv.main with the overrides, its entry's run_ppo captured: (config, keyword arguments)."""
    captured = {}
    monkeypatch.setattr(module, "run_ppo", lambda config, **kw: captured.update(config=config, **kw))
    monkeypatch.chdir(tmp_path)  # Hydra's output directory
    lv.main(overrides)
    return captured.pop("config"), captured


@only_verl09
@pytest.mark.skipif(not hydra_composes_verl_config(), reason="verl's Hydra config needs hydra-core 1.3")
@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
def test_use_v1_picks_the_trainer(monkeypatch, tmp_path):
    """verl 0.9: trainer.use_v1 (default True) picks TaskRunnerV1; trainer.use_v1=False the legacy TaskRunner."""
    import verl.trainer.main_ppo as main_ppo
    from verl.trainer import main_ppo_v0

    config, kw = launch(monkeypatch, tmp_path, main_ppo, documented_command(DOCS.read_text()))
    assert config.trainer.use_v1 is True and kw["task_runner_class"] is main_ppo.TaskRunnerV1
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == lv.SETUP_HOOK
    config, kw = launch(
        monkeypatch, tmp_path, main_ppo, [*documented_command(DOCS.read_text()), "trainer.use_v1=False"]
    )
    assert config.trainer.use_v1 is False and kw["task_runner_class"] is main_ppo_v0.TaskRunner
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == lv.SETUP_HOOK


@only_verl09
def test_main_ppo_sync_entry_says_it_is_gone(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lensrl.integrations.verl"])
    with pytest.raises(ModuleNotFoundError, match=r"verl 0\.9 removed it.*trainer\.use_v1=True"):
        lv.main(["--verl-entry=verl.trainer.main_ppo_sync", *documented_command(DOCS.read_text())])
    with pytest.raises(ModuleNotFoundError, match="no verl entry module 'verl.trainer.no_such_entry'$"):
        lv.main(["--verl-entry=verl.trainer.no_such_entry", *documented_command(DOCS.read_text())])


@only_verl08
@pytest.mark.skipif(not hydra_composes_verl_config(), reason="verl's Hydra config needs hydra-core 1.3")
@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
def test_main_ppo_sync_entry_reaches_its_run_ppo_with_lens_installed(monkeypatch, tmp_path):
    """verl 0.8: --verl-entry=verl.trainer.main_ppo_sync runs the TransferQueue trainer, whose module imported
    compute_advantage by name; install() (in lv.main, as in the worker) patches it there."""
    from verl.trainer import main_ppo_sync

    stock = ray_trainer.compute_advantage.__wrapped__
    monkeypatch.setattr(main_ppo_sync, "compute_advantage", stock)  # as when it is imported before install()
    config, kw = launch(
        monkeypatch,
        tmp_path,
        main_ppo_sync,
        ["--verl-entry=verl.trainer.main_ppo_sync", *documented_command(DOCS.read_text())],
    )
    assert kw["task_runner_class"] is main_ppo_sync.TaskRunner and config.transfer_queue.enable is True
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == lv.SETUP_HOOK
    assert main_ppo_sync.compute_advantage is ray_trainer.compute_advantage
    assert main_ppo_sync.compute_advantage.__wrapped__ is not main_ppo_sync.compute_advantage


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


@only_verl09
@pytest.mark.slow
def test_v1_trainer_step_in_a_ray_worker_with_transfer_queue():
    """test_v1_trainer_step_computes_lens_advantages as in verl 0.9's TaskRunnerV1 actor: in a fresh Ray worker
    where only the setup hook installed LENS, on a real TransferQueue (controller and storage as Ray actors)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    def step():
        import transfer_queue as tq
        from verl.trainer.ppo import padding_utils
        from verl.trainer.ppo.v1 import trainer_base

        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        try:
            return v1_trainer_step(tq, trainer_base, padding_utils)
        finally:
            tq.close()

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the worker cannot import this test module: send its functions
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"worker_process_setup_hook": lv.SETUP_HOOK})
    try:
        advantages, returns = ray.get(ray.remote(step).remote())
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(module)
    assert_hand_advantages(advantages)
    assert returns == advantages


def test_clear_import_error_without_verl(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "verl", None)  # as if verl were not installed
    monkeypatch.delitem(sys.modules, "lensrl.integrations.verl")
    with pytest.raises(ImportError, match="pip install"):
        importlib.import_module("lensrl.integrations.verl")
    import lensrl

    assert callable(lensrl.lens_advantages)  # lensrl itself never needs verl
