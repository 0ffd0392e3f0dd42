"""Open documents with exact LSP positions.

LSP positions count characters in the negotiated encoding: UTF-16 code units by default (an emoji is
two), or UTF-8 bytes, or UTF-32 code points. Python strings index code points, so every position is
converted at the edge. Lines end at "\\n", "\\r\\n" or "\\r" only (not at the other characters Python's
`str.splitlines` breaks on).
"""

from __future__ import annotations

import bisect
import re
import time
from collections import deque
from dataclasses import dataclass, field

_EOL = re.compile(r"\r\n|\r|\n")
UTF16, UTF8, UTF32 = "utf-16", "utf-8", "utf-32"


class PositionError(ValueError):
    """A position that lies outside the document."""


def _units(text: str, encoding: str) -> int:
    """Length of `text` in LSP position units."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _column(line: str, units: int, encoding: str) -> int:
    """Code-point index in `line` of a position `units` into it; rounds down inside a character and
    clamps to the line's end (as the LSP spec asks for a character beyond the line)."""
    if units <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(units, len(line))
    if encoding == UTF8:
        raw = line.encode("utf-8", "surrogatepass")[:units]
        return len(raw.decode("utf-8", "ignore"))
    raw = line.encode("utf-16-le", "surrogatepass")[: 2 * units]
    return len(raw.decode("utf-16-le", "ignore"))


@dataclass
class Edit:
    """Where a document was last edited (for the "recent edits" snippet source)."""

    uri: str
    line: int
    when: float


@dataclass
class Document:
    uri: str
    text: str
    version: int = 0
    language_id: str = ""
    encoding: str = UTF16
    _line_starts: list[int] | None = field(default=None, repr=False)

    @property
    def line_starts(self) -> list[int]:
        """Code-point offset of the start of each line."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in _EOL.finditer(self.text)]
        return self._line_starts

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_text(self, line: int) -> str:
        """Line `line` without its line ending."""
        starts = self.line_starts
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        return self.text[starts[line] : end].rstrip("\r\n")

    def offset_at(self, line: int, character: int, clamp: bool = False) -> int:
        """Code-point offset of an LSP position. A line past the end raises PositionError unless
        `clamp` (then it means the end of the document)."""
        if line < 0 or character < 0:
            if not clamp:
                raise PositionError(f"negative position {line}:{character}")
            line, character = max(line, 0), max(character, 0)
        if line >= self.line_count:
            if not clamp:
                raise PositionError(f"line {line} is past the end ({self.line_count} lines)")
            return len(self.text)
        return self.line_starts[line] + _column(self.line_text(line), character, self.encoding)

    def position_at(self, offset: int) -> tuple[int, int]:
        """LSP (line, character) of a code-point offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        return line, _units(self.text[start:offset], self.encoding)

    def apply_change(self, text: str, start: tuple[int, int] | None = None,
                     end: tuple[int, int] | None = None) -> int:
        """Apply one `didChange` content change (a full replacement when `start` is None); returns
        the line where the edit happened. Out-of-range positions are clamped, never raised."""
        if start is None or end is None:
            self.text = text
            self._line_starts = None
            return 0
        a = self.offset_at(*start, clamp=True)
        b = self.offset_at(*end, clamp=True)
        a, b = min(a, b), max(a, b)
        self.text = self.text[:a] + text + self.text[b:]
        self._line_starts = None
        return min(start[0], self.line_count - 1)


class DocumentStore:
    """The open documents, keyed by URI, and a short history of where they were edited."""

    def __init__(self, max_edits: int = 32) -> None:
        self.docs: dict[str, Document] = {}
        self.edits: deque[Edit] = deque(maxlen=max_edits)
        self.encoding = UTF16

    def open(self, uri: str, text: str, version: int = 0, language_id: str = "") -> Document:
        doc = Document(uri, text, version, language_id, self.encoding)
        self.docs[uri] = doc
        return doc

    def close(self, uri: str) -> None:
        self.docs.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        return self.docs.get(uri)

    def change(self, uri: str, version: int, changes: list[tuple[str, tuple[int, int] | None,
                                                                   tuple[int, int] | None]]) -> bool:
        """Apply content changes in order; False when the document is not open."""
        doc = self.docs.get(uri)
        if doc is None:
            return False
        for text, start, end in changes:
            line = doc.apply_change(text, start, end)
            self._record_edit(uri, line)
        doc.version = version
        return True

    def _record_edit(self, uri: str, line: int) -> None:
        # Consecutive keystrokes on nearby lines are one edit region, not many.
        if self.edits and self.edits[-1].uri == uri and abs(self.edits[-1].line - line) <= 3:
            self.edits[-1] = Edit(uri, line, time.monotonic())
            return
        self.edits.append(Edit(uri, line, time.monotonic()))

    def recent_edits(self, exclude_uri: str | None = None) -> list[Edit]:
        """Most recent first."""
        return [e for e in reversed(self.edits) if e.uri != exclude_uri and e.uri in self.docs]
