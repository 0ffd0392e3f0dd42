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
