"""Quantized matmul on CPU with PyTorch's own weight-only kernels (the fastest measured here, see
benchmarks/quant_matmul.py and benchmarks/RESULTS.md).

Measured (2 cores, AMX): for a few rows (decode) these ops take 0.3-0.8x the time of the bf16 matmul
of the same shape; for hundreds of rows (prefill) 12-30x, where converting the weight to x's dtype
and using the dense matmul costs 1.5x (int8) and 3x (int4) bf16's. So: the packed ops up to
PACKED_OP_MAX_ROWS rows, dequantize-then-matmul above. The dequantized weight goes into one scratch
buffer per thread, reused by every layer (the size of the largest one: 90 MB of bf16 for 7B's MLP):
a fresh 32 MB tensor per call cost more in page faults (~40 ms at 4096x4096 here) than the conversion.

int8: aten._weight_int8pack_mm takes our format as is (int8 [out, in], scales [out] in x's dtype).

int4: aten._weight_int4pack_mm_for_cpu wants its own layout, built by
_convert_weight_to_int4pack_for_cpu from values 0..15, and (scale, zero) pairs [groups, out, 2] with
w = (q - 8) * scale + zero: our symmetric format is zero = 0. It needs whole groups (the weight is
padded with zero columns, x with zeros) and, here, the output width in multiples of 64: then its
layout is simple (found by probing it; test_quant.py checks it): per block of 64 output rows, per input
column, 32 bytes, byte j holding row j in its low nibble and row j + 32 in its high one. The layer
keeps only that layout once it has run on CPU (`CpuInt4`): prefill dequantizes from it, and the
canonical tensors are rebuilt from it for saving or a move to another device.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.quant import QuantizedLinear, QuantSpec, pack_int4, unpack_int4

CPU_INT4_GROUP_SIZES = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts
PACKED_OP_MAX_ROWS = 8
# aten._weight_int8pack_mm reads its input in blocks of 16: with another width it returned wrong values
# (and, in a loop, crashed the process) here, on torch 2.13 (tests/engine/test_quant.py).
INT8_PACKED_OP_WIDTH = 16


def int4_supported(spec: QuantSpec) -> bool:
    return spec.group_size in CPU_INT4_GROUP_SIZES and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def int8_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    if qweight.shape[1] % INT8_PACKED_OP_WIDTH:  # not for the packed op: a dense matmul, as prefill does
        return F.linear(x, qweight.to(x.dtype)) * scales.to(x.dtype)
    if x.dim() == 2:  # rows already (a CPU decode step): no reshaping around the op
        return torch.ops.aten._weight_int8pack_mm(x, qweight, scales.to(x.dtype))
    shape = x.shape
    y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), qweight, scales.to(x.dtype))
    return y.view(*shape[:-1], qweight.shape[0])


OUT_BLOCK = 64  # output rows per block of the CPU int4 layout, with the output width padded to it


@dataclass
class CpuInt4:
    """A layer's int4 weight in the CPU kernel's layout: packed [out_padded, in_padded/2] uint8 and
    scales_and_zeros [groups, out_padded, 2] in the activations' dtype."""

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    out_features: int
    in_features: int

    @classmethod
    def from_canonical(cls, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                       dtype: torch.dtype) -> CpuInt4:
        nibbles = unpack_int4(qweight)
        out_f, in_f = nibbles.shape
        out_p, in_p = -(-out_f // OUT_BLOCK) * OUT_BLOCK, scales.shape[1] * group_size
        # Padding holds nibble 8, i.e. q = 0: it adds nothing whatever x's padding holds.
        nibbles = F.pad(nibbles, (0, in_p - in_f, 0, out_p - out_f), value=8)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.to(torch.int32), 1)
        scale_t = F.pad(scales.t(), (0, out_p - out_f)).to(dtype)
        scales_and_zeros = torch.stack((scale_t, torch.zeros_like(scale_t)), dim=-1).contiguous()
        return cls(packed, scales_and_zeros, out_f, in_f)

    def nibbles(self) -> torch.Tensor:
        """The values 0..15 [out_padded, in_padded], read back from the kernel's layout."""
        out_p, in_p = self.packed.shape[0], self.packed.shape[1] * 2
        blocks = self.packed.view(out_p // OUT_BLOCK, in_p, OUT_BLOCK // 2)
        rows = torch.cat((blocks & 0xF, blocks >> 4), dim=2)  # [block, in, 64]: rows j and j + 32
        return rows.transpose(1, 2).reshape(out_p, in_p)

    def canonical(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(qweight, scales) in engine/quant.py's format."""
        nibbles = self.nibbles()[: self.out_features, : self.in_features]
        scales = self.scales_and_zeros[:, : self.out_features, 0].t().to(torch.bfloat16).contiguous()
        return pack_int4(nibbles.contiguous()), scales

    def dequantize_into(self, w: torch.Tensor, group_size: int) -> torch.Tensor:
        """The weight [out_padded, in_padded] in w's dtype, written into w."""
        out_p, in_p = w.shape
        blocks = self.packed.view(out_p // OUT_BLOCK, in_p, OUT_BLOCK // 2)
        halves = w.view(out_p // OUT_BLOCK, 2, OUT_BLOCK // 2, in_p)
        halves[:, 0].copy_((blocks & 0xF).transpose(1, 2))
        halves[:, 1].copy_((blocks >> 4).transpose(1, 2))
        scales = self.scales_and_zeros[..., 0].t().to(w.dtype)[..., None]  # [out_p, groups, 1]
        w.view(out_p, -1, group_size).sub_(8).mul_(scales)
        return w

    def nbytes(self) -> int:
        return self.packed.nbytes + self.scales_and_zeros.nbytes


def int4_matmul(x: torch.Tensor, weight: CpuInt4, group_size: int) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    in_p = weight.packed.shape[1] * 2
    if in_p != weight.in_features:
        x2 = F.pad(x2, (0, in_p - weight.in_features))
    # A layer fused with others (engine/fused.py) holds a view of its columns of the scales: the kernel
    # reads them as if contiguous, so they are copied first (only such a layer's rare own runs pay it).
    scales_and_zeros = weight.scales_and_zeros.contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, weight.packed, group_size, scales_and_zeros)
    return y[:, : weight.out_features].reshape(*shape[:-1], weight.out_features)


_scratch = threading.local()


def _weight_buffer(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    buf: torch.Tensor | None = getattr(_scratch, "buf", None)
    # A buffer made under inference mode (a decode step's prefill) cannot be written outside it
    # (training, or a test, running the same layers next): that needs a buffer of its own.
    stale = buf is not None and buf.is_inference() and not torch.is_inference_mode_enabled()
    if buf is None or stale or buf.dtype != dtype or buf.numel() < rows * cols:
        buf = _scratch.buf = torch.empty(rows * cols, dtype=dtype)
    return buf[: rows * cols].view(rows, cols)


def quantized_matmul(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if x.requires_grad or (layer.spec.bits == 4 and not int4_supported(layer.spec)):
        return F.linear(x, layer.dequantized(x.dtype))
    if layer.spec.bits == 8:
        if rows <= PACKED_OP_MAX_ROWS:
            return int8_matmul(x, layer.qweight, layer.scales)
        # The scales multiply the output: one conversion of the weight, no multiply.
        w = _weight_buffer(layer.out_features, layer.in_features, x.dtype).copy_(layer.qweight)
        return F.linear(x, w) * layer.scales.to(x.dtype)
    cpu = layer.cpu_int4(x.dtype)
    if rows <= PACKED_OP_MAX_ROWS:
        return int4_matmul(x, cpu, layer.spec.group_size)
    out_p, in_p = cpu.packed.shape[0], cpu.packed.shape[1] * 2
    w = cpu.dequantize_into(_weight_buffer(out_p, in_p, x.dtype), layer.spec.group_size)
    if in_p != layer.in_features:
        x = F.pad(x, (0, in_p - layer.in_features))
    return F.linear(x, w)[..., : layer.out_features]
