"""The package's shape beyond the import-linter layers contract: a light config, and package data that
points at files."""

import ast
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


INTERNALS_ALLOWED = {"bench/logprob_mismatch.py"}  # it compares two of lensrl's internal code paths
"""Scripts that may import lensrl's modules directly."""


def test_experiments_and_benchmarks_use_lensrls_public_api():
    # `from lensrl import ...` (the names lensrl exports) and the documented integrations; siblings as
    # packages (`from experiments.x import ...`), so that `python -m experiments.NAME` finds them
    scripts = sorted([*(ROOT / "experiments").glob("*.py"), *(ROOT / "bench").glob("*.py")])
    assert len(scripts) >= 15
    bare = {p.stem for p in scripts} - {"__init__", "bench"}  # a sibling imported by its file name
    for path in scripts:
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in bare, f"{name} imports {module} by its bare name"
                if module.startswith("lensrl.") and name not in INTERNALS_ALLOWED:
                    assert module.startswith("lensrl.integrations."), f"{name} imports {module}"
            if isinstance(node, ast.ImportFrom) and node.module == "lensrl":
                assert all(a.name in lensrl.__all__ for a in node.names), name


def test_the_library_imports_nothing_from_the_scripts():
    assert not (SRC / "allocator.py").exists() and not (SRC / "machine.py").exists()  # bench/'s own
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "import experiments" not in text and "from experiments" not in text, path
        assert "from bench" not in text and "import bench" not in text, path
