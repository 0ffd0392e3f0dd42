"""Cross-file completion cases built from a real Python package (CrossCodeEval style). Pure: a dict of
{workspace-relative path: text} in, cases out; no I/O.

Three kinds, each a use of something defined in *another* file of the package:
- `import`: a name the file imports from a sibling module (`from .x import A`, `from pkg.x import A`,
  through a package `__init__` re-export too); the cursor just before the name.
- `module_attr`: `m.Name` after `import pkg.mod as m` or `from pkg import mod`; the cursor after `m.`.
- `self_base`: `self.name` in a method of a class whose base class, defined in another file, defines
  `name` (and the class itself does not); the cursor after `self.`.

For each case the rest of the line from the cursor on is removed (that is the target); everything
else of the file stays. benchmarks/crossfile.py measures completions on the packages below; the default
model's recipe finds the same kinds of cursor in its training corpus (never in these packages).
"""

from __future__ import annotations

import ast
import posixpath
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

KINDS = ("import", "module_attr", "self_base")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str


# Pure Python, permissively licensed, several modules that import each other; none of them is in the
# training corpus (recipes/default_model/build_corpus.py: BENCHMARK_PACKAGES keeps them out of every
# training run).
PACKAGES = (
    Package("marshmallow", "4.4.0", "MIT"),
    Package("markdown", "3.11.3", "BSD-3-Clause"),
    Package("parso", "0.8.7", "MIT"),
    Package("wtforms", "3.3.2", "BSD-3-Clause"),
)
# Kept out of training as well, and out of the benchmarks' defaults (`--packages flask,toolz` asks for
# them): added after the retrieval and adaptation choices had been made on the four above, so they tell
# how those do on repositories that played no part in making them.
UNSEEN_PACKAGES = (
    Package("flask", "3.1.2", "BSD-3-Clause"),
    Package("toolz", "1.0.0", "BSD-3-Clause"),
)
ALL_PACKAGES = PACKAGES + UNSEEN_PACKAGES

_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")


@dataclass(frozen=True)
class Case:
    path: str  # workspace-relative
    kind: str  # one of KINDS
    line: int  # 0-based
    column: int  # code points into the line
    name: str  # the identifier the completion should start with
    target: str  # the removed rest of the line (trailing blanks stripped)
    text: str  # the file with that rest of the line removed
    typed: str = ""  # the start of `name` already typed before the cursor (see `typed`)

    def typed_to(self, n: int) -> Case | None:
        """The same case with the first `n` characters of the name typed (as when completion is asked
        while typing it): the cursor after them, the completion to write the rest of the line. None
        when the name is not longer than `n`."""
        if len(self.name) <= n:
            return None
        lines = self.text.split("\n")
        lines[self.line] += self.name[:n]
        return Case(self.path, self.kind, self.line, self.column + n, self.name, self.target, "\n".join(lines),
                    self.name[:n])

    @property
    def expected(self) -> str:
        """What the completion should write: the line's removed rest, less what was typed."""
        return self.target[len(self.typed) :]

    @property
    def utf16_column(self) -> int:
        """The cursor's column in UTF-16 code units (what LSP positions count)."""
        prefix = self.text.split("\n")[self.line][: self.column]
        return len(prefix.encode("utf-16-le")) // 2


@dataclass
class _Module:
    path: str
    tree: ast.Module
    defined: set[str] = field(default_factory=set)  # top-level def/class/assigned names
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    # local name -> ("name", file, original name) or ("module", file, "")
    bindings: dict[str, tuple[str, str, str]] = field(default_factory=dict)


def module_path(module: str, files: set[str]) -> str | None:
    base = module.replace(".", "/")
    for cand in (base + ".py", base + "/__init__.py"):
        if cand in files:
            return cand
    return None


def _from_base(path: str, level: int, module: str | None) -> str:
    """The dotted module an ImportFrom names, made absolute for a file at `path`."""
    if not level:
        return module or ""
    parts = posixpath.dirname(path).split("/") if posixpath.dirname(path) else []
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([module] if module else []))


def _summarise(path: str, tree: ast.Module, files: set[str]) -> _Module:
    mod = _Module(path, tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            mod.defined.add(node.name)
            if isinstance(node, ast.ClassDef):
                mod.classes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            mod.defined.update(t.id for t in targets if isinstance(t, ast.Name))
    for imp in ast.walk(tree):
        if isinstance(imp, ast.ImportFrom):
            base = _from_base(path, imp.level, imp.module)
            target = module_path(base, files) if base else None
            for alias in imp.names:
                if alias.name == "*":
                    continue
                local = alias.asname or alias.name
                sub = module_path(f"{base}.{alias.name}", files) if base else None
                if sub is not None:
                    mod.bindings[local] = ("module", sub, "")
                elif target is not None:
                    mod.bindings[local] = ("name", target, alias.name)
        elif isinstance(imp, ast.Import):
            for alias in imp.names:
                target = module_path(alias.name, files)
                if target is not None and alias.asname:
                    mod.bindings[alias.asname] = ("module", target, "")
    return mod


def _definition(modules: dict[str, _Module], file: str, name: str, depth: int = 0) -> tuple[str, str] | None:
    """(the file that defines `name` as seen from module `file`, the name it has there), following
    re-exports."""
    mod = modules.get(file)
    if mod is None or depth > 4:
        return None
    if name in mod.defined:
        return file, name
    bound = mod.bindings.get(name)
    if bound is not None and bound[0] == "name":
        return _definition(modules, bound[1], bound[2], depth + 1)
    return None


def _defining_file(modules: dict[str, _Module], file: str, name: str) -> str | None:
    found = _definition(modules, file, name)
    return found[0] if found else None


def _class_members(modules: dict[str, _Module], file: str, cls: ast.ClassDef, depth: int = 0) -> set[str]:
    """Methods and attributes a class defines (its body, and `self.x = ...` in its methods),
    with those of its bases that can be found."""
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    for sub in ast.walk(cls):
        if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                and isinstance(sub.value, ast.Name) and sub.value.id == "self"):
            names.add(sub.attr)
    if depth < 4:
        for base_file, base in _bases(modules, file, cls):
            names |= _class_members(modules, base_file, base, depth + 1)
    return names


def _bases(modules: dict[str, _Module], file: str, cls: ast.ClassDef) -> Iterator[tuple[str, ast.ClassDef]]:
    mod = modules[file]
    for base in cls.bases:
        if isinstance(base, ast.Subscript):  # Generic[T], Field[str]
            base = base.value
        if isinstance(base, ast.Name):
            # Through re-exports, to the name the defining file uses.
            where, name = _definition(modules, file, base.id) or (None, base.id)
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
            bound = mod.bindings.get(base.value.id)
            if bound is None or bound[0] != "module":
                continue
            where = _defining_file(modules, bound[1], base.attr)
            name = base.attr
        else:
            continue
        if where is not None and name in modules[where].classes:
            yield where, modules[where].classes[name]


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _case(path: str, lines: list[str], kind: str, lineno: int, byte_col: int, name: str) -> Case | None:
    line = lines[lineno - 1]
    col = _char_col(line, byte_col)
    target = line[col:].rstrip()
    if not target.startswith(name) or (len(target) > len(name) and _IDENT_CHAR.match(target[len(name)])):
        return None
    cut = lines[: lineno - 1] + [line[:col]] + lines[lineno:]
    return Case(path, kind, lineno - 1, col, name, target, "\n".join(cut))


def file_cases(path: str, modules: dict[str, _Module], text: str) -> list[Case]:
    """Every cross-file case in one file."""
    mod = modules[path]
    lines = text.split("\n")
    out: list[Case] = []
    imported = {local: b for local, b in mod.bindings.items()
                if b[0] == "name" and (_defining_file(modules, path, local) or path) != path}
    modules_bound = {local: b[1] for local, b in mod.bindings.items() if b[0] == "module" and b[1] != path}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in imported:
            case = _case(path, lines, "import", node.lineno, node.col_offset, node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in modules_bound and node.end_lineno == node.value.end_lineno
              and _defining_file(modules, modules_bound[node.value.id], node.attr)):
            case = _attr_case(path, lines, "module_attr", node)
        else:
            continue
        if case is not None:
            out.append(case)
    for cls in (n for n in ast.walk(mod.tree) if isinstance(n, ast.ClassDef)):
        own = _class_members(modules, path, cls, depth=99)  # its own members only
        inherited: set[str] = set()
        for base_file, base in _bases(modules, path, cls):
            if base_file != path:
                inherited |= _class_members(modules, base_file, base)
        inherited -= own
        if not inherited:
            continue
        for node in ast.walk(cls):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
                    and isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in inherited
                    and node.end_lineno == node.value.end_lineno):
                case = _attr_case(path, lines, "self_base", node)
                if case is not None:
                    out.append(case)
    return out


def _attr_case(path: str, lines: list[str], kind: str, node: ast.Attribute) -> Case | None:
    line = lines[node.value.end_lineno - 1]  # type: ignore[operator]
    dot = _char_col(line, node.value.end_col_offset)  # type: ignore[arg-type]
    if not line[dot:].startswith("." + node.attr):
        return None  # `m . name` or across lines: not a plain attribute use
    byte_col = len(line[: dot + 1].encode("utf-8"))
    return _case(path, lines, kind, node.value.end_lineno, byte_col, node.attr)  # type: ignore[arg-type]


def build_cases(files: dict[str, str]) -> list[Case]:
    """Every cross-file case of a package, one per (file, line), in a stable order."""
    paths = {p for p in files if p.endswith(".py")}
    modules: dict[str, _Module] = {}
    for path in sorted(paths):
        try:
            tree = ast.parse(files[path])
        except (SyntaxError, ValueError):
            continue
        modules[path] = _summarise(path, tree, paths)
    seen: set[tuple[str, int]] = set()
    out = []
    for path in sorted(modules):
        for case in sorted(file_cases(path, modules, files[path]), key=lambda c: (c.line, c.column)):
            if (path, case.line) not in seen:
                seen.add((path, case.line))
                out.append(case)
    return out


def sample_cases(cases: list[Case], count: int, seed: int = 0) -> list[Case]:
    """`count` cases, the kinds taken in turn (a kind that runs out leaves its turns to the others),
    each kind shuffled with a fixed seed."""
    rng = random.Random(seed)
    pools = {kind: [c for c in cases if c.kind == kind] for kind in KINDS}
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[Case] = []
    while len(picked) < count and any(pools.values()):
        for kind in KINDS:
            if pools[kind] and len(picked) < count:
                picked.append(pools[kind].pop())
    return picked
