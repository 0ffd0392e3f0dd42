"""`python -m lsp_server.adapt`: adapt a model to one workspace and say what it gained.

    python -m lsp_server.adapt --workspace ~/src/myproject --out ~/.local/share/codellama/adapters/myproject

Steps, each announced on stdout as one JSON object per line (the language server reads them; logs go
to stderr): hold out a few files, score the base model on them (`baseline`), train a LoRA adapter on
the server's own prompts for the other files (`train`), score the adapted model (`evaluate`), and write
the report beside the adapter (`report`). A SIGTERM or SIGINT stops within one step with a checkpoint;
the same command with --resume continues and ends with the same adapter as an uninterrupted run.

Events (lsp_server/adapt/job.py reads them):
    {"event": "phase", "phase": "prepare" | "baseline" | "train" | "evaluate" | "report"}
    {"event": "start", "pid", "train_files", "heldout_files", "steps", "out"}
    {"event": "progress", "phase": "train", "step", "steps", "loss", "elapsed_s", "eta_s"}
    {"event": "progress", "phase": "baseline" | "evaluate", "done", "total"}
    {"event": "done", "adapter", "report", "summary", "gain", "exact_match_before", "exact_match_after"}
    {"event": "error", "message"}
Exit status: 0 finished (with or without a gain), 2 a workspace it cannot use, 1 a failure, 128 +
the signal's number when a signal stopped it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch

from engine.atomic import atomic_file, write_text_atomic
from engine.backends.local import load_local_backend
from engine.paths import default_model_dir
from engine.tokenizer import Tokenizer
from engine.train.sources import collect_repo

from .data import ExampleMix, Split, split_workspace, training_windows
from .evaluate import heldout_perplexity, line_cases, score_cases, workspace_modules
from .examples import LossWeights


@dataclass(frozen=True)
class Recipe:
    """The adaptation's hyper-parameters (the defaults are the measured choice: benchmarks/RESULTS.md)."""

    steps: int = 0  # 0: `passes` over the training files' tokens, within [min_steps, max_steps]
    passes: float = 2.0
    min_steps: int = 30
    max_steps: int = 300
    seq_len: int = 2304
    lr: float = 1e-3
    warmup_steps: int = 10
    rank: int = 16
    alpha: float = 32.0
    targets: str = "wq,wk,wv,wo,w1,w2,w3"
    train_embeddings: bool = True  # the embedding and output matrices in full: measured, +0.6 points
    spm_rate: float = 0.7
    context_rate: float = 0.9
    full_budget_rate: float = 0.5  # prompts at the server's full budget; the others are shorter
    snippet_loss: float = 1.0  # loss weight of the repository snippets in a prompt (the file's text: 1.0)
    middle_loss: float = 1.0  # loss weight of the completion's tokens
    name_loss: float = 1.0  # a factor on the loss of tokens spelling a name the workspace defines
    heldout_fraction: float = 0.2
    eval_cases: int = 200
    seed: int = 0  # the held-out files and the cursors scored on them
    train_seed: int | None = None  # the training examples, their order and the adapter's start (None: seed)
    # The fraction of the trained update the adapter keeps (the weights halfway from the base model to
    # the trained one, as WiSE-FT interpolates). Measured on four repositories (benchmarks/RESULTS.md,
    # session 19): the whole update gained +0.7 points of exact match on average over two training
    # seeds, one repository -5.6; half of it +2.1 over three seeds, none below -0.7 (half of 4 passes:
    # +2.4 over three seeds, one repository -1.6).
    strength: float = 0.5

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    def steps_for(self, train_tokens: int) -> int:
        """The training budget: a few passes over the workspace, more would learn its files by heart
        (measured: 15 passes lowered held-out exact match; benchmarks/RESULTS.md)."""
        if self.steps:
            return self.steps
        return max(self.min_steps, min(self.max_steps, round(self.passes * train_tokens / self.seq_len)))

    def mix(self) -> ExampleMix:
        return ExampleMix(spm_rate=self.spm_rate, context_rate=self.context_rate,
                          full_budget_rate=self.full_budget_rate,
                          loss_weights=LossWeights(snippets=self.snippet_loss, middle=self.middle_loss,
                                                   names=self.name_loss))


# --quick: a run of about a minute, for tests of the loop. LoRA alone: in a dozen steps the full
# embedding and output matrices move before the LoRA weights learn anything (the end-to-end test's
# suggestion came back empty with them).
QUICK = {"steps": 12, "eval_cases": 24, "train_embeddings": False}


class Events:
    """The run's progress as JSON lines: on the given stream (stdout) and in OUT/progress.jsonl."""

    def __init__(self, stream: IO[str], out: Path) -> None:
        self.stream = stream
        self.log = (out / "progress.jsonl").open("a")

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        for s in (self.stream, self.log):
            s.write(line + "\n")
            s.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lsp_server.adapt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", required=True, help="the repository to adapt to")
    p.add_argument("--out", required=True, help="where the adapter and its report go")
    p.add_argument("--model", default=None, help="base model directory (default: the embedded model)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in OUT")
    p.add_argument("--quick", action="store_true", help="a tiny budget (tests)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    for name, value in asdict(Recipe()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:  # a field whose default is None is an optional int
            p.add_argument(flag, type=int if value is None else type(value), default=None)
    return p.parse_args(argv)


def recipe_from(args: argparse.Namespace) -> Recipe:
    given = {k: getattr(args, k) for k in asdict(Recipe()) if getattr(args, k) is not None}
    return Recipe(**{**(QUICK if args.quick else {}), **given})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    events = Events(sys.stdout, out)
    sys.stdout = sys.stderr  # the trainer's and loaders' prints are logs, not events
    try:
        return Adaptation(args, out, events).run()
    except Exception as exc:  # one clear line for the editor; the traceback goes to the log
        import traceback

        traceback.print_exc()
        events("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        sys.stdout = sys.__stdout__


class Adaptation:
    def __init__(self, args: argparse.Namespace, out: Path, events: Events) -> None:
        self.args, self.out, self.events = args, out, events
        self.recipe = recipe_from(args)
        self.model_dir = Path(args.model).expanduser() if args.model else default_model_dir()
        self.workspace = Path(args.workspace).expanduser().resolve()
        if args.threads:
            torch.set_num_threads(args.threads)

    def run(self) -> int:
        r = self.recipe
        self.events("phase", phase="prepare")
        files = collect_repo(self.workspace) if self.workspace.is_dir() else []
        split = split_workspace(files, r.heldout_fraction, r.seed)
        if not split.heldout or not split.train:
            self.events("error", message=f"{self.workspace}: too few Python files to train on and hold some "
                                         "out (need at least 2)")
            return 2
        tok = Tokenizer(str(self.model_dir / "tokenizer.model"))
        self.recipe = r = replace(r, steps=r.steps_for(sum(len(tok.encode(f.text)) for f in split.train)))
        self.events("start", pid=os.getpid(), train_files=len(split.train), heldout_files=len(split.heldout), steps=r.steps,
                    out=str(self.out))
        write_text_atomic(self.out / "heldout.json", json.dumps([f.path for f in split.heldout], indent=1) + "\n")
        workspace = {f.path: f.text for f in files}
        cases = line_cases(split.heldout, r.eval_cases, r.seed, workspace_modules(list(workspace)))

        before = self._cached("before.json", lambda: self._score("baseline", None, cases, workspace, split.heldout))
        started = time.monotonic()
        stopped = self._train(split)
        if stopped:
            return 128 + stopped
        train_seconds = time.monotonic() - started
        after = self._score("evaluate", self.out, cases, workspace, split.heldout)
        self.events("phase", phase="report")
        from .report import write_report

        report = write_report(self.out, workspace=self.workspace, base_model=self.model_dir, recipe=asdict(r),
                              heldout=[f.path for f in split.heldout], train_files=len(split.train),
                              train_seconds=train_seconds, before=before, after=after)
        self.events("done", adapter=str(self.out), report=str(self.out / "report.json"), summary=report["summary"],
                    gain=report["gain"], exact_match_before=before["exact_match"],
                    exact_match_after=after["exact_match"])
        return 0

    def _cached(self, name: str, compute) -> dict:
        """A result computed once per OUT (a resumed run does not score the base model again)."""
        path = self.out / name
        if self.args.resume and path.is_file():
            return json.loads(path.read_text())
        result = compute()
        write_text_atomic(path, json.dumps(result) + "\n")
        return result

    def _score(self, phase: str, adapter: Path | None, cases, workspace, heldout) -> dict:
        self.events("phase", phase=phase)
        backend = load_local_backend(self.model_dir, device="cpu", adapter=adapter)
        try:
            scores = score_cases(backend, cases, workspace,
                                 progress=lambda done, total: self.events("progress", phase=phase, done=done,
                                                                           total=total))
            return {**scores, "perplexity": heldout_perplexity(backend, heldout)}
        finally:
            backend.close()

    def _train(self, split: Split) -> int:
        """Train and save the adapter; returns the signal number when a signal stopped it (else 0)."""
        from engine.checkpoints import load_model
        from engine.train.data import WindowSampler
        from engine.train.lora import LoRAConfig, add_lora, save_adapter, whole_tensors
        from engine.train.trainer import TrainConfig, train

        r = self.recipe
        self.events("phase", phase="train")
        loaded = load_model(self.model_dir, device="cpu", dtype=torch.bfloat16)
        stream, loss_weights = self._cached_windows(split, loaded.tokenizer)
        lcfg = LoRAConfig(rank=r.rank, alpha=r.alpha, targets=tuple(r.targets.split(",")),
                          train_embeddings=r.train_embeddings)
        trainable = add_lora(loaded.model, lcfg, seed=r.training_seed)
        base = whole_tensors(loaded.model) if r.strength != 1.0 else None
        cfg = TrainConfig(steps=r.steps, seq_len=r.seq_len, lr=r.lr, warmup_steps=r.warmup_steps, weight_decay=0.0,
                          seed=r.training_seed, dtype="bf16", gradient_checkpointing=True, checkpoint_every_s=120.0,
                          log_every=1, extra={"recipe": asdict(r), "workspace": str(self.workspace)})
        started = time.monotonic()
        first_step: list[int] = []  # the step this process started from (a resumed run starts late)

        def on_log(record: dict) -> None:
            step = int(record.get("step", 0))
            if not first_step:
                first_step.append(step - 1)
            elapsed = time.monotonic() - started
            eta = elapsed / max(1, step - first_step[0]) * (r.steps - step)
            self.events("progress", phase="train", step=step, steps=r.steps,
                        loss=round(float(record.get("loss", math.nan)), 4), elapsed_s=round(elapsed, 1),
                        eta_s=round(eta, 1))

        sampler = WindowSampler(stream, r.seq_len, 1, r.training_seed, loss_weights=loss_weights)
        record = train(loaded.model, sampler, cfg, self.out / "run", resume=self.args.resume, trainable=trainable,
                       on_log=on_log)
        if "signal" in record:
            return int(record["signal"])
        save_adapter(loaded.model, self.out, lcfg, {"base_model": str(self.model_dir), "steps": r.steps,
                                                    "rope_theta": loaded.model.args.rope_theta,
                                                    "workspace": str(self.workspace)}, r.strength, base)
        return 0

    def _cached_windows(self, split: Split, tok) -> tuple[Any, Any]:
        """The training tokens and their loss weights (None: all alike), saved for a resumed run."""
        import numpy as np

        r = self.recipe
        path, weights_path = self.out / "windows.npy", self.out / "loss_weights.npy"
        if self.args.resume and path.is_file():
            weights = np.load(weights_path, mmap_mode="r") if weights_path.is_file() else None
            return np.load(path, mmap_mode="r"), weights
        t0 = time.monotonic()
        stream, weights, counts = training_windows(split.train, tok, r.seq_len, r.steps, r.mix(), r.training_seed)
        # Weights first: windows.npy is what marks the data as complete for --resume.
        weights_path.unlink(missing_ok=True)
        for array, where in ((weights, weights_path), (stream, path)):
            if array is not None:
                with atomic_file(where) as tmp, open(tmp, "wb") as fh:  # a killed run never leaves half a file
                    np.save(fh, array)
        print(f"{r.steps} windows in {time.monotonic() - t0:.1f} s: {counts}", file=sys.stderr, flush=True)
        return stream, weights
