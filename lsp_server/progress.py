"""Work-done progress (LSP `$/progress`) that any thread may begin, report and end.

The client must answer `window/workDoneProgress/create` before a begin may go out, and a report or an
end sent before that begin is dropped by editors: so each report and end waits for its begin.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable
from typing import Any

from lsprotocol import types

log = logging.getLogger(__name__)


class Progress:
    """Progress tokens of one server. `enabled` follows the client's window.workDoneProgress capability."""

    def __init__(self, server: Any) -> None:
        self.server = server  # a pygls LanguageServer: its work_done_progress and loop
        self.enabled = False
        self._begun: dict[str, concurrent.futures.Future[None]] = {}  # token -> its begin

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        loop: asyncio.AbstractEventLoop | None = self.server.loop
        return loop

    def begin(self, title: str, cancellable: bool = False) -> str | None:
        """Start a progress (from any thread); returns its token, None when the client shows none."""
        loop = self._loop
        if not self.enabled or loop is None:
            return None
        token = f"codellama-{uuid.uuid4().hex[:8]}"
        progress = self.server.work_done_progress

        async def begin() -> None:
            try:
                # No time limit: on a loaded machine the client's answer can take many seconds, and a
                # progress given up on would never begin (nor end).
                await progress.create_async(token)
                progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable))
            except Exception:
                log.debug("progress not accepted", exc_info=True)

        self._begun[token] = asyncio.run_coroutine_threadsafe(begin(), loop)
        return token

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None:
        self._after_begin(token, lambda: self.server.work_done_progress.report(
            token, types.WorkDoneProgressReport(message=message, percentage=percentage)))

    def end(self, token: str | None, message: str | None = None) -> None:
        self._after_begin(token, lambda: self.server.work_done_progress.end(
            token, types.WorkDoneProgressEnd(message=message)), last=True)

    def for_loads(self, suffix: str = "") -> Callable[[str, str | None], None]:
        """The `progress(phase, title)` callback an EngineManager calls around a model load."""
        token: str | None = None

        def on_phase(phase: str, title: str | None) -> None:
            nonlocal token
            if phase == "begin":
                token = self.begin(f"{title or 'Loading model'}{suffix}")
            else:
                self.end(token)
                token = None

        return on_phase

    def _after_begin(self, token: str | None, send: Callable[[], None], last: bool = False) -> None:
        """Send a report or the end of progress `token` once its begin went out. A fast model load
        ends before the client has answered `window/workDoneProgress/create`: sent at once, the end
        would be dropped and the editor would show the load in progress forever."""
        if token is None:
            return
        begun = self._begun.pop(token, None) if last else self._begun.get(token)
        loop = self._loop
        if begun is None or loop is None or loop.is_closed():
            return

        async def after() -> None:
            await asyncio.wrap_future(begun)
            if token in self.server.work_done_progress.tokens:
                send()

        try:
            asyncio.run_coroutine_threadsafe(after(), loop)
        except RuntimeError:
            pass  # the loop is shutting down
