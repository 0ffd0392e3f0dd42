"""A training run (`python -m engine train`, a real process) stopped by SIGTERM or killed by SIGKILL,
then resumed with --resume, ends with bit-for-bit the weights and optimiser state of a run that was
never interrupted (on the CPU, one thread: the same operations in the same order give the same bits).

SIGTERM: the run finishes the step in flight, writes a checkpoint and exits with 128 + 15, without an
adapter or model that would claim all the steps. SIGKILL: nothing runs after it; the resume starts
from the last complete checkpoint and redoes the steps after it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.train.trainer import latest_checkpoint
from tests import forkserver

pytestmark = pytest.mark.slow

STEPS = 40


def train_command(tiny_model_dir: Path, code_repo: Path, out: Path, *extra: str) -> list[str]:
    return forkserver.command(
        "engine", "train", "--model", str(tiny_model_dir), "--repo", str(code_repo), "--out", str(out),
        "--seq-len", "64", "--batch-tokens", "128", "--steps", str(STEPS), "--warmup-steps", "4",
        "--lora-rank", "0", "--threads", "1", "--cache-dir", str(out.parent / "cache"), *extra)


def run_to_the_end(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=forkserver.REPO,
                          env=dict(os.environ, PYTHONPATH=str(forkserver.REPO)))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_and_signal(command: list[str], sig: signal.Signals, when: str) -> tuple[int, str]:
    """Start a run, send `sig` to the training process once a line of its output starts with `when`;
    returns its exit status and output."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=forkserver.REPO, env=dict(os.environ, PYTHONPATH=str(forkserver.REPO)))
    assert proc.stdout is not None
    output, pid, sent = [], None, False
    for line in proc.stdout:
        output.append(line)
        if match := re.match(r"training in process (\d+)", line):
            pid = int(match.group(1))
        if line.startswith(when) and not sent:
            assert pid is not None, "".join(output)
            os.kill(pid, sig)
            sent = True
    code = proc.wait(timeout=600)
    assert sent, "the run ended before the signal was sent:\n" + "".join(output)
    return code, "".join(output)


def final_state(out: Path) -> dict:
    ckpt = latest_checkpoint(out / "run")
    assert ckpt is not None and ckpt.name == f"step-{STEPS:07d}"
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)


def assert_same_training(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa["params"].keys() == sb["params"].keys()
    for name in sa["params"]:
        assert torch.equal(sa["params"][name], sb["params"][name]), name
    for (ia, pa), (ib, pb) in zip(sa["optimizer"]["state"].items(), sb["optimizer"]["state"].items(), strict=True):
        assert ia == ib
        for key in pa:
            assert torch.equal(pa[key], pb[key]), (ia, key)
    ma, mb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)  # what a user loads


def resumed_from(output: str) -> int:
    match = re.search(r"resumed from \S+ at step (\d+)", output)
    assert match, output
    return int(match.group(1))


def test_sigterm_and_sigkill_mid_training_resume_to_the_same_weights(tiny_model_dir, code_repo, tmp_path):
    straight = tmp_path / "straight"
    run_to_the_end(train_command(tiny_model_dir, code_repo, straight))

    # SIGTERM after the first step: a checkpoint at the step in flight, exit 143, no final model.
    stopped = tmp_path / "stopped"
    code, output = run_and_signal(train_command(tiny_model_dir, code_repo, stopped), signal.SIGTERM, "step 1/")
    assert code == 128 + signal.SIGTERM, output
    ckpt = latest_checkpoint(stopped / "run")
    assert ckpt is not None and 1 <= int(ckpt.name.removeprefix("step-")) < STEPS, output
    assert "--resume" in output and not (stopped / "model").exists()
    resumed = run_to_the_end(train_command(tiny_model_dir, code_repo, stopped, "--resume"))
    assert resumed_from(resumed) == int(ckpt.name.removeprefix("step-"))
    assert_same_training(straight, stopped)

    # SIGKILL after step 10 is logged (checkpoints every 7 steps): whatever the run did after its last
    # complete checkpoint is lost and done again.
    killed = tmp_path / "killed"
    every = ("--checkpoint-every-steps", "7")
    code, output = run_and_signal(train_command(tiny_model_dir, code_repo, killed, *every), signal.SIGKILL, "step 10/")
    assert code in (-signal.SIGKILL, 256 - signal.SIGKILL), output  # direct child, or through the fork server
    ckpt = latest_checkpoint(killed / "run")
    assert ckpt is not None and int(ckpt.name.removeprefix("step-")) < STEPS, output
    resumed = run_to_the_end(train_command(tiny_model_dir, code_repo, killed, *every, "--resume"))
    assert 7 <= resumed_from(resumed) < STEPS
    assert_same_training(straight, killed)


def test_a_resumed_run_logs_the_redone_steps_once(tiny_model_dir, tmp_path):
    """What a killed run logged after its last checkpoint (and a half-written last line) is dropped on
    resume, so the loss curve has each step once."""
    import numpy as np

    from engine.checkpoints import load_model
    from engine.train.data import WindowSampler
    from engine.train.trainer import TrainConfig, train

    stream = np.arange(3000, dtype=np.int32) % 200
    cfg = TrainConfig(steps=6, seq_len=16, dtype="fp32", checkpoint_every_s=1e9, log_every=1)
    model = load_model(tiny_model_dir, dtype=torch.float32).model
    train(model, WindowSampler(stream, 16, 1, 0), cfg, tmp_path / "run", stop_after=3)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as fh:  # steps 4 and 5 were done, then the kill came mid-line
        fh.write('{"step": 4, "loss": 5.0}\n{"step": 5, "loss": 5.0}\n{"step": 6, "lo')
    train(model, WindowSampler(stream, 16, 1, 0), cfg, tmp_path / "run", resume=True)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
