"""End to end: `compileDecode: "auto"` through the real server with the default model. The server answers
at once (eager decode steps while the step compiles in the background), the status says how steps run,
and its suggestions, compiled or not, are the ones a server decoding eagerly makes. (The engine-level
tests, with the compile held at a gate and failing, are tests/engine/test_compiled_decode.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types as T

from engine import native_step

from . import lsp_client as lc

CODE = "def area(width, height):\n    return \n\n\nprint(area(3, 4))\n"

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def suggestion(client, workspace: Path) -> str:
    uri = lc.open_doc(client, workspace / "shapes.py")
    result = await lc.inline(client, uri, 1, 11)
    status = await lc.request(client, "codellama/getStatus", {})
    # Closed, so that the next request runs the engine instead of answering from the suggestion cache.
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    assert not status["lastFromCache"]
    return result.items[0].insert_text if result.items else ""


async def two_suggestions(workspace: Path, compile_decode: str) -> list[str]:
    """The same spot asked twice (the second time its prompt is in the KV cache but for the last token,
    which a decode step computes): on a fresh server, waiting between the two until the decode step is
    compiled when it compiles."""
    # Where the native step serves (engine/native_step.py) nothing is compiled: off for this test.
    client = await lc.start(workspace, {"compileDecode": compile_decode, "maxNewTokens": 16,
                                        "repositoryContext": False}, env={native_step.DISABLE_ENV: "0"})
    try:
        await lc.wait_ready(client)
        status = await lc.request(client, "codellama/getStatus", {})
        assert status["decodeStep"] == ("eager" if compile_decode == "off" else "compiling"), status
        texts = [await suggestion(client, workspace)]
        assert texts[0].strip()  # answered at once, while the step compiles in the background
        if compile_decode != "off":
            status = await lc.wait_for(client, lambda s: s["decodeStep"] != "compiling", timeout=900)
            assert status["decodeStep"] == "compiled", status  # "eager": the compile failed (see the log)
        texts.append(await suggestion(client, workspace))
        return texts
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_answers_while_compiling_and_then_suggests_what_eager_decoding_does(tmp_path: Path):
    (tmp_path / "shapes.py").write_text(CODE)
    assert await two_suggestions(tmp_path, "auto") == await two_suggestions(tmp_path, "off")
