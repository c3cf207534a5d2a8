"""MkDocs hooks (``mkdocs.yml``: ``hooks``) that draw pages from the source, so they cannot drift.

- ``docs/settings.md``: its ``<!-- settings -->`` marker becomes the table of every setting,
  drawn from ``.env.example`` (sections, defaults, and the comment above each group of
  settings). The build fails if ``.env.example`` and ``common/settings.py`` name different
  settings, or a setting has no comment to explain it.
- ``docs/index.md``: its ``<!-- readme -->`` marker becomes the README, its links into ``docs/``
  made relative to the site.
"""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["SettingGroup", "read_env_example", "settings_markdown", "readme_markdown", "on_page_markdown"]

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MARKER = "<!-- settings -->"
README_MARKER = "<!-- readme -->"
_SECTION = re.compile(r"^# --- (.+?) -+$")
_SETTING = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass
class SettingGroup:
    """Settings that share one comment in ``.env.example``, under its section."""

    section: str
    meaning: list[str] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)


def read_env_example(text: str) -> list[SettingGroup]:
    """The groups of ``.env.example``: a comment block and the settings right after it."""
    groups: list[SettingGroup] = []
    section = ""
    comment: list[str] = []
    current: SettingGroup | None = None
    for line in text.splitlines():
        if (heading := _SECTION.match(line)) is not None:
            section, comment, current = heading.group(1).strip(), [], None
        elif line.startswith("#"):
            if current is not None:
                current, comment = None, []
            comment.append(line.lstrip("#").strip())
        elif (setting := _SETTING.match(line)) is not None:
            if current is None:
                current = SettingGroup(section, comment)
                groups.append(current)
                comment = []
            current.settings.append((setting.group(1), setting.group(2)))
        else:  # a blank line ends a group
            current, comment = None, []
    return [g for g in groups if g.section]  # the file's own header comes before the first section


def _cell(text: str) -> str:
    """Text for a table cell: as written, never read as HTML (``deployments/<CHAIN_ID>.json``)."""
    return html.escape(text, quote=False).replace("|", "\\|")


def settings_markdown(env_text: str, names: set[str]) -> str:
    """The settings as Markdown tables, one a section; ValueError if they disagree with ``names``."""
    groups = read_env_example(env_text)
    listed = [name for g in groups for name, _ in g.settings]
    missing, unknown = sorted(names - set(listed)), sorted(set(listed) - names)
    if missing or unknown:
        raise ValueError(f".env.example and common/settings.py disagree: not in .env.example {missing}, "
                         f"not in Settings {unknown}")
    unexplained = [name for g in groups if not g.meaning for name, _ in g.settings]
    if unexplained:
        raise ValueError(f"settings without a comment above them in .env.example: {unexplained}")
    out: list[str] = []
    for section in dict.fromkeys(g.section for g in groups):
        out += [f"## {section[0].upper()}{section[1:]}", "", "| setting | default | meaning |", "|---|---|---|"]
        for g in (g for g in groups if g.section == section):
            settings = ", ".join(f"`{name}`" for name, _ in g.settings)
            defaults = ", ".join(f"`{_cell(value)}`" if value else "(empty)" for _, value in g.settings)
            out.append(f"| {settings} | {defaults} | {_cell(' '.join(g.meaning))} |")
        out.append("")
    return "\n".join(out)


def readme_markdown(readme: str) -> str:
    """The README as a page of the site: its links into ``docs/`` made relative to the site."""
    return readme.replace("](docs/", "](")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the markers of the settings page and the home page."""
    if SETTINGS_MARKER in markdown:
        if str(ROOT) not in sys.path:  # `mkdocs` runs from .venv/bin, not the project's root
            sys.path.insert(0, str(ROOT))
        from common.settings import Settings

        names = {f.name.upper() for f in fields(Settings)}
        table = settings_markdown((ROOT / ".env.example").read_text(encoding="utf-8"), names)
        markdown = markdown.replace(SETTINGS_MARKER, table)
    if README_MARKER in markdown:
        markdown = markdown.replace(README_MARKER, readme_markdown((ROOT / "README.md").read_text(encoding="utf-8")))
    return markdown
