"""What the code at the cursor refers to, read from the buffer being edited with line-based scans
that tolerate unfinished code (the buffer rarely parses while the user types): its imports, the class
around the cursor and its bases, the dotted expression right before the cursor, and the identifiers
used near it. Pure functions of (text, cursor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]{0,4000}\)?|[^\n#;]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.M)
_CLASS = re.compile(r"^([ \t]*)class[ \t]+([A-Za-z_]\w*)[ \t]*(?:\(([^)]*)\))?[ \t]*:")
_CLASS_ANYWHERE = re.compile(_CLASS.pattern, re.M)
_CHAIN = re.compile(r"((?:[A-Za-z_]\w*[ \t]*\.[ \t]*)*)([A-Za-z_]\w*)?$")
_IDENT = re.compile(r"[A-Za-z_]\w*")
SCAN_CHARS = 200_000  # imports are searched in the file's head only
CLASS_SCAN_LINES = 3000


Binding = tuple[int, str, "str | None"]  # (level, module, name or None for a module)


def buffer_imports(text: str) -> dict[str, Binding]:
    """Local name -> what it is bound to by the buffer's import lines (any indentation, unfinished
    parenthesised lists included): `from .x import A as B` gives B -> (1, "x", "A");
    `import a.b as m` gives m -> (0, "a.b", None); `import a.b` gives "a.b" -> (0, "a.b", None)."""
    head = text[:SCAN_CHARS]
    out: dict[str, Binding] = {}
    for m in _FROM.finditer(head):
        level, module = len(m.group(1)), m.group(2)
        names = m.group(3).strip().strip("()")
        for part in names.replace("\n", " ").split(","):
            bits = part.split()
            if not bits or not bits[0].isidentifier():
                continue
            local = bits[2] if len(bits) == 3 and bits[1] == "as" and bits[2].isidentifier() else bits[0]
            out[local] = (level, module, bits[0])
    for m in _IMPORT.finditer(head):
        for part in m.group(1).split(","):
            bits = part.split()
            if not bits or not all(p.isidentifier() for p in bits[0].split(".")):
                continue
            local = bits[2] if len(bits) == 3 and bits[1] == "as" and bits[2].isidentifier() else bits[0]
            out[local] = (0, bits[0], None)
    return out


def own_package_names(path: str, bindings: dict[str, Binding]) -> list[str]:
    """The names the buffer imports from its own package: `from .x import A` anywhere, `from pkg.x
    import A` where `pkg` is a folder of the file's path. Modules bound by `import` are left out: a
    name after them follows a dot, where the known-names rule decides."""
    folders = set(path.split("/")[:-1])
    return sorted(local for local, (level, module, name) in bindings.items()
                  if name is not None and (level > 0 or module.split(".")[0] in folders))


def starts_expression(line_prefix: str) -> bool:
    """Whether a name could start at the end of `line_prefix` (the line up to the cursor): not
    inside one or after a dot, nor (as far as one line tells) in a comment or a string."""
    if line_prefix and (line_prefix[-1].isalnum() or line_prefix[-1] in "_.'\""):
        return False
    return "#" not in line_prefix and line_prefix.count('"') % 2 == 0 and line_prefix.count("'") % 2 == 0


@dataclass(frozen=True)
class ClassAtCursor:
    name: str
    bases: tuple[str, ...]  # as written, subscripts and keyword arguments dropped
    line: int


def split_bases(text: str) -> tuple[str, ...]:
    out, depth, cur = [], 0, ""
    for ch in text + ",":
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            base = cur.split("[", 1)[0].strip()
            if base and "=" not in cur and all(p.isidentifier() for p in base.split(".")):
                out.append(base)
            cur = ""
        else:
            cur += ch
    return tuple(out)


def string_lines(lines: list[str]) -> set[int]:
    """Indices of the lines that start inside a triple-quoted string (their indentation means
    nothing: a docstring or an SQL text may run at column 0)."""
    inside, out = False, set()
    for i, line in enumerate(lines):
        if inside:
            out.add(i)
        if (line.count('"""') + line.count("'''")) % 2:
            inside = not inside
    return out


def enclosing_class(text: str, cursor: int) -> ClassAtCursor | None:
    """The class whose body holds the cursor, by indentation going up from the cursor's line."""
    start = text.rfind("\n", 0, cursor) + 1
    line = text[start:cursor]
    limit = len(line) - len(line.lstrip()) if line.strip() else 1 << 30
    above = text[:start].split("\n")[:-1][-CLASS_SCAN_LINES:]  # the lines above the cursor's
    first = text.count("\n", 0, start) - len(above)  # the line number of above[0]
    in_string = string_lines(above)
    for i in range(len(above) - 1, -1, -1):
        row = above[i]
        if i in in_string or not row.strip() or row.lstrip().startswith("#"):
            continue
        indent = len(row) - len(row.lstrip())
        if indent >= limit:
            continue
        if (m := _CLASS.match(row)) is not None:
            return ClassAtCursor(m.group(2), split_bases(m.group(3) or ""), first + i)
        if indent == 0:
            return None
        limit = indent
    return None


def class_named(text: str, name: str) -> ClassAtCursor | None:
    """The first class of the buffer called `name`, at any indentation."""
    for m in _CLASS_ANYWHERE.finditer(text):
        if m.group(2) == name:
            return ClassAtCursor(name, split_bases(m.group(3) or ""), text.count("\n", 0, m.start()))
    return None


def cursor_chain(text: str, cursor: int) -> tuple[str, str]:
    """(owner, partial) of the expression before the cursor: `m.Fo|` gives ("m", "Fo"), `self.|`
    gives ("self", ""), `Fo|` gives ("", "Fo")."""
    start = text.rfind("\n", 0, cursor) + 1
    m = _CHAIN.search(text[max(start, cursor - 200) : cursor])
    if m is None:
        return "", ""
    owner = re.sub(r"[ \t]", "", m.group(1)).rstrip(".")
    return owner, m.group(2) or ""


def names_near(text: str, cursor: int, lines_before: int = 40, lines_after: int = 8) -> dict[str, int]:
    """Identifiers around the cursor -> their distance in lines from the cursor's line (the nearest
    use). The cursor's own line counts as distance 0."""
    start = cursor
    for _ in range(lines_before + 1):
        start = text.rfind("\n", 0, start - 1) if start > 0 else -1
        if start < 0:
            break
    end = cursor
    for _ in range(lines_after + 1):
        end = text.find("\n", end + 1)
        if end < 0:
            end = len(text)
            break
    lo = max(start + 1, 0)
    cursor_line = text.count("\n", lo, cursor)
    out: dict[str, int] = {}
    for n, row in enumerate(text[lo:end].split("\n")):
        for word in _IDENT.findall(row):
            dist = abs(n - cursor_line)
            if dist < out.get(word, 1 << 30):
                out[word] = dist
    return out
