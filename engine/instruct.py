"""Whether a model directory holds an instruction-following model, from what it says about itself.

First match wins:
1. an adapter's `adapter.json`, then the model's configuration (`config.json` for Hugging Face
   checkpoints, `params.json` for Meta's): a top-level `"instruct": true|false`;
2. the directory's name: "Instruct" (Meta's and Hugging Face's CodeLlama-*-Instruct*) or "chat"
   (Llama 2 chat, same prompt format), in any case;
3. anything else is a completion model (the embedded default model, CodeLlama-7b-hf, ...-Python-hf).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.backends.base import InstructCapability

INSTRUCT_KEY = "instruct"
CONFIG_FILES = ("config.json", "params.json")
ADAPTER_FILE = "adapter.json"
_INSTRUCT_NAME = re.compile(r"instruct|chat", re.IGNORECASE)
_marker_cache: dict[Path, tuple[int, bool | None]] = {}


def read_marker(path: Path) -> bool | None:
    """The `"instruct"` value in a JSON file (None when absent, not a bool, or unreadable); cached by
    modification time, as the language server asks at every cursor move."""
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


def follows_instructions(model_dir: Path, adapter_dir: Path | None = None) -> InstructCapability:
    """Whether the model in `model_dir` (with the LoRA adapter in `adapter_dir`) does, and what decided
    it. The local backend answers with this for its loaded checkpoint; the language server asks it
    about a directory it has not loaded yet."""
    if adapter_dir is not None:
        marker = read_marker(adapter_dir / ADAPTER_FILE)
        if marker is not None:
            return InstructCapability(marker, f"its adapter's {ADAPTER_FILE} says \"{INSTRUCT_KEY}\": {str(marker).lower()}")
    for file in CONFIG_FILES:
        marker = read_marker(model_dir / file)
        if marker is not None:
            return InstructCapability(marker, f"its {file} says \"{INSTRUCT_KEY}\": {str(marker).lower()}")
    if _INSTRUCT_NAME.search(model_dir.name):
        return InstructCapability(True, f"its name, {model_dir.name}, says it is instruction-tuned")
    return InstructCapability(False, (f"it is a completion model (no \"{INSTRUCT_KEY}\": true in its configuration "
                                      "and no \"Instruct\" in its name)"))
