"""A bare JSON-RPC client over the server's stdio: sends any bytes, framed or not, and collects
what comes back. For robustness tests, where a well-behaved client library would refuse to send the
messages we need."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests import forkserver

from .lsp_client import REPO, server_env


class RawServer:
    def __init__(self, *args: str, direct: bool = False, module: str = "lsp_server") -> None:
        """`direct`: run `python -m lsp_server` itself rather than a child of the fork server; `module`:
        another entry point that takes the server's arguments (tests.gated_server)."""
        self.stderr = tempfile.TemporaryFile()
        command = [sys.executable, "-m", module, *args] if direct else forkserver.command(module, *args)
        self.proc = subprocess.Popen(command, cwd=REPO, env=server_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.responses: dict[Any, list[dict[str, Any]]] = {}
        self.notifications: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # ---- sending ------------------------------------------------------------------------------

    def send_raw(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(json.dumps(message).encode("utf-8"))

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, msg_id: Any, method: str, params: Any = None, timeout: float = 300) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    # ---- receiving ----------------------------------------------------------------------------

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length is None:
                continue
            self.inbox.put(json.loads(out.read(length)))

    def pump(self, timeout: float = 0.1) -> None:
        """Sort what arrived; answer the server's own requests like an editor would."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if "method" in msg and "id" in msg:  # a request from the server
                result = [None for _ in msg.get("params", {}).get("items", [])] \
                    if msg["method"] == "workspace/configuration" else None
                self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
            elif "method" in msg:
                self.notifications.append(msg)
            else:
                key = msg.get("id")
                self.responses.setdefault(json.dumps(key), []).append(msg)

    def response(self, msg_id: Any, timeout: float = 300) -> dict[str, Any]:
        key = json.dumps(msg_id)
        deadline = time.monotonic() + timeout
        while key not in self.responses:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no response to id {msg_id!r} (server alive: {self.proc.poll() is None})")
            self.pump(0.2)
        return self.responses[key].pop(0) if len(self.responses[key]) > 1 else self.responses.pop(key)[0]

    def initialize(self, root: Path, init_options: dict[str, Any]) -> dict[str, Any]:
        caps = {"window": {"workDoneProgress": True}, "workspace": {"configuration": True},
                "textDocument": {"inlineCompletion": {}}}
        result = self.request("init", "initialize", {"processId": None, "rootUri": root.as_uri(),
                                                     "capabilities": caps, "initializationOptions": init_options})
        self.notify("initialized", {})
        return result

    def wait_ready(self, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            n += 1
            status = self.request(f"status-{n}", "codellama/getStatus", {})["result"]
            if status["state"] in ("ready", "error") and not status["indexing"]:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready: {status}")
            time.sleep(0.3)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.stderr.close()
