"""A scripted stand-in for the engine, for unit tests of the LSP layer only (fast, no model).

Every behaviour tested with it is also tested end to end with the real engine (test_e2e_*.py).
It follows the Backend protocol: streams its text through `on_text`, checks `should_stop` between
"decode steps" (one character each), and honours `request.stop`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from engine.backends.base import (
    Completion,
    CompletionRequest,
    InstructCapability,
    InstructRequest,
    Placement,
    Timings,
)

_TOKEN = re.compile(r"\w+|\s|[^\w\s]")


class FakeBackend:
    description = "fake: scripted (cpu, float32)"
    placement = Placement("cpu", "float32")
    state = "ready"
    context_length = 16384
    can_infill = True

    def __init__(self, script: str | Callable[[CompletionRequest], str] = "", step_s: float = 0.0,
                 answer: str | Callable[[InstructRequest], str] = "", max_chars: int | None = None,
                 follows_instructions: bool = False) -> None:
        self.script = script
        self.answer = answer  # what `instruct` writes
        self.step_s = step_s
        self.max_chars = max_chars  # the token limit, one character a token: stop reason "max_tokens"
        self.requests: list[CompletionRequest] = []
        self.instruct_requests: list[InstructRequest] = []
        self.results: list[Completion] = []
        self.started = threading.Event()
        self.closed = False
        self.on_state: Callable[[str], None] | None = None
        self.warnings: list[str] = []
        # Like the default model: a completion model unless a test says otherwise.
        self.instruct_capability = InstructCapability(
            follows_instructions, f"it is a scripted stand-in told it {'does' if follows_instructions else 'does not'}")

    def cache_bytes(self) -> int | None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))

    def complete(self, request, should_stop=None, on_text=None) -> Completion:  # type: ignore[no-untyped-def]
        self.requests.append(request)
        self.started.set()
        text = self.script(request) if callable(self.script) else self.script
        out, reason = self._stream(text, request, should_stop, on_text)
        prompt = self.count_tokens(request.prefix + request.suffix)
        result = Completion(out, reason, timings=Timings(prompt_tokens=prompt, generated_tokens=len(out)))  # type: ignore[arg-type]
        self.results.append(result)
        return result

    def _stream(self, text, request, should_stop, on_text) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        """One character per decode step, like the engine: stop checks before, on_text after each."""
        out = ""
        reason = "eot"
        for ch in text:
            if self.max_chars is not None and len(out) >= self.max_chars:
                reason = "max_tokens"
                break
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
            out += ch
            hit = next((s for s in request.stop if s and s in out), None)
            if hit:
                out = out[: out.index(hit)]
                reason = "stop_string"
                break
            if on_text is not None:
                on_text(out)
            if self.step_s:
                time.sleep(self.step_s)
        return out, reason

    def instruct(self, request, should_stop=None, on_text=None) -> Completion:  # type: ignore[no-untyped-def]
        self.instruct_requests.append(request)
        self.started.set()
        text = self.answer(request) if callable(self.answer) else self.answer
        limited = text[: request.max_new_tokens]  # one character per token
        out, reason = self._stream(limited, request, should_stop, on_text)
        if reason == "eot" and len(limited) < len(text):
            reason = "max_tokens"
        return Completion(out, reason, tokens=list(range(len(out))))  # type: ignore[arg-type]

    def warm(self, request, should_stop=None) -> None:  # type: ignore[no-untyped-def]
        pass

    def close(self) -> None:
        self.closed = True
