"""MkDocs hook: links from a docs page to repository files outside docs/ (results/, configs/, ...).

MkDocs checks links between pages; a relative link that leaves docs/ it cannot resolve. This hook
checks each such link against the repository instead (a missing file or folder fails the build,
naming every broken link) and rewrites it: to `extra.repository_files_url` + the repository path
when mkdocs.yml sets that prefix (e.g. a code host's URL of the main branch's tree), else to the
repository path as inline code, since the built site does not contain the file. Code blocks are
left alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def repository_link(text: str, path: str, files_url: str | None) -> str:
    """The Markdown for a link labelled `text` to the repository path `path` (relative to the repo root)."""
    if files_url:
        return f"[{text}]({files_url.rstrip('/')}/{path})"
    code = f"`{path}`"
    return code if text.strip("`") == path else f"{text} ({code})"


def rewrite_links(markdown: str, page_path: Path, docs_dir: Path, files_url: str | None) -> tuple[str, list[str]]:
    """`markdown` with every link that leaves `docs_dir` rewritten, and the targets that do not exist."""
    repo = docs_dir.parent
    broken: list[str] = []

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
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
        return repository_link(match["text"], path, files_url)

    parts, last = [], 0
    for fence in FENCE.finditer(markdown):
        parts.append(LINK.sub(replace, markdown[last : fence.start()]))
        parts.append(fence[0])
        last = fence.end()
    parts.append(LINK.sub(replace, markdown[last:]))
    return "".join(parts), broken


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    new, broken = rewrite_links(
        markdown, docs_dir / page.file.src_uri, docs_dir, config["extra"].get("repository_files_url")
    )
    if broken:
        from mkdocs.exceptions import PluginError  # here: the tests import this module without MkDocs

        raise PluginError(f"{page.file.src_uri}: links to repository paths that do not exist: {', '.join(broken)}")
    return new
