"""One adaptation run (`python -m lsp_server.adapt`, ADAPT_CONTRACT) as the language server runs it:
its command line, a child process at lower priority with fewer threads (so completions keep a core),
its JSON-lines events read on a thread, cancelling (SIGTERM: the run keeps its newest checkpoint) and
the decision to resume an interrupted run.

The pure parts (command line, resume decision, event parsing, progress wording) are plain functions;
`TrainingJob` owns the process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODULE = "lsp_server.adapt"
JOB_FILE = "job.json"  # in OUT: what this run was started with, and whether it finished
LOG_FILE = "train.log"  # in OUT: the run's stderr
CHECKPOINT_DIR = "run"  # in OUT: the run's resumable checkpoints (ADAPT_CONTRACT)
NICENESS = 10  # below the editor and the server; 19 would starve it behind any busy process
KILL_AFTER_S = 60.0  # a run stops within one step of a SIGTERM; one that does not is killed

# Where each phase's progress falls in the run's overall percentage: training takes most of the time.
PHASE_SPANS = {"prepare": (0, 2), "baseline": (2, 10), "train": (10, 90), "evaluate": (90, 99), "report": (99, 100)}
PHASE_WORDS = {"prepare": "preparing the examples", "baseline": "measuring the current model on held-out files",
               "train": "training", "evaluate": "measuring the adapted model on held-out files",
               "report": "writing the report"}


@dataclass(frozen=True)
class TrainRequest:
    """What a run is asked for. `signature()` is what must match for a later run to resume it."""

    workspace: str
    out: str
    model: str | None = None  # None: the embedded default model
    steps: int | None = None  # None: the run's default budget
    quick: bool = False

    def signature(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "model": self.model, "steps": self.steps, "quick": self.quick}


def training_threads(cpus: int | None) -> int:
    """Threads for the training process: all cores but one, which stays free for completions."""
    return max(1, (cpus or 1) - 1)


def command_line(request: TrainRequest, resume: bool, threads: int,
                 launcher: tuple[str, ...] = (sys.executable, "-m", MODULE)) -> list[str]:
    """The run's command line (`launcher`: how to start the adaptation run; tests give a stand-in)."""
    args = [*launcher, "--workspace", request.workspace, "--out", request.out, "--threads", str(threads)]
    if request.model:
        args += ["--model", request.model]
    if request.steps is not None:
        args += ["--steps", str(request.steps)]
    if request.quick:
        args.append("--quick")
    if resume:
        args.append("--resume")
    return args


def read_job_file(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def should_resume(request: TrainRequest, job: dict[str, Any], has_checkpoint: bool) -> bool:
    """Resume when the last run in OUT was started with the same settings, did not finish, and left a
    checkpoint. Anything else starts afresh (a finished run's adapter is not trained further)."""
    return has_checkpoint and not job.get("finished", False) and job.get("signature") == request.signature()


def has_checkpoint(out: Path) -> bool:
    run = out / CHECKPOINT_DIR
    return run.is_dir() and any(run.iterdir())


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` runs (POSIX; on Windows os.kill would end it, so: unknown, False)."""
    if not isinstance(pid, int) or pid <= 0 or os.name == "nt":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def parse_event(line: str) -> dict[str, Any] | None:
    """One stdout line as an event (an object with a string "event"), else None."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("event"), str) else None


def format_duration(seconds: float) -> str:
    """ "45 s", "4 min", "1 h 20 min": how long is left, as a person would say it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(round(seconds))} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")


def _span(phase: str, fraction: float) -> int:
    low, high = PHASE_SPANS.get(phase, (0, 100))
    return int(low + (high - low) * min(1.0, max(0.0, fraction)))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def describe(event: dict[str, Any]) -> tuple[str, int | None] | None:
    """The progress line and overall percentage an event shows the user; None for events that end
    the run (done, error) or say nothing new."""
    kind, phase = event.get("event"), str(event.get("phase", ""))
    if kind == "start":
        return (f"{event.get('train_files', '?')} files to learn from, {event.get('heldout_files', '?')} held out "
                "to measure", 0)
    if kind == "phase":
        return PHASE_WORDS.get(phase, phase), _span(phase, 0.0)
    if kind != "progress":
        return None
    if phase == "train":
        step, steps = _number(event.get("step")), _number(event.get("steps"))
        if step is None or not steps:
            return None
        parts = [f"training step {int(step)}/{int(steps)}"]
        loss, eta = _number(event.get("loss")), _number(event.get("eta_s"))
        if loss is not None:
            parts.append(f"loss {loss:.2f}")
        if eta is not None:
            parts.append(f"~{format_duration(eta)} left")
        return ", ".join(parts), _span("train", step / steps)
    done, total = _number(event.get("done")), _number(event.get("total"))
    if done is None or not total:
        return None
    return f"{PHASE_WORDS.get(phase, phase)}: {int(done)}/{int(total)}", _span(phase, done / total)


@dataclass(frozen=True)
class JobEnd:
    """How a run ended. kind: "done" (finished: read `done`), "cancelled" (stopped by the user, its
    checkpoint kept), "failed" (an error the run reported, or an exit it did not explain)."""

    kind: str
    exit_code: int | None
    done: dict[str, Any] | None = None
    message: str | None = None


def classify_end(exit_code: int | None, cancelled: bool, done: dict[str, Any] | None,
                 error: str | None, log_tail: str) -> JobEnd:
    if exit_code == 0 and done is not None:
        return JobEnd("done", exit_code, done=done)
    if cancelled:
        return JobEnd("cancelled", exit_code)
    if error:
        return JobEnd("failed", exit_code, message=error)
    if exit_code is not None and (exit_code < 0 or exit_code >= 128):
        number = -exit_code if exit_code < 0 else exit_code - 128
        return JobEnd("failed", exit_code, message=f"the training process was stopped by signal {number}; "
                      "train again to resume from its last checkpoint")
    tail = log_tail.strip().splitlines()[-1:] or ["no output"]
    return JobEnd("failed", exit_code, message=f"the training process exited with code {exit_code}: {tail[0]}")


def log_tail(path: Path, limit: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def lower_priority(pid: int) -> None:
    """Run the child behind the editor and the server (POSIX niceness; Windows gets its priority
    class at creation)."""
    if hasattr(os, "setpriority"):
        try:  # relative to the server's own niceness: a server already niced still outranks its child
            os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS))
        except OSError:
            log.debug("could not lower the training process's priority", exc_info=True)


class TrainingJob:
    """The child process of one run. `on_event(event)` is called on the reader thread for each event,
    `on_end(JobEnd)` once, after the process has exited."""

    def __init__(self, request: TrainRequest, on_event: Callable[[dict[str, Any]], None],
                 on_end: Callable[[JobEnd], None], launcher: tuple[str, ...] = (sys.executable, "-m", MODULE),
                 cpus: int | None = None) -> None:
        self.request = request
        self.out = Path(request.out)
        self._on_event = on_event
        self._on_end = on_end
        self._launcher = launcher
        self.threads = training_threads(cpus if cpus is not None else os.cpu_count())
        self.resumed = False
        self.cancelled = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.last: dict[str, Any] | None = None  # the newest progress event

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Resume the run in OUT if it may be resumed, else clear OUT and start afresh."""
        job = read_job_file(self.out)
        self.resumed = should_resume(self.request, job, has_checkpoint(self.out))
        if not self.resumed and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   PYTHONUNBUFFERED="1")
        flags = getattr(subprocess, "BELOW_NORMAL_PRIORITY_CLASS", 0)
        with (self.out / LOG_FILE).open("ab") as stderr:
            self.proc = subprocess.Popen(command_line(self.request, self.resumed, self.threads, self._launcher),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env,
                                         creationflags=flags)
        lower_priority(self.proc.pid)
        self._write_job_file(finished=False)
        threading.Thread(target=self._read, name="adapter-training", daemon=True).start()

    def cancel(self) -> None:
        """Stop the run; it keeps its newest checkpoint and exits within a training step."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            proc.terminate()
        else:
            proc.send_signal(signal.SIGTERM)
        def kill_if_running() -> None:
            if proc.poll() is None:
                proc.kill()

        timer = threading.Timer(KILL_AFTER_S, kill_if_running)
        timer.daemon = True
        timer.start()

    def _write_job_file(self, finished: bool) -> None:
        data = {"signature": self.request.signature(), "finished": finished,
                "pid": self.proc.pid if self.proc is not None and not finished else None,
                "request": asdict(self.request)}
        try:
            (self.out / JOB_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")
        except OSError:
            log.warning("could not write %s", self.out / JOB_FILE, exc_info=True)

    def _read(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        done: dict[str, Any] | None = None
        error: str | None = None
        for raw in proc.stdout:
            event = parse_event(raw.decode("utf-8", "replace"))
            if event is None:
                log.debug("training: not an event: %r", raw[:200])
                continue
            if event["event"] == "done":
                done = event
            elif event["event"] == "error":
                error = str(event.get("message") or "the training run failed")
            else:
                self.last = event
            try:
                self._on_event(event)
            except Exception:
                log.exception("handling a training event failed")
        exit_code = proc.wait()
        end = classify_end(exit_code, self.cancelled, done, error, log_tail(self.out / LOG_FILE))
        self._write_job_file(finished=end.kind == "done")
        self._on_end(end)
