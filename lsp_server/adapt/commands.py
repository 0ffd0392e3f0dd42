"""The adapter commands as the language server runs them (workspace/executeCommand):

- `codellama.adapter.train` [{"workspace"?, "steps"?, "quick"?}]: starts `python -m lsp_server.adapt` on
  the workspace in a child process (lsp_server/adapt/job.py) with cancellable work-done progress; a run
  that was cancelled or killed resumes from its checkpoint. When it ends the report is shown: with a
  gain, the user is asked whether to use the adapter; without one, it is not applied and they are told.
- `codellama.adapter.cancelTraining`: stops the run (its checkpoint is kept).
- `codellama.adapter.drop`: forgets the workspace's adapter; the model is reloaded without it.

Completions go on meanwhile: the run is another process, at lower priority, leaving a core free.
The accepted adapter of each workspace is kept outside the repository (lsp_server/adapt/remembered.py).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lsprotocol import types

from ..settings import Settings
from .job import MODULE, JobEnd, TrainingJob, TrainRequest, describe, pid_alive, read_job_file
from .remembered import AcceptedAdapter, WorkspaceAdapters, applies, data_dir

log = logging.getLogger(__name__)

TRAIN = "codellama.adapter.train"
CANCEL = "codellama.adapter.cancelTraining"
DROP = "codellama.adapter.drop"
COMMANDS = (TRAIN, CANCEL, DROP)
USE, DISCARD = "Use adapter", "Discard"
MAX_STEPS = 1_000_000
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # file:, untitled:... (not a drive letter: C:)


class Host(Protocol):
    """What the commands need from the server (CodeLlamaServer implements it)."""

    root: Path | None
    client_settings: Settings  # the settings the client asked for (without the workspace's adapter)
    progress_reporter: Any  # lsp_server.progress.Progress: begin/report/end from any thread

    def ask(self, message: str, actions: list[str]) -> Awaitable[str | None]: ...
    def tell(self, message: str, level: types.MessageType) -> None: ...
    def adapter_changed(self) -> None: ...  # reload the model with (or without) the workspace's adapter
    def status_changed(self) -> None: ...  # send codellama/status (from any thread)
    def run_soon(self, coro: Coroutine[Any, Any, None]) -> None: ...  # on the server's loop, from any thread


class BadArguments(ValueError):
    """The command's arguments are malformed (the message says how)."""


@dataclass(frozen=True)
class TrainArgs:
    workspace: Path | None = None  # None: the server's workspace folder
    steps: int | None = None
    quick: bool = False

    @staticmethod
    def parse(arg: Any, to_path: Callable[[str], Path | None]) -> TrainArgs:
        """From the command's one optional argument; `to_path` reads a file URI (or a path)."""
        if arg is None:
            return TrainArgs()
        if not isinstance(arg, dict):
            raise BadArguments(f'{TRAIN} takes one optional argument {{"workspace"?, "steps"?, "quick"?}}')
        folder, steps, quick = arg.get("workspace"), arg.get("steps"), arg.get("quick", False)
        if folder is not None and not isinstance(folder, str):
            raise BadArguments('"workspace" must be a folder path or file URI')
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, float))
                                  or steps != int(steps) or not 1 <= steps <= MAX_STEPS):
            raise BadArguments(f'"steps" must be a whole number from 1 to {MAX_STEPS}')
        if not isinstance(quick, bool):
            raise BadArguments('"quick" must be true or false')
        path = (to_path(folder) if URI_SCHEME.match(folder) else Path(folder).expanduser()) if folder else None
        if folder and path is None:
            raise BadArguments(f'"workspace" is not a local folder: {folder}')
        return TrainArgs(path, int(steps) if steps is not None else None, quick)


def offer_message(name: str, done: dict[str, Any], heldout_files: int | None) -> str:
    """What the user reads when a run ends with a gain (they are then asked whether to use it)."""
    before, after = done.get("exact_match_before"), done.get("exact_match_after")
    files = f" on {heldout_files} held-out files" if heldout_files else " on held-out files"
    return (f"Adapter for {name}: single-line exact match {_pct(before)} -> {_pct(after)}{files}. Use it? "
            f"(report: {done.get('report', '')})")


def no_gain_message(name: str, done: dict[str, Any]) -> str:
    return (f"Adapter for {name}: no gain on held-out files (single-line exact match "
            f"{_pct(done.get('exact_match_before'))} -> {_pct(done.get('exact_match_after'))}): not applied. "
            f"Report: {done.get('report', '')}")


def _pct(value: Any) -> str:
    return f"{value:.1f} %" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


class AdapterCommands:
    def __init__(self, host: Host, launcher: tuple[str, ...] = (sys.executable, "-m", MODULE),
                 base: Path | None = None) -> None:
        self.host = host
        self.launcher = launcher
        self.base = base  # the data directory (None: remembered.data_dir() when first needed)
        self.job: TrainingJob | None = None  # from the train command until its end is handled
        self.offering = False  # a finished run's adapter waits for the user's answer
        self.token: str | None = None  # the run's work-done progress
        self.training: WorkspaceAdapters | None = None  # the workspace being trained
        self.heldout_files: int | None = None  # from the run's start event
        self.message: str | None = None  # the newest progress line, for codellama/status
        self.percentage: int | None = None
        self.workspace: WorkspaceAdapters | None = None  # the server's workspace
        self.accepted: AcceptedAdapter | None = None  # its accepted adapter
        self._lock = threading.Lock()

    def adapters_of(self, root: Path) -> WorkspaceAdapters:
        if self.base is None:
            self.base = data_dir()
        return WorkspaceAdapters(root, self.base)

    def open_workspace(self, root: Path | None) -> None:
        """The server's workspace folder is known: read the adapter accepted for it, if any."""
        self.workspace = self.adapters_of(root) if root is not None else None
        self.accepted = self.workspace.accepted() if self.workspace is not None else None

    @property
    def running(self) -> bool:
        """A run is in progress, or has ended and its end is not handled yet."""
        return self.job is not None

    # ---- commands -----------------------------------------------------------------------------

    def train(self, args: TrainArgs) -> dict[str, Any]:
        """Start a run; returns {"started", "resumed", "workspace", "out"} or {"started": false, "message"}
        (the message is also shown to the user)."""
        refusal = self._refusal(args)
        if refusal is not None:
            self.host.tell(refusal, types.MessageType.Warning)
            return {"started": False, "message": refusal}
        root = (args.workspace or self.host.root or Path()).resolve()
        adapters = self.adapters_of(root)
        request = TrainRequest(workspace=str(root), out=str(adapters.training), model=self.host.client_settings.model,
                               steps=args.steps, quick=args.quick)
        job = TrainingJob(request, self._on_event, self._on_end, launcher=self.launcher)
        with self._lock:
            self.job, self.training, self.heldout_files = job, adapters, None
            self.message, self.percentage = "starting", 0
        self.token = self.host.progress_reporter.begin(f"Training an adapter on {root.name}", cancellable=True)
        try:
            job.start()
        except OSError as exc:
            self._finish_progress("could not start")
            self.job = None
            message = f"could not start training: {exc}"
            self.host.tell(message, types.MessageType.Error)
            return {"started": False, "message": message}
        if job.resumed:
            self.message = "resuming from the last checkpoint"
            self.host.progress_reporter.report(self.token, self.message, 0)
        log.info("training %s into %s (%s)", root, adapters.training, "resumed" if job.resumed else "new run")
        return {"started": True, "resumed": job.resumed, "workspace": str(root), "out": request.out}

    def _refusal(self, args: TrainArgs) -> str | None:
        """Why a run cannot start now, for the user; None when it can."""
        if self.job is not None:
            return (f"training is already running on {Path(self.job.request.workspace).name}"
                    f" ({self.message}); cancel it first (Code Llama: Cancel training)")
        if self.offering:
            return "the last training's adapter is waiting for your answer (Use adapter / Discard)"
        root = args.workspace or self.host.root
        if root is None:
            return "open a folder to train an adapter on it"
        if not root.is_dir():
            return f"cannot train on {root}: not a folder"
        if self.host.client_settings.backend != "local":
            return "training adapts the local model, but the backend setting names a remote server"
        job = read_job_file(self.adapters_of(root.resolve()).training)
        if not job.get("finished", True) and pid_alive(job.get("pid")):
            return f"training on {root.name} is already running in another window (process {job['pid']})"
        return None

    def cancel(self) -> dict[str, Any]:
        if self.job is None:
            self.host.tell("no training is running", types.MessageType.Info)
            return {"cancelled": False, "message": "no training is running"}
        self.job.cancel()
        return {"cancelled": True}

    def cancel_token(self, token: str) -> bool:
        """The user pressed cancel on a progress (window/workDoneProgress/cancel): ours?"""
        if self.token is not None and token == self.token and self.running:
            self.cancel()
            return True
        return False

    def drop(self) -> dict[str, Any]:
        """Forget the workspace's adapter and reload the model without it."""
        if self.host.client_settings.adapter:
            message = (f"the adapter in use comes from the codellama.adapter setting ({self.host.client_settings.adapter}); "
                       "remove it there")
            self.host.tell(message, types.MessageType.Warning)
            return {"dropped": False, "message": message}
        if self.workspace is None or not self.workspace.forget():
            self.host.tell("this workspace uses no adapter", types.MessageType.Info)
            return {"dropped": False, "message": "this workspace uses no adapter"}
        self.accepted = None
        self.host.adapter_changed()
        self.host.tell("adapter dropped: completions use the model without it", types.MessageType.Info)
        return {"dropped": True}

    def shutdown(self) -> None:
        """The server is going away: stop the run (it resumes when trained again)."""
        if self.job is not None:
            self.job.cancel()

    def status(self) -> dict[str, Any] | None:
        """`training` in codellama/status: the run in progress, None when there is none."""
        if self.job is None:
            return None
        return {"workspace": self.job.request.workspace, "message": self.message, "percentage": self.percentage,
                "resumed": self.job.resumed}

    # ---- the run's events (on its reader thread) ----------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "start" and isinstance(event.get("heldout_files"), int):
            self.heldout_files = event["heldout_files"]
        shown = describe(event)
        if shown is None:
            return
        self.message, self.percentage = shown
        self.host.progress_reporter.report(self.token, *shown)
        if event.get("event") in ("start", "phase"):
            self.host.status_changed()  # the status's `training`, at each phase (not at every step)

    def _on_end(self, end: JobEnd) -> None:
        self.host.run_soon(self.finish(end))

    def _finish_progress(self, message: str) -> None:
        self.host.progress_reporter.end(self.token, message)
        self.token = None
        self.host.status_changed()

    async def finish(self, end: JobEnd) -> None:
        """Tell the user how the run ended; offer the adapter when it gained."""
        name = Path(self.job.request.workspace).name if self.job is not None else "the workspace"
        adapters, self.job = self.training, None  # a new run may start once this one's end is said
        if end.kind == "cancelled":
            self._finish_progress("cancelled")
            self.host.tell(f"training on {name} cancelled ({self.message}); train again to resume from its last "
                           "checkpoint", types.MessageType.Info)
        elif end.kind == "failed" or end.done is None or adapters is None:
            self._finish_progress("failed")
            self.host.tell(f"training on {name} failed: {end.message}", types.MessageType.Error)
        elif not end.done.get("gain"):
            self._finish_progress("no gain: not applied")
            self.host.tell(no_gain_message(name, end.done), types.MessageType.Warning)
        else:
            self._finish_progress(f"exact match {_pct(end.done.get('exact_match_before'))} -> "
                                  f"{_pct(end.done.get('exact_match_after'))}")
            self.offering = True  # until answered: a new run would overwrite what "Use adapter" keeps
            try:
                choice = await self.host.ask(offer_message(name, end.done, self.heldout_files), [USE, DISCARD])
            finally:
                self.offering = False
            if choice == USE:
                self.use(adapters, end.done)
            else:
                self.host.tell(f"adapter for {name} discarded", types.MessageType.Info)

    def use(self, adapters: WorkspaceAdapters, done: dict[str, Any]) -> None:
        """The user accepted a finished run's adapter: keep it for its workspace, and apply it when that
        is the server's workspace."""
        accepted = adapters.accept(done, self.host.client_settings.model, self.heldout_files)
        if self.workspace is None or adapters.folder != self.workspace.folder:
            self.host.tell(f"adapter kept for {adapters.root}: used when a server opens that folder",
                           types.MessageType.Info)
            return
        self.accepted = accepted
        if applies(accepted, self.host.client_settings):
            self.host.adapter_changed()
        else:
            self.host.tell("adapter kept for this workspace, but the codellama.adapter setting names another one, "
                           "which wins: clear it to use the new adapter", types.MessageType.Warning)
