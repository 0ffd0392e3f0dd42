"""The completion service with a scripted backend: caching, typing-through, superseding and
cancellation, early stop. (test_e2e_*.py repeats these through the real server and engine.)"""

import asyncio

import pytest

from lsp_server.completion import CompletionService, SuggestionCache
from lsp_server.documents import DocumentStore
from lsp_server.engine_manager import EngineManager
from lsp_server.postprocess import Suggestion
from lsp_server.settings import Settings

from .fake_backend import FakeBackend

URI = "file:///w/main.py"


def make_service(backend, text="def area(w, h):\n    return \n", settings=None):
    """The service with `settings` (default: no accept-then-next prefetch, so model calls are countable)."""
    settings = settings or Settings(prefetch_after_accept=False)
    docs = DocumentStore()
    docs.open(URI, text, 1, "python")
    engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine.backend = backend
    done = []
    service = CompletionService(docs, engine, lambda: settings, lambda: None,
                                lambda uri: uri.rsplit("/", 1)[-1], on_done=done.append, on_problem=print)
    return service, docs, done


def type_text(docs, line, character, typed):
    doc = docs.get(URI)
    for ch in typed:
        docs.change(URI, doc.version + 1, [(ch, (line, character), (line, character))])
        character += 1
    return character


async def test_suggestion_prompt_and_status():
    backend = FakeBackend("w * h\nprint('junk')")
    service, docs, done = make_service(backend)
    result = await service.complete(URI, 1, 11, invoked=False)
    assert result is not None and result.text == "w * h"
    assert result.start == (1, 11) and result.end == (1, 11) and not result.from_cache
    request = backend.requests[0]
    assert request.prefix == "# Path: main.py\ndef area(w, h):\n    return " and request.suffix == "\n"
    assert request.fim_format == "spm" and request.stop == ["\n"]
    assert service.last_prompt[URI]["completion"] == "w * h"
    assert done[-1]["lastFromCache"] is False and done[-1]["lastPromptTokens"] > 0


async def test_typing_through_needs_no_model_call():
    backend = FakeBackend("width_in_cm * height_in_cm")
    service, docs, _ = make_service(backend)
    first = await service.complete(URI, 1, 11, invoked=False)
    assert first.text == "width_in_cm * height_in_cm"
    col = type_text(docs, 1, 11, "width_")
    second = await service.complete(URI, 1, col, invoked=False)
    assert second.text == "in_cm * height_in_cm" and second.from_cache and second.start == (1, col)
    assert len(backend.requests) == 1
    # Typing something else is a miss: the model is asked again.
    type_text(docs, 1, col, "X")
    await service.complete(URI, 1, col + 1, invoked=False)
    assert len(backend.requests) == 2


async def test_pointless_position_is_skipped_unless_invoked():
    backend = FakeBackend("x")
    service, docs, _ = make_service(backend, "y = f(a, b) + c\n")
    assert await service.complete(URI, 0, 6, invoked=False) is None
    assert backend.requests == []
    assert await service.complete(URI, 0, 6, invoked=True) is not None


async def test_unknown_document_and_out_of_range_position_give_nothing():
    service, _, _ = make_service(FakeBackend("x"))
    assert await service.complete("file:///nope.py", 0, 0, invoked=True) is None
    assert await service.complete(URI, 99, 0, invoked=True) is None


async def test_a_newer_request_supersedes_the_running_one():
    backend = FakeBackend("a" * 400, step_s=0.005)
    service, docs, _ = make_service(backend)
    old = asyncio.ensure_future(service.complete(URI, 1, 11, invoked=True))
    await asyncio.get_running_loop().run_in_executor(None, backend.started.wait, 10)
    col = type_text(docs, 1, 11, "w")
    backend.script = "idth * height"
    new = await service.complete(URI, 1, col, invoked=True)
    assert await old is None  # superseded: answered empty
    assert backend.results[0].stop_reason == "cancelled" and len(backend.results[0].text) < 400
    assert new is not None and new.text == "idth * height"


async def test_cancelling_the_request_frees_the_engine():
    backend = FakeBackend("b" * 2000, step_s=0.005)
    service, _, _ = make_service(backend)
    task = asyncio.ensure_future(service.complete(URI, 1, 11, invoked=True))
    await asyncio.get_running_loop().run_in_executor(None, backend.started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    backend.script = "w * h"
    backend.step_s = 0
    result = await service.complete(URI, 1, 11, invoked=True)
    assert result.text == "w * h"
    assert backend.results[0].stop_reason == "cancelled" and len(backend.results[0].text) < 2000


async def test_multi_line_generation_stops_once_the_block_is_over():
    script = "\n    return w * h\n\n\ndef volume(w, h, d):\n" + "    pass\n" * 200
    backend = FakeBackend(script)
    service, _, _ = make_service(backend, "def area(w, h):\n\ndef other():\n    pass\n")
    result = await service.complete(URI, 0, 15, invoked=True)
    assert result.text == "\n    return w * h"
    assert len(backend.results[0].text) < 60  # stopped early, not after 200 lines


async def test_output_cut_by_the_token_limit_is_trimmed_but_a_natural_stop_is_not():
    # The same unclosed output: cut by the token limit it is trimmed back to balanced brackets and
    # quotes; ended by the model itself it is what the model meant.
    script = 'w * h + area(w, "x'
    service, _, _ = make_service(FakeBackend(script + '")', max_chars=len(script)))
    result = await service.complete(URI, 1, 11, invoked=True)
    assert service.last_prompt[URI]["stopReason"] == "max_tokens"
    assert service.last_prompt[URI]["rawCompletion"] == script and result.text == "w * h"
    service, _, _ = make_service(FakeBackend(script))
    assert (await service.complete(URI, 1, 11, invoked=True)).text == script


async def test_a_looping_line_stops_the_generation_early():
    backend = FakeBackend("n < 0 or " * 200)
    service, _, _ = make_service(backend)
    result = await service.complete(URI, 1, 11, invoked=True)
    assert result.text == "n < 0"
    assert len(backend.results[0].text) < 60  # stopped early, not after 200 copies


async def test_no_backend_yet_means_no_suggestion():
    service, _, _ = make_service(None)
    assert await service.complete(URI, 1, 11, invoked=True) is None


def test_cache_lru_and_suffix_check():
    cache = SuggestionCache(max_entries=2)
    text = "x = \ny"
    cache.put("u", text, 4, Suggestion("foo()"))
    assert cache.get("u", "x = fo\ny", 6).text == "o()"
    assert cache.get("u", "x = fo\nz", 6) is None  # text after the cursor changed
    assert cache.get("other", "x = fo\ny", 6) is None
    assert cache.get("u", "x = fo\ny", 6, context_version=1) is None  # a workspace file changed since
    cache.put("u", "a\n", 1, Suggestion("1"))
    cache.put("u", "b\n", 1, Suggestion("2"))
    assert cache.get("u", text, 4) is None  # evicted


def after_return(request):
    """What a model would say: the expression after `return`, then a comment after it."""
    return "  # area" if request.prefix.endswith("w * h") else "w * h"


async def test_accepting_a_suggestion_finds_the_next_one_already_computed():
    backend = FakeBackend(after_return)
    service, docs, _ = make_service(backend, settings=Settings(prefetch_after_accept=True))
    first = await service.complete(URI, 1, 11, invoked=False)
    assert first.text == "w * h"
    service.worker.submit(lambda: None).result(timeout=10)  # the prefetch has run on the worker
    assert len(backend.requests) == 2
    # The prefetch asked about the document as it is once the suggestion is accepted.
    assert backend.requests[1].prefix.endswith("    return w * h") and backend.requests[1].suffix == "\n"
    docs.change(URI, 2, [("w * h", (1, 11), (1, 11))])  # the editor inserts the accepted text
    second = await service.complete(URI, 1, 16, invoked=False)
    assert second.from_cache and second.text == "  # area"
    assert len(backend.requests) == 2  # no model call for it


async def test_a_new_request_cancels_an_unneeded_prefetch():
    backend = FakeBackend(after_return, step_s=0.05)
    service, docs, _ = make_service(backend, settings=Settings(prefetch_after_accept=True))
    await service.complete(URI, 1, 11, invoked=False)
    type_text(docs, 1, 11, "x")  # the user typed on instead of accepting
    prefetch = service._prefetch
    assert prefetch is not None and not prefetch.job.cancelled.is_set()
    result = await service.complete(URI, 1, 12, invoked=False)
    assert prefetch.job.cancelled.is_set() and result is not None
    # It never reached the engine, or stopped within a step (the worker runs one call at a time, so
    # requests and results pair up in order).
    for request, outcome in zip(backend.requests, backend.results, strict=False):
        if request.prefix.endswith("return w * h"):
            assert outcome.stop_reason == "cancelled"
