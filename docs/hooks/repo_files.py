"""MkDocs hook: repository files outside docs/ (results/, configs/, ...) on the documentation site.

Three things, so that the site shows the committed results without copying them by hand and works
offline, without a hosted repository:

* **Includes.** A line `<!-- include ../results/signs/main/study.md -->` (the path relative to the
  page) is replaced by that file's text, with its relative links rebased onto the page; with a
  quoted title after the path (`<!-- include PATH "Every level and k" -->`) the text goes into a
  collapsed block under that title. A generated table (a study's `study.md`) so exists once, in
  the file its tests check, and the page renders it.
* **Figures.** A link or image to a repository image (`.png`, `.svg`, `.jpg`) is copied into the
  built site under `assets/repo/` at build time and the link points at the copy; a figure shown on a
  page is also a link to itself, so a click opens it full size.
* **Other repository links.** Each is checked (a missing file or folder fails the build, naming
  every broken link) and rewritten: to `extra.repository_files_url` + the repository path when
  mkdocs.yml sets that prefix (e.g. a code host's URL of the main branch's tree), else to the
  repository path as inline code, since the built site does not contain the file.

Links inside docs/ are left to MkDocs, and code blocks are left alone.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INCLUDE = re.compile(r'^<!-- include (?P<path>\S+)(?: "(?P<title>[^"]+)")? -->[ \t]*$', re.MULTILINE)
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
ASSETS = "assets/repo"  # where the site keeps copies of repository figures, under the site's root


def _is_relative(target: str) -> bool:
    return not (re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"))


def _outside_code(markdown: str, transform: Any) -> str:
    """`markdown` with `transform` applied to every stretch outside fenced code blocks."""
    parts, last = [], 0
    for fence in FENCE.finditer(markdown):
        parts += [transform(markdown[last : fence.start()]), fence[0]]
        last = fence.end()
    return "".join(parts + [transform(markdown[last:])])


def expand_includes(markdown: str, page_path: Path) -> str:
    """`markdown` with each include line replaced by its file, links rebased from that file onto the page."""

    def include(match: re.Match[str]) -> str:
        path = (page_path.parent / match["path"]).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{page_path.name}: the included file {match['path']} does not exist")

        def rebase(link: re.Match[str]) -> str:
            target = link["target"]
            if not _is_relative(target):
                return link[0]
            moved = posixpath.relpath((path.parent / target).resolve(), page_path.parent.resolve())
            return f"{link['bang']}[{link['text']}]({moved}{link['anchor'] or ''})"

        text = _outside_code(path.read_text().strip("\n"), lambda s: LINK.sub(rebase, s))
        if not match["title"]:
            return text
        indented = "\n".join(f"    {line}" if line else "" for line in text.split("\n"))
        return f'??? abstract "{match["title"]}"\n\n{indented}'

    return INCLUDE.sub(include, markdown)


def repository_link(text: str, path: str, files_url: str | None) -> str:
    """The Markdown for a link labelled `text` to the repository path `path` (relative to the repo root)."""
    if files_url:
        return f"[{text}]({files_url.rstrip('/')}/{path})"
    code = f"`{path}`"
    return code if text.strip("`") == path else f"{text} ({code})"


def rewrite_links(
    markdown: str, page_path: Path, docs_dir: Path, files_url: str | None
) -> tuple[str, list[str], list[str]]:
    """`markdown` with every link that leaves `docs_dir` rewritten; the targets that do not exist; the
    repository paths of the images it points at (to be copied under `ASSETS`)."""
    repo = docs_dir.parent
    broken: list[str] = []
    images: list[str] = []

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if not _is_relative(target):
            return match[0]  # an external or absolute link
        resolved = (page_path.parent / target).resolve()
        if resolved == docs_dir or docs_dir in resolved.parents:
            return match[0]  # inside docs/: MkDocs validates it
        if repo not in resolved.parents:
            broken.append(f"{target} (outside the repository)")
            return match[0]
        if not resolved.exists():
            broken.append(target)
            return match[0]
        path = resolved.relative_to(repo).as_posix() + ("/" if resolved.is_dir() else "")
        if resolved.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
            copy = posixpath.relpath(f"{ASSETS}/{path}", page_path.parent.relative_to(docs_dir).as_posix() or ".")
            if match["bang"]:  # a figure: shown at the page's width, a click opens it full size
                return f"[![{match['text']}]({copy})]({copy})"
            return f"[{match['text']}]({copy})"
        return repository_link(match["text"], path, files_url)

    new = _outside_code(markdown, lambda s: LINK.sub(replace, s))
    return new, broken, images


def _page_markdown(path: Path, docs_dir: Path, files_url: str | None) -> tuple[str, list[str], list[str]]:
    return rewrite_links(expand_includes(path.read_text(), path), path, docs_dir, files_url)


def on_files(files: Any, config: Any) -> Any:
    """Adds a copy of every repository image a page points at, under `ASSETS`."""
    from mkdocs.structure.files import File  # here: the tests import this module without MkDocs

    docs_dir = Path(config["docs_dir"]).resolve()
    wanted: set[str] = set()
    for page in files.documentation_pages():
        try:
            wanted.update(_page_markdown(docs_dir / page.src_uri, docs_dir, None)[2])
        except FileNotFoundError:
            continue  # a missing include: on_page_markdown reports it
    for path in sorted(wanted):
        abs_path = str(docs_dir.parent / path)
        files.append(File.generated(config, f"{ASSETS}/{path}", abs_src_path=abs_path))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    docs_dir = Path(config["docs_dir"]).resolve()
    page_path = docs_dir / page.file.src_uri
    try:
        markdown = expand_includes(markdown, page_path)
    except FileNotFoundError as error:
        raise PluginError(str(error)) from None
    new, broken, _ = rewrite_links(markdown, page_path, docs_dir, config["extra"].get("repository_files_url"))
    if broken:
        raise PluginError(f"{page.file.src_uri}: links to repository paths that do not exist: {', '.join(broken)}")
    return new
