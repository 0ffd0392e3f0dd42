"""End to end: the instruct code actions through `python -m lsp_server` over stdio, with the real
engine and no model configured, so the actions run on the embedded default model (models/default).
That model is a small completion model, not instruction-tuned, and says so (`"instruct": false`): the
server first offers the actions disabled and refuses to run them. The other tests then set
`instructCapable: true` (run it anyway): its answers are not useful, but they are deterministic (greedy)
and never empty. What is checked is everything around them: the actions offered, an edit that would
break the file held back and shown instead, the edit's range and structure once the client applies it,
the answer shown and cut short, cancellation."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import pytest_asyncio
from lsprotocol import types as T

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODULE = (
    "import math\n"
    "\n"
    "\n"
    "def circle_area(radius: float) -> float:\n"
    "    scaled = radius * radius\n"
    "    return math.pi * scaled\n"
    "\n"
    "\n"
    "def half(x):\n"
    "    return x / 0\n"
)


class Editor:
    """The client's copy of its documents: applies the server's workspace edits like an editor does
    (and tells the server with didChange), remembering what it was sent."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.texts: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.edits: list[T.ApplyWorkspaceEditParams] = []
        self.created: list[str] = []

    def open(self, path: Path, text: str) -> str:
        uri = lc.open_doc(self.client, path, text)
        self.texts[uri], self.versions[uri] = text, 1
        return uri

    def apply(self, params: T.ApplyWorkspaceEditParams) -> T.ApplyWorkspaceEditResult:
        self.edits.append(params)
        for change in params.edit.document_changes or []:
            if isinstance(change, T.CreateFile):
                self.created.append(change.uri)
                self.texts.setdefault(change.uri, "")
                continue
            uri = change.text_document.uri
            if change.text_document.version is not None and change.text_document.version != self.versions.get(uri):
                return T.ApplyWorkspaceEditResult(applied=False, failure_reason="version mismatch")
            text = self.texts[uri]
            for edit in sorted(change.edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
                start, end = offset(text, edit.range.start), offset(text, edit.range.end)
                text = text[:start] + edit.new_text + text[end:]
            self.texts[uri] = text
            if uri in self.versions:
                self.versions[uri] += 1
                self.client.text_document_did_change(T.DidChangeTextDocumentParams(
                    T.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                    [T.TextDocumentContentChangeWholeDocument(text=text)]))
        return T.ApplyWorkspaceEditResult(applied=True)


def offset(text: str, pos: T.Position) -> int:  # ASCII documents: characters are UTF-16 units
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: pos.line]) + pos.character


def rng(start: tuple[int, int], end: tuple[int, int]) -> T.Range:
    return T.Range(T.Position(*start), T.Position(*end))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("actions-repo")
    (root / "geometry.py").write_text(MODULE)
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(repo: Path):
    client = lc.make_client()
    editor = Editor(client)
    client.feature(T.WORKSPACE_APPLY_EDIT)(lambda params: editor.apply(params))
    client.settings = {"instructMaxNewTokens": 24, "maxNewTokens": 16}
    client = await lc.start(repo, dict(client.settings), client=client)
    await lc.wait_ready(client)
    yield client, editor
    await client.shutdown_session()
    await client.stop()


async def configure(client, **changes: Any) -> None:
    """Change settings. A client sends its whole section (the server applies it over the
    initializationOptions), so the changes add up here; the round trip after it makes sure the server
    has applied them."""
    client.settings.update(changes)
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"codellama": client.settings}))
    await lc.request(client, "codellama/getStatus", {})


async def message_containing(client, needle: str, timeout: float = 60) -> str:
    for _ in range(int(timeout / 0.1)):
        found = [m.message for m in client.messages if needle in m.message]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no window/showMessage containing {needle!r}: {[m.message for m in client.messages]}")


def shown_text(uri: str) -> str:
    return Path(unquote(urlparse(uri).path)).read_text(encoding="utf-8")


async def code_actions(client, uri: str, r: T.Range, diagnostics=(), only=None) -> list[T.CodeAction]:
    result = await asyncio.wait_for(client.text_document_code_action_async(T.CodeActionParams(
        text_document=T.TextDocumentIdentifier(uri), range=r,
        context=T.CodeActionContext(diagnostics=list(diagnostics), only=only))), 120)
    return list(result or [])


async def run(client, action: T.CodeAction, **extra: Any) -> dict[str, Any]:
    arg = dict(action.command.arguments[0], **extra)
    return await lc.request(client, T.WORKSPACE_EXECUTE_COMMAND,
                            T.ExecuteCommandParams(command=action.command.command, arguments=[arg]), timeout=600)


def by_title(actions: list[T.CodeAction], word: str) -> T.CodeAction:
    return next(a for a in actions if word in a.title)


async def test_the_default_model_offers_the_actions_disabled_and_refuses_to_run_them(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    try:
        actions = await code_actions(client, uri, rng((9, 11), (9, 16)))
        assert len(actions) == 6 and all(a.disabled is not None for a in actions)
        assert "The default model does not follow instructions" in actions[0].disabled.reason
        assert "codellama.instructModel" in actions[0].disabled.reason
        result = await run(client, by_title(actions, "Fix"))  # a client that runs it anyway
        assert result["stopReason"] == "refused" and result["applied"] is False and result["generatedTokens"] == 0
        shown = await message_containing(client, '"Fix this code" was not run')
        assert "Set codellama.instructModel" in shown and 'config.json says "instruct": false' in shown
        assert editor.edits == [] and editor.texts[uri] == MODULE
    finally:
        await configure(client, instructCapable=True)  # the user insists: the tests below run the default model


async def test_every_action_is_offered_for_a_selection_and_only_ask_on_a_blank_line(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    titles = [a.title for a in await code_actions(client, uri, rng((4, 4), (5, 30)))]
    assert titles == ["Code Llama: Explain this code", "Code Llama: Add docstring", "Code Llama: Fix this code",
                      "Code Llama: Write tests", "Code Llama: Simplify this code", "Code Llama: Ask a question…"]
    quick = await code_actions(client, uri, rng((9, 4), (9, 4)), only=[T.CodeActionKind.QuickFix])
    assert [a.title for a in quick] == ["Code Llama: Fix this code"]
    blank = await code_actions(client, uri, rng((7, 0), (7, 0)))
    assert [a.title for a in blank] == ["Code Llama: Ask a question…"]


async def test_add_docstring_applies_a_well_formed_edit_right_under_the_signature(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    action = by_title(await code_actions(client, uri, rng((5, 8), (5, 8))), "docstring")  # cursor in the body
    result = await run(client, action)
    assert result["applied"] is True, result
    assert result["edit"]["range"] == {"start": {"line": 4, "character": 0}, "end": {"line": 4, "character": 0}}
    text = editor.texts[uri]
    tree = ast.parse(text)  # the edited file still parses
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "circle_area")
    assert ast.get_docstring(func) is not None
    assert [ast.dump(s) for s in func.body[1:]] == [ast.dump(s) for s in ast.parse(MODULE).body[1].body]
    head = MODULE.split("    scaled")[0]  # up to the signature
    assert text.startswith(head) and text[len(head):].startswith(('    """', '    r"""'))
    assert text.endswith("    scaled = radius * radius\n    return math.pi * scaled\n\n\ndef half(x):\n"
                         "    return x / 0\n")


async def test_a_fix_that_would_break_the_file_is_not_applied_but_shown_with_the_reason(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    problem = T.Diagnostic(range=rng((9, 11), (9, 16)), message="division by zero", source="pyright")
    actions = await code_actions(client, uri, rng((9, 11), (9, 16)), diagnostics=[problem])
    fix = by_title(actions, "Fix")
    assert fix.command.arguments[0]["diagnostics"] == ["line 10: pyright: division by zero"]
    edits_before = len(editor.edits)
    result = await run(client, fix)
    # The default model answers this with a URL (`<https://github.com/...`), which is no Python: before,
    # it replaced `x / 0` in the user's file.
    proposal = result["edit"]["newText"]
    assert result["applied"] is False, result
    assert result["message"].startswith("not applied: with it, geometry.py would not be valid Python (line 10")
    assert result["edit"]["range"] == {"start": {"line": 9, "character": 11}, "end": {"line": 9, "character": 16}}
    assert len(editor.edits) == edits_before and editor.texts[uri] == MODULE  # the file is untouched
    shown = await message_containing(client, '"Fix this code" not applied')
    assert "would not be valid Python" in shown and "the proposal is shown instead" in shown
    preview = shown_text(result["shownIn"])
    assert "Not applied" in preview and "line 10 of geometry.py" in preview and proposal in preview


async def test_written_tests_that_are_not_python_create_no_test_file(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    result = await run(client, by_title(await code_actions(client, uri, rng((3, 0), (6, 0))), "tests"))
    # The default model writes `<< bit> [1, 2, 3] ...`: before, that became tests/test_geometry.py.
    assert result["applied"] is False, result
    assert result["message"].startswith("not applied: with it, tests/test_geometry.py would not be valid Python")
    assert editor.created == [] and not (repo / "tests" / "test_geometry.py").exists()
    assert result["edit"]["newText"] in shown_text(result["shownIn"])


async def test_ask_returns_the_models_answer_and_shows_it_as_a_document(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    ask = by_title(await code_actions(client, uri, rng((4, 0), (6, 0))), "Ask")
    with pytest.raises(Exception, match="question"):
        await run(client, ask)  # clients must prompt for the question
    result = await run(client, ask, question="Why is math.pi used here?")
    assert result["stopReason"] in ("eos", "eot", "max_tokens") and result["generatedTokens"] > 0
    assert result["shownIn"] == client.shown_documents[-1].uri
    shown = shown_text(result["shownIn"])
    assert shown.startswith("# Code Llama: Ask a question") and result["answer"].strip() in shown


async def test_an_explanation_stops_when_the_model_repeats_itself(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    await configure(client, instructMaxNewTokens=4000)
    try:
        explain = by_title(await code_actions(client, uri, rng((4, 0), (6, 0))), "Explain")
        result = await run(client, explain)
    finally:
        await configure(client, instructMaxNewTokens=24)
    # Before: all 2,048 tokens the context allowed (about 70 s on one thread) of the same phrases.
    assert result["stopReason"] == "repetition" and 0 < result["generatedTokens"] < 400, result
    assert result["message"] == "stopped early: the model started repeating itself"
    shown = shown_text(result["shownIn"])
    assert "_stopped early: the model started repeating itself_" in shown and result["answer"].strip() in shown


async def test_cancelling_the_progress_stops_generation(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    # A fix runs to the token limit with this model (code is not cut short as answers are).
    await configure(client, instructMaxNewTokens=4000)
    fix = by_title(await code_actions(client, uri, rng((9, 11), (9, 16))), "Fix")
    known = set(client.progress_reports)
    pending = asyncio.ensure_future(run(client, fix))
    token = None
    for _ in range(1200):  # the action's progress begins, then reports as text arrives
        token = next((t for t in client.progress_reports if t not in known and len(client.progress_reports[t]) > 1),
                     None)
        if token is not None:
            break
        await asyncio.sleep(0.1)
    assert token is not None, "no progress was reported"
    begin = client.progress_reports[token][0]
    assert begin.cancellable is True and "Fix" in begin.title
    client.protocol.notify(T.WINDOW_WORK_DONE_PROGRESS_CANCEL, T.WorkDoneProgressCancelParams(token=token))
    result = await asyncio.wait_for(pending, 300)
    assert result["stopReason"] == "cancelled" and result["generatedTokens"] < 1000
    assert result["applied"] is False and result["shownIn"] is None


async def test_cancel_request_frees_the_engine_for_completions(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    # Long enough to be still running when the cancel arrives (the default model writes all 4,000
    # tokens of a fix here: half a minute or more on one CPU thread).
    await configure(client, instructMaxNewTokens=4000)
    fix = by_title(await code_actions(client, uri, rng((9, 11), (9, 16))), "Fix")
    future = client.protocol.send_request(T.WORKSPACE_EXECUTE_COMMAND, T.ExecuteCommandParams(
        command=fix.command.command, arguments=fix.command.arguments))
    msg_id = next(k for k, v in client.protocol._request_futures.items() if v is future)
    await asyncio.sleep(2)
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id=msg_id))
    with pytest.raises(Exception, match="(?i)cancel"):
        await asyncio.wait_for(asyncio.wrap_future(future), 300)
    # The engine is free again: a completion is answered in about a second. (When the cancel only
    # answered the request, the action generated on and this waited for it.)
    result = await lc.inline(client, uri, 6, 0, timeout=30)
    assert isinstance(result, T.InlineCompletionList)


async def test_a_missing_instruct_model_falls_back_to_the_completion_model_with_a_warning(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    await configure(client, instructModel=str(repo / "no-such-model"), instructMaxNewTokens=8)
    try:
        result = await run(client, by_title(await code_actions(client, uri, rng((4, 0), (6, 0))), "Explain"))
        assert result["generatedTokens"] > 0 and result["shownIn"] is not None
        assert any("instruct model could not be loaded" in m.message for m in client.messages)
    finally:
        await configure(client, instructModel=None)


async def test_a_missing_instruct_model_and_a_completion_model_refuse_with_the_reason(session, repo):
    client, editor = session
    uri = editor.open(repo / "geometry.py", MODULE)
    await configure(client, instructModel=str(repo / "gone-model"), instructCapable=None)
    try:
        explain = by_title(await code_actions(client, uri, rng((4, 0), (6, 0))), "Explain")
        assert explain.disabled is not None
        result = await run(client, explain)
        assert result["stopReason"] == "refused" and result["shownIn"] is None
        shown = await message_containing(client, '"Explain this code" was not run')
        assert f"codellama.instructModel ({repo / 'gone-model'}) is not a directory" in shown
    finally:
        await configure(client, instructModel=None, instructCapable=True)
