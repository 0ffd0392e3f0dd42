"""Robustness end to end: hostile and malformed traffic, huge and binary inputs, shutdown and
disconnects, against `python -m lsp_server` with the real engine and the embedded default model (no
model configured). Every request must be answered; the server must keep serving, and suggesting."""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from engine import default_model_dir

from .raw_client import RawServer

pytestmark = pytest.mark.slow

URI = "file:///fuzz/doc.py"
HOSTILE_VALUES = [None, -1, 2**70, "", "x" * 5000, [], {}, True, 1.5, "\ud800", {"a": [1, {"b": None}]},
                  "file:///etc/passwd", "../../secret", -2**40]
TEMPLATES: list[dict[str, Any]] = [
    {"method": "textDocument/inlineCompletion", "params": {"context": {"triggerKind": 1},
     "textDocument": {"uri": URI}, "position": {"line": 0, "character": 3}}},
    {"method": "textDocument/completion", "params": {"textDocument": {"uri": URI},
     "position": {"line": 1, "character": 0}, "context": {"triggerKind": 1}}},
    {"method": "codellama/lastPrompt", "params": {"uri": URI}},
    {"method": "codellama/getStatus", "params": {}},
    {"method": "workspace/executeCommand", "params": {"command": "codellama.noSuchCommand", "arguments": [1]}},
    {"method": "textDocument/hover", "params": {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}}},
]
NOTIFICATION_TEMPLATES: list[dict[str, Any]] = [
    {"method": "textDocument/didOpen", "params": {"textDocument": {"uri": URI, "languageId": "python",
     "version": 1, "text": "def f(x):\n    return x\n"}}},
    {"method": "textDocument/didChange", "params": {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 3}}, "text": "async def"}]}},
    {"method": "textDocument/didClose", "params": {"textDocument": {"uri": URI}}},
    {"method": "$/cancelRequest", "params": {"id": 12345}},
    {"method": "workspace/didChangeConfiguration", "params": {"settings": {"codellama": {"maxNewTokens": 24}}}},
    {"method": "$/setTrace", "params": {"value": "verbose"}},
]


def mutate(obj: Any, rng: random.Random) -> Any:
    """Replace or delete one random node of a JSON value."""
    obj = copy.deepcopy(obj)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            paths.append((node, key))
            walk(value)

    walk(obj)
    if not paths:
        return obj
    parent, key = rng.choice(paths)
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[key]
    else:
        parent[key] = rng.choice(HOSTILE_VALUES)
    return obj


def hostile_traffic(rng: random.Random) -> tuple[list[bytes], dict[str, int | None], int]:
    """(bodies, expected error code per request id (None: any answer), answers expected with id null)."""
    bodies: list[bytes] = []
    expect: dict[str, int | None] = {}
    null_answers = 0

    def req(msg_id: str, method: Any, params: Any, code: int | None) -> None:
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode())
        expect[msg_id] = code

    # Unparseable bodies: -32700 with id null.
    for body in [b"{", b"nul", b'{"jsonrpc": "2.0", "id": 1, "method": ', b"\xff\xfe\x00garbage",
                 b'{"a": "\xc3\x28"}', b"[" * 200_000, b"{}}", b"\x00" * 64]:
        bodies.append(body)
        null_answers += 1
    # JSON that is no request object: -32600 with id null.
    for value in [1, "text", None, []]:
        bodies.append(json.dumps(value).encode())
        null_answers += 1
    # A batch (LSP has none): each request in it is refused under its own id.
    bodies.append(json.dumps([{"jsonrpc": "2.0", "id": "batch", "method": "codellama/getStatus"},
                              {"jsonrpc": "2.0", "method": "$/setTrace", "params": {"value": "off"}}]).encode())
    expect["batch"] = -32600
    # Requests with ids that cannot be echoed back: -32600 with id null.
    for bad_id in [{"a": 1}, [1], 1.5, True, None]:
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": bad_id, "method": "codellama/getStatus"}).encode())
        null_answers += 1
    # Not JSON-RPC 2.0.
    bodies.append(json.dumps({"id": "no-version", "method": "codellama/getStatus"}).encode())
    expect["no-version"] = -32600
    bodies.append(json.dumps({"jsonrpc": "1.0", "id": "old-version", "method": "codellama/getStatus"}).encode())
    expect["old-version"] = -32600
    req("method-not-string", 42, {}, -32600)
    # Unknown methods, including one with a params object of 50,000 keys.
    req("unknown", "foo/bar", {"x": 1}, -32601)
    req("unknown-huge", "foo/huge", {f"k{i}": i for i in range(50_000)}, -32601)
    # Known methods whose params cannot be parsed: -32602 (plain pygls never answers these).
    req("bad-params-1", "textDocument/inlineCompletion", {}, -32602)
    req("bad-params-2", "textDocument/inlineCompletion", 5, -32602)
    req("bad-params-3", "textDocument/completion", {"textDocument": None, "position": {"line": -1}}, -32602)
    req("bad-params-4", "textDocument/inlineCompletion", {"context": {"triggerKind": 99},
        "textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}}, -32602)
    # Random mutations of valid traffic.
    for i in range(300):
        if rng.random() < 0.6:
            template = rng.choice(TEMPLATES)
            msg = mutate(template, rng) if rng.random() < 0.8 else copy.deepcopy(template)
            msg_id = f"fuzz-{i}"
            if not isinstance(msg.get("method"), str):
                expected: int | None = -32600
            else:
                expected = None
            msg.update(jsonrpc="2.0", id=msg_id)
            bodies.append(json.dumps(msg).encode())
            expect[msg_id] = expected
        else:
            msg = mutate(rng.choice(NOTIFICATION_TEMPLATES), rng)
            msg["jsonrpc"] = "2.0"
            bodies.append(json.dumps(msg).encode())
    return bodies, expect, null_answers


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "good.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "latin1.py").write_bytes("nom = 'Ren\xe9'\n".encode("latin-1"))
    (root / "binary.py").write_bytes(bytes(range(256)) * 50)
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000)
    (root / "huge.py").write_text("x = 1\n" * 400_000)
    return root


@pytest.fixture(scope="module")
def server(workspace: Path):
    server = RawServer()
    result = server.initialize(workspace, {"maxNewTokens": 24})
    assert "capabilities" in result["result"]
    yield server
    server.close()


def test_hostile_traffic_gets_answers_and_the_server_keeps_serving(server: RawServer):
    bodies, expect, null_answers = hostile_traffic(random.Random(0))
    assert len(bodies) >= 300
    for body in bodies:
        server.send_raw(body)
    server.request("sentinel", "codellama/getStatus", {})  # answered after every error reply above
    for msg_id, code in expect.items():
        answer = server.response(msg_id, timeout=300)
        assert ("result" in answer) != ("error" in answer), answer
        if code is not None:
            assert answer["error"]["code"] == code, (msg_id, answer)
    server.pump(0.5)
    nulls = server.responses.pop("null", [])
    assert len(nulls) == null_answers
    assert {a["error"]["code"] for a in nulls} == {-32700, -32600}
    assert server.proc.poll() is None
    # No pop-ups for malformed traffic: only the invalid settings the fuzzer sent may be shown.
    shown = [n for n in server.notifications if n["method"] == "window/showMessage"]
    assert all("codellama." in n["params"]["message"] or "Model" in n["params"]["message"] for n in shown)

    # A valid request still works, with the model.
    server.notify("workspace/didChangeConfiguration", {"settings": {"codellama": {"maxNewTokens": 24}}})
    status = server.wait_ready()
    assert status["state"] == "ready" and status["model"] == default_model_dir().name
    server.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///fuzz/ok.py", "languageId": "python",
                                                            "version": 1, "text": "def add(a, b):\n    return "}})
    answer = server.request("valid", "textDocument/inlineCompletion", {
        "context": {"triggerKind": 1}, "textDocument": {"uri": "file:///fuzz/ok.py"},
        "position": {"line": 1, "character": 11}})
    assert "result" in answer, answer
    [item] = answer["result"]["items"]  # a real suggestion from the model
    assert item["insertText"].strip()
    prompt = server.request("valid-prompt", "codellama/lastPrompt", {"uri": "file:///fuzz/ok.py"})["result"]
    assert prompt["prefix"].endswith("def add(a, b):\n    return ")


def test_binary_non_utf8_and_huge_files_in_the_workspace(server: RawServer, workspace: Path):
    status = server.wait_ready()
    assert status["indexedFiles"] == 2  # good.py and latin1.py; not binary.py, image.png, huge.py


def test_ten_megabyte_line_closed_documents_and_positions_out_of_range(server: RawServer):
    big = "data = [" + "1234567, " * 1_200_000 + "]"
    assert len(big) > 10_000_000
    uri = "file:///fuzz/big.py"
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": big}})
    answer = server.request("big", "textDocument/inlineCompletion", {
        "context": {"triggerKind": 1}, "textDocument": {"uri": uri}, "position": {"line": 0, "character": 5_000_000}})
    assert "result" in answer, answer
    assert isinstance(answer["result"]["items"], list)
    prompt = server.request("big-prompt", "codellama/lastPrompt", {"uri": uri})["result"]
    assert 0 < len(prompt["prefix"]) + len(prompt["suffix"]) < 200_000  # budgeted, not the whole line
    # Far past the end of the document, and a closed document: an empty answer, not an error.
    far = server.request("far", "textDocument/inlineCompletion", {
        "context": {"triggerKind": 1}, "textDocument": {"uri": uri}, "position": {"line": 10**6, "character": 0}})
    assert far["result"]["items"] == []
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    closed = server.request("closed", "textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}})
    assert closed["result"]["items"] == []


def test_requests_after_shutdown_are_refused_and_exit_ends_the_process(server: RawServer):
    assert server.request("shutdown", "shutdown", None)["result"] is None
    late = server.request("late", "codellama/getStatus", {})
    assert late["error"]["code"] == -32600
    server.notify("exit", None)
    assert server.proc.wait(timeout=60) == 0


def test_a_client_that_disconnects_ends_the_server():
    server = RawServer(direct=True)
    try:
        server.request("s", "codellama/getStatus", {})
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        started = time.monotonic()
        server.proc.wait(timeout=60)
        assert time.monotonic() - started < 60
    finally:
        server.close()


def test_tcp_is_loopback_only_unless_allowed():
    import subprocess
    import sys

    from .lsp_client import REPO, server_env

    refused = subprocess.run([sys.executable, "-m", "lsp_server", "--tcp", "0.0.0.0:0"], cwd=REPO, env=server_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "loopback" in refused.stderr and "--allow-remote" in refused.stderr


EDITOR = """
import subprocess, sys, time
server = subprocess.Popen([sys.executable, "-m", "lsp_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
print(server.pid, flush=True)
body = b'{"jsonrpc": "2.0", "id": 1, "method": "codellama/getStatus"}'
server.stdin.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
server.stdin.flush()
while server.stdout.readline().strip():
    pass  # the headers of the answer
print("ready", flush=True)
time.sleep(600)
"""


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaped (an orphan in a container whose init does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_server_exits_when_its_editor_is_killed_without_shutdown():
    import subprocess
    import sys

    from .lsp_client import REPO, server_env

    editor = subprocess.Popen([sys.executable, "-c", EDITOR], cwd=REPO, env=server_env(), stdout=subprocess.PIPE)
    try:
        assert editor.stdout is not None
        server_pid = int(editor.stdout.readline())
        assert editor.stdout.readline().strip() == b"ready"  # the server answered the editor
        editor.kill()  # SIGKILL: no shutdown, no exit; its ends of the pipes close
        editor.wait(timeout=30)
        deadline = time.monotonic() + 60
        while not exited(server_pid):
            assert time.monotonic() < deadline, "the server outlived its editor by a minute"
            time.sleep(0.2)
    finally:
        editor.kill()
        if not exited(server_pid):
            import os
            import signal

            os.kill(server_pid, signal.SIGKILL)


def test_the_server_exits_when_the_process_id_it_was_given_dies(tmp_path: Path):
    """LSP's processId: the editor is gone even when something else still holds the pipes open."""
    import subprocess

    parent = subprocess.Popen(["sleep", "600"])
    server = RawServer(direct=True)
    try:
        server.request("init", "initialize", {"processId": parent.pid, "rootUri": tmp_path.as_uri(),
                                              "capabilities": {}})
        server.notify("initialized", {})
        parent.kill()
        parent.wait()
        assert server.proc.wait(timeout=60) == 0  # the watch checks every few seconds
    finally:
        parent.kill()
        server.close()


def test_tcp_on_loopback_serves_requests_and_a_nesting_bomb():
    import socket
    import subprocess
    import sys

    from .lsp_client import REPO, server_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server", "--tcp", f"127.0.0.1:{port}"], cwd=REPO,
                            env=server_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server never listened"
                time.sleep(0.2)
        with conn, conn.makefile("rb") as replies:
            bomb = b'{"jsonrpc": "2.0", "id": 7, "method": "codellama/getStatus", "params": ' + \
                b"[" * 100_000 + b"]" * 100_000 + b"}"
            status = b'{"jsonrpc": "2.0", "id": 8, "method": "codellama/getStatus"}'
            for body in (bomb, status):
                conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answers = []
            for _ in range(2):
                length = 0
                while (line := replies.readline()).strip():
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answers.append(json.loads(replies.read(length)))
        assert answers[0]["id"] == 7 and answers[0]["error"]["code"] == -32600
        assert answers[1]["id"] == 8 and answers[1]["result"]["state"] in ("starting", "disabled")
    finally:
        proc.kill()
        proc.wait(timeout=30)
