"""End to end: settings from initializationOptions and workspace/configuration, changed without a
restart; a model change reloads in the background while the old model keeps serving; problems the
user must act on are shown and the server stays up."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("settings-ws")
    (root / "calc.py").write_text("def add(a, b):\n    return \n")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(workspace: Path, tiny_model_dir: Path):
    # The model comes from workspace/configuration (pulled after `initialized`), the rest from
    # initializationOptions; one invalid option is reported and ignored.
    client = await lc.start(workspace, {"maxNewTokens": 6, "temperature": "very hot"},
                            configuration={"model": str(tiny_model_dir)})
    await lc.wait_ready(client)
    yield client
    await client.shutdown_session()
    await client.stop()


async def messages_containing(client, needle: str, timeout: float = 120) -> list[str]:
    for _ in range(int(timeout / 0.2)):
        found = [m.message for m in client.messages if needle in m.message]
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no window/showMessage containing {needle!r}: {[m.message for m in client.messages]}")


async def test_model_from_pulled_configuration_and_invalid_option_reported(client, tiny_model_dir):
    status = await lc.request(client, "codellama/getStatus", {})
    assert status["model"] == tiny_model_dir.name and status["state"] == "ready"
    shown = await messages_containing(client, "codellama.temperature")
    assert "default" in shown[0]


async def test_changed_settings_apply_to_the_next_request(client, workspace):
    uri = lc.open_doc(client, workspace / "calc.py")
    await lc.inline(client, uri, 1, 11)
    assert (await lc.last_prompt(client, uri))["fimFormat"] == "spm"
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": client.get_configuration(section="codellama")["model"],
                                "fimFormat": "psm", "maxContextTokens": 300, "repositoryContext": False}}))
    await lc.inline(client, uri, 1, 11)
    prompt = await lc.last_prompt(client, uri)
    assert prompt["fimFormat"] == "psm" and prompt["budgetTokens"] == 300 and prompt["snippets"] == []


async def test_pulled_configuration_when_the_notification_carries_none(client, workspace, tiny_model_dir):
    client.set_configuration({"model": str(tiny_model_dir), "enable": False}, section="codellama")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    await lc.wait_for(client, lambda s: s["state"] == "disabled")
    uri = (workspace / "calc.py").as_uri()
    assert list((await lc.inline(client, uri, 1, 11)).items) == []
    client.set_configuration({"model": str(tiny_model_dir)}, section="codellama")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    await lc.wait_for(client, lambda s: s["state"] == "ready")


async def test_missing_model_directory_is_shown_and_the_old_model_keeps_serving(client, workspace, tmp_path):
    missing = tmp_path / "no-such-model"
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": str(missing)}}))
    shown = await messages_containing(client, "Model directory not found")
    assert str(missing) in shown[0]
    status = await lc.wait_for(client, lambda s: s["state"] != "loading")
    assert status["state"] == "ready" and status["description"]  # still the previous model
    uri = (workspace / "calc.py").as_uri()
    result = await lc.inline(client, uri, 1, 11)
    assert isinstance(result, T.InlineCompletionList)
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith("    return ")


async def test_model_change_reloads_in_the_background(client, workspace, tiny_model_dir, tmp_path):
    other = tmp_path / "second-model"
    shutil.copytree(tiny_model_dir, other)
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": str(other)}}))
    status = await lc.wait_for(client, lambda s: s["model"] == "second-model" and s["state"] == "ready")
    assert "second-model" in status["description"]
    uri = (workspace / "calc.py").as_uri()
    assert isinstance(await lc.inline(client, uri, 1, 11), T.InlineCompletionList)
    assert any(s["state"] == "loading" and s["model"] == "second-model" for s in client.statuses)
