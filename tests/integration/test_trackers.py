"""`run.report_to`: each tracker gets a real tiny run's metrics, evaluations, config and sample tables,
read back offline from what it wrote; W&B and MLflow runs go on in the same tracker run when resumed;
a missing package is a one-line error. Trackio keeps its store where TRACKIO_DIR says, read once at
import, so its runs happen in a subprocess."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from lensrl.cli import main
from lensrl.config import load_config
from lensrl.runs.jsonl import read_jsonl
from lensrl.runs.samples import sample_table
from lensrl.runs.trackers import open_trackers
from lensrl.training.trainer import train
from tests.conftest import tiny_overrides

COLUMNS = ["prompt", "completion", "correct", "pibar"]
ROWS = [["What is 2+3?", "It is | 5\nso \\boxed{5}", True, 0.81], ["x" * 1000, "", False, None]]
METRICS = {"reward": 0.25, "loss": math.nan, "note": "text", "eval/pass@1": 0.5}


def tiny_run(model_dir: Path, out: Path, tracker: str, *extra: str) -> list[str]:
    return tiny_overrides(model_dir, out, f"run.report_to=[{tracker}]", "run.sample_every=1", *extra)


def logged(run: Path) -> tuple[dict[str, dict[int, float]], dict[int, tuple[list[str], list[list]]]]:
    """What the run folder holds, as trackers should get it: {metric: {step: value}} and {step: table}."""
    metrics: dict[str, dict[int, float]] = {}
    for record in read_jsonl(run / "metrics.jsonl"):
        for key, value in record.items():
            metrics.setdefault(key, {})[record["step"]] = value
    for result in read_jsonl(run / "eval.jsonl"):
        metrics.setdefault("eval/pass@1", {})[result["step"]] = result["overall"]["pass@1"]
    tables = {record["step"]: sample_table(record) for record in read_jsonl(run / "samples.jsonl")}
    return metrics, tables


def open_one(tracker: str, run: Path, resumed: bool = False):
    config = load_config(overrides=[f"run.report_to=[{tracker}]", f"run.output_dir={run}"])
    run.mkdir(parents=True, exist_ok=True)
    (opened,) = open_trackers(config, run, "lens", resumed)
    return opened


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    for var in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    yield
    children = psutil.Process().children(recursive=True)
    assert not [p for p in children if "wandb" in " ".join(p.cmdline())]  # W&B's service process has ended


@pytest.fixture
def mlflow_local(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


# ------------------------------------------------------------------------------------ TensorBoard


def tensorboard_events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_gets_metrics_evaluations_config_and_samples(tiny_model_dir, tmp_path):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run = tmp_path / "run"
    train(load_config(overrides=tiny_run(tiny_model_dir, run, "tensorboard")))
    metrics, tables = logged(run)
    events = tensorboard_events(run)
    for key in (
        "reward",
        "loss/policy",
        "pibar/correct",
        "time/step",
        "eval/pass@1",
        "eval/all_wrong",
        "eval/L1/pass@2",
        "eval/no_final_answer",
        "eval/response_tokens",
    ):
        assert {e.step for e in events.Scalars(key)} == ({0, 2} if key.startswith("eval/") else {1, 2}), key
    for key in ("reward", "pibar/correct", "eval/pass@1"):  # pibar/correct: NaN with no correct response
        assert {e.step: e.value for e in events.Scalars(key)} == pytest.approx(metrics[key], rel=1e-6, nan_ok=True)

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["run.steps"].number_value == 2 and hparams["model.name_or_path"].string_value == str(tiny_model_dir)
    assert json.loads(hparams["run.report_to"].string_value) == ["tensorboard"]

    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("samples/text_summary")}
    assert set(texts) == set(tables) == {1, 2}
    for step, (columns, rows) in tables.items():
        lines = texts[step].splitlines()
        assert lines[0] == "| " + " | ".join(columns) + " |" and len(lines) == 2 + len(rows)


def test_tensorboard_table_is_markdown_with_short_one_line_cells(tmp_path):
    tracker = open_one("tensorboard", tmp_path / "run")
    tracker.log(METRICS, 3)
    tracker.log_table("samples", COLUMNS, ROWS, 3)
    tracker.close()
    events = tensorboard_events(tmp_path / "run")
    assert set(events.Tags()["scalars"]) == {"reward", "loss", "eval/pass@1"}  # numbers only
    assert math.isnan(events.Scalars("loss")[0].value)
    (text,) = events.Tensors("samples/text_summary")
    lines = text.tensor_proto.string_val[0].decode().splitlines()
    assert lines[:2] == ["| prompt | completion | correct | pibar |", "| --- | --- | --- | --- |"]
    assert lines[2] == "| What is 2+3? | It is \\| 5<br>so \\\\boxed{5} | True | 0.81 |"
    assert lines[3] == f"| {'x' * 299}… |  | False | None |"


# ------------------------------------------------------------------------------------ W&B


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of one offline W&B run, read by W&B's own reader of its transaction log."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def wandb_history(records: list[dict]) -> dict[int, dict]:
    return {r["history"]["item"]["_step"]: r["history"]["item"] for r in records if r["type"] == "history"}


def wandb_table(run_dir: Path, item: dict) -> dict:
    """The table a history item refers to (W&B flattens the reference into `samples.*` keys)."""
    assert item["samples._type"] == "table-file"
    return json.loads((run_dir / "files" / item["samples.path"]).read_text())


def test_wandb_offline_run_gets_everything_and_resumes_the_same_run(tiny_model_dir, tmp_path, wandb_offline):
    run = tmp_path / "run"
    train(load_config(overrides=tiny_run(tiny_model_dir, run, "wandb", "run.steps=1")))
    train(load_config(overrides=tiny_run(tiny_model_dir, run, "wandb", "run.steps=2")), resume=True)
    metrics, tables = logged(run)
    run_id = (run / "wandb_run_id").read_text()

    offline = sorted((run / "wandb").glob("offline-run-*"))
    # One W&B run in two parts; a part started in the same second as the first gets a "-1" suffix.
    assert len(offline) == 2 and all(f"-{run_id}" in d.name for d in offline)
    first, resumed = (wandb_records(d) for d in offline)
    starts = [next(r["run"] for r in records if r["type"] == "run") for records in (first, resumed)]
    assert {s["run_id"] for s in starts} == {run_id} and {s["display_name"] for s in starts} == {"run"}
    assert starts[0]["project"] == "lensrl" and starts[0]["job_type"] == "lens"
    config = starts[0]["config"]["update"]
    assert config["model"]["name_or_path"] == str(tiny_model_dir) and config["run"]["steps"] == 1

    history = wandb_history(first) | wandb_history(resumed)
    assert set(wandb_history(first)) == {0, 1} and set(wandb_history(resumed)) == {2}
    for key in ("reward", "eval/pass@1"):
        assert {s: h[key] for s, h in history.items() if key in h} == pytest.approx(metrics[key])
    assert set(tables) == {1, 2}
    for step, (columns, rows) in tables.items():
        written = wandb_table(offline[step - 1], history[step])
        assert written["columns"] == columns and len(written["data"]) == len(rows)


def test_wandb_table_and_metrics_at_the_unit_level(tmp_path, wandb_offline):
    tracker = open_one("wandb", tmp_path / "run")
    tracker.log(METRICS, 3)
    tracker.log_table("samples", COLUMNS, ROWS, 3)
    tracker.close()
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    item = wandb_history(wandb_records(offline))[3]
    assert item["reward"] == 0.25 and item["loss"] == "NaN" and "note" not in item
    written = wandb_table(offline, item)
    assert written["columns"] == COLUMNS and written["data"] == ROWS


# ------------------------------------------------------------------------------------ MLflow


def mlflow_client(run: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{run / 'mlflow.db'}")


def test_mlflow_local_store_gets_everything_and_resumes_the_same_run(tiny_model_dir, tmp_path, mlflow_local):
    run = tmp_path / "run"
    train(load_config(overrides=tiny_run(tiny_model_dir, run, "mlflow", "run.steps=1")))
    first_id = (run / "mlflow_run_id").read_text()
    train(load_config(overrides=tiny_run(tiny_model_dir, run, "mlflow", "run.steps=2")), resume=True)
    metrics, tables = logged(run)
    run_id = (run / "mlflow_run_id").read_text()
    assert run_id == first_id

    client = mlflow_client(run)
    experiment = client.get_experiment_by_name("lensrl")
    assert Path(experiment.artifact_location.removeprefix("file://")).parent == run
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    found = client.get_run(run_id)
    assert found.info.run_name == "run" and found.info.status == "FINISHED" and found.data.tags["kind"] == "lens"
    assert found.data.params["model.name_or_path"] == str(tiny_model_dir)
    assert found.data.params["run.steps"] == "1"  # MLflow parameters are fixed once logged
    for key, name in (("reward", "reward"), ("eval/pass@1", "eval/pass_at_1"), ("time/step", "time/step")):
        history = {m.step: m.value for m in client.get_metric_history(run_id, name)}
        assert history == pytest.approx(metrics[key]), key
    assert set(tables) == {1, 2}
    for step, (columns, rows) in tables.items():
        path = client.download_artifacts(run_id, f"samples/step_{step:06d}.json", str(tmp_path / "download"))
        written = json.loads(Path(path).read_text())
        assert written["columns"] == columns and len(written["data"]) == len(rows)


def test_mlflow_table_metrics_and_a_failed_run_at_the_unit_level(tmp_path, mlflow_local):
    run = tmp_path / "run"
    tracker = open_one("mlflow", run)
    tracker.log(METRICS, 3)
    tracker.log_table("samples", COLUMNS, ROWS, 3)
    try:
        raise RuntimeError("the run failed")
    except RuntimeError:
        tracker.close()
    client = mlflow_client(run)
    run_id = (run / "mlflow_run_id").read_text()
    found = client.get_run(run_id)
    assert found.info.status == "FAILED" and found.data.params["run.steps"] == "40"
    assert set(found.data.metrics) == {"reward", "loss", "eval/pass_at_1"}
    assert math.isnan(found.data.metrics["loss"])
    path = client.download_artifacts(run_id, "samples/step_000003.json", str(tmp_path / "download"))
    written = json.loads(Path(path).read_text())
    assert written["columns"] == COLUMNS and written["data"] == ROWS


# ------------------------------------------------------------------------------------ Trackio


def in_trackio_subprocess(args: list[str], store: Path, cwd: Path) -> str:
    env = {**os.environ, "TRACKIO_DIR": str(store), "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def trackio_get(store: Path, cwd: Path, what: str, *args: str) -> dict:
    out = in_trackio_subprocess(
        [sys.executable, "-m", "trackio.cli", "get", what, "--project", "lensrl", *args, "--json"], store, cwd
    )
    return json.loads(out)


def trackio_metric(store: Path, cwd: Path, run: str, metric: str) -> dict[int, object]:
    values = trackio_get(store, cwd, "metric", "--run", run, "--metric", metric)["values"]
    return {v["step"]: v["value"] for v in values}


def test_trackio_local_project_gets_everything_and_resumes_the_same_run(tiny_model_dir, tmp_path):
    run, store = tmp_path / "run", tmp_path / "trackio"
    for steps in (1, 2):  # through the command line, as a user would
        args = ["train", *tiny_run(tiny_model_dir, run, "trackio", f"run.steps={steps}")] + ["--resume"] * (steps > 1)
        in_trackio_subprocess([sys.executable, "-m", "lensrl.cli", *args], store, tmp_path)
    metrics, tables = logged(run)
    summary = trackio_get(store, tmp_path, "run", "--run", "run")
    assert summary["config"]["_Group"] == "lens" and summary["config"]["model"]["name_or_path"] == str(tiny_model_dir)
    assert summary["last_step"] == 2
    for key in ("reward", "eval/pass@1"):
        assert trackio_metric(store, tmp_path, "run", key) == pytest.approx(metrics[key])
    written = trackio_metric(store, tmp_path, "run", "samples")
    assert set(written) == set(tables) == {1, 2}
    for step, (columns, rows) in tables.items():
        assert written[step]["_type"] == "trackio.table" and len(written[step]["_value"]) == len(rows)
        assert list(written[step]["_value"][0]) == columns


def test_trackio_table_and_metrics_at_the_unit_level(tmp_path):
    store = tmp_path / "trackio"
    code = (
        "import sys; from pathlib import Path; "
        "from tests.integration.test_trackers import COLUMNS, METRICS, ROWS, open_one; "
        "t = open_one('trackio', Path(sys.argv[1])); t.log(METRICS, 3); "
        "t.log_table('samples', COLUMNS, ROWS, 3); t.close()"
    )
    in_trackio_subprocess([sys.executable, "-c", code, str(tmp_path / "run")], store, tmp_path)
    assert trackio_metric(store, tmp_path, "run", "reward") == {3: 0.25}
    assert math.isnan(trackio_metric(store, tmp_path, "run", "loss")[3])
    (table,) = trackio_metric(store, tmp_path, "run", "samples").values()
    assert table["_value"] == [dict(zip(COLUMNS, row)) for row in ROWS]


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "trackio", "mlflow"])
def test_a_missing_tracker_package_is_a_one_line_error(tracker, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, tracker, None)
    run = tmp_path / "run"
    first = "" if tracker == "tensorboard" else "tensorboard,"  # started, then closed on the error
    assert main(["train", *tiny_overrides(tiny_model_dir, run, f"run.report_to=[{first}{tracker}]")]) == 2
    err = capsys.readouterr().err
    assert err == f'lensrl: run.report_to=[{tracker}] needs the {tracker} package: pip install "lensrl[{tracker}]"\n'
    assert not (run / "metrics.jsonl").exists() and not (run / "run.lock").exists()  # before anything ran
