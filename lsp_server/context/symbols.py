"""What a Python module offers, compactly: its top-level definitions rendered as signatures,
docstring first lines and constants' values (not bodies), with its imports so names can be followed
through re-exports. Pure: text in, summary out; built with `ast`, so only for files that parse (the
other files of a workspace usually do; the buffer being edited is scanned by `cursor_refs`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TypeGuard

MAX_SIGNATURE_LINES = 6
MAX_VALUE_CHARS = 160
MAX_CLASS_LINES = 40
MAX_ATTRS = 16  # class attributes and self.x assignments shown per class


@dataclass(frozen=True)
class Definition:
    """A top-level def/class/constant: lines [start_line, end_line) of its file, rendered compactly."""

    name: str
    kind: str  # "def" | "class" | "const"
    start_line: int
    end_line: int
    text: str
    bases: tuple[str, ...] = ()  # a class's bases as written (`Base`, `mod.Base`), subscripts dropped
    members: tuple[str, ...] = ()  # a class's methods and attributes, in source order
    brief: str = ""  # a shorter rendering: the signature alone (a class: its header and __init__'s)

    @property
    def short(self) -> str:
        return self.brief or self.text


@dataclass
class ModuleOutline:
    defs: dict[str, Definition] = field(default_factory=dict)
    # local name -> (level, module, name or None for `import a.b as m`)
    imports: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    star_imports: list[tuple[int, str]] = field(default_factory=list)


def _first_doc_line(node: ast.AST) -> str | None:
    doc = ast.get_docstring(node, clean=True) if isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) else None
    if not doc:
        return None
    first = doc.strip().split("\n", 1)[0].strip()
    return first[:MAX_VALUE_CHARS] if first else None


def _header(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[str]:
    """Decorators and the `def`/`class` line(s) up to the colon, as written."""
    start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    end = node.body[0].lineno - 1 if node.body else node.lineno
    header = [line.rstrip() for line in lines[start:max(end, node.lineno)]]
    # A body on the header's own line (`def f(): return 1`) or comments between: keep up to the colon.
    while header and not header[-1].split("#", 1)[0].rstrip().endswith(":") and len(header) > node.lineno - start:
        header.pop()
    if len(header) > MAX_SIGNATURE_LINES:
        header = header[: MAX_SIGNATURE_LINES - 1] + [header[-1]]
    return header


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _render_function(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    header = _header(lines, node)
    inner = _indent_of(header[-1] if header else "") + "    "
    out = list(header)
    doc = _first_doc_line(node)
    if doc:
        out.append(f'{inner}"""{doc}"""')
    out.append(inner + "...")
    return out


def _self_assignments(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Assign | ast.AnnAssign]:
    """Assignments to `self.x` anywhere in a method (in branches and loops too), in source order."""
    found = [n for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign))
             and any(_is_self_attr(t) for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _one_line(lines: list[str], node: ast.stmt) -> str:
    """A statement's source on one line, long values cut."""
    text = " ".join(line.strip() for line in lines[node.lineno - 1 : (node.end_lineno or node.lineno)])
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 4].rstrip() + " ..."


def _base_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        return f"{expr.value.id}.{expr.attr}"
    return None


def _render_class(lines: list[str], node: ast.ClassDef) -> tuple[list[str], list[str]]:
    """(rendered lines, member names): header, docstring's first line, class attributes, the
    attributes its methods set on `self` (first assignment of each, `__init__`'s first), then
    method signatures; past MAX_CLASS_LINES lines, the header, docstring and `__init__` and a
    comment naming every member."""
    out = _header(lines, node)
    header_len = len(out)
    inner = _indent_of(out[-1] if out else "") + "    "
    doc = _first_doc_line(node)
    if doc:
        out.append(f'{inner}"""{doc}"""')
    members: list[str] = []
    attrs: list[str] = []
    methods: list[str] = []
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            members.append(stmt.name)
            functions.append(stmt)
            methods += _render_function(lines, stmt)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            members += [t.id for t in targets if isinstance(t, ast.Name)]
            attrs.append(inner + _one_line(lines, stmt))
        elif isinstance(stmt, ast.ClassDef):
            members.append(stmt.name)
            methods += _header(lines, stmt) + [inner + "    ..."]
    seen = set(members)
    for func in sorted(functions, key=lambda f: f.name != "__init__"):
        for stmt in _self_assignments(func):
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                if _is_self_attr(target) and target.attr not in seen and len(seen) < 200:
                    seen.add(target.attr)
                    members.append(target.attr)
                    if len(attrs) < MAX_ATTRS:
                        attrs.append(inner + _one_line(lines, stmt))
    out += attrs + methods
    if len(out) > MAX_CLASS_LINES:
        # Too big to show whole: the constructor (what a call site needs) and every member's name
        # (what `self.` in a subclass needs), in a few hundred tokens that fit beside the file.
        init = next((_render_function(lines, f) for f in functions if f.name == "__init__"), [])
        names = [m for m in members if not m.startswith("__")]
        out = out[: header_len + (1 if doc else 0)] + init + [inner + "# members: " + ", ".join(names)]
    elif len(out) == header_len:
        out.append(inner + "...")
    return out, members


def _is_self_attr(target: ast.expr) -> TypeGuard[ast.Attribute]:
    return isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"


def outline_module(text: str) -> ModuleOutline | None:
    """The outline of a module's source, or None when it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    lines = text.split("\n")
    out = ModuleOutline()
    for node in tree.body:
        end = (node.end_lineno or node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            header = _header(lines, node)
            out.defs[node.name] = Definition(node.name, "def", start, end,
                                             "\n".join(_render_function(lines, node)) + "\n",
                                             brief="\n".join(header) + " ...\n")
        elif isinstance(node, ast.ClassDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            rendered, members = _render_class(lines, node)
            bases = tuple(b for b in map(_base_name, node.bases) if b)
            init = next((f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and f.name == "__init__"), None)
            brief = _header(lines, node) + (_header(lines, init) if init is not None else [])
            out.defs[node.name] = Definition(node.name, "class", start, end, "\n".join(rendered) + "\n",
                                             bases, tuple(members), "\n".join(brief) + " ...\n")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out.defs[t.id] = Definition(t.id, "const", node.lineno - 1, end, _one_line(lines, node) + "\n")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    out.star_imports.append((node.level, node.module or ""))
                else:
                    out.imports[alias.asname or alias.name] = (node.level, node.module or "", alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.imports[alias.asname or alias.name] = (0, alias.name, None)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports and the like
            for sub in node.body:
                if isinstance(sub, ast.ImportFrom):
                    for alias in sub.names:
                        if alias.name != "*":
                            out.imports.setdefault(alias.asname or alias.name, (sub.level, sub.module or "", alias.name))
    return out
