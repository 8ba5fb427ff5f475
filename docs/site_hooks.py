"""MkDocs hook (mkdocs.yml ``hooks:``): the site's pages are the repository's own Markdown files, added at their
repository paths (the README as the home page), so the relative links between them resolve on the site as they do
on GitHub; leaderboard figures come along. Nothing is copied into the repository."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def _pages():
    yield "index.md", ROOT / "README.md"
    yield "docs/design.md", ROOT / "docs" / "design.md"
    for pattern in ("plugins/*/README.md", "leaderboards/*.md", "leaderboards/figures/*.png"):
        for path in sorted(ROOT.glob(pattern)):
            yield path.relative_to(ROOT).as_posix(), path


def on_files(files, config):
    for uri, path in _pages():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
