"""`python -m engine train`: adapt a model to one or more repositories (LoRA or full fine-tuning),
or pretrain one from scratch (`--from-scratch`: the model directory gives the shape and tokenizer).

    python -m engine train --model models/default --repo ~/src/myproject --out adapters/myproject \\
        --seq-len 4096 --steps 200 --lora-rank 8

OUT receives `adapter.safetensors` + `adapter.json` (or, with --merge or full fine-tuning, a model
directory in the input's layout), `heldout.json` (files kept out of training, for `engine eval`),
metrics.jsonl, loss.png, and run/ with the resumable checkpoints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="adapt a model to repositories (LCFT with LoRA) or pretrain one",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model directory (Meta or HF layout)")
    p.add_argument("--repo", action="append", default=[], help="repository to train on (repeatable)")
    p.add_argument("--data-jsonl", action="append", default=[],
                   help='training files as JSON lines {"repo", "path", "text"} (repeatable)')
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seq-len", type=int, default=16_384)
    p.add_argument("--rope-theta", type=float, default=1e6)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-tokens", type=int, default=0,
                   help="tokens per optimiser step (gradient accumulation makes up the difference); "
                        "default one micro-batch")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward pass")
    p.add_argument("--lora-rank", type=int, default=8, help="0 = full fine-tuning")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", default="wq,wk,wv,wo,w1,w2,w3")
    p.add_argument("--train-embeddings", action="store_true", help="also train embeddings and output (LongLoRA)")
    p.add_argument("--train-norms", action="store_true", help="also train the RMSNorm weights (LongLoRA)")
    p.add_argument("--from-scratch", action="store_true", help="random initialisation (pretraining)")
    p.add_argument("--fim-rate", type=float, default=0.9)
    p.add_argument("--spm-rate", type=float, default=0.5)
    p.add_argument("--heldout-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="autocast dtype")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint-every", type=float, default=600.0, help="seconds between checkpoints")
    p.add_argument("--checkpoint-every-steps", type=int, default=0, help="steps between checkpoints (0: by time)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--merge", action="store_true", help="write the merged model instead of the adapter")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/run")
    p.add_argument("--cache-dir", default=None, help="token cache (default OUT/cache)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from engine.atomic import write_text_atomic
    from engine.checkpoints import load_model, save_hf_checkpoint, save_meta_checkpoint
    from engine.model import init_weights
    from engine.train.data import DataConfig, WindowSampler, cached_stream, read_jsonl_files
    from engine.train.lora import LoRAConfig, add_lora, merge_lora, save_adapter
    from engine.train.sources import collect_repo, dedupe, split_heldout
    from engine.train.trainer import TrainConfig, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for repo in args.repo:
        files += collect_repo(repo)
    for path in args.data_jsonl:
        files += read_jsonl_files(path)
    files = list(dedupe(files))
    if not files:
        print("no source files to train on (check --repo / --data-jsonl)", file=sys.stderr)
        return 2
    train_files, held = split_heldout(files, args.heldout_fraction, args.seed)
    write_text_atomic(out / "heldout.json", json.dumps(
        [{"repo": f.repo, "path": f.path} for f in held], indent=1) + "\n")
    print(f"{len(train_files)} training files, {len(held)} held out", flush=True)

    # fp32 master weights for full training; a LoRA base stays frozen in bf16 to halve its memory.
    lora = args.lora_rank > 0 and not args.from_scratch
    base_dtype = torch.bfloat16 if lora and args.dtype == "bf16" else torch.float32
    loaded = load_model(args.model, device=args.device, dtype=base_dtype)
    model = loaded.model
    if args.from_scratch:
        init_weights(model, std=0.02, seed=args.seed)
    model.args.rope_theta = args.rope_theta
    model.args.max_seq_len = args.seq_len

    dcfg = DataConfig(seq_len=args.seq_len, fim_rate=args.fim_rate, spm_rate=args.spm_rate, seed=args.seed)
    stream, meta = cached_stream(train_files, loaded.tokenizer.path, dcfg, args.cache_dir or out / "cache")
    print(f"data {meta['data_hash']}: {meta['n_tokens']:,} tokens, documents {meta['docs']}", flush=True)

    lcfg = LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha, targets=tuple(args.lora_targets.split(",")),
                      train_embeddings=args.train_embeddings, train_norms=args.train_norms)
    trainable = add_lora(model, lcfg, seed=args.seed) if lora else None
    per_micro = args.micro_batch * args.seq_len
    cfg = TrainConfig(
        steps=args.steps, seq_len=args.seq_len, micro_batch=args.micro_batch,
        grad_accum=max(1, args.batch_tokens // per_micro) if args.batch_tokens else 1,
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, seed=args.seed, dtype=args.dtype, device=args.device,
        gradient_checkpointing=args.gradient_checkpointing, checkpoint_every_s=args.checkpoint_every,
        checkpoint_every_steps=args.checkpoint_every_steps,
        threads=args.threads, extra={"data_hash": meta["data_hash"], "base_model": str(loaded.path)},
    )
    n_train = sum(p.numel() for p in (trainable or dict(model.named_parameters())).values())
    print(f"training {n_train:,} parameters ({'LoRA r=' + str(args.lora_rank) if lora else 'full'}), "
          f"{cfg.tokens_per_step:,} tokens per step", flush=True)
    sampler = WindowSampler(stream, cfg.seq_len, cfg.micro_batch, cfg.seed)
    record = train(model, sampler, cfg, out / "run", resume=args.resume, trainable=trainable)
    for name in ("metrics.jsonl", "loss.png"):
        if (out / "run" / name).is_file():
            shutil.copy(out / "run" / name, out / name)
    if "signal" in record:  # stopped early: no adapter or model that claims all the steps
        print(f"stopped by signal {record['signal']} with a checkpoint in {out / 'run'}: "
              "run the same command with --resume to finish", file=sys.stderr, flush=True)
        return 128 + int(record["signal"])

    info = {"base_model": str(loaded.path), "rope_theta": args.rope_theta, "seq_len": args.seq_len,
            "data_hash": meta["data_hash"], "steps": args.steps, "tokens": args.steps * cfg.tokens_per_step}
    if lora and not args.merge:
        save_adapter(model, out, lcfg, info)
        print(f"adapter written to {out}")
        return 0
    if lora:
        merge_lora(model)
    save = save_meta_checkpoint if loaded.layout == "meta" else save_hf_checkpoint
    save(model, loaded.tokenizer.path, out / "model", dtype=torch.bfloat16,
         extra_files={"training.json": json.dumps(info, indent=1) + "\n"})
    print(f"model written to {out / 'model'}")
    return 0
