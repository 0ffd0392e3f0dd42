"""The served decode path on a GPU: LocalBackend.complete (what the language server calls for every
suggestion) against the engine's raw decode loops, on the same 7B-shaped random bf16 weights, in one run.

    python benchmarks/served_bench.py --out results/served.md     # on a CUDA machine (about a minute)
    python benchmarks/served_bench.py --smoke --out /tmp/s.md     # tiny model on CPU: checks the script runs

The model has Code Llama 7B's shape with the default model's tokenizer (8,192 pieces, so the output
layer is smaller than 7B's 32,016: 0.5 % of the weights' bytes); the stop ids' output rows are zeroed so
random weights never end a completion early. Measured at --context prompt tokens (default 16384):
- raw decode tok/s: gpu_bench.py's loops on a KVCache of its own: engine.cuda_graph.DecodeGraph (its
  "CUDA graph" row) and engine.generate.decode_step (eager), greedy, one host sync a token;
- served decode tok/s: LocalBackend.complete with cudaGraphs on and off, a repeated request (its prompt
  cached: the decode dominates); tokens after the first over the Timings' decode_ms;
- a warm keystroke: one character typed at the end of the cached prompt, wall time from complete() to
  its first streamed text (tokenizing the whole prompt included), with the engine's first_token_ms.
Issue 17's acceptance: served with graphs >= 80 % of the raw CUDA-graph loop, keystroke < 30 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_bench import CODELLAMA_7B, TINY, Clock, build_model, fill_defaults, greedy_decode, start  # noqa: E402

from engine.backends.base import CompletionRequest  # noqa: E402
from engine.backends.local import LocalBackend  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import LoadedModel  # noqa: E402
from engine.generate import decode_step, prefill  # noqa: E402
from engine.paths import default_model_dir  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402


def code_text(tok: Tokenizer, tokens: int) -> str:
    """Python source of about `tokens` tokens (a few hundred functions)."""
    def block(i: int) -> str:
        return (f"def scale_{i}(values, factor={i % 17}):\n    result = []\n    for value in values:\n"
                f"        result.append(value * factor + {i})\n    return result\n\n\n")

    blocks: list[str] = []
    count = 0
    while count < tokens:  # blocks tokenize about as they do alone: they start and end with a newline
        blocks.append(block(len(blocks)))
        count += len(tok.encode_infill(blocks[-1]))
    return "".join(blocks)


def served_model(opts: argparse.Namespace, tok: Tokenizer) -> LoadedModel:
    args = dataclasses.replace(opts.args, vocab_size=tok.vocab_size)
    model = build_model(args, opts.device, opts.dtype)
    with torch.no_grad():
        model.output.weight[sorted(tok.stop_ids())] = 0.0  # logit 0: never the largest of 8K random ones
    return LoadedModel(model=model, tokenizer=tok, args=args, path=Path("random-7b-shape"), layout="hf")


def raw_tok_s(loaded: LoadedModel, prompt: list[int], steps: int, graph: bool, clock: Clock) -> float:
    """gpu_bench.py's decode loop over `prompt` on a cache of its own."""
    model = loaded.model
    cache = KVCache(loaded.args, len(prompt) + steps + 8, next(model.parameters()).device, model.output.weight.dtype)
    logits = prefill(model, cache, prompt)
    if graph:
        from engine.cuda_graph import DecodeGraph

        step = DecodeGraph(model, cache).decode
    else:
        def step(token: int) -> torch.Tensor:
            return decode_step(model, cache, token)
    greedy_decode(step, logits, 2)  # compiles, captures
    best = float("inf")
    for _ in range(2):
        cache.truncate(len(prompt))
        best = min(best, clock.time(lambda: greedy_decode(step, logits, steps)))
    return steps / best


def served_tok_s(backend: LocalBackend, request: CompletionRequest) -> tuple[float, int]:
    """Decode tok/s of a repeated request (best of three after a first that prefills and captures)."""
    backend.complete(request)
    best = 0.0
    for _ in range(3):
        timings = backend.complete(request).timings
        assert timings is not None and timings.generated_tokens == request.max_new_tokens, timings
        best = max(best, (timings.generated_tokens - 1) / (timings.decode_ms / 1000))
        cached = timings.cached_tokens
    return best, cached


def keystrokes(backend: LocalBackend, text: str, count: int) -> tuple[list[float], list[float], int]:
    """Type `count` characters at the end of `text` (its prompt cached): per keystroke, the wall time
    from complete() to the first streamed text and the engine's first_token_ms; the tokens recomputed."""
    backend.complete(CompletionRequest(prefix=text, suffix="\n", max_new_tokens=4, speculative=False))
    wall, engine = [], []
    recomputed = 0
    for i in range(count):
        first: list[float] = []

        def on_text(_text: str, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter())

        request = CompletionRequest(prefix=text + "x" * (i + 1), suffix="\n", max_new_tokens=8, speculative=False)
        t0 = time.perf_counter()
        result = backend.complete(request, on_text=on_text)
        assert first and result.timings is not None
        wall.append(1000 * (first[0] - t0))
        engine.append(result.timings.first_token_ms)
        recomputed = result.timings.prompt_tokens - result.timings.cached_tokens
    return wall, engine, recomputed


def main(argv: list[str] | None = None) -> str:
    opts = parse(argv)
    device = opts.device
    clock, report = start(device)
    name = report.device
    tok = Tokenizer(default_model_dir() / "tokenizer.model")
    loaded = served_model(opts, tok)
    text = code_text(tok, opts.context)
    on = LocalBackend(loaded, device, opts.dtype, cache_budget_mb=1 << 20)
    off = LocalBackend(loaded, device, opts.dtype, cache_budget_mb=1 << 20, cuda_graphs=False)
    request = CompletionRequest(prefix=text, suffix="\n", max_new_tokens=opts.steps + 1, speculative=False)
    prompt, _ = on.build_prompt(request)
    ctx = f"@ {len(prompt)} ctx"

    raw: dict[str, float] = {}
    for graph in (True, False) if device.type == "cuda" else (False,):
        label = "CUDA graph" if graph else "eager"
        raw[label] = raw_tok_s(loaded, prompt, opts.steps, graph, clock)
        report.add(f"raw decode tok/s {ctx}, {label}", f"{raw[label]:.1f}",
                   f"gpu_bench.py's loop: {'DecodeGraph.decode' if graph else 'decode_step'}, argmax on the host")
    baseline = raw.get("CUDA graph", raw["eager"])
    for backend, label in ((on, "cudaGraphs on"), (off, "cudaGraphs off")):
        tps, cached = served_tok_s(backend, request)
        graphs = backend.graphs
        how = (f"{graphs.graph_steps} graph steps, {graphs.captures} capture(s)" if graphs.active
               else f"eager: {graphs.reason}")
        report.add(f"served decode tok/s {ctx}, {label}", f"{tps:.1f}",
                   f"{100 * tps / baseline:.0f} % of the raw {'CUDA graph' if 'CUDA graph' in raw else 'eager'} "
                   f"loop; LocalBackend.complete, {cached} tokens cached; {how}")
    off.close()  # its cache's memory; `on` keeps its cache for the keystrokes

    wall, engine, recomputed = keystrokes(on, text, opts.keystrokes)
    report.add(f"warm keystroke {ctx}, to the first token (wall)", f"{statistics.median(wall):.1f} ms",
               f"median of {len(wall)} (max {max(wall):.1f}); complete() to the first streamed text, "
               f"prompt built and tokenized included; tokens recomputed: {recomputed}")
    report.add(f"warm keystroke {ctx}, engine first_token_ms", f"{statistics.median(engine):.1f} ms",
               "Timings.first_token_ms: prefix reuse, prefill of the new tokens, first sample")
    t0 = time.perf_counter()
    for _ in range(3):
        on.build_prompt(request)
    report.add(f"building the prompt {ctx}", f"{1000 * (time.perf_counter() - t0) / 3:.1f} ms",
               "LocalBackend.build_prompt: tokenizing the prefix and suffix (in the wall time above)")
    on.close()

    header = (f"### The served decode path (LocalBackend.complete) vs the raw decode loops, "
              f"{opts.args.n_layers}-layer dim-{opts.args.dim} model, random {opts.dtype} weights, on {name}\n\n"
              f"Command: `python benchmarks/served_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
              f"torch {torch.__version__}.")
    text_md = report.markdown(header)
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(text_md)
    return text_md


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, not speed")
    p.add_argument("--out", type=Path, help="write the markdown table here")
    p.add_argument("--context", type=int, help="prompt tokens (default 16384)")
    p.add_argument("--steps", type=int, help="decode steps timed (default 64)")
    p.add_argument("--keystrokes", type=int, help="warm keystrokes timed (default 7)")
    opts = p.parse_args(argv)
    if opts.smoke:
        defaults = dict(context=300, steps=4, keystrokes=2)
        opts.args, opts.device, opts.dtype = TINY, torch.device("cpu"), torch.float32
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device: run with --smoke on CPU")
        defaults = dict(context=16384, steps=64, keystrokes=7)
        opts.args, opts.device, opts.dtype = CODELLAMA_7B, torch.device("cuda"), torch.bfloat16
    fill_defaults(opts, defaults)
    return opts


if __name__ == "__main__":
    main()
