"""The code the documentation shows runs: the README's quickstarts, the TRL page's example, the docs hooks.

What runs how:
* the README's pure-function quickstart is a doctest: its printed tensors are checked;
* the README's TRL quickstart and the TRL page's example run as written, on the carry testbed's 1M-parameter
  policy loaded by TRL through `from_pretrained`, with their parameter names (MODEL, STEPS; and DATA, PROMPT on
  the page) set to the tiny policy, 1-2 steps and testbed problems;
* the README's verl quickstart cannot run without verl and GPUs: every override in it must appear verbatim in the
  launch command of docs/verl.md, the one full copy, which tests/integration/test_verl.py checks against verl;
* the README's CLI quickstart: every command parses and its config validates; the two `train` commands, `samples`,
  `plot` and `eval` run for real with small-size overrides appended (2 steps), `eval` on the tiny run's last
  checkpoint; `compare` (six runs) is parsed only.
"""

import doctest
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text, as (language, code)."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)]


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading`, up to the next `## ` heading."""
    start = markdown.index(f"## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


QUICKSTARTS = code_blocks(section(README.read_text(), "Four ways in"))


def quickstart(marker: str) -> str:
    """The one README quickstart block that contains `marker`."""
    (code,) = [code for _, code in QUICKSTARTS if marker in code]
    return code


def with_names(code: str, **names: str) -> str:
    """`code` with each top-level `NAME = ...` line replaced by `NAME = <value>` (each must occur once)."""
    for name, value in names.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, flags=re.MULTILINE)
        assert n == 1, f"{name} is not assigned exactly once in the snippet"
    return code


def test_readme_has_the_four_quickstarts_each_at_most_ten_lines():
    languages = [lang for lang, _ in QUICKSTARTS]
    assert languages == ["python", "python", "bash", "bash"]
    for _, code in QUICKSTARTS:
        assert len(code.splitlines()) <= 10


def test_readme_findings_fit_on_one_screen_and_each_links_to_its_page():
    # a landing page: at most six one-line bullets and one figure; the readings live on the Results page
    found = section(README.read_text(), "What we found")
    bullets = [line for line in found.splitlines() if line.startswith("* ")]
    assert 1 <= len(bullets) <= 6
    assert all(re.search(r"\[More\]\(docs/[\w-]+\.md(#[\w-]+)?\)$", bullet) for bullet in bullets), bullets
    assert found.count("![") == 1
    assert len(found.splitlines()) <= 15


CODE_WIDTH = 96  # characters of a code block's line that the documentation site shows without scrolling


def test_docs_code_blocks_fit_the_page_width():
    # a longer line wraps on the site (docs/stylesheets/extra.css) and reads as two: break it where it reads well
    long = [
        f"{page.name}: {line}"
        for page in sorted(DOCS.glob("*.md"))
        for _, code in code_blocks(page.read_text())
        for line in code.splitlines()
        if len(line) > CODE_WIDTH
    ]
    assert long == []


def test_readme_pure_function_quickstart_prints_what_it_shows():
    test = doctest.DocTestParser().get_doctest(quickstart(">>> "), {}, "README quickstart", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5


def _tiny_policy() -> str:
    from lensrl.testbed import base_policy_path

    return repr(str(base_policy_path()))


def test_readme_trl_quickstart_trains_the_tiny_policy(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)  # the snippet writes into ./out
    code = with_names(quickstart("LensGRPOTrainer"), MODEL=_tiny_policy(), STEPS="2")
    exec(compile(code, "README TRL quickstart", "exec"), {})
    assert (tmp_path / "out").is_dir()


def test_trl_page_example_trains_the_tiny_policy_on_testbed_problems(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)  # the example writes into ./lens-grpo
    (code,) = [code for lang, code in code_blocks((DOCS / "trl.md").read_text()) if "LensGRPOTrainer(" in code]
    code = with_names(
        code, MODEL=_tiny_policy(), DATA='SourceConfig(path="testbed", size=32)', PROMPT='"{prompt}"', STEPS="1"
    )
    namespace: dict = {}
    exec(compile(code, "docs/trl.md example", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1
    logged = [entry for entry in trainer.state.log_history if "groups/negative" in entry]
    assert logged, "the LENS metrics were not logged"


def launch_overrides(command: str) -> list[str]:
    """The overrides of a `python -m lensrl.integrations.verl` command (backslash continuations, # comments)."""
    lines = command.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("python -m lensrl.integrations.verl"))
    words = []
    for line in lines[start:]:
        line = line.split("  #", 1)[0].strip()
        words.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(words))[3:]


def test_readme_verl_quickstart_is_a_part_of_the_documented_launch_command():
    readme = [o for o in launch_overrides(quickstart("lensrl.integrations.verl")) if o != "..."]
    page = launch_overrides((DOCS / "verl.md").read_text())
    assert "algorithm.adv_estimator=lens" in readme
    assert set(readme) <= set(page), f"not in docs/verl.md's command: {sorted(set(readme) - set(page))}"


SMALL = [  # appended to the CLI quickstart's train commands: 2 steps of 4 questions x 4 samples, a tiny evaluation
    "run.steps=2",
    "run.progress=false",
    "rollout.questions_per_step=4",
    "rollout.group_size=4",
    "rollout.max_new_tokens=16",
    "optim.updates_per_rollout=2",
    "data.eval={path: testbed, per_level: 2}",
    "run.eval_samples=2",
    "run.sample_every=1",
]


def test_readme_cli_quickstart_commands_parse_and_run_at_small_size(tmp_path, monkeypatch, capsys):
    from lensrl.cli import build_parser, main
    from lensrl.config import TrainConfig, load_config

    commands = [shlex.split(line.split("  #", 1)[0]) for line in quickstart("lensrl train").splitlines()]
    assert all(words[0] == "lensrl" for words in commands)
    parser = build_parser()
    for words in commands:  # every command parses, and its config (file, overrides) validates
        args, extra = parser.parse_known_args(words[1:])
        if hasattr(args, "overrides"):
            load_config(getattr(args, "config", None), args.overrides + extra)

    by_name = {words[1]: [] for words in commands}
    for words in commands:
        by_name[words[1]].append(words[1:])
    assert set(by_name) == {"train", "eval", "samples", "plot", "compare"}
    lens_run = by_name["train"][0][by_name["train"][0].index("--output-dir") + 1]
    # the eval command's checkpoint is the one the first train command writes at the default run.steps
    (eval_args,) = by_name["eval"]
    assert eval_args[1] == f"{lens_run}/checkpoints/step_{TrainConfig().run.steps:06d}"

    monkeypatch.chdir(tmp_path)
    for train_args in by_name["train"]:
        assert main(train_args + SMALL) == 0
    for args in by_name["samples"] + by_name["plot"]:
        assert main(args) == 0
    assert (tmp_path / "curves.png").is_file()
    small_eval = SMALL[-3:-1]  # the same tiny evaluation set and samples
    assert main(["eval", f"{lens_run}/checkpoints/step_000002", *small_eval]) == 0
    assert "pass@1" in capsys.readouterr().out


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repo_links_are_checked_and_rewritten(tmp_path):
    repo_files = _hook("repo_files")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (tmp_path / "results" / "main").mkdir(parents=True)
    (tmp_path / "results" / "main" / "study.png").write_bytes(b"png")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("x: 1\n")
    page = docs / "sub" / "page.md"
    text = (
        "[results/main/](../../results/main/) and [the config](../../configs/a.yaml#top), [a page](../index.md), "
        "[gone](../../results/gone/), [out](../../../elsewhere.md), [web](https://example.org/x)\n"
        "```\n[in code](../../results/gone/)\n```\n"
        "![a figure](../../results/main/study.png) and [its file](../../results/main/study.png)\n"
    )
    new, broken, images = repo_files.rewrite_links(text, page, docs, None)
    # a folder whose label is its path: the path alone; another label: the label and the path; docs/ links,
    # web links and code blocks untouched; a missing target and one outside the repository reported
    assert new.splitlines()[0] == (
        "`results/main/` and the config (`configs/a.yaml`), [a page](../index.md), "
        "[gone](../../results/gone/), [out](../../../elsewhere.md), [web](https://example.org/x)"
    )
    assert new.splitlines()[2] == "[in code](../../results/gone/)"
    assert broken == ["../../results/gone/", "../../../elsewhere.md (outside the repository)"]
    # a figure, shown or linked, points at its copy in the site (docs/assets/repo/results/main/study.png seen
    # from docs/sub/); a shown one is also a link to itself
    assert new.splitlines()[4] == (
        "[![a figure](../assets/repo/results/main/study.png)](../assets/repo/results/main/study.png)"
        " and [its file](../assets/repo/results/main/study.png)"
    )
    assert images == ["results/main/study.png", "results/main/study.png"]
    new, _, _ = repo_files.rewrite_links("[c](../../configs/a.yaml)", page, docs, "https://host/repo/tree/main/")
    assert new == "[c](https://host/repo/tree/main/configs/a.yaml)"


def test_an_include_renders_the_file_with_its_links_rebased_onto_the_page(tmp_path):
    repo_files = _hook("repo_files")
    docs = tmp_path / "docs"
    docs.mkdir()
    study = tmp_path / "results" / "main"
    study.mkdir(parents=True)
    (study / "study.md").write_text(
        "Title\n\n| a |\n|---|\n| 1 |\n\nPlot: [study.png](study.png), [web](https://x.org/y)\n"
    )
    page = docs / "results.md"
    text = "# Results\n\n<!-- include ../results/main/study.md -->\n\nafter\n"
    # study.png beside study.md is ../results/main/study.png seen from docs/results.md
    assert repo_files.expand_includes(text, page) == (
        "# Results\n\nTitle\n\n| a |\n|---|\n| 1 |\n\nPlot: [study.png](../results/main/study.png), "
        "[web](https://x.org/y)\n\nafter\n"
    )
    # with a title: a collapsed block, every non-blank line indented by four spaces
    folded = repo_files.expand_includes('<!-- include ../results/main/study.md "Every cell" -->\n', page)
    assert folded.splitlines()[:5] == ['??? abstract "Every cell"', "", "    Title", "", "    | a |"]
    with pytest.raises(FileNotFoundError, match="gone.md"):
        repo_files.expand_includes("<!-- include ../results/gone.md -->", page)


def test_the_results_page_renders_the_generated_tables_and_shows_the_figures():
    # each table on the Results page comes from a generated file its tests check, by an include, not a copy
    repo_files = _hook("repo_files")
    page = DOCS / "results.md"
    markdown = page.read_text()
    included = repo_files.INCLUDE.findall(markdown)
    assert len(included) >= 5
    assert all(Path(path).name in ("study.md", "answer.md", "compare.md") for path, _ in included)
    hand_tables = [line for line in markdown.splitlines() if line.startswith("|---")]
    assert hand_tables == []
    _, broken, images = repo_files.rewrite_links(repo_files.expand_includes(markdown, page), page, DOCS.resolve(), None)
    assert broken == [] and "results/signs/main/study.png" in images


def test_config_reference_lists_every_field_of_the_config():
    import types
    import typing

    from pydantic import BaseModel

    from lensrl.config import TrainConfig

    reference = _hook("config_reference").config_reference()

    def is_model(tp) -> bool:
        return isinstance(tp, type) and issubclass(tp, BaseModel)

    def keys(model: type[BaseModel], prefix: str, skip: str | None = None) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            tp, members = field.annotation, ()
            if typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
                members = typing.get_args(field.annotation)
            if is_model(tp):
                out += keys(tp, f"{prefix}{name}.")
            elif members and all(is_model(m) for m in members):  # one model per choice: the chooser is a title
                for member in members:
                    out += keys(member, f"{prefix}{name}.", skip=field.discriminator)
            elif name != skip:
                out.append(f"{prefix}{name}")
        return out

    expected = keys(TrainConfig, "")
    assert "rollout.group_size" in expected and "data.train" in expected and "run.seed" in expected
    missing = [key for key in expected if f"`{key}`" not in reference]
    assert not missing, missing
    # a documented row: key, type, default, bounds and the field's own docstring
    doc = TrainConfig.model_fields["rollout"].annotation.model_fields["group_size"].description
    row = next(line for line in reference.splitlines() if line.startswith("| `rollout.group_size` |"))
    assert row == f"| `rollout.group_size` | int | `16` | >= 2 | {doc} |"
