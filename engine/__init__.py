"""A Code Llama inference engine: checkpoints, tokenizer, FIM prompts, generation, backends.

Public API (what the language server, the training module and the CLI use):
    load_local_backend(model_dir=None, device="auto", dtype=None, adapter=None,
                       kv_cache_dtype=None, cuda_graphs=True, compile_decode="off") -> LocalBackend
        (kv_cache_dtype: "auto" | "bfloat16" | "float32" | "int8"; compile_decode: "auto" | "off")
    default_model_dir() -> Path
    Backend, CompletionRequest, InstructRequest, Completion, BackendError   (engine.backends.base)
    load_model, save_hf_checkpoint, save_meta_checkpoint, CheckpointError  (engine.checkpoints)
    Tokenizer (engine.tokenizer); psm_prompt, spm_prompt, instruct_prompt (engine.prompts)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.backends.base import (
    Backend,
    BackendError,
    Completion,
    CompletionRequest,
    InstructRequest,
    Timings,
)
from engine.paths import default_model_dir

if TYPE_CHECKING:
    from engine.backends.local import load_local_backend


def __getattr__(name: str) -> Any:
    # load_local_backend imports torch (seconds): only when asked for, so `import engine` stays light.
    if name == "load_local_backend":
        from engine.backends.local import load_local_backend

        return load_local_backend
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


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
