"""How much quantized weights change the default model, against bf16 in the same run.

For each variant: perplexity of the last --score tokens of --windows held-out windows of --window
tokens, and greedy agreement with bf16 over --prompts held-out prompts (--prompt-tokens of code each,
--new-tokens generated): the share of prompts whose whole greedy completion is identical to bf16's,
and the share of generated tokens before the first difference. Variants: the engine's int8, int4
(group 32 and 128; the output head int8), and the measured choices engine/quant.py documents: int4
with an int4 output head, Q4_0's signed scale against max|w| / 7, and fp32 instead of bf16 scales (simulated in a float32 model: weights = dequantized weights).

    .venv/bin/python benchmarks/quant_quality.py --data-jsonl /work/runs/served/corpus/heldout.jsonl
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine import default_model_dir  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.checkpoints import LoadedModel, load_model  # noqa: E402
from engine.evaluate.data import files_from_jsonl  # noqa: E402
from engine.generate import generate  # noqa: E402
from engine.model import Transformer  # noqa: E402
from engine.quant import QuantizedLinear, QuantSpec, dequantize_int4, quantize_int4, quantize_model  # noqa: E402


def windows(loaded: LoadedModel, texts: list[str], length: int, count: int) -> list[list[int]]:
    """`count` windows of `length` tokens, from the files long enough, spread over them."""
    tok = loaded.tokenizer
    long_enough = [ids for ids in (tok.encode_infill(t) for t in texts) if len(ids) >= length]
    picked = [long_enough[i * len(long_enough) // count] for i in range(min(count, len(long_enough)))]
    return [[tok.bos_id] + ids[: length - 1] for ids in picked]


@torch.no_grad()
def perplexity(model: Transformer, batch: list[list[int]], score: int) -> float:
    nll, n = 0.0, 0
    for ids in batch:
        x = torch.tensor([ids])
        logits = model(x)[0, -score - 1 : -1].float()
        nll += F.cross_entropy(logits, x[0, -score:], reduction="sum").item()
        n += score
    return math.exp(nll / n)


def greedy(model: Transformer, loaded: LoadedModel, prompts: list[list[int]], new: int) -> list[list[int]]:
    dtype = next(model.parameters()).dtype
    out = []
    for p in prompts:
        cache = KVCache(loaded.args, len(p) + new, "cpu", dtype)
        out.append(generate(model, cache, p, new, stop_ids=set()).tokens)
    return out


def agreement(ref: list[list[int]], got: list[list[int]]) -> tuple[float, float]:
    """(share of identical completions, share of tokens before the first difference)."""
    same, before = 0, 0
    for a, b in zip(ref, got, strict=True):
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        same += k == len(a)
        before += k
    return same / len(ref), before / sum(len(a) for a in ref)


def int4_with_int4_head(model: Transformer) -> Transformer:
    """The engine's int4 for the blocks, and int4 for the output head too."""
    head = model.output.weight.detach()
    quantize_model(model.layers, QuantSpec(4, 32))
    model.output = QuantizedLinear.from_weight(head, QuantSpec(4, 32))  # type: ignore[assignment]
    return model


def fake_int4(signed_scale: bool) -> Callable[[Transformer], Transformer]:
    """The blocks' linear weights replaced by their int4 (group 32) dequantization: with Q4_0's signed
    scale (the engine's) or with max|w| / 7 (levels -7..7); the output head is left as it is."""

    def apply(model: Transformer) -> Transformer:
        for m in model.layers.modules():
            if isinstance(m, torch.nn.Linear):
                if signed_scale:
                    q, s = quantize_int4(m.weight.detach(), 32)
                    m.weight.data = dequantize_int4(q, s, 32).to(m.weight.dtype)
                    continue
                groups = m.weight.detach().float().view(m.weight.shape[0], -1, 32)
                s = (groups.abs().amax(dim=2, keepdim=True) / 7).clamp(min=1e-10).bfloat16().float()
                m.weight.data = (torch.round(groups / s).clamp(-7, 7) * s).view_as(m.weight).to(m.weight.dtype)
        return model

    return apply


def fake_int8(scale_dtype: torch.dtype) -> Callable[[Transformer], Transformer]:
    """Every linear weight replaced by its int8 dequantization, scales rounded to `scale_dtype`."""

    def apply(model: Transformer) -> Transformer:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                s = (m.weight.detach().float().abs().amax(dim=1) / 127).clamp(min=1e-10).to(scale_dtype)
                q = torch.round(m.weight.detach().float() / s.float()[:, None]).clamp(-127, 127)
                m.weight.data = (q * s.float()[:, None]).to(m.weight.dtype)
        return model

    return apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_dir()))
    ap.add_argument("--data-jsonl", required=True)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--score", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    texts = [f.text for f in files_from_jsonl(opts.data_jsonl)]

    bf16 = load_model(opts.model)
    f32 = load_model(opts.model, dtype=torch.float32)
    ppl_windows = windows(bf16, texts, opts.window, opts.windows)
    prompts = [w[: opts.prompt_tokens] for w in windows(bf16, texts[1::2], opts.prompt_tokens + 1, opts.prompts)]

    variants: list[tuple[str, Callable[[], tuple[Transformer, LoadedModel]]]] = [
        ("bf16", lambda: (bf16.model, bf16)),
        ("int8", lambda: (load_model(opts.model, quantization=QuantSpec(8)).model, bf16)),
        ("int4, group 32", lambda: (load_model(opts.model, quantization=QuantSpec(4, 32)).model, bf16)),
        ("int4, group 128", lambda: (load_model(opts.model, quantization=QuantSpec(4, 128)).model, bf16)),
        ("int4 g32, int4 output head", lambda: (int4_with_int4_head(copy.deepcopy(bf16.model)), bf16)),
        ("float32 model", lambda: (f32.model, f32)),
        ("float32, int4 blocks, Q4_0 signed scale", lambda: (fake_int4(True)(copy.deepcopy(f32.model)), f32)),
        ("float32, int4 blocks, max/7 scale", lambda: (fake_int4(False)(copy.deepcopy(f32.model)), f32)),
        ("float32, int8 with bf16 scales", lambda: (fake_int8(torch.bfloat16)(copy.deepcopy(f32.model)), f32)),
        ("float32, int8 with fp32 scales", lambda: (fake_int8(torch.float32)(copy.deepcopy(f32.model)), f32)),
    ]
    print(f"{opts.model}: {len(ppl_windows)} windows of {opts.window} tokens (last {opts.score} scored), "
          f"{len(prompts)} prompts of {opts.prompt_tokens} tokens, {opts.new_tokens} greedy tokens; agreement "
          "is with bf16 (with the float32 model for the float32 rows)\n")
    print("| weights | perplexity | vs reference | identical completions | tokens before first difference |")
    print("|---|---|---|---|---|")
    refs: dict[str, tuple[float, list[list[int]]]] = {}
    for name, build in variants:
        model, loaded = build()
        ppl = perplexity(model, ppl_windows, opts.score)
        tokens = greedy(model, loaded, prompts, opts.new_tokens)
        ref_name = "float32 model" if name.startswith("float32") else "bf16"
        if name == ref_name:
            refs[name] = (ppl, tokens)
        ref_ppl, ref_tokens = refs[ref_name]
        same, before = agreement(ref_tokens, tokens)
        print(f"| {name} | {ppl:.3f} | {100 * (ppl / ref_ppl - 1):+.2f} % | {100 * same:.0f} % | "
              f"{100 * before:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
