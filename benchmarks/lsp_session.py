"""A JSON-RPC client that drives `python -m lsp_server` over stdio for the benchmarks (pygls's client,
with the server's own converter so `codellama/*` results stay plain dicts)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lsp_server.protocol import robust_converter  # noqa: E402


def make_client(name: str = "lsp-bench") -> LanguageClient:
    """A client that answers `workspace/configuration` with `client.config` and ignores the rest."""
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


async def start_server(root: Path, init: dict[str, Any], name: str = "lsp-bench",
                       threads: int | None = None) -> LanguageClient:
    """`python -m lsp_server` on stdio (from this checkout), initialized with `root` as the workspace;
    `threads` sets OMP_NUM_THREADS for it (default: the server's own choice, all cores)."""
    client = make_client(name)
    client.config = dict(init)  # type: ignore[attr-defined]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    await client.start_io(sys.executable, "-m", "lsp_server", "--log-level", "warning", cwd=str(REPO), env=env)
    await client.initialize_async(T.InitializeParams(
        capabilities=T.ClientCapabilities(
            text_document=T.TextDocumentClientCapabilities(inline_completion=T.InlineCompletionClientCapabilities()),
            workspace=T.WorkspaceClientCapabilities(configuration=True)),
        root_uri=root.as_uri(), initialization_options=init))
    client.initialized(T.InitializedParams())
    return client


def server_pid(client: LanguageClient) -> int:
    return int(client._server.pid)  # type: ignore[attr-defined]


def collect_stderr(client: LanguageClient) -> list[bytes]:
    """A list that fills with the server's stderr, read all along (the pipe is never left full)."""
    chunks: list[bytes] = []
    stream = client._server.stderr  # type: ignore[attr-defined]

    async def drain() -> None:
        while chunk := await stream.read(65536):
            chunks.append(chunk)

    client._stderr_task = asyncio.create_task(drain())  # type: ignore[attr-defined]  # keep a reference
    return chunks


async def stop_server(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def configure(client: LanguageClient, settings: dict[str, Any]) -> None:
    """Push `settings` (merged into the client's configuration) as a didChangeConfiguration."""
    client.config = {**client.config, **settings}  # type: ignore[attr-defined]
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"codellama": client.config}))  # type: ignore[attr-defined]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def wait_ready(client: LanguageClient, timeout: float = 3600) -> dict[str, Any]:
    """The server's status once the model is loaded and the workspace indexed."""
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

    async def inline(self, line: int, character: int) -> tuple[float, str]:
        """(client-side ms, the first suggestion's text or "") for an automatic inline completion."""
        started = time.perf_counter()
        result = await self.client.text_document_inline_completion_async(T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
            text_document=T.TextDocumentIdentifier(self.uri), position=T.Position(line, character)))
        elapsed = 1000 * (time.perf_counter() - started)
        items = result.items if isinstance(result, T.InlineCompletionList) else (result or [])
        text = items[0].insert_text if items else ""
        return elapsed, text if isinstance(text, str) else text.value

    async def complete(self, line: int, character: int) -> tuple[float, dict[str, Any]]:
        """(client-side ms, {"prompt": codellama/lastPrompt, "status": codellama/getStatus})."""
        elapsed, _ = await self.inline(line, character)
        prompt = await self.client.protocol.send_request_async("codellama/lastPrompt", {"uri": self.uri})
        status = await self.client.protocol.send_request_async("codellama/getStatus", {})
        return elapsed, {"prompt": prompt or {}, "status": status}
