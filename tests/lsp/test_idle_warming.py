"""Idle-time warming, with the real local backend and the default model (in process): after typing in one
file and pausing, the engine has prefilled the other file's prompt at its last cursor, and the prompt at
the spot left in this file, so switching or jumping back and typing reuses nearly all of the KV cache;
the suggestions are the same as without warming."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import lsp_server.completion as completion
from engine import load_local_backend
from lsp_server.completion import CompletionService, Spot, find_spot
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


def service_for(docs: DocumentStore, backend: Any, statuses: list[dict[str, Any]]) -> CompletionService:
    engine_manager = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine_manager.backend = backend
    backend.pool.clear()
    # No accept-then-next prefetch: it warms caches too, and this measures the idle warming alone.
    settings = Settings(max_new_tokens=8, prefetch_after_accept=False)
    return CompletionService(docs, engine_manager, lambda: settings, lambda: None,
                             lambda uri: uri.rsplit("/", 1)[-1], on_done=statuses.append, on_problem=lambda m: None)


async def pause(service: CompletionService) -> None:
    await asyncio.sleep(completion.IDLE_WARM_S + 0.2)  # the user pauses
    await asyncio.wrap_future(service.worker.submit(lambda: None))  # (the warming has run)


def test_a_spot_is_found_again_after_lines_were_added_above_it():
    spot = Spot(3, 4, "    x = 1")
    assert find_spot(["a", "b", "c", "    x = 1"], spot) == 3
    assert find_spot(["new", "a", "b", "c", "    x = 1", "    x = 1"], spot) == 4  # the nearest
    assert find_spot(["a", "b"], spot) is None


async def switch_back(backend: Any) -> tuple[str, int, int]:
    """Type in shapes.py, then in units.py (which is in shapes.py's prompt), pause, come back to
    shapes.py and type: (the suggestion, prompt tokens, cached tokens) of that last request."""
    docs = DocumentStore()
    docs.open(SHAPES, SHAPES_TEXT, 1, "python")
    docs.open(UNITS, UNITS_TEXT, 1, "python")
    statuses: list[dict[str, Any]] = []
    service = service_for(docs, backend, statuses)
    await service.complete(SHAPES, 4, 11, invoked=True)
    docs.change(UNITS, 2, [("return value + delta", (5, 4), (5, 4))])
    await service.complete(UNITS, 5, 24, invoked=True)
    await pause(service)  # then the user clicks the other tab
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


async def jump_back(backend: Any) -> tuple[str, int, int]:
    """Type in area(), jump down to perimeter() and type a line there, pause, come back and type."""
    docs = DocumentStore()
    docs.open(SHAPES, SHAPES_TEXT, 1, "python")
    statuses: list[dict[str, Any]] = []
    service = service_for(docs, backend, statuses)
    await service.complete(SHAPES, 4, 11, invoked=True)
    docs.change(SHAPES, 2, [("    ratio = width / height\n", (8, 0), (8, 0))])  # in the suffix of area()
    await service.complete(SHAPES, 8, 26, invoked=True)
    await pause(service)
    docs.change(SHAPES, 3, [("w", (4, 11), (4, 11))])
    result = await service.complete(SHAPES, 4, 12, invoked=True)
    service.worker.stop()
    return result.text if result else "", statuses[-1]["lastPromptTokens"], statuses[-1]["lastCachedTokens"]


async def test_a_pause_warms_the_spot_left_so_jumping_back_reuses_its_cache(backend, monkeypatch):
    warmed, tokens, cached = await jump_back(backend)
    assert cached >= tokens - 3
    monkeypatch.setattr(completion, "IDLE_WARM_S", 0.0)
    cold, cold_tokens, cold_cached = await jump_back(backend)
    assert cold_tokens == tokens and cold_cached < tokens - 10  # the suffix changed: recomputed from there
    assert warmed == cold
