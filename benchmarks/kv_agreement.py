"""Greedy tokens with the int8 KV cache against the model's own dtype, on held-out code.

    .venv/bin/python benchmarks/kv_agreement.py --data-jsonl heldout.jsonl --lengths 1024 4096 --prompts 24

For each prompt length, `--prompts` windows of held-out code (the files joined with path headers, as
repository context reads; windows spread evenly) are continued greedily for `--new-tokens` tokens twice,
with a cache of the model's dtype and with the int8 cache, the same model. Prints, per length: the share
of prompts whose continuations are identical, and the mean number of tokens generated before the first
difference. No assertions: numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import default_model_dir  # noqa: E402
from engine.backends.local import resolve_dtype  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import load_model  # noqa: E402
from engine.evaluate.data import load_files  # noqa: E402
from engine.evaluate.perplexity import documents  # noqa: E402
from engine.generate import common_prefix_length, generate  # noqa: E402


def windows(stream: list[int], length: int, count: int) -> list[list[int]]:
    """`count` windows of `length` tokens spread evenly over `stream`."""
    room = len(stream) - length
    if room < 0:
        raise SystemExit(f"the held-out code has {len(stream)} tokens, fewer than {length}")
    return [stream[i * room // max(count - 1, 1) :][:length] for i in range(count)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the embedded default model)")
    ap.add_argument("--data-jsonl", action="append", default=[], required=True)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--dtype", default=None, help="the model's dtype (default: the engine's choice)")
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    dtype = resolve_dtype(opts.dtype, torch.device("cpu"))
    loaded = load_model(opts.model or default_model_dir(), dtype=dtype)
    stream = documents(loaded.tokenizer, load_files([], None, opts.data_jsonl, None, []), concat=True)[0]
    print(f"model {loaded.path.name}, {dtype}, CPU, greedy, {opts.new_tokens} new tokens, "
          f"{opts.prompts} prompts per length\n")
    print(f"| prompt tokens | identical ({str(dtype).removeprefix('torch.')} KV vs int8 KV) | "
          "tokens before the first difference (mean) |")
    print("|---:|---:|---:|")
    for length in opts.lengths:
        same, agreed = 0, []
        for prompt in windows(stream, length, opts.prompts):
            runs = [generate(loaded.model, KVCache(loaded.args, length + opts.new_tokens, "cpu", kv), prompt,
                             opts.new_tokens, stop_ids=set()).tokens for kv in (dtype, torch.int8)]
            same += runs[0] == runs[1]
            agreed.append(common_prefix_length(*runs))
        print(f"| {length} | {same} of {opts.prompts} ({100 * same / opts.prompts:.0f} %) | "
              f"{statistics.mean(agreed):.1f} of {opts.new_tokens} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
