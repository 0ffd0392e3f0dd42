"""What the language-server benchmarks share: a pygls client that answers the server like an editor,
starting `python -m lsp_server` over stdio on a workspace, and waiting until it is ready.

Used by benchmarks/lsp_latency.py and benchmarks/soak.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lsp_server.protocol import robust_converter  # noqa: E402


def make_client(name: str = "lsp-bench") -> LanguageClient:
    """A client that answers `workspace/configuration` with `client.config` and accepts progress."""
    client = LanguageClient(name, "1", converter_factory=robust_converter)
    client.config: dict[str, Any] = {}  # type: ignore[misc]

    @client.feature(T.WORKSPACE_CONFIGURATION)
    def configuration(ls: LanguageClient, params: T.ConfigurationParams) -> list[Any]:
        return [ls.config for _ in params.items]  # type: ignore[attr-defined]

    @client.feature(T.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def progress_create(ls: LanguageClient, params: Any) -> None:
        return None

    for method in (T.PROGRESS, T.WINDOW_SHOW_MESSAGE, T.WINDOW_LOG_MESSAGE, "codellama/status"):
        client.feature(method)(lambda ls, params: None)
    return client


class Editor:
    """One open document, edited and queried like an editor would."""

    def __init__(self, client: LanguageClient, uri: str) -> None:
        self.client, self.uri, self.version = client, uri, 1

    def open(self, text: str) -> None:
        self.version = 1
        self.client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(self.uri, "python", 1, text)))

    def close(self) -> None:
        self.client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(self.uri)))

    def type_char(self, line: int, character: int, ch: str) -> None:
        self.edit((line, character), (line, character), ch)

    def edit(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """One incremental didChange: replace [start, end) with `text`."""
        self.version += 1
        self.client.text_document_did_change(T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            [T.TextDocumentContentChangePartial(range=T.Range(T.Position(*start), T.Position(*end)), text=text)]))

    async def complete(self, line: int, character: int) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        await self.client.text_document_inline_completion_async(T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
            text_document=T.TextDocumentIdentifier(self.uri), position=T.Position(line, character)))
        elapsed = 1000 * (time.perf_counter() - started)
        prompt = await self.client.protocol.send_request_async("codellama/lastPrompt", {"uri": self.uri})
        status = await self.client.protocol.send_request_async("codellama/getStatus", {})
        return elapsed, {"prompt": prompt or {}, "status": status}


async def start_server(client: LanguageClient, root: Path, init: dict[str, Any],
                       server_args: tuple[str, ...] = ("--log-level", "warning"),
                       env: dict[str, str] | None = None) -> list[bytes]:
    """Start the server on stdio, initialize it on `root` with `init` as initializationOptions (also
    what `workspace/configuration` answers). Returns a list that fills with the server's stderr (read
    all along, so a chatty server never blocks on a full pipe)."""
    client.config = dict(init)  # type: ignore[attr-defined]
    await client.start_io(sys.executable, "-m", "lsp_server", *server_args, cwd=str(REPO), env=env)
    stderr: list[bytes] = []
    server = client._server  # type: ignore[attr-defined]

    async def drain() -> None:
        while chunk := await server.stderr.read(65536):
            stderr.append(chunk)

    client._stderr_task = asyncio.create_task(drain())  # type: ignore[attr-defined]  # keep a reference
    await client.initialize_async(T.InitializeParams(
        capabilities=T.ClientCapabilities(
            text_document=T.TextDocumentClientCapabilities(inline_completion=T.InlineCompletionClientCapabilities()),
            workspace=T.WorkspaceClientCapabilities(configuration=True)),
        root_uri=root.as_uri(), initialization_options=init))
    client.initialized(T.InitializedParams())
    return stderr


def server_pid(client: LanguageClient) -> int:
    return int(client._server.pid)  # type: ignore[attr-defined]


async def wait_ready(client: LanguageClient, timeout: float = 3600) -> dict[str, Any]:
    """The status once the model is loaded and the workspace indexed."""
    deadline = time.monotonic() + timeout
    while True:
        status = await client.protocol.send_request_async("codellama/getStatus", {})
        if status["state"] == "error":
            raise SystemExit(f"model failed to load: {status['message']}")
        if status["state"] == "ready" and not status["indexing"] and not status.get("loading"):
            return status
        if time.monotonic() > deadline:
            raise SystemExit("server not ready in time")
        await asyncio.sleep(0.2)


async def stop_server(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
