"""Whether a model follows instructions. Code actions send Code Llama – Instruct prompts; a completion
model (the embedded default model, CodeLlama-7b-hf, CodeLlama-7b-Python-hf) answers them with noise, so
the server does not run them there (lsp_server/README.md, "Code actions").

The signal, first match wins:
1. the setting `codellama.instructCapable` (true/false; null: detect);
2. the model directory's configuration (`config.json` for Hugging Face checkpoints, `params.json` for
   Meta's) or an adapter's `adapter.json`: a top-level `"instruct": true|false` (the adapter's wins);
3. the directory's name: "Instruct" (Meta's and Hugging Face's CodeLlama-*-Instruct*) or "chat"
   (Llama 2 chat, same prompt format), in any case;
4. a remote backend is assumed to follow instructions (its model is the server's choice);
5. anything else is a completion model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings

INSTRUCT_KEY = "instruct"
_CONFIG_FILES = ("config.json", "params.json")
_ADAPTER_FILE = "adapter.json"
_INSTRUCT_NAME = re.compile(r"instruct|chat", re.IGNORECASE)
_marker_cache: dict[Path, tuple[int, bool | None]] = {}


@dataclass(frozen=True)
class Capability:
    capable: bool
    model: str  # the model serving code actions, as the user knows it (directory name, "default", URL)
    why: str  # what decided it, a clause for the user: "its config.json says \"instruct\": false"


def read_marker(path: Path) -> bool | None:
    """The `"instruct"` value in a JSON file (None when absent, not a bool, or unreadable); cached by
    modification time, as code actions are asked for at every cursor move."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _marker_cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(INSTRUCT_KEY)
    except (OSError, ValueError, AttributeError):
        value = None
    marker = value if isinstance(value, bool) else None
    _marker_cache[path] = (mtime, marker)
    return marker


def detect(model: str | None, adapter: str | None = None, backend: str = "local") -> Capability:
    """What the model directory (None: the embedded default model) says about itself."""
    if backend != "local":
        return Capability(True, backend, "it is a remote backend (assumed to follow instructions)")
    from engine import default_model_dir

    directory = Path(model) if model else default_model_dir()
    name = directory.name if model else "default"
    if adapter:
        marker = read_marker(Path(adapter) / _ADAPTER_FILE)
        if marker is not None:
            return Capability(marker, name, f"its adapter's {_ADAPTER_FILE} says \"{INSTRUCT_KEY}\": "
                                            f"{str(marker).lower()}")
    for file in _CONFIG_FILES:
        marker = read_marker(directory / file)
        if marker is not None:
            return Capability(marker, name, f"its {file} says \"{INSTRUCT_KEY}\": {str(marker).lower()}")
    if _INSTRUCT_NAME.search(directory.name):
        return Capability(True, name, f"its name, {directory.name}, says it is instruction-tuned")
    return Capability(False, name, f"it is a completion model (no \"{INSTRUCT_KEY}\": true in its configuration "
                                   "and no \"Instruct\" in its name)")


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
