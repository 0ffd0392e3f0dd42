"""The workspace index of one server, kept current: built on a daemon thread with progress, watched for
changes on disk, built again on request (codellama.reindexWorkspace, a changed `exclude`). What the
index holds and how it is searched is context/index.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .context.index import WorkspaceIndex
from .progress import Progress

log = logging.getLogger(__name__)


class Indexer:
    def __init__(self, progress: Progress, on_done: Callable[[], None]) -> None:
        self.index: WorkspaceIndex | None = None  # the newest; searched while it builds
        self.building = False
        self._progress = progress
        self._on_done = on_done  # called from the indexing thread when a build ends (the server sends the status)

    @property
    def files(self) -> int:
        return len(self.index) if self.index is not None else 0

    def expect(self, root: Path | None) -> None:
        """The index will be built once the client's settings are known (after `initialized`): report
        it as building from `initialize` on, so no status says "ready, not indexing" before it started."""
        self.building = root is not None

    def start(self, root: Path | None, exclude: tuple[str, ...]) -> None:
        """Index `root` (nothing without a workspace folder); a build still running is abandoned."""
        if root is None:
            return
        self.stop()
        index = WorkspaceIndex(root, exclude)
        self.index = index
        self.building = True
        threading.Thread(target=self._build, args=(index,), name="indexer", daemon=True).start()

    def stop(self) -> None:
        """Stop watching the disk (shutdown, or a new index replacing this one)."""
        if self.index is not None:
            self.index.stop_watching()

    def _build(self, index: WorkspaceIndex) -> None:
        token = self._progress.begin("Indexing workspace")
        try:
            # Watching starts first: what changes on disk while the build runs is applied after it.
            index.on_change = lambda what, rel: log.debug("index: %s %s", what, rel)
            if self.index is index:
                index.start_watching()
            index.build(progress=lambda done, total: self._progress.report(
                token, f"{done}/{total} files", int(100 * done / max(total, 1))),
                should_stop=lambda: self.index is not index)
            if self.index is not index:  # replaced while building (a reindex)
                index.stop_watching()
        except Exception:
            log.exception("indexing failed")
        finally:
            self._progress.end(token, f"{len(index)} files")
            if self.index is index:
                self.building = False
            self._on_done()
