"""Counting and cutting text in model tokens.

Text is cut at line boundaries. A line is counted on its own and the counts are summed: with a
SentencePiece tokenizer a newline is its own token, so the sum is the count of the joined text to
within a token or two per line join, and each line's count is cached across keystrokes. Lines longer
than PIECE_CHARS are handled in pieces, so a 10 MB single-line file costs what the budget allows,
not what the file holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..lru import LRU

PIECE_CHARS = 2000


class TokenCounter:
    """`count(text)` through a cache bounded by entries and by the characters its keys hold (the same
    lines and snippets are counted on every keystroke; each keystroke also brings new ones, which
    push the least recently used out)."""

    def __init__(self, count: Callable[[str], int], max_entries: int = 50_000,
                 max_chars: int = 4_000_000) -> None:
        self._count = count
        self.cache: LRU[str, int] = LRU(max_entries, max_chars, lambda text, _: len(text))

    def __call__(self, text: str) -> int:
        n = self.cache.get(text)
        if n is None:
            n = self._count(text) if text else 0
            self.cache[text] = n
        return n


def pieces_backward(text: str, end: int) -> Iterator[tuple[int, str]]:
    """(start offset, piece) going back from `end`: first the partial line ending at `end`, then
    whole earlier lines (each with its newline), long lines in pieces of at most PIECE_CHARS."""
    pos = end
    while pos > 0:
        nl = text.rfind("\n", max(0, pos - PIECE_CHARS), pos - 1) if pos > 1 else -1
        start = nl + 1 if nl >= 0 else max(0, pos - PIECE_CHARS)
        if nl < 0 and pos - PIECE_CHARS <= 0:
            start = 0
        yield start, text[start:pos]
        pos = start


def pieces_forward(text: str, start: int) -> Iterator[tuple[int, str]]:
    """(end offset, piece) going forward from `start`, each piece up to and including a newline."""
    pos = start
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos, min(n, pos + PIECE_CHARS))
        end = nl + 1 if nl >= 0 else min(n, pos + PIECE_CHARS)
        yield end, text[pos:end]
        pos = end


def take_backward(text: str, end: int, budget: int, count: Callable[[str], int],
                  floor: int = 0) -> tuple[int, int]:
    """The earliest start >= `floor` such that text[start:end] fits in `budget` tokens, cutting only
    between pieces; returns (start, tokens). The piece touching `end` is always taken whole when it
    fits, else cut by characters."""
    used = 0
    start = end
    for piece_start, piece in pieces_backward(text, end):
        if piece_start < floor:
            piece = text[floor : piece_start + len(piece)]
            piece_start = floor
        n = count(piece)
        if used + n > budget:
            if start == end:  # not even the cursor's own line fits: keep its tail
                return _cut_head(text, piece_start, end, budget, count)
            break
        used += n
        start = piece_start
        if start <= floor:
            break
    return start, used


def take_forward(text: str, start: int, budget: int, count: Callable[[str], int]) -> tuple[int, int]:
    """The latest end such that text[start:end] fits in `budget` tokens; returns (end, tokens)."""
    used = 0
    end = start
    for piece_end, piece in pieces_forward(text, start):
        n = count(piece)
        if used + n > budget:
            if end == start:
                return _cut_tail(text, start, piece_end, budget, count)
            break
        used += n
        end = piece_end
    return end, used


def _cut_head(text: str, start: int, end: int, budget: int, count: Callable[[str], int]) -> tuple[int, int]:
    """Drop characters from the front of text[start:end] until it fits (rare: one huge line)."""
    lo, hi = start, end  # find the smallest cut in [lo, hi] that fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count(text[mid:end]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo, count(text[lo:end])


def _cut_tail(text: str, start: int, end: int, budget: int, count: Callable[[str], int]) -> tuple[int, int]:
    lo, hi = start, end  # find the largest end in [lo, hi] that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[start:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo, count(text[start:lo])
