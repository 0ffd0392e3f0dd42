"""The single dispatch point for the model's hot ops.

The model calls `rms_norm`, `apply_rotary`, `silu_mul` and `attention` from here. On CUDA with Triton
installed these are Triton kernels; everywhere else they are the plain PyTorch references. Tests force
either path with `use_backend("reference" | "triton")`.
"""

from __future__ import annotations

from types import ModuleType

import torch

from engine.kernels import reference
from engine.kernels.int8_kv import Int8KV

_backend_name = "auto"


def use_backend(name: str) -> None:
    """'auto' (Triton for CUDA tensors when available), 'reference' or 'triton'."""
    global _backend_name
    if name not in ("auto", "reference", "triton"):
        raise ValueError(f"unknown kernel backend {name!r}")
    _backend_name = name


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


def attention(
    q: torch.Tensor,
    k: torch.Tensor | Int8KV,
    v: torch.Tensor | Int8KV,
    mask: torch.Tensor | None,
    is_causal: bool,
) -> torch.Tensor:
    return _impl(q).attention(q, k, v, mask, is_causal)
