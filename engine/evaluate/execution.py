"""Run untrusted, model-written Python in a separate process: a fresh temporary directory as its
working directory, isolated mode (no user site, no PYTHON* variables, cwd not on sys.path), an empty
environment, CPU / memory / file-size limits, a wall-clock timeout that kills the whole process
group, and a prelude that disables the destructive parts of os, shutil and subprocess.

`timeout` is CPU time (the kernel stops the program at that many CPU seconds), so a busy machine
does not turn slow programs into failures; a wall-clock backstop of a few times that catches programs
that sleep or block.

This is a guard against accidents (a generated `os.remove`, an endless loop), not a security
boundary against a hostile model; run evaluations of untrusted models in a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Functions the programs under test never need; replaced before the program runs.
_PRELUDE = '''\
def _guard(cpu_seconds, memory_bytes):
    import builtins, os, shutil, subprocess

    try:  # limits set by the process on itself (a preexec_fn is unsafe from threads)
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 2**20, 10 * 2**20))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):  # not on this platform
        pass

    def refuse(*args, **kwargs):
        raise PermissionError("disabled in the evaluation sandbox")

    for name in ("system", "kill", "killpg", "fork", "forkpty", "putenv", "remove", "removedirs",
                 "rmdir", "unlink", "rename", "renames", "replace", "truncate", "chmod", "fchmod",
                 "chown", "fchown", "lchown", "chroot", "setuid", "execv", "execve", "spawnv"):
        if hasattr(os, name):
            setattr(os, name, refuse)
    shutil.rmtree = shutil.move = shutil.chown = refuse
    subprocess.Popen = subprocess.run = subprocess.call = refuse
    builtins.exit = builtins.quit = refuse


_guard({cpu_seconds}, {memory_bytes})
del _guard
'''


WALL_CLOCK_FACTOR = 4


@dataclass
class RunResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str = ""  # last line of stderr when it failed


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 2048) -> RunResult:
    """Run `program` (Python source); passed when it exits with status 0 within `timeout` CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="engine-eval-") as tmp:
        path = Path(tmp) / "program.py"
        prelude = _PRELUDE.replace("{cpu_seconds}", str(max(1, round(timeout))))
        prelude = prelude.replace("{memory_bytes}", str(memory_mb * 2**20))
        path.write_text(prelude + "\n" + program, encoding="utf-8")
        proc = subprocess.Popen(
            # -I: isolated (no user site, no PYTHON* variables); -S: no site-packages, which the
            # programs do not need and which costs most of the interpreter's start-up time.
            [sys.executable, "-I", "-S", str(path)],
            cwd=tmp,
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills what it spawned too
        )
        try:
            _, err = proc.communicate(timeout=WALL_CLOCK_FACTOR * timeout + 30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.communicate()
            return RunResult(False, "timeout", f"no result within {WALL_CLOCK_FACTOR * timeout + 30:g} s")
    if proc.returncode == 0:
        return RunResult(True, "passed")
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return RunResult(False, "timeout", f"more than {timeout:g} CPU seconds")
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return RunResult(False, "failed", lines[-1][:300] if lines else f"exit status {proc.returncode}")
