"""Owns the backend: loads it on a background thread, swaps it in when ready, reports its state.

While a new model loads, the old one keeps serving. A failed load leaves the previous backend (if
any) in place and reports a message the user can act on. `model_name` always names the model serving
(`requested_name` the one the settings ask for), so a failed change never shows as the new model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.backends.base import Backend, BackendError

from .settings import Settings

log = logging.getLogger(__name__)

# (settings) -> backend. Replaceable in tests of the LSP layer.
Loader = Callable[[Settings], Backend]


def load_backend(settings: Settings) -> Backend:
    """The backend the settings ask for. Raises BackendError with a user-facing message."""
    if settings.backend != "local":
        from engine.backends.remote import RemoteBackend

        return RemoteBackend(
            settings.backend, api_key=settings.api_key or os.environ.get("CODELLAMA_API_KEY"),
            model=settings.remote_model)
    from engine import load_local_backend

    if settings.model and not Path(settings.model).is_dir():
        raise BackendError(f"Model directory not found: {settings.model} (setting codellama.model)")
    if settings.adapter and not Path(settings.adapter).is_dir():
        raise BackendError(f"Adapter directory not found: {settings.adapter} (setting codellama.adapter)")
    dtype = None if settings.dtype == "auto" else settings.dtype
    try:
        return load_local_backend(settings.model, device=settings.device, dtype=dtype,
                                  adapter=settings.adapter, quantization=settings.quantization,
                                  kv_cache_dtype=settings.kv_cache_dtype, cache_budget_mb=settings.kv_cache_mb,
                                  cuda_graphs=settings.cuda_graphs, compile_decode=settings.compile_decode)
    except BackendError:
        raise  # the engine's own: out of memory, a bad checkpoint, ... (said for the user already)
    except Exception as exc:
        raise BackendError(f"Could not load the model: {type(exc).__name__}: {exc}") from exc


def model_label(settings: Settings) -> str:
    """The model as the status names it: its directory's name, "default" for the embedded one."""
    return Path(settings.model).name if settings.model else "default"


class EngineManager:
    def __init__(self, on_change: Callable[[], None], on_problem: Callable[[str], None],
                 loader: Loader = load_backend,
                 progress: Callable[[str, str | None], Any] | None = None) -> None:
        self.backend: Backend | None = None
        self.key: tuple[Any, ...] | None = None  # engine_key() of the loaded backend
        self.loading_key: tuple[Any, ...] | None = None
        self.error: str | None = None
        self.model_name: str | None = None  # the model serving; None while none is
        self.requested_name: str | None = None  # the model the last ensure() asked for
        self.loaded_settings: Settings | None = None  # the settings the serving backend was loaded with
        self._loader = loader
        self._on_change = on_change
        self._on_problem = on_problem
        self._progress = progress  # (phase "begin"/"end", title) -> None
        self._lock = threading.Lock()
        self._generation = 0
        self.retire: Callable[[Backend], object] = lambda b: b.close()  # the server: on its worker

    @property
    def loading(self) -> bool:
        return self.loading_key is not None

    def ensure(self, settings: Settings, force: bool = False) -> bool:
        """Start loading when the settings need another backend; True when a load started."""
        key = settings.engine_key()
        with self._lock:
            if not force and key == self.key and self.loading_key is None:
                self.error = None  # back to the loaded model: an earlier failed load no longer matters
                return False
            if not force and key == self.loading_key:
                return False
            self._generation += 1
            generation = self._generation
            self.loading_key = key
            self.error = None
        name = model_label(settings)
        self.requested_name = name
        # Tell the client before the load can finish: a model that loads in milliseconds must still
        # show as "loading" first (the server sends the status at once when called on its loop).
        self._on_change()
        thread = threading.Thread(target=self._load, args=(settings, key, generation, name),
                                  name="model-loader", daemon=True)
        thread.start()
        return True

    def _load(self, settings: Settings, key: tuple[Any, ...], generation: int, name: str) -> None:
        if self._progress is not None:
            self._progress("begin", f"Loading model {name}")
        backend: Backend | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            backend = self._loader(settings)
        except BackendError as exc:
            error = str(exc)
        except Exception as exc:  # never let a load kill the server
            log.exception("model load failed")
            error = f"Could not load the model: {type(exc).__name__}: {exc}"
        finally:
            if self._progress is not None:
                self._progress("end", None)
        with self._lock:
            superseded = generation != self._generation
            if not superseded:
                self.loading_key = None
                if backend is not None:
                    old, self.backend, self.key = self.backend, backend, key
                    self.model_name, self.loaded_settings = name, settings
                else:
                    old = None
                    self.error = error
        if superseded:
            # A newer load started meanwhile; this result is stale.
            if backend is not None:
                backend.close()
            return
        if old is not None:
            self.retire(old)
        if error is not None:
            log.warning("model load failed: %s", error)
            self._on_problem(error)
        else:
            log.info("model ready in %.1f s: %s", time.perf_counter() - started,
                     backend.description if backend else None)
            for warning in backend.warnings if backend is not None else ():  # e.g. plain http to a server
                self._on_problem(warning)
        self._on_change()

    def close(self) -> None:
        with self._lock:
            backend, self.backend = self.backend, None
            self.model_name = self.loaded_settings = None
            self._generation += 1
            self.loading_key = None
        if backend is not None:
            try:
                backend.close()
            except Exception:
                log.exception("closing the backend failed")
