"""The SmolLM2 reports (experiments/smollm2_lr5e5_report.py, experiments/smollm2_powered_report.py)
regenerate their committed numbers from the committed records alone: rerun into a copy of the inputs,
every number of the JSON and every line of the Markdown come out as committed (the `command` field
differs only in the arguments that point the script at the copy)."""

import importlib
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# (script, committed folder, the inputs it reads from that folder, its outputs, further arguments:
# the powered report is given no run folders, so it copies no adapter over the committed ones)
REPORTS = [
    ("smollm2_lr5e5_report", "results/smollm2/chain_sum/lr5e-5", ("runs", "logs"), ("results.json", "compare.md"), ()),
    (
        "smollm2_powered_report",
        "results/smollm2/chain_sum/powered",
        ("runs",),
        ("answer.json", "answer.md"),
        ("--runs-dir", "{tmp}/no-runs"),
    ),
]


def without_command(path: Path) -> dict:
    report = json.loads(path.read_text())
    report.pop("command")
    return report


@pytest.mark.parametrize(("script", "folder", "inputs", "outputs", "extra"), REPORTS, ids=[r[0] for r in REPORTS])
def test_a_smollm2_report_regenerates_from_its_records(script, folder, inputs, outputs, extra, tmp_path, monkeypatch):
    # the scripts read the follow-up's records by a path relative to the repository root, as when run
    # from it (python -m experiments.NAME)
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(f"experiments.{script}")
    for name in inputs:
        shutil.copytree(ROOT / folder / name, tmp_path / name)
    assert module.main(["--results-dir", str(tmp_path), *(a.format(tmp=tmp_path) for a in extra)]) == 0
    data, text = outputs
    assert without_command(tmp_path / data) == without_command(ROOT / folder / data)
    assert (tmp_path / text).read_text() == (ROOT / folder / text).read_text()
