"""Protocol fuzzing end to end: Hypothesis-generated JSON-RPC traffic, valid and broken, sent to
`python -m lsp_server` with the real engine and the embedded default model.

The invariant, per example (a burst of frames followed by a valid request):
- a request with a usable id (string or integer) gets exactly one response with that id, however
  broken its params (wrong types, missing or extra fields, deep nesting, huge numbers, lone
  surrogates), also when the id repeats, when it is a notification's method sent with an id, or when
  its frame's Content-Length is larger than what follows (the reader cuts the body where the next
  frame's header starts: see lsp_server/framing.py);
- a frame that is no JSON (cut short by the next frame's header, invalid UTF-8, garbage, nested
  deeper than the parser goes) gets exactly one error response: under its id when the id can still be
  read from the text, else with id null;
- a request whose id is unusable (a float, a boolean, null, an object), JSON that is no object, and a
  batch without requests get one error response with id null; each request inside a batch gets one
  under its own id;
- notifications get nothing;
- the server never dies, never fails to write a response, and afterwards completes code with the model.

Deliberately not fuzzed: `exit`, `shutdown`, `initialize` and settings changes (the lifecycle and the
model are tested on their own in test_e2e_robustness.py and test_e2e_settings.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .raw_client import RawServer

pytestmark = pytest.mark.slow

EXAMPLES = 110  # bursts per CI run; about 2,500 frames in all
# A fixed URI (not the temporary workspace's, whose name changes between runs): the same bytes are
# drawn on every run. It lies outside the workspace, where a document gets no repository context.
FUZZ_URI = "file:///fuzz/doc.py"
LIFECYCLE = {"exit", "shutdown", "initialize", "initialized", "workspace/didChangeConfiguration"}

REQUESTS: list[dict[str, Any]] = [
    {"method": "codellama/getStatus", "params": {}},
    {"method": "codellama/lastPrompt", "params": {"uri": "URI"}},
    {"method": "textDocument/inlineCompletion", "params": {
        "context": {"triggerKind": 1}, "textDocument": {"uri": "URI"}, "position": {"line": 1, "character": 4}}},
    {"method": "textDocument/completion", "params": {
        "textDocument": {"uri": "URI"}, "position": {"line": 0, "character": 3}, "context": {"triggerKind": 1}}},
    {"method": "textDocument/codeAction", "params": {
        "textDocument": {"uri": "URI"}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
        "context": {"diagnostics": []}}},
    {"method": "workspace/executeCommand", "params": {"command": "codellama.noSuchCommand", "arguments": [1]}},
    {"method": "textDocument/hover", "params": {"textDocument": {"uri": "URI"}, "position": {"line": 0, "character": 0}}},
    {"method": "fuzz/unknown", "params": {"x": [1, 2]}},
    {"method": "$/fuzzRequest", "params": None},
]
NOTIFICATIONS: list[dict[str, Any]] = [
    {"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": "URI", "languageId": "python", "version": 1, "text": "def add(a, b):\n    return a + b\n"}}},
    {"method": "textDocument/didChange", "params": {"textDocument": {"uri": "URI", "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 3}}, "text": "async def"}]}},
    {"method": "textDocument/didClose", "params": {"textDocument": {"uri": "URI"}}},
    {"method": "textDocument/didSave", "params": {"textDocument": {"uri": "URI"}}},
    {"method": "$/cancelRequest", "params": {"id": "f1"}},
    {"method": "$/setTrace", "params": {"value": "verbose"}},
    {"method": "window/workDoneProgress/cancel", "params": {"token": "t"}},
]

LONE_SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00\ud800"])
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80), st.sampled_from([2**64, -2**63, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), LONE_SURROGATES,
    st.sampled_from(["", "x" * 5000, "file:///etc/passwd", "../../secret", "file:///fuzz/%ZZ"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))


# ---- what is sent, and what must come back ---------------------------------------------------------

ANSWERED = "answered"  # exactly one response with this id
ID_OR_NULL = "id-or-null"  # unparseable: one response, with this id or with id null
NULL = "null"  # one response with id null
NOTHING = "nothing"


@dataclass
class Frame:
    data: bytes  # header and body, as sent
    expect: str
    ids: list[Any] = field(default_factory=list)  # the ids answered (ANSWERED: one response each)


def framed(body: bytes, length: int | None = None) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


def dumps(message: Any) -> bytes:
    return json.dumps(message).encode("utf-8")


def is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def paths_in(node: Any) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        out.append((node, key))
        out += paths_in(value)
    return out


@st.composite
def mutated_params(draw: st.DrawFn, params: Any, uri: str) -> Any:
    """The template's params with up to three nodes replaced, deleted or given an extra sibling."""
    params = json.loads(json.dumps(params).replace('"URI"', json.dumps(uri)))
    wrapper = {"params": params}
    for _ in range(draw(st.integers(0, 3))):
        parent, key = draw(st.sampled_from(paths_in(wrapper)))
        action = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        if action == "delete" and isinstance(parent, dict) and parent is not wrapper:
            del parent[key]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(HOSTILE)
        else:
            parent[key] = draw(HOSTILE)
    return wrapper["params"]


class Ids:
    """Fresh request ids within a burst, strings and integers (huge ones too), never the same twice
    unless asked."""

    def __init__(self) -> None:
        self.n = 0

    def fresh(self, draw: st.DrawFn) -> int | str:
        self.n += 1
        kind = draw(st.sampled_from(["str", "str", "int", "huge"]))
        return f"f{self.n}" if kind == "str" else self.n if kind == "int" else 2**70 + self.n


@st.composite
def request_message(draw: st.DrawFn, ids: Ids, uri: str, notification_as_request: bool = False) -> dict[str, Any]:
    template = draw(st.sampled_from(NOTIFICATIONS if notification_as_request else REQUESTS))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ids.fresh(draw), "method": template["method"]}
    if draw(st.integers(0, 9)) > 0:  # one in ten leaves params out (JSON-RPC allows it)
        message["params"] = draw(mutated_params(template["params"], uri))
    if draw(st.integers(0, 9)) == 0:
        message[draw(st.sampled_from(["extra", "result", "error"]))] = draw(HOSTILE)
    return message


@st.composite
def frames(draw: st.DrawFn, ids: Ids, uri: str) -> Frame:
    kind = draw(st.sampled_from([
        "request", "request", "request", "request", "notification", "notification", "notification",
        "notification-with-id", "duplicate-id", "bad-id", "wrong-version", "not-an-object", "batch",
        "deep", "cut-short", "invalid-utf8", "garbage", "too-long", "method-not-string"]))
    if kind == "request":
        message = draw(request_message(ids, uri))
        return Frame(framed(dumps(message)), ANSWERED, [message["id"]])
    if kind == "notification":
        template = draw(st.sampled_from(NOTIFICATIONS))
        message = {"jsonrpc": "2.0", "method": template["method"], "params": draw(mutated_params(template["params"], uri))}
        return Frame(framed(dumps(message)), NOTHING)
    if kind == "notification-with-id":
        message = draw(request_message(ids, uri, notification_as_request=True))
        return Frame(framed(dumps(message)), ANSWERED, [message["id"]])
    if kind == "duplicate-id":
        message = draw(request_message(ids, uri))
        twice = dumps(dict(message, method="codellama/getStatus"))
        return Frame(framed(dumps(message)) + framed(twice), ANSWERED, [message["id"], message["id"]])
    if kind == "bad-id":
        bad = draw(st.sampled_from([None, True, 1.5, [1], {"a": 1}, -0.0]))
        return Frame(framed(dumps({"jsonrpc": "2.0", "id": bad, "method": "codellama/getStatus"})), NULL)
    if kind == "wrong-version":
        msg_id = ids.fresh(draw)
        version = draw(st.sampled_from([None, "1.0", 2, "2.0 "]))
        message = {"id": msg_id, "method": "codellama/getStatus"} | ({} if version is None else {"jsonrpc": version})
        return Frame(framed(dumps(message)), ANSWERED, [msg_id])
    if kind == "not-an-object":
        return Frame(framed(dumps(draw(st.sampled_from([1, "text", None, True, 2**80])))), NULL)
    if kind == "batch":
        members = draw(st.lists(st.one_of(request_message(ids, uri), st.sampled_from(NOTIFICATIONS)), max_size=3))
        members = [dict(m, jsonrpc="2.0") for m in members]
        requests = [m["id"] for m in members if "id" in m]
        return Frame(framed(dumps(members)), ANSWERED if requests else NULL, requests)
    if kind == "deep":
        msg_id = ids.fresh(draw)
        depth = draw(st.sampled_from([10, 200, 900, 5_000, 100_000]))
        bracket = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nest = bracket[0] * depth + (b"1" if bracket[0] != b"[" else b"") + bracket[1] * depth
        method = dumps(draw(st.sampled_from(["codellama/getStatus", "textDocument/completion", "fuzz/deep"])))
        head = b'{"jsonrpc": "2.0", "id": %s, "method": %s, "params": ' % (dumps(msg_id), method)
        body = head + nest + b"}" if draw(st.booleans()) else (
            b'{"jsonrpc": "2.0", "params": ' + nest + b', "id": %s, "method": %s}' % (dumps(msg_id), method))
        return Frame(framed(body), ANSWERED, [msg_id])
    if kind == "cut-short":  # a partial frame: the header promises more than comes before the next frame
        message = draw(request_message(ids, uri))
        body = dumps(message)
        cut = draw(st.integers(1, len(body) - 1))
        return Frame(framed(body[:cut], len(body)), ID_OR_NULL, [message["id"]])
    if kind == "invalid-utf8":
        message = draw(request_message(ids, uri))
        body = dumps(message)
        at = draw(st.integers(0, len(body)))
        # (Not b"\xed\xa0\x80", an encoded surrogate: Python's JSON reads it, so the message may still parse.)
        return Frame(framed(body[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xf8\x88\x80"])) + body[at:]),
                     ID_OR_NULL, [message["id"]])
    if kind == "garbage":
        junk = draw(st.binary(max_size=40).filter(lambda b: b"ontent-" not in b.lower() and not is_json(b)))
        return Frame(framed(junk), NULL)
    if kind == "too-long":  # Content-Length far larger than the body: the body is still whole JSON
        message = draw(request_message(ids, uri))
        body = dumps(message)
        return Frame(framed(body, len(body) + draw(st.sampled_from([1, 100, 10**6, 10**11]))), ANSWERED,
                     [message["id"]])
    msg_id = ids.fresh(draw)  # method-not-string
    return Frame(framed(dumps({"jsonrpc": "2.0", "id": msg_id, "method": draw(HOSTILE.filter(
        lambda m: not isinstance(m, str)))})), ANSWERED, [msg_id])


# ---- the run ---------------------------------------------------------------------------------------

@dataclass
class Tally:
    frames: int = 0
    with_id: int = 0  # frames and batch members that carry a usable id, or need a null-id answer
    answered: int = 0
    bytes_sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "util.py").write_text("def scale(values, factor):\n    return [v * factor for v in values]\n")
    return root


@pytest.fixture(scope="module")
def server(workspace: Path):
    server = RawServer()
    server.initialize(workspace, {"maxNewTokens": 8})
    assert server.wait_ready()["state"] == "ready"
    yield server
    server.close()


def answers_for(server: RawServer, msg_id: Any) -> int:
    return len(server.responses.get(json.dumps(msg_id), []))


def check_burst(server: RawServer, burst: list[Frame], sentinel: str, tally: Tally) -> None:
    """Every frame of the burst got what it should, and nothing else came."""
    want = Counter(json.dumps(i) for f in burst if f.expect == ANSWERED for i in f.ids)
    server.request(sentinel, "codellama/getStatus", None, timeout=120)  # read after the whole burst
    deadline = time.monotonic() + 60
    for key, count in want.items():  # completions may answer after the sentinel
        while len(server.responses.get(key, [])) < count:
            assert server.proc.poll() is None, "the server died"
            sent = [f.data[:400] for f in burst if key in map(json.dumps, f.ids)]
            assert time.monotonic() < deadline, f"no response to id {key}: {sent}"
            server.pump(0.2)
    server.pump(0.05)
    nulls = len(server.responses.pop("null", []))
    null_expected = sum(1 for f in burst if f.expect == NULL)
    for frame in burst:
        if frame.expect == ID_OR_NULL:
            got = answers_for(server, frame.ids[0])
            assert got <= 1, frame.data[:300]
            want[json.dumps(frame.ids[0])] += got
            null_expected += 1 - got
    got_ids = Counter({key: len(v) for key, v in server.responses.items()})
    assert got_ids == want, (got_ids - want, want - got_ids)
    assert nulls == null_expected, (nulls, null_expected)
    for answers in server.responses.values():
        for answer in answers:
            assert ("result" in answer) != ("error" in answer), answer
    tally.answered += sum(got_ids.values()) + nulls
    tally.with_id += sum(want.values()) + null_expected
    server.responses.clear()
    server.notifications.clear()


def test_fuzzed_traffic_every_request_answered_once_and_the_server_keeps_completing(
        server: RawServer, workspace: Path, capsys: pytest.CaptureFixture[str]):
    uri = FUZZ_URI
    tally = Tally()
    bursts = [0]

    # No shrinking: the server is shared, so the first failing burst is the one to read.
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def burst(data: st.DataObject) -> None:
        ids = Ids()  # per burst (each is drained before the next), so that a failing one replays the same
        frames_ = data.draw(st.lists(frames(ids, uri), min_size=15, max_size=40))
        server.pump(0.05)
        server.responses.clear()  # after a failing burst, Hypothesis runs it again: start clean
        try:
            for frame in frames_:
                server.proc.stdin.write(frame.data)  # type: ignore[union-attr]
            server.proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            raise AssertionError(f"the server died:\n{server.stderr_text()[-4000:]}") from None
        tally.frames += len(frames_)
        tally.bytes_sent += sum(len(f.data) for f in frames_)
        bursts[0] += 1
        check_burst(server, frames_, f"sentinel-{bursts[0]}", tally)
        assert server.proc.poll() is None

    # Hypothesis' own `text()` draws are deterministic under derandomize; no lifecycle method is sent.
    for template in REQUESTS + NOTIFICATIONS:
        assert template["method"] not in LIFECYCLE
    burst()

    stderr = server.stderr_text()
    # A response that could not be written; a message the protocol failed on.
    for marker in ("Error sending data", "failed to handle a message"):
        at = stderr.find(marker)
        assert at < 0, stderr[at : at + 3000]
    # A valid request afterwards: a real suggestion from the model.
    server.notify("textDocument/didOpen", {"textDocument": {"uri": (workspace / "after.py").as_uri(),
                  "languageId": "python", "version": 1, "text": "def add(a, b):\n    return "}})
    answer = server.request("after", "textDocument/inlineCompletion", {
        "context": {"triggerKind": 1}, "textDocument": {"uri": (workspace / "after.py").as_uri()},
        "position": {"line": 1, "character": 11}})
    [item] = answer["result"]["items"]
    assert item["insertText"].strip()
    share = 100 * tally.answered / max(tally.with_id, 1)
    with capsys.disabled():
        print(f"\nprotocol fuzz: {tally.frames} frames ({tally.bytes_sent / 1e6:.1f} MB) in {EXAMPLES} bursts; "
              f"{tally.with_id} needed an answer, {tally.answered} answered ({share:.1f} %); server alive")
    assert tally.frames >= 2000
    assert tally.answered == tally.with_id


def test_the_nesting_bomb_and_custom_requests_without_params_are_answered(server: RawServer):
    bomb = b'{"jsonrpc": "2.0", "id": "bomb", "method": "codellama/getStatus", "params": ' + \
        b"[" * 100_000 + b"]" * 100_000 + b"}"
    server.send_raw(bomb)
    assert server.response("bomb", timeout=120)["error"]["code"] == -32600
    # No id to read before the nesting: a parse error with id null.
    server.send_raw(b'{"params": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b', "id": 1}')
    assert server.response(None, timeout=120)["error"]["code"] == -32700
    for method in ("codellama/getStatus", "codellama/lastPrompt"):
        server.send({"jsonrpc": "2.0", "id": method, "method": method})  # JSON-RPC lets params out
        assert "result" in server.response(method, timeout=120)
    assert server.request("status", "codellama/getStatus", {})["result"]["state"] == "ready"


def test_a_content_length_larger_than_the_body_with_nothing_after_it_is_answered(server: RawServer):
    body = json.dumps({"jsonrpc": "2.0", "id": "long", "method": "codellama/getStatus"}).encode()
    server.proc.stdin.write(framed(body, len(body) + 5000))  # type: ignore[union-attr]
    server.proc.stdin.flush()  # type: ignore[union-attr]
    # The client now waits; the server, once the stream is quiet, reads what came as the body.
    assert "result" in server.response("long", timeout=120)
