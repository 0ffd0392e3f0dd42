"""CPU weight-only quantized matmul: every option PyTorch offers, against bf16 nn.Linear, in one run.

For the default model's linear shapes and one 7B layer's (4096x4096, 11008x4096, 4096x11008), at
decode (1 row) and prefill (--rows, 512 by default), it times:
  int8  aten._weight_int8pack_mm          (int8 weight, bf16 activations and scales)
  int8  dequantize then bf16 matmul       (the whole weight converted to bf16 per call)
  int8  bf16 matmul then scale the output (weight converted without the multiply)
  int8  torch.ao dynamic quantized Linear (fbgemm; quantizes the activations too, float32 only)
  int4  aten._weight_int4pack_mm_for_cpu  (weight repacked once by _convert_weight_to_int4pack_for_cpu)
  int4  dequantize then bf16 matmul
and the engine's QuantizedLinear (engine/kernels/quant_cpu.py: the packed ops for a few rows,
dequantize into a reused buffer and the bf16 matmul for many), and prints each time as a ratio to bf16
nn.Linear (below 1.0: faster).

    .venv/bin/python benchmarks/quant_matmul.py [--rows 512] [--repeats 20] [--no-7b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.kernels import quant_cpu  # noqa: E402
from engine.quant import (  # noqa: E402
    QuantizedLinear,
    QuantSpec,
    dequantize_int4,
    dequantize_int8,
    quantize_int4,
    quantize_int8,
)

DEFAULT_SHAPES = [(320, 320), (864, 320), (320, 864), (8192, 320)]  # (out, in) of the default model
SEVEN_B_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median ms of each, the candidates taking turns in every round (the machine's load is shared)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(1000 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def candidates(w: torch.Tensor, group: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    q8, s8 = quantize_int8(w)
    q4, s4 = quantize_int4(w, group)
    spec4 = QuantSpec(4, group)
    packed4 = quant_cpu.CpuInt4.from_canonical(q4, s4, group, torch.bfloat16)
    ao = torch.ao.nn.quantized.dynamic.Linear(w.shape[1], w.shape[0], bias_=False)
    ao.set_weight_bias(torch.quantize_per_channel(w.float(), s8.float(), torch.zeros_like(s8, dtype=torch.long),
                                                  0, torch.qint8), None)
    return {
        "int8 _weight_int8pack_mm": lambda x: torch.ops.aten._weight_int8pack_mm(x, q8, s8),
        "int8 dequant+matmul": lambda x: F.linear(x, dequantize_int8(q8, s8, torch.bfloat16)),
        "int8 matmul*scales": lambda x: F.linear(x, q8.to(torch.bfloat16)) * s8,
        "int8 torch.ao dynamic (fp32)": lambda x: ao(x.float()),
        "int4 _weight_int4pack_mm_for_cpu": lambda x: quant_cpu.int4_matmul(x, packed4, group),
        "int4 dequant+matmul": lambda x: F.linear(x, dequantize_int4(q4, s4, group, torch.bfloat16)),
        "engine int8": QuantizedLinear.from_weight(w, QuantSpec(8)),
        "engine int4": QuantizedLinear.from_weight(w, spec4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=512, help="prefill rows")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--group-size", type=int, default=32)
    p.add_argument("--no-7b", action="store_true", help="default model's shapes only")
    args = p.parse_args()
    torch.manual_seed(0)
    shapes = DEFAULT_SHAPES + ([] if args.no_7b else SEVEN_B_SHAPES)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 activations, "
          f"int4 group {args.group_size}; time / bf16 nn.Linear time (lower is faster)\n")
    rows_list = [1, args.rows]
    header = None
    for out_f, in_f in shapes:
        w = torch.randn(out_f, in_f, dtype=torch.bfloat16) * 0.02
        fns = candidates(w, args.group_size)
        if header is None:
            header = ["shape (out x in)", "rows", "bf16 ms"] + list(fns)
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
        for rows in rows_list:
            x = torch.randn(rows, in_f, dtype=torch.bfloat16)
            repeats = args.repeats if rows == 1 or out_f * in_f < 2**22 else max(3, args.repeats // 4)
            calls = [lambda f=f: f(x) for f in [lambda x: F.linear(x, w), *fns.values()]]  # noqa: B023
            base, *others = interleaved_medians(calls, repeats)
            cells = [f"{out_f} x {in_f}", str(rows), f"{base:.3f}"] + [f"{t / base:.2f}" for t in others]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
