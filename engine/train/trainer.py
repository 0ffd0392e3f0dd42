"""The training loop: full training or LoRA, bf16 autocast, chunked cross-entropy, AdamW with warm-up
and cosine decay, atomic checkpoints and exact resume.

Exact resume: the batch of a step depends only on (seed, step) (see data.WindowSampler), and a
checkpoint holds the trainable weights, the optimiser state, the step and the RNG states, so a run
stopped and resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from engine.atomic import atomic_directory, write_text_atomic
from engine.model import Transformer
from engine.train.data import WindowSampler


@dataclass
class TrainConfig:
    steps: int
    seq_len: int
    micro_batch: int = 1  # sequences per forward pass
    grad_accum: int = 1  # forward passes per optimiser step
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "bf16"  # autocast dtype: "bf16" or "fp32"
    device: str = "cpu"
    gradient_checkpointing: bool = False
    loss_chunk: int = 4096  # tokens per chunk of the cross-entropy
    checkpoint_every_s: float = 600.0
    checkpoint_every_steps: int = 0  # 0: by time only
    keep_checkpoints: int = 2
    log_every: int = 10
    threads: int = 0  # torch threads; 0 leaves the default
    # When > 0, `steps` is re-estimated once, at the end of warm-up, from the measured speed, so that
    # the cosine schedule ends when this many seconds of training have passed (a run sized to a lease
    # of machine time rather than to a step count). Such a run is not exactly resumable.
    fit_to_seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # recorded in checkpoints (data hash, stage, ...)

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.seq_len


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- loss -------------------------------------------------------------------------------------------


def _ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
            loss_weights: torch.Tensor | None = None) -> torch.Tensor:
    logits = F.linear(hidden, weight.to(hidden.dtype) if hidden.dtype != weight.dtype else weight)
    if loss_weights is None:
        return F.cross_entropy(logits.float(), targets, reduction="sum", ignore_index=-100)
    per_token = F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=-100)
    return (per_token * loss_weights).sum()


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 4096,
    loss_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against targets, `chunk` tokens at a time; with
    `loss_weights` (one per target) the weighted mean.

    Each chunk's logits are recomputed in the backward pass (activation checkpointing), so at most
    one chunk of [tokens x vocab] logits exists at any moment, forward or backward.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    w = None if loss_weights is None else loss_weights.reshape(-1).to(torch.float32)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        part = (h[i : i + chunk], weight, t[i : i + chunk], None if w is None else w[i : i + chunk])
        if torch.is_grad_enabled():
            total = total + checkpoint(_ce_sum, *part, use_reentrant=False)
        else:
            total = total + _ce_sum(*part)
    counted = (t != -100).to(torch.float32)
    norm = counted.sum() if w is None else (w * counted).sum()
    return total / norm.clamp_min(1e-6)


def batch_loss(model: Transformer, batch: torch.Tensor, cfg: TrainConfig,
               loss_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one batch of windows; `loss_weights` (batch, seq_len) weigh its targets."""
    x, y = batch[:, :-1], batch[:, 1:]
    autocast = cfg.dtype == "bf16"
    with torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=autocast):
        hidden = model(x, return_hidden=True)
        return chunked_cross_entropy(hidden, model.output.weight, y, cfg.loss_chunk, loss_weights)


# ---- checkpoints ------------------------------------------------------------------------------------


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (a directory with its `COMPLETE` marker), or None."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    candidates = []
    if pointer.is_file():
        candidates.append(run_dir / pointer.read_text().strip())
    candidates += sorted(run_dir.glob("step-*[0-9]"), reverse=True)
    for c in candidates:
        if (c / "COMPLETE").is_file() and (c / "state.pt").is_file():
            return c
    return None


def save_checkpoint(run_dir: Path, step: int, model: Transformer, opt: torch.optim.Optimizer,
                    trainable: dict[str, torch.nn.Parameter], cfg: TrainConfig, keep: int) -> Path:
    """Write step-NNNNNNN/ atomically (engine/atomic.py: complete, with its COMPLETE marker, or absent),
    then point `latest` at it and drop all but the newest `keep`."""
    final = run_dir / f"step-{step:07d}"
    state = {
        "step": step,
        "params": {n: p.detach().clone() for n, p in trainable.items()},
        "optimizer": opt.state_dict(),
        "rng": _rng_state(),
        "config": asdict(cfg),
        "model_args": model.args.to_dict(),
    }
    with atomic_directory(final) as tmp:
        torch.save(state, tmp / "state.pt")
        (tmp / "COMPLETE").write_text(f"{step}\n")
    write_text_atomic(run_dir / "latest", final.name + "\n")
    for old in sorted(run_dir.glob("step-*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, opt: torch.optim.Optimizer, trainable: dict[str, torch.nn.Parameter]) -> int:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(state["params"][n])
    opt.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return int(state["step"])


# ---- the loop ---------------------------------------------------------------------------------------


def make_optimizer(trainable: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in trainable.items() if p.dim() >= 2 and "tok_embeddings" not in n]
    no_decay = [p for n, p in trainable.items() if not (p.dim() >= 2 and "tok_embeddings" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.device(cfg.device).type == "cuda"  # one kernel for all parameters: less launch overhead
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, fused=fused)


def _rss_gb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(
    model: Transformer,
    sampler: WindowSampler,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    trainable: dict[str, torch.nn.Parameter] | None = None,
    on_log: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
) -> dict:
    """Train `model` for cfg.steps optimiser steps, or until `stop_after` steps (to simulate an
    interruption), `time_limit_s` seconds, or SIGINT/SIGTERM; each of these ends with a checkpoint.
    Returns the last metrics record; after a signal it also holds the signal's number ("signal")."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if trainable is None:
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    opt = make_optimizer(trainable, cfg)
    step = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            step = load_checkpoint(ckpt, opt, trainable)
            print(f"resumed from {ckpt} at step {step}", flush=True)
        else:
            print(f"no checkpoint in {run_dir}: starting at step 0", flush=True)
    metrics_path = run_dir / "metrics.jsonl"
    if step == 0 and metrics_path.exists() and not resume:
        metrics_path.unlink()
    if resume:
        drop_metrics_after(metrics_path, step)  # steps a killed run logged after its last checkpoint
    write_text_atomic(run_dir / "config.json", json.dumps(asdict(cfg), indent=1))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    stop: dict[str, int | None] = {"signal": None}

    def _on_signal(signum, frame) -> None:  # finish the step in flight, checkpoint, return
        stop["signal"] = signum
        print(f"signal {signum}: stopping after this step", flush=True)

    previous = {}
    if threading_main():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
        print(f"training in process {os.getpid()}: SIGINT or SIGTERM stops it after the step in flight, "
              "with a checkpoint to resume from", flush=True)
    try:
        run = _Run(model, sampler, cfg, run_dir, opt, trainable, metrics_path, on_log, stop, time_limit_s)
        record = _loop(run, step, end)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop["signal"] is not None:
        record["signal"] = stop["signal"]  # the run stopped early: its caller must not take it as done
    return record


def drop_metrics_after(metrics_path: Path, step: int) -> None:
    """Keep the metrics of steps up to `step` (and no half-written last line)."""
    if not metrics_path.is_file():
        return
    kept = []
    for line in metrics_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    write_text_atomic(metrics_path, "".join(kept))


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class _StepsFitter:
    """Sets cfg.steps once, at the end of warm-up, so the run ends after cfg.fit_to_seconds.

    The speed is measured from the 5th step on (the first ones pay for allocation and autotuning);
    cfg.steps (what the user asked for) stays the upper bound.
    """

    def __init__(self, cfg: TrainConfig, start_step: int) -> None:
        self.cfg = cfg
        self.measure_from = start_step + 5
        self.fit_at = max(cfg.warmup_steps, self.measure_from + 20)
        self.t_from: float | None = None
        self.done = False

    def observe(self, step: int, t0: float) -> bool:
        """Called after each step; True when it has just changed cfg.steps."""
        if self.done:
            return False
        now = time.monotonic()
        if step == self.measure_from:
            self.t_from = now
        if step < self.fit_at or self.t_from is None:
            return False
        steps_per_s = (step - self.measure_from) / max(now - self.t_from, 1e-9)
        remaining_s = self.cfg.fit_to_seconds - (now - t0)
        self.cfg.steps = min(self.cfg.steps, step + max(1, int(remaining_s * steps_per_s)))
        self.done = True
        return True


@dataclass
class _Run:
    """What one training run's steps work on (train() builds it)."""

    model: Transformer
    sampler: WindowSampler
    cfg: TrainConfig
    run_dir: Path
    opt: torch.optim.Optimizer
    trainable: dict[str, torch.nn.Parameter]
    metrics_path: Path
    on_log: Callable[[dict], None] | None
    stop: dict[str, int | None]  # {"signal": n} once SIGINT/SIGTERM asked the run to stop
    time_limit_s: float | None

    def step(self, step: int, lr: float) -> tuple[float, float]:
        """One optimiser step (all its micro-batches) at `lr`; its loss and gradient norm."""
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = lr
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            index = step * cfg.grad_accum + micro
            batch = self.sampler.batch(index).to(cfg.device)
            weights = self.sampler.batch_weights(index)
            loss = batch_loss(self.model, batch, cfg, None if weights is None else weights.to(cfg.device)) / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return step_loss, grad_norm

    def log(self, record: dict) -> None:
        """Print a step's line, append it to metrics.jsonl, hand it to on_log."""
        cfg = self.cfg
        eta = (cfg.steps - record["step"]) * cfg.tokens_per_step / max(record["tok_per_s"], 1e-9)
        print(
            f"step {record['step']}/{cfg.steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
            f"{record['tok_per_s']:,.0f} tok/s | ETA {_fmt_time(eta)} | mem {record['rss_gb']:.2f} GB | "
            f"epoch {record['epoch']:.3f}",
            flush=True,
        )
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.on_log:
            self.on_log(record)

    def checkpoint(self, step: int) -> None:
        path = save_checkpoint(self.run_dir, step, self.model, self.opt, self.trainable, self.cfg,
                               self.cfg.keep_checkpoints)
        print(f"checkpoint {path}", flush=True)
        try:
            from engine.train.plot import save_loss_curve

            if self.metrics_path.is_file():
                save_loss_curve(self.metrics_path, self.run_dir / "loss.png")
        except Exception as exc:  # a plot must never stop a training run
            print(f"(loss curve not written: {exc})", flush=True)


def _loop(run: _Run, step: int, end: int) -> dict:
    """Steps from `step` to `end` (fewer when stopped by a signal or the time limit), with logs and
    checkpoints; the last logged record."""
    cfg = run.cfg
    last_ckpt = time.monotonic()
    first = step + 1  # logged too, so a curve starts where the run starts and a short run has two points
    t0, tokens_done, window_loss, window_n = time.monotonic(), 0, 0.0, 0
    record: dict = {}
    fit = _StepsFitter(cfg, step) if cfg.fit_to_seconds > 0 else None
    while step < end:
        lr = lr_at(step, cfg)
        step_loss, grad_norm = run.step(step, lr)
        step += 1
        if fit is not None and fit.observe(step, t0):
            end = min(end, cfg.steps)
            print(f"fitted the schedule to {cfg.fit_to_seconds:.0f} s: {cfg.steps} steps", flush=True)
        tokens_done += cfg.tokens_per_step
        window_loss += step_loss
        window_n += 1
        if step % cfg.log_every == 0 or step in (first, end):
            record = {
                "step": step, "loss": window_loss / window_n, "lr": lr, "grad_norm": grad_norm,
                "tokens": step * cfg.tokens_per_step, "tok_per_s": tokens_done / (time.monotonic() - t0),
                "rss_gb": _rss_gb(), "epoch": run.sampler.epochs(step * cfg.grad_accum), "time": time.time(),
            }
            run.log(record)
            window_loss, window_n = 0.0, 0
        due_time = time.monotonic() - last_ckpt >= cfg.checkpoint_every_s
        due_step = cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
        out_of_time = run.time_limit_s is not None and time.monotonic() - t0 >= run.time_limit_s
        if run.stop["signal"] is not None or out_of_time:
            end = step  # checkpoint below, then leave the loop
        if due_time or due_step or step == end:
            run.checkpoint(step)
            last_ckpt = time.monotonic()
    return record
