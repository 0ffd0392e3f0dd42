"""Training an adapter from the editor, server side: the run's progress as the user reads it, the
child process (lower priority, fewer threads, cancel keeps the checkpoint, a new run resumes it),
where the accepted adapter is remembered, and the accept / discard / no-gain / drop flow.

The child here is tests/lsp/adapt_standin.py (the contract's lines, no model); the real run through
the real server is tests/lsp/test_e2e_adapt.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from lsp_server.adapt import job as J
from lsp_server.adapt.commands import DISCARD, USE, AdapterCommands, BadArguments, TrainArgs
from lsp_server.adapt.remembered import (
    WorkspaceAdapters,
    adapter_status,
    applies,
    data_dir,
    with_accepted,
    workspace_dir,
)
from lsp_server.settings import Settings

STANDIN = (sys.executable, str(Path(__file__).with_name("adapt_standin.py")))


# ---- what the user reads while it runs ----------------------------------------------------------

def test_training_progress_says_the_step_the_loss_and_the_time_left_and_moves_the_bar():
    message, percentage = J.describe({"event": "progress", "phase": "train", "step": 120, "steps": 600,
                                      "loss": 1.9, "elapsed_s": 60, "eta_s": 240})
    assert message == "training step 120/600, loss 1.90, ~4 min left"
    assert 10 < percentage < 90
    later = J.describe({"event": "progress", "phase": "train", "step": 480, "steps": 600, "eta_s": 30})
    assert later == ("training step 480/600, ~30 s left", 74)


def test_measuring_phases_count_cases_and_the_bar_only_moves_forward_through_the_run():
    events = [{"event": "start", "train_files": 40, "heldout_files": 5, "steps": 10},
              {"event": "phase", "phase": "baseline"},
              {"event": "progress", "phase": "baseline", "done": 20, "total": 40},
              {"event": "phase", "phase": "train"},
              {"event": "progress", "phase": "train", "step": 10, "steps": 10},
              {"event": "phase", "phase": "evaluate"},
              {"event": "progress", "phase": "evaluate", "done": 40, "total": 40},
              {"event": "phase", "phase": "report"}]
    shown = [J.describe(e) for e in events]
    assert shown[0] == ("40 files to learn from, 5 held out to measure", 0)
    assert shown[2] == ("measuring the current model on held-out files: 20/40", 6)
    percentages = [p for _, p in shown]
    assert percentages == sorted(percentages) and percentages[-1] == 99


def test_lines_that_are_not_events_and_events_with_missing_numbers_show_nothing():
    assert J.parse_event("loading model...") is None
    assert J.parse_event('{"step": 3}') is None
    assert J.parse_event('[1, 2]') is None
    assert J.parse_event('{"event": "phase", "phase": "train"}\n') == {"event": "phase", "phase": "train"}
    assert J.describe({"event": "progress", "phase": "train", "step": 3}) is None
    assert J.describe({"event": "done", "gain": True}) is None


def test_durations_read_like_a_person_says_them():
    assert [J.format_duration(s) for s in (0, 44.6, 61, 3599, 4800)] == ["0 s", "45 s", "1 min", "1 h", "1 h 20 min"]


# ---- the command line and the resume decision ----------------------------------------------------

def test_the_run_gets_all_cores_but_one_and_the_requested_budget():
    request = J.TrainRequest(workspace="/w", out="/o", model="/m", steps=50, quick=True)
    line = J.command_line(request, resume=True, threads=J.training_threads(2), launcher=("py", "-m", "x"))
    assert line == ["py", "-m", "x", "--workspace", "/w", "--out", "/o", "--threads", "1", "--model", "/m",
                    "--steps", "50", "--quick", "--resume"]
    assert J.training_threads(16) == 15 and J.training_threads(1) == 1 and J.training_threads(None) == 1
    assert "--model" not in J.command_line(J.TrainRequest("/w", "/o"), False, 1)


def test_only_an_unfinished_run_with_the_same_settings_and_a_checkpoint_is_resumed():
    request = J.TrainRequest(workspace="/w", out="/o", steps=50)
    unfinished = {"signature": request.signature(), "finished": False}
    assert J.should_resume(request, unfinished, has_checkpoint=True)
    assert not J.should_resume(request, unfinished, has_checkpoint=False)
    assert not J.should_resume(request, {**unfinished, "finished": True}, has_checkpoint=True)
    assert not J.should_resume(replace(request, steps=60), unfinished, has_checkpoint=True)
    assert not J.should_resume(replace(request, model="/other"), unfinished, has_checkpoint=True)
    assert not J.should_resume(request, {}, has_checkpoint=True)


def test_how_a_run_ended_is_told_apart():
    done = {"event": "done", "gain": True}
    assert J.classify_end(0, False, done, None, "").kind == "done"
    assert J.classify_end(143, True, None, None, "").kind == "cancelled"
    failed = J.classify_end(2, False, None, "no source files in /w", "")
    assert (failed.kind, failed.message) == ("failed", "no source files in /w")
    killed = J.classify_end(-9, False, None, None, "")
    assert killed.kind == "failed" and "signal 9" in killed.message and "resume" in killed.message
    crashed = J.classify_end(1, False, None, None, "Traceback ...\nRuntimeError: boom\n")
    assert crashed.message == "the training process exited with code 1: RuntimeError: boom"


# ---- the child process --------------------------------------------------------------------------

class Recorder:
    """Collects a job's events and its end (from the job's reader thread)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.end: J.JobEnd | None = None
        self.step_seen = threading.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event.get("phase") == "train" and event.get("step", 0) >= 3:
            self.step_seen.set()

    def on_end(self, end: J.JobEnd) -> None:
        self.end = end
        self.ended.set()

    def wait(self) -> J.JobEnd:
        assert self.ended.wait(60), "the run never ended"
        assert self.end is not None
        return self.end


def run_job(request: J.TrainRequest, env: dict[str, str] | None = None) -> tuple[J.TrainingJob, Recorder]:
    recorder = Recorder()
    job = J.TrainingJob(request, recorder.on_event, recorder.on_end, launcher=STANDIN, cpus=2)
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        job.start()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return job, recorder


@pytest.mark.slow
def test_a_run_runs_at_lower_priority_with_fewer_threads_and_finishes(tmp_path):
    job, recorder = run_job(J.TrainRequest(workspace=str(tmp_path), out=str(tmp_path / "out"), steps=5))
    end = recorder.wait()
    assert end.kind == "done" and end.done is not None and end.done["gain"] is True
    start = recorder.events[0]
    assert start["event"] == "start" and start["nice"] > os.nice(0)
    assert start["omp_threads"] == "1" and start["threads"] == 1
    assert [e["step"] for e in recorder.events if e.get("phase") == "train" and "step" in e] == [1, 2, 3, 4, 5]
    assert J.read_job_file(tmp_path / "out")["finished"] is True


@pytest.mark.slow
def test_a_cancelled_run_keeps_its_checkpoint_and_the_next_run_resumes_it(tmp_path):
    request = J.TrainRequest(workspace=str(tmp_path), out=str(tmp_path / "out"), steps=400)
    job, recorder = run_job(request)
    assert recorder.step_seen.wait(60)
    job.cancel()
    assert recorder.wait().kind == "cancelled"
    stopped_at = json.loads((tmp_path / "out" / "run" / "checkpoint.json").read_text())["step"]
    assert stopped_at >= 3

    again, recorder = run_job(request, {"STANDIN_STEP_S": "0"})
    assert again.resumed
    assert recorder.wait().kind == "done"
    assert recorder.events[0]["resumed_from"] == stopped_at
    steps = [e["step"] for e in recorder.events if e.get("phase") == "train" and "step" in e]
    assert steps[0] == stopped_at + 1 and steps[-1] == 400


@pytest.mark.slow
def test_a_killed_run_fails_with_a_word_on_resuming_and_the_next_run_resumes_it(tmp_path):
    request = J.TrainRequest(workspace=str(tmp_path), out=str(tmp_path / "out"), steps=400)
    job, recorder = run_job(request)
    assert recorder.step_seen.wait(60)
    assert job.proc is not None
    job.proc.kill()  # the out-of-memory killer, or the user
    end = recorder.wait()
    assert end.kind == "failed" and "signal 9" in (end.message or "") and "resume" in (end.message or "")
    again, recorder = run_job(request, {"STANDIN_STEP_S": "0"})
    assert again.resumed and recorder.wait().kind == "done"
    assert recorder.events[0]["resumed_from"] >= 3


@pytest.mark.slow
def test_a_finished_run_or_other_settings_start_afresh_in_a_cleared_folder(tmp_path):
    request = J.TrainRequest(workspace=str(tmp_path), out=str(tmp_path / "out"), steps=3)
    run_job(request)[1].wait()
    (tmp_path / "out" / "stale.txt").write_text("old")
    job, recorder = run_job(request)
    assert not (tmp_path / "out" / "stale.txt").exists()
    recorder.wait()
    assert not job.resumed and recorder.events[0]["resumed_from"] == 0
    job, recorder = run_job(replace(request, steps=4))  # not finished, but other settings
    recorder.wait()
    assert not job.resumed and recorder.events[0]["resumed_from"] == 0


@pytest.mark.slow
def test_a_run_that_reports_an_error_fails_with_its_message(tmp_path):
    _, recorder = run_job(J.TrainRequest(workspace=str(tmp_path), out=str(tmp_path / "out")),
                          {"STANDIN_ERROR": "no source files in the workspace"})
    end = recorder.wait()
    assert (end.kind, end.exit_code, end.message) == ("failed", 2, "no source files in the workspace")


# ---- where adapters are remembered ---------------------------------------------------------------

def test_adapters_live_in_the_user_data_directory_one_folder_per_workspace(tmp_path):
    assert data_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/codellama") or sys.platform in ("win32", "darwin")
    assert data_dir({"CODELLAMA_DATA_DIR": "/d", "XDG_DATA_HOME": "/x"}) == Path("/d")
    (tmp_path / "a" / "proj").mkdir(parents=True)
    (tmp_path / "b" / "proj").mkdir(parents=True)
    first, second = workspace_dir(tmp_path / "a" / "proj", tmp_path), workspace_dir(tmp_path / "b" / "proj", tmp_path)
    assert first != second and first.name.startswith("proj-") and first.parent == tmp_path / "workspaces"


def finished_run(adapters: WorkspaceAdapters) -> dict[str, Any]:
    adapters.training.mkdir(parents=True)
    (adapters.training / "adapter.safetensors").write_bytes(b"weights")
    (adapters.training / "adapter.json").write_text("{}")
    (adapters.training / "report.txt").write_text("table")
    (adapters.training / "run").mkdir()
    return {"event": "done", "adapter": str(adapters.training), "gain": True, "exact_match_before": 4.1,
            "exact_match_after": 8.3}


def test_an_accepted_adapter_is_copied_remembered_and_forgotten(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    adapters = WorkspaceAdapters(root, tmp_path / "data")
    accepted = adapters.accept(finished_run(adapters), model=None, heldout_files=5)
    assert sorted(p.name for p in adapters.adapter.iterdir()) == ["adapter.json", "adapter.safetensors", "report.txt"]
    assert WorkspaceAdapters(root, tmp_path / "data").accepted() == accepted
    assert accepted.as_status()["exactMatchAfter"] == 8.3 and accepted.heldout_files == 5
    assert not any(p.name.startswith("adapter") for p in root.iterdir())  # the repository stays clean
    assert adapters.forget() and adapters.accepted() is None and not adapters.adapter.exists()
    assert not adapters.forget()


def test_the_workspace_adapter_applies_unless_a_setting_names_one_or_the_model_differs(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    adapters = WorkspaceAdapters(root, tmp_path / "data")
    accepted = adapters.accept(finished_run(adapters), model=None, heldout_files=5)
    plain = Settings()
    assert with_accepted(plain, accepted).adapter == str(adapters.adapter)
    assert with_accepted(replace(plain, adapter="/mine"), accepted).adapter == "/mine"
    assert not applies(accepted, replace(plain, model=str(tmp_path)))
    assert not applies(accepted, replace(plain, backend="http://127.0.0.1:8080"))
    assert with_accepted(plain, None) == plain
    assert adapter_status(replace(plain, adapter="/mine"), accepted) == {"path": "/mine", "source": "setting"}
    assert adapter_status(plain, accepted)["applied"] is True
    assert adapter_status(replace(plain, model=str(tmp_path)), accepted)["applied"] is False
    assert adapter_status(plain, None) is None


def test_train_arguments_are_checked():
    assert TrainArgs.parse(None, lambda uri: None) == TrainArgs()
    assert TrainArgs.parse({"steps": 30.0, "quick": True}, lambda uri: None) == TrainArgs(None, 30, True)
    assert TrainArgs.parse({"workspace": "file:///w"}, lambda uri: Path("/w")).workspace == Path("/w")
    for bad in ([1], {"steps": 0}, {"steps": 2.5}, {"steps": True}, {"quick": "yes"}, {"workspace": 3}):
        with pytest.raises(BadArguments):
            TrainArgs.parse(bad, lambda uri: None)
    with pytest.raises(BadArguments):
        TrainArgs.parse({"workspace": "untitled:x"}, lambda uri: None)


# ---- the accept / discard / no-gain / drop flow, with a stand-in server ----------------------------

class FakeProgress:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def begin(self, title: str, cancellable: bool = False) -> str:
        self.log.append(("begin", (title, cancellable)))
        return "token-1"

    def report(self, token: str | None, message: str, percentage: int | None = None) -> None:
        self.log.append(("report", (message, percentage)))

    def end(self, token: str | None, message: str | None = None) -> None:
        self.log.append(("end", message))


class FakeHost:
    """The server as the adapter commands see it; answers the question with `answer`."""

    def __init__(self, root: Path, loop: asyncio.AbstractEventLoop, answer: Any) -> None:
        self.root = root
        self.client_settings = Settings()
        self.progress_reporter = FakeProgress()
        self.loop = loop
        self.answer = answer
        self.asked: list[str] = []
        self.told: list[tuple[str, types.MessageType]] = []
        self.reloads = 0
        self.statuses = 0
        self.finished = asyncio.Event()

    async def ask(self, message: str, actions: list[str]) -> str | None:
        assert actions == [USE, DISCARD]
        self.asked.append(message)
        if isinstance(self.answer, asyncio.Future):  # the user takes their time
            return await self.answer
        return self.answer

    def tell(self, message: str, level: types.MessageType) -> None:
        self.told.append((message, level))

    def adapter_changed(self) -> None:
        self.reloads += 1

    def status_changed(self) -> None:
        self.statuses += 1

    def run_soon(self, coro: Any) -> None:
        async def then_mark() -> None:
            await coro
            self.finished.set()

        asyncio.run_coroutine_threadsafe(then_mark(), self.loop)


async def train_through(tmp_path: Path, answer: str | None, env: dict[str, str] | None = None,
                        commands: AdapterCommands | None = None) -> tuple[FakeHost, AdapterCommands]:
    root = tmp_path / "myproject"
    root.mkdir(exist_ok=True)
    host = FakeHost(root, asyncio.get_running_loop(), answer)
    commands = commands or AdapterCommands(host, launcher=STANDIN, base=tmp_path / "data")
    commands.host = host
    commands.open_workspace(root)
    os.environ.update(env or {})
    try:
        started = commands.train(TrainArgs(steps=4))
    finally:
        for key in env or {}:
            os.environ.pop(key)
    assert started["started"] and started["out"].startswith(str(tmp_path / "data"))
    await asyncio.wait_for(host.finished.wait(), 60)
    return host, commands


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_gain_is_offered_and_used_then_remembered_for_the_next_server_and_dropped(tmp_path):
    host, commands = await train_through(tmp_path, USE)
    assert host.progress_reporter.log[0] == ("begin", ("Training an adapter on myproject", True))
    assert ("report", ("training step 4/4, loss 1.00, ~0 s left", 90)) in host.progress_reporter.log
    assert host.progress_reporter.log[-1] == ("end", "exact match 4.1 % -> 8.3 %")
    assert host.asked[0].startswith("Adapter for myproject: single-line exact match 4.1 % -> 8.3 % on 3 held-out "
                                    "files. Use it?")
    assert host.reloads == 1 and commands.accepted is not None
    assert host.statuses >= 3  # start, each phase, the end: the status bar follows the run
    assert with_accepted(host.client_settings, commands.accepted).adapter == commands.accepted.adapter

    next_server = AdapterCommands(host, base=tmp_path / "data")
    next_server.open_workspace(host.root)
    assert next_server.accepted == commands.accepted

    assert next_server.drop() == {"dropped": True}
    assert host.reloads == 2 and next_server.accepted is None
    assert "adapter dropped" in host.told[-1][0]
    assert next_server.drop()["dropped"] is False


@pytest.mark.slow
@pytest.mark.asyncio
async def test_no_gain_is_said_and_not_applied_and_discard_applies_nothing(tmp_path):
    host, commands = await train_through(tmp_path, USE, {"STANDIN_GAIN": "0"})
    assert host.asked == [] and host.reloads == 0 and commands.accepted is None
    message, level = host.told[-1]
    assert level == types.MessageType.Warning
    assert message.startswith("Adapter for myproject: no gain on held-out files (single-line exact match 4.1 % -> "
                              "3.9 %): not applied")

    host, commands = await train_through(tmp_path, DISCARD, commands=commands)
    assert len(host.asked) == 1 and host.reloads == 0 and commands.accepted is None
    assert commands.workspace is not None and commands.workspace.accepted() is None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_one_run_at_a_time_and_the_progress_cancel_button_stops_it_for_a_resume(tmp_path):
    root = tmp_path / "myproject"
    root.mkdir()
    host = FakeHost(root, asyncio.get_running_loop(), USE)
    commands = AdapterCommands(host, launcher=STANDIN, base=tmp_path / "data")
    commands.open_workspace(root)
    assert commands.train(TrainArgs(steps=100_000))["started"]
    refused = commands.train(TrainArgs(steps=5))
    assert refused["started"] is False and "already running on myproject" in refused["message"]
    # A second server on the same workspace (another window) is refused too.
    other = AdapterCommands(FakeHost(root, asyncio.get_running_loop(), USE), launcher=STANDIN, base=tmp_path / "data")
    assert "already running in another window" in other.train(TrainArgs(steps=5))["message"]
    async def checkpoint_written() -> None:  # something to resume from
        while not (commands.adapters_of(root).training / "run").exists():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(checkpoint_written(), 60)
    assert not commands.cancel_token("someone-elses-token")
    assert commands.status() is not None and commands.status()["workspace"] == str(root)
    assert commands.cancel_token("token-1")
    await asyncio.wait_for(host.finished.wait(), 60)
    assert host.progress_reporter.log[-1] == ("end", "cancelled")
    assert "train again to resume" in host.told[-1][0] and commands.status() is None
    host.finished.clear()
    resumed = commands.train(TrainArgs(steps=100_000))
    assert resumed["resumed"] is True
    commands.cancel()
    await asyncio.wait_for(host.finished.wait(), 60)


@pytest.mark.asyncio
async def test_training_needs_a_folder_and_the_local_model(tmp_path):
    host = FakeHost(tmp_path, asyncio.get_running_loop(), USE)
    host.root = None
    commands = AdapterCommands(host, launcher=STANDIN, base=tmp_path / "data")
    assert commands.train(TrainArgs())["message"] == "open a folder to train an adapter on it"
    host.root = tmp_path
    host.client_settings = replace(Settings(), backend="http://127.0.0.1:1")
    assert "remote server" in commands.train(TrainArgs())["message"]
    assert commands.cancel() == {"cancelled": False, "message": "no training is running"}


@pytest.mark.slow
@pytest.mark.asyncio
async def test_while_the_question_waits_no_new_run_can_overwrite_the_adapter_it_offers(tmp_path):
    root = tmp_path / "myproject"
    root.mkdir()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    host = FakeHost(root, loop, answer)
    commands = AdapterCommands(host, launcher=STANDIN, base=tmp_path / "data")
    commands.open_workspace(root)
    assert commands.train(TrainArgs(steps=3))["started"]

    async def asked() -> None:
        while not host.asked:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(asked(), 60)
    refused = commands.train(TrainArgs(steps=3))
    assert refused["started"] is False and "waiting for your answer" in refused["message"]
    answer.set_result(USE)
    await asyncio.wait_for(host.finished.wait(), 60)
    assert commands.accepted is not None
    assert Path(commands.accepted.adapter, "adapter.safetensors").read_bytes() == b"stand-in"
