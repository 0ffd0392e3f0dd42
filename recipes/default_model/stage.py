"""Steps 3-5 of the default model's recipe: pretraining, LCFT and export, each resumable.

    python recipes/default_model/stage.py pretrain --run /work/runs/default [--steps N] [--resume]
    python recipes/default_model/stage.py lcft     --run /work/runs/default [--steps N] [--resume]
    python recipes/default_model/stage.py export   --run /work/runs/default --out models/default

`pretrain` starts from random weights (rope base 1e4, 1,024-token windows); `lcft` starts from the
newest pretraining checkpoint with the rope base raised to 1e6 and 4x longer windows (4,096), as
Code Llama's long-context fine-tuning does; `export` writes the newest checkpoint of the latest stage
in the engine's HF layout (bf16). Every stage checkpoints every ~10 minutes into RUN/<stage>/ and
continues from there with --resume.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.config import ModelArgs  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402
from engine.train.data import DataConfig, WindowSampler, cached_stream, read_jsonl_files  # noqa: E402
from engine.train.trainer import TrainConfig, latest_checkpoint, train  # noqa: E402

# The shape (see MODEL_CARD.md for why): ~8.9 M parameters, 17.9 MB in bf16.
SHAPE = dict(dim=256, n_layers=6, n_heads=4, n_kv_heads=4, vocab_size=8192, multiple_of=16,
             norm_eps=1e-5)
STAGES = {
    "pretrain": dict(seq_len=1024, rope_theta=1e4, micro_batch=4, grad_accum=1, lr=2e-3, warmup=60,
                     max_chars=8_000_000),
    "lcft": dict(seq_len=4096, rope_theta=1e6, micro_batch=1, grad_accum=1, lr=5e-4, warmup=2,
                 max_chars=1_500_000),
}


def load_weights_from(model: Transformer, ckpt_dir: Path) -> None:
    state = torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["params"], strict=True)


def sample_files(files: list, max_chars: int, seed: int) -> list:
    """A seeded random subset of whole files, about max_chars in all, kept in corpus order (so files of
    one package stay together). Tokenising the whole corpus costs more CPU than one run can train on."""
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    keep, total = set(), 0
    for i in order:
        if total >= max_chars:
            break
        keep.add(i)
        total += len(files[i].text)
    return [f for i, f in enumerate(files) if i in keep]


def stage_data(stage: str, run: Path, max_chars: int = 0):
    st = STAGES[stage]
    files = read_jsonl_files(run / "corpus" / "train.jsonl")
    files = sample_files(files, max_chars or st["max_chars"], seed=0)
    dcfg = DataConfig(seq_len=st["seq_len"], fim_rate=0.9, spm_rate=0.5, seed=0)
    return cached_stream(files, run / "tokenizer.model", dcfg, run / "cache")


def run_stage(stage: str, run: Path, steps: int, resume: bool, threads: int, max_chars: int,
              max_minutes: float | None) -> None:
    st = STAGES[stage]
    t = time.time()
    stream, meta = stage_data(stage, run, max_chars)
    print(f"data {meta['data_hash']}: {meta['n_tokens']:,} tokens, docs {meta['docs']} ({time.time() - t:.0f}s)",
          flush=True)
    args = ModelArgs(**SHAPE, rope_theta=st["rope_theta"], max_seq_len=st["seq_len"])
    model = Transformer(args)
    init_weights(model, std=0.02, seed=0)
    if stage == "lcft":
        src = latest_checkpoint(run / "pretrain")
        if src is None:
            raise SystemExit("lcft needs a pretraining checkpoint")
        load_weights_from(model, src)
        print(f"starting from {src}", flush=True)
    print(f"model: {model.num_parameters() / 1e6:.2f} M parameters, {args}", flush=True)
    cfg = TrainConfig(
        steps=steps, seq_len=st["seq_len"], micro_batch=st["micro_batch"], grad_accum=st["grad_accum"],
        lr=st["lr"], warmup_steps=st["warmup"], min_lr_ratio=0.1, weight_decay=0.1, seed=0, dtype="bf16",
        gradient_checkpointing=False, checkpoint_every_s=600, log_every=10, threads=threads,
        extra={"stage": stage, "data_hash": meta["data_hash"], "model_args": args.to_dict()},
    )
    sampler = WindowSampler(stream, cfg.seq_len, cfg.micro_batch, cfg.seed)
    train(model, sampler, cfg, run / stage, resume=resume,
          time_limit_s=max_minutes * 60 if max_minutes else None)


def export(run: Path, out: Path) -> None:
    from engine.checkpoints import save_hf_checkpoint

    for stage in ("lcft", "pretrain"):
        ckpt = latest_checkpoint(run / stage)
        if ckpt is not None:
            break
    else:
        raise SystemExit(f"no checkpoint under {run}")
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    st = STAGES[stage]
    args = ModelArgs(**SHAPE, rope_theta=st["rope_theta"], max_seq_len=st["seq_len"])
    model = Transformer(args)
    model.load_state_dict(state["params"], strict=True)
    save_hf_checkpoint(model, run / "tokenizer.model", out, dtype=torch.bfloat16)
    (out / "training_state.json").write_text(json.dumps({"stage": stage, "checkpoint": str(ckpt),
                                                        "step": state["step"]}, indent=1))
    print(f"exported {ckpt} ({stage}, step {state['step']}) to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["pretrain", "lcft", "export"])
    ap.add_argument("--run", type=Path, default=Path("/work/runs/default"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--max-chars", type=int, default=0, help="train on a random subset of files (default per stage)")
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    a = ap.parse_args()
    if a.stage == "export":
        export(a.run, a.out)
    else:
        run_stage(a.stage, a.run, a.steps, a.resume, a.threads, a.max_chars, a.max_minutes)


if __name__ == "__main__":
    main()
