"""Training throughput and peak memory: our trainer vs transformers + peft, same config, same run.

    python benchmarks/train_bench.py [--dim 256 --layers 6 --heads 4 --vocab 8192 --seq-len 1024]
                                     [--lora-rank 8 | --lora-rank 0 (full)] [--steps 4] [--device cpu]

Each side runs in its own subprocess (so peak memory is its own): random weights of one Llama shape,
LoRA on all attention and MLP projections (or full training), gradient checkpointing, bf16 autocast,
AdamW, one sequence of --seq-len tokens per step. Prints tokens/s and peak memory (CPU: max RSS of
the process; CUDA: max allocated) as a table with ratios. Needs `pip install peft` (benchmark only).
With a GPU: --device cuda --dim 4096 --layers 32 --heads 32 --hidden 11008 --vocab 32016 --seq-len 16384.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_steps(step, steps: int, tokens: int, device: str) -> float:
    if device.startswith("cuda"):  # count training, not building the model (in float32, before bf16)
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (allocations, first-call overheads)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * tokens / (time.perf_counter() - t)


def worker_ours(a: argparse.Namespace) -> dict:
    from engine.config import ModelArgs
    from engine.model import Transformer, init_weights
    from engine.train.lora import LoRAConfig, add_lora
    from engine.train.trainer import TrainConfig, batch_loss, make_optimizer

    args = ModelArgs(dim=a.dim, n_layers=a.layers, n_heads=a.heads, n_kv_heads=a.heads, vocab_size=a.vocab,
                     hidden_dim=a.hidden, rope_theta=1e6, max_seq_len=a.seq_len)
    with torch.device(a.device):  # built where it trains: a 7B model built on the host takes minutes
        model = Transformer(args)
    if not a.device.startswith("cuda"):
        init_weights(model, seed=0)  # on a GPU the constructors' random init does for a speed test
    if a.lora_rank:
        model.to(torch.bfloat16)
        trainable = add_lora(model, LoRAConfig(rank=a.lora_rank, alpha=2 * a.lora_rank))
    else:
        trainable = dict(model.named_parameters())
    cfg = TrainConfig(steps=1, seq_len=a.seq_len, dtype="bf16", device=a.device, gradient_checkpointing=True)
    model.gradient_checkpointing = True
    model.train()
    opt = make_optimizer(trainable, cfg)
    batch = torch.randint(0, a.vocab, (1, a.seq_len + 1), generator=torch.Generator().manual_seed(0)).to(a.device)

    def step() -> None:
        batch_loss(model, batch, cfg).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"tok_s": _time_steps(step, a.steps, a.seq_len, a.device), "peak_mb": _peak_mb(a.device)}


def worker_hf(a: argparse.Namespace) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=a.dim, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                         num_key_value_heads=a.heads, vocab_size=a.vocab, intermediate_size=a.hidden,
                         max_position_embeddings=a.seq_len, rope_theta=1e6, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(a.device):
        model = LlamaForCausalLM(config)
    if a.lora_rank:
        from peft import LoraConfig, get_peft_model

        model.to(torch.bfloat16)
        model = get_peft_model(model, LoraConfig(
            r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        for p in model.parameters():
            if p.requires_grad:  # LoRA weights in float32, as ours
                p.data = p.data.float()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if a.lora_rank:
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    ids = torch.randint(0, a.vocab, (1, a.seq_len), generator=torch.Generator().manual_seed(0)).to(a.device)
    dev_type = torch.device(a.device).type

    def step() -> None:
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {"tok_s": _time_steps(step, a.steps, a.seq_len, a.device), "peak_mb": _peak_mb(a.device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=["ours", "hf"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps((worker_ours if a.worker == "ours" else worker_hf)(a)))
        return
    results = {}
    for side in ("ours", "hf"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", side]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{side} failed:\n{out.stderr[-2000:]}")
            return
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    mode = f"LoRA r={a.lora_rank}" if a.lora_rank else "full"
    print(f"\nd{a.dim} L{a.layers} h{a.heads} vocab {a.vocab}, seq {a.seq_len}, {mode}, bf16 autocast, "
          f"gradient checkpointing, {a.device}, {a.threads} threads, {a.steps} timed steps")
    print(f"{'':24}{'tokens/s':>12}{'peak MB':>12}")
    names = {"ours": "engine.train", "hf": "transformers + peft" if a.lora_rank else "transformers"}
    for side in ("ours", "hf"):
        r = results[side]
        print(f"{names[side]:24}{r['tok_s']:>12,.0f}{r['peak_mb']:>12,.0f}")
    o, h = results["ours"], results["hf"]
    print(f"{'ratio (ours / theirs)':24}{o['tok_s'] / h['tok_s']:>12.2f}{o['peak_mb'] / h['peak_mb']:>12.2f}")


if __name__ == "__main__":
    main()
