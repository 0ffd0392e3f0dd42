"""Server-sent events from an OpenAI-compatible or llama.cpp server, read into one `Event` shape.

Pure: lines in, event payloads and `Event`s out. The HTTP side lives in connection.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.backends.base import StopReason

EOT_TEXT = "<EOT>"


@dataclass
class Event:
    """What one streamed chunk says, whatever the server's dialect."""

    text: str
    finish: StopReason | None = None  # set on the last chunk
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    generated_tokens: int | None = None


# A chunk's JSON and whether the request was FIM -> its Event.
Parser = Callable[[dict[str, Any], bool], Event]


class EventReader:
    """Gathers an event's `data:` lines; `feed` returns the event's payload when a blank line ends it."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: bytes) -> str | None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("data:"):
            self._data.append(text[5:].removeprefix(" "))
            return None
        if text or not self._data:
            return None  # comments (": ping"), "event:" and "id:" fields, stray blank lines
        raw, self._data = "\n".join(self._data), []
        return raw


def is_done(raw: str) -> bool:
    """OpenAI's end-of-stream sentinel (a server may end with it instead of a finish reason)."""
    return raw.strip() == "[DONE]"


def openai_event(obj: dict[str, Any], fim: bool) -> Event:
    choices = obj.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    event = Event(text=str(choice.get("text") or ""))
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
    _read_llamacpp_timings(obj, event)
    return event


def llamacpp_event(obj: dict[str, Any], fim: bool) -> Event:
    """llama.cpp's native /infill and /completion chunks: {"content", "stop", "stop_type", ...}."""
    event = Event(text=str(obj.get("content") or ""))
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
    _read_llamacpp_timings(obj, event)
    return event


def _read_llamacpp_timings(obj: dict[str, Any], event: Event) -> None:
    timings = obj.get("timings")
    if isinstance(timings, dict) and "prompt_n" in timings:
        cached = int(timings.get("cache_n") or obj.get("tokens_cached") or 0)
        event.cached_tokens = cached
        event.prompt_tokens = int(timings.get("prompt_n") or 0) + cached
        event.generated_tokens = timings.get("predicted_n")


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
