"""CPU engine benchmark: our engine beside Hugging Face transformers on the same weights, one run.

For each model and context length it measures a 32-token greedy completion:
  cold   - nothing cached: prefill the whole prompt, then decode
  warm   - a keystroke: the previous prompt's KV is cached and the new prompt differs only at the
           cursor. In SPM order the cursor is at the prompt's end (a few new tokens); in PSM order the
           suffix comes after the cursor, so it is recomputed too.
and prints a table of times with ratios (transformers / ours, cold / warm). No assertions: numbers.

    .venv/bin/python benchmarks/engine_bench.py                 # default model + a larger random model
    .venv/bin/python benchmarks/engine_bench.py --contexts 1024 4096 16384 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import default_model_dir  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import LoadedModel, load_model, save_hf_checkpoint  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.generate import generate  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402

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


def timed(fn, repeats: int) -> float:
    """Median wall time in ms."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench_ours(loaded: LoadedModel, prompt: list[int], repeats: int) -> dict[str, float]:
    model, args, dtype = loaded.model, loaded.args, next(loaded.model.parameters()).dtype
    out: dict[str, float] = {}

    def cold() -> None:
        cache = KVCache(args, len(prompt) + NEW_TOKENS, "cpu", dtype)
        generate(model, cache, prompt, NEW_TOKENS, stop_ids=set())

    out["cold_ms"] = timed(cold, repeats)
    cache = KVCache(args, len(prompt) + NEW_TOKENS, "cpu", dtype)
    r = generate(model, cache, prompt, NEW_TOKENS, stop_ids=set())
    out["ttft_cold_ms"] = r.first_token_ms
    out["decode_tok_s"] = 1000 * (NEW_TOKENS - 1) / max(r.decode_ms, 1e-6)

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

    def warm_psm() -> None:
        generate(model, psm_cache, prev_psm, 1, stop_ids=set())  # the previous keystroke's prompt
        t0 = time.perf_counter()
        generate(model, psm_cache, before + suffix, NEW_TOKENS, stop_ids=set())
        warm_psm.ms.append(1000 * (time.perf_counter() - t0))  # type: ignore[attr-defined]

    warm_psm.ms = []  # type: ignore[attr-defined]
    for _ in range(repeats):
        warm_psm()
    out["warm_psm_ms"] = statistics.median(warm_psm.ms)  # type: ignore[attr-defined]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--no-large", action="store_true", help="skip the larger random-weight model")
    ap.add_argument("--no-transformers", action="store_true")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    dtype = getattr(torch, opts.dtype)

    models: list[tuple[str, Path]] = []
    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    default_dir = default_model_dir()
    if default_dir.is_dir():
        models.append(("default", default_dir))
    else:
        from engine.testing import build_tokenizer

        tok = build_tokenizer(tmp / "tokenizer.model", vocab_size=2048)
        shape = ModelArgs(dim=256, n_layers=6, n_heads=4, vocab_size=2048, multiple_of=16, hidden_dim=688)
        models.append(("default-shaped (random)", random_model_dir(shape, tok, tmp / "small")))
    if not opts.no_large:
        tok_path = models[0][1] / "tokenizer.model"
        vocab = load_model(models[0][1], dtype=dtype).tokenizer.vocab_size
        big = ModelArgs(dim=1024, n_layers=12, n_heads=16, n_kv_heads=4, vocab_size=vocab, multiple_of=256)
        models.append(("large random (~170M)", random_model_dir(big, tok_path, tmp / "large")))

    rows = []
    for name, path in models:
        loaded = load_model(path, dtype=dtype)
        params = loaded.model.num_parameters() / 1e6
        for ctx in opts.contexts:
            prompt = code_tokens(loaded, ctx)
            ours = bench_ours(loaded, prompt, opts.repeats)
            hf = {} if opts.no_transformers else bench_transformers(path, prompt, dtype, opts.repeats)
            rows.append((f"{name} {params:.0f}M", ctx, ours, hf))
            print(f"done: {name} ctx={ctx}", file=sys.stderr, flush=True)

    print(f"\nCPU, {opts.threads} threads, {opts.dtype}, {NEW_TOKENS} new tokens, median of {opts.repeats}\n")
    print("| model | context | ours cold ms | HF cold ms | HF/ours | ours TTFT cold | HF TTFT | "
          "warm SPM ms (TTFT) | cold/warm SPM | warm PSM ms | cold/warm PSM | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ctx, o, h in rows:
        hf_cold = h.get("cold_ms")
        print(
            f"| {name} | {ctx} | {o['cold_ms']:.0f} | {hf_cold or float('nan'):.0f} | "
            f"{(hf_cold / o['cold_ms']) if hf_cold else float('nan'):.2f}x | {o['ttft_cold_ms']:.0f} | "
            f"{h.get('ttft_cold_ms', float('nan')):.0f} | {o['warm_spm_ms']:.0f} ({o['ttft_warm_spm_ms']:.0f}) | "
            f"{o['cold_ms'] / o['warm_spm_ms']:.1f}x | {o['warm_psm_ms']:.0f} | "
            f"{o['cold_ms'] / o['warm_psm_ms']:.1f}x | {o['decode_tok_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
