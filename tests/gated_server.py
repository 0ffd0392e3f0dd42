"""`python -m tests.gated_server GATE [lsp_server args...]`: the real language server whose model load
starts only once the file GATE exists.

End-to-end tests use it to type while the model is still loading, for as long as they need, without
timing: the server answers and reports "loading" meanwhile; creating GATE lets the real load of the
real model go on."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lsp_server.server as server_module
from lsp_server.__main__ import main
from lsp_server.engine_manager import load_backend
from lsp_server.settings import Settings

GATE_POLL_S = 0.05


def gated(gate: Path):
    def loader(settings: Settings):
        while not gate.exists():
            time.sleep(GATE_POLL_S)
        return load_backend(settings)

    return loader


if __name__ == "__main__":
    gate_path, *server_args = sys.argv[1:]
    real_create_server = server_module.create_server
    server_module.create_server = lambda loader=None: real_create_server(gated(Path(gate_path)))
    sys.exit(main(server_args))
