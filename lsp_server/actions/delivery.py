"""Running a code action for the client: which model runs it, its cancellable progress, and where
the result goes (an edit through workspace/applyEdit, or the answer in a document or a message)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from engine.backends.base import Backend

from .. import capability
from .prompts import ACTIONS
from .service import ActionArgs, ActionError, ActionOutcome, Refused

if TYPE_CHECKING:
    from ..server import CodeLlamaServer

log = logging.getLogger(__name__)


class ActionRunner:
    """Code actions as the server runs them; `runs` maps each run's progress token to its cancel flag."""

    def __init__(self, server: CodeLlamaServer) -> None:
        self.server = server
        self.runs: dict[str, threading.Event] = {}

    def cancel(self, token: str) -> None:
        """The user pressed cancel on the progress of a run (window/workDoneProgress/cancel)."""
        cancelled = self.runs.get(token)
        if cancelled is not None:
            cancelled.set()

    def cancel_all(self) -> None:
        for cancelled in self.runs.values():
            cancelled.set()

    async def instruct_backend(self) -> Backend:
        """The model code actions run on: `instructModel` when set and loadable, else the completion
        model. Raises ActionError when there is none."""
        settings = self.server.settings
        if settings.instruct_model:
            self.server.instruct_engine.ensure(settings.for_instruct_model())
            while self.server.instruct_engine.loading:
                await asyncio.sleep(0.2)
            if self.server.instruct_engine.backend is not None:
                return self.server.instruct_engine.backend
            fallback = capability.for_actions(replace(settings, instruct_model=None), self.server.engine,
                                             self.server.instruct_engine)
            if not fallback.capable:
                raise Refused(f"the instruct model could not be loaded ({self.server.instruct_engine.error}), and "
                              f"{capability.refusal(fallback)}")
            self.server.show_problem(f"the instruct model could not be loaded ({self.server.instruct_engine.error}); code "
                              "actions use the completion model", types.MessageType.Warning)
        if self.server.engine.backend is None:
            reason = f": {self.server.engine.error}" if self.server.engine.error else " (still loading)"
            raise ActionError(f"no model is loaded{reason}")
        return self.server.engine.backend

    async def run(self, args: ActionArgs) -> dict[str, Any]:
        title = ACTIONS[args.action].title
        try:
            self.server.actions.check_capable(f'"{title.removeprefix("Code Llama: ")}"')
            backend = await self.instruct_backend()
        except Refused as exc:
            # Not an error answer: the client would show it as well, beside this message.
            self.server.show_problem(str(exc), types.MessageType.Warning)
            return {"action": args.action, "answer": "", "stopReason": "refused", "generatedTokens": 0,
                    "message": str(exc), "applied": False, "shownIn": None}
        cancelled = threading.Event()
        token = self.server.progress_reporter.begin(title, cancellable=True)
        if token is not None:
            self.runs[token] = cancelled
        last_report = [0.0]

        def on_text(text: str) -> None:  # engine thread, after each decode step
            now = time.monotonic()
            if now - last_report[0] >= 0.5:
                last_report[0] = now
                self.server.progress_reporter.report(token, f"{len(text)} characters written")

        try:
            outcome = await self.server.actions.run(args, backend, cancelled, on_text)
        finally:
            if token is not None:
                self.runs.pop(token, None)
            self.server.progress_reporter.end(token)
        return await self.deliver(outcome, title)

    async def deliver(self, outcome: ActionOutcome, title: str) -> dict[str, Any]:
        """Apply the edit (workspace/applyEdit) or show the answer; what happened, for the caller."""
        result = outcome.summary()
        result.update(applied=False, shownIn=None)
        if outcome.stop_reason == "cancelled":
            return result
        if outcome.edit is not None and self.server.can_apply_edit:
            try:
                applied = await asyncio.wait_for(self.server.workspace_apply_edit_async(
                    types.ApplyWorkspaceEditParams(edit=outcome.edit, label=title)), 60)
                result["applied"] = bool(applied.applied)
                if not applied.applied:
                    result["message"] = applied.failure_reason or "the editor did not apply the edit"
            except Exception as exc:
                result["message"] = f"applying the edit failed: {exc}"
            if result["applied"]:
                return result
        if outcome.rejected:
            # The user expected their code to change: say so where they look, and show the proposal.
            self.server.show_problem(f'"{title.removeprefix("Code Llama: ")}" {outcome.message}; the proposal is '
                              "shown instead", types.MessageType.Warning)
        if ACTIONS[outcome.action].result == "answer" or outcome.answer.strip():
            note = f"_{result['message']}_\n\n" if result.get("message") else ""
            result["shownIn"] = await self.show_answer(title, outcome.preview or note + outcome.answer)
        elif result.get("message"):
            self.server.show_problem(str(result["message"]), types.MessageType.Warning)
        return result

    async def show_answer(self, title: str, text: str) -> str | None:
        """A markdown document with the answer (window/showDocument) when the client can show one,
        else a window/showMessage. Returns the document's URI, if any."""
        if self.server.can_show_document:
            folder = Path(tempfile.gettempdir()) / f"codellama-answers-{os.getuid() if hasattr(os, 'getuid') else 0}"
            folder.mkdir(mode=0o700, exist_ok=True)
            path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.md"
            path.write_text(f"# {title}\n\n{text.strip()}\n", encoding="utf-8")
            try:
                shown = await asyncio.wait_for(self.server.window_show_document_async(
                    types.ShowDocumentParams(uri=path.as_uri(), take_focus=True)), 30)
                if shown.success:
                    return path.as_uri()
            except Exception:
                log.debug("showDocument failed", exc_info=True)
        self.server.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=f"{title}\n\n{text}"))
        return None
