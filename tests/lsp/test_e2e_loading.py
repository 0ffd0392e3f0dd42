"""End to end: a suggestion asked for explicitly (Alt+\\ in VS Code) while the model still loads is
answered once the model is ready, instead of with nothing: the editor would not ask again at the same
position. The real server and the default model, whose load is held until a gate file exists
(tests/gated_server.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .raw_client import RawServer

pytestmark = pytest.mark.slow

TEXT = 'def average(numbers):\n    """Return the arithmetic mean of a list of numbers."""\n    \n'


def inline(server: RawServer, msg_id: str, uri: str, kind: int) -> None:
    server.send({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion", "params": {
        "textDocument": {"uri": uri}, "position": {"line": 2, "character": 4},
        "context": {"triggerKind": kind}}})


def test_an_explicit_request_made_while_loading_is_answered_once_the_model_is_ready(tmp_path: Path):
    gate = tmp_path / "gate"
    server = RawServer(str(gate), "--log-level", "info", module="tests.gated_server")
    try:
        server.initialize(tmp_path, {})
        uri = (tmp_path / "stats.py").as_uri()
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": TEXT}})
        inline(server, "automatic", uri, 2)  # typing: answered at once, with nothing
        assert server.response("automatic", timeout=120)["result"]["items"] == []
        inline(server, "explicit", uri, 1)  # Alt+\: held until the model is ready
        time.sleep(1.0)
        server.pump(0.2)
        assert server.request("status", "codellama/getStatus", {})["result"]["state"] == "loading"
        assert '"explicit"' not in server.responses, "answered before the model was there"
        gate.touch()
        items = server.response("explicit", timeout=600)["result"]["items"]
        assert len(items) == 1 and items[0]["insertText"].strip()
    finally:
        server.close()
