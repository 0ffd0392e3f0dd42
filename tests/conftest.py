"""Shared fixtures: small real models built once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Test models are tiny: one thread is as fast as two, and idle OpenMP threads must not spin while
# other processes (servers under test, a training run) need the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from tests import forkserver  # noqa: E402

_fork_server: tuple[subprocess.Popen[bytes], Path] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Servers and CLI runs that tests start are forked from one process that imports torch once
    (tests/forkserver.py). It starts first, so that its imports overlap with pytest's own and with
    collection (minutes each on a slow machine); `-m "not slow"` (no test starts a process) goes
    without it."""
    global _fork_server
    xdist_worker = hasattr(config, "workerinput")  # its controller started the fork server
    if not xdist_worker and "not slow" not in (config.option.markexpr or ""):
        directory = Path(tempfile.mkdtemp(prefix="clfork-"))  # short: a socket path has at most 107 bytes
        _fork_server = forkserver.start(directory, directory / "forkserver.log"), directory
    if getattr(config.option, "numprocesses", None) and not xdist_worker:
        return  # an xdist controller runs no test: no torch here
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _fork_server is not None:
        proc, directory = _fork_server
        forkserver.stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model (Hugging Face layout, float32, grouped-query attention, rope base 1e6)
    with a real sentencepiece tokenizer that has Code Llama's four infilling pieces."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hf")
