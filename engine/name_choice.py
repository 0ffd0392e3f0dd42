"""Keep the first name a completion writes among names known to exist.

After `self.` or `module.` the language server knows which attributes exist (the class and its
bases, the module's top-level names, read from the workspace); a small model that sees them in its
prompt still often invents one (`get(translations)` for `get_translations(`). Here the decoder may
only pick tokens that keep the text after the cursor on the way to one of those names; once a known
name is complete and followed by anything else (`(`, ` `, a newline), the model runs free again.
This is the idea of monitor-guided decoding (Agrawal et al., 2023), for one identifier.

The same callback also does token healing: while the generated text has not yet spelt out the
held-back prompt text, only tokens compatible with it are allowed (engine/healing.py).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Collection

import torch

from engine.healing import TokenHealer

Constraint = Callable[[list[int]], torch.Tensor | None]
# lean(generated) -> (ids, amount) to add to those ids' logits for the next token, or None.
Lean = Callable[[list[int]], tuple[torch.Tensor, float] | None]


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def leading_name(text: str) -> str:
    """The identifier characters `text` starts with."""
    end = 0
    while end < len(text) and _is_name_char(text[end]):
        end += 1
    return text[:end]


def fits(text: str, names: Collection[str]) -> bool:
    """Whether `text`, written at the cursor, is on its way to one of `names`: still inside a name
    that some name starts with, or a whole name followed by something else."""
    name = leading_name(text)
    if len(name) == len(text):
        return any(n.startswith(name) for n in names)
    return name in names


class NameChoices:
    """Builds `constrain(generated)` callbacks for engine.generate over one vocabulary."""

    def __init__(self, healer: TokenHealer) -> None:
        self.healer = healer
        self.texts = healer.texts
        self._by_text: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.texts):
            if t:
                self._by_text[t].append(i)
        self._sorted = sorted((t, i) for i, t in enumerate(self.texts) if t)
        self._sorted_texts = [t for t, _ in self._sorted]
        # Tokens that open with something other than a name character: what may follow a whole name.
        self._ends_name = torch.tensor([i for i, t in enumerate(self.texts) if t and not _is_name_char(t[0])],
                                       dtype=torch.long)

    def constraint(self, healed: str, names: Collection[str], stop_ids: Collection[int] = ()) -> Constraint:
        """The first name written after `healed` (the held-back prompt text, '' for none) must be one
        of `names` (relative to the cursor: '' when what is typed is already a whole name). Stop ids
        are allowed where the name may end."""
        names = frozenset(names)
        stops = torch.tensor(sorted(stop_ids), dtype=torch.long)
        done = [False]

        def constrain(generated: list[int]) -> torch.Tensor | None:
            if done[0]:
                return None
            produced = "".join(self.texts[t] for t in generated)
            if len(produced) < len(healed):
                return self._healing(healed[len(produced) :], names)
            typed = produced[len(healed) :]
            if len(leading_name(typed)) < len(typed):  # a known name, then something else: free from here
                done[0] = True
                return None
            allowed = self._continuations(typed, names)
            if typed in names:
                allowed = torch.cat([allowed, self._ends_name, stops])
            return allowed if len(allowed) else None

        return constrain

    def leaning(self, healed: str, names: Collection[str]) -> torch.Tensor:
        """First tokens that spell out `healed` and then begin one of `names` (or write a whole name
        and something else: `Field(`): those the first token leans toward. Single characters count
        too: leaving out ` L` while ` Node` leans turned the model's `Leaf(value)` into `Node...` where
        both names were favored."""
        out: set[int] = set()
        for name in names:
            self._add_pieces_toward(healed, name, out)
        return torch.tensor(sorted(out), dtype=torch.long)

    def lean(self, healed: str, names: Collection[str], amount: float) -> Lean:
        """A `lean(generated)` callback for engine.generate: `amount` more for the tokens that carry
        the text after the cursor on toward one of `names` (relative to the cursor), for as long as
        the text written is on its way to one. A first piece that several names share (` Val` of
        `ValidationError` and `ValueError`) does not settle which one is written: the pieces after it
        lean too. Once the text leaves every name, or a whole name is written, nothing leans."""
        names = frozenset(names)
        done = [False]

        def lean(generated: list[int]) -> tuple[torch.Tensor, float] | None:
            if done[0]:
                return None
            produced = "".join(self.texts[t] for t in generated)
            if len(produced) < len(healed):  # the held-back text is still being spelt out
                ids = self.leaning(healed[len(produced) :], names) if healed.startswith(produced) else None
            else:  # empty once the text has left every name, or written one whole
                ids = self._continuations(produced[len(healed) :], names) if produced.startswith(healed) else None
            if ids is None or not len(ids):
                done[0] = True
                return None
            return ids, amount

        return lean

    def _healing(self, remainder: str, names: frozenset[str]) -> torch.Tensor:
        """Tokens that spell on the held-back text; those that reach past it must fit a name."""
        ids = self.healer.allowed(remainder)
        keep = [i for i in ids.tolist() if len(self.texts[i]) <= len(remainder)
                or fits(self.texts[i][len(remainder) :], names)]
        return torch.tensor(keep, dtype=torch.long) if keep else ids

    def _continuations(self, typed: str, names: frozenset[str]) -> torch.Tensor:
        """Tokens that carry the name typed so far towards one of `names`: a piece of the rest of a
        name, or the whole rest followed by a non-name character (`name(` as one token)."""
        out: set[int] = set()
        for name in names:
            if name.startswith(typed) and name != typed:
                self._add_pieces_toward("", name[len(typed) :], out)
        return torch.tensor(sorted(out), dtype=torch.long)

    def _add_pieces_toward(self, lead: str, rest: str, out: set[int]) -> None:
        """Add to `out` the tokens that spell `lead` and then the start of `rest`, or `lead`, all of
        `rest` and a non-name character."""
        for k in range(1, len(rest) + 1):
            out.update(self._by_text.get(lead + rest[:k], ()))
        whole = lead + rest
        at = bisect.bisect_right(self._sorted_texts, whole)  # texts that extend `whole` sort right after it
        while at < len(self._sorted) and self._sorted_texts[at].startswith(whole):
            text, i = self._sorted[at]
            if not _is_name_char(text[len(whole)]):
                out.add(i)
            at += 1
