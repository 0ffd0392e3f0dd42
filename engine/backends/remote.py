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
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.backends.base import (
    BackendError,
    Completion,
    CompletionRequest,
    InstructCapability,
    InstructRequest,
    OnText,
    Placement,
    ShouldStop,
    StopReason,
    Timings,
    Unreachable,
)
from engine.backends.connection import EOF, POLL_S, Client, Exchange, Transient, error_text, parse_server_url
from engine.backends.sse import (
    EOT_TEXT,
    Event,
    EventReader,
    Parser,
    cut_at_stop,
    is_done,
    llamacpp_event,
    openai_event,
)
from engine.prompts import PIECE_MARKERS, PLAIN_MARKERS, fim_prompt_text, instruct_prompt_text

DEFAULT_CONTEXT_LENGTH = 16_384
CHARS_PER_TOKEN = 3.5  # token estimate when the server cannot tokenize (code in Llama's vocabulary)
# The served model is the server's choice and a server does not say whether it follows instructions.
ASSUMED_INSTRUCT = InstructCapability(True, "it is a remote backend (assumed to follow instructions)")


def estimate_tokens(text: str) -> int:
    return 0 if not text else max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class _StreamBroken(Exception):
    """The stream broke after some of the completion had arrived (not retried: text was shown)."""


def _copy_counts(event: Event, timings: Timings) -> None:
    """The token counts an event reports, into the request's timings."""
    for name in ("prompt_tokens", "cached_tokens", "generated_tokens"):
        value = getattr(event, name)
        if isinstance(value, int):
            setattr(timings, name, value)


class RemoteBackend:
    """Implements engine.backends.base.Backend against an OpenAI-compatible server.

    `warnings` holds messages the language server should show once (plain HTTP to another machine).
    `state` says how the last request went ("ready", "retrying: ...", "error: ..."); `on_state`,
    when set, is called with it whenever it changes.
    """

    placement = Placement("remote")

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
        self.http = Client(self.server, self.api_key, connect_timeout, read_timeout)
        self.model = model or None
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
        self._active: set[Exchange] = set()
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

    @property
    def instruct_capability(self) -> InstructCapability:
        return ASSUMED_INSTRUCT

    def cache_bytes(self) -> int | None:
        return None  # the server's own

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

    def _fim_request(self, request: CompletionRequest) -> tuple[str, dict[str, Any], Parser]:
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
            path, parse = "/infill", llamacpp_event
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
            path, parse = "/v1/completions", openai_event
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

        def build() -> tuple[str, dict[str, Any], Parser]:
            if self.model:
                payload["model"] = self.model
            payload.update(self._sampler_options())  # known once the server has been probed
            return "/v1/completions", payload, openai_event

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
        build: Callable[[], tuple[str, dict[str, Any], Parser]],
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
            except Transient as exc:
                if attempt == attempts:
                    message = self._unreachable_message(exc, attempts)
                    self._set_state(f"error: {message}")
                    raise Unreachable(message) from None
                delay = self.backoff * 2 ** (attempt - 1)
                self._set_state(f"retrying: {self.server.origin} {exc}; attempt {attempt + 1} of {attempts} "
                                f"in {delay:.2g} s")
                if self._sleep(delay, stop_now):
                    return Completion("", "cancelled")
                continue
            self._set_state("ready")
            return completion
        raise AssertionError("unreachable")

    def _unreachable_message(self, exc: Transient, attempts: int) -> str:
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        if exc.status is not None:  # it answered, with an error
            return f"remote server {self.server.origin} failed: {exc}{tries}"
        return f"remote server {self.server.origin} unreachable: {exc}{tries}"

    def _stream_once(
        self,
        endpoint: str,
        payload: dict[str, Any],
        parse: Parser,
        stops: list[str],
        fim: bool,
        should_stop: ShouldStop,
        on_text: OnText | None,
        started: float,
    ) -> Completion:
        """One try. Raises Transient for a failure before any text arrived (worth retrying)."""
        exchange = Exchange(self.http, "POST", endpoint, payload)
        self._active.add(exchange)
        text = ""
        reason: StopReason | None = None
        timings = Timings()
        try:
            for raw in self._payloads(exchange, endpoint, should_stop):
                if is_done(raw):
                    reason = "eot" if fim else "eos"  # a server that ends without a finish reason
                    break
                event = self._parse_event(raw, parse, fim)
                if event.text:
                    if not timings.first_token_ms:
                        timings.first_token_ms = 1000 * (time.perf_counter() - started)
                    text, reason = cut_at_stop(text + event.text, stops, fim)
                    if reason is not None:
                        break
                    if on_text is not None:
                        on_text(text)
                _copy_counts(event, timings)
                if event.finish is not None:
                    reason = event.finish
                    break
            else:
                reason = "cancelled"  # the payloads end early only when should_stop() said so
        except _StreamBroken as exc:
            raise BackendError(f"remote server {self.server.origin}: {exc}, after {len(text)} characters of the "
                               "completion; it was dropped") from None
        finally:
            exchange.close()
            self._active.discard(exchange)
        return Completion(text, reason, timings=self._finish_timings(timings, started))

    def _payloads(self, exchange: Exchange, endpoint: str, should_stop: ShouldStop) -> Iterator[str]:
        """The data of each server-sent event, until should_stop() says stop. A stream that breaks raises:
        Transient before the first event (worth retrying), _StreamBroken after."""
        item = exchange.next(should_stop)
        if item is None:
            return
        if isinstance(item, BaseException):
            raise self.http.connection_error(item, endpoint)
        resp = item[1]
        if resp.status != 200:
            body = exchange.next(lambda: False)
            self.http.raise_for_status(resp, body[1] if isinstance(body, tuple) else b"", endpoint)
        reader, seen_event = EventReader(), False
        while True:
            item = exchange.next(should_stop)
            if item is None:
                return
            if isinstance(item, BaseException):
                if not seen_event:
                    raise self.http.connection_error(item, endpoint)
                raise _StreamBroken(self.http.describe(item))
            raw = reader.feed(b"\n" if item is EOF else item)  # a last event may lack its blank line
            if raw is not None:
                seen_event = True
                yield raw
            if item is EOF:
                if not seen_event:
                    raise Transient(self._no_answer(), resp.status)
                raise _StreamBroken("it ended the stream early, without its end marker")

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

    def _parse_event(self, raw: str, parse: Parser, fim: bool) -> Event:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            raise BackendError(f"remote server {self.server.origin} sent an unreadable event: {raw[:200]!r}") from None
        if not isinstance(obj, dict):
            raise BackendError(f"remote server {self.server.origin} sent an unexpected event: {raw[:200]!r}")
        if obj.get("error"):
            raise BackendError(f"remote server {self.server.origin}: {error_text(obj)}")
        return parse(obj, fim)

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
            except Transient as exc:
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
        """GET a JSON document; None when the server has no such endpoint. Raises Transient when down."""
        try:
            return self.http.call("GET", endpoint)
        except Transient as exc:
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
                tokens = read(self.http.call("POST", endpoint, body("x = 1")))
                if isinstance(tokens, list) and tokens:
                    if endpoint == "/extras/tokenize" and self.server_kind == "openai-compatible":
                        self.server_kind = "llama-cpp-python"
                    return self._kept_alive(endpoint, body, read)
            except (BackendError, Transient, OSError, http.client.HTTPException, ValueError, KeyError,
                    TypeError):
                continue
        return None

    def _kept_alive(self, endpoint: str, body: Callable[[str], dict[str, Any]],
                    read: Callable[[Any], list[int] | int]) -> Callable[[str], list[int] | int]:
        def tokenize(text: str) -> list[int] | int:
            with self._tokenize_lock:
                if self._tokenize_conn is None:
                    try:
                        self._tokenize_conn = self.http.connect(self.http.connect_timeout)
                    except Transient as exc:
                        raise OSError(str(exc)) from None
                try:
                    return read(self.http.call("POST", endpoint, body(text), conn=self._tokenize_conn))
                except (KeyError, TypeError) as exc:
                    raise ValueError(f"unexpected tokenize answer ({exc})") from None
                except (OSError, http.client.HTTPException):
                    # The kept-alive connection may have been closed by the server: one fresh try.
                    self._drop_tokenize_conn(locked=True)
                    self._tokenize_conn = self.http.connect(self.http.connect_timeout)
                    return read(self.http.call("POST", endpoint, body(text), conn=self._tokenize_conn))

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
