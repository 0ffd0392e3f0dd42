"""Retrieval of what the cursor needs (Python): the definitions of the names the code around the
cursor uses, resolved through the buffer's imports into the workspace's other files (relative and
absolute imports, `import pkg.mod as m` then `m.Name`, package `__init__` re-exports), and the members
of the classes it works with (`self.` -> the enclosing class's bases, across files; `m.` -> the
module's names; `Name.` -> that class). Each comes back as a compact snippet (symbols.py) ranked
above lexical windows.

Per keystroke this reads the buffer with line scans (refs.py) and looks up outlines of the other
files, which are parsed once per file text and kept in a bounded cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ..lru import LRU
from .imports import python_module_file, relative_stem
from .refs import Binding, buffer_imports, cursor_chain, enclosing_class, names_near
from .snippets import Snippet
from .symbols import Definition, ModuleOutline, outline_module

# Ranking boosts (on top of the lexical score in snippets.rank, which is at most 1 + a source bonus
# of 0.3): what the cursor's own expression names first, then names used near the cursor (nearer
# first), then the enclosing class's bases, then everything else the file imports.
BOOST_AT_CURSOR = 4.0
BOOST_NEAR = 3.0
BOOST_BASES = 2.5
BOOST_IMPORTED = 1.5
MAX_DEPTH = 4  # re-exports and base classes followed this deep
MAX_SNIPPETS = 24
MAX_OUTLINE_CHARS = 400_000  # bigger files are not parsed (a parse would stall a keystroke)
MAX_MODULE_NAMES = 30  # `m.` at the cursor: this many of the module's names
_WORD = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Found:
    path: str
    definition: Definition | None  # None: `path` is the module itself


def module_file(from_path: str, level: int, module: str, files: Collection[str],
                memo: dict[tuple[str, int, str], str | None] | None = None) -> str | None:
    """The workspace file a (possibly relative) module name refers to, seen from `from_path`.
    `memo` caches absolute lookups (each may scan the file list) for one version of that list."""
    if not level:
        if not module:
            return None
        key = ("", 0, module)
        if memo is not None and key in memo:
            return memo[key]
        found = python_module_file(module, files)
        if memo is not None:
            if len(memo) > 4096:
                memo.clear()
            memo[key] = found
        return found
    stem = relative_stem(from_path, level, module)
    for cand in (stem + ".py", stem + "/__init__.py", stem + ".pyi"):
        if cand in files:
            return cand
    return None


class OutlineCache:
    """Module outlines per path, rebuilt only when the file's text changes; at most `max_entries`
    files (least recently used dropped first)."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: LRU[str, tuple[str, ModuleOutline | None]] = LRU(max_entries)
        # The same files' top-level names (members.py), kept beside their outlines.
        self.top_names: LRU[str, tuple[str, Any]] = LRU(max_entries)

    def get(self, path: str, text: str) -> ModuleOutline | None:
        hit = self._entries.get(path)
        if hit is not None and (hit[0] is text or hit[0] == text):
            return hit[1]
        outline = outline_module(text) if len(text) <= MAX_OUTLINE_CHARS else None
        self._entries[path] = (text, outline)
        return outline

    def __len__(self) -> int:
        return len(self._entries)


class Resolver:
    """Follows names through the workspace's Python files (`read(path)` gives a file's text)."""

    def __init__(self, files: Collection[str], read: Callable[[str], str | None], cache: OutlineCache,
                 current: str, memo: dict[tuple[str, int, str], str | None] | None = None) -> None:
        self.files, self.read, self.cache, self.current = files, read, cache, current
        self.memo = memo

    def module(self, from_path: str, level: int, module: str) -> str | None:
        return module_file(from_path, level, module, self.files, self.memo)

    def outline(self, path: str) -> ModuleOutline | None:
        if path == self.current:
            return None  # the buffer is read by refs.py, never from disk
        text = self.read(path)
        return self.cache.get(path, text) if text else None

    def binding(self, from_path: str, bound: Binding) -> Found | None:
        """What an import binding refers to: a module, or a name followed to its definition."""
        level, module, name = bound
        if name is None:
            target = self.module(from_path, level, module)
            return Found(target, None) if target and target != self.current else None
        sub = self.module(from_path, level, f"{module}.{name}" if module else name)
        if sub is not None and sub != self.current:
            return Found(sub, None)  # `from pkg import mod`
        target = self.module(from_path, level, module)
        return self.member(target, name) if target else None

    def member(self, path: str, name: str, depth: int = 0) -> Found | None:
        """`name` as module `path` defines or re-exports it."""
        outline = self.outline(path)
        if outline is None or depth > MAX_DEPTH:
            return None
        if name in outline.defs:
            return Found(path, outline.defs[name])
        if name in outline.imports:
            level, module, orig = outline.imports[name]
            if orig is None:
                target = self.module(path, level, module)
                return Found(target, None) if target else None
            sub = self.module(path, level, f"{module}.{orig}" if module else orig)
            if sub is not None:
                return Found(sub, None)
            target = self.module(path, level, module)
            return self.member(target, orig, depth + 1) if target else None
        for level, module in outline.star_imports:
            target = self.module(path, level, module)
            if target and (found := self.member(target, name, depth + 1)):
                return found
        return None

    def module_names(self, path: str, depth: int = 0) -> list[Found]:
        """What module `path` offers: its own definitions in source order, then the workspace
        definitions it imports (a package `__init__`'s re-exports), star imports followed."""
        outline = self.outline(path)
        if outline is None or depth > MAX_DEPTH:
            return []
        out = [Found(path, d) for d in outline.defs.values()]
        for name in outline.imports:
            if len(out) >= 2 * MAX_MODULE_NAMES:
                break
            found = self.member(path, name)
            if found is not None and found.definition is not None and found.path != path:
                out.append(found)
        for level, module in outline.star_imports:
            target = self.module(path, level, module)
            if target is not None:
                out += self.module_names(target, depth + 1)
        return out

    def bases(self, path: str, cls: Definition, depth: int = 0) -> list[Found]:
        """The base classes of `cls` (defined in `path`) that can be found, nearest first, then theirs."""
        out: list[Found] = []
        if depth > MAX_DEPTH:
            return out
        for base in cls.bases:
            found = self.base(path, base)
            if found is not None and found.definition is not None and found.definition.kind == "class":
                out.append(found)
                out += self.bases(found.path, found.definition, depth + 1)
        return out

    def base(self, path: str, written: str) -> Found | None:
        """A base class as written in module `path` (`Base` or `mod.Base`)."""
        owner, _, attr = written.rpartition(".")
        if not owner:
            return self.member(path, written)
        module = self.member(path, owner)
        return self.member(module.path, attr) if module is not None and module.definition is None else None


def _snippet(found: Found, boost: float, brief: bool = False) -> Snippet:
    d = found.definition
    assert d is not None
    return Snippet(found.path, d.short if brief else d.text, d.start_line, d.end_line, "definition", boost=boost)


def _module_snippets(resolver: Resolver, path: str, partial: str, boost: float, text: str, cursor: int,
                     owner: str) -> list[Snippet]:
    """`m.` at the cursor: module m's names that start with what is typed, re-exports of a package
    `__init__` included, one snippet per definition so the packer takes as many as fit. First the
    names the cursor's line spells (`'if_stmt': tree.` -> IfStmt), then those the buffer uses as
    `m.Name` elsewhere, then the public ones in source order."""
    found = [f for f in resolver.module_names(path) if f.definition is not None
             and f.definition.name.startswith(partial) and not f.definition.name.startswith("__")]
    line = text[text.rfind("\n", 0, cursor) + 1 : cursor]
    spelled = {_squash(w) for w in _WORD.findall(line) if len(w) >= 4}
    used = set(re.findall(rf"\b{re.escape(owner)}\.(\w+)", text[:200_000]))

    def order(f: Found) -> int:
        name = f.definition.name  # type: ignore[union-attr]
        squashed = _squash(name)
        if len(squashed) >= 4 and any(squashed in w or w in squashed for w in spelled):
            return 0
        return 1 if name in used else 2 if not name.startswith("_") else 3

    found.sort(key=order)
    return [_snippet(f, boost - 0.001 * i, brief=True) for i, f in enumerate(found[:MAX_MODULE_NAMES])]


def _squash(word: str) -> str:
    return word.replace("_", "").lower()


def definition_snippets(path: str, text: str, cursor: int, resolver: Resolver,
                        bindings: dict[str, Binding] | None = None) -> list[Snippet]:
    """Compact definitions from other workspace files that the code at `cursor` of `text` (the
    buffer of the file at `path`) refers to, each with a ranking boost. `bindings` may be passed
    when the caller caches buffer_imports(text)."""
    bindings = buffer_imports(text) if bindings is None else bindings
    out: dict[tuple[str, int, int], Snippet] = {}

    def add(snips: list[Snippet]) -> None:
        for s in snips:
            if s.key not in out or out[s.key].boost < s.boost:
                out[s.key] = s

    # 1. The expression at the cursor: `m.`, `self.`, `Class.`, or a name being typed.
    owner, partial = cursor_chain(text, cursor)
    cls = enclosing_class(text, cursor)
    if owner in ("self", "cls") and cls is not None:
        for i, base in enumerate(_class_bases(resolver, path, cls.bases, bindings)):
            add([_snippet(base, BOOST_AT_CURSOR - 0.01 * i)])  # nearest base first
    elif owner in bindings:
        found = resolver.binding(path, bindings[owner])
        if found is not None and found.definition is None:
            add(_module_snippets(resolver, found.path, partial, BOOST_AT_CURSOR, text, cursor, owner))
        elif found is not None:
            add([_snippet(found, BOOST_AT_CURSOR)])
            add([_snippet(b, BOOST_AT_CURSOR - 0.5) for b in resolver.bases(found.path, found.definition)])  # type: ignore[arg-type]
    elif not owner and partial:
        for local in sorted(n for n in bindings if n.startswith(partial) and n != partial):
            found = resolver.binding(path, bindings[local])
            if found is not None and found.definition is not None:
                add([_snippet(found, BOOST_AT_CURSOR - 0.5)])

    # 2. Names used near the cursor that the file imports, nearer first.
    near = names_near(text, cursor)
    for name, dist in sorted(near.items(), key=lambda kv: (kv[1], kv[0])):
        if name in bindings and name != owner:
            found = resolver.binding(path, bindings[name])
            if found is not None and found.definition is not None:
                add([_snippet(found, BOOST_NEAR - 0.01 * dist)])
        if len(out) >= MAX_SNIPPETS:
            break

    # 3. The enclosing class's bases, when the cursor is in a class.
    if cls is not None:
        for i, base in enumerate(_class_bases(resolver, path, cls.bases, bindings)):
            add([_snippet(base, BOOST_BASES - 0.01 * i)])

    # 4. Everything else the file imports from the workspace, in import order.
    for i, bound in enumerate(bindings.values()):
        if len(out) >= MAX_SNIPPETS:
            break
        found = resolver.binding(path, bound)
        if found is not None and found.definition is not None:
            add([_snippet(found, BOOST_IMPORTED - 0.001 * i, brief=True)])  # signatures: more of them fit
    return sorted(out.values(), key=lambda s: (-s.boost, s.key))[:MAX_SNIPPETS * 2]


def _class_bases(resolver: Resolver, path: str, bases: tuple[str, ...], bindings: dict[str, Binding]) -> list[Found]:
    """The buffer's class bases resolved through its imports, and their own bases."""
    out: list[Found] = []
    for base in bases:
        owner, _, attr = base.rpartition(".")
        bound = bindings.get(owner or base)
        if bound is None:
            continue
        found = resolver.binding(path, bound)
        if found is not None and found.definition is None and attr:
            found = resolver.member(found.path, attr)
        if found is not None and found.definition is not None and found.definition.kind == "class":
            out.append(found)
            out += resolver.bases(found.path, found.definition)
    return out
