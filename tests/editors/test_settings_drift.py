"""Every server setting is reachable from both editors, from one source: `lsp_server.settings.Settings`.

The VS Code extension sends every key its package.json contributes except its own client-side keys
(editors/vscode/src/settings.ts derives the list from the manifest at run time), so a setting is sent
exactly when it is contributed; the Neovim plugin passes `init_options` through as they are, so a setting
is usable there when its help page names it. A setting added to the server and forgotten in an editor
fails here.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from lsp_server.settings import CAMEL_KEYS, Settings

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "editors" / "vscode" / "package.json"
EXTENSION_SETTINGS = REPO / "editors" / "vscode" / "src" / "settings.ts"
NVIM_HELP = REPO / "editors" / "neovim" / "doc" / "codellama.txt"
SERVER_README = REPO / "lsp_server" / "README.md"

SERVER_KEYS = sorted(CAMEL_KEYS)


def contributed() -> dict[str, dict]:
    properties = json.loads(MANIFEST.read_text(encoding="utf-8"))["contributes"]["configuration"]["properties"]
    return {key.removeprefix("codellama."): spec for key, spec in properties.items()}


def client_only_keys() -> list[str]:
    """CLIENT_ONLY_KEYS of the extension's settings.ts: the keys it never sends."""
    match = re.search(r"CLIENT_ONLY_KEYS[^=]*=\s*\[([^\]]*)\]", EXTENSION_SETTINGS.read_text(encoding="utf-8"))
    assert match, "settings.ts defines CLIENT_ONLY_KEYS"
    return re.findall(r'"([^"]+)"', match.group(1))


def nvim_init_options_doc() -> str:
    """The `init_options` entry of the Neovim help page (up to the next option)."""
    text = NVIM_HELP.read_text(encoding="utf-8")
    match = re.search(r"^    init_options ~\n(.*?)^    \w+ ~\n", text, re.S | re.M)
    assert match, "the help page documents init_options"
    return match.group(1)


def default_of(name: str):
    field = next(f for f in fields(Settings) if f.name == name)
    value = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("key", SERVER_KEYS)
def test_vscode_contributes_and_sends_every_server_setting(key: str) -> None:
    spec = contributed().get(key)
    assert spec is not None, f"codellama.{key} is missing from editors/vscode/package.json: VS Code users cannot set it"
    assert key not in client_only_keys(), f"codellama.{key} is listed as client-only in settings.ts: it is never sent"
    assert spec.get("description") or spec.get("markdownDescription"), f"codellama.{key} has no description"
    # The Settings UI shows the contributed default: it must be what the server uses when the key is absent.
    assert spec.get("default") == default_of(CAMEL_KEYS[key]), f"codellama.{key}'s default differs from the server's"


def test_vscode_contributes_no_setting_the_server_ignores() -> None:
    stray = set(contributed()) - set(SERVER_KEYS) - set(client_only_keys())
    assert not stray, f"contributed but neither a server key nor client-only: {sorted(stray)}"


@pytest.mark.parametrize("key", SERVER_KEYS)
def test_neovim_help_documents_every_server_setting(key: str) -> None:
    assert f"`{key}`" in nvim_init_options_doc(), f"`{key}` is missing from init_options in :help codellama"


@pytest.mark.parametrize("key", SERVER_KEYS)
def test_server_readme_documents_every_setting(key: str) -> None:
    assert f"| `{key}` |" in SERVER_README.read_text(encoding="utf-8"), f"`{key}` is missing from lsp_server/README.md"
