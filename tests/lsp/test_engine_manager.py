"""The engine manager's state, which the status reports: a failed model change keeps naming the model
serving, and "loading" is reported before a load can finish. (test_e2e_settings.py checks both through
the real server.)"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.backends.base import BackendError
from lsp_server.engine_manager import EngineManager
from lsp_server.settings import Settings

from .fake_backend import FakeBackend


def wait_until(condition, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_a_failed_change_keeps_naming_the_serving_model_and_loading_shows_before_a_fast_load(tmp_path):
    seen: list[tuple[bool, str | None]] = []

    def loader(settings: Settings) -> FakeBackend:
        if settings.model and not Path(settings.model).is_dir():
            raise BackendError(f"Model directory not found: {settings.model}")
        return FakeBackend()

    engine = EngineManager(on_change=lambda: seen.append((engine.loading, engine.model_name)),
                           on_problem=lambda m: None, loader=loader)
    engine.ensure(Settings())
    assert seen[0] == (True, None)  # "loading" is reported before the loader can have finished
    wait_until(lambda: engine.backend is not None)
    assert engine.model_name == "default" and engine.loaded_settings == Settings()
    missing = str(tmp_path / "no-such-model")
    engine.ensure(Settings(model=missing))
    assert engine.requested_name == "no-such-model" and engine.model_name == "default"
    wait_until(lambda: not engine.loading)
    assert engine.model_name == "default" and engine.error and engine.loaded_settings == Settings()


def test_a_reload_frees_the_kv_caches_of_the_model_it_replaces():
    """The real default model: a kvCacheMb change reloads, and the old backend's KV caches are freed."""
    engine = EngineManager(on_change=lambda: None, on_problem=lambda m: None)
    engine.ensure(Settings(device="cpu", kv_cache_mb=64))
    wait_until(lambda: engine.backend is not None, timeout=120)
    old = engine.backend
    from engine.backends.base import CompletionRequest

    old.complete(CompletionRequest(prefix="def add(a, b):\n    return", max_new_tokens=4))
    assert old.cache_bytes() > 0 and old.pool.budget == 64 * 2**20
    engine.ensure(Settings(device="cpu", kv_cache_mb=32))
    wait_until(lambda: engine.backend is not old, timeout=120)
    assert old.cache_bytes() == 0  # retired: closed, its caches gone
    assert engine.backend.pool.budget == 32 * 2**20
    engine.close()
