"""The action service with a scripted backend: actions offered disabled and refused on a model that does
not follow instructions. (test_e2e_actions.py repeats these through the real server and the default
model.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lsprotocol import types

from lsp_server.action_service import ActionArgs, ActionService
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
    return ActionService(completion, lambda: settings, lambda: root, lambda: True, lambda: disabled_support)


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
