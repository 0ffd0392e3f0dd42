"""Start the programs under test in seconds instead of minutes.

`import torch` takes one to two minutes on the CI machine, and the end-to-end tests start about ten
language servers and CLI runs. A fork server imports torch, the engine and the language server once, in
the background while the first tests run. Then each

    python -S tests/forkserver.py MODULE ARGS...

hands its stdin, stdout and stderr over a Unix socket to the fork server, which forks a child that runs
`python -m MODULE ARGS...` (through runpy, like the interpreter does) on exactly those pipes, in the
caller's working directory and environment; the launcher exits with the child's exit code, and killing
the launcher kills the child. The child is the real program: the same entry point, the same stdio; only
the imports are shared. Without a fork server (FORKSERVER_ENV unset, or it failed to start) the
launcher simply becomes `python -m MODULE ARGS...`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

FORKSERVER_ENV = "CODELLAMA_TEST_FORKSERVER"  # the fork server's socket path
READY_TIMEOUT_S = 1200.0
# What the servers and CLIs under test import; the children share it.
PRELOAD = ("torch", "engine", "engine.backends.local", "engine.backends.remote",
           "lsp_server.server")
REPO = Path(__file__).resolve().parents[1]


def command(module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module args` through the fork server."""
    return [sys.executable, "-S", str(Path(__file__).resolve()), module, *args]


# ---- launcher (runs without site-packages: it only passes file descriptors on) -------------------

def launch(module: str, args: list[str]) -> int:
    path = os.environ.get(FORKSERVER_ENV)
    conn = _connect(path) if path else None
    if conn is None:
        os.execv(sys.executable, [sys.executable, "-m", module, *args])
    request = {"module": module, "argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    # The child owns the pipes now: the client must see end-of-file when the child closes them.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            print("fork server went away", file=sys.stderr)
            return 1
        answer += chunk
    return int(answer)


def _connect(path: str) -> socket.socket | None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if os.path.exists(path + ".failed"):
            return None
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            time.sleep(0.2)
    print(f"fork server at {path} not ready after {READY_TIMEOUT_S:.0f} s; starting directly", file=sys.stderr)
    return None


# ---- the fork server ----------------------------------------------------------------------------

def serve(path: str) -> None:
    """Import once, then fork a child per launcher until stdin (our pipe from pytest) closes."""
    sys.path.insert(0, str(REPO))
    try:
        import importlib

        for name in PRELOAD:
            importlib.import_module(name)
    except BaseException:
        Path(path + ".failed").touch()
        raise
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # launchers connect only once the imports are done
    children: dict[socket.socket, int] = {}
    while True:
        readable, _, _ = select.select([sys.stdin, listener, *children], [], [], 0.1)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1024):
            break  # pytest is done (or gone)
        if listener in readable:
            conn, _ = listener.accept()
            children[conn] = _fork_child(conn, listener, children)
        for conn in readable:
            if conn in children and not conn.recv(16):
                os.kill(children[conn], signal.SIGKILL)  # its launcher was killed
        _reap(children)
    for pid in children.values():
        os.kill(pid, signal.SIGKILL)
    os._exit(0)  # Python's teardown of torch would take tens of seconds


def _fork_child(conn: socket.socket, listener: socket.socket, children: dict[socket.socket, int]) -> int:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not message.endswith(b"\n"):
        message += conn.recv(1 << 20)
    request = json.loads(message)
    sys.stdout.flush()  # sys.stdout and sys.stderr stay: in the child they write to the new fds 1 and 2
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    # The child: from here on it is `python -m MODULE ARGS` and never returns into the loop.
    code = 1
    try:
        listener.close()
        for other in children:
            other.close()
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        code = _run_module(request["module"], request["argv"])
    finally:
        os._exit(code)


def _run_module(module: str, argv: list[str]) -> int:
    import atexit
    import runpy
    import traceback

    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return code


def _reap(children: dict[socket.socket, int]) -> None:
    by_pid = {pid: conn for conn, pid in children.items()}
    while by_pid:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0 or pid not in by_pid:
            return
        conn = by_pid.pop(pid)
        del children[conn]
        try:
            conn.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))
        except OSError:
            pass
        conn.close()


# ---- for conftest --------------------------------------------------------------------------------

def start(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the fork server; launchers wait until its imports are done."""
    path = str(directory / "fork.sock")
    os.environ[FORKSERVER_ENV] = path
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", path],
                                stdin=subprocess.PIPE, stdout=err, stderr=err, cwd=REPO,
                                env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.environ.pop(FORKSERVER_ENV, None)
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(launch(sys.argv[1], sys.argv[2:]))
