"""Collect candidate snippets from every source for one completion request.

Sources: the definitions the code at the cursor refers to, in other files (`definition`, Python;
definitions.py), other open documents (`open`), regions recently edited in them (`edit`), files the
current file imports (`import`), BM25-similar windows of the repository (`similar`), and far-away parts
of the current file itself (`local`). The builder ranks, deduplicates and packs them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..lru import LRU
from .definitions import OutlineCache, Resolver, definition_snippets
from .imports import PY_LANGS, outline, resolve_imports
from .index import WorkspaceIndex
from .members import KnownNames, known_names
from .refs import Binding, buffer_imports, own_package_names, starts_expression
from .snippets import WINDOW_STRIDE, Snippet, windows

EDIT_WINDOW = 30
MAX_LOCAL_CHARS = 500_000  # bigger current files get no `local` windows (too costly per keystroke)
MAX_OPEN_CHARS = 1_000_000
MAX_WINDOW_CHARS = 16_000_000  # windows cached across keystrokes (each line is in two windows)
_IMPORT_LINE = re.compile(r"^.*\b(?:import|require|from)\b.*$", re.M)
_TRAILING_NAME = re.compile(r"[A-Za-z0-9_]*$")  # the part of a name typed before the cursor


@dataclass
class OpenDoc:
    path: str  # workspace-relative when inside the workspace, else the URI's path
    text: str
    language: str
    version: int


@dataclass
class Request:
    path: str
    text: str
    language: str
    cursor: int
    version: int
    others: list[OpenDoc] = field(default_factory=list)
    edits: list[tuple[str, int]] = field(default_factory=list)  # (path, line), most recent first
    isolated: bool = False  # a document outside the workspace: no other file's content may join it

    @property
    def is_python(self) -> bool:
        return self.language in PY_LANGS or self.path.endswith(".py")


def _windows_chars(key: tuple[str, str], entry: tuple[int, list[Snippet]]) -> int:
    return sum(len(s.text) for s in entry[1])


class Gatherer:
    """Gathers candidates, caching per-document windows by version (the same windows, with their
    word sets, serve every keystroke until that document changes). Both caches are bounded: the
    windows by the characters they hold, the resolved imports by count."""

    def __init__(self, max_window_chars: int = MAX_WINDOW_CHARS, max_entries: int = 256) -> None:
        self._windows: LRU[tuple[str, str], tuple[int, list[Snippet]]] = LRU(
            max_entries, max_window_chars, _windows_chars)
        self._imports: LRU[tuple[str, str, int], list[str]] = LRU(max_entries)
        self._outlines = OutlineCache()
        # Per workspace generation: the file list and module-name lookups; per buffer: its imports.
        self._files: tuple[tuple[int, frozenset[str]], set[str]] | None = None
        self._module_memo: tuple[int, dict[tuple[str, int, str], str | None]] = (-1, {})
        self._buffer_imports: tuple[str, str, dict[str, Binding]] | None = None
        self._import_lines_of: tuple[str, str] | None = None  # (a buffer's text, its import lines)

    def gather(self, req: Request, index: WorkspaceIndex | None, query: set[str],
               similar_limit: int = 32) -> list[Snippet]:
        if req.isolated:  # a file outside the workspace: no other file's content joins it
            index = None
        out: list[Snippet] = []
        open_paths = {d.path for d in req.others} | {req.path}
        texts = {d.path: d for d in req.others}

        for doc in req.others:
            if len(doc.text) <= MAX_OPEN_CHARS:
                out += self._cached_windows(doc.path, doc.text, doc.version, "open")
        for path, line in req.edits[:8]:
            edited = texts.get(path)
            if edited is None:
                continue
            start = max(0, (line // 10) * 10 - 10)  # aligned so the key stays put while typing
            lines = edited.text.split("\n")[start : start + EDIT_WINDOW]
            body = "\n".join(lines)
            if body.strip():
                out.append(Snippet(path, body.rstrip("\n") + "\n", start, start + len(lines), "edit"))
        if index is not None or req.others:
            # The import lines and the file list serve both the definitions and the imports.
            import_lines = self._import_lines(req)
            files = self._workspace_files(index, frozenset(texts))
            if req.is_python:
                out += self._definition_snippets(req, index, texts, import_lines, files)
            out += self._import_snippets(req, index, texts, import_lines, files)
        if len(req.text) <= MAX_LOCAL_CHARS:
            out += self._cached_windows(req.path, req.text, req.version, "local")
        if index is not None and similar_limit > 0:
            out += index.search(query, similar_limit, exclude=open_paths)
        return out

    def forget(self, path: str) -> None:
        """A document was closed: drop what was cached for it."""
        self._windows.drop_where(lambda key: key[0] == path)
        self._imports.drop_where(lambda key: key[0] == path)

    def _cached_windows(self, path: str, text: str, version: int, source: str) -> list[Snippet]:
        key = (path, source)
        hit = self._windows.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        wins = windows(path, text, source, stride=WINDOW_STRIDE)
        self._windows[key] = (version, wins)
        return wins

    def _workspace_files(self, index: WorkspaceIndex | None, open_paths: frozenset[str]) -> set[str]:
        """The indexed files and the open documents, rebuilt only when either changes."""
        key = (index.generation if index is not None else 0, open_paths)
        if self._files is None or self._files[0] != key:
            self._files = (key, (index.paths() if index is not None else set()) | set(open_paths))
        return self._files[1]

    def _definition_snippets(self, req: Request, index: WorkspaceIndex | None, open_docs: dict[str, OpenDoc],
                             import_lines: str, files: set[str]) -> list[Snippet]:
        resolver, bindings = self._resolver(req, index, open_docs, import_lines, files)
        return definition_snippets(req.path, req.text, req.cursor, resolver, bindings)

    def known_names(self, req: Request, index: WorkspaceIndex | None) -> KnownNames | None:
        """The attribute names possible at the cursor (members.py), Python only; `index` None for
        the buffer alone (repository context off)."""
        if not req.is_python:
            return None
        if req.isolated:
            index = None
        open_docs = {d.path: d for d in req.others} if index is not None else {}
        import_lines = self._import_lines(req)
        files = self._workspace_files(index, frozenset(open_docs)) if index is not None else set()
        resolver, bindings = self._resolver(req, index, open_docs, import_lines, files)
        return known_names(req.path, req.text, req.cursor, resolver, bindings)

    def favored_names(self, req: Request) -> tuple[str, ...] | None:
        """At the start of an expression in Python, the names the buffer imports from its own
        package (refs.own_package_names), which the suggestion leans toward; inside a
        name typed there, the rest of those that go on from what is typed (`raise Valid|`:
        "ationError"), relative to the cursor as name choices are. None elsewhere, and where what is
        typed is already one of the names (it may be complete)."""
        if not req.is_python:
            return None
        line_prefix = req.text[req.text.rfind("\n", 0, req.cursor) + 1 : req.cursor]
        typed = _TRAILING_NAME.search(line_prefix).group()  # type: ignore[union-attr]
        if typed[:1].isdigit() or not starts_expression(line_prefix[: len(line_prefix) - len(typed)]):
            return None
        names = own_package_names(req.path, self._bindings(req, self._import_lines(req)))
        if typed in names:
            return None
        rests = [name[len(typed) :] for name in names if name.startswith(typed)]
        return tuple(rests) or None

    def _import_lines(self, req: Request) -> str:
        """The buffer's import lines, found once per buffer text (snippets and known names both
        need them for the same keystroke)."""
        hit = self._import_lines_of
        if hit is None or not (hit[0] is req.text or hit[0] == req.text):
            hit = (req.text, "\n".join(_IMPORT_LINE.findall(req.text[:200_000])))
            self._import_lines_of = hit
        return hit[1]

    def _resolver(self, req: Request, index: WorkspaceIndex | None, open_docs: dict[str, OpenDoc],
                  import_lines: str, files: set[str]) -> tuple[Resolver, dict[str, Binding]]:
        """A resolver over the workspace's files and the buffer's imports (both cached per version)."""
        generation = index.generation if index is not None else 0
        if self._module_memo[0] != generation:
            self._module_memo = (generation, {})
        def read(path: str) -> str | None:
            doc = open_docs.get(path)
            return doc.text if doc is not None else index.text(path) if index is not None else None

        resolver = Resolver(files, read, self._outlines, req.path, self._module_memo[1])
        return resolver, self._bindings(req, import_lines)

    def _bindings(self, req: Request, import_lines: str) -> dict[str, Binding]:
        """The buffer's import bindings, read again only when its import lines change."""
        if self._buffer_imports is None or self._buffer_imports[:2] != (req.path, import_lines):
            self._buffer_imports = (req.path, import_lines, buffer_imports(req.text))
        return self._buffer_imports[2]

    def _import_snippets(self, req: Request, index: WorkspaceIndex | None, open_docs: dict[str, OpenDoc],
                         import_lines: str, files: set[str]) -> list[Snippet]:
        # Resolving imports scans the file list: do it again only when the import lines or the
        # set of files change.
        digest = hashlib.blake2b(import_lines.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        key = (req.path, digest, index.generation if index is not None else 0)
        targets = self._imports.get(key)
        if targets is None:
            targets = resolve_imports(req.path, import_lines, req.language, files)
            self._imports.drop_where(lambda k: k[0] == req.path)  # one entry per file
            self._imports[key] = targets
        out = []
        for path in targets[:10]:
            doc = open_docs.get(path)
            text = doc.text if doc is not None else index.text(path) if index is not None else None
            if not text:
                continue
            n_lines = text.count("\n") + 1
            body = text if n_lines <= 60 else outline(text, req.language)
            if body.strip():
                out.append(Snippet(path, body.rstrip("\n") + "\n", 0, n_lines, "import"))
        return out
