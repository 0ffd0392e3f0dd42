"""Keystrokes through the local backend with a bfloat16 and a float32 KV cache, side by side: what
kvCacheDtype "auto" should pick for the default model on CPU (engine/backends/local.py, resolve_kv_dtype).

A real file (pygls's lsp/_base_client.py from the venv, as editing_session.py uses) is cut in the middle:
the prompt is its prefix up to the cursor (a fixed start, so typing only appends) and the 2,000
characters after it. Each round types one character at the cursor and asks for 16 tokens with the
backend's defaults (its decode step, speculation where it has it), once per cache dtype, interleaved; after a warm-up
request per backend every keystroke reuses its cache's prompt. Printed: p50 of the whole request, its
prefill and its decode, per weight format and cache dtype, and float32's speedup over bfloat16.

    .venv/bin/python benchmarks/kv_dtype.py --quant none int8 --threads 1 2

No assertions: numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import CompletionRequest, load_local_backend  # noqa: E402

SOURCE = "pygls/lsp/_base_client.py"
PREFIX_CHARS, SUFFIX_CHARS = 6000, 2000


def source_text() -> str:
    import pygls

    return (Path(pygls.__file__).parent.parent / SOURCE).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quant", nargs="+", default=["none", "int8"], choices=["none", "int8", "int4"])
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--keystrokes", type=int, default=30)
    opts = ap.parse_args(argv)
    src = source_text()
    cut = len(src) // 2
    rows = []
    for threads in opts.threads:
        torch.set_num_threads(threads)
        for quant in opts.quant:
            backends = {kv: load_local_backend(device="cpu", dtype="bfloat16", quantization=quant, kv_cache_dtype=kv)
                        for kv in ("bfloat16", "float32")}
            prefix = src[cut - PREFIX_CHARS : cut]

            def request(text: str) -> CompletionRequest:
                return CompletionRequest(prefix=text, suffix=src[cut : cut + SUFFIX_CHARS], max_new_tokens=16)

            times: dict[str, dict[str, list[float]]] = {kv: {"total": [], "prefill": [], "decode": []} for kv in backends}
            for backend in backends.values():
                backend.complete(request(prefix))
            for i in range(opts.keystrokes):
                prefix += "abcdefghij"[i % 10]
                for kv, backend in backends.items():
                    start = time.perf_counter()
                    result = backend.complete(request(prefix))
                    times[kv]["total"].append(1000 * (time.perf_counter() - start))
                    assert result.timings is not None
                    times[kv]["prefill"].append(result.timings.prefill_ms)
                    times[kv]["decode"].append(result.timings.decode_ms)
            med = {kv: {k: statistics.median(v) for k, v in t.items()} for kv, t in times.items()}
            spec = "on" if backends["bfloat16"].speculation is not None else "off"
            spec += f" ({backends['bfloat16'].decode_step_kind} step)"
            ratio = statistics.median(b / f for b, f in zip(times["bfloat16"]["total"], times["float32"]["total"],
                                                            strict=True))
            rows.append((threads, quant, spec, med, ratio))
            print(f"done: {quant}, {threads} thread(s)", file=sys.stderr, flush=True)
    lines = [f"Default model, CPU, one character typed per request at the middle of {SOURCE}, 16 new tokens, "
             f"{opts.keystrokes} keystrokes per backend, interleaved; p50 ms (request / prefill / decode)", "",
             "| threads | weights | speculation | bfloat16 KV | float32 KV | float32 speedup (median of pairs) |",
             "|---:|---|---|---:|---:|---:|"]
    for threads, quant, spec, med, ratio in rows:
        cells = [f"{med[kv]['total']:.0f} / {med[kv]['prefill']:.0f} / {med[kv]['decode']:.0f}" for kv in ("bfloat16", "float32")]
        lines.append(f"| {threads} | {quant} | {spec} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    text = "\n".join(lines)
    print("\n" + text)
    return text


if __name__ == "__main__":
    main()
