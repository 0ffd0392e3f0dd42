"""The single dispatch point for the model's hot ops.

The model calls `rms_norm`, `apply_rotary`, `silu_mul` and `attention` from here. On CUDA with Triton
installed these are Triton kernels; everywhere else they are the plain PyTorch references. Tests force
either path with `use_backend("reference" | "triton")`.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch

from engine.kernels import reference
from engine.kernels.int8_kv import Int8KV

if TYPE_CHECKING:
    from engine.quant import QuantizedLinear

_backend_name = "auto"


def use_backend(name: str) -> None:
    """'auto' (Triton for CUDA tensors when available), 'reference' or 'triton'."""
    global _backend_name
    if name not in ("auto", "reference", "triton"):
        raise ValueError(f"unknown kernel backend {name!r}")
    _backend_name = name


def backend_name() -> str:
    """The backend set by `use_backend` ('auto' unless a test forced one)."""
    return _backend_name


def _triton_module() -> ModuleType | None:
    try:
        from engine.kernels import triton_ops
    except ImportError:
        return None
    return triton_ops


def _impl(x: torch.Tensor) -> ModuleType:
    if _backend_name == "reference":
        return reference
    if _backend_name == "triton":
        mod = _triton_module()
        if mod is None:
            raise RuntimeError("Triton kernels requested but triton is not installed")
        return mod
    if x.is_cuda:
        mod = _triton_module()
        if mod is not None:
            return mod
    return reference


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _impl(x).rms_norm(x, weight, eps)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _impl(q).apply_rotary(q, k, cos, sin)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _impl(gate).silu_mul(gate, up)


def attention(q: torch.Tensor, k: torch.Tensor | Int8KV, v: torch.Tensor | Int8KV, mask: torch.Tensor | None,
              is_causal: bool) -> torch.Tensor:
    return _impl(q).attention(q, k, v, mask, is_causal)


# ---- weight-only quantized matmul (engine/quant.py's QuantizedLinear calls this) -----------------


def _quant_triton_module() -> ModuleType | None:
    try:
        from engine.kernels import quant_triton
    except ImportError:
        return None
    return quant_triton


def quantized_matmul(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """x @ W^T for a QuantizedLinear: Triton on CUDA, PyTorch's weight-only ops on CPU, and the
    dequantize-then-matmul reference for anything else (or when the backend is 'reference')."""
    use_triton = _backend_name == "triton" or (_backend_name == "auto" and x.is_cuda)
    if use_triton:
        mod = _quant_triton_module()
        if mod is not None:
            qweight, scales = layer.canonical()
            return mod.quantized_matmul(x, qweight, scales, layer.spec.bits, layer.spec.group_size)
        if _backend_name == "triton":
            raise RuntimeError("Triton kernels requested but triton is not installed")
    if _backend_name == "auto" and x.device.type == "cpu":
        from engine.kernels import quant_cpu

        return quant_cpu.quantized_matmul(layer, x)
    return torch.nn.functional.linear(x, layer.dequantized(x.dtype))


def int4_unavailable_reason(device: torch.device, group_size: int) -> str | None:
    """Why int4 weights cannot run fast on `device` with this build (None: they can)."""
    if device.type == "cuda":
        if _quant_triton_module() is None:
            return "int4 on CUDA needs Triton, which is not installed"
        if group_size % 16:
            return f"the Triton int4 kernel needs a group size that is a multiple of 16, not {group_size}"
        return None
    if device.type == "cpu":
        from engine.kernels import quant_cpu

        if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            return f"this PyTorch build ({torch.__version__}) has no CPU int4 matmul"
        if group_size not in quant_cpu.CPU_INT4_GROUP_SIZES:
            return f"the CPU int4 matmul takes group sizes {quant_cpu.CPU_INT4_GROUP_SIZES}, not {group_size}"
        return None
    return f"no int4 kernel for device {device.type!r}"
