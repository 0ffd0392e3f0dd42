"""Shared fixtures: small real models built once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Test models are tiny: one thread is as fast as two, and idle OpenMP threads must not spin while
# other processes (servers under test, a training run) need the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import forkserver  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def fork_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Servers and CLI runs that tests start are forked from one process that imported torch once,
    while the first tests run (tests/forkserver.py). Only when some test starts processes."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="clfork-"))  # short: a socket path has at most 107 bytes
    proc = forkserver.start(directory, tmp_path_factory.getbasetemp() / "forkserver.log")
    yield proc
    forkserver.stop(proc)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model (Hugging Face layout, float32, grouped-query attention, rope base 1e6)
    with a real sentencepiece tokenizer that has Code Llama's four infilling pieces."""
    from engine.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hf")
