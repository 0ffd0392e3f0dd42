"""Every cache the server keeps across requests is bounded: a long day of editing (many documents,
versions, files) holds at most what the limits allow, and closing a document drops what was kept
for it. (benchmarks/soak.py measures the whole server's memory over a long session.)"""

import asyncio

from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification

from lsp_server.context.budget import TokenCounter
from lsp_server.context.gather import Gatherer, OpenDoc, Request
from lsp_server.lru import LRU
from lsp_server.protocol import RobustProtocol, robust_converter

from .fake_backend import FakeBackend
from .test_completion_service import make_service


def test_lru_bounds_entries_and_weight_and_keeps_the_recent():
    cache: LRU[str, str] = LRU(max_entries=3, max_weight=10, weigh=lambda k, v: len(v))
    cache["a"], cache["b"], cache["c"] = "xx", "yy", "zz"
    assert cache.get("a") == "xx"  # now the most recent
    cache["d"] = "ww"
    assert "b" not in cache and {"a", "c", "d"} == set(cache.keys())
    cache["e"] = "12345678"  # 2 + 2 + 2 + 8 > 10: the oldest go until it fits
    assert set(cache.keys()) == {"d", "e"} and cache.weight == 10
    cache["huge"] = "x" * 11  # heavier than the whole budget: not kept, nothing else lost
    assert "huge" not in cache and set(cache.keys()) == {"d", "e"}
    cache.drop_where(lambda k: k == "d")
    assert set(cache.keys()) == {"e"} and cache.weight == 8


def test_token_counter_holds_a_bounded_number_of_characters():
    counter = TokenCounter(lambda text: len(text) // 4)
    # A long session counts a new rendered snippet (a few KB) at nearly every keystroke.
    for i in range(3000):
        assert counter(f"# snippet {i}\n" + "x = 1\n" * 800) == (len(f"# snippet {i}\n") + 4800) // 4
    assert counter.cache.weight <= 4_000_000
    assert len(counter.cache) < 3000
    again = counter(f"# snippet {2999}\n" + "x = 1\n" * 800)  # the most recent is still there
    assert again == (len("# snippet 2999\n") + 4800) // 4


def _request(path: str, text: str, version: int, others: list[OpenDoc]) -> Request:
    return Request(path, text, "python", len(text) // 2, version, others)


def test_gatherer_windows_bounded_across_many_documents_and_versions():
    gatherer = Gatherer(max_window_chars=200_000, max_entries=50)
    body = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(400))  # ~12 KB
    for n in range(300):  # 300 documents, each edited (a new version) 3 times
        for version in range(3):
            other = OpenDoc(f"other{n}.py", body + f"# {version}\n", "python", version)
            gatherer.gather(_request(f"doc{n}.py", f"import other{n}\n" + body, version, [other]), None, {"x"})
    assert gatherer._windows.weight <= 200_000 and len(gatherer._windows) <= 50
    assert len(gatherer._imports) <= 50


def test_gatherer_forgets_a_closed_document():
    gatherer = Gatherer()
    text = "import os\n" + "x = 1\n" * 100
    gatherer.gather(_request("a.py", text, 1, []), None, {"x"})
    gatherer.gather(_request("b.py", text, 1, []), None, {"x"})
    gatherer.forget("a.py")
    assert {key[0] for key in gatherer._windows.keys()} == {"b.py"}


async def test_service_keeps_bounded_state_per_document_and_drops_it_on_close():
    backend = FakeBackend("w * h")
    service, docs, _ = make_service(backend)
    text = "def area(w, h):\n    return \n"
    uris = [f"file:///w/doc{i}.py" for i in range(100)]
    for uri in uris:
        docs.open(uri, text, 1, "python")
        result = await service.complete(uri, 1, 11, invoked=True)
        assert result is not None and result.text == "w * h"
    assert len(service.last_prompt) <= 64 and len(service._layouts) <= 64
    assert uris[-1] in service.last_prompt and uris[0] not in service.last_prompt  # the oldest went

    last = uris[-1]
    docs.close(last)
    service.forget(last)
    assert last not in service.last_prompt and last not in service._layouts
    assert all(key[0] != last for key in service.cache._entries)
    assert all(key[0] != "doc99.py" for key in service._gatherer._windows.keys())


async def test_notifications_with_async_handlers_leave_nothing_behind():
    # pygls filed the future of every notification with an async handler (didChangeConfiguration is
    # one) for good: one more object per settings change, all day.
    server = LanguageServer("t", "1", protocol_cls=RobustProtocol, converter_factory=robust_converter)
    seen = []

    @server.feature("custom/notify")
    async def on_notify(ls, params):
        seen.append(params)

    for i in range(50):
        server.protocol.handle_message(JsonRPCNotification(method="custom/notify", params={"i": i}, jsonrpc="2.0"))
    for _ in range(100):
        if len(seen) == 50:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    assert len(seen) == 50 and server.protocol._request_futures == {}
