"""The documentation site's hooks: the settings page drawn from .env.example, refusing to drift."""

from __future__ import annotations

import pytest

from scripts.docs_hooks import read_env_example, readme_markdown, settings_markdown

ENV = """# The file's own header.

# --- chain ----------------------------------------------------------------------------
# Where the chain is.
CHAIN_RPC_URL=http://127.0.0.1:8545
CHAIN_WS_URL=ws://127.0.0.1:8545
# Its id | one a deployment, deployments/<CHAIN_ID>.json.
CHAIN_ID=1337

# --- server ---------------------------------------------------------------------------
# A native compiler; empty: the npm one.
SOLC_BINARY=
"""


def test_a_comment_explains_the_settings_right_after_it_under_its_section():
    groups = read_env_example(ENV)
    assert [(g.section, g.settings) for g in groups] == [
        ("chain", [("CHAIN_RPC_URL", "http://127.0.0.1:8545"), ("CHAIN_WS_URL", "ws://127.0.0.1:8545")]),
        ("chain", [("CHAIN_ID", "1337")]), ("server", [("SOLC_BINARY", "")])]
    table = settings_markdown(ENV, {"CHAIN_RPC_URL", "CHAIN_WS_URL", "CHAIN_ID", "SOLC_BINARY"})
    assert "## Chain\n" in table and "## Server\n" in table
    assert "| `CHAIN_ID` | `1337` | Its id \\| one a deployment, deployments/&lt;CHAIN_ID&gt;.json. |" in table
    assert "| `SOLC_BINARY` | (empty) | A native compiler; empty: the npm one. |" in table


def test_the_settings_page_refuses_to_build_when_env_example_and_the_settings_module_disagree():
    with pytest.raises(ValueError, match=r"not in .env.example \['NEW_SETTING'\], not in Settings \['CHAIN_ID'\]"):
        settings_markdown(ENV, {"CHAIN_RPC_URL", "CHAIN_WS_URL", "SOLC_BINARY", "NEW_SETTING"})
    with pytest.raises(ValueError, match="without a comment above them.*'TIME_SCALE'"):
        settings_markdown(ENV + "\nTIME_SCALE=1\n", {"CHAIN_RPC_URL", "CHAIN_WS_URL", "CHAIN_ID", "SOLC_BINARY",
                                                     "TIME_SCALE"})


def test_the_readmes_links_into_docs_become_the_sites():
    assert readme_markdown("[a](docs/api.md) and ![b](docs/x.png) and [c](#top)") == \
        "[a](api.md) and ![b](x.png) and [c](#top)"
