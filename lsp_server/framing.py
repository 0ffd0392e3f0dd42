"""LSP base-protocol framing, tolerant of broken clients (pure: bytes in, message bodies out).

A frame is `Content-Length: N\\r\\n` (other headers allowed), an empty line, then N bytes of JSON.
pygls' own reader trusts N and needs every header line to be exactly that: one frame whose
Content-Length is larger than what follows swallows the start of the next frame, and from then on
every header lands at the end of the previous body's line, so that no later message is ever read
again. This reader recovers:

- A body is cut where the next `Content-Length: N` header line starts inside it. That byte sequence
  (a raw line break after a header name) cannot occur in valid JSON, where line breaks only appear
  escaped inside strings, so a well-formed body is never cut; an over-long Content-Length costs only
  its own frame (which is often still valid JSON) and the server does not wait for bytes that will
  never come while the next request sits in its buffer.
- A body whose Content-Length is larger than what follows, with nothing after it (the client waits
  for the answer): once the stream has been quiet for a while (`STALL_S`, the read loop's call), the
  bytes received are taken as the body when they already form a whole JSON text (`take_stalled`):
  the missing bytes could only have been whitespace.
- Between frames, anything before a `Content-Length` header is skipped, wherever on its line the
  header starts (the tail of a body whose Content-Length was too short, stray newlines, garbage).

    frames = FrameReader()
    for body in frames.feed(chunk):   # zero or more complete bodies
        ...
"""

from __future__ import annotations

import json
import re
from typing import Any

_HEADER = re.compile(rb"Content-Length:[ \t]*(\d{1,12})[ \t]*\r?\n", re.IGNORECASE)
_OVERLAP = 64  # longer than any Content-Length header line
_LINE_END = re.compile(rb"\r?\n")
STALL_S = 1.0  # quiet time after which a body short of its Content-Length is looked at
MAX_HEADER_BYTES = 4096  # the other headers of a frame (Content-Type); more is garbage


class FrameReader:
    """Splits a byte stream into message bodies. Feed it chunks as they arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None  # the body's declared length, once its headers are read
        self._scanned = 0  # body bytes already searched for a next header

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        bodies: list[bytes] = []
        while True:
            body = self._next_body() if self._length is not None else None
            if body is not None:
                bodies.append(body)
                continue
            if self._length is None and self._read_headers():
                continue
            return bodies

    @property
    def in_body(self) -> bool:
        """True while part of a body has been read and the rest has not arrived."""
        return self._length is not None

    def take_stalled(self) -> bytes | None:
        """The part of a body received so far when it is a whole JSON text (the stream went quiet
        before the declared length came in); None otherwise."""
        if self._length is None or not self._buffer.strip():
            return None
        body = bytes(self._buffer)
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            return None
        self._buffer.clear()
        self._length = None
        return body

    def _read_headers(self) -> bool:
        """Consume garbage and one frame's headers; True when it made progress (a body starts, or a
        stray header was dropped) and should be called again."""
        buf = self._buffer
        match = _HEADER.search(buf)
        if match is None:
            del buf[:-_OVERLAP]  # garbage; keep what could be a header split across chunks
            return False
        # The other headers end at an empty line.
        pos = match.end()
        while True:
            line_end = _LINE_END.search(buf, pos)
            if line_end is None:
                if len(buf) - pos > MAX_HEADER_BYTES:
                    del buf[: match.end()]  # no empty line ever came: not a frame after all
                    return True
                return False  # wait for the rest of the headers
            if line_end.start() == pos:
                break
            if _HEADER.match(buf, pos):
                del buf[:pos]  # a second Content-Length before the empty line: the first was stray
                return True
            pos = line_end.end()
        self._length = int(match.group(1))
        self._scanned = 0
        del buf[: line_end.end()]
        return True

    def _next_body(self) -> bytes | None:
        """The body, once all its bytes are in or the next frame's header shows inside them."""
        assert self._length is not None
        buf = self._buffer
        # Search only what is new (minus an overlap for a header split between chunks).
        cut = _HEADER.search(buf, max(self._scanned - _OVERLAP, 0))
        if cut is not None and cut.start() < self._length:
            end = _line_start(buf, cut.start())
        elif len(buf) < self._length:
            self._scanned = len(buf)
            return None
        else:
            end = self._length
        body = bytes(buf[:end])
        del buf[:end]
        self._length = None
        return body


def _line_start(buf: bytearray, pos: int) -> int:
    """Where the line holding `pos` starts, when only whitespace precedes `pos` on it."""
    start = pos
    while start > 0 and buf[start - 1] in b" \t":
        start -= 1
    return start


def envelope_members(body: bytes) -> dict[str, Any]:
    """The top-level scalar members (such as "id", "method", "jsonrpc") of a JSON object that could
    not be parsed: nested too deep for the parser, cut short, or followed by garbage. Reads the text
    once, left to right, without recursion; containers are skipped, not returned. Members after the
    point where the text stops being JSON are not found."""
    text = body.decode("utf-8", "surrogateescape")  # a broken byte stays broken, never turns into "\ufffd"
    decoder = json.JSONDecoder()
    members: dict[str, Any] = {}
    depth, i, n = 0, 0, len(text)
    expect = "key"  # at depth 1: key, colon, value or comma
    key = ""
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if depth == 0:
            if ch != "{":
                return members
            depth, expect = 1, "key"
            i += 1
            continue
        if ch == '"':
            string = _STRING.match(text, i)
            if string is None:
                return members
            if depth == 1:
                try:  # an escape broken by a bad byte ("\\\xff") ends the reading here
                    value = json.loads(string.group())
                except ValueError:
                    return members
                if expect == "key":
                    key, expect = value, "colon"
                elif expect == "value":
                    members[key], expect = value, "comma"
                else:
                    return members
            i = string.end()
            continue
        if ch in "[{":
            if depth == 1 and expect != "value":
                return members
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth <= 0:
                return members
            expect = "comma"
        elif depth == 1:
            if expect == "colon" and ch == ":":
                expect = "value"
            elif expect == "comma" and ch == ",":
                expect = "key"
            elif expect == "value":
                try:  # a number, true, false or null: never nested
                    value, i = decoder.raw_decode(text, i)
                except ValueError:
                    return members
                if not _NEXT_IS_SEPARATOR.match(text, i):
                    return members  # cut or followed by junk: 12 may have been 1234
                members[key], expect = value, "comma"
                continue
            else:
                return members
        i += 1
    return members


_NEXT_IS_SEPARATOR = re.compile(r"[ \t\r\n]*[,}]")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
