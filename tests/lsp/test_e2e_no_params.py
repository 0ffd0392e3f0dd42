"""End to end: requests and notifications sent without `params`, as JSON-RPC allows (VS Code's client
sends `codellama/getStatus` so). Each is answered as with empty params, and the server log has no
deserialisation error."""

from __future__ import annotations

import pytest

from .raw_client import RawServer

pytestmark = pytest.mark.slow


def test_messages_without_params_are_answered(tmp_path):
    server = RawServer("--log-level", "info")
    try:
        # The settings object is left out too (it is optional in `initialize`).
        assert "capabilities" in server.initialize(tmp_path, None)["result"]
        answers = {}
        for n, method in enumerate(["codellama/getStatus", "codellama/lastPrompt", "shutdown"]):
            server.send({"jsonrpc": "2.0", "id": n, "method": method})
            answers[method] = server.response(n, timeout=120)
        assert all("error" not in a for a in answers.values()), answers
        assert answers["codellama/getStatus"]["result"]["state"] in ("starting", "loading", "ready")
        assert answers["codellama/lastPrompt"]["result"] is None  # nothing completed yet
        server.send({"jsonrpc": "2.0", "method": "exit"})
        assert server.proc.wait(timeout=60) == 0, "exit after shutdown ends with code 0"
        log = server.stderr_text()
        assert "Unable to deserialize" not in log and "nvalid params" not in log, log
    finally:
        server.close()
