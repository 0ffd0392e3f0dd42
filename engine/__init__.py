"""A Code Llama inference engine: checkpoints, tokenizer, FIM prompts, generation, backends.

Public API (what the language server, the training module and the CLI use):
    load_local_backend(model_dir=None, device="auto", dtype=None, adapter=None,
                       kv_cache_dtype=None) -> LocalBackend   ("auto" | "bfloat16" | "int8")
    default_model_dir() -> Path
    Backend, CompletionRequest, InstructRequest, Completion, BackendError   (engine.backends.base)
    load_model, save_hf_checkpoint, save_meta_checkpoint, CheckpointError  (engine.checkpoints)
    Tokenizer (engine.tokenizer); psm_prompt, spm_prompt, instruct_prompt (engine.prompts)
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.backends.base import (
    Backend,
    BackendError,
    Completion,
    CompletionRequest,
    InstructRequest,
    Timings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_model_dir() -> Path:
    """The embedded default model shipped in the repository (override: CODELLAMA_DEFAULT_MODEL)."""
    override = os.environ.get("CODELLAMA_DEFAULT_MODEL")
    return Path(override) if override else REPO_ROOT / "models" / "default"


def load_local_backend(*args, **kwargs):  # noqa: ANN002, ANN003 - thin re-export, see LocalBackend
    from engine.backends.local import load_local_backend as _load

    return _load(*args, **kwargs)


__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "CompletionRequest",
    "InstructRequest",
    "Timings",
    "default_model_dir",
    "load_local_backend",
]
