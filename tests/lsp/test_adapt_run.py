"""`python -m lsp_server.adapt` as the language server runs it: a real process, JSON-line events on
stdout, the report beside the adapter, a clear error for a workspace it cannot use, and a run stopped
by SIGTERM that resumes to the very adapter an uninterrupted run writes (tiny random model, one thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import forkserver
from tests.lsp.test_adapt import marked_workspace

pytestmark = pytest.mark.slow

STEPS = 8


def write_workspace(root: Path, n: int = 10) -> Path:
    for f in marked_workspace(n):
        (root / f.path).parent.mkdir(parents=True, exist_ok=True)
        (root / f.path).write_text(f.text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def adapt_command(model: Path, workspace: Path, out: Path, *extra: str) -> list[str]:
    return forkserver.command("lsp_server.adapt", "--model", str(model), "--workspace", str(workspace),
                              "--out", str(out), "--steps", str(STEPS), "--seq-len", "512", "--eval-cases", "4",
                              "--threads", "1", *extra)


def run(command: list[str], stop_at_step: int | None = None,
        sig: signal.Signals = signal.SIGTERM) -> tuple[int, list[dict]]:
    """Run to the end, or send `sig` once training reports `stop_at_step`; (exit code, events)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=forkserver.REPO, env=dict(os.environ, PYTHONPATH=str(forkserver.REPO)))
    assert proc.stdout is not None
    events, pid = [], None
    for line in proc.stdout:
        event = json.loads(line)  # nothing but events on stdout
        events.append(event)
        pid = event.get("pid", pid)
        if stop_at_step is not None and event.get("phase") == "train" and event.get("step") == stop_at_step:
            os.kill(pid, sig)
    return proc.wait(timeout=600), events


def test_a_run_reports_progress_and_writes_the_adapter_with_its_report(tiny_model_dir, tmp_path):
    ws = write_workspace(tmp_path / "ws")
    code, events = run(adapt_command(tiny_model_dir, ws, tmp_path / "out"))
    assert code == 0, events
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["prepare", "baseline", "train", "evaluate", "report"]
    steps = [e["step"] for e in events if e["event"] == "progress" and e["phase"] == "train"]
    assert steps[-1] == STEPS
    done = events[-1]
    assert done["event"] == "done" and isinstance(done["gain"], bool)
    assert "held-out" in done["summary"] and "exact match" in done["summary"]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["gain"] == done["gain"] and report["before"]["cases"] == 4
    assert set(report["heldout_files"]) == set(json.loads((out / "heldout.json").read_text()))
    for name in ("adapter.safetensors", "adapter.json", "report.txt", "report.png"):
        assert (out / name).is_file(), name


def test_a_workspace_without_enough_files_is_a_clear_error(tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "only.py").write_text("def f():\n    return 1\n")
    code, events = run(adapt_command(tiny_model_dir, ws, tmp_path / "out"))
    assert code == 2
    assert events[-1]["event"] == "error" and "too few Python files" in events[-1]["message"]


# Weighted losses, and the whole trained update saved (the default keeps half of it, measured against
# the base weights a resumed process loads again).
WEIGHTED = ("--middle-loss", "3", "--snippet-loss", "0.5", "--name-loss", "2", "--strength", "1")


@pytest.mark.parametrize("sig, recipe", [(signal.SIGTERM, ()), (signal.SIGKILL, ()), (signal.SIGKILL, WEIGHTED)],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-weighted-whole-update"])
def test_a_stopped_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, sig, recipe):
    ws = write_workspace(tmp_path / "ws")
    code, _ = run(adapt_command(tiny_model_dir, ws, tmp_path / "whole", *recipe))
    assert code == 0
    code, events = run(adapt_command(tiny_model_dir, ws, tmp_path / "stopped", *recipe), stop_at_step=3, sig=sig)
    # SIGTERM: the step in flight ends with a checkpoint; SIGKILL: nothing runs after it, the resume
    # starts from the last periodic checkpoint (none this early) with the saved windows and baseline.
    assert code == 128 + signal.SIGTERM if sig == signal.SIGTERM else code != 0
    assert not (tmp_path / "stopped" / "adapter.json").exists()  # no adapter claims all the steps
    code, events = run(adapt_command(tiny_model_dir, ws, tmp_path / "stopped", *recipe, "--resume"))
    assert code == 0, events
    assert not [e for e in events if e.get("phase") == "baseline"]  # the base model is not scored again
    a, b = load_file(tmp_path / "whole" / "adapter.safetensors"), load_file(tmp_path / "stopped" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
