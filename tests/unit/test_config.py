"""Typed config: YAML deltas, key=value overrides, and clear errors."""

import pytest

from lensrl.config import ConfigError, DataConfig, SourceConfig, TrainConfig, load_config


def test_defaults_are_the_paper_recipe_on_the_testbed():
    c = TrainConfig()
    assert (c.algo.advantage, c.algo.alpha, c.algo.scope, c.algo.kl_coef) == ("lens", 0.25, "all", 0.0)
    assert (c.rollout.group_size, c.rollout.temperature, c.rollout.top_p) == (16, 1.0, 1.0)
    assert (c.algo.clip_low, c.algo.clip_high, c.optim.updates_per_rollout) == (0.2, 0.2, 4)
    assert c.model.name_or_path == "testbed"


def test_yaml_delta_then_overrides(tmp_path):
    path = tmp_path / "grpo.yaml"
    path.write_text("# purpose: plain GRPO\nalgo:\n  advantage: grpo\nrun:\n  steps: 5\n")
    c = load_config(path, ["run.steps=7", "rollout.top_p=0.9", "data.train={path: testbed, size: 8, levels: [2,3]}"])
    assert c.algo.advantage == "grpo"
    assert c.run.steps == 7  # the override wins over the file
    assert c.rollout.top_p == 0.9
    assert c.data.train == [SourceConfig(path="testbed", size=8, levels=[2, 3])]
    assert c.algo.alpha == 0.25  # untouched defaults stay


def test_bare_off_is_the_autocast_choice_not_a_boolean():
    # YAML 1.1 reads `off` as False; `model.autocast=off` must still mean "off"
    assert load_config(overrides=["model.autocast=off"]).model.autocast == "off"


@pytest.mark.parametrize(
    "override, match",
    [
        ("algo.alfa=0.1", "algo.alfa: unknown key"),
        ("algo.alpha=-1", "algo.alpha"),
        ("algo.advantage=ppo", "algo.advantage"),
        ("rollout.group_size=1", "rollout.group_size"),
        ("rollout.questions_per_step=30", "divisible"),
        ("data.train={path: testbed, size: 8, levels: [0]}", r"data\.train\.0\.levels must lie in 1\.\.5, got 0"),
        ("data.eval=[testbed, {path: testbed, per_level: 2, levels: [4, 6]}]", r"data\.eval\.1\.levels .* got 6"),
        ("data.train={path: a.jsonl, prompt_feild: q}", r"data\.train\.0\.prompt_feild: unknown key"),
        ("data.eval={path: a.jsonl, kind: xml}", r"data\.eval\.0\.kind"),
        ("data.train={path: a.jsonl, rows: 1-5}", r"data\.train\.0\.rows: .*start:stop"),
        ("data.train=[]", r"data\.train"),
        ("steps", "key=value"),
    ],
)
def test_invalid_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_data_source_shorthands():
    c = load_config(overrides=["data.train=my_train.jsonl", "data.eval=[testbed, {path: m.jsonl, levels: [4, 5]}]"])
    assert c.data.train == [SourceConfig(path="my_train.jsonl")]
    assert c.data.eval == [SourceConfig(path="testbed", per_level=100), SourceConfig(path="m.jsonl", levels=[4, 5])]
    single = DataConfig(train={"path": "o/dapo", "kind": "dapo", "size": 100}, eval="testbed")
    assert single.train == [SourceConfig(path="o/dapo", kind="dapo", size=100)]
    assert single.eval == DataConfig().eval and DataConfig(train="testbed").train == DataConfig().train
    assert SourceConfig(rows="-500:").row_slice() == slice(-500, None)
    assert SourceConfig(rows="0:-500").row_slice() == slice(0, -500)
    assert SourceConfig().row_slice() == slice(None)
