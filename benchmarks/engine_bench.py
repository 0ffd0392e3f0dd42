"""CPU engine benchmark: our engine beside Hugging Face transformers and llama.cpp on the same weights,
in one run.

For each model and context length it measures a 32-token greedy completion:
  cold   - nothing cached: prefill the whole prompt, then decode
  warm   - a keystroke: the previous prompt's KV is cached and the new prompt differs only at the
           cursor. In SPM order the cursor is at the prompt's end (a few new tokens); in PSM order the
           suffix comes after the cursor, so it is recomputed too.
and prints a table of times with ratios (transformers / ours, llama.cpp / ours, cold / warm). llama.cpp
(llama-cpp-python, when installed) runs the same weights exported to GGUF by `engine.export` in the same
dtype, and gets the same keystroke (its own prefix reuse). No assertions: numbers.

With --llama-cpp-quant q8_0 q4_0 a second table puts llama.cpp on the same weights exported at those
bits (`engine export --quant`) beside ours: cold latency, time to first token and decode tok/s.
--kv-cache-dtype int8 runs ours with the int8 KV cache.

    .venv/bin/python benchmarks/engine_bench.py                 # default model + a larger random model
    .venv/bin/python benchmarks/engine_bench.py --contexts 1024 4096 16384 --large-contexts 1024 4096

With --quant --compiled, ours also runs with the compiled decode step (engine/compiled_decode.py) in the
same rounds, in a table of its own beside ours eager and llama.cpp.

With --quant, a second table: ours in bf16, int8 and int4 weights (engine/quant.py) on the same
prompts (cold latency, decode tok/s, weight bytes; each decoding as the local backend does: the native
step where it serves, engine/native_step.py, the eager one otherwise), on the default model and a 7B-shaped model cut to
--seven-b-layers of its 32 layers (random weights; per-layer costs are the 7B's), and beside them
llama.cpp at the same bits (Q8_0, Q4_0) where llama-cpp-python is installed and engine.export can
write those GGUF types:

    .venv/bin/python benchmarks/engine_bench.py --quant --contexts 1024 4096

Every candidate of that table is loaded first and then run once per round, for --repeats rounds
(medians): on a shared machine a load swing hits them all alike. llama.cpp opens through
benchmarks/llama_cpp_compat.open_llama. --baseline DIR adds ours from another checkout (the code before a
change) to the same rounds, through benchmarks/baseline_worker.py, and a before/after table.

    .venv/bin/python benchmarks/engine_bench.py --llama-cpp-quant q8_0 q4_0 --kv-cache-dtype int8

Run it with OpenMP's default wait policy, as the language server runs: under OMP_WAIT_POLICY=PASSIVE
(the test suite's setting, for a machine shared with other jobs) threads sleep between ops, and on this
2-core machine that made our decode step 2.5x slower and llama.cpp's 7x (benchmarks/RESULTS.md,
"The wait policy").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import default_model_dir  # noqa: E402
from engine.backends.local import decode_setup  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import LoadedModel, load_model, save_hf_checkpoint  # noqa: E402
from engine.compiled_decode import CompiledStep  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.generate import DecodeFn, generate  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402
from engine.quant import QuantSpec, spec_for_mode  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402

NEW_TOKENS = 32
KEYSTROKE_TOKENS = 2  # tokens a keystroke adds at the cursor
SUFFIX_SHARE = 0.2  # PSM: share of the prompt after the cursor


def code_tokens(loaded: LoadedModel, n: int) -> list[int]:
    """n tokens of real code (the standard library), for prompts that look like an editor's."""
    stdlib = Path(os.__file__).parent
    ids: list[int] = []
    for f in sorted(stdlib.glob("*.py")):
        ids += loaded.tokenizer.encode_infill(f.read_text(encoding="utf-8", errors="replace"))
        if len(ids) >= n:
            break
    return [loaded.tokenizer.bos_id] + ids[: n - 1]


def elapsed_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def timed(fn, repeats: int) -> float:
    """Median wall time in ms."""
    return statistics.median(elapsed_ms(fn) for _ in range(repeats))


def bench_cold(
    loaded: LoadedModel, prompt: list[int], repeats: int, kv_dtype: torch.dtype | None = None
) -> tuple[dict[str, float], KVCache]:
    """Cold completion time, its time to first token and decode tok/s; and the cache it left.
    `kv_dtype`: the KV caches' storage (default: the model's dtype; torch.int8 for the int8 cache)."""
    model, args = loaded.model, loaded.args
    dtype = kv_dtype or next(loaded.model.parameters()).dtype

    def cold() -> None:
        cache = KVCache(args, len(prompt) + NEW_TOKENS, "cpu", dtype)
        generate(model, cache, prompt, NEW_TOKENS, stop_ids=set())

    out = {"cold_ms": timed(cold, repeats)}
    cache = KVCache(args, len(prompt) + NEW_TOKENS, "cpu", dtype)
    r = generate(model, cache, prompt, NEW_TOKENS, stop_ids=set())
    out["ttft_cold_ms"] = r.first_token_ms
    out["decode_tok_s"] = 1000 * (NEW_TOKENS - 1) / max(r.decode_ms, 1e-6)
    return out, cache


def bench_ours(
    loaded: LoadedModel, prompt: list[int], repeats: int, kv_dtype: torch.dtype | None = None
) -> dict[str, float]:
    model, args = loaded.model, loaded.args
    dtype = kv_dtype or next(loaded.model.parameters()).dtype
    out, cache = bench_cold(loaded, prompt, repeats, kv_dtype)

    # SPM keystroke: previous prompt = this prompt minus the last tokens typed.
    prev = prompt[:-KEYSTROKE_TOKENS]

    def warm_spm() -> None:
        cache.truncate(len(prev))
        generate(model, cache, prompt, NEW_TOKENS, stop_ids=set())

    generate(model, cache, prev, 1, stop_ids=set())
    out["warm_spm_ms"] = timed(warm_spm, repeats)
    cache.truncate(len(prev))
    out["ttft_warm_spm_ms"] = generate(model, cache, prompt, NEW_TOKENS, stop_ids=set()).first_token_ms

    # PSM keystroke: the text before the cursor grows, the suffix after it must be recomputed.
    cut = int(len(prompt) * (1 - SUFFIX_SHARE))
    before, suffix = prompt[:cut], prompt[cut:]
    prev_psm = before[:-KEYSTROKE_TOKENS] + suffix
    psm_cache = KVCache(args, len(prompt) + NEW_TOKENS, "cpu", dtype)

    def warm_psm() -> float:
        generate(model, psm_cache, prev_psm, 1, stop_ids=set())  # the previous keystroke's prompt
        return elapsed_ms(lambda: generate(model, psm_cache, before + suffix, NEW_TOKENS, stop_ids=set()))

    out["warm_psm_ms"] = statistics.median(warm_psm() for _ in range(repeats))
    return out


def bench_llama_cpp(gguf: Path, prompt: list[int], threads: int, repeats: int) -> dict[str, float]:
    """The same measurements on llama.cpp: greedy decoding of exactly NEW_TOKENS tokens (EOS ignored),
    cold after `reset()`, warm with llama-cpp-python's own longest-prefix reuse."""
    from benchmarks.llama_cpp_compat import open_llama

    llm, note = open_llama(gguf, n_ctx=len(prompt) + NEW_TOKENS + 8, n_threads=threads,
                           n_threads_batch=threads, n_batch=512, verbose=False)
    if note:
        print(f"llama.cpp on {gguf.name}: {note}", file=sys.stderr, flush=True)

    def run(tokens: list[int], n: int) -> None:
        for i, _ in enumerate(llm.generate(tokens, temp=0.0, reset=True)):
            if i + 1 >= n:
                break

    def cold(n: int) -> None:
        llm.reset()
        run(prompt, n)

    pairs = [(elapsed_ms(lambda: cold(1)), elapsed_ms(lambda: cold(NEW_TOKENS))) for _ in range(repeats)]
    out = {"ttft_cold_ms": statistics.median(p[0] for p in pairs), "cold_ms": statistics.median(p[1] for p in pairs)}
    # Decode rate from each repeat's own pair (first token, then all of them), so load swings between
    # repeats do not leak in; nan when every pair was distorted (the longer run came out faster).
    rates = [1000 * (NEW_TOKENS - 1) / (n - one) for one, n in pairs if n > one]
    out["decode_tok_s"] = statistics.median(rates) if rates else float("nan")
    out["extra_buffers_off"] = float(bool(note))
    prev = prompt[:-KEYSTROKE_TOKENS]

    def warm() -> float:
        llm.reset()
        run(prev, 1)  # the previous keystroke's prompt, cached (not timed)
        return elapsed_ms(lambda: run(prompt, NEW_TOKENS))

    out["warm_spm_ms"] = statistics.median(warm() for _ in range(repeats))
    return out


def bench_transformers(model_dir: Path, prompt: list[int], dtype: torch.dtype, repeats: int) -> dict[str, float]:
    import transformers

    hf = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    ids = torch.tensor([prompt])

    def run(n: int) -> None:
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)

    return {"cold_ms": timed(lambda: run(NEW_TOKENS), repeats), "ttft_cold_ms": timed(lambda: run(1), repeats)}


def random_model_dir(args: ModelArgs, tokenizer_model: Path, out: Path) -> Path:
    model = Transformer(args)
    init_weights(model, seed=0)
    return save_hf_checkpoint(model, tokenizer_model, out, dtype=torch.bfloat16)


# ---- quantized weights: ours in bf16 / int8 / int4, llama.cpp at Q8_0 / Q4_0 -------------------------

QUANT_MODES = ("none", "int8", "int4")
GGUF_TYPES = {"int8": "q8_0", "int4": "q4_0"}  # llama.cpp's types at the same bits


def weight_bytes(loaded: LoadedModel) -> int:
    """Bytes of every weight the model holds (int4 layers on CPU: in the kernel's layout, once used)."""
    from engine.quant import QuantizedLinear

    model = loaded.model
    tensors = [*model.parameters(), *model.buffers()]
    cpu_int4 = sum(m._cpu.nbytes() for m in model.modules() if isinstance(m, QuantizedLinear) and m._cpu)
    return sum(t.numel() * t.element_size() for t in tensors) + cpu_int4


def quantized_gguf(path: Path, out: Path, mode: str) -> Path:
    """The model exported to llama.cpp's type at `mode`'s bits (Q8_0 for int8, Q4_0 for int4)."""
    from engine.export import export_gguf

    return export_gguf(path, out, quant=GGUF_TYPES[mode])


def seven_b_dir(tokenizer_model: Path, layers: int, out: Path) -> Path:
    """Code Llama 7B's shape cut to `layers` layers, random bf16 weights (saved, then loaded like any model)."""
    vocab = Tokenizer(tokenizer_model).vocab_size
    args = ModelArgs(dim=4096, n_layers=layers, n_heads=32, vocab_size=vocab, rope_theta=1e6, max_seq_len=16384)
    return random_model_dir(args, tokenizer_model, out)


def served_step(loaded: LoadedModel) -> tuple[DecodeFn | None, torch.dtype]:
    """The decode step and KV cache dtype the local backend uses for these weights on CPU
    (engine.backends.local.decode_setup): the native step where it serves, else the eager one (None)."""
    native, kv_dtype = decode_setup(loaded, torch.device("cpu"), next(loaded.model.parameters()).dtype)
    return (native.step if native is not None else None), kv_dtype


def ours_cold_run(loaded: LoadedModel, prompt: list[int], step: DecodeFn | None = None) -> dict[str, float]:
    """One cold completion on our engine: its time, time to first token and decode tok/s. `step`: the
    one-token decode step, over a cache of the model's dtype (None: the local backend's, see served_step)."""
    kv_dtype = next(loaded.model.parameters()).dtype
    if step is None:
        step, kv_dtype = served_step(loaded)
    cache = KVCache(loaded.args, len(prompt) + NEW_TOKENS, "cpu", kv_dtype)
    t0 = time.perf_counter()
    r = generate(loaded.model, cache, prompt, NEW_TOKENS, stop_ids=set(), step=step)
    cold_ms = 1000 * (time.perf_counter() - t0)
    return {"cold_ms": cold_ms, "ttft_cold_ms": r.first_token_ms,
            "decode_tok_s": 1000 * (NEW_TOKENS - 1) / max(r.decode_ms, 1e-6)}


def llama_cpp_cold_run(llm, prompt: list[int]) -> dict[str, float]:  # noqa: ANN001 - a llama_cpp.Llama
    """One cold completion on llama.cpp (greedy, exactly NEW_TOKENS tokens, EOS ignored), timed the
    same way: the first token's time and the rate of the ones after it."""
    llm.reset()
    t0 = time.perf_counter()
    first = 0.0
    for i, _ in enumerate(llm.generate(prompt, temp=0.0, reset=True)):
        if i == 0:
            first = time.perf_counter()
        if i + 1 >= NEW_TOKENS:
            break
    end = time.perf_counter()
    return {"cold_ms": 1000 * (end - t0), "ttft_cold_ms": 1000 * (first - t0),
            "decode_tok_s": (NEW_TOKENS - 1) / max(end - first, 1e-9)}


class Baseline:
    """Our engine from another checkout (`--baseline DIR`), run by benchmarks/baseline_worker.py."""

    def __init__(self, checkout: Path, threads: int) -> None:
        import subprocess

        self.checkout, self.threads = checkout, threads
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("baseline_worker.py"))],
                                     cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def cold_run(self, model: Path, mode: str, prompt: list[int]) -> dict[str, float]:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"model": str(model), "mode": mode, "prompt": prompt, "threads": self.threads}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the baseline worker for {self.checkout} exited ({self.proc.wait()})")
        return json.loads(answer)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def bench_quantized(models: list[tuple[str, Path]], contexts: dict[str, list[int]], opts: argparse.Namespace,
                    tmp: Path) -> None:
    """Every candidate (ours bf16/int8/int4, llama.cpp Q8_0/Q4_0, and with --baseline ours from another
    checkout) loaded at once, then run in turn in each of `opts.repeats` rounds: load swings on a shared
    machine hit them all alike. Medians."""
    rows = []
    use_llama_cpp = not opts.no_llama_cpp and _has_llama_cpp()
    baseline = Baseline(opts.baseline, opts.threads) if opts.baseline else None
    for name, path in models:
        ours: dict[str, LoadedModel] = {}
        sizes: dict[str, float] = {}
        n_params = 1
        for mode in QUANT_MODES:  # "none" first: its parameter count is the model's
            ours[mode] = load_model(path, dtype=torch.bfloat16, quantization=spec_for_mode(mode))
            n_params = ours[mode].model.num_parameters() if mode == "none" else n_params
        compiled: dict[str, CompiledStep] = {}
        for mode, loaded in ours.items() if opts.compiled else ():
            compiled[mode] = CompiledStep(loaded.model, next(loaded.model.parameters()).dtype)
            print(f"{name} {mode}: compiled the decode step in {compiled[mode].build():.1f} s", file=sys.stderr,
                  flush=True)
        theirs = {}
        if use_llama_cpp:
            from benchmarks.llama_cpp_compat import open_llama

            for mode in GGUF_TYPES:
                gguf = quantized_gguf(path, tmp / f"{name}-{mode}.gguf", mode)
                llm, note = open_llama(gguf, n_ctx=max(contexts[name]) + NEW_TOKENS + 8, n_threads=opts.threads,
                                       n_threads_batch=opts.threads, n_batch=512, verbose=False)
                theirs[mode] = (llm, note)
                if note:
                    print(f"llama.cpp {GGUF_TYPES[mode]}: {note}", file=sys.stderr, flush=True)
        samples: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        for ctx in contexts[name]:
            prompt = code_tokens(ours["none"], ctx)
            for _ in range(opts.repeats):
                for mode, loaded in ours.items():
                    samples.setdefault(("ours", mode, ctx), []).append(ours_cold_run(loaded, prompt))
                for mode, step in compiled.items():
                    samples.setdefault(("compiled", mode, ctx), []).append(ours_cold_run(ours[mode], prompt, step))
                for mode, (llm, _) in theirs.items():
                    samples.setdefault(("llama.cpp", mode, ctx), []).append(llama_cpp_cold_run(llm, prompt))
                for mode in QUANT_MODES if baseline else ():
                    samples.setdefault(("before", mode, ctx), []).append(baseline.cold_run(path, mode, prompt))
            print(f"done: {name} ctx={ctx}", file=sys.stderr, flush=True)
        for mode, loaded in ours.items():  # after running: int4 on CPU holds its kernel's layout by now
            sizes[mode] = weight_bytes(loaded) / n_params
        results = {key: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for key, runs in samples.items()}
        for mode, (_, note) in theirs.items():
            results[("llama.cpp", mode, contexts[name][0])]["extra_buffers_off"] = float(bool(note))
        rows.append((name, sizes, results))
        del ours, theirs, compiled
    if baseline:
        baseline.close()
    if opts.compiled:
        print(compiled_table(rows, contexts, use_llama_cpp, opts))

    nan = float("nan")
    print(f"\nQuantized weights: ours bf16 / int8 / int4 (group {QuantSpec(4).group_size}) and llama.cpp "
          f"Q8_0 / Q4_0 (when available), CPU, {opts.threads} threads, {NEW_TOKENS} new tokens, median of "
          f"{opts.repeats} rounds (every candidate once per round); cold in ms; 'x' columns: how many times "
          "faster than the column they name\n")
    print("| model | context | bytes/param bf16, int8, int4 | cold bf16 | cold int8 | int8 vs bf16 | "
          "cold int4 | int4 vs bf16 | decode tok/s bf16, int8, int4 |")
    print("|" + "---|" * 9)
    for name, sizes, r in rows:
        for ctx in contexts[name]:
            o = {m: r[("ours", m, ctx)] for m in QUANT_MODES}
            print(
                f"| {name} | {ctx} | {sizes['none']:.2f}, {sizes['int8']:.2f}, {sizes['int4']:.2f} | "
                f"{o['none']['cold_ms']:.0f} | {o['int8']['cold_ms']:.0f} | "
                f"{o['none']['cold_ms'] / o['int8']['cold_ms']:.2f}x | {o['int4']['cold_ms']:.0f} | "
                f"{o['none']['cold_ms'] / o['int4']['cold_ms']:.2f}x | "
                + ", ".join(f"{o[m]['decode_tok_s']:.1f}" for m in QUANT_MODES) + " |")
    if baseline:
        print(f"\nBefore and after: ours from {opts.baseline} ('before') in the same rounds (ratios > 1: this "
              "checkout faster)\n")
        print("| model | context | weights | before cold | after cold | cold ratio | before decode tok/s | "
              "after decode tok/s | decode ratio |")
        print("|---|---|---|" + "---:|" * 6)
        for name, _, r in rows:
            for ctx in contexts[name]:
                for mode in QUANT_MODES:
                    b, a = r[("before", mode, ctx)], r[("ours", mode, ctx)]
                    print(f"| {name} | {ctx} | {mode} | {b['cold_ms']:.0f} | {a['cold_ms']:.0f} | "
                          f"{b['cold_ms'] / a['cold_ms']:.2f}x | {b['decode_tok_s']:.1f} | {a['decode_tok_s']:.1f} | "
                          f"{a['decode_tok_s'] / b['decode_tok_s']:.2f}x |")
    if not use_llama_cpp:
        return
    print("\nAgainst llama.cpp at the same bits (ratios: llama.cpp's time / ours, our rate / llama.cpp's; "
          "> 1: ours faster; * = llama.cpp's extra CPU buffer types (AMX/repack) off, they crash it here)\n")
    print("| model | ours | llama.cpp | context | ours cold | llama.cpp cold | cold ratio | ours TTFT | "
          "llama.cpp TTFT | TTFT ratio | ours decode tok/s | llama.cpp decode tok/s | decode ratio |")
    print("|" + "---|" * 3 + "---:|" * 10)
    for name, _, r in rows:
        for mode, gguf_type in GGUF_TYPES.items():
            star = "*" if r.get(("llama.cpp", mode, contexts[name][0]), {}).get("extra_buffers_off") else ""
            for ctx in contexts[name]:
                o, lc = r[("ours", mode, ctx)], r.get(("llama.cpp", mode, ctx), {})
                print(f"| {name} | {mode} | {gguf_type.upper()}{star} | {ctx} | {o['cold_ms']:.0f} | "
                      f"{lc.get('cold_ms', nan):.0f} | {lc.get('cold_ms', nan) / o['cold_ms']:.2f}x | "
                      f"{o['ttft_cold_ms']:.0f} | {lc.get('ttft_cold_ms', nan):.0f} | "
                      f"{lc.get('ttft_cold_ms', nan) / o['ttft_cold_ms']:.2f}x | {o['decode_tok_s']:.1f} | "
                      f"{lc.get('decode_tok_s', nan):.1f} | {o['decode_tok_s'] / lc.get('decode_tok_s', nan):.2f}x |")


def compiled_table(rows: list, contexts: dict[str, list[int]], use_llama_cpp: bool, opts: argparse.Namespace) -> str:
    """Ours eager and compiled (engine/compiled_decode.py) beside llama.cpp at the same bits, same rounds."""
    nan = float("nan")
    lines = ["", f"Ours eager and with the compiled decode step (--compiled), llama.cpp at the same bits, same rounds "
             f"(median of {opts.repeats}); ratios > 1: the first named faster", "",
             "| model | weights | context | ours decode tok/s | compiled decode tok/s | compiled/eager | "
             "llama.cpp decode tok/s | eager/llama.cpp | compiled/llama.cpp | ours cold | compiled cold | "
             "llama.cpp cold | compiled/llama.cpp cold |", "|---|---|" + "---:|" * 11]
    for name, _, r in rows:
        for mode in QUANT_MODES:
            for ctx in contexts[name]:
                o, c = r[("ours", mode, ctx)], r[("compiled", mode, ctx)]
                lc = r.get(("llama.cpp", mode, ctx), {}) if use_llama_cpp else {}
                their_rate, their_cold = lc.get("decode_tok_s", nan), lc.get("cold_ms", nan)
                label = f"{mode} / {GGUF_TYPES[mode].upper()}" if mode in GGUF_TYPES else mode
                lines.append(
                    f"| {name} | {label} | {ctx} | {o['decode_tok_s']:.1f} | {c['decode_tok_s']:.1f} | "
                    f"{c['decode_tok_s'] / o['decode_tok_s']:.2f}x | {their_rate:.1f} | "
                    f"{o['decode_tok_s'] / their_rate:.2f}x | {c['decode_tok_s'] / their_rate:.2f}x | "
                    f"{o['cold_ms']:.0f} | {c['cold_ms']:.0f} | {their_cold:.0f} | {their_cold / c['cold_ms']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--large-contexts", type=int, nargs="+", default=None,
                    help="contexts for the larger model (default: --contexts)")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="tokenizer.model for the random default-shaped model when the default model is missing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--no-large", action="store_true", help="skip the larger random-weight model")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--quant", action="store_true", help="only the quantized-weights table (see above)")
    ap.add_argument("--compiled", action="store_true",
                    help="with --quant: also run ours with the compiled decode step (engine/compiled_decode.py) in "
                         "the same rounds, and a table of it beside eager and llama.cpp")
    ap.add_argument("--seven-b-layers", type=int, default=2,
                    help="layers of the 7B-shaped model in the --quant table (0: none)")
    ap.add_argument("--llama-cpp-quant", nargs="*", default=[], choices=["q8_0", "q4_0"],
                    help="also run llama.cpp on GGUF exports at these bits (a second table)")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "int8"], help="our KV cache's storage")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="with --quant: also run ours from this checkout (e.g. /work/main) in the same rounds")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    dtype = getattr(torch, opts.dtype)
    kv_dtype = torch.int8 if opts.kv_cache_dtype == "int8" else None

    models: list[tuple[str, Path]] = []
    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    default_dir = default_model_dir()
    if (default_dir / "tokenizer.model").is_file():
        models.append(("default", default_dir))
    else:
        from engine.tokenizer import Tokenizer
        from tests.tiny_models import build_tokenizer

        tok = opts.tokenizer or build_tokenizer(tmp / "tokenizer.model", vocab_size=2048)
        # The default model's shape (recipes/default_model/stage.py), random weights.
        shape = ModelArgs(dim=256, n_layers=6, n_heads=4, n_kv_heads=4, vocab_size=Tokenizer(tok).vocab_size,
                          multiple_of=16, max_seq_len=32768)
        models.append(("default-shaped (random)", random_model_dir(shape, tok, tmp / "small")))
    if opts.quant:
        if opts.seven_b_layers:
            models.append((f"7B-shaped, {opts.seven_b_layers} of 32 layers (random)",
                           seven_b_dir(models[0][1] / "tokenizer.model", opts.seven_b_layers, tmp / "7b")))
        # The 7B-shaped model at the first context only: its prefill takes minutes on 2 cores.
        contexts = {name: opts.contexts if i == 0 else opts.contexts[:1] for i, (name, _) in enumerate(models)}
        bench_quantized(models, contexts, opts, tmp)
        return 0
    if not opts.no_large:
        tok_path = models[0][1] / "tokenizer.model"
        vocab = load_model(models[0][1], dtype=dtype).tokenizer.vocab_size
        big = ModelArgs(dim=1024, n_layers=12, n_heads=16, n_kv_heads=4, vocab_size=vocab, multiple_of=256,
                        max_seq_len=32768)
        models.append(("large random (~170M)", random_model_dir(big, tok_path, tmp / "large")))

    use_llama_cpp = not opts.no_llama_cpp and _has_llama_cpp()
    rows = []
    for i, (name, path) in enumerate(models):
        loaded = load_model(path, dtype=dtype)
        params = loaded.model.num_parameters() / 1e6
        gguf = None
        quantized: dict[str, Path] = {}
        if use_llama_cpp:
            from engine.export import export_gguf

            gguf = export_gguf(path, tmp / f"model-{i}.gguf", dtype=opts.dtype)
            for quant in opts.llama_cpp_quant:
                quantized[quant] = export_gguf(path, tmp / f"model-{i}-{quant}.gguf", dtype=opts.dtype, quant=quant)
        contexts = opts.large_contexts if i > 0 and opts.large_contexts else opts.contexts
        for ctx in contexts:
            prompt = code_tokens(loaded, ctx)
            ours = bench_ours(loaded, prompt, opts.repeats, kv_dtype)
            hf = {} if opts.no_transformers else bench_transformers(path, prompt, dtype, opts.repeats)
            lc = bench_llama_cpp(gguf, prompt, opts.threads, opts.repeats) if gguf else {}
            lq = {q: bench_llama_cpp(f, prompt, opts.threads, opts.repeats) for q, f in quantized.items()}
            rows.append((f"{name} {params:.0f}M", ctx, ours, hf, lc, lq))
            print(f"done: {name} ctx={ctx}", file=sys.stderr, flush=True)

    nan = float("nan")
    kv_note = ", int8 KV cache (ours)" if kv_dtype is not None else ""
    print(f"\nCPU, {opts.threads} threads, {opts.dtype}{kv_note}, {NEW_TOKENS} new tokens, median of {opts.repeats}; "
          "times in ms; a ratio > 1 means ours is faster\n")
    print("| model | context | ours cold | HF cold | HF/ours | llama.cpp cold | llama.cpp/ours | ours TTFT | "
          "HF TTFT | llama.cpp TTFT | ours warm SPM (TTFT) | llama.cpp warm SPM | cold/warm SPM | cold/warm TTFT SPM | "
          "ours warm PSM | cold/warm PSM | decode tok/s |")
    print("|" + "---|" * 17)
    for name, ctx, o, h, lc, _ in rows:
        print(
            f"| {name} | {ctx} | {o['cold_ms']:.0f} | {h.get('cold_ms', nan):.0f} | "
            f"{h.get('cold_ms', nan) / o['cold_ms']:.2f}x | {lc.get('cold_ms', nan):.0f} | "
            f"{lc.get('cold_ms', nan) / o['cold_ms']:.2f}x | {o['ttft_cold_ms']:.0f} | "
            f"{h.get('ttft_cold_ms', nan):.0f} | {lc.get('ttft_cold_ms', nan):.0f} | "
            f"{o['warm_spm_ms']:.0f} ({o['ttft_warm_spm_ms']:.0f}) | {lc.get('warm_spm_ms', nan):.0f} | "
            f"{o['cold_ms'] / o['warm_spm_ms']:.1f}x | {o['ttft_cold_ms'] / o['ttft_warm_spm_ms']:.1f}x | "
            f"{o['warm_psm_ms']:.0f} | "
            f"{o['cold_ms'] / o['warm_psm_ms']:.1f}x | {o['decode_tok_s']:.0f} |"
        )
    if opts.llama_cpp_quant and use_llama_cpp:
        print(quant_table(rows, opts.llama_cpp_quant, opts.dtype, kv_note))
    return 0


def quant_table(rows: list, quants: list[str], dtype: str, kv_note: str) -> str:
    """Ours (as run: its weights and KV cache) beside llama.cpp at each of `quants` bits, same prompts."""
    head = f"| model | context | ours cold | ours TTFT | ours decode tok/s ({dtype} weights{kv_note}) |"
    rule = "|---|---|---:|---:|---:|"
    for q in quants:
        head += f" llama.cpp {q.upper()} cold | /ours | TTFT | /ours | decode tok/s | ours/llama.cpp |"
        rule += "---:|---:|---:|---:|---:|---:|"
    lines = ["", "llama.cpp at the same bits (ratios > 1: ours faster; * = llama.cpp's extra CPU buffer types "
             "(AMX/repack) off, they crash it on this file):", "", head, rule]
    for name, ctx, o, _, _, lq in rows:
        line = f"| {name} | {ctx} | {o['cold_ms']:.0f} | {o['ttft_cold_ms']:.0f} | {o['decode_tok_s']:.0f} |"
        for q in quants:
            r = lq[q]
            star = "*" if r["extra_buffers_off"] else ""
            line += (f" {r['cold_ms']:.0f}{star} | {r['cold_ms'] / o['cold_ms']:.2f}x | {r['ttft_cold_ms']:.0f} | "
                     f"{r['ttft_cold_ms'] / o['ttft_cold_ms']:.2f}x | {r['decode_tok_s']:.0f} | "
                     f"{o['decode_tok_s'] / r['decode_tok_s']:.2f}x |")
        lines.append(line)
    return "\n".join(lines)


def _has_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp columns", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
