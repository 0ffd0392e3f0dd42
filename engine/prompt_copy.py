"""Mix in what followed the same tokens elsewhere: a cache language model over the prompt and the workspace.

Code repeats itself within a repository (Tu, Su and Devanbu, "On the localness of software", 2014;
Hellendoorn and Devanbu, 2017, nest such caches from the file out to the project). The prompt holds
the nearest copies: the file around the cursor and the snippets from other files; the rest of the
workspace holds more. A small model sees the prompt but often fails to copy it (it makes up the end
of a path the file already spells out). Here, before each token is chosen, the last tokens written
are looked up in the prompt and in the workspace's other files; where they occurred, the tokens that
followed the longest matches (the prompt's where the workspace's are no longer) get a share of the
probability, larger the longer the match:

    p(next) = (1 - w) * p_model(next) + w * p_copy(next),   w = min(WEIGHT_MAX, WEIGHT_PER_TOKEN * match)

where p_copy spreads over the tokens that followed the longest matches, by how often each did. Short
matches (under MIN_MATCH tokens in the prompt, WORKSPACE_MIN_MATCH in the workspace, where three
tokens match far too often) say nothing and add nothing. The weights were chosen on the held-out
cursors of benchmarks/adaptation.py (benchmarks/RESULTS.md, "Copying from the prompt and the workspace").
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

# mix(generated, logits) -> the logits the next token is chosen from.
Mix = Callable[[list[int], torch.Tensor], torch.Tensor]

MIN_MATCH = 3  # tokens that must match before a continuation counts ...
WORKSPACE_MIN_MATCH = 4  # ... and in the workspace's other files
LONGEST_MATCH = 32  # how far back a match is followed
WEIGHT_PER_TOKEN = 0.05  # the copy's share per matched token ...
WEIGHT_MAX = 0.4  # ... up to this
TOKEN_BITS = 17  # per token in a packed key ...
MAX_VOCAB = 1 << TOKEN_BITS  # ... so vocabularies up to 131,072 (Code Llama's 32,016); larger ones do not copy
GAP = -1  # between files in a token run: matches neither a token nor another gap
WORKSPACE_MAX_TOKENS = 2_000_000  # files past this are left out (40 MB held at most, a 0.1 s sort)
SYNC_CHARS = 250_000  # characters tokenized per request while catching up with the workspace (~60 ms)


class NgramIndex:
    """Finds what followed a context's last tokens in a token run. Each MIN_MATCH-gram is packed into
    one int64 key (TOKEN_BITS a token) and the keys are sorted once, so a lookup is a binary search,
    and the matches are followed back together in one vectorised comparison."""

    def __init__(self, tokens: torch.Tensor, special: Collection[int] = ()) -> None:
        """`tokens`: ids, GAP between files. `special` ids (the FIM sentinels) are never a
        continuation: in a prompt one follows the prefix's or the suffix's end, which is no sign of
        what the completion writes there."""
        self.tokens = tokens.int()  # 4 bytes a token; the keys take 8, their order 4 more
        count = max(len(tokens) - MIN_MATCH, 0)  # only n-grams that something follows
        keys = _keys(tokens.long(), count)
        follows = tokens[MIN_MATCH:]
        unusable = follows == GAP
        for k in range(MIN_MATCH):
            unusable |= tokens[k : k + count] == GAP
        if special:
            unusable |= torch.isin(follows, torch.tensor(sorted(special)))
        keys[unusable] = -1  # real keys are never negative
        self.keys, order = torch.sort(keys)
        self.order = order.int()

    def continuations(self, context: Sequence[int], min_match: int = MIN_MATCH,
                      skip: tuple[int, int] | None = None) -> tuple[Counter[int], int]:
        """The tokens that followed the longest earlier occurrences of `context`'s end (at least
        `min_match` tokens), counted, and that match's length (0 and nothing where none is that
        long). Occurrences starting in `skip` (a [start, end) span of the run) do not count."""
        if len(context) < max(min_match, MIN_MATCH) or not len(self.keys):
            return Counter(), 0
        key = _keys(torch.tensor(list(context[-MIN_MATCH:]), dtype=torch.long), 1)
        lo = int(torch.searchsorted(self.keys, key, right=False))
        hi = int(torch.searchsorted(self.keys, key, right=True))
        starts = self.order[lo:hi].long()
        if skip is not None:
            starts = starts[(starts < skip[0]) | (starts >= skip[1])]
        if not len(starts):
            return Counter(), 0
        # How far each match goes on backwards: the tokens before every start against the context's,
        # nearest first, all at once; a match ends at its first difference.
        extra = min(LONGEST_MATCH, len(context)) - MIN_MATCH
        if extra > 0:
            at = starts[:, None] - torch.arange(1, extra + 1)[None, :]
            wanted = torch.tensor(list(context[-MIN_MATCH - 1 :: -1][:extra]), dtype=self.tokens.dtype)
            same = (at >= 0) & (self.tokens[at.clamp_min(0)] == wanted)
            matched = same.int().cumprod(dim=1).sum(dim=1)
            longest = int(matched.max())
            starts = starts[matched == longest]
        else:
            longest = 0
        length = MIN_MATCH + longest
        if length < min_match:
            return Counter(), 0
        return Counter(self.tokens[starts + MIN_MATCH].tolist()), length


def _keys(ids: torch.Tensor, count: int) -> torch.Tensor:
    """The packed key of each of the first `count` MIN_MATCH-grams of `ids`."""
    keys = torch.zeros(count, dtype=torch.long)
    for k in range(MIN_MATCH):
        keys = (keys << TOKEN_BITS) | ids[k : k + count]
    return keys


@dataclass(frozen=True)
class WorkspaceSource:
    """What a copy may look up beyond the prompt: an index over the workspace's files, and the span
    of the file at the cursor in it (left out: its live text is in the prompt already)."""

    index: NgramIndex
    skip: tuple[int, int] | None


class WorkspaceTokens:
    """The workspace's files as token ids, kept in step with the language server's index: files
    are (re)tokenized when their text changes, SYNC_CHARS at most a call (a large workspace is
    caught up with over the first requests and idle moments, the nearest files first), up to
    WORKSPACE_MAX_TOKENS in all. A workspace larger than that keeps the files nearest the cursor's
    (by the directories they share with it), and moves when the cursor goes to a file outside them."""

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self.encode = encode
        self.generation: object = None  # the index generation fully synced
        self.focus: str | None = None  # the directory the kept files are nearest to (None: all kept)
        self._files: dict[str, tuple[str, torch.Tensor]] = {}  # path -> (text it came from, int32 ids)
        self._stale = False  # _files changed since _index was built
        self._index: NgramIndex | None = None
        self._spans: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def source(self, texts: Callable[[], Mapping[str, str]], generation: object, current: str | None,
               prepare: Callable[[str], str] = str) -> WorkspaceSource | None:
        """Catch up with the index at `generation` (`texts()` reads its files; `prepare` turns a
        text into what may be copied), then the lookup for a cursor in `current`."""
        with self._lock:
            # A workspace kept whole never refocuses; a larger one when the cursor leaves the files kept.
            away = (self.focus is not None and current is not None and current not in self._files
                    and _directory(current) != self.focus)
            if generation != self.generation or away:
                self._sync(texts(), generation, prepare, _directory(current) if current else "")
            if self._index is None:
                return None
            return WorkspaceSource(self._index, self._spans.get(current) if current else None)

    def _sync(self, texts: Mapping[str, str], generation: object, prepare: Callable[[str], str],
              near: str) -> None:
        wanted = _nearest(texts, near, {path: len(ids) for path, (_, ids) in self._files.items()})
        keep = set(wanted)
        gone = [path for path in self._files if path not in keep]
        for path in gone:
            del self._files[path]
        self._stale |= bool(gone)
        pending = False
        budget = SYNC_CHARS
        for path in wanted:
            text = texts[path]
            held = self._files.get(path)
            if held is not None and held[0] == text:
                continue
            if budget <= 0:
                pending = True  # the next request goes on from here
                break
            ids = torch.tensor(self.encode(prepare(text)), dtype=torch.int32)
            budget -= len(text)
            self._files[path] = (text, ids)
            self._stale = True
        if pending:
            # While catching up, the lookup covers what is tokenized so far (the nearest files come
            # first), rebuilt only when that has doubled: sorting 2 M tokens' keys takes 0.1 s.
            tokens_held = sum(len(ids) for _, ids in self._files.values())
            indexed = len(self._index.tokens) if self._index is not None else 0
            if self._stale and tokens_held >= 2 * indexed:
                self._rebuild()
            self.generation = None  # not synced: the next request goes on (a refocus too)
            return
        self.generation = generation
        self.focus = near if len(wanted) < len(texts) else None
        if self._stale:
            self._rebuild()

    def _rebuild(self) -> None:
        runs: list[torch.Tensor] = []
        self._spans, at = {}, 0
        gap = torch.tensor([GAP], dtype=torch.int32)
        for path, (_, ids) in self._files.items():
            self._spans[path] = (at, at + len(ids))
            runs += [ids, gap]
            at += len(ids) + 1
        self._index = NgramIndex(torch.cat(runs)) if runs else None
        self._stale = False


def _directory(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _nearest(texts: Mapping[str, str], near: str, held: Mapping[str, int]) -> list[str]:
    """The paths to keep, nearest `near` (the directory of the cursor's file) first, up to
    WORKSPACE_MAX_TOKENS: counted for the files held, estimated from the text for the others (3
    characters a token, on the safe side of code's 3.5 to 4). Nearness: the leading directories a
    file shares with `near`."""
    parts = near.split("/") if near else []

    def shared(path: str) -> int:
        n = 0
        for a, b in zip(_directory(path).split("/"), parts, strict=False):
            if a != b:
                break
            n += 1
        return n

    total, kept = 0, list[str]()
    for path in sorted(texts, key=lambda path: (-shared(path), path)):
        size = held.get(path, len(texts[path]) // 3)
        if total + size > WORKSPACE_MAX_TOKENS and kept:
            continue  # a smaller file further away may still fit
        total += size
        kept.append(path)
    return kept


def prompt_copy(prompt: Sequence[int], written_before: Sequence[int], special: Collection[int] = (),
                workspace: WorkspaceSource | None = None, line_ends: Collection[int] = (),
                indents: Collection[int] = (), healing: bool = False) -> Mix:
    """A `mix(generated, logits)` callback for engine.generate. `prompt` and `workspace` are where
    continuations are looked up; `written_before` is the text the completion continues (the
    prompt's tail in SPM order, the prefix in PSM), which generated tokens extend; `special`: see
    NgramIndex. Where a line begins (after one of `line_ends`, unless the completion starts by
    spelling again text held back from the prompt: `healing`), the copy never chooses one of
    `indents`: the model alone decides how deep the line sits, where a copy would bring the depth of
    the block it came from (a method's body after a statement at a module's top level)."""
    in_prompt = NgramIndex(torch.tensor(list(prompt), dtype=torch.long), special)
    head = list(written_before[-LONGEST_MATCH:])

    def mix(generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        context = (head + generated)[-LONGEST_MATCH:]
        votes, length = in_prompt.continuations(context)
        if workspace is not None:
            elsewhere, longer = workspace.index.continuations(context, WORKSPACE_MIN_MATCH, workspace.skip)
            if longer > length:  # the longer match says more; the prompt's wins a tie
                votes, length = elsewhere, longer
        last = generated[-1] if generated else (None if healing or not head else head[-1])
        if last in line_ends:
            votes = Counter({token: n for token, n in votes.items() if token not in indents})
        if not votes:
            return logits
        weight = min(WEIGHT_MAX, WEIGHT_PER_TOKEN * length)
        probs = torch.softmax(logits.float(), dim=-1) * (1.0 - weight)
        total = sum(votes.values())
        ids = torch.tensor(list(votes), dtype=torch.long, device=probs.device)
        shares = torch.tensor([weight * n / total for n in votes.values()], device=probs.device)
        return torch.log(probs.index_add(0, ids, shares).clamp_min(1e-30))

    return mix
