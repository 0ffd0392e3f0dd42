"""Idle-time warming, with the real local backend and the default model (in process): after typing in one
file and pausing, the engine has prefilled the other file's prompt at its last cursor, so switching back
to it and typing reuses nearly all of the KV cache; the suggestions are the same as without warming."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import lsp_server.completion as completion
from engine import load_local_backend
from lsp_server.completion import CompletionService
from lsp_server.documents import DocumentStore
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings

SHAPES = "file:///w/shapes.py"
UNITS = "file:///w/units.py"
SHAPES_TEXT = "from units import scale\n\n\ndef area(width, height):\n    return \n\n\ndef perimeter(width, height):\n    return 2 * (width + height)\n"
UNITS_TEXT = "def scale(value, factor):\n    return value * factor\n\n\ndef offset(value, delta):\n    \n"


@pytest.fixture(scope="module")
def backend():
    return load_local_backend(device="cpu")


async def switch_back(backend: Any) -> tuple[str, int, int]:
    """Type in shapes.py, then in units.py (which is in shapes.py's prompt), pause, come back to
    shapes.py and type: (the suggestion, prompt tokens, cached tokens) of that last request."""
    docs = DocumentStore()
    docs.open(SHAPES, SHAPES_TEXT, 1, "python")
    docs.open(UNITS, UNITS_TEXT, 1, "python")
    engine_manager = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine_manager.backend = backend
    statuses: list[dict[str, Any]] = []
    service = CompletionService(docs, engine_manager, lambda: Settings(max_new_tokens=8), lambda: None,
                                lambda uri: uri.rsplit("/", 1)[-1], on_done=statuses.append,
                                on_problem=lambda m: None)
    backend.pool.clear()
    await service.complete(SHAPES, 4, 11, invoked=True)
    docs.change(UNITS, 2, [("return value + delta", (5, 4), (5, 4))])
    await service.complete(UNITS, 5, 24, invoked=True)
    await asyncio.sleep(completion.IDLE_WARM_S + 0.2)  # the user pauses, then clicks the other tab
    await asyncio.wrap_future(service.worker.submit(lambda: None))  # (the warming has run)
    docs.change(SHAPES, 2, [("w", (4, 11), (4, 11))])
    result = await service.complete(SHAPES, 4, 12, invoked=True)
    service.worker.stop()
    assert "units.py" in service.last_prompt.get(SHAPES)["prefix"]  # the other file is in the prompt
    return result.text if result else "", statuses[-1]["lastPromptTokens"], statuses[-1]["lastCachedTokens"]


async def test_a_pause_warms_the_other_file_so_a_switch_back_reuses_its_cache(backend, monkeypatch):
    warmed, tokens, cached = await switch_back(backend)
    assert cached >= tokens - 3  # only the typed character (and the token held back for healing) is new
    monkeypatch.setattr(completion, "IDLE_WARM_S", 0.0)
    cold, cold_tokens, cold_cached = await switch_back(backend)
    assert cold_tokens == tokens and cold_cached < cached  # without warming, the changed context is recomputed
    assert warmed == cold
