"""Drive `python -m lsp_server` over stdio like an editor does (pytest-lsp's client)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Union

from lsprotocol import types as T
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import register_lsp_features

from lsp_server.protocol import robust_converter
from tests import forkserver

REPO = Path(__file__).resolve().parents[2]


def make_client() -> LanguageClient:
    # The robust converter keeps the results of custom requests (codellama/*) as plain dicts.
    client = LanguageClient(converter_factory=robust_converter)
    # lsprotocol structures a code action whose `command` is an object as a Command with that object
    # stringified; tell the two apart by whether `command` is the command's name.
    client.protocol._converter.register_structure_hook(
        Union[T.Command, T.CodeAction],  # noqa: UP007 (the exact type lsprotocol looks up)
        lambda obj, _: client.protocol._converter.structure(
            obj, T.Command if isinstance(obj.get("command"), str) else T.CodeAction))
    register_lsp_features(client)
    client.statuses = []  # type: ignore[attr-defined]

    @client.feature("codellama/status")
    def on_status(c: LanguageClient, params: Any) -> None:
        c.statuses.append(params)  # type: ignore[attr-defined]

    return client


def capabilities(inline: bool = True) -> T.ClientCapabilities:
    caps = client_capabilities("visual-studio-code")
    if inline:
        caps.text_document.inline_completion = T.InlineCompletionClientCapabilities()
    return caps


def server_env() -> dict[str, str]:
    # The test models (the default model, the tiny one) are small: fastest on one thread, and the machine is shared.
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))


async def start(root: Path, init_options: dict[str, Any], inline: bool = True,
                configuration: dict[str, Any] | None = None, client: LanguageClient | None = None,
                env: dict[str, str] | None = None) -> LanguageClient:
    """`env`: added to the server's environment."""
    client = client or make_client()
    if configuration is not None:
        client.set_configuration(configuration, section="codellama")
    await client.start_io(*forkserver.command("lsp_server", "--log-level", "info"), env={**server_env(), **(env or {})},
                          cwd=str(REPO))
    await client.initialize_session(T.InitializeParams(
        capabilities=capabilities(inline), root_uri=root.as_uri(),
        workspace_folders=[T.WorkspaceFolder(root.as_uri(), root.name)],
        initialization_options=init_options))
    return client


async def request(client: LanguageClient, method: str, params: Any = None, timeout: float = 300) -> Any:
    return await asyncio.wait_for(client.protocol.send_request_async(method, params), timeout)


async def wait_for(client: LanguageClient, predicate, timeout: float = 900) -> dict[str, Any]:
    """Poll codellama/getStatus until `predicate(status)`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await request(client, "codellama/getStatus", {})
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"server never reached the state; last status {status}")
        await asyncio.sleep(0.2)


async def wait_ready(client: LanguageClient, timeout: float = 900) -> dict[str, Any]:
    status = await wait_for(client, lambda s: s["state"] in ("ready", "error") and not s["indexing"], timeout)
    assert status["state"] == "ready", status
    return status


def open_doc(client: LanguageClient, path: Path, text: str | None = None, language: str = "python") -> str:
    uri = path.as_uri()
    text = path.read_text() if text is None else text
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, language, 1, text)))
    return uri


def insert(client: LanguageClient, uri: str, version: int, line: int, character: int, text: str) -> None:
    pos = T.Position(line, character)
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [T.TextDocumentContentChangePartial(range=T.Range(pos, pos), text=text)]))


async def inline(client: LanguageClient, uri: str, line: int, character: int, invoked: bool = True,
                 timeout: float = 300) -> T.InlineCompletionList:
    kind = T.InlineCompletionTriggerKind.Invoked if invoked else T.InlineCompletionTriggerKind.Automatic
    return await asyncio.wait_for(client.text_document_inline_completion_async(T.InlineCompletionParams(
        context=T.InlineCompletionContext(kind), text_document=T.TextDocumentIdentifier(uri),
        position=T.Position(line, character))), timeout)


async def last_prompt(client: LanguageClient, uri: str) -> dict[str, Any]:
    return await request(client, "codellama/lastPrompt", {"uri": uri})


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
