"""The Triton quantized matmul against the dequantize-then-matmul reference (engine/quant.py).

On CPU it runs under Triton's interpreter (conftest.py): float32 activations, small odd shapes. On a
CUDA machine (benchmarks/gpu_check.sh) the same cases run in bfloat16 too.
"""

from __future__ import annotations

import pytest
import torch

from engine import kernels
from engine.quant import (
    QuantizedLinear,
    QuantSpec,
    dequantize_int4,
    dequantize_int8,
    quantize_int4,
    quantize_int8,
)

qt = pytest.importorskip("engine.kernels.quant_triton", reason="triton is not installed (pip install triton)")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]
TOL = {torch.float32: dict(atol=2e-4, rtol=2e-4), torch.bfloat16: dict(atol=5e-2, rtol=2e-2)}


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# (rows, out, in): decode and prefill tile paths, out not a multiple of the tile, in not a multiple of
# the K step nor (for int4) of the group.
SHAPES = [(1, 37, 96), (3, 50, 160), (19, 33, 64), (70, 40, 224)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,out_f,in_f", SHAPES)
def test_int8_matches_dequantize_reference(rows: int, out_f: int, in_f: int, dtype: torch.dtype) -> None:
    q, s = quantize_int8(randn(out_f, in_f, seed=1))
    x = randn(rows, in_f).to(dtype)
    expect = x.float() @ dequantize_int8(q, s).t()
    got = qt.quantized_matmul(x.to(DEVICE), q.to(DEVICE), s.to(DEVICE), 8, 0)
    assert got.shape == (rows, out_f) and got.dtype == dtype
    torch.testing.assert_close(got.float().cpu(), expect, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("rows,out_f,in_f", SHAPES)
def test_int4_matches_dequantize_reference(rows: int, out_f: int, in_f: int, group: int, dtype: torch.dtype) -> None:
    q, s = quantize_int4(randn(out_f, in_f, seed=1), group)
    x = randn(rows, in_f).to(dtype)
    expect = x.float() @ dequantize_int4(q, s, group).t()
    got = qt.quantized_matmul(x.to(DEVICE), q.to(DEVICE), s.to(DEVICE), 4, group)
    assert got.shape == (rows, out_f) and got.dtype == dtype
    torch.testing.assert_close(got.float().cpu(), expect, **TOL[dtype])


def test_quantized_linear_dispatches_to_triton_with_batch_dims() -> None:
    # The model's call: (B, T, in) through QuantizedLinear with the backend forced to Triton.
    layer = QuantizedLinear.from_weight(randn(48, 64, seed=2), QuantSpec(4, 32)).to(DEVICE)
    x = randn(2, 5, 64).to(DEVICE)
    try:
        kernels.use_backend("triton")
        got = layer(x)
    finally:
        kernels.use_backend("auto")
    expect = x @ layer.dequantized().t()
    assert got.shape == (2, 5, 48)
    torch.testing.assert_close(got, expect, **TOL[torch.float32])
