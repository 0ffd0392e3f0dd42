"""End to end: settings from initializationOptions and workspace/configuration, changed without a
restart; with no `model` setting the server serves the embedded default model; a model change reloads
in the background while the old model keeps serving, and going back to no model brings the default
model back; problems the user must act on are shown and the server stays up."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from engine import default_model_dir, native_step

from . import lsp_client as lc

DEFAULT = default_model_dir().name
SUMS = (  # the last loop will repeat the one above: prompt lookup drafts it, copying writes it
    "def total(values):\n    result = 0\n    for value in values:\n        result = result + value\n"
    "    return result\n\n\ndef total_of_squares(values):\n    result = 0\n    for value in values:\n"
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("settings-ws")
    (root / "calc.py").write_text("def add(a, b):\n    return \n")
    (root / "sums.py").write_text(SUMS)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(workspace: Path):
    # No model anywhere: the default model. The prompt budget comes from workspace/configuration
    # (pulled after `initialized`, before the model loads), the rest from initializationOptions; one
    # invalid option is reported and ignored.
    client = await lc.start(workspace, {"maxNewTokens": 24, "temperature": "very hot"},
                            configuration={"maxContextTokens": 512})
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


async def loading_progress_began(client, model: str, timeout: float = 120) -> None:
    title = f"Loading model {model}"
    for _ in range(int(timeout / 0.2)):
        if any(isinstance(r, T.WorkDoneProgressBegin) and r.title == title
               for reports in client.progress_reports.values() for r in reports):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no progress {title!r} began")


async def test_default_model_pulled_configuration_and_invalid_option_reported(client, workspace):
    status = await lc.request(client, "codellama/getStatus", {})
    assert status["model"] == DEFAULT and status["state"] == "ready"
    shown = await messages_containing(client, "codellama.temperature")
    assert "default" in shown[0]
    uri = lc.open_doc(client, workspace / "calc.py")
    result = await lc.inline(client, uri, 1, 11)
    assert result.items and result.items[0].insert_text.strip()  # the default model suggests something
    assert (await lc.last_prompt(client, uri))["budgetTokens"] == 512  # the pulled setting


async def test_speculative_decoding_setting_changes_the_decode_passes_not_the_suggestion(client, workspace):
    answers = []
    for speculative in (False, True):
        client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
            settings={"codellama": {"speculativeDecoding": speculative}}))
        uri = lc.open_doc(client, workspace / "sums.py")
        result = await lc.inline(client, uri, 10, 0)  # the last loop's body
        prompt = await lc.last_prompt(client, uri)
        answers.append((result.items[0].insert_text, prompt["generatedTokens"], prompt["decodePasses"]))
        client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    (plain, tokens, plain_passes), (fast, fast_tokens, fast_passes) = answers
    assert fast == plain and "value" in plain and fast_tokens == tokens
    assert plain_passes == tokens - 1  # one pass per token after the first
    status = await lc.request(client, "codellama/getStatus", {})
    if status["decodeStep"] == "eager" and "bfloat16" in status["description"]:  # where it is on
        assert fast_passes < tokens - 1  # (engine.backends.local: bfloat16 without the native step)


async def test_changed_settings_apply_to_the_next_request(client, workspace):
    uri = lc.open_doc(client, workspace / "calc.py")
    await lc.inline(client, uri, 1, 11)
    assert (await lc.last_prompt(client, uri))["fimFormat"] == "spm"
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"fimFormat": "psm", "maxContextTokens": 300, "repositoryContext": False}}))
    await lc.inline(client, uri, 1, 11)
    prompt = await lc.last_prompt(client, uri)
    assert prompt["fimFormat"] == "psm" and prompt["budgetTokens"] == 300 and prompt["snippets"] == []


async def test_pulled_configuration_when_the_notification_carries_none(client, workspace):
    client.set_configuration({"enable": False}, section="codellama")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    await lc.wait_for(client, lambda s: s["state"] == "disabled")
    uri = (workspace / "calc.py").as_uri()
    assert list((await lc.inline(client, uri, 1, 11)).items) == []
    client.set_configuration({}, section="codellama")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    status = await lc.wait_for(client, lambda s: s["state"] == "ready")
    assert status["model"] == DEFAULT


async def test_missing_model_directory_is_shown_and_the_old_model_keeps_serving(client, workspace, tmp_path):
    missing = tmp_path / "no-such-model"
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": str(missing)}}))
    shown = await messages_containing(client, "Model directory not found")
    assert str(missing) in shown[0]
    status = await lc.wait_for(client, lambda s: s["state"] != "loading")
    # The status names the model still serving, and says what failed. (Before, it said
    # `"model": "no-such-model"` and "ready", with nothing about the failure.)
    assert status["state"] == "ready" and status["model"] == DEFAULT
    assert status["description"].startswith(f"local: {DEFAULT} ")
    assert status["requestedModel"] == "no-such-model" and "Model directory not found" in status["message"]
    assert client.statuses[-1]["model"] == DEFAULT and client.statuses[-1]["message"] == status["message"]
    uri = lc.open_doc(client, workspace / "calc.py")  # (again: under `--dist load` the opening test may run elsewhere)
    result = await lc.inline(client, uri, 1, 11)
    assert result.items and result.items[0].insert_text.strip()  # and it still suggests
    prompt = await lc.last_prompt(client, uri)
    assert prompt["prefix"].endswith("    return ")


async def test_model_change_reloads_in_the_background_and_no_model_goes_back_to_the_default(
        client, workspace, tiny_model_dir, tmp_path):
    other = tmp_path / "second-model"  # the tiny random-weight test model
    shutil.copytree(tiny_model_dir, other)
    seen = len(client.statuses)
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": str(other)}}))
    status = await lc.wait_for(client, lambda s: s["model"] == "second-model" and s["state"] == "ready")
    assert "second-model" in status["description"] and status["message"] is None  # the earlier failure is gone
    uri = lc.open_doc(client, workspace / "calc.py")
    assert isinstance(await lc.inline(client, uri, 1, 11), T.InlineCompletionList)
    await loading_progress_began(client, "second-model")
    # The status bar showed "loading", naming the model being loaded, before "ready": even though the
    # tiny model loads in milliseconds (before, that "loading" was often never sent).
    states = [(s["state"], s["model"], s["requestedModel"]) for s in client.statuses[seen:]]
    loading = states.index(("loading", DEFAULT, "second-model"))
    assert ("ready", "second-model", "second-model") in states[loading + 1:], states
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": None}}))
    status = await lc.wait_for(client, lambda s: s["model"] == DEFAULT and s["state"] == "ready")
    assert status["description"].startswith(f"local: {DEFAULT} ")
    result = await lc.inline(client, uri, 1, 11)
    assert result.items and result.items[0].insert_text.strip()


async def test_quantization_change_reloads_the_model_with_int8_weights(client, workspace):
    assert (await lc.request(client, "codellama/getStatus", {}))["quantization"] == "none"
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"model": None, "quantization": "int8"}}))
    status = await lc.wait_for(client, lambda s: s["quantization"] == "int8" and s["state"] == "ready")
    # int8 weights on CPU decode natively (engine/native_step.py), over the model's bfloat16 cache; where
    # it cannot be built (no compiler, no AVX-512), with PyTorch over a float32 one.
    if native_step.library() is not None:
        assert status["model"] == DEFAULT and status["description"].endswith("int8 weights)")
        assert status["kvCacheDtype"] == "bfloat16" and status["decodeStep"] == "native"
    else:
        assert status["model"] == DEFAULT and status["description"].endswith("int8 weights, float32 KV cache)")
        assert status["kvCacheDtype"] == "float32" and status["decodeStep"] == "eager"
    # A new document (no cached answer), and not calc.py again: copying from the workspace would
    # (rightly) write what calc.py has after `return `, nothing (engine/prompt_copy.py).
    (workspace / "quantized.py").write_text("def scale(x, factor):\n    return x * \n")
    uri = lc.open_doc(client, workspace / "quantized.py")
    result = await lc.inline(client, uri, 1, 15)
    assert result.items and result.items[0].insert_text.strip()  # the int8 model suggests
    assert not (await lc.last_prompt(client, uri))["fromCache"]
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"codellama": {"quantization": "none"}}))
    await lc.wait_for(client, lambda s: s["quantization"] == "none" and s["state"] == "ready")
