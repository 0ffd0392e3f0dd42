"""Prompt lookup: draft the next tokens of a completion by copying what followed the last few tokens
where they occurred before in the prompt or the text generated so far (no second model).

Code completions copy a lot (names, argument lists, whole lines from above or from the context), so a
draft found this way is often right; the generator verifies every drafted token in one forward pass
and keeps only what the model itself would have produced (engine/generate.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Speculation:
    """How prompt-lookup drafts are made: up to `draft_tokens` tokens copied after the most recent
    earlier occurrence of the context's last `max_ngram` tokens (down to `min_ngram` if none)."""

    draft_tokens: int = 7
    max_ngram: int = 3
    min_ngram: int = 1


class PromptLookup:
    """The token context (prompt, then generated ids) in a preallocated array, searched per draft."""

    def __init__(self, prompt: Sequence[int], room: int) -> None:
        self.ids = np.empty(len(prompt) + room, dtype=np.int64)
        self.ids[: len(prompt)] = prompt
        self.length = len(prompt)

    def append(self, token: int) -> None:
        if self.length == len(self.ids):
            self.ids = np.concatenate([self.ids, np.empty(len(self.ids), dtype=np.int64)])
        self.ids[self.length] = token
        self.length += 1

    def draft(self, spec: Speculation, limit: int) -> list[int]:
        """At most `limit` ids that followed the longest matching n-gram ending the context; [] if none."""
        limit = min(limit, spec.draft_tokens)
        if limit <= 0:
            return []
        ids = self.ids[: self.length]
        for n in range(spec.max_ngram, spec.min_ngram - 1, -1):
            start = find_last_occurrence(ids, n)
            if start is not None:
                return ids[start + n : start + n + limit].tolist()
        return []


def find_last_occurrence(ids: np.ndarray, n: int) -> int | None:
    """Start of the latest earlier occurrence of the last `n` ids (not overlapping the end), or None."""
    if n <= 0 or len(ids) <= n:
        return None
    tail = ids[-n:]
    # Candidates: positions (before the tail itself) holding the tail's first id, checked in full.
    starts = np.flatnonzero(ids[: len(ids) - n] == tail[0])
    for k in range(1, n):
        if len(starts) == 0:
            return None
        starts = starts[ids[starts + k] == tail[k]]
    return int(starts[-1]) if len(starts) else None
