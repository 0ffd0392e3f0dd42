"""KV cache memory, bf16 against int8, measured; and what the int8 cache costs a CPU decode step.

    .venv/bin/python benchmarks/memory_table.py                      # default contexts 4096 16384
    .venv/bin/python benchmarks/memory_table.py --contexts 4096 --steps 16 --threads 2

Prints three tables, all from this run:
  1. bytes per KV token (K and V of one position, all layers): `KVCache.nbytes() / capacity` of real
     caches, for the default model and Code Llama 7B's shape (32 layers, 32 heads of 128), and what a
     16K / 100K context takes, with the context that fits beside 7B weights in 24 GB;
  2. one layer's decode attention (one query over the cache) on CPU: bf16 cache against int8;
  3. decode tok/s of the default model after a prompt of each context, bf16 KV against int8 KV, the
     same prompt and the same generated tokens (greedy), interleaved repeats, medians.
No assertions: numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import default_model_dir  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import load_model, read_args  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.generate import decode_step, prefill  # noqa: E402
from engine.kernels import reference  # noqa: E402

CODELLAMA_7B = ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, vocab_size=32016, rope_theta=1e6)
PARAMS_7B = 6.74e9
GPU_BUDGET = 24e9  # bytes: a consumer GPU
# Weight bytes per parameter: bf16; int8 with a float scale per output channel; int4 in groups of 128
# with an fp16 scale (the usual weight-only layouts; the measured ones are the weight helper's table).
WEIGHT_BYTES = {"bf16": 2.0, "int8": 1.0, "int4 (g128)": 0.5 + 2 / 128}


def bytes_per_token(args: ModelArgs, dtype: torch.dtype) -> float:
    """Measured on a real cache: its bytes over its positions."""
    cache = KVCache(args, 256, "cpu", dtype)
    return cache.nbytes() / cache.capacity


def memory_table(default_args: ModelArgs) -> str:
    lines = ["| model | KV cache | bytes per token | 16K tokens | 100K tokens | int8 / bf16 |", "|---|---|---:|---:|---:|---:|"]
    per_token: dict[str, dict[str, float]] = {}
    for name, args in (("default (8 layers, 5 heads of 64)", default_args),
                       ("Code Llama 7B shape (32 layers, 32 heads of 128)", CODELLAMA_7B)):
        per_token[name] = {k: bytes_per_token(args, dt) for k, dt in (("bf16", torch.bfloat16), ("int8", torch.int8))}
        for kind, b in per_token[name].items():
            ratio = f"{b / per_token[name]['bf16']:.3f}" if kind == "int8" else ""
            lines.append(f"| {name} | {kind} | {b:,.0f} | {b * 16384 / 2**30:.2f} GiB | {b * 1e5 / 2**30:.2f} GiB | {ratio} |")
    seven = per_token["Code Llama 7B shape (32 layers, 32 heads of 128)"]
    lines += ["", "Code Llama 7B in 24 GB (weights by parameter count and layout, KV measured above; activations "
              "and the CUDA context not counted):", "",
              "| weights | weight GB | KV cache | max context in 24 GB | 100K tokens total |", "|---|---:|---|---:|---:|"]
    for wname, wb in WEIGHT_BYTES.items():
        weights = PARAMS_7B * wb
        for kind, b in seven.items():
            fits = max(0.0, (GPU_BUDGET - weights) / b)
            lines.append(f"| {wname} | {weights / 1e9:.1f} | {kind} | {fits:,.0f} | {(weights + b * 1e5) / 1e9:.1f} GB |")
    return "\n".join(lines)


def elapsed_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def attention_table(contexts: list[int], default_args: ModelArgs, repeats: int) -> str:
    lines = ["| shape | keys | bf16 cache ms | int8 cache ms | int8 / bf16 time |", "|---|---:|---:|---:|---:|"]
    gen = torch.Generator().manual_seed(0)
    for name, args in (("default", default_args), ("7B shape", CODELLAMA_7B)):
        for n in contexts:
            caches = {dt: KVCache(args, n, "cpu", dt) for dt in (torch.bfloat16, torch.int8)}
            kv = torch.randn(1, args.n_kv_heads, n, args.head_dim, generator=gen)
            for cache in caches.values():
                cache.write(0, 0, kv, kv.flip(2))
            q = torch.randn(1, args.n_heads, 1, args.head_dim, generator=gen).to(torch.bfloat16)
            views = {dt: c.view(0, n) for dt, c in caches.items()}
            ms = {dt: [] for dt in caches}
            for _ in range(repeats):  # interleaved, so both see the same machine load
                for dt, (k, v) in views.items():
                    ms[dt].append(elapsed_ms(lambda q=q, k=k, v=v: reference.attention(q, k, v, None, False)))
            bf, i8 = statistics.median(ms[torch.bfloat16]), statistics.median(ms[torch.int8])
            lines.append(f"| {name} | {n} | {bf:.2f} | {i8:.2f} | {i8 / bf:.2f} |")
    return "\n".join(lines)


def decode_table(contexts: list[int], steps: int, repeats: int) -> str:
    loaded = load_model(default_model_dir(), dtype=torch.bfloat16)
    model, tok = loaded.model, loaded.tokenizer
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(Path(os.__file__).parent.glob("*.py")))
    ids = [tok.bos_id] + tok.encode_infill(text)
    lines = ["| context | bf16 KV tok/s | int8 KV tok/s | int8 / bf16 | KV MiB bf16 | KV MiB int8 | same tokens |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for n in contexts:
        prompt = ids[:n]
        caches = {dt: KVCache(loaded.args, n + steps + 8, "cpu", dt) for dt in (torch.bfloat16, torch.int8)}
        first = {dt: prefill(model, c, prompt) for dt, c in caches.items()}
        tokens: dict[torch.dtype, list[int]] = {}
        rates: dict[torch.dtype, list[float]] = {dt: [] for dt in caches}
        for _ in range(repeats):
            for dt, cache in caches.items():
                cache.truncate(n)
                logits, out = first[dt], []
                t0 = time.perf_counter()
                for _ in range(steps):
                    out.append(int(torch.argmax(logits)))
                    logits = decode_step(model, cache, out[-1])
                rates[dt].append(steps / (time.perf_counter() - t0))
                tokens[dt] = out
        bf, i8 = statistics.median(rates[torch.bfloat16]), statistics.median(rates[torch.int8])
        mib = {dt: c.nbytes() / 2**20 for dt, c in caches.items()}
        same = "yes" if tokens[torch.bfloat16] == tokens[torch.int8] else "no"
        lines.append(f"| {n} | {bf:.1f} | {i8:.1f} | {i8 / bf:.2f} | {mib[torch.bfloat16]:.1f} | {mib[torch.int8]:.1f} | {same} |")
        print(f"done: decode @ {n}", file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    default_args, _ = read_args(default_model_dir())
    print(f"CPU, {opts.threads} threads, torch {torch.__version__}; int8 KV = int8 K/V + a float32 scale per "
          "token and head\n")
    print("### Bytes per KV token (measured: KVCache.nbytes() / capacity)\n")
    print(memory_table(default_args))
    print(f"\n### One layer's decode attention on CPU (one query; median of {opts.repeats}, interleaved)\n")
    print(attention_table(opts.contexts, default_args, opts.repeats))
    print(f"\n### Default model decode on CPU, bf16 model ({opts.steps} greedy tokens after a prompt of real code; "
          f"median of {opts.repeats}, interleaved)\n")
    print(decode_table(opts.contexts, opts.steps, opts.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
