"""The default model's recipe, stage after stage, on a small corpus: pretraining from random weights, LCFT
from its checkpoint, LCFT with recall documents from that one, training on the server's own prompts
from that one (its PSM-weighted variant; short prompts, then short and full ones with weighted middles),
and the export the engine loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.checkpoints import read_args

ROOT = Path(__file__).resolve().parents[2]
STDLIB = Path(os.__file__).parent
FILES = ("argparse.py", "shlex.py", "fnmatch.py", "textwrap.py", "string.py", "difflib.py")

pytestmark = pytest.mark.slow


def stage(run: Path, *args: str, succeeds: bool = True) -> str:
    """stage.py's output (stdout; with succeeds=False, which asserts that it failed, stdout and stderr)."""
    cmd = [sys.executable, str(ROOT / "recipes/default_model/stage.py"), *args, "--run", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert (done.returncode == 0) == succeeds, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout if succeeds else done.stdout + done.stderr


def new_run(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A run directory with a small corpus (a few stdlib modules) and the tiny test tokenizer."""
    run = tmp_path / "run"
    (run / "corpus").mkdir(parents=True)
    with open(run / "corpus" / "train.jsonl", "w") as fh:
        for name in FILES:
            fh.write(json.dumps({"repo": "stdlib", "path": name, "text": (STDLIB / name).read_text()}) + "\n")
    (run / "tokenizer.model").write_bytes((tiny_model_dir / "tokenizer.model").read_bytes())
    return run


COMMON = ("--threads", "1", "--workers", "1", "--log-every", "1")


def test_stages_chain_from_random_weights_to_an_exported_model(tmp_path, tiny_model_dir):
    run = new_run(tmp_path, tiny_model_dir)
    common = COMMON

    stage(run, "pretrain", "--steps", "1", "--micro-batch", "1", *common)
    out = stage(run, "lcft", "--steps", "1", *common)
    assert "starting from" in out and "pretrain/step-0000001" in out
    out = stage(run, "lcft-recall", "--steps", "2", "--micro-batch", "1", *common)
    assert "pretrain" not in out and "lcft/step-0000001" in out
    meta = json.loads((run / "streams" / "lcft-recall.json").read_text())
    assert meta["docs"]["recall_windows"] > 0 and meta["docs"]["real_windows"] > 0

    out = stage(run, "served", "--steps", "1", "--micro-batch", "1", *common)
    assert "lcft-recall/step-0000002" in out
    meta = json.loads((run / "streams" / "served.json").read_text())
    assert meta["docs"]["served_windows"] > 0 and meta["docs"]["served_examples"] >= meta["docs"]["served_windows"]
    # The PSM-weighted variant continues from it, with most of the server's prompts in PSM order.
    out = stage(run, "served-psm", "--steps", "1", "--micro-batch", "1", *common)
    assert "served/step-0000001" in out
    psm_meta = json.loads((run / "streams" / "served-psm.json").read_text())
    assert psm_meta["docs"]["served_psm"] > psm_meta["docs"]["served_spm"]
    assert meta["docs"]["served_spm"] > meta["docs"]["served_psm"]
    # Short prompts, several to a window, some with the cursor at a line's start; then short and full
    # ones with the middles' first tokens weighing more (a weights file beside the stream).
    out = stage(run, "served-short", "--steps", "1", "--micro-batch", "1", *common)
    assert "served/step-0000001" in out
    short_meta = json.loads((run / "streams" / "served-short.json").read_text())
    assert short_meta["docs"]["served_examples"] > 2 * short_meta["docs"]["served_windows"]
    assert short_meta["docs"]["served_linestart"] > 0 and not short_meta["loss_weights"]
    out = stage(run, "served-mix", "--steps", "1", "--micro-batch", "1", *common)
    assert "served-short/step-0000001" in out
    mix_meta = json.loads((run / "streams" / "served-mix.json").read_text())
    assert mix_meta["loss_weights"]
    assert (run / "streams" / "served-mix.weights.bin").stat().st_size == 2 * mix_meta["n_tokens"]  # float16

    stage(run, "export", "--out", str(tmp_path / "model"))
    state = json.loads((tmp_path / "model" / "training_state.json").read_text())
    assert state["stage"] == "served-mix" and state["step"] == 1
    args, layout = read_args(tmp_path / "model")  # (the tiny test tokenizer has fewer pieces than SHAPE)
    assert layout == "hf" and args.max_seq_len == 4096 and args.rope_theta == 1e6  # LCFT's context, not 2,048


def test_a_larger_shape_trains_exports_and_is_not_mixed_with_another(tmp_path, tiny_model_dir):
    """--shape: the larger default model a GPU run trains. The export records its shape; a stage
    started with another shape from its weights stops, naming the tensor that differs."""
    run = new_run(tmp_path, tiny_model_dir)
    stage(run, "pretrain", "--steps", "1", "--micro-batch", "1", "--shape", "384x10", *COMMON)
    message = stage(run, "lcft", "--steps", "1", *COMMON, succeeds=False)  # the default shape, 320x8
    assert "the weights are" in message and "--shape" in message
    stage(run, "lcft", "--steps", "1", "--shape", "384x10", *COMMON)
    stage(run, "export", "--out", str(tmp_path / "model"))
    args, _ = read_args(tmp_path / "model")
    assert (args.dim, args.n_layers, args.n_heads) == (384, 10, 6) and args.rope_theta == 1e6
