"""Typed config: YAML deltas, key=value overrides, and clear errors."""

import re

import pytest
from pydantic import ValidationError

from lensrl.config import (
    ConfigError,
    DataConfig,
    GRPOAlgo,
    LensAlgo,
    SourceConfig,
    TrainConfig,
    UniformNegativeAlgo,
    apply_overrides,
    config_differences,
    load_config,
    save_config,
    switch_estimator,
)
from lensrl.core.advantages import LensSettings


def test_defaults_are_the_paper_recipe_on_the_testbed():
    c = TrainConfig()
    assert c.algo == LensAlgo() and c.algo.lens == LensSettings() and c.algo.kl_coef == 0.0
    assert (c.rollout.group_size, c.rollout.temperature, c.rollout.top_p) == (16, 1.0, 1.0)
    assert (c.algo.clip_low, c.algo.clip_high, c.optim.updates_per_rollout) == (0.2, 0.2, 4)
    assert c.model.name_or_path == "testbed"


def test_yaml_delta_then_overrides(tmp_path):
    path = tmp_path / "grpo.yaml"
    path.write_text("# purpose: plain GRPO\nalgo:\n  advantage: grpo\nrun:\n  steps: 5\n")
    c = load_config(path, ["run.steps=7", "rollout.top_p=0.9", "data.train={path: testbed, size: 8, levels: [2,3]}"])
    assert c.algo == GRPOAlgo()  # the LENS defaults' own settings are gone, GRPO's are its defaults
    assert c.run.steps == 7  # the override wins over the file
    assert c.rollout.top_p == 0.9
    assert c.data.train == [SourceConfig(path="testbed", size=8, levels=[2, 3])]
    assert c.rollout.group_size == 16  # untouched defaults stay


def test_bare_off_is_the_autocast_choice_not_a_boolean():
    # YAML 1.1 reads `off` as False; `model.autocast=off` must still mean "off"
    assert load_config(overrides=["model.autocast=off"]).model.autocast == "off"


@pytest.mark.parametrize(
    "override, match",
    [
        ("algo.alfa=0.1", "algo.alfa: unknown key"),
        ("algo.alpha=-1", "algo.alpha"),
        ("algo.advantage=ppo", r"algo\.advantage: unknown advantage estimator 'ppo'; known: grpo, lens, ngrpo"),
        ("algo.alpha=-1", r"algo\.alpha: alpha must be a finite number >= 0, got -1\.0"),
        ("algo.scale=batch", r"algo\.scale does not apply to algo\.advantage=lens \(it reads: alpha, scope, d_est"),
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


def test_a_testbed_mapping_without_a_count_gets_the_bare_names_defaults():
    # {path: testbed} is the bare "testbed" spelled as a mapping: the same default size (train, 20,000)
    # and per-level count (eval, 100); a count given in the mapping is kept, and so is every other field
    for spelled in ({"path": "testbed"}, [{"path": "testbed"}], SourceConfig(path="testbed")):
        assert DataConfig(train=spelled, eval=spelled) == DataConfig(train="testbed", eval="testbed")
    by_key = load_config(overrides=["data.train={path: testbed:signs}", "data.eval={path: testbed:signs, levels: [3]}"])
    assert by_key.data.train == [SourceConfig(path="testbed:signs", size=20_000)]
    assert by_key.data.eval == [SourceConfig(path="testbed:signs", per_level=100, levels=[3])]
    assert DataConfig(train={"path": "testbed", "per_level": 4}).train == [SourceConfig(path="testbed", per_level=4)]
    assert DataConfig(eval={"path": "testbed", "size": 9}).eval == [SourceConfig(path="testbed", size=9)]
    assert DataConfig(train={"path": "t.jsonl"}).train == [SourceConfig(path="t.jsonl")]  # files: no testbed count


def test_algo_holds_the_common_settings_and_only_the_chosen_estimators():
    common = {"advantage", "filter_groups", "normalize_by", "clip_low", "clip_high", "loss_agg", "kl_coef"}
    dumps = {
        name: load_config(overrides=[f"algo.advantage={name}"]).algo.model_dump()
        for name in ("lens", "grpo", "uniform_negative")
    }
    assert set(dumps["lens"]) == common | {"alpha", "scope", "d_estimator", "eps", "normalize_negative"}
    assert set(dumps["grpo"]) == common | {"scale", "eps"}
    assert set(dumps["uniform_negative"]) == common | {"alpha", "scale", "eps"}
    assert dumps["uniform_negative"]["alpha"] == 0.25 and dumps["grpo"]["scale"] == "group"
    assert TrainConfig(algo={"alpha": 0.5}).algo == LensAlgo(alpha=0.5)  # no advantage: LENS, the default


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo.advantage=grpo", "algo.scope=mixed"],
        ["algo.scope=mixed", "algo.advantage=grpo"],  # the overrides of one call are one delta: any order
        ["algo.advantage=grpo", "algo.scope=all"],  # an override gets no leniency, not even for a default
    ],
)
def test_a_setting_the_estimator_does_not_read_is_an_error_naming_it(overrides):
    error = r"invalid config:\n  algo\.scope does not apply to algo\.advantage=grpo \(it reads: scale, eps\)$"
    with pytest.raises(ConfigError, match=error):
        load_config(overrides=overrides)
    with pytest.raises(ConfigError, match=r"algo\.alpha does not apply to algo\.advantage=grpo"):
        apply_overrides(TrainConfig(), ["algo.advantage=grpo", "algo.alpha=0.5"])
    with pytest.raises(ValidationError, match="scope"):
        GRPOAlgo(scope="mixed")


def test_switching_estimator_keeps_the_common_settings_and_those_shared_by_name(tmp_path):
    lens = load_config(
        overrides=[
            "algo.alpha=0.5",
            "algo.scope=mixed",
            "algo.eps=1e-4",
            "algo.filter_groups=true",
            "algo.clip_high=0.3",
        ]
    )
    # scope is LENS's own: dropped; eps is GRPO's too, alpha uniform_negative's too: kept, as in the flat schema
    assert apply_overrides(lens, ["algo.advantage=grpo"]).algo == GRPOAlgo(eps=1e-4, filter_groups=True, clip_high=0.3)
    assert apply_overrides(lens, ["algo.advantage=uniform_negative"]).algo == UniformNegativeAlgo(
        alpha=0.5, eps=1e-4, filter_groups=True, clip_high=0.3
    )
    assert apply_overrides(lens, ["algo.advantage=grpo", "algo.scale=batch"]).algo.scale == "batch"
    assert apply_overrides(lens, ["algo.advantage=lens"]).algo == lens.algo  # no change: nothing dropped
    back = apply_overrides(apply_overrides(lens, ["algo.advantage=grpo"]), ["algo.advantage=lens"])
    assert back.algo == LensAlgo(eps=1e-4, filter_groups=True, clip_high=0.3)  # alpha and scope: defaults again
    # the same rule for overrides over the defaults, for overrides over a file, and in switch_estimator
    assert load_config(overrides=["algo.advantage=grpo"]).algo == GRPOAlgo()
    (tmp_path / "mixed.yaml").write_text("algo:\n  advantage: lens\n  scope: mixed\n  eps: 1.0e-4\n")
    assert load_config(tmp_path / "mixed.yaml", ["algo.advantage=grpo"]).algo == GRPOAlgo(eps=1e-4)
    assert switch_estimator(lens.algo, "grpo") == apply_overrides(lens, ["algo.advantage=grpo"]).algo
    assert switch_estimator(GRPOAlgo(scale="batch"), "lens") == LensAlgo()


def test_a_config_file_holds_only_what_its_estimator_reads(tmp_path):
    # a file gets no leniency either: a setting GRPO does not read is an error, even at LENS's default
    (tmp_path / "short.yaml").write_text("algo:\n  advantage: grpo\n  alpha: 0.25\n")
    with pytest.raises(ConfigError, match=r"algo\.alpha does not apply to algo\.advantage=grpo"):
        load_config(tmp_path / "short.yaml")
    (tmp_path / "config.yaml").write_text("algo:\n  advantage: grpo\n  scope: all\n")
    assert config_differences(tmp_path, load_config(overrides=["algo.advantage=grpo"])) == ["algo.scope"]


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["algo.advantage=grpo", "algo.scale=batch", "algo.filter_groups=true"],
        ["algo.advantage=uniform_negative", "algo.alpha=2", "algo.kl_coef=0.1"],
        ["algo.d_estimator=sequence", "algo.eps=1e-3", "run.seed=3"],
    ],
)
def test_a_saved_config_loads_back_as_the_same_config(tmp_path, overrides):
    config = load_config(overrides=overrides)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_differences(tmp_path, config) == []


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  steps: 3\n  seed: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:\d+:\d+: .*expected ',' or ']'"):
        load_config(path)
    path.write_text("run:\n  steps: 3\n   seed: 1\n")  # a bad indent: line 3
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3:\d+: "):
        load_config(path)


def test_invalid_values_and_unknown_keys_of_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  steps: many\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: invalid config:\n") as raised:
        load_config(path)
    assert "run.steps" in str(raised.value) and "run.stepz: unknown key" in str(raised.value)
    path.write_text("run:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"^invalid config:\n  run\.stepz: unknown key"):  # an override's own
        load_config(path, ["run.stepz=3"])


def test_the_quick_preset_is_a_short_first_run_that_writes_a_sample_log():
    config = load_config("testbed:quick")
    assert config.model.name_or_path == "testbed" and config.algo == LensAlgo()
    assert config.run.steps <= 4 and config.run.steps % config.run.sample_every == 0  # a sample log is written
    assert config.data.eval[0].per_level <= 20 and config.rollout.questions_per_step <= 16
    with pytest.raises(ValueError, match="unknown testbed 'testbed:nope'"):
        load_config("testbed:nope")
