"""The attribute names that exist where the cursor is about to write one (Python).

After `self.` / `cls.` in a class, `m.` for a workspace module bound by an import, or `Name.` for a
workspace class, the names the attribute can be are known: the class's own members (read from the
buffer), those of its bases across files, or the module's top-level names. The engine then keeps the
completion's first name among them (engine/name_choice.py), so a suggestion never calls a method that
does not exist. Only where the whole set is known: a base class from outside the workspace (say
`Exception` or `ast.NodeVisitor`), a module with `__getattr__` or an unresolved star import, or a
chain (`self.a.`) give no names, and the model writes freely.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..lru import LRU
from .definitions import MAX_DEPTH, MAX_OUTLINE_CHARS, Resolver
from .refs import Binding, ClassAtCursor, class_named, cursor_chain, enclosing_class, string_lines

# Bases that add no attribute a completion would write.
NEUTRAL_BASES = frozenset({"object", "ABC", "abc.ABC", "Generic", "typing.Generic", "Protocol", "typing.Protocol"})
# A class or module that defines these makes attributes up: no names are known for it.
DYNAMIC = frozenset({"__getattr__", "__getattribute__"})
# What every instance and every module has.
OBJECT_NAMES = frozenset(dir(object)) | {"__dict__", "__module__", "__weakref__", "__slots__"}
MODULE_NAMES = frozenset({"__name__", "__file__", "__doc__", "__all__", "__path__", "__package__", "__spec__",
                          "__loader__", "__dict__", "__builtins__"})
_MEMBER_LINE = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_]\w*)|^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)")
_SELF_ATTR = re.compile(r"\b(?:self|cls)\.([A-Za-z_]\w*)")
_SLOT = re.compile(r"['\"]([A-Za-z_]\w*)['\"]")


@dataclass(frozen=True)
class KnownNames:
    """The attribute names possible at the cursor, and the part of one already typed."""

    names: frozenset[str]
    typed: str

    def choices(self) -> tuple[str, ...] | None:
        """The rest of each name that starts with what is typed (None when none does: the user is
        writing a new name, e.g. setting an attribute for the first time)."""
        rest = sorted(n[len(self.typed) :] for n in self.names if n.startswith(self.typed))
        return tuple(rest) if rest else None


def known_names(path: str, text: str, cursor: int, resolver: Resolver,
                bindings: dict[str, Binding]) -> KnownNames | None:
    """The names an attribute written at `cursor` of the buffer `text` (the file at `path`) can
    be, when they are all known."""
    owner, typed = cursor_chain(text, cursor)
    if owner in ("self", "cls"):
        cls = enclosing_class(text, cursor)
        # The class is read without the name being typed at the cursor (`self.per|` is no member).
        unfinished = text[: cursor - len(typed)] + text[cursor:]
        names = buffer_class_names(unfinished, cls, resolver, path, bindings) if cls is not None else None
        always = OBJECT_NAMES
    elif owner and owner in bindings:
        names, always = _bound_names(resolver, path, bindings[owner])
    else:
        return None
    if not names or names & DYNAMIC:
        return None
    return KnownNames(names | always, typed)


def buffer_class_names(text: str, cls: ClassAtCursor, resolver: Resolver, path: str,
                       bindings: dict[str, Binding], depth: int = 0) -> frozenset[str] | None:
    """The members of a class of the buffer (by line scan: the buffer rarely parses) and of its bases."""
    names = set(_class_block_names(text, cls.line))
    for base in cls.bases:
        if base in NEUTRAL_BASES:
            continue
        local = class_named(text, base) if depth < MAX_DEPTH else None
        if local is not None:
            more = buffer_class_names(text, local, resolver, path, bindings, depth + 1)
        else:
            more = _imported_class_names(resolver, path, base, bindings)
        if more is None:
            return None
        names |= more
    return frozenset(names)


def _class_block_names(text: str, class_line: int) -> Iterable[str]:
    """Names defined in the body of the class at line `class_line`: methods, nested classes, class
    attributes, `__slots__`, and every `self.x` / `cls.x` the body mentions."""
    lines = text.split("\n")
    head = lines[class_line]
    indent = len(head) - len(head.lstrip())
    body_indent = None
    body = lines[class_line + 1 :]
    in_string = string_lines(body)
    for i, line in enumerate(body):
        if i in in_string or not line.strip() or line.lstrip().startswith("#"):
            continue
        here = len(line) - len(line.lstrip())
        if here <= indent:
            break
        if body_indent is None:
            body_indent = here
        if here == body_indent and (m := _MEMBER_LINE.match(line)) is not None:
            yield m.group(1) or m.group(2)
            if m.group(2) == "__slots__":
                yield from _SLOT.findall(line)
        yield from _SELF_ATTR.findall(line)


def _imported_class_names(resolver: Resolver, path: str, base: str, bindings: dict[str, Binding]) -> frozenset[str] | None:
    """A base as written in the buffer (`Base` or `mod.Base`), found through its imports."""
    owner, _, attr = base.rpartition(".")
    bound = bindings.get(owner or base)
    if bound is None:
        return None
    found = resolver.binding(path, bound)
    if found is not None and found.definition is None and attr:
        found = resolver.member(found.path, attr)
    if found is None or found.definition is None or found.definition.kind != "class":
        return None
    return class_names(resolver, found.path, found.definition.name)


def class_names(resolver: Resolver, path: str, name: str, depth: int = 0) -> frozenset[str] | None:
    """The members of workspace class `name` of module `path` and of all its bases."""
    outline = resolver.outline(path)
    cls = outline.defs.get(name) if outline is not None else None
    if cls is None or cls.kind != "class" or depth > MAX_DEPTH:
        return None
    names = set(cls.members)
    for base in cls.bases:
        if base in NEUTRAL_BASES:
            continue
        found = resolver.base(path, base)
        if found is None or found.definition is None or found.definition.kind != "class":
            return None
        more = class_names(resolver, found.path, found.definition.name, depth + 1)
        if more is None:
            return None
        names |= more
    return frozenset(names)


def _bound_names(resolver: Resolver, path: str, bound: Binding) -> tuple[frozenset[str] | None, frozenset[str]]:
    """`m.` for an imported workspace module m, or `Name.` for an imported workspace class: the
    names found, and those every such module or class has."""
    found = resolver.binding(path, bound)
    if found is None:
        return None, frozenset()
    if found.definition is None:
        return module_names(resolver, found.path), MODULE_NAMES
    if found.definition.kind == "class":
        return class_names(resolver, found.path, found.definition.name), OBJECT_NAMES
    return None, frozenset()


def module_names(resolver: Resolver, path: str, depth: int = 0) -> frozenset[str] | None:
    """Every name module `path` binds at its top level (a package also has its submodules), star
    imports of workspace modules followed; None when they cannot all be known."""
    text = resolver.read(path)
    if not text or depth > MAX_DEPTH:
        return None
    bound = _top_level_names(resolver.cache.top_names, path, text)
    if bound is None:
        return None
    names, stars = bound
    out = set(names)
    for level, module in stars:
        target = resolver.module(path, level, module)
        more = module_names(resolver, target, depth + 1) if target else None
        if more is None:
            return None
        out |= more
    if path.endswith("/__init__.py"):
        package = path[: -len("__init__.py")]
        for other in resolver.files:
            rest = other[len(package) :] if other.startswith(package) else ""
            if rest.endswith(".py") and rest.count("/") <= 1 and rest != "__init__.py":
                out.add(rest.split("/")[0].removesuffix(".py"))
    return frozenset(out)


def _top_level_names(cache: LRU, path: str, text: str) -> tuple[frozenset[str], tuple[tuple[int, str], ...]] | None:
    """(names, star imports) of a module's source, parsed once per text; None when it does not parse
    or sets names in ways a reader cannot follow (`__getattr__`, `globals()`)."""
    hit = cache.get(path)
    if hit is not None and (hit[0] is text or hit[0] == text):
        return hit[1]
    result = None
    if len(text) <= MAX_OUTLINE_CHARS and "globals()" not in text and "sys.modules[__name__]" not in text:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
        if tree is not None:
            names: set[str] = set()
            stars: list[tuple[int, str]] = []
            _bind_block(tree.body, names, stars)
            names |= {n for node in ast.walk(tree) if isinstance(node, ast.Global) for n in node.names}
            result = None if "__getattr__" in names else (frozenset(names), tuple(stars))
    cache[path] = (text, result)
    return result


def _bind_block(body: list[ast.stmt], names: set[str], stars: list[tuple[int, str]]) -> None:
    """Names bound by the statements of a module's top level, inside `if`/`try`/`with`/`for` too."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name == "*":
                    stars.append((node.level, node.module or ""))
                else:
                    names.add(a.asname or a.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    names.update(n.id for n in ast.walk(item.optional_vars) if isinstance(n, ast.Name))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue  # their bodies bind their own names
        for handler in getattr(node, "handlers", ()):  # try / try*
            if handler.name:
                names.add(handler.name)
            _bind_block(handler.body, names, stars)
        for field in ("body", "orelse", "finalbody"):  # if, try, with, for, while
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                _bind_block(inner, names, stars)
