"""A backend that asks a serving engine elsewhere (vLLM, llama.cpp's server, TGI, ...) for completions.

The language server keeps doing what it does locally (context building, caching, post-processing);
only token generation moves to the server. Standard library only: http.client, a helper thread per
request, json.

What goes over the wire:
- `POST /v1/completions` with the prompt as TEXT in Code Llama's layout (PSM
  `<PRE> {prefix} <SUF>{suffix} <MID>`, SPM `<PRE> <SUF>{suffix} <MID> {prefix}`); the server adds
  BOS. Tokenizers disagree on how the infilling pieces are spelt in text: a Hugging Face or
  sentencepiece tokenizer reads " <PRE>" as the piece `▁<PRE>`; llama.cpp (its server and
  llama-cpp-python's) reads `<PRE>` as four plain tokens and only matches the piece text `▁<PRE>`
  itself. When the server can tokenize, `_probe` asks it which spelling is one token (see
  fim_prompt_text for what llama.cpp then does with the text between the pieces).
- llama.cpp's server (recognised by its `/props`) whose tokenizer does not read `▁<SUF>` as one token:
  `POST /infill` with `input_prefix`/`input_suffix`; the server puts its FIM token ids around them, in
  PSM order (its `--spm-infill` order, `<SUF>{suffix}<PRE>{prefix}<MID>`, is not Code Llama's SPM), and
  keeps at most 3/4 of a batch of prefix tokens. The text prompt has neither limit, so it is preferred.
- llama.cpp's samplers default to a repeat penalty (llama-cpp-python: 1.1) and top-k/min-p filters the
  local engine does not have; requests to llama.cpp switch them off, so temperature 0 is plain greedy.

Every response is streamed (server-sent events). The caller's `should_stop()` is polled while waiting
for the next event; cancelling closes the connection, which is how these servers learn to stop.
Transient failures (refused connection, 429/5xx, a timeout) before any text arrived are retried with
exponential backoff; everything else becomes a `BackendError` whose message says what to fix.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.backends.base import (
    BackendError,
    Completion,
    CompletionRequest,
    InstructRequest,
    OnText,
    ShouldStop,
    StopReason,
    Timings,
)

DEFAULT_CONTEXT_LENGTH = 16_384
CHARS_PER_TOKEN = 3.5  # token estimate when the server cannot tokenize (code in Llama's vocabulary)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
EOT_TEXT = "<EOT>"
POLL_S = 0.02  # how often should_stop() is asked while waiting for the server

# How the infilling pieces are written in prompt text (see the module docstring).
PLAIN_MARKERS = "plain"  # "<PRE> {prefix} <SUF>{suffix} <MID>": sentencepiece, Hugging Face tokenizers
PIECE_MARKERS = "piece"  # "▁<PRE>{prefix}▁<SUF>{suffix}▁<MID>": llama.cpp (control tokens by piece text)

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


# ---- prompt text (pure) ---------------------------------------------------------------------------


def fim_prompt_text(prefix: str, suffix: str, fim_format: str, markers: str = PLAIN_MARKERS) -> str:
    """The text of a Code Llama infilling prompt, without BOS (the server adds it).

    PLAIN tokenizes, with a sentencepiece Llama tokenizer, to exactly engine.prompts' ids:
    " <PRE>" is the `▁<PRE>` piece, " {prefix}" is encode(prefix) (its implicit leading space), and
    the suffix follows `<SUF>` directly (encode_infill: no space of its own).
    PIECE writes the pieces as llama.cpp matches them. llama.cpp puts a space in front of every run of
    text that follows a control piece (the GGUF's add_space_prefix): right for the prefix (encode(prefix)
    has it), one too many for the suffix. A suffix that starts with a space gives that space up to the
    one llama.cpp adds, which makes the ids exact; so does an empty suffix. Any other suffix reaches the
    model with a space in front (a lone `▁` before a newline, `▁x` for `x`): no text can say otherwise,
    only token ids could.
    """
    if fim_format not in ("psm", "spm"):
        raise ValueError(f"unknown FIM format {fim_format!r} (expected 'psm' or 'spm')")
    if markers == PIECE_MARKERS:
        if suffix.startswith(" ") and len(suffix) > 1:
            suffix = suffix[1:]
        if fim_format == "psm":
            return f"▁<PRE>{prefix}▁<SUF>{suffix}▁<MID>"
        return f"▁<PRE>▁<SUF>{suffix}▁<MID>{prefix}"
    # An empty prefix takes no tokens (sentencepiece adds its implicit space to non-empty text only).
    spaced = f" {prefix}" if prefix else ""
    if fim_format == "psm":
        return f"<PRE>{spaced} <SUF>{suffix} <MID>"
    return f"<PRE> <SUF>{suffix} <MID>{spaced}"


def instruct_prompt_text(user: str, system: str | None = None) -> str:
    """Code Llama – Instruct, one turn, as text without BOS (same layout as engine.prompts.instruct_prompt)."""
    content = user.strip()
    if system:
        content = f"{B_SYS}{system.strip()}{E_SYS}{content}"
    return f"{B_INST} {content} {E_INST}"


def cut_at_stop(text: str, stops: list[str], eot: bool) -> tuple[str, StopReason | None]:
    """`text` up to the earliest stop string (or `<EOT>` when `eot`), and why it was cut (None: not)."""
    best, reason = len(text) + 1, None
    for s in stops:
        i = text.find(s) if s else -1
        if 0 <= i < best:
            best, reason = i, "stop_string"
    if eot:
        i = text.find(EOT_TEXT)
        if 0 <= i < best:
            # The piece is `▁<EOT>`: a server that prints it shows its space too; that space is not code.
            best, reason = (i - 1 if i > 0 and text[i - 1] in " ▁" else i), "eot"
    return (text[:best], reason) if reason else (text, None)  # type: ignore[return-value]


def estimate_tokens(text: str) -> int:
    return 0 if not text else max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


# ---- the server's address -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerURL:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/some/prefix", without the trailing /v1

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def path(self, endpoint: str) -> str:
        return self.base_path + endpoint

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_server_url(url: str) -> ServerURL:
    """`http(s)://host[:port][/prefix][/v1]` -> ServerURL. Raises BackendError for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"codellama.backend = {url!r} is not an http:// or https:// URL of a server")
    if parts.username or parts.password:
        raise BackendError("codellama.backend must not hold credentials; put the key in codellama.apiKey")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BackendError(f"codellama.backend = {url!r}: bad port ({exc})") from exc
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return ServerURL(parts.scheme, parts.hostname, port, path)


# ---- one streamed HTTP exchange -----------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (the server may be restarting or overloaded)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when the server answered


_EOF = object()


class _Exchange:
    """One HTTP request whose response arrives, line by line, on a queue filled by a helper thread.

    The caller polls the queue and `should_stop()` in turn, so it can give up at any moment, even while
    the server is still prefilling and has sent nothing: `close()` shuts the socket down, which ends the
    helper thread and tells the server the client is gone.
    """

    def __init__(self, backend: RemoteBackend, method: str, path: str, payload: dict[str, Any]) -> None:
        self.backend = backend
        self.method, self.path, self.payload = method, path, payload
        self.items: queue.Queue[Any] = queue.Queue()
        self.conn: http.client.HTTPConnection | None = None
        # Kept apart: http.client hands an HTTP/1.0 response its socket and forgets it (conn.sock = None).
        self.sock: socket.socket | None = None
        self.resp: http.client.HTTPResponse | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="remote-backend-http", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn = self.backend._connect(self.backend.read_timeout)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.conn, self.sock = conn, conn.sock
            self.backend._send(conn, self.method, self.path, self.payload, stream=True)
            resp = conn.getresponse()
            with self._lock:
                self.resp = resp
                if self._closed:
                    resp.close()
                    return
            self.items.put(("status", resp))
            if resp.status != 200:
                self.items.put(("body", resp.read(8192)))
                return
            while True:
                line = resp.readline(1 << 20)
                if not line:
                    self.items.put(_EOF)
                    return
                self.items.put(line)
        except BaseException as exc:  # handed to the caller, who decides what it means
            self.items.put(exc)

    def next(self, should_stop: ShouldStop) -> Any:
        """The next item (a response, a line, _EOF or an exception); None once should_stop() says so."""
        while True:
            if should_stop():
                return None
            try:
                return self.items.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Hang up: shutdown() wakes the helper thread blocked in recv(); closing the response and the
        connection drops the last references to the socket, so it really closes (the server sees it)."""
        with self._lock:
            self._closed = True
            conn, sock, resp = self.conn, self.sock, self.resp
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for part in (resp, conn, sock):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass


@dataclass
class _Event:
    """What one streamed chunk says, whatever the server's dialect."""

    text: str
    finish: StopReason | None = None  # set on the last chunk
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    generated_tokens: int | None = None


_Parser = Callable[[dict[str, Any], bool], _Event]


def _openai_event(obj: dict[str, Any], fim: bool) -> _Event:
    choices = obj.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    event = _Event(text=str(choice.get("text") or ""))
    finish = choice.get("finish_reason")
    if finish == "length":
        event.finish = "max_tokens"
    elif finish is not None:
        # vLLM says what stopped it: the stop string, a token id, or None for EOS.
        why = choice.get("stop_reason")
        if isinstance(why, str):
            event.finish = "eot" if EOT_TEXT in why else "stop_string"
        else:
            event.finish = "eot" if fim else "eos"
    usage = obj.get("usage")
    if isinstance(usage, dict):
        event.prompt_tokens = usage.get("prompt_tokens")
        event.generated_tokens = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            event.cached_tokens = details.get("cached_tokens")
    _llamacpp_timings(obj, event)
    return event


def _llamacpp_event(obj: dict[str, Any], fim: bool) -> _Event:
    """llama.cpp's native /infill and /completion chunks: {"content", "stop", "stop_type", ...}."""
    event = _Event(text=str(obj.get("content") or ""))
    if obj.get("stop"):
        kind = obj.get("stop_type") or (
            "limit" if obj.get("stopped_limit") else "word" if obj.get("stopped_word") else "eos"
        )
        if kind == "limit":
            event.finish = "max_tokens"
        elif kind == "word":
            event.finish = "eot" if EOT_TEXT in str(obj.get("stopping_word") or "") else "stop_string"
        else:
            event.finish = "eot" if fim else "eos"
    _llamacpp_timings(obj, event)
    return event


def _llamacpp_timings(obj: dict[str, Any], event: _Event) -> None:
    timings = obj.get("timings")
    if isinstance(timings, dict) and "prompt_n" in timings:
        cached = int(timings.get("cache_n") or obj.get("tokens_cached") or 0)
        event.cached_tokens = cached
        event.prompt_tokens = int(timings.get("prompt_n") or 0) + cached
        event.generated_tokens = timings.get("predicted_n")


# ---- the backend --------------------------------------------------------------------------------


class RemoteBackend:
    """Implements engine.backends.base.Backend against an OpenAI-compatible server.

    `warnings` holds messages the language server should show once (plain HTTP to another machine).
    `state` says how the last request went ("ready", "retrying: ...", "error: ..."); `on_state`,
    when set, is called with it whenever it changes.
    """

    device = "remote"  # engine_manager.backend_device reads these for the status bar
    dtype = None

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        model: str | None = None,
        context_length: int | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.25,
        use_infill: bool | None = None,
        markers: str | None = None,
        probe: bool = True,
        count_rtt_limit: float = 0.02,
    ) -> None:
        self.url = url
        self.server = parse_server_url(url)
        self.api_key = api_key or None
        self.model = model or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._context_setting = context_length
        self._context_probed: int | None = None
        self._use_infill = use_infill  # None: when the server is llama.cpp's
        self._markers = markers  # None: as the server's tokenizer says, plain by default
        self.server_kind = "unknown"  # "llama.cpp", "vllm", "llama-cpp-python", "openai-compatible"
        self._tokenize: Callable[[str], list[int] | int] | None = None
        self._tokenize_conn: http.client.HTTPConnection | None = None
        self._tokenize_lock = threading.Lock()
        self._tokenize_retry_at = 0.0
        # count_tokens is called once per new line of context: through the server only when a round
        # trip is cheap (a LAN), else 1000 lines at 50 ms would hold the first completion for a minute.
        self.count_rtt_limit = count_rtt_limit
        self.counts_on_server = False
        self._probed = False
        self._probe_lock = threading.Lock()
        self._active: set[_Exchange] = set()
        self._closed = False
        self.state = "unknown"
        self.on_state: Callable[[str], None] | None = None
        self.warnings: list[str] = []
        if self.server.scheme == "http" and not self.server.loopback:
            self.warnings.append(
                f"codellama.backend {self.server.origin} uses plain http:// to another machine: your code"
                + (" and the API key travel" if self.api_key else " travels")
                + " unencrypted over the network. Use https:// (or an SSH tunnel to localhost)."
            )
        if probe:
            self._ensure_probed()

    # ---- Backend properties -------------------------------------------------------------------

    @property
    def description(self) -> str:
        name = self.model or "model"
        return f"remote: {name} at {self.server.origin}{self.server.base_path} ({self.server_kind})"

    @property
    def context_length(self) -> int:
        return self._context_setting or self._context_probed or DEFAULT_CONTEXT_LENGTH

    @property
    def can_infill(self) -> bool:
        return True  # Code Llama base models; a server cannot tell us otherwise

    def count_tokens(self, text: str) -> int:
        """Through the server's tokenizer when it has one (llama.cpp, vLLM, llama-cpp-python), on one
        kept-alive connection; a chars/3.5 estimate when it has none or does not answer. Never raises:
        the context builder calls it for every line."""
        if not text:
            return 0
        if self.counts_on_server and self._tokenize is not None and time.monotonic() >= self._tokenize_retry_at:
            try:
                result = self._tokenize(text)
                return result if isinstance(result, int) else len(result)
            except Exception:
                self._tokenize_retry_at = time.monotonic() + 30.0  # server away: estimate for a while
                self._drop_tokenize_conn()
        return estimate_tokens(text)

    # ---- requests -----------------------------------------------------------------------------

    def complete(
        self, request: CompletionRequest, should_stop: ShouldStop | None = None, on_text: OnText | None = None
    ) -> Completion:
        return self._generate(lambda: self._fim_request(request), [s for s in request.stop if s], True,
                              should_stop, on_text)

    def _fim_request(self, request: CompletionRequest) -> tuple[str, dict[str, Any], _Parser]:
        """Endpoint, body and chunk parser of a FIM request (they depend on what the probe found)."""
        common: dict[str, Any] = {"temperature": request.temperature, "top_p": request.top_p, "stream": True,
                                  **self._sampler_options()}
        if request.seed is not None:
            common["seed"] = request.seed
        stops = [s for s in request.stop if s]
        if self._use_infill:
            payload = {
                "input_prefix": request.prefix,
                "input_suffix": request.suffix,
                "input_extra": [],
                "prompt": "",
                "n_predict": request.max_new_tokens,
                "stop": stops,
                "cache_prompt": True,
                **common,
            }
            path, parse = "/infill", _llamacpp_event
        else:
            markers = self._markers or PLAIN_MARKERS
            payload = {
                "prompt": fim_prompt_text(request.prefix, request.suffix, request.fim_format, markers),
                "max_tokens": request.max_new_tokens,
                "stop": stops + [EOT_TEXT],
                **common,
            }
            if self.model:
                payload["model"] = self.model
            path, parse = "/v1/completions", _openai_event
        return path, payload, parse

    def instruct(
        self, request: InstructRequest, should_stop: ShouldStop | None = None, on_text: OnText | None = None
    ) -> Completion:
        stops = [s for s in request.stop if s]
        payload: dict[str, Any] = {
            "prompt": instruct_prompt_text(request.user, request.system),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
        }
        if stops:
            payload["stop"] = stops
        if request.seed is not None:
            payload["seed"] = request.seed

        def build() -> tuple[str, dict[str, Any], _Parser]:
            if self.model:
                payload["model"] = self.model
            payload.update(self._sampler_options())  # known once the server has been probed
            return "/v1/completions", payload, _openai_event

        return self._generate(build, stops, False, should_stop, on_text)

    @property
    def is_llamacpp(self) -> bool:
        return self.server_kind in ("llama.cpp", "llama-cpp-python")

    def _sampler_options(self) -> dict[str, Any]:
        """What makes llama.cpp sample as the local engine does: no repeat penalty (llama-cpp-python's
        server applies 1.1 unless told), no top-k or min-p filter (llama.cpp: 40 and 0.05)."""
        if not self.is_llamacpp:
            return {}  # vLLM and others: their defaults are off already; unknown fields may be refused
        return {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}

    def warm(self, request: CompletionRequest, should_stop: ShouldStop | None = None) -> None:
        return None  # the server keeps its own prefix cache

    def close(self) -> None:
        self._closed = True
        for exchange in list(self._active):
            exchange.close()
        self._drop_tokenize_conn()

    # ---- generation ---------------------------------------------------------------------------

    def _generate(
        self,
        build: Callable[[], tuple[str, dict[str, Any], _Parser]],
        stops: list[str],
        fim: bool,
        should_stop: ShouldStop | None,
        on_text: OnText | None,
    ) -> Completion:
        stop_now: ShouldStop = should_stop or (lambda: False)
        started = time.perf_counter()
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            if self._closed:
                raise BackendError(f"remote backend {self.server.origin} was closed")
            if not self._probed:
                self._ensure_probed()  # down at the last probe: ask what it is now
            endpoint, payload, parse = build()
            try:
                completion = self._stream_once(endpoint, payload, parse, stops, fim, stop_now, on_text, started)
            except _Transient as exc:
                if attempt == attempts:
                    message = self._unreachable_message(exc, attempts)
                    self._set_state(f"error: {message}")
                    raise BackendError(message) from None
                delay = self.backoff * 2 ** (attempt - 1)
                self._set_state(f"retrying: {self.server.origin} {exc}; attempt {attempt + 1} of {attempts} "
                                f"in {delay:.2g} s")
                if self._sleep(delay, stop_now):
                    return Completion("", "cancelled")
                continue
            self._set_state("ready")
            return completion
        raise AssertionError("unreachable")

    def _unreachable_message(self, exc: _Transient, attempts: int) -> str:
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        if exc.status is not None:  # it answered, with an error
            return f"remote server {self.server.origin} failed: {exc}{tries}"
        return f"remote server {self.server.origin} unreachable: {exc}{tries}"

    def _stream_once(
        self,
        endpoint: str,
        payload: dict[str, Any],
        parse: _Parser,
        stops: list[str],
        fim: bool,
        should_stop: ShouldStop,
        on_text: OnText | None,
        started: float,
    ) -> Completion:
        """One try. Raises _Transient for a failure before any text arrived (worth retrying)."""
        exchange = _Exchange(self, "POST", self.server.path(endpoint), payload)
        self._active.add(exchange)
        text, reason, seen_event = "", None, False
        timings = Timings()
        data: list[str] = []
        try:
            item = exchange.next(should_stop)
            if item is None:
                return Completion("", "cancelled", timings=self._finish_timings(timings, started))
            if isinstance(item, BaseException):
                raise self._connection_error(item, endpoint)
            resp = item[1]
            if resp.status != 200:
                body = exchange.next(lambda: False)
                self._raise_for_status(resp, body[1] if isinstance(body, tuple) else b"", endpoint)
            eof = False
            while reason is None:
                if eof:
                    if not seen_event:
                        raise _Transient(self._no_answer(), resp.status)
                    raise BackendError(
                        f"remote server {self.server.origin} ended the stream early (after {len(text)} "
                        "characters, without its end marker); the completion was dropped")
                item = exchange.next(should_stop)
                if item is None:
                    reason = "cancelled"
                    break
                if isinstance(item, BaseException):
                    if not seen_event:
                        raise self._connection_error(item, endpoint)
                    raise BackendError(f"remote server {self.server.origin}: {self._describe(item)} after "
                                       f"{len(text)} characters of the completion; it was dropped")
                if item is _EOF:
                    eof, item = True, b"\n"  # a last event may lack its blank line
                line = item.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                    continue
                if line or not data:
                    continue  # comments (": ping"), "event:" and "id:" fields, stray blank lines
                raw, data = "\n".join(data), []
                seen_event = True
                if raw.strip() == "[DONE]":
                    reason = "eot" if fim else "eos"  # a server that ends without a finish reason
                    break
                event = self._parse_event(raw, parse, fim)
                if event.text:
                    if not timings.first_token_ms:
                        timings.first_token_ms = 1000 * (time.perf_counter() - started)
                    text += event.text
                    cut, why = cut_at_stop(text, stops, fim)
                    if why is not None:
                        text, reason = cut, why
                        break
                    if on_text is not None:
                        on_text(text)
                for name in ("prompt_tokens", "cached_tokens", "generated_tokens"):
                    value = getattr(event, name)
                    if isinstance(value, int):
                        setattr(timings, name, value)
                if event.finish is not None:
                    reason = event.finish
        finally:
            exchange.close()
            self._active.discard(exchange)
        return Completion(text, reason, timings=self._finish_timings(timings, started))

    def _no_answer(self) -> str:
        """Why a stream that began with 200 ended before its first event (retried: a server going down
        does this too)."""
        message = "the server closed the connection without answering"
        if self.server_kind == "llama-cpp-python":
            # Its error (ValueError: Requested tokens exceed context window) is raised inside the stream.
            message += (" (llama-cpp-python does this when the prompt does not fit its context: start it with"
                        " a larger --n_ctx, or lower codellama.maxContextTokens)")
        return message

    @staticmethod
    def _finish_timings(timings: Timings, started: float) -> Timings:
        timings.total_ms = 1000 * (time.perf_counter() - started)
        if timings.first_token_ms:
            timings.decode_ms = timings.total_ms - timings.first_token_ms
        return timings

    def _parse_event(self, raw: str, parse: _Parser, fim: bool) -> _Event:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            raise BackendError(f"remote server {self.server.origin} sent an unreadable event: {raw[:200]!r}") from None
        if not isinstance(obj, dict):
            raise BackendError(f"remote server {self.server.origin} sent an unexpected event: {raw[:200]!r}")
        if obj.get("error"):
            raise BackendError(f"remote server {self.server.origin}: {_error_text(obj)}")
        return parse(obj, fim)

    # ---- HTTP ---------------------------------------------------------------------------------

    def _connect(self, read_timeout: float) -> http.client.HTTPConnection:
        """An open connection to the configured host (raises _Transient or BackendError)."""
        server = self.server
        conn: http.client.HTTPConnection
        if server.scheme == "https":
            conn = http.client.HTTPSConnection(server.host, server.port, timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise BackendError(f"remote server {server.origin}: TLS failed ({exc.reason or exc})") from None
        except socket.gaierror as exc:
            conn.close()
            raise _Transient(f"cannot resolve host {server.host!r} ({exc.strerror})") from None
        except ConnectionRefusedError:
            conn.close()
            raise _Transient("connection refused") from None
        except TimeoutError:
            conn.close()
            raise _Transient(f"no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:
            conn.close()
            raise _Transient(exc.strerror or str(exc)) from None
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        return conn

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str, payload: dict[str, Any] | None,
              stream: bool = False) -> None:
        headers = {"Accept": "text/event-stream" if stream else "application/json",
                   "User-Agent": "codellama-local"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            # Only ever on this connection, which goes to the configured host: redirects are not followed.
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn.request(method, path, body=body, headers=headers)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no data for {self.read_timeout:g} s (read timeout)"
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return "the server closed the connection"
        if isinstance(exc, http.client.IncompleteRead):
            return "the server closed the connection in the middle of a chunk"
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        return f"{type(exc).__name__}: {exc}"

    def _connection_error(self, exc: BaseException, endpoint: str) -> Exception:
        if isinstance(exc, (_Transient, BackendError)):
            return exc
        if isinstance(exc, TimeoutError):
            return _Transient(f"no response within {self.read_timeout:g} s (read timeout)")
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return _Transient(self._describe(exc))
        return BackendError(f"remote server {self.server.origin}: {endpoint}: {self._describe(exc)}")

    def _raise_for_status(self, resp: http.client.HTTPResponse, body: bytes, endpoint: str) -> None:
        status, origin = resp.status, self.server.origin
        detail = _error_text(_json_or_text(body)) or resp.reason
        if 300 <= status < 400:
            where = resp.getheader("Location") or "another address"
            raise BackendError(
                f"remote server {origin} redirected {endpoint} to {where}; redirects are not followed (the API "
                "key goes to the configured host only). Set codellama.backend to the final URL.")
        if status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status} ({detail})", status)
        if status in (401, 403):
            hint = "check codellama.apiKey" if self.api_key else "the server wants an API key: set codellama.apiKey"
            raise BackendError(f"remote server {origin} refused the request: HTTP {status} ({detail}); {hint}")
        if status == 404:
            raise BackendError(f"remote server {origin} has no {endpoint} (HTTP 404: {detail}); is "
                               "codellama.backend the base URL of an OpenAI-compatible server?")
        raise BackendError(f"remote server {origin}: {endpoint} failed with HTTP {status} ({detail})")

    def _call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None,
              conn: http.client.HTTPConnection | None = None, timeout: float | None = None) -> Any:
        """One small JSON request (probes, tokenize). Returns the decoded body; raises on any failure."""
        own = conn is None
        if conn is None:
            conn = self._connect(timeout or self.connect_timeout)
        try:
            self._send(conn, method, self.server.path(endpoint), payload)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            if own:
                conn.close()
        if resp.status != 200:
            self._raise_for_status(resp, body, endpoint)
        return json.loads(body)

    def _sleep(self, seconds: float, should_stop: ShouldStop) -> bool:
        """Wait, asking should_stop() meanwhile; True when it said stop."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if should_stop():
                return True
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))
        return should_stop()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                try:
                    self.on_state(state)
                except Exception:
                    pass

    # ---- what the server is -------------------------------------------------------------------

    def _ensure_probed(self) -> None:
        """Learn once what the server offers; a server that was down is asked again on the next request."""
        if self._probed:
            return
        with self._probe_lock:
            if self._probed:
                return
            try:
                self._probe()
                self._probed = True
            except _Transient as exc:
                self._set_state(f"error: {self._unreachable_message(exc, 1)}")
            except (BackendError, OSError, http.client.HTTPException, ValueError) as exc:
                self._probed = True  # it answered, only not as we hoped: go on with the defaults
                self._set_state(f"ready (probe: {exc})")

    def _probe(self) -> None:
        props = self._try_get("/props")
        if isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props):
            self.server_kind = "llama.cpp"
            settings = props.get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx") or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                self._context_probed = n_ctx
        models = self._try_get("/v1/models")
        entries = models.get("data") if isinstance(models, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            first = entries[0]
            if self.model is None and isinstance(first.get("id"), str):
                self.model = first["id"]
            if first.get("owned_by") == "vllm":
                self.server_kind = "vllm"
            length = first.get("max_model_len") or (first.get("meta") or {}).get("n_ctx_train")
            if self._context_probed is None and isinstance(length, int) and length > 0:
                self._context_probed = length
            if self.server_kind == "unknown":
                self.server_kind = "openai-compatible"
        self._tokenize = self._find_tokenizer()
        if self._tokenize is not None:
            if self._markers is None:
                self._markers = self._pick_markers()
            self.counts_on_server = self._round_trip() <= self.count_rtt_limit
        if self._use_infill is None:
            # llama.cpp's server: the text prompt when its tokenizer reads the pieces (Code Llama's SPM,
            # no prefix cut at 3/4 of a batch); /infill, where the server places them by id, otherwise.
            self._use_infill = self.server_kind == "llama.cpp" and self._markers != PIECE_MARKERS
        self._set_state("ready")

    def _try_get(self, endpoint: str) -> Any:
        """GET a JSON document; None when the server has no such endpoint. Raises _Transient when down."""
        try:
            return self._call("GET", endpoint)
        except _Transient as exc:
            if exc.status is None:
                raise
            return None
        except BackendError:
            return None
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def _find_tokenizer(self) -> Callable[[str], list[int] | int] | None:
        candidates: list[tuple[str, Callable[[str], dict[str, Any]], Callable[[Any], list[int] | int]]] = [
            # llama.cpp: special pieces parsed, no BOS
            ("/tokenize", lambda t: {"content": t, "add_special": False, "parse_special": True},
             lambda r: r["tokens"]),
            # vLLM
            ("/tokenize", lambda t: {"prompt": t, "add_special_tokens": False,
                                     **({"model": self.model} if self.model else {})},
             lambda r: r["tokens"]),
            # llama-cpp-python (adds BOS: one token more than the text takes)
            ("/extras/tokenize", lambda t: {"input": t}, lambda r: r["tokens"][1:]),
        ]
        if self.server_kind != "llama.cpp":
            candidates = candidates[1:]
        for endpoint, body, read in candidates:
            try:
                tokens = read(self._call("POST", endpoint, body("x = 1")))
                if isinstance(tokens, list) and tokens:
                    if endpoint == "/extras/tokenize" and self.server_kind == "openai-compatible":
                        self.server_kind = "llama-cpp-python"
                    return self._kept_alive(endpoint, body, read)
            except (BackendError, _Transient, OSError, http.client.HTTPException, ValueError, KeyError,
                    TypeError):
                continue
        return None

    def _kept_alive(self, endpoint: str, body: Callable[[str], dict[str, Any]],
                    read: Callable[[Any], list[int] | int]) -> Callable[[str], list[int] | int]:
        def tokenize(text: str) -> list[int] | int:
            with self._tokenize_lock:
                if self._tokenize_conn is None:
                    try:
                        self._tokenize_conn = self._connect(self.connect_timeout)
                    except _Transient as exc:
                        raise OSError(str(exc)) from None
                try:
                    return read(self._call("POST", endpoint, body(text), conn=self._tokenize_conn))
                except (KeyError, TypeError) as exc:
                    raise ValueError(f"unexpected tokenize answer ({exc})") from None
                except (OSError, http.client.HTTPException):
                    # The kept-alive connection may have been closed by the server: one fresh try.
                    self._drop_tokenize_conn(locked=True)
                    self._tokenize_conn = self._connect(self.connect_timeout)
                    return read(self._call("POST", endpoint, body(text), conn=self._tokenize_conn))

        return tokenize

    def _drop_tokenize_conn(self, locked: bool = False) -> None:
        conn, self._tokenize_conn = self._tokenize_conn, None
        if conn is not None:
            conn.close()

    def _pick_markers(self) -> str:
        """The spelling of the infilling pieces that the server's tokenizer reads as one token."""
        assert self._tokenize is not None
        try:
            plain = self._count_raw("<SUF>")
            piece = self._count_raw("▁<SUF>")
        except (OSError, http.client.HTTPException, ValueError, BackendError):
            return PLAIN_MARKERS
        return PIECE_MARKERS if piece < plain else PLAIN_MARKERS

    def _round_trip(self) -> float:
        """Seconds a tokenize call takes on the kept-alive connection (best of three)."""
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            try:
                self._count_raw("def f(x):\n    return x\n")
            except Exception:
                return math.inf
            best = min(best, time.perf_counter() - started)
        return best

    def _count_raw(self, text: str) -> int:
        assert self._tokenize is not None
        result = self._tokenize(text)
        return result if isinstance(result, int) else len(result)


def _json_or_text(body: bytes) -> Any:
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]


def _error_text(obj: Any) -> str:
    """The human part of an error body: OpenAI {"error": {"message"}}, FastAPI {"detail"}, plain text."""
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("msg") or json.dumps(err)[:300])
        if isinstance(err, list) and err:
            return str(err[0].get("msg") if isinstance(err[0], dict) else err[0])[:300]
        if err is not None:
            return str(err)[:300]
        return json.dumps(obj)[:300]
    return str(obj)[:300] if obj else ""
