"""`server_prompt` (lsp_server/context/prompt.py): the prompt the server sends, built without a server
from files in memory, for tools that must match it exactly (training data made "as served")."""

from __future__ import annotations

from lsp_server.completion import CompletionService
from lsp_server.context.prompt import in_memory_index, server_prompt
from lsp_server.documents import DocumentStore
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings

from .fake_backend import FakeBackend

FILES = {
    "geo/__init__.py": "from .shapes import Circle\n",
    "geo/shapes.py": ('class Circle:\n    """A circle."""\n\n    def __init__(self, radius):\n        self.radius = radius\n\n'
                      "    def area(self):\n        return 3.14159 * self.radius ** 2\n"),
    "geo/draw.py": "OLD TEXT ON DISK: never in the prompt\n",
}
TEXT = "from geo import Circle\n\n\ndef paint(r):\n    shape = Circle(r)\n    return shape.\n\n\nprint(paint(2))\n"
CURSOR = TEXT.index("shape.\n") + len("shape.")


def test_the_prompt_holds_what_the_cursor_refers_to_and_the_buffer_not_the_disk_copy():
    built = server_prompt(FILES, "geo/draw.py", TEXT, CURSOR, budget=2048, count=lambda s: len(s) // 3 + 1)
    assert built.prefix.endswith("# Path: geo/draw.py\n" + TEXT[:CURSOR])
    assert built.suffix == TEXT[CURSOR:]
    assert "# Path: geo/shapes.py\n# class Circle:\n" in built.prefix and "#     def area(self):\n" in built.prefix
    assert "OLD TEXT ON DISK" not in built.prefix + built.suffix


async def test_it_is_the_prompt_the_completion_service_sends():
    docs = DocumentStore()
    uri = "file:///w/geo/draw.py"
    docs.open(uri, TEXT, 1, "python")
    engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    backend = FakeBackend("area()")
    engine.backend = backend
    index = in_memory_index(FILES)
    service = CompletionService(docs, engine, Settings, lambda: index, lambda u: u.removeprefix("file:///w/"),
                                on_done=lambda update: None, on_problem=print)
    line = TEXT[:CURSOR].count("\n")
    await service.complete(uri, line, CURSOR - TEXT.rfind("\n", 0, CURSOR) - 1, invoked=True)
    budget = Settings().context_budget(backend.context_length, on_gpu=False)
    built = server_prompt(FILES, "geo/draw.py", TEXT, CURSOR, budget=budget, count=backend.count_tokens, index=index)
    sent = backend.requests[0]
    assert (sent.prefix, sent.suffix) == (built.prefix, built.suffix)
    assert "class Circle:" in sent.prefix
