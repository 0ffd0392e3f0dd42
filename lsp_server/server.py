"""The pygls server: thin handlers over the document store, the completion service, the engine
manager and the workspace index. The protocol contract is in lsp_server/README.md.

Threads: the event loop runs the handlers; the engine runs on the completion service's worker;
model loading and indexing run on their own daemon threads; watchdog has its own. Anything a
background thread sends to the client goes through `call_soon_threadsafe`, so messages are only
ever written from the loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer

from . import __version__
from .acceptance import ACCEPTED, SUGGESTION_EVENT, AcceptanceStats
from .actions.delivery import ActionRunner
from .actions.prompts import ACTIONS
from .actions.service import RUN_ACTION, ActionArgs, ActionError, ActionService
from .adapt.commands import CANCEL, DROP, TRAIN, AdapterCommands, BadArguments, TrainArgs
from .adapt.remembered import adapter_status, with_accepted
from .completion import CompletionResult, CompletionService
from .documents import UTF8, UTF16, UTF32, DocumentStore, PositionError
from .engine_manager import EngineManager, Loader, load_backend
from .indexing import Indexer
from .parent import watch_parent
from .progress import Progress
from .protocol import RobustProtocol, robust_converter
from .settings import Settings, parse_settings
from .status import memory_figures, model_fields
from .transport import read_loop, stdin_reader, stream_reader

log = logging.getLogger(__name__)

STATUS = "codellama/status"
GET_STATUS = "codellama/getStatus"
LAST_PROMPT = "codellama/lastPrompt"
CMD_RELOAD = "codellama.reloadModel"
CMD_REINDEX = "codellama.reindexWorkspace"
SECTION = "codellama"


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: a valid request the server could not carry out (message says why)."""

    CODE = -32803
    MESSAGE = "Request failed"


def uri_to_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    if os.name == "nt" and path.startswith("/") and len(path) > 2 and path[2] == ":":
        path = path[1:]
    return Path(path)


def lsp_range(start: tuple[int, int], end: tuple[int, int]) -> types.Range:
    return types.Range(types.Position(*start), types.Position(*end))


class CodeLlamaServer(LanguageServer):
    def __init__(self, loader: Loader = load_backend) -> None:
        super().__init__("codellama-lsp", __version__, protocol_cls=RobustProtocol,
                         converter_factory=robust_converter,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.docs = DocumentStore()
        self.init_settings = Settings()
        self.client_settings = Settings()  # what the client asked for
        self.settings = Settings()  # those, with the workspace's accepted adapter (lsp_server/adapt)
        self.root: Path | None = None
        self.shutdown_requested = False
        self.progress_reporter = Progress(self)  # not `progress`: pygls names a method so
        self.indexer = Indexer(self.progress_reporter, on_done=lambda: self.threadsafe(self.send_status))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.can_pull_config = False
        self.can_apply_edit = False
        self.can_show_document = False
        self.can_create_files = False
        self.can_show_disabled = False  # codeAction.disabledSupport (LSP 3.16)
        self.pending_problems: list[str] = []
        self._last_problem: tuple[str, float] = ("", 0.0)
        self.status: dict[str, Any] = {
            "state": "starting", "model": None, "requestedModel": None, "backend": "local", "description": None, "device": None,
            "dtype": None, "quantization": None, "kvCacheDtype": None, "decodeStep": None, "message": None,
            "indexing": False,
            "indexedFiles": 0, "lastLatencyMs": None,
            "lastPromptTokens": None, "lastCachedTokens": None, "lastFromCache": False,
            "lastError": None,  # why the last completion failed (the engine raised), until one succeeds
        }
        self._suggestions_from: Any = None  # the backend whose suggestions the cache holds
        self.engine = EngineManager(on_change=self.on_engine_change,
                                    on_problem=lambda m: self.threadsafe(self.show_problem, m),
                                    loader=loader, progress=self.progress_reporter.for_loads())
        self.engine.retire = lambda old: self.service.worker.submit(old.close)
        self.service = CompletionService(
            self.docs, self.engine, lambda: self.settings, lambda: self.indexer.index, self.path_of,
            on_done=lambda update: self.threadsafe(self.send_status, update),
            on_problem=lambda m: self.threadsafe(self.show_problem, m), outside_workspace=self.outside_workspace)
        # Code actions use the completion model unless `instructModel` names another one.
        self.instruct_engine = EngineManager(on_change=self.status_changed,
                                             on_problem=lambda m: self.threadsafe(self.show_problem, m),
                                             loader=loader, progress=self.progress_reporter.for_loads(" (code actions)"))
        self.instruct_engine.retire = lambda old: self.service.worker.submit(old.close)
        self.actions = ActionService(self.service, self.instruct_engine, lambda: self.settings,
                                     lambda: self.root, lambda: self.can_create_files, lambda: self.can_show_disabled)
        self.action_runner = ActionRunner(self)
        self.acceptance = AcceptanceStats()  # this session's, for the status only
        self.adapt = AdapterCommands(self)  # training an adapter on the workspace, and using it

    # ---- plumbing -----------------------------------------------------------------------------

    @property
    def robust_protocol(self) -> RobustProtocol:
        """The protocol as the class it is (pygls types it as its base)."""
        assert isinstance(self.protocol, RobustProtocol)
        return self.protocol

    def threadsafe(self, fn: Any, *args: Any) -> None:
        """Run `fn(*args)` on the event loop (from any thread)."""
        if self.loop is None or self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is shutting down

    def report_server_error(self, error: Exception, source: Any) -> None:
        # Log, never pop up: the user cannot act on a malformed message (which is answered anyway).
        log.warning("server error (%s): %s", getattr(source, "__name__", source), error)

    # ---- transports: pygls' own, with our read loop (lsp_server/transport.py) ------------------

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        read_some = stdin_reader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(read_loop(read_some, self.robust_protocol.receive, self._stop_event))
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            await read_loop(stream_reader(reader), self.robust_protocol.receive, stop)
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            log.info("serving on %s", ", ".join(str(s.getsockname()) for s in self._server.sockets))
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except asyncio.CancelledError:
            pass

    def path_of(self, uri: str) -> str:
        """Workspace-relative path of a document (for headers and the index), else its file name."""
        path = uri_to_path(uri)
        if path is None:
            return urlparse(uri).path.rsplit("/", 1)[-1] or uri
        if self.root is not None:
            try:
                return path.resolve().relative_to(self.root).as_posix()
            except (ValueError, OSError):
                pass
        return path.name

    def outside_workspace(self, uri: str) -> bool:
        """A file on disk outside the workspace folder (never when there is no folder)."""
        path = uri_to_path(uri)
        if path is None or self.root is None:
            return False
        try:
            path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return True
        return False

    def show_problem(self, message: str, level: types.MessageType = types.MessageType.Error) -> None:
        """window/showMessage for something the user must act on; identical messages at most every
        30 s (a broken GPU must not pop up a dialog per keystroke)."""
        now = time.monotonic()
        if self._last_problem[0] == message and now - self._last_problem[1] < 30:
            return
        self._last_problem = (message, now)
        log.warning("problem: %s", message)
        self.window_show_message(types.ShowMessageParams(type=level, message=f"Code Llama: {message}"))

    def status_payload(self) -> dict[str, Any]:
        self.status.update(
            **model_fields(self.settings, self.engine), indexing=self.indexer.building,
            indexedFiles=self.indexer.files,
            memory=memory_figures(self.engine, self.indexer.index), acceptance=self.acceptance.as_status(),
            adapter=adapter_status(self.client_settings, self.adapt.accepted), training=self.adapt.status())
        return dict(self.status)

    def on_engine_change(self) -> None:
        """A backend was swapped in (or failed to load): tell the client."""
        backend = self.engine.backend
        if backend is not self._suggestions_from:
            # Cached suggestions are the replaced model's (another adapter suggests otherwise).
            self._suggestions_from = backend
            self.threadsafe(self.service.cache.clear)
        if backend is not None and backend.on_state is None:
            # A remote backend reports how each request went: an outage shows in the status bar.
            backend.on_state = lambda _: self.threadsafe(self.send_status)
        self.status_changed()

    def status_changed(self) -> None:
        """Send the status: at once on the event loop's thread (so that it shows the state of this
        moment, e.g. "loading" before a load that takes milliseconds is over), else via the loop."""
        try:
            on_loop = self.loop is not None and asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.send_status()
        else:
            self.threadsafe(self.send_status)

    def send_status(self, update: dict[str, Any] | None = None) -> None:
        if update:
            self.status.update(update)
        try:
            self.protocol.notify(STATUS, self.status_payload())
        except Exception:  # the client may be gone
            log.debug("could not send status", exc_info=True)

    # ---- acceptance statistics (lsp_server/acceptance.py) ---------------------------------------

    def offset(self, uri: str, position: tuple[int, int]) -> int | None:
        doc = self.docs.get(uri)
        try:
            return doc.offset_at(*position) if doc is not None else None
        except PositionError:
            return None

    def note_inline_request(self, uri: str, position: tuple[int, int]) -> None:
        """Typed through: the text between the last suggestion's start and this cursor is part of it."""
        last, cursor = self.acceptance.last, self.offset(uri, position)
        doc = self.docs.get(uri)
        if last is not None and last.uri == uri and doc is not None and cursor is not None and cursor > last.start:
            self.acceptance.record_request(uri, doc.text[last.start:cursor])

    def note_shown(self, uri: str, result: CompletionResult | None) -> None:
        start = self.offset(uri, result.start) if result is not None and result.text.strip() else None
        if result is not None and start is not None:
            self.acceptance.record_shown(uri, start, result.text)

    # ---- settings, model, index ---------------------------------------------------------------

    def apply_settings(self, raw: Any) -> None:
        settings, problems = parse_settings(raw, base=self.init_settings)
        for problem in problems:
            self.show_problem(problem, types.MessageType.Warning)
        self.use_settings(settings)

    def use_settings(self, client_settings: Settings) -> None:
        """Serve with the client's settings plus the workspace's accepted adapter (unless they name one)."""
        self.client_settings = client_settings
        settings = with_accepted(client_settings, self.adapt.accepted)
        old, self.settings = self.settings, settings
        if settings.suggestion_key() != old.suggestion_key():
            self.service.cache.clear()  # cached suggestions were made under other settings
        if self.loop is not None and settings.enable:
            self.engine.ensure(settings)
        if old.instruct_model and settings.instruct_model != old.instruct_model:
            self.instruct_engine.close()  # loaded again, the new one, when an action needs it
        if settings.exclude != old.exclude and self.indexer.index is not None:
            self.indexer.start(self.root, settings.exclude)
        self.send_status()

    async def pull_configuration(self) -> None:
        if not self.can_pull_config:
            return
        try:
            result = await asyncio.wait_for(self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])), 10)
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            return
        # pygls hands the answer over as a tuple (lsprotocol's Sequence), a client's JSON as a list.
        if isinstance(result, (list, tuple)) and result and isinstance(result[0], dict):
            self.apply_settings(result[0])

    # ---- what the adapter commands need (lsp_server/adapt/commands.py: Host) --------------------

    async def ask(self, message: str, actions: list[str]) -> str | None:
        """window/showMessageRequest: the title of the action the user chose, None if none."""
        try:
            chosen = await self.window_show_message_request_async(types.ShowMessageRequestParams(
                type=types.MessageType.Info, message=f"Code Llama: {message}",
                actions=[types.MessageActionItem(title=title) for title in actions]))
        except Exception:
            log.warning("window/showMessageRequest failed", exc_info=True)
            return None
        return chosen.title if chosen is not None else None

    def tell(self, message: str, level: types.MessageType) -> None:
        self.show_problem(message, level)

    def adapter_changed(self) -> None:
        self.use_settings(self.client_settings)

    def run_soon(self, coro: Any) -> None:
        if self.loop is None or self.loop.is_closed():
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self.loop)


def exit_process(code: int) -> None:
    """End the process now. Every answer has been written; what is left is a generation or file
    watch in a background thread, and Python's own teardown of torch, which takes tens of seconds on
    a slow machine while the editor waits for the process to go."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _client_has(caps: types.ClientCapabilities, path: str) -> bool:
    obj: Any = caps
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return bool(obj)


def _inline_items(result: CompletionResult | None) -> types.InlineCompletionList:
    if result is None or not result.text.strip():  # an empty item would be a suggestion of nothing
        return types.InlineCompletionList(items=[])
    # The editor runs the item's command when the user accepts it whole (LSP 3.18): counted as accepted.
    return types.InlineCompletionList(items=[
        types.InlineCompletionItem(insert_text=result.text, range=lsp_range(result.start, result.end),
                                   command=types.Command(title="Accept suggestion", command=ACCEPTED))])


def _completion_items(result: CompletionResult | None, language: str) -> types.CompletionList:
    if result is None or not result.text.strip():
        return types.CompletionList(is_incomplete=True, items=[])
    new_text = result.word + result.text
    first = new_text.lstrip("\n").split("\n", 1)[0]
    label = first.strip()[:80] or new_text.strip()[:80]
    return types.CompletionList(is_incomplete=True, items=[types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Text,
        detail="Code Llama",
        documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```{language}\n{new_text}\n```"),
        sort_text="0",
        filter_text=new_text,
        preselect=True,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(lsp_range(result.word_start, result.end), new_text),
    )])


def create_server(loader: Loader = load_backend) -> CodeLlamaServer:
    server = CodeLlamaServer(loader)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeLlamaServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        encoding = str(getattr(ls.protocol.workspace, "position_encoding", UTF16) or UTF16)
        ls.docs.encoding = encoding if encoding in (UTF8, UTF16, UTF32) else UTF16
        ls.init_settings, problems = parse_settings(params.initialization_options)
        ls.pending_problems = problems
        caps = params.capabilities
        ls.can_pull_config = _client_has(caps, "workspace.configuration")
        ls.progress_reporter.enabled = _client_has(caps, "window.work_done_progress")
        ls.can_apply_edit = _client_has(caps, "workspace.apply_edit")
        ls.can_show_document = _client_has(caps, "window.show_document.support")
        ls.can_show_disabled = _client_has(caps, "text_document.code_action.disabled_support")
        edits = caps.workspace.workspace_edit if caps.workspace is not None else None
        ls.can_create_files = bool(edits is not None and edits.document_changes and
                                   types.ResourceOperationKind.Create in (edits.resource_operations or []))
        folders = params.workspace_folders or []
        root_uri = folders[0].uri if folders else params.root_uri
        root = uri_to_path(root_uri) if root_uri else (Path(params.root_path) if params.root_path else None)
        ls.root = root.resolve() if root is not None and root.is_dir() else None
        ls.adapt.open_workspace(ls.root)
        ls.indexer.expect(ls.root)
        ls.use_settings(ls.init_settings)
        if params.process_id:
            watch_parent(params.process_id)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CodeLlamaServer, params: types.InitializedParams) -> None:
        for problem in ls.pending_problems:
            ls.show_problem(problem, types.MessageType.Warning)
        await ls.pull_configuration()
        if ls.settings.enable:
            ls.engine.ensure(ls.settings)
        ls.indexer.start(ls.root, ls.settings.exclude)
        ls.send_status()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CodeLlamaServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        ls.docs.open(doc.uri, doc.text, doc.version, doc.language_id)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CodeLlamaServer, params: types.DidChangeTextDocumentParams) -> None:
        changes: list[tuple[str, tuple[int, int] | None, tuple[int, int] | None]] = []
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                changes.append((change.text, (r.start.line, r.start.character), (r.end.line, r.end.character)))
            else:
                changes.append((change.text, None, None))
        if not ls.docs.change(params.text_document.uri, params.text_document.version, changes):
            log.debug("didChange for a document that is not open: %s", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeLlamaServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.docs.close(params.text_document.uri)
        ls.service.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CodeLlamaServer, params: types.DidSaveTextDocumentParams) -> None:
        pass  # the watcher sees the file on disk; the open buffer already holds the text

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodeLlamaServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        uri, position = params.text_document.uri, (params.position.line, params.position.character)
        ls.note_inline_request(uri, position)
        result = await ls.service.complete(uri, *position, invoked)
        ls.note_shown(uri, result)
        return _inline_items(result)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: CodeLlamaServer, params: types.CompletionParams) -> types.CompletionList:
        invoked = params.context is not None and params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        result = await ls.service.complete(params.text_document.uri, params.position.line,
                                           params.position.character, invoked)
        doc = ls.docs.get(params.text_document.uri)
        return _completion_items(result, doc.language_id if doc else "")

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=sorted({a.kind for a in ACTIONS.values()}), resolve_provider=False))
    def code_action(ls: CodeLlamaServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        return ls.actions.offered(params) or None

    @server.command(RUN_ACTION)
    async def run_action(ls: CodeLlamaServer, *args: Any) -> dict[str, Any]:
        try:
            return await ls.action_runner.run(ActionArgs.parse(args[0] if args else None))
        except ActionError as exc:
            raise RequestFailed(str(exc)) from None

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancel(ls: CodeLlamaServer, params: types.WorkDoneProgressCancelParams) -> None:
        ls.action_runner.cancel(str(params.token))
        ls.adapt.cancel_token(str(params.token))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CodeLlamaServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if isinstance(settings, dict) and isinstance(settings.get(SECTION), dict):
            ls.apply_settings(settings[SECTION])
        else:
            await ls.pull_configuration()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CodeLlamaServer, params: Any) -> None:
        ls.shutdown_requested = True
        ls.service.cancel_all()
        ls.action_runner.cancel_all()
        ls.adapt.shutdown()
        ls.indexer.stop()

    @server.feature(types.EXIT)
    def exit_(ls: CodeLlamaServer, params: Any) -> None:
        ls.service.cancel_all()
        ls.adapt.shutdown()  # the run keeps its checkpoint, and resumes when trained again
        ls.service.worker.stop()
        exit_process(0 if ls.shutdown_requested else 1)

    @server.feature(GET_STATUS)
    def get_status(ls: CodeLlamaServer, params: Any) -> dict[str, Any]:
        return ls.status_payload()

    @server.feature(LAST_PROMPT)
    def last_prompt(ls: CodeLlamaServer, params: Any) -> dict[str, Any] | None:
        uri = params.get("uri") if isinstance(params, dict) else None
        uri = uri if isinstance(uri, str) else ls.service.last_uri
        return ls.service.last_prompt.get(uri) if uri else None

    @server.command(ACCEPTED)
    def accepted(ls: CodeLlamaServer, *args: Any) -> None:
        ls.acceptance.record_accepted()
        ls.send_status()

    @server.command(SUGGESTION_EVENT)
    def suggestion_event(ls: CodeLlamaServer, *args: Any) -> None:
        event = args[0].get("event") if args and isinstance(args[0], dict) else None
        if not isinstance(event, str) or not ls.acceptance.record_event(event):
            raise RequestFailed(f"{SUGGESTION_EVENT} takes one argument {{\"event\": \"word\" | \"line\" | \"dismissed\"}}")
        ls.send_status()

    @server.command(CMD_RELOAD)
    def reload_model(ls: CodeLlamaServer, *args: Any) -> None:
        ls.engine.ensure(ls.settings, force=True)

    @server.command(CMD_REINDEX)
    def reindex(ls: CodeLlamaServer, *args: Any) -> None:
        ls.indexer.start(ls.root, ls.settings.exclude)

    @server.command(TRAIN)
    def train_adapter(ls: CodeLlamaServer, *args: Any) -> dict[str, Any]:
        try:
            return ls.adapt.train(TrainArgs.parse(args[0] if args else None, uri_to_path))
        except BadArguments as exc:
            raise RequestFailed(str(exc)) from None

    @server.command(CANCEL)
    def cancel_training(ls: CodeLlamaServer, *args: Any) -> dict[str, Any]:
        return ls.adapt.cancel()

    @server.command(DROP)
    def drop_adapter(ls: CodeLlamaServer, *args: Any) -> dict[str, Any]:
        return ls.adapt.drop()

    return server
