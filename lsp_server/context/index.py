"""The workspace index: the text of every indexable file on disk, cut into windows for BM25, kept
current by a watchdog observer (files created, changed, deleted or moved on disk).

Which files count is engine/sourcefiles.py's decision (gitignore, vendored, generated, binary, huge,
secret). Open buffers are not stored here: the gatherer reads them from the document store, which is
fresher than the disk.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from engine.sourcefiles import SourceFilter, iter_source_files, read_source_text

from .snippets import BM25, Snippet, windows

log = logging.getLogger(__name__)

MAX_FILES = 20_000
MAX_TOTAL_CHARS = 200_000_000


class WorkspaceIndex:
    def __init__(self, root: str | os.PathLike[str], excludes: tuple[str, ...] = (),
                 max_files: int = MAX_FILES) -> None:
        self.root = Path(root).resolve()
        self.excludes = excludes
        self.max_files = max_files
        self.filter = SourceFilter(self.root, excludes)
        self.texts: dict[str, str] = {}
        self.bm25 = BM25()
        self.lock = threading.RLock()
        self.total_chars = 0
        self.generation = 0  # bumped on every change, so callers can cache per generation
        self._observer = None
        self.on_change: Callable[[str, str], None] | None = None  # (event, rel path)

    # ---- building ---------------------------------------------------------------------------

    def build(self, progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> int:
        """Index every source file (blocking; run it on a thread). Returns the number indexed."""
        paths = list(iter_source_files(self.root, extra_excludes=self.excludes, max_files=self.max_files))
        for i, rel in enumerate(paths):
            if should_stop is not None and should_stop():
                break
            self.update(rel)
            if progress is not None and (i % 50 == 0 or i == len(paths) - 1):
                progress(i + 1, len(paths))
        return len(self.texts)

    def update(self, rel: str) -> bool:
        """(Re)read one file; True when it is (still) indexed. Removed when it no longer qualifies."""
        text = read_source_text(self.root / rel)
        if text is None:
            self.remove(rel)
            return False
        return self.put(rel, text)

    def put(self, rel: str, text: str) -> bool:
        """Index `text` as the file `rel` (read from disk by `update`; given directly by tools that
        build the server's prompts from files in memory). False when the index is full."""
        with self.lock:
            old = self.texts.get(rel)
            if old == text:
                return True
            if old is None and (len(self.texts) >= self.max_files or self.total_chars + len(text) > MAX_TOTAL_CHARS):
                return False
            self.bm25.remove_path(rel)
            for snip in windows(rel, text, "similar"):
                self.bm25.add(snip)
            self.total_chars += len(text) - (len(old) if old else 0)
            self.texts[rel] = text
            self.generation += 1
        return True

    def remove(self, rel: str) -> None:
        with self.lock:
            old = self.texts.pop(rel, None)
            if old is None:
                return
            self.bm25.remove_path(rel)
            self.total_chars -= len(old)
            self.generation += 1

    # ---- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, rel: str) -> str | None:
        return self.texts.get(rel)

    def paths(self) -> set[str]:
        with self.lock:
            return set(self.texts)

    def search(self, query: set[str], limit: int, exclude: set[str] | None = None) -> list[Snippet]:
        with self.lock:
            hits = self.bm25.search(query, limit + len(exclude or ()) * 4)
        return [h for h in hits if not exclude or h.path not in exclude][:limit]

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """Workspace-relative "/" path of an absolute path, or None when outside the workspace."""
        try:
            rel = Path(path).resolve().relative_to(self.root)
        except (ValueError, OSError):
            return None
        return rel.as_posix()

    # ---- watching -----------------------------------------------------------------------------

    def start_watching(self) -> bool:
        """Follow changes on disk; False when watching is impossible (the index still works)."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return False
        index = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                try:
                    index._on_event(event)
                except Exception:  # a watcher thread must never die
                    log.exception("index update failed for %s", event)

        try:
            self._observer = Observer()
            self._observer.schedule(Handler(), str(self.root), recursive=True)
            self._observer.start()
        except Exception as exc:  # e.g. out of inotify watches
            log.warning("cannot watch %s: %s", self.root, exc)
            self._observer = None
            return False
        return True

    def stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None

    def _on_event(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        paths = [(event.event_type == "moved", event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append((False, event.dest_path))
        for gone, raw in paths:
            raw = os.fsdecode(raw)
            rel = self.relative(raw)
            if rel is None or rel.startswith(".git/"):
                continue
            if gone or event.event_type == "deleted" or not os.path.isfile(raw):
                if rel in self.texts:
                    self.remove(rel)
                    self._notify("deleted", rel)
                continue
            try:
                size = os.path.getsize(raw)
            except OSError:
                continue
            if self.filter.accepts(rel, size):
                if self.update(rel):
                    self._notify("changed", rel)
            elif rel in self.texts:
                self.remove(rel)
                self._notify("deleted", rel)

    def _notify(self, what: str, rel: str) -> None:
        if self.on_change is not None:
            self.on_change(what, rel)
