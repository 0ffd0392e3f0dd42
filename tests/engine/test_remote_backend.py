"""The remote backend against a scripted OpenAI-compatible server on 127.0.0.1 (no model, no torch).

Each test scripts what the server answers and checks what an editor user would see: the completion
text, why it stopped, that a cancelled request really closes its connection, and error messages that
say what is wrong.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm

from engine.backends.base import BackendError, CompletionRequest, InstructRequest, Unreachable
from engine.backends.connection import parse_server_url
from engine.backends.remote import RemoteBackend
from engine.backends.sse import cut_at_stop
from engine.prompts import fim_prompt_text, instruct_prompt_text

Route = Callable[["Handler", Any], None]


class Handler(BaseHTTPRequestHandler):
    server: FakeHTTPServer
    state: State  # of the test that was running when this request came in

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.state = self.server.fake.state
        self.state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                    "body": body})
        route = self.state.route(self.command, self.path)
        if route is None:
            self.reply_json(404, {"error": {"message": f"no route {self.path}"}})
        else:
            route(self, body)

    do_GET = do_POST = _serve

    # ---- answers ------------------------------------------------------------------------------

    def reply_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the body ends when the server closes the connection

    def event(self, obj: Any) -> bool:
        """Send one server-sent event; False when the client has gone away."""
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        try:
            self.wfile.write(f"data: {payload}\n\n".encode())
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.state.disconnected.set()
            return False

    def wait_for_disconnect(self, seconds: float) -> bool:
        """Hold the request (a server still prefilling); True as soon as the client closes."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.connection], [], [], 0.02)
            if ready:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        self.state.disconnected.set()
                        return True
                except OSError:
                    self.state.disconnected.set()
                    return True
        return False


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer


def chunk(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish, **extra}]}


def stream(chunks: list[Any], done: bool = True, delay: float = 0.0) -> Route:
    def route(h: Handler, body: Any) -> None:
        h.start_events()
        for c in chunks:
            if not h.event(c):
                return
            h.state.sent += 1
            if delay:
                time.sleep(delay)
        if done:
            h.event("[DONE]")

    return route


class State:
    """What one test scripted and what the server saw during it.

    Routes: {("POST", "/v1/completions"): route or [route, route, ...] (one per request, the last
    repeats)}. GET /v1/models answers like vLLM unless replaced."""

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.sent = 0
        self.routes: dict[tuple[str, str], Any] = {
            ("GET", "/v1/models"): lambda h, b: h.reply_json(
                200, {"object": "list", "data": [{"id": "codellama-7b", "owned_by": "vllm", "max_model_len": 4096}]}),
        }
        self.routes.update(routes or {})

    def route(self, method: str, path: str) -> Route | None:
        r = self.routes.get((method, path))
        if isinstance(r, list):
            return r.pop(0) if len(r) > 1 else r[0]
        return r


class FakeServer:
    """An HTTP server on 127.0.0.1 answering as the current State scripts (tests share one)."""

    def __init__(self, port: int = 0, routes: dict[tuple[str, str], Any] | None = None) -> None:
        self.state = State(routes)
        self.httpd = FakeHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def reset(self, routes: dict[tuple[str, str], Any] | None = None) -> FakeServer:
        self.state = State(routes)  # requests still running from an earlier test keep their own
        return self

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    @property
    def disconnected(self) -> threading.Event:
        return self.state.disconnected

    @property
    def sent(self) -> int:
        return self.state.sent

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def shared_server():
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def make_server(shared_server: FakeServer):
    """make(routes=..., port=0): the shared server scripted anew, then (second call, or a given port)
    servers of their own."""
    own: list[FakeServer] = []
    shared_taken: list[bool] = []

    def make(port: int = 0, routes: dict[tuple[str, str], Any] | None = None) -> FakeServer:
        if port == 0 and not shared_taken:
            shared_taken.append(True)
            return shared_server.reset(routes)
        s = FakeServer(port, routes)
        own.append(s)
        return s

    yield make
    for s in own:
        s.stop()


def fast(url: str, **kwargs: Any) -> RemoteBackend:
    """A backend with short timeouts and backoff, so failures show quickly (and server token counts
    however slow this loaded test machine answers)."""
    options: dict[str, Any] = dict(connect_timeout=2.0, read_timeout=5.0, retries=2, backoff=0.01,
                                   count_rtt_limit=60.0)
    options.update(kwargs)
    return RemoteBackend(url, **options)


COMPLETIONS = ("POST", "/v1/completions")


# ---- streaming ------------------------------------------------------------------------------------


def test_streams_the_completion_and_reports_each_step(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk("return"), chunk(" a +"), chunk(" b", "length")])})
    backend = fast(server.url)
    seen: list[str] = []
    result = backend.complete(CompletionRequest(prefix="def add(a, b):\n    ", suffix="\n", fim_format="psm",
                                                max_new_tokens=3), on_text=seen.append)
    assert result.text == "return a + b"
    assert result.stop_reason == "max_tokens"
    assert seen == ["return", "return a +", "return a + b"]
    body = server.posts("/v1/completions")[0]["body"]
    assert body["prompt"] == "<PRE> def add(a, b):\n     <SUF>\n <MID>"
    assert body["stream"] is True and body["max_tokens"] == 3 and body["model"] == "codellama-7b"
    assert "<EOT>" in body["stop"]
    assert backend.context_length == 4096  # from the server's /v1/models
    assert "codellama-7b" in backend.description and backend.warnings == []


def test_stop_string_mid_stream_cuts_the_text(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk("x = comp"), chunk("ute()\n    y"), chunk(" = 2")])})
    result = fast(server.url).complete(CompletionRequest(prefix="", stop=["\n"]))
    assert result.text == "x = compute()"
    assert result.stop_reason == "stop_string"
    assert server.posts("/v1/completions")[0]["body"]["stop"] == ["\n", "<EOT>"]


def test_end_of_infill_piece_ends_the_completion_without_its_space(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk("total += x"), chunk(" <EOT>"), chunk("junk after")])})
    result = fast(server.url).complete(CompletionRequest(prefix="for x in xs:\n    "))
    assert result.text == "total += x"
    assert result.stop_reason == "eot"


def test_server_finishing_on_a_stop_string_is_reported_as_such(make_server):
    # vLLM names the stop string that ended generation (and leaves it out of the text).
    server = make_server(routes={COMPLETIONS: stream([chunk("a = 1"), chunk("", "stop", stop_reason="\n")])})
    result = fast(server.url).complete(CompletionRequest(prefix="", stop=["\n"]))
    assert (result.text, result.stop_reason) == ("a = 1", "stop_string")


# ---- cancellation --------------------------------------------------------------------------------


def test_cancelling_mid_stream_closes_the_connection(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk(f"t{i} ") for i in range(200)], delay=0.02)})
    seen: list[str] = []
    result = fast(server.url).complete(CompletionRequest(prefix="", max_new_tokens=200), on_text=seen.append,
                                       should_stop=lambda: len(seen) >= 3)
    assert result.stop_reason == "cancelled"
    assert result.text.startswith("t0 t1 t2 ")
    assert server.disconnected.wait(20), "the server never saw the client go away"
    assert server.sent < 200


def test_cancelling_while_the_server_is_still_prefilling(make_server):
    server = make_server(routes={COMPLETIONS: lambda h, b: h.wait_for_disconnect(20)})
    backend = fast(server.url)
    result = backend.complete(CompletionRequest(prefix="x"),
                              should_stop=lambda: len(server.posts("/v1/completions")) > 0)
    assert (result.text, result.stop_reason) == ("", "cancelled")
    assert server.disconnected.wait(20)


# ---- failures ------------------------------------------------------------------------------------


def test_read_timeout_is_retried_then_reported(make_server):
    server = make_server(routes={COMPLETIONS: lambda h, b: h.wait_for_disconnect(20)})
    backend = fast(server.url, read_timeout=0.3, retries=1)
    with pytest.raises(BackendError) as err:
        backend.complete(CompletionRequest(prefix="x"))
    message = str(err.value)
    assert f"remote server {server.url} unreachable" in message and "read timeout" in message
    # One retry. Counted by the client: on a loaded machine the test server may not even have read the
    # second request before the client's 0.3 s read timeout closed it.
    assert "(tried 2 times)" in message
    assert backend.state.startswith("error: remote server")


def test_a_500_is_retried_and_the_retry_answers(make_server):
    fail = lambda h, b: h.reply_json(500, {"error": {"message": "busy"}})  # noqa: E731
    server = make_server(routes={COMPLETIONS: [fail, stream([chunk("ok", "length")])]})
    backend = fast(server.url)
    states: list[str] = []
    backend.on_state = states.append
    result = backend.complete(CompletionRequest(prefix="x"))
    assert result.text == "ok"
    assert len(server.posts("/v1/completions")) == 2
    assert any(s.startswith("retrying") and "HTTP 500" in s for s in states)
    assert backend.state == "ready"


def test_a_server_failing_every_time_gives_a_clear_error(make_server):
    server = make_server(routes={COMPLETIONS: lambda h, b: h.reply_json(500, {"error": {"message": "CUDA out of memory"}})})
    with pytest.raises(BackendError) as err:
        fast(server.url, retries=2).complete(CompletionRequest(prefix="x"))
    assert str(err.value) == f"remote server {server.url} failed: HTTP 500 (CUDA out of memory) (tried 3 times)"
    assert len(server.posts("/v1/completions")) == 3


def test_a_stream_cut_in_the_middle_is_an_error_not_a_hang(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk("def f("), chunk("x, ")], done=False)})
    with pytest.raises(BackendError) as err:
        fast(server.url).complete(CompletionRequest(prefix="x"))
    assert "ended the stream early" in str(err.value)
    assert len(server.posts("/v1/completions")) == 1  # text had arrived: not retried


def test_an_error_event_in_the_stream_is_shown(make_server):
    server = make_server(routes={COMPLETIONS: stream([{"error": {"message": "context length exceeded"}}])})
    with pytest.raises(BackendError, match="context length exceeded"):
        fast(server.url).complete(CompletionRequest(prefix="x"))


def test_unreachable_server_then_recovery_when_it_comes_back(make_server):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    backend = fast(f"http://127.0.0.1:{port}", retries=1)  # constructing does not fail
    with pytest.raises(Unreachable) as err:  # a BackendError the server can tell apart
        backend.complete(CompletionRequest(prefix="x"))
    assert str(err.value).startswith(f"remote server http://127.0.0.1:{port} unreachable: connection refused")
    assert backend.count_tokens("hello world") == 4  # an estimate while the server is away
    make_server(port=port, routes={COMPLETIONS: stream([chunk("back", "length")])})
    assert backend.complete(CompletionRequest(prefix="x")).text == "back"
    assert backend.context_length == 4096  # the server was asked what it is once it answered


def test_rejected_api_key_names_the_setting(make_server):
    server = make_server(routes={COMPLETIONS: lambda h, b: h.reply_json(401, {"error": {"message": "bad key"}})})
    with pytest.raises(BackendError) as err:
        fast(server.url, api_key="wrong").complete(CompletionRequest(prefix="x"))
    assert "HTTP 401 (bad key)" in str(err.value) and "codellama.apiKey" in str(err.value)
    assert len(server.posts("/v1/completions")) == 1  # not retried


# ---- API key and transport security --------------------------------------------------------------


def test_api_key_goes_to_the_configured_host_and_never_follows_a_redirect(make_server):
    other = make_server(routes={COMPLETIONS: stream([chunk("leak")])})
    redirect = lambda h, b: h.reply_json(307, {}, {"Location": f"{other.url}/v1/completions"})  # noqa: E731
    server = make_server(routes={COMPLETIONS: redirect})
    backend = fast(server.url + "/v1", api_key="sk-secret")
    with pytest.raises(BackendError) as err:
        backend.complete(CompletionRequest(prefix="x"))
    assert "redirect" in str(err.value) and "codellama.backend" in str(err.value)
    assert server.requests and all(r["headers"].get("Authorization") == "Bearer sk-secret" for r in server.requests)
    assert other.requests == []  # the other host never heard from us


def test_plain_http_to_another_machine_warns():
    remote = RemoteBackend("http://10.1.2.3:8000", api_key="k", probe=False)
    assert len(remote.warnings) == 1 and "plain http://" in remote.warnings[0]
    assert "API key" in remote.warnings[0]
    for quiet in ("http://127.0.0.1:8000", "http://localhost:8000/v1", "http://[::1]:8000", "https://gpu.example:443"):
        assert RemoteBackend(quiet, probe=False).warnings == [], quiet


def test_bad_urls_are_rejected_with_the_setting_name():
    for bad in ("ftp://host", "localhost:8000", "http://user:pw@host:1"):
        with pytest.raises(BackendError, match="codellama"):
            parse_server_url(bad)
    assert parse_server_url("https://h.example/serve/v1/").path("/v1/completions") == "/serve/v1/completions"


def test_language_server_settings_reach_the_backend(make_server):
    from lsp_server.engine_manager import load_backend
    from lsp_server.settings import parse_settings

    server = make_server(routes={COMPLETIONS: stream([chunk("y", "length")])})
    settings, problems = parse_settings({"backend": server.url + "/v1", "apiKey": "sk-team", "remoteModel": "cl-13b"})
    assert problems == [] and "sk-team" not in repr(settings)
    backend = load_backend(settings)
    assert isinstance(backend, RemoteBackend)
    backend.complete(CompletionRequest(prefix="x"))
    request = server.posts("/v1/completions")[0]
    assert request["headers"]["Authorization"] == "Bearer sk-team" and request["body"]["model"] == "cl-13b"
    assert "repeat_penalty" not in request["body"]  # llama.cpp's sampler options go to llama.cpp only


# ---- llama.cpp's server ---------------------------------------------------------------------------


def test_llamacpp_server_gets_native_infill_and_tokenizes(make_server):
    def tokenize(h: Handler, body: Any) -> None:
        h.reply_json(200, {"tokens": list(range(len(body["content"].split())))})

    infill = stream([{"content": "print(", "stop": False}, {"content": "x)", "stop": False},
                     {"content": "", "stop": True, "stop_type": "eos",
                      "timings": {"prompt_n": 40, "cache_n": 60, "predicted_n": 3}}], done=False)
    server = make_server(routes={
        ("GET", "/props"): lambda h, b: h.reply_json(200, {"default_generation_settings": {"n_ctx": 8192}}),
        ("GET", "/v1/models"): lambda h, b: h.reply_json(200, {"data": [{"id": "cl.gguf", "meta": {"n_ctx_train": 16384}}]}),
        ("POST", "/tokenize"): tokenize,
        ("POST", "/infill"): infill,
    })
    backend = fast(server.url)
    assert backend.context_length == 8192  # the slot's context, not the trained one
    assert backend.count_tokens("one two three four") == 4
    result = backend.complete(CompletionRequest(prefix="def show(x):\n    ", suffix="\n", max_new_tokens=16))
    assert (result.text, result.stop_reason) == ("print(x)", "eot")
    assert (result.timings.prompt_tokens, result.timings.cached_tokens) == (100, 60)
    body = server.posts("/infill")[0]["body"]
    assert (body["input_prefix"], body["input_suffix"], body["n_predict"]) == ("def show(x):\n    ", "\n", 16)
    assert "llama.cpp" in backend.description


def test_token_counts_fall_back_to_an_estimate_when_the_server_is_far(make_server):
    def slow_tokenize(h: Handler, body: Any) -> None:
        time.sleep(0.05)
        h.reply_json(200, {"tokens": [7] * 100})

    server = make_server(routes={("POST", "/tokenize"): slow_tokenize})
    backend = fast(server.url, count_rtt_limit=0.01)
    assert not backend.counts_on_server
    asked = len(server.requests)
    assert backend.count_tokens("x" * 35) == 10  # 3.5 characters a token, no request
    assert len(server.requests) == asked


def test_server_whose_tokenizer_matches_piece_text_gets_piece_markers(make_server):
    # llama-cpp-python: no /infill; its tokenizer reads "▁<SUF>" (not "<SUF>") as the control token.
    def tokenize(h: Handler, body: Any) -> None:
        text = body["input"]
        h.reply_json(200, {"tokens": [1] + ([32008] if text == "▁<SUF>" else [29966] * max(1, len(text) // 2))})

    server = make_server(routes={
        ("GET", "/v1/models"): lambda h, b: h.reply_json(200, {"data": [{"id": "cl", "owned_by": "me"}]}),
        ("POST", "/extras/tokenize"): tokenize,
        COMPLETIONS: stream([chunk("1", "length")]),
    })
    backend = fast(server.url)
    backend.complete(CompletionRequest(prefix="a = ", suffix="\n", fim_format="spm"))
    body = server.posts("/v1/completions")[0]["body"]
    assert body["prompt"] == "▁<PRE>▁<SUF>\n▁<MID>a = "
    # Its server applies a repeat penalty of 1.1 unless told: greedy would not be the engine's greedy.
    assert (body["repeat_penalty"], body["top_k"], body["min_p"]) == (1.0, 0, 0.0)
    assert backend.context_length == 16384  # nothing said: the default
    assert backend.count_tokens("abcdef") == 3  # its answer, without the BOS it adds
    assert backend.server_kind == "llama-cpp-python"


def test_llama_cpp_python_ending_the_stream_unanswered_is_explained(make_server):
    # llama-cpp-python raises "Requested tokens exceed context window" inside the stream: 200, then the
    # connection closes without an event. Not "unreachable": it answered; the likely cause is named.
    def unanswered(h: Handler, body: Any) -> None:
        h.start_events()

    server = make_server(routes={
        ("GET", "/v1/models"): lambda h, b: h.reply_json(200, {"data": [{"id": "cl", "owned_by": "me"}]}),
        ("POST", "/extras/tokenize"): lambda h, b: h.reply_json(200, {"tokens": [1, 2]}),
        COMPLETIONS: unanswered,
    })
    backend = fast(server.url)
    with pytest.raises(BackendError) as err:
        backend.complete(CompletionRequest(prefix="x = 1\n" * 50))
    message = str(err.value)
    assert "failed" in message and "unreachable" not in message and "--n_ctx" in message
    assert "tried 3 times" in message and backend.state == f"error: {message}"


def test_llamacpp_server_reading_the_pieces_gets_the_text_prompt_in_code_llamas_spm(make_server):
    # llama.cpp's own server with a Code Llama GGUF: /tokenize (parse_special) reads "▁<SUF>" as one
    # token. Its /infill cannot put the pieces in Code Llama's SPM order; the text prompt can.
    def tokenize(h: Handler, body: Any) -> None:
        text = body["content"]
        h.reply_json(200, {"tokens": [32008] if text == "▁<SUF>" else [29966] * max(1, len(text) // 2)})

    server = make_server(routes={
        ("GET", "/props"): lambda h, b: h.reply_json(200, {"default_generation_settings": {"n_ctx": 4096}}),
        ("GET", "/v1/models"): lambda h, b: h.reply_json(200, {"data": [{"id": "cl.gguf"}]}),
        ("POST", "/tokenize"): tokenize,
        COMPLETIONS: stream([chunk("1", "length")]),
    })
    backend = fast(server.url)
    result = backend.complete(CompletionRequest(prefix="a = ", suffix=" + b\n", fim_format="spm", seed=3))
    assert result.text == "1" and server.posts("/infill") == []
    body = server.posts("/v1/completions")[0]["body"]
    # The suffix's own space stands in for the one llama.cpp puts after every piece.
    assert body["prompt"] == "▁<PRE>▁<SUF>+ b\n▁<MID>a = "
    assert (body["repeat_penalty"], body["seed"]) == (1.0, 3)
    assert backend.context_length == 4096 and backend.server_kind == "llama.cpp"


def test_instruct_sends_the_instruct_prompt(make_server):
    server = make_server(routes={COMPLETIONS: stream([chunk("Use a list."), chunk("", "stop")])})
    result = fast(server.url).instruct(InstructRequest(user=" hello ", system="be brief"))
    assert (result.text, result.stop_reason) == ("Use a list.", "eos")
    body = server.posts("/v1/completions")[0]["body"]
    assert body["prompt"] == "[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nhello [/INST]"
    assert "stop" not in body or "<EOT>" not in body["stop"]


# ---- prompt text, token for token ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_tok(tmp_path_factory: pytest.TempPathFactory):
    """A small BPE tokenizer shaped like Code Llama's (byte fallback, the four infilling pieces)."""
    from engine.tokenizer import INFILL_PIECES, Tokenizer

    stdlib = Path(os.__file__).parent
    lines = [ln for name in ("textwrap.py", "bisect.py") for ln in (stdlib / name).read_text().splitlines() if ln.strip()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=400, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=list(INFILL_PIECES), unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return Tokenizer(path)


CASES = [
    ("def width(text):\n    return ", "\n\n\ndef main():\n    pass\n"),
    ("x = ", ""),
    ("", " c"),
    ("# path: a/b.py\nimport os\n\n", "    if  y :\n"),
    ("  indented", "\tfoo(bar)  "),
]


def llamacpp_tokenize(tok, text: str) -> list[int]:
    """What llama.cpp does with prompt text (parse_special, a GGUF with add_space_prefix): BOS, then the
    text split at the control pieces' own text, every run of text between them tokenized with a space
    in front (its SPM tokenizer; the same merges as sentencepiece, checked against llama.cpp itself in
    tests/integration)."""
    from engine.tokenizer import INFILL_PIECES

    ids, run = [tok.bos_id], ""
    i = 0
    while i < len(text):
        piece = next((p for p in INFILL_PIECES if text.startswith(p, i)), None)
        if piece is None:
            run, i = run + text[i], i + 1
            continue
        ids += tok.encode(run) if run else []
        ids.append(tok.sp.piece_to_id(piece))
        run, i = "", i + len(piece)
    return ids + (tok.encode(run) if run else [])


@pytest.mark.parametrize("prefix,suffix", CASES + [("x = ", " + 1\n"), ("  a", "  b"), ("if y", "\n")])
def test_piece_text_tokenizes_in_llamacpp_to_the_engines_prompt_but_for_the_suffixs_space(bpe_tok, prefix, suffix):
    # Exact when the suffix is empty or starts with a space (its space stands in for llama.cpp's);
    # otherwise the suffix is read as " " + suffix: one space more, and nothing else differs.
    from engine.prompts import psm_prompt, spm_prompt

    exact = suffix == "" or suffix.startswith(" ")
    for fmt, build in (("psm", psm_prompt), ("spm", spm_prompt)):
        ids = llamacpp_tokenize(bpe_tok, fim_prompt_text(prefix, suffix, fmt, "piece"))
        assert ids == build(bpe_tok, prefix, suffix if exact else " " + suffix), fmt
        if not exact:
            assert ids != build(bpe_tok, prefix, suffix), fmt


@pytest.mark.parametrize("prefix,suffix", CASES)
def test_prompt_text_tokenizes_to_the_engines_prompt(bpe_tok, prefix, suffix):
    # A server with a sentencepiece/Hugging Face Llama tokenizer adds BOS and reads the text as the
    # engine's own prompt ids: the same prompt the model was trained on.
    from engine.prompts import instruct_prompt, psm_prompt, spm_prompt

    for fmt, ids in (("psm", psm_prompt(bpe_tok, prefix, suffix)), ("spm", spm_prompt(bpe_tok, prefix, suffix))):
        assert bpe_tok.encode(fim_prompt_text(prefix, suffix, fmt), bos=True) == ids, fmt
    assert bpe_tok.encode(instruct_prompt_text(prefix + "?", "sys"), bos=True) == instruct_prompt(
        bpe_tok, prefix + "?", "sys")


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("a\nb<EOT>", ["\n"], eot=True) == ("a", "stop_string")
    assert cut_at_stop("ab <EOT>\n", ["\n"], eot=True) == ("ab", "eot")
    assert cut_at_stop("ab <EOT>", [], eot=False) == ("ab <EOT>", None)
