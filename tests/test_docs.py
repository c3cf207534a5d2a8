"""The README as a front page and the documentation site: nothing they say may go stale silently.

The README stays a page or two with the two commands first and no second copy of the reference
(the protocol's summary lives in docs/protocol.md alone); every command it shows is one that
exists, with options its program accepts, and its sample fleet line is what the fleet prints.
The site builds with ``mkdocs build --strict`` (a broken link, anchor or missing page fails it),
its settings page lists every setting, and it fetches nothing from the network.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from common.settings import ROOT, Settings
from meters.display import FleetLog
from meters.status import LinkState, MeterStatus

README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_README_LINES = 250
#: Hosts of fonts and scripts a theme may fetch; an offline site names none of them.
FETCHED_HOSTS = ("fonts.googleapis.com", "fonts.gstatic.com", "cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text: (language, body)."""
    return re.findall(r"(?ms)^```(\w*)\n(.*?)^```", text)


def test_the_readme_is_a_front_page_with_the_two_commands_first() -> None:
    assert len(README.splitlines()) <= MAX_README_LINES
    language, first = code_blocks(README)[0]
    assert language == "bash"
    assert [line.split()[0] for line in first.splitlines()] == ["./run-demo.sh", "./run-tests.sh"]
    assert README.index("```") < README.index("\n## "), "the commands come before any section"
    # One source for the reference: no second (stale) summary of the wire protocol or the settings.
    assert "smartmeter.v" not in README and "## Wire protocol" not in README and "| `CHAIN_ID`" not in README


def _help(argv: list[str]) -> str:
    """What a command prints for --help (its usage and options)."""
    ran = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return ran.stdout + ran.stderr


def readme_commands() -> list[list[str]]:
    """Every command line of the README's bash blocks that runs a program of this project."""
    out = []
    for language, body in code_blocks(README):
        for line in body.splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if words and (words[0].startswith("./") or words[0] in (".venv/bin/python", "node")):
                assert language == "bash", line
                out.append(words)
    return out


@pytest.mark.parametrize("words", readme_commands(), ids=lambda words: " ".join(words[:3]))
def test_each_readme_command_exists_and_its_program_takes_the_options_it_shows(words: list[str]) -> None:
    program = words[1] if words[0] in (".venv/bin/python", "node") else words[0]
    assert (ROOT / program).is_file(), program
    options = [w.split("=")[0] for w in words if w.startswith("--")]
    if program.endswith(".sh"):
        text = (ROOT / program).read_text()  # the scripts document their options in their header
    else:
        interpreter = sys.executable if words[0] == ".venv/bin/python" else "node"
        head = [interpreter, program, *[w for w in words[2:3] if not w.startswith("-")]]  # and its subcommand
        text = _help(head)
        assert "usage" in text.lower(), text
    assert all(option in text for option in options), (options, text[:2000])


def test_the_readmes_fleet_line_is_what_the_plain_fleet_prints() -> None:
    shown = re.search(r"(?m)^fleet meter=.*$", README)
    assert shown is not None
    fields_ = dict(re.findall(r"(\w+)=('[^']*'|\S+)", shown.group(0)))
    status = MeterStatus(name=fields_["meter"], meter="0x1", state=LinkState(fields_["state"].strip("'")),
                         last_seq=int(fields_["seq"]), updated_at=time.time(),
                         amount_due=round(float(fields_["bill"].strip("'£")) * 100) * 1_000_000)
    assert FleetLog().lines([status], time.time()) == [shown.group(0)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    ran = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return out


def test_the_site_builds_strictly_with_every_page_and_the_readme_as_its_home(site: Path) -> None:
    nav = re.findall(r"(?m)^\s+- .*?:\s+([\w-]+\.md)$", (ROOT / "mkdocs.yml").read_text())
    assert len(nav) >= 20 and all((ROOT / "docs" / page).is_file() for page in nav)
    for page in nav:
        assert (site / page.replace(".md", ".html")).is_file(), page
    home = (site / "index.html").read_text()
    assert "./run-demo.sh" in home and 'href="getting-started.html"' in home


def test_the_settings_page_lists_every_setting_from_env_example(site: Path) -> None:
    page = (site / "settings.html").read_text()
    assert "<!-- settings -->" not in page
    missing = [f.name.upper() for f in fields(Settings) if f"<code>{f.name.upper()}</code>" not in page]
    assert missing == []


def test_the_site_fetches_no_fonts_or_scripts_from_the_network(site: Path) -> None:
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", text), path
        assert not any(host in text for host in FETCHED_HOSTS), path
        assert "@import" not in text or "url(http" not in text, path
    # The theme's script loads two things from a CDN only when a page needs them: Mermaid for a
    # diagram, and a ResizeObserver polyfill for browsers without one. No page has a diagram.
    assert not any("```mermaid" in p.read_text() for p in (ROOT / "docs").glob("*.md"))
