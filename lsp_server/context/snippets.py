"""Snippets of code from elsewhere, and how they are scored against the text around the cursor.

Similarity is lexical: the sets of identifiers in two pieces of text (Jaccard), or BM25 over a
repository's windows for retrieval. Both are cheap enough to run on every keystroke.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

WINDOW_LINES = 40
WINDOW_STRIDE = 20

# Words so common in code that sharing them says nothing.
STOP_WORDS = frozenset(
    "self this def return if else elif for while in is not and or import from as class function "
    "const let var new true false none null undefined the a an of to int str void public private "
    "static pass break continue try except finally with yield await async lambda export default "
    "package use fn pub mut impl struct end then do".split()
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Source bonuses on top of the similarity: an imported file is about what the user is writing even
# when it shares few words; recent edits say where the user's attention is.
SOURCE_BONUS = {"import": 0.3, "edit": 0.2, "open": 0.1, "local": 0.05, "similar": 0.0, "definition": 0.0}


def words(text: str) -> list[str]:
    """Identifier words of `text`, lower-cased, without stop words and single letters."""
    return [w for w in (m.lower() for m in _WORD.findall(text)) if len(w) > 1 and w not in STOP_WORDS]


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass
class Snippet:
    """`text` is lines [start_line, end_line) of `path` (a workspace-relative path)."""

    path: str
    text: str
    start_line: int
    end_line: int
    source: str  # "open" | "edit" | "import" | "similar" | "local" | "definition"
    score: float = 0.0
    boost: float = 0.0  # added to the score: how directly the cursor refers to it (definitions.py)
    _words: set[str] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.start_line, self.end_line)

    @property
    def word_set(self) -> set[str]:
        if self._words is None:
            self._words = set(words(self.text))
        return self._words

    def overlaps(self, other: Snippet) -> bool:
        return (self.path == other.path and self.start_line < other.end_line
                and other.start_line < self.end_line)


def windows(path: str, text: str, source: str, size: int = WINDOW_LINES,
            stride: int = WINDOW_STRIDE) -> list[Snippet]:
    """Fixed, aligned windows over `text` (aligned so the same window keeps the same key from one
    keystroke to the next). Blank windows are skipped."""
    lines = text.split("\n")
    out = []
    for start in range(0, max(len(lines) - size + stride, 1), stride):
        chunk = lines[start : start + size]
        body = "\n".join(chunk)
        if body.strip():
            out.append(Snippet(path, body.rstrip("\n") + "\n", start, start + len(chunk), source))
    return out


def rank(candidates: Iterable[Snippet], query: set[str]) -> list[Snippet]:
    """Score every candidate (similarity to the query plus its source's bonus and its own boost), best first. Ties
    break on the key so the order never depends on how candidates were gathered."""
    scored = []
    for snip in candidates:
        snip.score = jaccard(snip.word_set, query) + SOURCE_BONUS.get(snip.source, 0.0) + snip.boost
        scored.append(snip)
    scored.sort(key=lambda s: (-s.score, s.key))
    return scored


def dedupe(ranked: list[Snippet], near_duplicate: float = 0.8) -> list[Snippet]:
    """Drop candidates that overlap a better one in the same file or say nearly the same thing.

    Every candidate is compared with every one kept before it, at each keystroke: two word sets can only
    be `near_duplicate` alike when their sizes are within that ratio, so only those pairs compute the
    similarity (the same result; it was a fifth of a keystroke's time outside the engine at 8K)."""
    kept: list[Snippet] = []
    for snip in ranked:
        size = len(snip.word_set)
        if any(snip.overlaps(k) or (near_duplicate * max(size, len(k.word_set)) <= min(size, len(k.word_set))
                                     and jaccard(snip.word_set, k.word_set) >= near_duplicate)
               for k in kept):
            continue
        kept.append(snip)
    return kept


class BM25:
    """A BM25 index over snippets (the repository's windows) with an inverted index, so a query
    only touches the windows that share a word with it."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs: dict[tuple[str, int, int], tuple[Snippet, Counter[str], int]] = {}
        self.postings: dict[str, dict[tuple[str, int, int], int]] = {}
        self.by_path: dict[str, set[tuple[str, int, int]]] = {}
        self.total_len = 0

    def __len__(self) -> int:
        return len(self.docs)

    def add(self, snip: Snippet) -> None:
        self.remove(snip.key)
        tf = Counter(words(snip.text))
        length = sum(tf.values())
        self.docs[snip.key] = (snip, tf, length)
        self.by_path.setdefault(snip.path, set()).add(snip.key)
        for term, f in tf.items():
            self.postings.setdefault(term, {})[snip.key] = f
        self.total_len += length

    def remove(self, key: tuple[str, int, int]) -> None:
        old = self.docs.pop(key, None)
        if old is None:
            return
        for term in old[1]:
            posting = self.postings.get(term)
            if posting is not None:
                posting.pop(key, None)
                if not posting:
                    del self.postings[term]
        keys = self.by_path.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_path[key[0]]
        self.total_len -= old[2]

    def remove_path(self, path: str) -> None:
        for key in list(self.by_path.get(path, ())):
            self.remove(key)

    def search(self, query: Iterable[str], limit: int, exclude_path: str | None = None) -> list[Snippet]:
        """The `limit` best windows for the query words, best first (ties by key)."""
        n = len(self.docs)
        if n == 0:
            return []
        avg = max(self.total_len / n, 1.0)
        scores: dict[tuple[str, int, int], float] = {}
        for term in set(query):
            posting = self.postings.get(term)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for key, f in posting.items():
                length = self.docs[key][2]
                scores[key] = scores.get(key, 0.0) + idf * f * (self.k1 + 1) / (
                    f + self.k1 * (1 - self.b + self.b * length / avg))
        best = sorted(((s, k) for k, s in scores.items() if k[0] != exclude_path),
                      key=lambda x: (-x[0], x[1]))[:limit]
        return [self.docs[k][0] for _, k in best]
