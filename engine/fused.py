"""Projections of the same input as one matmul, for one-token decode steps on CPU.

On a small model a CPU decode step costs per op, not per weight byte (benchmarks/RESULTS.md): q, k
and v read the same normalised input, and so do the MLP's gate and up, so one matmul over their
weights stacked by rows replaces three (and two). The stacked weight owns the memory and each
projection's own weight becomes a view of its rows: nothing is held twice, the state dict and every
caller that reads `wq.weight` (saving, export, adapters, training) see the same tensors as before, and
whatever writes a projection's weight in place (an adapter merged in, and taken out) writes the
stacked one too.

Only for one row of input: then the packed int8/int4 ops and the dense bf16/float32 matmul give each
output column the same bits whatever columns are computed beside it (tests/engine/test_fused.py), so
greedy output does not change. For several rows the int8 op does not, so prefill and verification
passes keep the separate matmuls. The fused form is skipped (the projections run one by one) whenever
it would not compute what they compute: a projection wrapped or given a run-time adapter (LoRA), its
weight replaced or moved, gradients on, or a kernel backend forced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine import kernels
from engine.quant import QuantizedLinear


def _storage_of(layer: nn.Module) -> torch.Tensor:
    """The tensor a projection computes with (its rows of the stacked weight once fused)."""
    if isinstance(layer, QuantizedLinear):
        return layer._cpu.packed if layer._cpu is not None else layer.qweight
    assert isinstance(layer, nn.Linear)
    return layer.weight


class FusedProjections:
    """Bias-free projections of one input (all nn.Linear, or all QuantizedLinear of one spec) stacked
    into one weight; calling it returns each projection's output for an input of one row."""

    def __init__(self, parts: Sequence[nn.Module], dtype: torch.dtype) -> None:
        self.parts = tuple(parts)
        self.dtype = dtype
        self._matmul: Callable[[torch.Tensor], torch.Tensor]
        # Where each projection's output starts in the stacked output, and how wide it is.
        self._columns: list[tuple[int, int]] = []
        first = self.parts[0]
        with torch.no_grad():
            if isinstance(first, QuantizedLinear) and first.spec.bits == 4:
                self._stack_int4()
            elif isinstance(first, QuantizedLinear):
                self._stack_int8()
            else:
                self._stack_dense()
        self._pointers = [_storage_of(p).data_ptr() for p in self.parts]

    # ---- building ---------------------------------------------------------------------------------

    def _rows(self, widths: list[int]) -> list[tuple[int, int]]:
        starts = [sum(widths[:i]) for i in range(len(widths))]
        return [(s, s + w) for s, w in zip(starts, widths, strict=True)]

    def _stack_dense(self) -> None:
        layers: list[nn.Linear] = list(self.parts)  # type: ignore[arg-type]
        weight = torch.cat([p.weight.detach() for p in layers])
        for p, (a, b) in zip(layers, self._rows([p.out_features for p in layers]), strict=True):
            p.weight.data = weight[a:b]
            self._columns.append((a, b - a))
        self._matmul = lambda x: F.linear(x, weight)

    def _stack_int8(self) -> None:
        from engine.kernels.quant_cpu import int8_matmul

        layers: list[QuantizedLinear] = list(self.parts)  # type: ignore[arg-type]
        qweight = torch.cat([p.qweight for p in layers])
        scales = torch.cat([p.scales for p in layers])
        for p, (a, b) in zip(layers, self._rows([p.out_features for p in layers]), strict=True):
            p.qweight, p.scales = qweight[a:b], scales[a:b]
            self._columns.append((a, b - a))
        self._matmul = lambda x: int8_matmul(x, qweight, scales)

    def _stack_int4(self) -> None:
        """The CPU kernel's layout pads each weight's rows to a block of 64: the stacked layout is the
        padded ones end to end, so each projection's rows are a whole number of blocks."""
        from engine.kernels.quant_cpu import CpuInt4, int4_matmul

        layers: list[QuantizedLinear] = list(self.parts)  # type: ignore[arg-type]
        own = [p.cpu_int4(self.dtype) for p in layers]
        packed = torch.cat([c.packed for c in own])
        scales_and_zeros = torch.cat([c.scales_and_zeros for c in own], dim=1)
        for p, c, (a, b) in zip(layers, own, self._rows([c.packed.shape[0] for c in own]), strict=True):
            p._cpu = CpuInt4(packed[a:b], scales_and_zeros[:, a:b], c.out_features, c.in_features)
            self._columns.append((a, c.out_features))
        stacked = CpuInt4(packed, scales_and_zeros, packed.shape[0], own[0].in_features)
        group = layers[0].spec.group_size
        self._matmul = lambda x: int4_matmul(x, stacked, group)

    # ---- running ----------------------------------------------------------------------------------

    def applies(self, x: torch.Tensor, parts: Sequence[nn.Module]) -> bool:
        """Whether the stacked matmul computes what `parts` (the owner's projections now) would for x."""
        if x.shape[-2] != 1 or x.dtype != self.dtype or torch.is_grad_enabled() or x.device.type != "cpu":
            return False
        if kernels.backend_name() != "auto":
            return False
        for part, mine, pointer in zip(parts, self.parts, self._pointers, strict=False):
            if part is not mine or getattr(part, "lora", None) is not None:
                return False
            if _storage_of(part).data_ptr() != pointer:
                return False
        return True

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self._matmul(x)
        return [y[..., a : a + n] for a, n in self._columns]


def fusable(parts: Sequence[nn.Module]) -> bool:
    """Projections that can be stacked: all dense without bias in one dtype, or all quantized alike
    (int4 only where the CPU kernel runs it)."""
    quantized = [p for p in parts if isinstance(p, QuantizedLinear)]
    if quantized:
        spec, width = quantized[0].spec, quantized[0].in_features
        if len(quantized) != len(parts) or any(p.spec != spec or p.in_features != width for p in quantized):
            return False
        if spec.bits == 4:
            from engine.kernels.quant_cpu import int4_supported

            return int4_supported(spec)
        return True
    dense = [p for p in parts if type(p) is nn.Linear and p.bias is None]
    return len(dense) == len(parts) and all(
        p.weight.dtype == dense[0].weight.dtype and p.in_features == dense[0].in_features for p in dense)
