"""End to end: `python -m lsp_server` configured with the URL of an OpenAI-compatible server (a small
scripted one on 127.0.0.1 standing in for vLLM / llama.cpp's server) answers inline completions through
it, says clearly when the server goes away, and recovers when it comes back. No local model is loaded."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ANSWER = "width * height"


class OpenAIish(BaseHTTPRequestHandler):
    prompts: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [{"id": "served-model", "max_model_len": 4096}]})
        else:
            self._json({"error": {"message": "not found"}}, 404)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self.path.rstrip("/").endswith("/completions"):
            self._json({"error": {"message": "not found"}}, 404)
            return
        OpenAIish.prompts.append(body.get("prompt", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece, finish in ((ANSWER[:5], None), (ANSWER[5:], None), ("", "stop")):
            event = {"choices": [{"index": 0, "text": piece, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Served:
    """The stand-in server, which the tests stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), OpenAIish)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served():
    s = Served()
    s.start()
    yield s
    s.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(served: Served, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("remote-repo")
    (root / "shapes.py").write_text("def rectangle_area(width, height):\n    return width * height\n")
    client = await lc.start(root, {"backend": f"http://127.0.0.1:{served.port}/v1", "maxNewTokens": 16})
    status = await lc.wait_ready(client, timeout=300)
    assert status["backend"].startswith("http://127.0.0.1") and status["device"] in (None, "remote")
    client.root = root  # type: ignore[attr-defined]
    yield client
    await client.shutdown_session()
    await client.stop()


async def complete(client, name: str = "area") -> str:
    # A new function name each time: the same text would be answered from the suggestion cache.
    uri = lc.open_doc(client, Path(client.root) / "app.py", "from shapes import rectangle_area\n\n"
                      f"def {name}(width, height):\n    return \n")
    result = await lc.inline(client, uri, 3, 11, timeout=120)
    return result.items[0].insert_text if result.items else ""


async def test_completions_come_from_the_remote_server_with_repository_context(client):
    assert await complete(client) == ANSWER
    prompt = OpenAIish.prompts[-1]
    assert "<PRE>" in prompt and "<SUF>" in prompt and "<MID>" in prompt  # our FIM layout, as text
    assert "Path: shapes.py" in prompt and "def area(width, height):\n    return " in prompt


async def test_a_dead_server_gives_a_clear_status_and_the_server_recovers(client, served):
    served.stop()
    try:
        assert await complete(client, "area_while_down") == ""
        status = await lc.wait_for(client, lambda s: s["state"] == "error", timeout=120)
        assert "remote server" in status["message"] and str(served.port) in status["message"]
        assert any(str(served.port) in m.message for m in client.messages)  # told once, as a message
    finally:
        served.start()
    assert await complete(client, "area_after_restart") == ANSWER
    status = await lc.wait_for(client, lambda s: s["state"] == "ready", timeout=120)
    assert status["message"] is None
