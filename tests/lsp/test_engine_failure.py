"""The engine raising in the middle of a generation, with the real local backend and the default
model (in process: the fault is injected into the engine's decode step). A completion is answered
with no suggestion, the user is told once, and the next request completes exactly as before; a code
action is answered with an error that says why, and the next one runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import engine.generate
from engine import load_local_backend
from lsp_server.actions.service import ActionArgs, ActionError, ActionService
from lsp_server.completion import CompletionService
from lsp_server.documents import DocumentStore
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings

URI = "file:///w/shapes.py"
TEXT = "def area(width, height):\n    return \n"


@pytest.fixture(scope="module")
def backend():
    return load_local_backend(device="cpu")


def completion_service(backend: Any, settings: Settings, statuses: list[dict[str, Any]],
                       problems: list[str]) -> CompletionService:
    """The completion service over the real backend, with one open document."""
    docs = DocumentStore()
    docs.open(URI, TEXT, 1, "python")
    engine_manager = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine_manager.backend = backend
    return CompletionService(docs, engine_manager, lambda: settings, lambda: None, lambda uri: uri.rsplit("/", 1)[-1],
                             on_done=statuses.append, on_problem=problems.append)


async def test_an_engine_error_mid_generation_answers_nothing_and_the_next_request_works(
        backend: Any, monkeypatch: pytest.MonkeyPatch):
    problems: list[str] = []
    statuses: list[dict[str, Any]] = []
    service = completion_service(backend, Settings(max_new_tokens=16), statuses, problems)

    before = await service.complete(URI, 1, 11, invoked=True)
    assert before is not None and before.text.strip()

    real_step = engine.generate.decode_step
    steps = [0]

    def failing_step(*args: Any, **kwargs: Any):
        steps[0] += 1
        if steps[0] == 2:  # two tokens into the answer
            raise RuntimeError("injected: device lost")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine.generate, "decode_step", failing_step)
    service.cache.clear()
    failed = await service.complete(URI, 1, 11, invoked=True)
    assert steps[0] == 2  # it did fail mid-generation
    assert failed is None  # answered, with no suggestion
    assert len(problems) == 1 and "RuntimeError: injected: device lost" in problems[0]
    assert statuses[-1]["lastError"] == problems[0]

    monkeypatch.setattr(engine.generate, "decode_step", real_step)
    service.cache.clear()
    after = await service.complete(URI, 1, 11, invoked=True)
    # The same suggestion as before the failure: the KV cache kept nothing of the broken step.
    assert after is not None and after.text == before.text
    assert statuses[-1]["lastError"] is None
    service.worker.stop()


async def test_an_engine_error_during_a_code_action_is_an_error_answer_and_the_next_action_works(
        backend: Any, monkeypatch: pytest.MonkeyPatch):
    """A code action is asked for explicitly: its failure is an error answer (RequestFailed, with the
    reason), which the editor shows; the next action runs normally."""
    docs = DocumentStore()
    docs.open(URI, TEXT, 1, "python")
    engine_manager = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    settings = Settings(instruct_capable=True, instruct_max_new_tokens=16)
    engine_manager.backend, engine_manager.loaded_settings = backend, settings
    completion = CompletionService(docs, engine_manager, lambda: settings, lambda: None,
                                   lambda uri: uri.rsplit("/", 1)[-1], on_done=lambda _: None, on_problem=print)
    instruct_engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    actions = ActionService(completion, instruct_engine, lambda: settings, lambda: None, lambda: True, lambda: True)
    args = ActionArgs.parse({"action": "explain", "uri": URI, "range": {
        "start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 10}}})

    real_step = engine.generate.decode_step
    steps = [0]

    def failing_step(*args_: Any, **kwargs: Any):
        steps[0] += 1
        if steps[0] == 2:
            raise RuntimeError("injected: device lost")
        return real_step(*args_, **kwargs)

    monkeypatch.setattr(engine.generate, "decode_step", failing_step)
    with pytest.raises(ActionError, match="RuntimeError: injected: device lost"):
        await actions.run(args, backend, threading.Event())
    monkeypatch.setattr(engine.generate, "decode_step", real_step)
    outcome = await actions.run(args, backend, threading.Event())
    assert outcome.answer.strip() and outcome.generated_tokens > 0
    completion.worker.stop()


async def test_running_out_of_memory_mid_generation_says_so_and_what_to_lower(
        backend: Any, monkeypatch: pytest.MonkeyPatch):
    problems: list[str] = []
    service = completion_service(backend, Settings(max_new_tokens=16, prefetch_after_accept=False), [], problems)

    def out_of_memory(*args: Any, **kwargs: Any):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes")

    monkeypatch.setattr(engine.generate, "decode_step", out_of_memory)
    assert await service.complete(URI, 1, 11, invoked=True) is None
    assert len(problems) == 1
    assert problems[0].startswith("out of memory during a completion") and "codellama.maxContextTokens" in problems[0]
