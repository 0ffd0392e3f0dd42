"""Turn raw model output into the suggestion an editor shows. Pure functions, no engine.

The rules users of other completion tools ask for (shared/reference/peers.md): no suggestion where the
rest of the line makes one pointless; single line unless the cursor starts a block or an empty line;
stop where the output starts repeating the text after the cursor or itself (whole lines, or a span
within a line); keep brackets balanced with the suffix; stop at the end of the current block by
indentation, or at the next definition; trim trailing whitespace; and when the token limit cut the
output short, trim it back to where its brackets and quotes balance.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import NamedTuple

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
QUOTES = "\"'`"
# What may follow the cursor on its line for a suggestion to still make sense.
LINE_END_CHARS = set(")]}\"'`;,: \t")
BLOCK_OPENERS = (":", "{", "(", "[", "=>", " do", " then", "->")

# A loop within a line: a span of whole tokens that follows itself back to back. Spans of fewer than
# MIN_LOOP_SPAN characters (spaces aside) repeat in real code (`0, 0, 0`, `x[i][i]`, `a, a, a`); the
# loops the default model writes (`n < 0 or `, `fence_area, `, `len(text) - `) are longer.
MIN_LOOP_SPAN = 4
# Two copies back to back happen in real code (`f(x) + f(x)`); a third is the model looping. Some
# real code has three: method chains and nested calls (`.parent.parent.parent`,
# `dirname(dirname(dirname(`) need a fourth, and inside brackets (argument lists, type parameters,
# rows of data: `tuple[int, int, int]`, `(S.Half, S.Half, S.Half)`) six. Measured on 3.7 million
# lines of Python (this repository and its dependencies), these thresholds cut about 1 in 35,000.
LOOP_COPIES = 3
CHAIN_LOOP_COPIES = 4
INNER_LOOP_COPIES = 6
# Where the output was cut off while repeating (the token limit), the copy being written counts once
# it has this many characters (`rectangle_area, fence_area, fence_area, fence_`).
MIN_PARTIAL_COPY = 3
# A loop shows well within this many characters; the search costs the square of the length.
LOOP_SEARCH_CHARS = 400
_NAME = re.compile(r"(?<!\w)[A-Za-z_]\w*")
_STRING = re.compile(r"([\"'`]).*?\1")
_LITERAL_NAMES = frozenset({"None", "True", "False", "null", "true", "false", "nil", "undefined"})
# A line cut short drops the name of a call it cuts off (`len(` goes with `len`), and may not end on
# a separator, an operator or a word waiting for its operand.
_CALLEE = re.compile(r"[\w.]*\Z")
_DANGLING = re.compile(r"(?:[\s,.]|[-+*/%&|^~<>=!@]|(?<!\w)(?:and|or|not|in|is|if|else)(?!\w))+\Z")
# Lines that start a new definition, and decorators (which start one too, or belong to the next).
_DEFINITION = re.compile(r"(?:async\s+def|def|class)\s|if\s+__name__\s*==")
_DECORATOR = re.compile(r"@\w")


def pointless(line_suffix: str) -> bool:
    """True when the rest of the line (after the cursor) holds more than closing brackets, quotes
    and separators: completing in the middle of written code is noise."""
    return any(ch not in LINE_END_CHARS for ch in line_suffix.rstrip("\r\n"))


def indentation(line: str) -> int:
    """Width of the leading whitespace (a tab counts 4)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4
        else:
            break
    return width


def wants_multiline(line_prefix: str, line_suffix: str, mode: str = "auto") -> bool:
    """Multi-line after a block opener or on an empty line; single line in the middle of a
    statement or when code follows the cursor on its line."""
    if mode in ("always", "never"):
        return mode == "always"
    if line_suffix.strip(" \t\r\n;)]}\"'"):
        return False
    stripped = line_prefix.rstrip()
    return not stripped or stripped.endswith(BLOCK_OPENERS)


@dataclass
class Cursor:
    """The text around the cursor that post-processing needs."""

    line_prefix: str  # the cursor's line up to the cursor
    line_suffix: str  # the cursor's line after the cursor (no newline)
    next_lines: str  # the suffix after the cursor's line (a few lines are enough)
    prev_line: str = ""  # the last non-blank line before the cursor's line
    multiline: bool = False
    # is_finished's memo: the complete lines it checked last and its answer (they change once a line).
    _checked: tuple[str, bool] | None = field(default=None, init=False, repr=False, compare=False)


def _block_indent(cur: Cursor) -> int:
    """Lines of a multi-line suggestion must stay at or beyond this indentation."""
    base = indentation(cur.line_prefix) if cur.line_prefix.strip() else len(cur.line_prefix.expandtabs(4))
    if cur.line_prefix.rstrip().endswith(BLOCK_OPENERS):
        return base + 1  # the block's body is deeper than its opener
    if not cur.line_prefix.strip() and cur.prev_line.rstrip().endswith(BLOCK_OPENERS):
        return max(base, indentation(cur.prev_line) + 1)
    return base


# ---- strings and brackets ----------------------------------------------------------------------

class _Open(NamedTuple):
    """What is open at a point of a scanned text (see _scan)."""

    outer: str = ""  # brackets already open where the text starts, innermost last
    brackets: str = ""  # brackets the text opened and has not closed, innermost last
    quote: str = ""  # the open string's delimiter (`"`, `'''`, ...), "#" in a comment, "" in code
    inherited: bool = False  # that string or comment was already open where the text starts

    @property
    def depth(self) -> int:
        """How many brackets are open."""
        return len(self.outer) + len(self.brackets)

    def as_outer(self) -> _Open:
        """The same, all of it counted as open before the text that follows (the cursor's state,
        for scanning the suggestion)."""
        return _Open(self.outer + self.brackets, "", self.quote, bool(self.quote))


_NOTHING_OPEN = _Open()  # where a text starts in code, outside any bracket


def _scan(text: str, start: _Open = _NOTHING_OPEN) -> list[_Open]:
    """What is open after each prefix of `text` (element k: after text[:k]), `start` being open where
    it begins. Brackets in strings and comments are text. A closer closes the innermost open bracket
    when it is of its kind, and nothing otherwise (a stray `]` leaves a `(` open). While none of the
    text's own brackets are open, a closer closes one opened before it: the innermost of `outer`, or
    one before anything scanned (_outer_closers finds these). A one-quote string ends at the end of
    its line at the latest; a triple-quoted one may span lines."""
    state = start
    states = [state]
    skip = 0
    for i, ch in enumerate(text):
        quote = state.quote
        if skip:
            skip -= 1
        elif quote == "#":
            if ch == "\n":
                state = state._replace(quote="", inherited=False)
        elif quote:
            if ch == "\\":
                skip = 1
            elif text.startswith(quote, i) or (ch == "\n" and len(quote) == 1):
                skip = len(quote) - 1 if ch != "\n" else 0
                state = state._replace(quote="", inherited=False)
        elif text.startswith(('"""', "'''"), i):
            state, skip = state._replace(quote=text[i : i + 3]), 2
        elif ch in QUOTES or ch == "#":
            state = state._replace(quote=ch)
        elif ch in OPENERS:
            state = state._replace(brackets=state.brackets + ch)
        elif ch in CLOSERS:
            if state.brackets:
                if state.brackets[-1] == CLOSERS[ch]:
                    state = state._replace(brackets=state.brackets[:-1])
            elif state.outer.endswith(CLOSERS[ch]):
                state = state._replace(outer=state.outer[:-1])
        states.append(state)  # unchanged states are shared: most characters change nothing
    return states


def _outer_closers(text: str, states: list[_Open]) -> list[int]:
    """Where `text` closes a bracket open before it: a closer in code while none of the brackets
    opened since are open (`states`: _scan's, of `text` or of text that starts with it)."""
    return [i for i, ch in enumerate(text) if ch in CLOSERS and not states[i].quote and not states[i].brackets]


def _balanced(state: _Open) -> bool:
    """Nothing the text opened is still open (a comment, or a string open before it, is fine)."""
    return not state.brackets and (not state.quote or state.quote == "#" or state.inherited)


def _open_after(text: str, start: _Open = _NOTHING_OPEN) -> _Open:
    """What is open at the end of `text`."""
    return _scan(text, start)[-1]


def _strip_dangling(text: str) -> str:
    match = _DANGLING.search(text)
    return text[: match.start()] if match else text


def _trim_line(lines: list[str], at_cursor: _Open) -> list[str]:
    """The last line was cut short (by a loop, or by the token limit): end it at its last point where
    everything the suggestion opened is closed, without the name whose call (or index) that drops,
    nor a dangling operator; drop it if none, or if only a keyword is left."""
    text = "\n".join(lines)
    line_start = len(text) - len(lines[-1])
    states = _scan(text, at_cursor)
    ends = [k for k in range(line_start, len(text) + 1) if _balanced(states[k])]
    if not ends:
        return lines[:-1]
    end = ends[-1]
    if text[end : end + 1] in OPENERS:
        callee = _CALLEE.search(text[line_start:end])
        assert callee is not None  # the pattern matches any text (at least its empty end)
        end -= len(callee.group())  # `len(` goes with `len`
    last = _strip_dangling(text[line_start:end])
    return lines[:-1] + ["" if keyword.iskeyword(last.strip()) else last]  # a lone `return`: nothing


def _trim_to_complete_lines(lines: list[str], at_cursor: _Open) -> list[str]:
    """The token limit cut the last line of a multi-line suggestion: drop it, and end at the last line
    end where everything the suggestion opened is closed (not inside a call's arguments or a
    docstring)."""
    text = "\n".join(lines[:-1])
    states = _scan(text, at_cursor)
    ends = [k for k, state in enumerate(states) if _balanced(state) and (k == len(text) or text[k] == "\n")]
    return text[: ends[-1]].split("\n") if ends else []


# ---- loops within a line -------------------------------------------------------------------------

def _copies(line: str, start: int, unit: str, open_end: bool) -> int:
    """How many copies of `unit` follow one another from `start`; with `open_end` (the output was cut
    off there, still repeating) a last copy cut short counts once it has MIN_PARTIAL_COPY characters."""
    count, at = 0, start
    while line.startswith(unit, at):
        count, at = count + 1, at + len(unit)
    rest = line[at:]
    return count + (open_end and len(rest) >= MIN_PARTIAL_COPY and unit.startswith(rest))


def _is_loop(line: str, start: int, unit: str, depth: int, open_end: bool) -> bool:
    if len(unit) - unit.count(" ") < MIN_LOOP_SPAN or (unit + unit).find(unit, 1) != len(unit):
        return False  # too short, or a repeat of a shorter span (`====`): judged as that span
    if all(m.group() in _LITERAL_NAMES for m in _NAME.finditer(_STRING.sub("", unit))):
        return False  # no name, only literals (`0.0, `, `None, `): a row of data
    if depth:
        needed = INNER_LOOP_COPIES
    elif unit.startswith(".") or sum(map(unit.count, OPENERS)) > sum(map(unit.count, CLOSERS)):
        needed = CHAIN_LOOP_COPIES
    else:
        needed = LOOP_COPIES
    return _copies(line, start, unit, open_end) >= needed


def _loop_end(line: str, line_open: _Open = _NOTHING_OPEN, open_end: bool = False) -> int | None:
    """Where a line that loops should end: after the first copy of its earliest span that repeats
    (see MIN_LOOP_SPAN and LOOP_COPIES). A span starting inside a string or a comment is text, free
    to repeat (`"%s, %s, %s, %s"`, `# dict-of-dict-of-dict`). `line_open`: what is open where
    the line starts. `open_end`: the output was cut off at the end of the line. None: the line
    does not loop."""
    line = line[:LOOP_SEARCH_CHARS]
    states = _scan(line, line_open)
    for start in range(len(line)):
        if states[start].quote or _inside_word(line, start):
            continue
        for size in range(MIN_LOOP_SPAN, (len(line) - start) // 2 + 1):
            unit = line[start : start + size]
            if line.startswith(unit, start + size) and not _inside_word(line, start + size) \
                    and _is_loop(line, start, unit, states[start].depth, open_end):
                return start + size
    return None


def _inside_word(line: str, at: int) -> bool:
    """Spans are whole tokens: `one, N` in `None, None, ...` is not one."""
    return 0 < at < len(line) and (line[at - 1].isalnum() or line[at - 1] == "_") \
        and (line[at].isalnum() or line[at] == "_")


# ---- what follows the cursor, and definitions ------------------------------------------------------

@dataclass
class _Below:
    """The code after the cursor, for the suggestion not to repeat it."""

    first: str  # the first non-blank line
    headers: set[str]  # definition lines (`def name(...):`)
    pairs: set[tuple[str, str]]  # consecutive non-blank lines

    @classmethod
    def of(cls, next_lines: str) -> _Below:
        lines = [line.strip() for line in next_lines.split("\n") if line.strip()]
        return cls(lines[0] if lines else "", {line for line in lines if _DEFINITION.match(line)},
                   set(zip(lines, lines[1:], strict=False)))


def _repeats_below(lines: list[str], i: int, below: _Below) -> bool:
    """Line i starts text that already follows the cursor: a definition found below (a file defines a
    name once), or two consecutive lines of code found together below (one line alone, such as
    `return result`, may well be written twice)."""
    stripped = lines[i].strip()
    if stripped in below.headers:
        return True
    following = next((line.strip() for line in lines[i + 1 :] if line.strip()), "")
    return (stripped, following) in below.pairs and bool(_NAME.search(stripped) and _NAME.search(following))


def _new_definition(stripped: str, indent: int, scope: int, last_code: tuple[int, str]) -> bool:
    """A definition (or its decorator) at or left of the indentation where the suggestion's code
    began: the next piece of the file, not more of this one. A definition right under a decorator
    at its indentation belongs to it."""
    if indent > scope or not (_DEFINITION.match(stripped) or _DECORATOR.match(stripped)):
        return False
    return not (_DECORATOR.match(last_code[1]) and last_code[0] == indent)


@dataclass
class Suggestion:
    text: str  # inserted at the cursor
    replaces_line_suffix: bool = False  # True: it replaces the rest of the cursor's line too

    def __bool__(self) -> bool:
        return bool(self.text.strip())


def postprocess(raw: str, cur: Cursor, truncated: bool = False) -> Suggestion:
    """The suggestion to show for model output `raw` (text generated at the cursor). `truncated`:
    generation was stopped, by the token limit or early (is_finished), rather than ending naturally,
    so the output's last line is unfinished."""
    return _process(raw, cur, truncated)[0]


def _process(raw: str, cur: Cursor, truncated: bool = False) -> tuple[Suggestion, bool]:
    """The suggestion, and whether a rule ended it before the end of `raw`."""
    text = raw.replace("\r\n", "\n")
    if not cur.multiline and "\n" in text:
        text, truncated = text.split("\n", 1)[0], False  # the line did end
    walk = _LineWalk(cur, text.split("\n"), truncated)
    stopped = walk.run()
    kept = walk.kept
    if walk.looped:
        kept = _trim_line(kept, walk.at_cursor)  # the rest of the line is gone: it may have closed brackets
    elif truncated and not stopped and kept:
        kept = _trim_to_complete_lines(kept, walk.at_cursor) if len(kept) > 1 else _trim_line(kept, walk.at_cursor)
    out = "\n".join(line.rstrip() for line in kept).rstrip()
    replaces = walk.replaces
    if not replaces and not cur.multiline and walk.tail and out.endswith(walk.tail):
        out = out[: -len(walk.tail)]  # `"abc|"` -> `def"`: the quote is already there
    return Suggestion(out if out.strip() else "", replaces and bool(out.strip())), stopped


def _closers_after(cur: Cursor) -> tuple[str, str]:
    """The characters after the cursor that may close a bracket open before it ('' for none): one for
    the brackets the cursor's line opened, one for those an earlier line opened. The first is the first
    character of the rest of the line, or of the next line with code when the rest is blank. A closer
    that starts a line indented less than the cursor's is the second kind (the `):` of `if (` split
    over lines after `f(x, |`; the `) from exc` under `raise ValueError(` after `msg or self.|`)."""
    if cur.line_suffix.strip():
        return cur.line_suffix.lstrip()[0], ""
    for line in cur.next_lines.split("\n"):
        if line.strip():
            first = line.lstrip()[0]
            if first in CLOSERS and indentation(line) < indentation(cur.line_prefix):
                return "", first
            return first, ""
    return "", ""


class _LineWalk:
    """The output's lines, kept one by one until a rule ends the suggestion."""

    def __init__(self, cur: Cursor, lines: list[str], truncated: bool) -> None:
        self.cur, self.lines, self.truncated = cur, lines, truncated
        self.tail = cur.line_suffix.rstrip()
        self.next_closer, self.earlier_closer = _closers_after(cur)
        self.block = _block_indent(cur)
        self.below = _Below.of(cur.next_lines)
        self.fresh_line = not cur.line_prefix.strip()  # the suggestion's first line is a whole line
        # What is open at the cursor (the string or comment it is in, brackets of its line): all of it
        # opened before the suggestion, whose own brackets are then `brackets`.
        self.at_cursor = _open_after(cur.line_prefix).as_outer()
        self.line_open = self.at_cursor  # what is open where the current line starts
        self.scope: int | None = None  # the indentation where the suggestion's code begins
        self.last_code = (0, "")  # indentation and text of the last line of code kept
        self.kept: list[str] = []
        self.replaces = False  # the suggestion replaces the rest of the cursor's line
        self.looped = False  # the last kept line was cut where it started repeating itself

    def run(self) -> bool:
        """Keep lines; True when a rule ended the suggestion before the output's end."""
        for i, line in enumerate(self.lines):
            stripped = line.strip()
            indent = indentation(self.cur.line_prefix + line if i == 0 else line)
            states = _scan(line + "\n", self.line_open)  # the newline ends a one-quote string or a comment
            closes_outer = _outer_closers(line, states)  # closers of brackets opened before the cursor
            if self._ends_before(i, line, stripped, indent, closes_outer):
                return True
            if not self._keep(i, line, closes_outer, states):
                return True
            if stripped:
                self.scope = indent if self.scope is None else self.scope
                self.last_code = (indent, stripped)
            self.line_open = states[-1]
        return False

    def _ends_before(self, i: int, line: str, stripped: str, indent: int, closes_outer: list[int]) -> bool:
        """Whether the suggestion ends before line i (a closing line may still be kept here)."""
        cur = self.cur
        if i == 0 and cur.multiline and stripped and self.fresh_line and stripped == cur.prev_line.strip():
            return True  # the first line only repeats the line above
        if cur.multiline and stripped and (i > 0 or self.fresh_line) and _repeats_below(self.lines, i, self.below):
            return True  # never suggest what already follows the cursor
        if i == 0 or not stripped:
            return False
        if stripped == self.below.first:
            return True  # the output starts repeating what follows the cursor
        if any(stripped == k.strip() for k in self.kept[-2:] if k.strip()):
            return True  # the model is looping
        if self.scope is not None and _new_definition(stripped, indent, self.scope, self.last_code):
            return True  # the next definition: this suggestion is one piece of code
        if indentation(line) >= self.block:
            return False
        # The end of the block. A closing line is kept when it closes what the suggestion opened, or
        # what the rest of the cursor's line closes (then it replaces it).
        if stripped[0] in CLOSERS:
            if self.line_open.brackets and not closes_outer:
                self.kept.append(line)
            elif self.tail and stripped.startswith(self.tail):
                self.kept.append(line)
                self.replaces = True
        return True

    def _keep(self, i: int, line: str, closes_outer: list[int], states: list[_Open]) -> bool:
        """Keep line i, or the part of it before a rule cuts it; whether the walk goes on."""
        loop = _loop_end(line, self.line_open, open_end=self.truncated and i == len(self.lines) - 1)
        if loop is not None:
            line, self.looped = line[:loop], True  # keep the first copy of what repeats
        for at in closes_outer:
            if at >= len(line):
                break  # past the end of a line cut where it loops
            # The output closes a bracket opened before the cursor (on its line while any of that
            # line's are open, else on an earlier line). Fine when the text after the cursor does not
            # close it too; when it does, the suggestion must end there.
            if line[at] != (self.next_closer if states[at].outer else self.earlier_closer):
                continue
            rest_of_line = line[at:].rstrip()
            if i == 0 and self.tail and rest_of_line.startswith(self.tail) and rest_of_line != self.tail:
                self.replaces = True  # `foo(|)` -> `a, b) + 1`: rewrite the `)` as part of the line
                break
            self.kept.append(line[:at])
            return False
        self.kept.append(line)
        return not (self.replaces or self.looped)


def is_finished(partial: str, cur: Cursor) -> bool:
    """While streaming: has the output already gone past the point where post-processing will cut
    it? Then the engine can stop instead of generating tokens that would be thrown away."""
    done_upto = partial.rfind("\n")
    if not cur.multiline and done_upto >= 0:
        return True
    line_open = _open_after(cur.line_prefix + partial[: done_upto + 1])
    if _loop_end(partial[done_upto + 1 :], line_open) is not None:
        return True  # the line being written loops (full copies only: a third copy may yet differ)
    if not cur.multiline or done_upto <= 0 or not partial[:done_upto].strip():
        return False
    done = partial[:done_upto]
    if cur._checked is None or cur._checked[0] != done:
        cur._checked = (done, _process(done, cur)[1])
    return cur._checked[1]
