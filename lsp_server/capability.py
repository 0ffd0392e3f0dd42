"""Which model serves code actions, and whether it follows instructions. Code actions send Code Llama –
Instruct prompts; a completion model (the embedded default model, CodeLlama-7b-hf) answers them with
noise, so the server does not run them there (lsp_server/README.md, "Code actions").

First match wins: the setting `codellama.instructCapable` (true/false; null: detect); a remote backend
is assumed to follow instructions (its model is the server's choice); else what the model directory
says about itself (engine.instruct.follows_instructions: its configuration's `"instruct"`, its name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.instruct import follows_instructions
from engine.paths import default_model_dir

from .settings import Settings


@dataclass(frozen=True)
class Capability:
    capable: bool
    model: str  # the model serving code actions, as the user knows it (directory name, "default", URL)
    why: str  # what decided it, a clause for the user: "its config.json says \"instruct\": false"


def detect(model: str | None, adapter: str | None = None, backend: str = "local") -> Capability:
    """What the model directory (None: the embedded default model) says about itself."""
    if backend != "local":
        return Capability(True, backend, "it is a remote backend (assumed to follow instructions)")
    directory = Path(model) if model else default_model_dir()
    capable, why = follows_instructions(directory, Path(adapter) if adapter else None)
    return Capability(capable, directory.name if model else "default", why)


def for_actions(settings: Settings, serving: Settings | None) -> Capability:
    """Whether the model that would serve code actions follows instructions: `instructModel` when it
    is a directory, else the completion model actually serving (`serving`, the settings it was
    loaded with; the current settings while none is loaded)."""
    if settings.instruct_model and Path(settings.instruct_model).is_dir():
        found = detect(settings.instruct_model, None, settings.backend)
    else:
        base = serving or settings
        found = detect(base.model, base.adapter, base.backend)
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
