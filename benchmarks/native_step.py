"""Completions through the local backend with the native decode step (engine/native_step.py) and with the
PyTorch step it replaces, side by side, for each weight format on CPU.

Each backend runs as `load_local_backend` sets it up: native (no speculation; KV cache bfloat16), and
with CODELLAMA_NATIVE_DECODE=0 eager (engine/cpu_step.py, prompt-lookup speculation for bfloat16 weights,
the float32 cache "auto" picks for quantized ones). Prompts: cursors at line starts (after the
indentation) in this repository's own engine and server sources, 4,000 characters before and 1,500
after; each request is asked cold (caches cleared) and then as a keystroke (one more character typed,
the cache warm), alternating between the two backends. Printed per weight format: p50 of the cold
request and of the keystroke, decode ms per generated token, and how many suggestions are the same.

    .venv/bin/python benchmarks/native_step.py --quant none int8 int4 --threads 2

No assertions: numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from engine import CompletionRequest, load_local_backend, native_step  # noqa: E402
from engine.backends.local import LocalBackend  # noqa: E402

SOURCES = ["engine/generate.py", "engine/cache.py", "engine/backends/local.py", "lsp_server/server.py",
           "lsp_server/completion.py"]
PREFIX_CHARS, SUFFIX_CHARS = 4000, 1500


def requests(n: int, max_new_tokens: int, seed: int = 0) -> list[CompletionRequest]:
    """n cursors after the indentation of a line, spread over SOURCES."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = (REPO / SOURCES[i % len(SOURCES)]).read_text(encoding="utf-8")
        start = text.index("\n", rng.randrange(PREFIX_CHARS // 2, len(text) - SUFFIX_CHARS)) + 1
        end = text.index("\n", start)
        cut = start + len(text[start:end]) - len(text[start:end].lstrip())
        out.append(CompletionRequest(prefix=text[max(0, cut - PREFIX_CHARS):cut], suffix=text[end:end + SUFFIX_CHARS],
                                     max_new_tokens=max_new_tokens))
    return out


def backends(quant: str) -> dict[str, LocalBackend]:
    made = {}
    for name, env in (("native", "1"), ("eager", "0")):
        os.environ[native_step.DISABLE_ENV] = env
        made[name] = load_local_backend(device="cpu", dtype="bfloat16", quantization=quant)
    os.environ.pop(native_step.DISABLE_ENV)
    assert made["native"].decode_step_kind == "native", "the native step could not be built (see the log)"
    return made


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", nargs="+", default=["none", "int8", "int4"], choices=["none", "int8", "int4"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    opts = ap.parse_args(argv)
    torch.set_num_threads(opts.threads)
    lines = [f"Default model, CPU, {opts.threads} thread(s), {opts.requests} cursors in this repository's sources, "
             f"up to {opts.max_new_tokens} new tokens; p50 ms; eager = the PyTorch step with the backend's "
             "defaults (speculation for bfloat16 weights)", "",
             "| weights | eager: cold / keystroke | native: cold / keystroke | cold speedup | keystroke speedup "
             "| decode ms/token eager, native | same suggestions |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for quant in opts.quant:
        made = backends(quant)
        stats: dict[str, dict[str, list[float]]] = {n: {"cold": [], "key": [], "decode": [], "tokens": []} for n in made}
        texts: dict[str, list[str]] = {n: [] for n in made}
        for req in requests(opts.requests, opts.max_new_tokens):
            typed = CompletionRequest(prefix=req.prefix + "x", suffix=req.suffix, max_new_tokens=req.max_new_tokens)
            for name, backend in made.items():
                backend.pool.clear()
                for kind, r in (("cold", req), ("key", typed)):
                    start = time.perf_counter()
                    result = backend.complete(r)
                    stats[name][kind].append(1000 * (time.perf_counter() - start))
                    assert result.timings is not None
                    stats[name]["decode"].append(result.timings.decode_ms)
                    stats[name]["tokens"].append(result.timings.generated_tokens)
                    texts[name].append(result.text)
        p50 = {n: {k: statistics.median(stats[n][k]) for k in ("cold", "key")} for n in made}
        per_token = {n: sum(stats[n]["decode"]) / max(1, sum(stats[n]["tokens"])) for n in made}
        same = sum(a == b for a, b in zip(texts["eager"], texts["native"], strict=True))
        lines.append(f"| {quant} | {p50['eager']['cold']:.0f} / {p50['eager']['key']:.0f} | "
                     f"{p50['native']['cold']:.0f} / {p50['native']['key']:.0f} | "
                     f"{p50['eager']['cold'] / p50['native']['cold']:.2f}x | {p50['eager']['key'] / p50['native']['key']:.2f}x "
                     f"| {per_token['eager']:.2f}, {per_token['native']:.2f} | {same}/{len(texts['eager'])} |")
        print(f"done: {quant}", file=sys.stderr, flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    return text


if __name__ == "__main__":
    main()
