"""Every config file in the repository still loads and means what it meant when it was written.

The files: the short deltas in configs/, the testbeds' default runs under src/, and the full dumps
(config.yaml) of the finished runs and adapters under results/ (those the flat `algo` schema wrote,
every algo key whatever the estimator, were rewritten once through today's schema, each run's
config unchanged: the checks by hand below hold their values).
"""

from pathlib import Path

import pytest
import yaml

from lensrl.config import GRPOAlgo, LensAlgo, config_differences, load_config
from lensrl.core.advantages import LensSettings

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for folder in ("configs", "results", "src", "experiments") for p in (ROOT / folder).rglob("*.yaml"))


def _holds(given, loaded) -> bool:
    """Whether every value a file gives (nested mappings and lists included) is the loaded config's."""
    if isinstance(given, dict):
        return isinstance(loaded, dict) and all(k in loaded and _holds(v, loaded[k]) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(loaded, list) and len(given) == len(loaded) and all(map(_holds, given, loaded))
    return given == loaded


def _one(pattern: str) -> Path:
    (path,) = ROOT.glob(pattern)
    return path


def test_the_committed_configs_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {
        "configs/testbed/grpo.yaml",
        "configs/paper/qwen25_3b_base_math_dapo.yaml",
        "src/lensrl/testbed/signs.yaml",
    } <= names
    dumps = [p for p in FILES if p.name == "config.yaml" and p.is_relative_to(ROOT / "results")]
    assert len(dumps) >= 12  # SmolLM2 chain sums: 4 adapters, 5 runs and the SFT at lr 2e-4, 3 runs at 5e-5


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_committed_config_loads_and_means_what_it_meant(path):
    tree = yaml.safe_load(path.read_text()) or {}
    loaded = load_config(path).model_dump()
    assert all(_holds(values, loaded[section]) for section, values in tree.items())
    if path.name == "config.yaml":  # a run folder: a study would reuse it for the same config
        assert config_differences(path.parent, load_config(path)) == []


@pytest.mark.parametrize(
    "pattern, algo, seed_lr_group",
    [
        ("configs/testbed/grpo.yaml", GRPOAlgo(), (0, 3e-5, 16)),
        ("configs/testbed/lens_mixed_only.yaml", LensAlgo(scope="mixed"), (0, 3e-5, 16)),
        ("configs/testbed/lens_negative_only.yaml", LensAlgo(scope="negative"), (0, 3e-5, 16)),
        ("configs/paper/llama31_8b_instruct_math_dapo.yaml", LensAlgo(), (0, 3e-7, 16)),
        ("src/lensrl/testbed/signs.yaml", LensAlgo(), (0, 3e-6, 16)),
        # full dumps of the SmolLM2 chain-sum runs (chosen lr 2e-4, G = 8), first written by the flat schema
        ("results/**/adapters/grpo_seed0/config.yaml", GRPOAlgo(), (0, 2e-4, 8)),
        ("results/**/adapters/lens_seed1/config.yaml", LensAlgo(), (1, 2e-4, 8)),
        ("results/**/lr5e-5/logs/grpo_seed1/config.yaml", GRPOAlgo(), (1, 5e-5, 8)),
    ],
)
def test_committed_configs_by_hand(pattern, algo, seed_lr_group):
    config = load_config(_one(pattern))
    assert config.algo == algo
    assert (config.run.seed, config.optim.lr, config.rollout.group_size) == seed_lr_group
    if isinstance(algo, LensAlgo):
        assert config.algo.lens == LensSettings(scope=algo.scope)
