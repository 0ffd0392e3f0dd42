"""The action service with a scripted backend: actions offered disabled and refused on a model that does
not follow instructions, edits that would break Python held back, answers that run away cut short.
(test_e2e_actions.py repeats these through the real server and the default model.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lsprotocol import types

from lsp_server.actions.service import ActionArgs, ActionService
from lsp_server.completion import CompletionService
from lsp_server.documents import DocumentStore
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings

from .fake_backend import FakeBackend

URI = "file:///w/geometry.py"
MODULE = "import math\n\n\ndef half(x):\n    return x / 0\n"


def make(backend: FakeBackend, settings: Settings, text: str = MODULE, uri: str = URI, language: str = "python",
         disabled_support: bool = True, root: Path | None = None, serving: Settings | None = None):
    docs = DocumentStore()
    docs.open(uri, text, 1, language)
    engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine.backend, engine.loaded_settings = backend, serving or settings
    completion = CompletionService(docs, engine, lambda: settings, lambda: None, lambda u: u.rsplit("/", 1)[-1],
                                   on_done=lambda _: None, on_problem=print)
    instruct_engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    return ActionService(completion, instruct_engine, lambda: settings, lambda: root, lambda: True,
                         lambda: disabled_support)


def offered(service: ActionService, line: int = 4, start: int = 11, end: int = 16) -> list[types.CodeAction]:
    rng = types.Range(types.Position(line, start), types.Position(line, end))
    return service.offered(types.CodeActionParams(types.TextDocumentIdentifier(URI), rng,
                                                  types.CodeActionContext(diagnostics=[])))


async def run(service: ActionService, backend: FakeBackend, action: str, start=(4, 11), end=(4, 16), uri=URI, **extra):
    args = ActionArgs.parse({"action": action, "uri": uri, "range": {
        "start": {"line": start[0], "character": start[1]}, "end": {"line": end[0], "character": end[1]}}, **extra})
    return await service.run(args, backend, threading.Event())


# ---- offering and refusing --------------------------------------------------------------------

def test_a_completion_model_gets_disabled_actions_with_the_reason_or_none():
    actions = offered(make(FakeBackend(), Settings()))
    assert len(actions) == 6 and all(a.disabled is not None for a in actions)
    assert "set codellama.instructModel" in actions[0].disabled.reason
    assert offered(make(FakeBackend(), Settings(), disabled_support=False)) == []
    enabled = offered(make(FakeBackend(), Settings(instruct_capable=True)))
    assert len(enabled) == 6 and all(a.disabled is None for a in enabled)


async def test_running_an_action_on_a_completion_model_is_refused_without_generating():
    backend = FakeBackend(answer="```python\nx / 2\n```")
    service = make(backend, Settings())
    with pytest.raises(Exception, match="instructModel") as refused:
        service.check_capable('"Fix this code"')
    assert type(refused.value).__name__ == "Refused" and '"Fix this code" was not run' in str(refused.value)
    assert backend.instruct_requests == []


# ---- edits that would break Python ------------------------------------------------------------

CAPABLE = Settings(instruct_capable=True)


async def test_a_fix_that_would_not_parse_is_held_back_with_the_proposal_and_the_reason():
    junk = "<https://github.com/java-org/blob/master/src/"
    backend = FakeBackend(answer=junk)
    outcome = await run(make(backend, CAPABLE), backend, "fix")
    assert outcome.edit is None and outcome.rejected
    assert outcome.message == "not applied: with it, geometry.py would not be valid Python (line 5: invalid syntax)"
    assert junk in outcome.preview and "line 5 of geometry.py" in outcome.preview
    summary = outcome.summary()
    assert summary["edit"]["newText"] == junk  # the proposal, for the client to show


async def test_a_fix_that_parses_is_applied():
    backend = FakeBackend(answer="Here:\n```python\nx / 2\n```")
    outcome = await run(make(backend, CAPABLE), backend, "fix")
    assert outcome.edit is not None and not outcome.rejected and outcome.new_text == "x / 2"


async def test_a_fix_in_a_file_broken_elsewhere_is_judged_by_its_own_statement():
    text = "def other(:\n    pass\n\n\n" + MODULE  # someone is typing in `other`
    line = text.split("\n").index("    return x / 0")
    good = FakeBackend(answer="```python\nx / 2\n```")
    outcome = await run(make(good, CAPABLE, text=text), good, "fix", (line, 11), (line, 16))
    assert outcome.edit is not None
    bad = FakeBackend(answer="```python\nx / (2\n```")
    outcome = await run(make(bad, CAPABLE, text=text), bad, "fix", (line, 11), (line, 16))
    assert outcome.edit is None and f"line {line + 1}" in outcome.message


async def test_written_tests_that_do_not_parse_are_not_put_in_a_file(tmp_path):
    backend = FakeBackend(answer="```python\ndef test_half(:\n    assert half(2) == 1\n```")
    outcome = await run(make(backend, CAPABLE, root=tmp_path), backend, "tests", (3, 0), (4, 0))
    assert outcome.edit is None and "test_geometry.py would not be valid Python" in outcome.message
    assert "the new file test_geometry.py" in outcome.preview


async def test_other_languages_keep_the_edit():
    js = "function half(x) {\n  return x / 0;\n}\n"
    uri = "file:///w/half.js"
    backend = FakeBackend(answer="```js\nx / 2 +\n```")
    outcome = await run(make(backend, CAPABLE, text=js, uri=uri, language="javascript"), backend, "fix",
                        (1, 9), (1, 14), uri=uri)
    assert outcome.edit is not None and outcome.new_text == "x / 2 +"


# ---- answers that run away --------------------------------------------------------------------

async def test_an_answer_that_repeats_itself_stops_and_keeps_one_copy():
    loop = "The function divides x by zero. "
    backend = FakeBackend(answer="It halves x.\n" + loop * 100)
    outcome = await run(make(backend, CAPABLE), backend, "explain")
    assert outcome.stop_reason == "repetition" and outcome.answer == "It halves x.\n" + loop.rstrip()
    assert outcome.generated_tokens < 200  # not the 3,000 characters scripted
    assert outcome.message == "stopped early: the model started repeating itself"


async def test_a_long_answer_ends_at_a_paragraph_break_and_the_token_limit_still_holds():
    paragraphs = [f"Paragraph {i}: " + " ".join(f"w{i}x{j}" for j in range(100)) for i in range(12)]
    backend = FakeBackend(answer="\n\n".join(paragraphs))
    outcome = await run(make(backend, Settings(instruct_capable=True, instruct_max_new_tokens=4096)), backend,
                        "explain")
    assert outcome.stop_reason == "length" and outcome.answer.endswith(paragraphs[3])
    assert 2000 < len(outcome.answer) < 2800 and "after about 2,000 characters" in outcome.message
    short = FakeBackend(answer="\n\n".join(paragraphs))
    outcome = await run(make(short, Settings(instruct_capable=True, instruct_max_new_tokens=300)), short, "explain")
    assert outcome.stop_reason == "max_tokens" and len(outcome.answer) == 300


async def test_code_in_a_long_answer_is_not_cut_and_an_answer_cut_in_code_is_closed():
    code = "\n\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(150))
    backend = FakeBackend(answer="It adds.\n\n```python\n" + code + "\n```\n\nThat is all.\n\nMore.")
    outcome = await run(make(backend, Settings(instruct_capable=True, instruct_max_new_tokens=4096)), backend,
                        "explain")
    assert outcome.stop_reason == "length" and outcome.answer.endswith("\n```")
    assert outcome.answer.count("```") == 2 and len(outcome.answer) < 4200
