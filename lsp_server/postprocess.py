"""Turn raw model output into the suggestion an editor shows. Pure functions, no engine.

The rules users of other completion tools ask for (shared/reference/peers.md): no suggestion where the
rest of the line makes one pointless; single line unless the cursor starts a block or an empty line;
stop where the output starts repeating the text after the cursor or itself; keep brackets balanced
with the suffix; stop at the end of the current block by indentation; trim trailing whitespace.
"""

from __future__ import annotations

from dataclasses import dataclass

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
# What may follow the cursor on its line for a suggestion to still make sense.
LINE_END_CHARS = set(")]}\"'`;,: \t")
BLOCK_OPENERS = (":", "{", "(", "[", "=>", " do", " then", "->")


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


def _block_indent(cur: Cursor) -> int:
    """Lines of a multi-line suggestion must stay at or beyond this indentation."""
    base = indentation(cur.line_prefix) if cur.line_prefix.strip() else len(cur.line_prefix.expandtabs(4))
    if cur.line_prefix.rstrip().endswith(BLOCK_OPENERS):
        return base + 1  # the block's body is deeper than its opener
    if not cur.line_prefix.strip() and cur.prev_line.rstrip().endswith(BLOCK_OPENERS):
        return max(base, indentation(cur.prev_line) + 1)
    return base


def _first_meaningful(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def _scan_brackets(text: str, stack: list[str], start: int = 0) -> int | None:
    """Walk `text` from `start`, updating the stack of open brackets; return the index of the first
    closer that closes a bracket opened before the suggestion (the stack is empty), else None.
    Quoted strings are skipped roughly (to the closing quote or the end of the line)."""
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == "\n" or (ch == quote and text[i - 1] != "\\"):
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if not stack:
                return i
            if stack[-1] == CLOSERS[ch]:
                stack.pop()
    return None


@dataclass
class Suggestion:
    text: str  # inserted at the cursor
    replaces_line_suffix: bool = False  # True: it replaces the rest of the cursor's line too

    def __bool__(self) -> bool:
        return bool(self.text.strip())


def postprocess(raw: str, cur: Cursor) -> Suggestion:
    """The suggestion to show for model output `raw` (text generated at the cursor)."""
    return _process(raw, cur)[0]


def _process(raw: str, cur: Cursor) -> tuple[Suggestion, bool]:
    """The suggestion, and whether a rule ended it before the end of `raw`."""
    text = raw.replace("\r\n", "\n")
    if not cur.multiline:
        text = text.split("\n", 1)[0]
    lines = text.split("\n")
    tail = cur.line_suffix.rstrip()
    after_cursor = (cur.line_suffix + "\n" + cur.next_lines).lstrip()
    block = _block_indent(cur)
    next_line = _first_meaningful(cur.next_lines)
    kept: list[str] = []
    stack: list[str] = []
    replaces = False
    stopped = True
    for i, line in enumerate(lines):
        stripped = line.strip()
        if i == 0 and cur.multiline and stripped and not cur.line_prefix.strip() \
                and stripped == cur.prev_line.strip():
            break  # the first line only repeats the line above
        if i > 0 and stripped:
            if next_line and stripped == next_line:
                break  # the output starts repeating what follows the cursor
            if any(stripped == k.strip() for k in kept[-2:] if k.strip()):
                break  # the model is looping
            if indentation(line) < block:
                # The end of the block. A closing line is kept when it closes what the suggestion
                # opened, or what the rest of the cursor's line closes (then it replaces it).
                if stripped[0] in CLOSERS:
                    if stack and _scan_brackets(line, list(stack)) is None:
                        kept.append(line)
                    elif tail and stripped.startswith(tail):
                        kept.append(line)
                        replaces = True
                break
        pos = 0
        cut = None
        while (at := _scan_brackets(line, stack, pos)) is not None:
            # The output closes a bracket opened before the cursor. Fine when the text after the
            # cursor does not close it too; when it does, the suggestion must end there.
            if after_cursor[:1] != line[at]:
                pos = at + 1
                continue
            rest_of_line = line[at:].rstrip()
            if i == 0 and tail and rest_of_line.startswith(tail) and rest_of_line != tail:
                replaces = True  # `foo(|)` -> `a, b) + 1`: rewrite the `)` as part of the line
            else:
                cut = at
            break
        if cut is not None:
            kept.append(line[:cut])
            break
        kept.append(line)
        if replaces:
            break
    else:
        stopped = False
    out = "\n".join(line.rstrip() for line in kept).rstrip()
    if not replaces and not cur.multiline and tail and out.endswith(tail):
        out = out[: -len(tail)]  # `"abc|"` -> `def"`: the quote is already there
    return Suggestion(out if out.strip() else "", replaces and bool(out.strip())), stopped


def is_finished(partial: str, cur: Cursor) -> bool:
    """While streaming: has the output already gone past the point where post-processing will cut
    it? Then the engine can stop instead of generating tokens that would be thrown away."""
    if not cur.multiline:
        return "\n" in partial
    done_upto = partial.rfind("\n")
    if done_upto <= 0 or not partial[:done_upto].strip():
        return False
    return _process(partial[:done_upto], cur)[1]
