"""CPU latency of candidate shapes for the default model (random weights, bf16, or int8/int4 weights with
--quant): a 1,024-token prefill and the mean of 12 decode steps, median of 4 runs, shapes interleaved so
a noisy machine hits all alike. "single line" is what a one-line suggestion after a 1K-token prompt
costs: the prefill and 12 decode steps (issue 15's limit: 300 ms at p50 on two cores). Decode steps run
as the local backend runs them: the native step where it serves (engine/native_step.py), else the
eager one; --eager forces the eager one.

    python recipes/default_model/shape_latency.py [--threads 2] [--quant int8] [--eager]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stage import SHAPES  # noqa: E402  (every shape the recipe can train)

from engine import native_step  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.generate import DecodeFn, decode_step, prefill  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402
from engine.quant import quantize_model, spec_for_mode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--quant", choices=("none", "int8", "int4"), default="none")
    ap.add_argument("--eager", action="store_true", help="decode with the eager step even where the native one serves")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    models: dict[str, Transformer] = {}
    spec = spec_for_mode(a.quant)
    sizes: dict[str, int] = {}
    for name, shape in SHAPES.items():
        model = Transformer(ModelArgs(**shape, max_seq_len=4096))
        init_weights(model, seed=0)
        sizes[name] = model.num_parameters()
        bf16 = model.to(torch.bfloat16).eval()
        models[name] = quantize_model(bf16, spec) if spec is not None else bf16  # type: ignore[assignment]
    steps: dict[str, DecodeFn] = {}
    kinds = set()
    for name, model in models.items():
        native = not a.eager and native_step.serves(model, torch.device("cpu"))
        steps[name] = native_step.NativeStep(model).step if native else (lambda c, t, m=model: decode_step(m, c, t))
        kinds.add("native" if native else "eager")
    prompt = torch.randint(7, 8192, (1024,)).tolist()
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
    with torch.inference_mode():
        for _ in range(a.runs):
            for name, model in models.items():
                cache = KVCache(model.args, 1100, "cpu", torch.bfloat16)
                t0 = time.perf_counter()
                prefill(model, cache, prompt)
                t1 = time.perf_counter()
                for i in range(12):
                    steps[name](cache, prompt[i])
                times[name].append((t1 - t0, (time.perf_counter() - t1) / 12))
    print(f"weights: {a.quant}, {a.threads} threads, decode steps: {' and '.join(sorted(kinds))}\n")
    print("| shape | parameters | prefill 1K ms | decode ms/token | single line ms |\n|---|---|---|---|---|")
    for name in models:
        n = sizes[name]
        prefill_ms = statistics.median(t[0] for t in times[name]) * 1e3
        decode_ms = statistics.median(t[1] for t in times[name]) * 1e3
        print(f"| {name} | {n / 1e6:.1f} M | {prefill_ms:.0f} | {decode_ms:.1f} | {prefill_ms + 12 * decode_ms:.0f} |")


if __name__ == "__main__":
    main()
