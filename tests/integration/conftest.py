"""Fixtures for the tests against real llama.cpp (llama-cpp-python, its library and its server).

`make test-integration` installs llama-cpp-python[server] (from a wheel where PIP_FIND_LINKS names a
folder holding one; else it compiles llama.cpp, about 20 minutes) and runs these. Without it installed
each module skips itself (pytest.importorskip), so `make test` stays as it was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import forkserver

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300.0  # importing llama_cpp, fastapi and uvicorn on a loaded 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def default_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model exported by our exporter, `python -m engine export --format gguf` (float32:
    the same arithmetic as the engine's float32 run, so greedy choices can be compared)."""
    out = tmp_path_factory.mktemp("gguf") / "default.gguf"
    proc = subprocess.run(
        forkserver.command("engine", "export", "--format", "gguf", "--dtype", "float32", "--out", str(out)),
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["out"] == str(out)
    return out


class LlamaServer:
    """`python -m llama_cpp.server` serving a GGUF on 127.0.0.1; stopped (killed) and started again on
    the same port by the tests."""

    def __init__(self, model: Path, log: Path, n_ctx: int = 4096) -> None:
        self.model, self.log, self.n_ctx = model, log, n_ctx
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", "1", "--verbose", "False"]

    def start(self) -> LlamaServer:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env=dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE"),
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        self.kill()
        raise AssertionError(f"llama_cpp.server not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no goodbye to open connections."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: it and nothing else
            self.proc.wait(timeout=30)
        self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def llama_server(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    server = LlamaServer(default_gguf, tmp_path_factory.mktemp("llama-server") / "server.log").start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def engine_f32():
    """Our engine on the default model in float32 (the GGUF's dtype), one thread: the reference that
    llama.cpp is compared with."""
    import torch

    from engine import default_model_dir, load_local_backend

    torch.set_num_threads(1)
    return load_local_backend(default_model_dir(), device="cpu", dtype="float32")
