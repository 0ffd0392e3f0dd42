"""End to end: the model directory is damaged while the server serves from it (its weights cut in
half in place, its config.json garbled, the directory deleted). The server keeps serving the model it
loaded; a reload (`codellama.reloadModel`) fails with a
message saying what is wrong (window/showMessage and `codellama/getStatus`), and leaves that model
serving.

Served in bfloat16, the dtype the default model is stored in: the case where the weights were mapped
straight from the file, so that cutting the file killed the server (SIGBUS) at the next request.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from engine import default_model_dir

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL_NAME = "served-copy"
CALC = "def add(a, b):\n    return \n"


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("models") / MODEL_NAME
    shutil.copytree(default_model_dir(), model, ignore=shutil.ignore_patterns("*.png", "*.md"))
    return model


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(model_copy: Path, tmp_path_factory: pytest.TempPathFactory):
    workspace = tmp_path_factory.mktemp("model-faults-ws")  # empty: the documents come from elsewhere
    client = await lc.start(workspace, {"model": str(model_copy), "dtype": "bfloat16", "maxNewTokens": 16})
    status = await lc.wait_ready(client)
    assert status["model"] == MODEL_NAME and status["dtype"] == "bfloat16"
    yield client
    await client.shutdown_session()
    await client.stop()


async def suggests(client, elsewhere: Path) -> None:
    """The model computes a suggestion now: asked in a new document (a suggestion already given for a
    document is answered from a cache, without the model). Not compared with an earlier one: in
    bfloat16 a prompt whose keys and values are reused from the cache may decode differently."""
    copy = elsewhere / f"copy{len(list(elsewhere.iterdir()))}" / "calc.py"
    copy.parent.mkdir()
    copy.write_text(CALC)
    uri = lc.open_doc(client, copy)
    result = await lc.inline(client, uri, 1, 11)
    assert result.items, "no suggestion"
    assert not (await lc.last_prompt(client, uri))["fromCache"]
    assert result.items[0].insert_text.strip()


async def reload_fails_with(client, needle: str) -> dict:
    """Reload the model; wait for the message containing `needle`; return the status after it."""
    seen = len(client.messages)
    await lc.request(client, "workspace/executeCommand", T.ExecuteCommandParams(command="codellama.reloadModel"))
    for _ in range(600):
        shown = [m.message for m in client.messages[seen:] if needle in m.message]
        if shown:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"no message containing {needle!r}: {[m.message for m in client.messages]}")
    status = await lc.wait_for(client, lambda s: s["state"] != "loading")
    assert status["state"] == "ready" and status["model"] == MODEL_NAME, status  # the loaded model still serves
    assert needle in status["message"], status
    return status


async def test_a_damaged_model_directory_fails_the_reload_and_the_loaded_model_keeps_serving(
        client, model_copy, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("outside")
    await suggests(client, elsewhere)

    weights = model_copy / "model.safetensors"
    with open(weights, "r+b") as fh:  # cut in half in place, as a failed copy or download leaves it
        fh.truncate(weights.stat().st_size // 2)
    await suggests(client, elsewhere)
    await reload_fails_with(client, "corrupt safetensors file")
    await suggests(client, elsewhere)

    (model_copy / "config.json").write_text('{"hidden_size": ')
    await reload_fails_with(client, "cannot read the model configuration")
    await suggests(client, elsewhere)

    shutil.rmtree(model_copy)
    status = await reload_fails_with(client, "Model directory not found")
    assert str(model_copy) in status["message"]
    await suggests(client, elsewhere)
