"""Quantized matmul on CPU with PyTorch's own weight-only kernels (the fastest measured here, see
benchmarks/quant_matmul.py and benchmarks/RESULTS.md).

Measured (2 cores, AMX): for a few rows (decode) these ops take 0.3-0.8x the time of the bf16 matmul
of the same shape; for hundreds of rows (prefill) 12-30x, where converting the weight to x's dtype
and using the dense matmul costs 1.5x (int8) and 3x (int4) bf16's. So: the packed ops up to
PACKED_OP_MAX_ROWS rows, dequantize-then-matmul above. The dequantized weight goes into one scratch
buffer per thread, reused by every layer (the size of the largest one: 90 MB of bf16 for 7B's MLP):
a fresh 32 MB tensor per call cost more in page faults (~40 ms at 4096x4096 here) than the conversion.

int8: aten._weight_int8pack_mm takes our format as is (int8 [out, in], scales [out] in x's dtype).
int4: aten._weight_int4pack_mm_for_cpu wants its own layout, built once per layer by
_convert_weight_to_int4pack_for_cpu from values 0..15, and (scale, zero) pairs [groups, out, 2] with
w = (q - 8) * scale + zero: our symmetric format is zero = 0. It needs whole groups: when the group
does not divide the input width, the weight is padded with zero columns and x with zeros to match;
it also needs the output width in multiples of 16 (padded rows, sliced off the result).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from engine.quant import QuantizedLinear, QuantSpec, unpack_int4

CPU_INT4_GROUP_SIZES = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts
PACKED_OP_MAX_ROWS = 8


def int4_supported(spec: QuantSpec) -> bool:
    return spec.group_size in CPU_INT4_GROUP_SIZES and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def int8_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), qweight, scales.to(x.dtype))
    return y.view(*shape[:-1], qweight.shape[0])


def pack_int4_for_cpu(
    qweight: torch.Tensor, scales: torch.Tensor, spec: QuantSpec, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Our int4 tensors -> (packed weight, scales-and-zeros) in the layout of the CPU kernel."""
    nibbles = unpack_int4(qweight)
    in_f = nibbles.shape[1]
    padded = scales.shape[1] * spec.group_size
    # Padding columns hold nibble 8, i.e. q = 0: they add nothing whatever x's padding holds.
    out_padded = -(-nibbles.shape[0] // 16) * 16
    nibbles = F.pad(nibbles, (0, padded - in_f, 0, out_padded - nibbles.shape[0]), value=8)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.to(torch.int32), 1)
    scale_t = F.pad(scales.t(), (0, out_padded - scales.shape[0])).to(dtype)
    scales_and_zeros = torch.stack((scale_t, torch.zeros_like(scale_t)), dim=-1).contiguous()
    return packed, scales_and_zeros


def int4_matmul(
    x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor], spec: QuantSpec, in_features: int,
    out_features: int,
) -> torch.Tensor:
    weight, scales_and_zeros = packed
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    padded = scales_and_zeros.shape[0] * spec.group_size
    if padded != in_features:
        x2 = F.pad(x2, (0, padded - in_features))
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, weight, spec.group_size, scales_and_zeros)
    if y.shape[1] != out_features:
        y = y[:, :out_features]
    return y.reshape(*shape[:-1], out_features)


_scratch = threading.local()


def _weight_buffer(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    buf: torch.Tensor | None = getattr(_scratch, "buf", None)
    if buf is None or buf.dtype != dtype or buf.numel() < rows * cols:
        buf = _scratch.buf = torch.empty(rows * cols, dtype=dtype)
    return buf[: rows * cols].view(rows, cols)


def dequantize_into_scratch(layer: QuantizedLinear, dtype: torch.dtype) -> torch.Tensor:
    """The layer's weight in `dtype`, without its int8 scales (the caller multiplies the output by
    them), or with its int4 group scales, in the thread's scratch buffer: valid until the next call."""
    if layer.spec.bits == 8:
        return _weight_buffer(layer.out_features, layer.in_features, dtype).copy_(layer.qweight)
    n_groups, group = layer.scales.shape[1], layer.spec.group_size
    if n_groups * group != layer.in_features:  # a short last group: the plain way
        return layer.dequantized(dtype)
    w = _weight_buffer(layer.out_features, layer.in_features, dtype)
    pairs = w.view(layer.out_features, -1, 2)
    pairs[..., 0].copy_(layer.qweight & 0xF)
    pairs[..., 1].copy_(layer.qweight >> 4)
    grouped = w.view(layer.out_features, n_groups, group)
    scales = layer.scales.to(dtype)[..., None]
    grouped.sub_(8).mul_(scales)
    return w


def quantized_matmul(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if x.requires_grad:
        return F.linear(x, layer.dequantized(x.dtype))
    if rows > PACKED_OP_MAX_ROWS:
        y = F.linear(x, dequantize_into_scratch(layer, x.dtype))
        return y * layer.scales.to(x.dtype) if layer.spec.bits == 8 else y
    if layer.spec.bits == 8:
        return int8_matmul(x, layer.qweight, layer.scales)
    if not int4_supported(layer.spec):
        return F.linear(x, layer.dequantized(x.dtype))
    packed = layer._cpu_packed
    if packed is None or packed[1].dtype != x.dtype:
        packed = layer._cpu_packed = pack_int4_for_cpu(layer.qweight, layer.scales, layer.spec, x.dtype)
    return int4_matmul(x, packed, layer.spec, layer.in_features, layer.out_features)  # type: ignore[arg-type]
