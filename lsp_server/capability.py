"""Which model serves code actions, and whether it follows instructions. Code actions send Code Llama –
Instruct prompts; a completion model (the embedded default model, CodeLlama-7b-hf) answers them with
noise, so the server does not run them there (lsp_server/README.md, "Code actions").

Whether a model follows instructions is the engine's knowledge: a loaded backend answers
(`Backend.instruct_capability`: a local one from its checkpoint, a remote one assumed to); before the
model is loaded (at startup, or `instructModel` until the first action runs) the engine answers for the
directory the settings name, by the rule the local backend will use (engine.instruct). The user's
setting `codellama.instructCapable` (true/false; null: ask the model) wins over both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.backends.remote import ASSUMED_INSTRUCT
from engine.instruct import follows_instructions
from engine.paths import default_model_dir

from .engine_manager import EngineManager, model_label
from .settings import Settings


@dataclass(frozen=True)
class Capability:
    capable: bool
    model: str  # the model serving code actions, as the user knows it (directory name, "default", URL)
    why: str  # what decided it, a clause for the user: "its config.json says \"instruct\": false"


def _name(settings: Settings) -> str:
    return settings.backend if settings.backend != "local" else model_label(settings)


def before_loading(settings: Settings) -> Capability:
    """What the backend the settings name will answer once it is loaded."""
    if settings.backend != "local":
        return Capability(ASSUMED_INSTRUCT.capable, _name(settings), ASSUMED_INSTRUCT.why)
    directory = Path(settings.model) if settings.model else default_model_dir()
    found = follows_instructions(directory, Path(settings.adapter) if settings.adapter else None)
    return Capability(found.capable, _name(settings), found.why)


def of_engine(engine: EngineManager, settings: Settings) -> Capability:
    """What the backend `engine` serves with answers; while none is loaded, what the one `settings`
    name will answer."""
    backend, loaded = engine.backend, engine.loaded_settings
    if backend is None or loaded is None:
        return before_loading(settings)
    found = backend.instruct_capability
    return Capability(found.capable, _name(loaded), found.why)


def for_actions(settings: Settings, completion: EngineManager, instruct: EngineManager) -> Capability:
    """Whether the model that would serve code actions follows instructions: `instructModel` (loaded
    by `instruct`) when it is a directory, else the completion model actually serving (`completion`'s
    backend; while none is loaded, the one the settings name)."""
    if settings.instruct_model and Path(settings.instruct_model).is_dir():
        found = of_engine(instruct, settings.for_instruct_model())
    else:
        found = of_engine(completion, settings)
        if settings.instruct_model:
            found = Capability(found.capable, found.model,
                               f"{found.why}; codellama.instructModel ({settings.instruct_model}) is not a directory")
    if settings.instruct_capable is not None:
        return Capability(settings.instruct_capable, found.model,
                          f"codellama.instructCapable is {str(settings.instruct_capable).lower()}")
    return found


def _named(capability: Capability) -> str:
    return "the default model" if capability.model == "default" else capability.model


def refusal(capability: Capability) -> str:
    """Why an action is not run, and what to do about it (a clause: the caller says which action)."""
    return (f"code actions need a model that follows instructions, and {_named(capability)} (the model "
            f"serving them) does not: {capability.why}. Set codellama.instructModel to a Code Llama – "
            "Instruct model directory (e.g. CodeLlama-7b-Instruct-hf), or codellama.instructCapable to "
            "true to use this model anyway.")


def disabled_reason(capability: Capability) -> str:
    """Short: shown greyed out beside the action in the editor's menu."""
    named = _named(capability)
    return (f"{named[0].upper()}{named[1:]} does not follow instructions: set codellama.instructModel to a "
            "Code Llama – Instruct model")
