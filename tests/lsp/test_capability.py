"""Which models follow instructions (lsp_server/capability.py): the default model's own marker, a model
directory's configuration, its name, the setting that overrides them."""

from __future__ import annotations

import json
from pathlib import Path

from lsp_server import capability as C
from lsp_server.settings import Settings, parse_settings


def model_dir(root: Path, name: str, config: dict | None = None, file: str = "config.json") -> str:
    path = root / name
    path.mkdir(parents=True)
    (path / file).write_text(json.dumps(config if config is not None else {"hidden_size": 8}))
    return str(path)


def test_the_default_model_says_it_is_a_completion_model():
    found = C.detect(None)
    assert not found.capable and found.model == "default"
    assert found.why == 'its config.json says "instruct": false'


def test_the_signal_marker_then_name_then_remote(tmp_path):
    assert C.detect(model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")).capable
    assert C.detect(model_dir(tmp_path, "llama-2-7b-chat", file="params.json")).capable
    assert not C.detect(model_dir(tmp_path, "CodeLlama-7b-Python-hf")).capable
    # The configuration beats the name, both ways; an adapter's adapter.json beats its base model.
    marked = model_dir(tmp_path, "my-finetune", {"hidden_size": 8, "instruct": True})
    assert C.detect(marked).capable and "config.json" in C.detect(marked).why
    assert not C.detect(model_dir(tmp_path, "x-Instruct", {"instruct": False})).capable
    adapter = Path(model_dir(tmp_path, "lora", {"instruct": True}, file="adapter.json"))
    assert C.detect(str(tmp_path / "CodeLlama-7b-Python-hf"), str(adapter)).capable
    assert C.detect(None, backend="http://localhost:8080/v1").capable


def test_the_setting_overrides_and_instruct_model_is_asked_first(tmp_path):
    instruct = model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")
    assert C.for_actions(Settings(instruct_model=instruct), None).capable
    missing = C.for_actions(Settings(instruct_model=str(tmp_path / "gone")), None)
    assert not missing.capable and "is not a directory" in missing.why and missing.model == "default"
    forced = C.for_actions(Settings(instruct_capable=True), None)
    assert forced.capable and forced.why == "codellama.instructCapable is true"
    assert not C.for_actions(Settings(instruct_model=instruct, instruct_capable=False), None).capable
    # The completion model actually serving decides, not a setting that failed to load.
    assert not C.for_actions(Settings(model=instruct + "-missing"), Settings()).capable
    assert C.for_actions(Settings(model=str(tmp_path / "gone")), Settings(model=instruct)).capable


def test_instruct_capable_setting_parses_true_false_null_and_rejects_the_rest():
    assert parse_settings({"instructCapable": True})[0].instruct_capable is True
    assert parse_settings({"instructCapable": None})[0].instruct_capable is None
    settings, problems = parse_settings({"instructCapable": "yes"})
    assert settings.instruct_capable is None and "codellama.instructCapable" in problems[0]


def test_the_messages_name_the_model_say_why_and_what_to_set(tmp_path):
    default = C.for_actions(Settings(), Settings())
    assert C.refusal(default).startswith(
        'code actions need a model that follows instructions, and the default model (the model serving them) '
        'does not: its config.json says "instruct": false. Set codellama.instructModel to a Code Llama – '
        "Instruct model directory")
    assert C.disabled_reason(default) == ("The default model does not follow instructions: set "
                                          "codellama.instructModel to a Code Llama – Instruct model")
    base = C.for_actions(Settings(model=model_dir(tmp_path, "CodeLlama-7b-hf")), None)
    assert C.disabled_reason(base).startswith("CodeLlama-7b-hf does not follow instructions")
