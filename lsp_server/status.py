"""What `codellama/status` says about the model and the workspace (pure: read from the engine manager
and the index, no I/O but the process's resident size)."""

from __future__ import annotations

from typing import Any

from .context.index import WorkspaceIndex
from .engine_manager import EngineManager
from .memory import resident_bytes
from .settings import Settings


def engine_state(settings: Settings, engine: EngineManager) -> tuple[str, str | None]:
    """("disabled" | "loading" | "ready" | "error" | "starting", the message that goes with it)."""
    backend = engine.backend
    if not settings.enable:
        return "disabled", engine.error
    if engine.loading:
        return "loading", engine.error
    if backend is not None:
        if backend.state.startswith(("error", "retrying")):
            return "error", f"remote server: {backend.state}"  # how a remote server's last request went
        return "ready", engine.error
    return ("error" if engine.error else "starting"), engine.error


def model_fields(settings: Settings, engine: EngineManager) -> dict[str, Any]:
    """The model serving (while none is yet, the one being loaded or that failed) and where it runs."""
    backend = engine.backend
    state, message = engine_state(settings, engine)
    placement = backend.placement if backend is not None else None
    return {
        "state": state, "message": message,
        "model": engine.model_name if backend is not None else engine.requested_name,
        "requestedModel": engine.requested_name, "backend": settings.backend,
        "description": backend.description if backend is not None else None,
        "device": placement.device if placement else None, "dtype": placement.dtype if placement else None,
        "quantization": placement.quantization if placement else None,
        "kvCacheDtype": placement.kv_cache_dtype if placement else None,
        "decodeStep": placement.decode_step if placement else None,
    }


def memory_figures(engine: EngineManager, index: WorkspaceIndex | None) -> dict[str, int | None]:
    """The process's resident size, the completion model's KV caches, and the workspace index (its
    files, and the bytes of their texts and windows)."""
    backend = engine.backend
    return {"residentBytes": resident_bytes(),
            "kvCacheBytes": backend.cache_bytes() if backend is not None else None,
            "indexFiles": len(index) if index is not None else 0,
            "indexBytes": index.total_bytes if index is not None else 0}
