"""The workspace index: the text of every indexable file on disk, cut into windows for BM25, kept
current by a watchdog observer (files created, changed, deleted or moved on disk).

Which files count is engine/sourcefiles.py's decision (gitignore, vendored, generated, binary, huge,
secret). Open buffers are not stored here: the gatherer reads them from the document store, which is
fresher than the disk.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.sourcefiles import SourceFilter, iter_source_files, read_source_text

from .snippets import BM25, Snippet, windows

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

_SERIALS = itertools.count(1)

MAX_FILES = 20_000
MAX_TOTAL_CHARS = 200_000_000
MAX_PENDING = 50_000  # changed paths waiting to be re-read; beyond that the tree is listed again
COALESCE_S = 0.2  # how long a burst of events may keep coming before its paths are re-read


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
        self._bytes: dict[str, int] = {}  # per file: its text and its windows' texts, in memory
        self.total_bytes = 0
        self.generation = 0  # bumped on every change, so callers can cache per generation ...
        self.serial = next(_SERIALS)  # ... of this index (a rebuilt one counts from 0 again)
        self._observer: BaseObserver | None = None
        self.on_change: Callable[[str, str], None] | None = None  # (event, rel path)
        # Paths changed on disk (absolute -> whether an event called it a directory), for the updater.
        self._pending: dict[str, bool] = {}
        self._rescan = False
        self._changed = threading.Condition()
        self._stopping = False
        self._built = threading.Event()  # changes are applied only after the build (no two writers)

    # ---- building ---------------------------------------------------------------------------

    def build(self, progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> int:
        """Index every source file (blocking; run it on a thread). Returns the number indexed."""
        try:
            paths = list(iter_source_files(self.root, extra_excludes=self.excludes, max_files=self.max_files))
            for i, rel in enumerate(paths):
                if should_stop is not None and should_stop():
                    break
                self.update(rel)  # a file gone or changed since it was listed is dropped or read as it is now
                if progress is not None and (i % 50 == 0 or i == len(paths) - 1):
                    progress(i + 1, len(paths))
        finally:
            self._built.set()
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
            wins = windows(rel, text, "similar")
            for snip in wins:
                self.bm25.add(snip)
            self.total_chars += len(text) - (len(old) if old else 0)
            self.texts[rel] = text
            held = sys.getsizeof(text) + sum(sys.getsizeof(snip.text) for snip in wins)
            self.total_bytes += held - self._bytes.get(rel, 0)
            self._bytes[rel] = held
            self.generation += 1
        return True

    def remove(self, rel: str) -> None:
        with self.lock:
            old = self.texts.pop(rel, None)
            if old is None:
                return
            self.bm25.remove_path(rel)
            self.total_chars -= len(old)
            self.total_bytes -= self._bytes.pop(rel, 0)
            self.generation += 1

    # ---- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, rel: str) -> str | None:
        return self.texts.get(rel)

    def paths(self) -> set[str]:
        with self.lock:
            return set(self.texts)

    def snapshot(self) -> dict[str, str]:
        """Every indexed file's text by path, as it is now (the watcher may change the index meanwhile)."""
        with self.lock:
            return dict(self.texts)

    def search(self, query: set[str], limit: int, exclude: set[str] | None = None) -> list[Snippet]:
        with self.lock:
            hits = self.bm25.search(query, limit + len(exclude or ()) * 4)
        return [h for h in hits if not exclude or h.path not in exclude][:limit]

    # ---- watching -----------------------------------------------------------------------------

    def start_watching(self) -> bool:
        """Follow changes on disk; False when watching is impossible (the index still works).

        Start it before build(): changes made while the build runs are collected, and applied once it is
        done. Events only mark paths as changed (a burst of created/modified/closed events for ten
        thousand files marks each once); an updater thread re-reads each marked path once, from what
        is on disk then. When events were lost (the kernel's queue overflowed) or too many paths are
        waiting, the whole tree is listed again instead."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return False
        index = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                try:
                    index._mark(event)
                except Exception:  # a watcher thread must never die
                    log.exception("index update failed for %s", event)

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.root), recursive=True)
            observer.start()
            self._observer = observer
        except Exception as exc:  # e.g. out of inotify watches
            log.warning("cannot watch %s: %s", self.root, exc)
            self._observer = None
            return False
        self._stopping = False
        threading.Thread(target=self._apply_changes, name="index-updater", daemon=True).start()
        return True

    def stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def _mark(self, event) -> None:  # type: ignore[no-untyped-def]
        """Note what an event says changed; no I/O here (the observer's thread must keep up)."""
        if event.event_type in ("opened", "closed_no_write", "attrib"):
            return
        with self._changed:
            if event.event_type == "events_lost" or len(self._pending) >= MAX_PENDING:
                self._rescan = True  # listing the tree again is cheaper than following each path
                self._pending.clear()
            else:
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        path = os.fsdecode(raw)
                        self._pending[path] = self._pending.get(path, False) or event.is_directory
            self._changed.notify()

    def _apply_changes(self) -> None:
        """The updater thread: after the build, apply marked changes in batches until stopped."""
        self._built.wait()
        while True:
            with self._changed:
                while not (self._pending or self._rescan or self._stopping):
                    self._changed.wait()
                if self._stopping:
                    return
            time.sleep(COALESCE_S)  # let a burst finish: its events mark each path once
            with self._changed:
                batch, self._pending = self._pending, {}
                rescan, self._rescan = self._rescan, False
            try:
                if rescan:
                    self.resync()
                for raw, is_directory in batch.items():
                    self._refresh(raw, is_directory)
            except Exception:  # the updater must never die
                log.exception("index update failed")

    def resync(self) -> None:
        """Make the index match the disk again: list every file, drop the ones gone, (re)read the rest."""
        listed = list(iter_source_files(self.root, extra_excludes=self.excludes, max_files=self.max_files))
        for rel in self.paths() - set(listed):
            self.remove(rel)
            self._notify("deleted", rel)
        for rel in listed:
            self.update(rel)
        log.info("index: listed the workspace again: %d files", len(self))

    def _refresh(self, raw: str, is_directory: bool) -> None:
        """Bring one changed path up to date with the disk, whatever happened to it meanwhile."""
        try:  # not resolved: a path that is now a symbolic link still names the entry that changed
            rel = Path(os.path.abspath(raw)).relative_to(self.root).as_posix()
        except ValueError:
            return
        if rel == "." or rel.startswith(".git/"):
            return
        if os.path.isdir(raw):  # a new directory (the observer reports the files in it), maybe where a file was
            if rel in self.texts:
                self.remove(rel)
                self._notify("deleted", rel)
            return
        if not os.path.isfile(raw):  # deleted, moved away, or no regular file any more
            gone = [rel] if rel in self.texts else []
            if is_directory:  # a directory moved out of the workspace: no event names its files
                gone = [p for p in self.paths() if p.startswith(rel + "/")]
            for path in gone:
                self.remove(path)
                self._notify("deleted", path)
            return
        try:
            size = os.path.getsize(raw)
        except OSError:
            return
        if self.filter.accepts(rel, size):
            if self.update(rel):
                self._notify("changed", rel)
        elif rel in self.texts:
            self.remove(rel)
            self._notify("deleted", rel)

    def _notify(self, what: str, rel: str) -> None:
        if self.on_change is not None:
            self.on_change(what, rel)
