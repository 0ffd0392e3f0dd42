"""What a CPU decode step of the default model spends its time on: the eager step beside variants that
each pull one lever, in one process, interleaved round by round (medians of per-round ratios), with how
many greedy completions each variant leaves unchanged.

    .venv/bin/python benchmarks/decode_levers.py --contexts 1024 4096 --quant int8 int4 none

Variants (each against "eager": engine/cpu_step.py's step, and the KV cache dtype that kvCacheDtype
"auto" picks for it: float32 for the default model with int8/int4 weights on CPU; what the backend
decodes with where the native step cannot be built):
  native         the native step (engine/native_step.py) over a bfloat16 cache: what the local backend
                 decodes with where it builds (to bfloat16 precision, not the same bits)
  native, float32 KV  the native step over a float32 cache
  forward pass   the step through Transformer.forward with a bfloat16 cache: what decoded before
                 engine/cpu_step.py and float32 caches (the same bits)
  bfloat16 KV    the KV cache stored as bfloat16 (kvCacheDtype "bfloat16"): the one-query attention
                 converts the whole cache to float32 in every layer of every step (the same bits)
  unfused        q/k/v and gate/up as separate matmuls (engine/fused.py off): what fusing gained
  SDPA decode    one-query attention through PyTorch's fused bf16 SDPA kernel instead of float32
                 matrix-vector products (different rounding: greedy completions can change)
  1 thread       decode on one thread instead of --threads (no fork/join per op)
  compiled       the step compiled with torch.compile (engine/compiled_decode.py; its compile time is
                 printed, cold or from Inductor's on-disk cache as it happens)
  compiled, bfloat16 KV  the compiled step over a bfloat16 cache
No assertions: numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine import default_model_dir, native_step  # noqa: E402
from engine.backends.local import resolve_kv_dtype  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import LoadedModel, load_model  # noqa: E402
from engine.compiled_decode import CompiledStep  # noqa: E402
from engine.generate import DecodeFn, decode_step, forward_step, generate, prefill  # noqa: E402
from engine.kernels import reference  # noqa: E402
from engine.native_step import NativeStep  # noqa: E402
from engine.quant import spec_for_mode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import code_tokens  # noqa: E402

STEPS = 16  # decode steps per timing
COMPLETIONS = 8  # greedy completions per variant for the token check
NEW_TOKENS = 24


# A variant: a context manager around its runs, which may yield the decode step to use (None: the eager one).
Variant = Callable[[LoadedModel], contextlib.AbstractContextManager[DecodeFn | None]]


@contextlib.contextmanager
def unfused(loaded: LoadedModel) -> Iterator[None]:
    saved = [(layer.attention.fused_qkv, layer.feed_forward.fused_gate_up) for layer in loaded.model.layers]
    for layer in loaded.model.layers:
        layer.attention.fused_qkv = layer.feed_forward.fused_gate_up = None
    try:
        yield
    finally:
        for layer, (qkv, gate_up) in zip(loaded.model.layers, saved, strict=True):
            layer.attention.fused_qkv, layer.feed_forward.fused_gate_up = qkv, gate_up


@contextlib.contextmanager
def sdpa_decode(_: LoadedModel) -> Iterator[None]:
    original = reference._one_query_attention
    reference._one_query_attention = lambda q, k, v: F.scaled_dot_product_attention(  # type: ignore[assignment]
        q, k, v, enable_gqa=q.shape[1] != k.shape[1])
    try:
        yield
    finally:
        reference._one_query_attention = original  # type: ignore[assignment]


@contextlib.contextmanager
def one_thread(_: LoadedModel) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def eager_step(_: LoadedModel) -> Iterator[None]:
    yield


class Unserved(Exception):
    """A variant that does not apply to these weights (its rows are left out)."""


@contextlib.contextmanager
def native(loaded: LoadedModel) -> Iterator[DecodeFn]:
    if not native_step.serves(loaded.model, torch.device("cpu")):
        raise Unserved
    yield NativeStep(loaded.model).step


@contextlib.contextmanager
def forward_pass(loaded: LoadedModel) -> Iterator[DecodeFn]:
    yield functools.partial(forward_step, loaded.model)


_compiled: dict[tuple[int, torch.dtype], CompiledStep] = {}  # per model and KV dtype, built once


def compiled(kv_dtype: torch.dtype | None) -> Variant:
    @contextlib.contextmanager
    def run(loaded: LoadedModel) -> Iterator[DecodeFn]:
        dtype = kv_dtype or auto_kv_dtype(loaded)
        key = (id(loaded.model), dtype)
        if key not in _compiled:
            step = CompiledStep(loaded.model, dtype)
            print(f"compiled the step ({dtype}) in {step.build():.1f} s", file=sys.stderr, flush=True)
            _compiled[key] = step
        yield _compiled[key]

    return run


# name -> (context manager around the run, KV cache dtype: None = what kvCacheDtype "auto" picks)
VARIANTS: dict[str, tuple[Variant, torch.dtype | None]] = {
    "eager": (eager_step, None),
    "native": (native, torch.bfloat16),
    "native, float32 KV": (native, torch.float32),
    "forward pass": (forward_pass, torch.bfloat16),
    "bfloat16 KV": (eager_step, torch.bfloat16),
    "unfused": (unfused, None),
    "SDPA decode": (sdpa_decode, None),
    "1 thread": (one_thread, None),
    "compiled": (compiled(None), None),
    "compiled, bfloat16 KV": (compiled(torch.bfloat16), torch.bfloat16),
}


def auto_kv_dtype(loaded: LoadedModel) -> torch.dtype:
    return resolve_kv_dtype("auto", next(loaded.model.parameters()).dtype, torch.device("cpu"), loaded.args,
                            quantized=loaded.quantization is not None)


def step_ms(loaded: LoadedModel, cache: KVCache, ctx: int, step: DecodeFn | None) -> float:
    step = step or functools.partial(decode_step, loaded.model)
    cache.truncate(ctx)
    t0 = time.perf_counter()
    for i in range(STEPS):
        step(cache, 100 + i)
    return 1000 * (time.perf_counter() - t0) / STEPS


def completions(loaded: LoadedModel, prompt: list[int], kv_dtype: torch.dtype,
                step: DecodeFn | None = None) -> list[list[int]]:
    out = []
    for n in range(COMPLETIONS):
        cut = 64 + n * (len(prompt) - 64) // COMPLETIONS
        cache = KVCache(loaded.args, cut + NEW_TOKENS, "cpu", kv_dtype)
        out.append(generate(loaded.model, cache, prompt[:cut], NEW_TOKENS, stop_ids=set(), step=step).tokens)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--quant", nargs="+", default=["int8", "int4", "none"], choices=["none", "int8", "int4"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="the variants to run (eager always runs: the others are measured against it)")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    chosen = {name: VARIANTS[name] for name in VARIANTS if name == "eager" or name in opts.variants}
    rows = []
    for mode in opts.quant:
        loaded = load_model(default_model_dir(), dtype=torch.bfloat16, quantization=spec_for_mode(mode))
        eager_kv = auto_kv_dtype(loaded)
        variants = {}
        for name, (variant, kv_dtype) in chosen.items():
            try:
                with variant(loaded):
                    variants[name] = (variant, kv_dtype)
            except Unserved:
                print(f"{name}: not for {mode} weights", file=sys.stderr, flush=True)
        for ctx in opts.contexts:
            prompt = code_tokens(loaded, ctx)
            caches = {}
            for name, (_, kv_dtype) in variants.items():
                caches[name] = KVCache(loaded.args, ctx + STEPS, "cpu", kv_dtype or eager_kv)
                prefill(loaded.model, caches[name], prompt)
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(opts.rounds):
                for name, (variant, _) in variants.items():
                    with variant(loaded) as step:
                        times[name].append(step_ms(loaded, caches[name], ctx, step))
            eager_tokens = completions(loaded, prompt, eager_kv)
            for name, (variant, kv_dtype) in variants.items():
                with variant(loaded) as step:
                    same = sum(a == b for a, b in zip(completions(loaded, prompt, kv_dtype or eager_kv, step),
                                                      eager_tokens, strict=True))
                ratio = statistics.median(s / v for s, v in zip(times["eager"], times[name], strict=True))
                rows.append((mode, ctx, name, statistics.median(times[name]), ratio, same))
            print(f"done: {mode} ctx={ctx}", file=sys.stderr, flush=True)
    print(f"\nDefault model, CPU, {opts.threads} threads, one decode step after a prompt of `context` tokens "
          f"(median ms over {opts.rounds} rounds of {STEPS} steps, every variant once per round); speedup: "
          f"median of per-round eager/variant time ratios; identical: greedy completions ({NEW_TOKENS} "
          f"tokens, {COMPLETIONS} prompts) equal to eager's\n")
    print("| weights | context | variant | ms/step | speedup vs eager | identical |")
    print("|---|---:|---|---:|---:|---:|")
    for mode, ctx, name, ms, ratio, same in rows:
        print(f"| {mode} | {ctx} | {name} | {ms:.2f} | {ratio:.2f}x | {same}/{COMPLETIONS} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
