"""Command line: `python -m engine complete|info|demo|...`.

Other parts of the engine add subcommands by exposing `register(subparsers)` in a module listed in
`SUBCOMMAND_MODULES`; each registered parser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from engine.backends.base import KV_CACHE_DTYPES

# Subcommands registered by the modules that implement them (each imported only to build the parser).
SUBCOMMAND_MODULES = ("engine.train.cli", "engine.evaluate.cli", "engine.export")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model directory (default: the embedded default model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=None, help="auto, bfloat16, float32 (default: bf16 where fast)")
    p.add_argument("--adapter", help="LoRA adapter directory to apply")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="decode eagerly on CUDA (default: decode steps replay CUDA graphs)")
    add_quant_options(p)


def add_quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quant", choices=("none", "int8", "int4"), default="none",
                   help="quantize the weights as they load (int8: per channel; int4: group-wise)")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size (default 32)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES,
                   help="KV cache storage: auto (float32 for a small quantized bfloat16 model on CPU, else the model's dtype), "
                        "bfloat16, float32, or int8 (half of bf16's bytes)")


def _read(path: str | None) -> str:
    if path is None:
        return ""
    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


def cmd_complete(args: argparse.Namespace) -> int:
    from engine import CompletionRequest, load_local_backend

    backend = load_local_backend(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter,
                                 quantization=args.quant, group_size=args.group_size,
                                 kv_cache_dtype=args.kv_cache_dtype, cuda_graphs=args.cuda_graphs)
    request = CompletionRequest(
        prefix=_read(args.prefix_file) if args.prefix is None else args.prefix,
        suffix=_read(args.suffix_file) if args.suffix is None else args.suffix,
        fim_format=args.format,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop or [],
        token_healing=not args.no_token_healing,
    )
    result = backend.complete(request)
    if args.json:
        t = result.timings
        print(
            json.dumps(
                {
                    "text": result.text,
                    "prompt_tokens": result.prompt_tokens,
                    "tokens": result.tokens,
                    "stop_reason": result.stop_reason,
                    "timings": {
                        "prompt_tokens": t.prompt_tokens,
                        "cached_tokens": t.cached_tokens,
                        "prefill_ms": round(t.prefill_ms, 3),
                        "first_token_ms": round(t.first_token_ms, 3),
                        "decode_ms": round(t.decode_ms, 3),
                        "decode_tokens_per_s": round(t.decode_tokens_per_s, 2),
                        "total_ms": round(t.total_ms, 3),
                    },
                    "model": backend.description,
                }
            )
        )
    else:
        sys.stdout.write(result.text + ("\n" if not result.text.endswith("\n") else ""))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from engine.checkpoints import read_args, stored_quantization
    from engine.paths import default_model_dir
    from engine.tokenizer import Tokenizer

    path = Path(args.model) if args.model else default_model_dir()
    model_args, layout = read_args(path)
    stored = stored_quantization(path)
    info = {"path": str(path), "layout": layout, **model_args.to_dict(), "head_dim": model_args.head_dim,
            "quantization": stored.to_config() if stored else None}
    tok_path = path / "tokenizer.model"
    if tok_path.is_file():
        tok = Tokenizer(tok_path)
        info.update(tokenizer_vocab_size=tok.vocab_size, can_infill=tok.can_infill)
    else:
        info.update(tokenizer_vocab_size=None, can_infill=False)
    print(json.dumps(info, indent=2))
    return 0


DEMO_PREFIX = '''import math


def circle_area(radius: float) -> float:
    """Return the area of a circle of the given radius."""
    return '''
DEMO_SUFFIX = "\n\n\ndef main() -> None:\n    print(circle_area(2.0))\n"


def cmd_demo(args: argparse.Namespace) -> int:
    from engine import CompletionRequest, load_local_backend

    backend = load_local_backend(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter,
                                 quantization=args.quant, group_size=args.group_size,
                                 kv_cache_dtype=args.kv_cache_dtype, cuda_graphs=args.cuda_graphs)
    print(f"model: {backend.description}")
    for fmt in ("spm", "psm"):
        result = backend.complete(
            CompletionRequest(prefix=DEMO_PREFIX, suffix=DEMO_SUFFIX, fim_format=fmt, max_new_tokens=32)
        )
        t = result.timings
        print(f"\n--- {fmt.upper()} fill-in-the-middle ({t.prompt_tokens} prompt tokens, "
              f"{t.total_ms:.0f} ms, stop: {result.stop_reason}) ---")
        print(DEMO_PREFIX + "\033[1m" + result.text + "\033[0m" + DEMO_SUFFIX)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from engine.checkpoints import load_model, save_hf_checkpoint
    from engine.quant import QuantSpec

    spec = QuantSpec(args.bits, args.group_size)
    loaded = load_model(args.model, device="cpu", dtype=torch_dtype(args.dtype), quantization=spec)
    out = save_hf_checkpoint(loaded.model, loaded.path / "tokenizer.model", args.out,
                             dtype=torch_dtype(args.dtype), config_extra={"quantization": spec.to_config()})
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    print(f"{out}: {spec.name}{f' (group size {spec.group_size})' if spec.bits == 4 else ''}, {size / 1e6:.1f} MB")
    return 0


def torch_dtype(name: str):  # noqa: ANN201 - torch.dtype, without importing torch at module import
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Code Llama engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("complete", help="fill in the middle between a prefix and a suffix")
    _add_model_options(p)
    p.add_argument("--prefix-file", help="file with the text before the cursor ('-' for stdin)")
    p.add_argument("--suffix-file", help="file with the text after the cursor")
    p.add_argument("--prefix", help="the text before the cursor, inline")
    p.add_argument("--suffix", help="the text after the cursor, inline")
    p.add_argument("--format", choices=("psm", "spm"), default="spm")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--no-token-healing", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("info", help="print the resolved model configuration as JSON")
    p.add_argument("--model", help="model directory (default: the embedded default model)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("quantize", help="write a quantized copy of a checkpoint (safetensors with scales)")
    p.add_argument("--model", required=True, help="model directory (Meta or Hugging Face layout)")
    p.add_argument("--out", required=True, help="output directory (Hugging Face layout)")
    p.add_argument("--bits", type=int, choices=(8, 4), required=True)
    p.add_argument("--group-size", type=int, default=32, help="int4 group size (default 32)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                   help="dtype of the tensors left unquantized (embedding, norms)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("demo", help="complete a small example with the default model")
    _add_model_options(p)
    p.set_defaults(func=cmd_demo)

    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.backends.base import BackendError
    from engine.checkpoints import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (BackendError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
