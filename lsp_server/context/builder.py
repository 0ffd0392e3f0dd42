"""Turn a document, a cursor and candidate snippets into the prefix and suffix sent to the engine.

Pure: no I/O, no engine; tokens are counted with the function it is given.

Layout of the prefix (SPM sends `<PRE><SUF>{suffix}<MID>{prefix}`, so everything here comes after the
suffix and the text right before the cursor comes last):

    {comment} Path: other/module.py      <- snippets, each a commented block under its path,
    {comment} def helper(x): ...            the file with the best-ranked snippet last; one file's
    {comment} class Base: ...               snippets together, by line, under one header
    {comment} Path: this/file.py         <- the current file's path
    <file text from the cut point up to the cursor>

Stable from one keystroke to the next, so the engine reuses its KV cache: the prefix's cut point and
the snippet selection are kept (`Layout`) while they still fit and the cursor stays in the same region;
when the prefix outgrows its share, it is re-cut with room to grow again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .budget import take_backward, take_forward
from .languages import comment_block, path_header
from .snippets import Snippet, dedupe, rank, words

SUFFIX_SHARE = 0.2  # most of the budget the suffix may take
PREFIX_SHARE = 0.6  # most the file prefix may take while snippets compete for the rest
REGROW_SHARE = 0.75  # a re-cut prefix fills this much of its share, leaving room to type
STICKY_LINES = 12  # the snippet selection is kept while the cursor stays this close
# Most of the budget the snippets may take: what the cursor refers to ranks first and fits; lexical
# filler past this share made prompts twice as long as the file alone (p90 latency 1.6x) for no
# measured gain (benchmarks/crossfile.py).
SNIPPET_SHARE = 0.3


@dataclass
class Layout:
    """What one prompt chose, kept per document to keep the next prompt the same."""

    prefix_start: int = 0
    prefix_anchor: str = ""  # text at prefix_start, to notice edits above the cut
    snippet_keys: list[tuple[str, int, int]] = field(default_factory=list)
    anchor_line: int = -1
    budget: int = 0


def line_of(text: str, cursor: int) -> int:
    """The cursor's line, which layouts remember their spot by (-1 in texts too long to count cheaply)."""
    return text.count("\n", 0, cursor) if len(text) < 1_000_000 else -1


class SpotLayouts:
    """The layouts of a document's last few spots, so coming back to one (after a jump elsewhere in the
    file, or from another file) builds the prompt it built there, which its KV cache still holds."""

    def __init__(self, spots: int = 4) -> None:
        self.spots = spots
        self.layouts: list[Layout] = []  # most recent last

    def nearest(self, line: int) -> Layout | None:
        """The layout of the spot nearest `line` (the latest among equals), or None."""
        return min(reversed(self.layouts), key=lambda lay: abs(lay.anchor_line - line), default=None)

    def remember(self, layout: Layout) -> None:
        """Keep `layout` as its spot's, in place of one within STICKY_LINES of it."""
        self.layouts = [lay for lay in self.layouts if abs(lay.anchor_line - layout.anchor_line) > STICKY_LINES]
        self.layouts = [*self.layouts, layout][-self.spots:]


@dataclass
class BuiltContext:
    prefix: str  # snippets + path header + file text before the cursor
    suffix: str
    snippets: list[Snippet]
    prefix_tokens: int
    suffix_tokens: int
    snippet_tokens: int
    budget: int
    layout: Layout

    @property
    def tokens(self) -> int:
        return self.prefix_tokens + self.suffix_tokens + self.snippet_tokens


def render_snippet(snip: Snippet, language: str) -> str:
    return path_header(snip.path, language) + comment_block(snip.text, language)


def render_snippets(snips: list[Snippet], language: str) -> str:
    """Snippets in order, each commented under its path; consecutive snippets of one file share one
    header (counted with one header each when packing, so the packed prompt never overflows)."""
    out, last = [], None
    for snip in snips:
        out.append(comment_block(snip.text, language) if snip.path == last else render_snippet(snip, language))
        last = snip.path
    return "".join(out)


def query_words(text: str, cursor: int, lines_before: int = 30, lines_after: int = 5) -> set[str]:
    """Identifiers around the cursor (30 lines before, 5 after): what snippets are ranked against. The
    word being typed at the cursor is left out: half a name matches nothing, and a query that changed
    with every letter re-picked the snippets mid-word, which costs the prompt's KV cache after them."""
    lo, hi = max(0, cursor - 8000), min(len(text), cursor + 2000)
    word_start, word_end = cursor, cursor
    while word_start > lo and (text[word_start - 1].isalnum() or text[word_start - 1] == "_"):
        word_start -= 1
    while word_start < cursor and word_end < hi and (text[word_end].isalnum() or text[word_end] == "_"):
        word_end += 1  # the cursor inside a word: all of it is being edited (one just before a word keeps it)
    start = cursor
    for _ in range(lines_before):
        start = text.rfind("\n", lo, max(start - 1, lo))
        if start < 0:
            start = lo
            break
    end = cursor
    for _ in range(lines_after):
        end = text.find("\n", end + 1, hi)
        if end < 0:
            end = hi
            break
    return set(words(text[start:word_start])) | set(words(text[word_end:end]))


def build_context(
    *,
    text: str,
    cursor: int,
    path: str,
    language: str,
    budget: int,
    count: Callable[[str], int],
    candidates: list[Snippet] | None = None,
    previous: Layout | None = None,
) -> BuiltContext:
    """Prefix, suffix and packed snippets for a cursor at code-point offset `cursor` of `text`, in at
    most `budget` tokens (as counted by `count`)."""
    cursor = max(0, min(cursor, len(text)))
    candidates = candidates or []
    header = path_header(path, language)
    header_tokens = count(header)
    budget_left = max(budget - header_tokens, 1)

    suffix_end, suffix_tokens = take_forward(text, cursor, int(budget_left * SUFFIX_SHARE), count)
    room = budget_left - suffix_tokens
    prefix_cap = int(room * PREFIX_SHARE / (1 - SUFFIX_SHARE)) if candidates else room
    prefix_start, prefix_tokens = _cut_prefix(text, cursor, prefix_cap, count, previous, budget)

    cursor_line = line_of(text, cursor)
    snippet_room = room - prefix_tokens
    if candidates and prefix_start > 0:
        # The prefix is cut: leave it room to grow so the snippets need not be re-packed soon.
        snippet_room = room - min(prefix_cap, prefix_tokens + int(budget * 0.1))
    snippet_room = min(snippet_room, int(budget * SNIPPET_SHARE))
    chosen, snippet_tokens = _pick_snippets(
        candidates, text, cursor, prefix_start, suffix_end, path, language, snippet_room, count,
        previous, cursor_line, budget)

    layout = Layout(prefix_start, text[prefix_start : prefix_start + 64],
                    [s.key for s in chosen], cursor_line, budget)
    prefix = render_snippets(chosen, language) + header + text[prefix_start:cursor]
    return BuiltContext(prefix, text[cursor:suffix_end], chosen, prefix_tokens + header_tokens,
                        suffix_tokens, snippet_tokens, budget, layout)


def _cut_prefix(text: str, cursor: int, cap: int, count: Callable[[str], int],
                previous: Layout | None, budget: int) -> tuple[int, int]:
    """Where the file prefix starts. Keeps the previous cut while it still fits (and the text there
    is unchanged); otherwise cuts so the prefix fills REGROW_SHARE of its cap."""
    start, tokens = take_backward(text, cursor, cap, count)
    if start == 0:
        return 0, tokens
    kept_start = _moved_anchor(text, previous) if previous is not None and previous.budget == budget else -1
    if 0 < kept_start <= cursor and kept_start >= start:
        kept = _tokens_between(text, kept_start, cursor, count)
        if kept <= cap and kept >= int(cap * REGROW_SHARE * 0.66):
            return kept_start, kept
    return take_backward(text, cursor, int(cap * REGROW_SHARE), count)


ANCHOR_SEARCH = 8000  # characters around the old cut searched for its text, after edits above it


def _moved_anchor(text: str, previous: Layout) -> int:
    """Where the previous cut's text is now: at its offset, or (after an edit above it moved it) its
    nearest occurrence within ANCHOR_SEARCH characters; -1 when it is gone."""
    at, anchor = previous.prefix_start, previous.prefix_anchor
    if not anchor:
        return -1
    if text.startswith(anchor, at):
        return at
    before = text.rfind(anchor, max(0, at - ANCHOR_SEARCH), at + len(anchor) - 1)
    after = text.find(anchor, at, at + ANCHOR_SEARCH)
    found = [i for i in (before, after) if i >= 0]
    return min(found, key=lambda i: abs(i - at)) if found else -1


def snippets_for_span(candidates: list[Snippet], text: str, start: int, end: int, path: str, language: str,
                      room: int, count: Callable[[str], int]) -> tuple[list[Snippet], int]:
    """The best snippets that fit in `room` tokens for code at [start, end) of `text` (code actions):
    ranked against the words around it, none overlapping it."""
    line = text.count("\n", 0, start)
    return _pick_snippets(candidates, text, start, start, end, path, language, room, count, None, line, room)


def _tokens_between(text: str, start: int, end: int, count: Callable[[str], int]) -> int:
    _, n = take_backward(text, end, 1 << 40, count, floor=start)
    return n


def _pick_snippets(candidates: list[Snippet], text: str, cursor: int, prefix_start: int,
                   suffix_end: int, path: str, language: str, room: int,
                   count: Callable[[str], int], previous: Layout | None, cursor_line: int,
                   budget: int) -> tuple[list[Snippet], int]:
    if room <= 0 or not candidates:
        return [], 0
    # Parts of this file already in the prompt are no snippets.
    first_line = text.count("\n", 0, prefix_start) if prefix_start else 0
    last_line = text.count("\n", 0, suffix_end) + 1 if suffix_end < len(text) else 1 << 30
    usable = [s for s in candidates
              if not (s.path == path and s.start_line < last_line and s.end_line > first_line)]
    ranked = dedupe(rank(usable, query_words(text, cursor)))
    by_key = {s.key: s for s in ranked}

    # Keep the previous selection (and so the cached prompt) while the cursor stays near, it all
    # still fits and it holds the best snippet that fits: a better match that appeared since (a file
    # just written, say) gets in at once.
    if (previous is not None and previous.snippet_keys and previous.budget == budget
            and abs(previous.anchor_line - cursor_line) <= STICKY_LINES
            and all(k in by_key for k in previous.snippet_keys)
            and _best_fitting_key(ranked, room, count, language) in (None, *previous.snippet_keys)):
        kept = [by_key[k] for k in previous.snippet_keys]
        used = sum(count(render_snippet(s, language)) for s in kept)
        if used <= room:
            return kept, used

    chosen, used = [], 0
    for snip in ranked:
        n = count(render_snippet(snip, language))
        if used + n <= room:
            chosen.append(snip)
            used += n
    return nearest_last(chosen), used


def nearest_last(chosen: list[Snippet]) -> list[Snippet]:
    """Files in the order of their best snippet's score, the best file last (right above the current
    file, nearest the cursor); one file's snippets together, by line. The kept selection keeps its
    order, so the prompt stays the same from one keystroke to the next."""
    best: dict[str, float] = {}
    for s in chosen:
        best[s.path] = max(best.get(s.path, s.score), s.score)
    return sorted(chosen, key=lambda s: (best[s.path], s.path, s.start_line, s.end_line))


def _best_fitting_key(ranked: list[Snippet], room: int, count: Callable[[str], int], language: str) -> tuple[str, int, int] | None:
    """Key of the highest-ranked snippet that fits in `room` on its own, or None."""
    return next((s.key for s in ranked if count(render_snippet(s, language)) <= room), None)
