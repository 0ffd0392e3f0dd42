"""Whether a model follows instructions is the engine's knowledge: engine/instruct.py reads what a model
directory says about itself, a loaded local backend answers from its checkpoint and adapter
(`Backend.instruct_capability`), a remote backend is assumed to (its model is the server's choice)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.backends.base import InstructCapability
from engine.backends.local import load_local_backend
from engine.backends.remote import RemoteBackend
from engine.instruct import follows_instructions
from engine.paths import default_model_dir
from tests.tiny_models import build_adapter


def model_dir(root: Path, name: str, config: dict | None = None, file: str = "config.json") -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / file).write_text(json.dumps(config if config is not None else {"hidden_size": 8}))
    return path


def test_the_marker_then_the_name_decide_and_an_adapter_speaks_first(tmp_path):
    assert follows_instructions(model_dir(tmp_path, "CodeLlama-7b-Instruct-hf")).capable
    assert follows_instructions(model_dir(tmp_path, "llama-2-7b-chat", file="params.json")).capable
    python = follows_instructions(model_dir(tmp_path, "CodeLlama-7b-Python-hf"))
    assert not python.capable and "completion model" in python.why
    # The configuration beats the name, both ways; an adapter's adapter.json beats its base model.
    marked = follows_instructions(model_dir(tmp_path, "my-finetune", {"hidden_size": 8, "instruct": True}))
    assert marked == InstructCapability(True, 'its config.json says "instruct": true')
    assert not follows_instructions(model_dir(tmp_path, "x-Instruct", {"instruct": False})).capable
    adapter = model_dir(tmp_path, "lora", {"instruct": True}, file="adapter.json")
    assert follows_instructions(tmp_path / "CodeLlama-7b-Python-hf", adapter).capable


def test_a_loaded_local_backend_answers_from_its_checkpoint_and_its_adapter(tmp_path):
    """The default model says it is a completion model; a LoRA adapter marked instruction-tuned over it
    makes the backend that loaded both say it follows instructions, and why."""
    plain = load_local_backend()
    try:
        assert plain.instruct_capability == InstructCapability(False, 'its config.json says "instruct": false')
    finally:
        plain.close()
    adapter = build_adapter(default_model_dir(), tmp_path / "lora", seed=1, scale=0.1, rope_theta=1e6)
    meta = json.loads((adapter / "adapter.json").read_text())
    (adapter / "adapter.json").write_text(json.dumps({**meta, "instruct": True}))
    tuned = load_local_backend(adapter=adapter)
    try:
        assert tuned.instruct_capability == InstructCapability(True, "its adapter's adapter.json says \"instruct\": true")
    finally:
        tuned.close()


def test_a_remote_backend_is_assumed_to_follow_instructions():
    backend = RemoteBackend("http://127.0.0.1:9/v1", probe=False)
    try:
        assert backend.instruct_capability == InstructCapability(
            True, "it is a remote backend (assumed to follow instructions)")
    finally:
        backend.close()
