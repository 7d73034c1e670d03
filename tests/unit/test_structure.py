"""The package's shape beyond the import-linter layers contract: a light config, and package data that
points at files."""

import subprocess
import sys
import tomllib
from pathlib import Path

import lensrl

SRC = Path(lensrl.__file__).parent
ROOT = SRC.parent.parent


def test_the_config_loads_without_torch_or_transformers():
    # the layers themselves are import-linter's contract (pyproject.toml, `lint-imports` in CI); this is
    # the weight: reading and validating a config (the CLI, a study file) must not pay for torch
    code = (
        "import sys, lensrl.config; lensrl.config.load_config(overrides=['algo.advantage=grpo']); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_docs_draw_the_layers_of_the_contract_in_its_order():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [[m.strip().removeprefix("lensrl.") for m in line.split("|")] for line in contract["layers"]]
    page = (ROOT / "docs" / "development.md").read_text()
    picture = page[page.index("## Layout") :].split("```")[1].splitlines()
    drawn = [[m.strip() for m in line[:26].split("|")] for line in picture if line[:1].strip()]
    assert drawn == layers


def test_package_data_patterns_match_files():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lensrl"]
    for pattern in patterns:
        assert list(SRC.glob(pattern)), f"package-data pattern {pattern!r} matches no file under {SRC}"


def test_docstrings_cite_a_page_that_exists():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "lens-spec.md" not in text, path
        if "docs/algorithm.md" in text:
            assert (ROOT / "docs" / "algorithm.md").is_file()
