"""Which model serves code actions and whether it follows instructions (lsp_server/capability.py): the
loaded backend answers (Backend.instruct_capability), before loading the engine's rule for the
directory the settings name; `instructModel` is asked first; the user's `instructCapable` wins.
(The engine's own answers: tests/engine/test_instruct.py; through the real server and the default
model: test_e2e_actions.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from lsp_server import capability as C
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings, parse_settings

from .fake_backend import FakeBackend


def model_dir(root: Path, name: str, config: dict | None = None) -> str:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config if config is not None else {"hidden_size": 8}))
    return str(path)


def engine(backend: FakeBackend | None = None, loaded: Settings | None = None) -> EngineManager:
    manager = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    manager.backend, manager.loaded_settings = backend, (loaded or Settings()) if backend is not None else None
    return manager


def test_before_loading_the_settings_model_directory_answers(tmp_path):
    found = C.for_actions(Settings(), engine(), engine())
    assert found == C.Capability(False, "default", 'its config.json says "instruct": false')
    named = C.for_actions(Settings(model=model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")), engine(), engine())
    assert named.capable and named.model == "CodeLlama-7b-Instruct-hf"
    remote = C.for_actions(Settings(backend="http://localhost:8080/v1"), engine(), engine())
    assert remote.capable and remote.model == "http://localhost:8080/v1" and "remote backend" in remote.why


def test_the_loaded_backend_answers_not_the_settings(tmp_path):
    instruct = model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")
    # The settings name an instruct model that is still loading: the completion model serving decides.
    serving = engine(FakeBackend(), Settings())
    found = C.for_actions(Settings(model=instruct), serving, engine())
    assert not found.capable and found.model == "default" and "scripted stand-in" in found.why
    told = engine(FakeBackend(follows_instructions=True), Settings(model=instruct))
    assert C.for_actions(Settings(), told, engine()) == C.Capability(
        True, "CodeLlama-7b-Instruct-hf", "it is a scripted stand-in told it does")


def test_instruct_model_is_asked_first_and_the_setting_overrides(tmp_path):
    instruct = model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")
    completion = engine(FakeBackend(), Settings())
    # Not loaded yet (it loads when an action first runs): its directory answers; once loaded, its backend.
    assert C.for_actions(Settings(instruct_model=instruct), completion, engine()).capable
    loaded = engine(FakeBackend(follows_instructions=False), Settings(model=instruct))
    assert not C.for_actions(Settings(instruct_model=instruct), completion, loaded).capable
    missing = C.for_actions(Settings(instruct_model=str(tmp_path / "gone")), completion, engine())
    assert not missing.capable and "is not a directory" in missing.why and missing.model == "default"
    forced = C.for_actions(Settings(instruct_capable=True), completion, engine())
    assert forced == C.Capability(True, "default", "codellama.instructCapable is true")
    assert not C.for_actions(Settings(instruct_model=instruct, instruct_capable=False), completion, engine()).capable


def test_instruct_capable_setting_parses_true_false_null_and_rejects_the_rest():
    assert parse_settings({"instructCapable": True})[0].instruct_capable is True
    assert parse_settings({"instructCapable": None})[0].instruct_capable is None
    settings, problems = parse_settings({"instructCapable": "yes"})
    assert settings.instruct_capable is None and "codellama.instructCapable" in problems[0]


def test_the_messages_name_the_model_say_why_and_what_to_set(tmp_path):
    default = C.for_actions(Settings(), engine(), engine())
    assert C.refusal(default).startswith(
        'code actions need a model that follows instructions, and the default model (the model serving them) '
        'does not: its config.json says "instruct": false. Set codellama.instructModel to a Code Llama – '
        "Instruct model directory")
    assert C.disabled_reason(default) == ("The default model does not follow instructions: set "
                                          "codellama.instructModel to a Code Llama – Instruct model")
    base = C.for_actions(Settings(model=model_dir(tmp_path, "CodeLlama-7b-hf")), engine(), engine())
    assert C.disabled_reason(base).startswith("CodeLlama-7b-hf does not follow instructions")
