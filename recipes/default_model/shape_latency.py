"""CPU latency of candidate shapes for the default model (random weights, bf16): a 1,024-token prefill
and the mean of 12 decode steps, median of 4 runs, shapes interleaved so a noisy machine hits all alike.

    python recipes/default_model/shape_latency.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.cache import KVCache  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402

SHAPES = {"256x6": (256, 6, 4), "320x8": (320, 8, 5), "384x6": (384, 6, 6), "384x8": (384, 8, 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    models = {}
    for name, (dim, layers, heads) in SHAPES.items():
        args = ModelArgs(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=heads, vocab_size=8192,
                         multiple_of=16, max_seq_len=4096)
        model = Transformer(args)
        init_weights(model, seed=0)
        models[name] = model.to(torch.bfloat16).eval()
    prompt = torch.randint(7, 8192, (1, 1024))
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
    with torch.inference_mode():
        for _ in range(a.runs):
            for name, model in models.items():
                cache = KVCache(model.args, 1100, "cpu", torch.bfloat16)
                t0 = time.perf_counter()
                model(prompt, 0, cache)
                t1 = time.perf_counter()
                for i in range(12):
                    model(prompt[:, i : i + 1], 1024 + i, cache)
                times[name].append((t1 - t0, (time.perf_counter() - t1) / 12))
    print("| shape | parameters | bf16 MB | prefill 1K ms | decode ms/token |\n|---|---|---|---|---|")
    for name, model in models.items():
        n = model.num_parameters()
        prefill = statistics.median(t[0] for t in times[name]) * 1e3
        decode = statistics.median(t[1] for t in times[name]) * 1e3
        print(f"| {name} | {n / 1e6:.1f} M | {2 * n / 1e6:.1f} | {prefill:.0f} | {decode:.1f} |")


if __name__ == "__main__":
    main()
