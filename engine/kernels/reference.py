"""Plain PyTorch versions of every op the model calls: the CPU path and the reference kernels are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in float32 as Llama does, then scale in the input dtype.
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.type_as(x) * weight


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, T, Hq, D) and k (B, T, Hk, D) by position; cos/sin are float32 (T, D/2).

    Weights are kept in the "rotate half" row order (Hugging Face's), so pair i is (i, i + D/2).
    """
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)

    return rotate(q), rotate(k)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
) -> torch.Tensor:
    """q (B, Hq, T, D), k/v (B, Hk, S, D) with Hq a multiple of Hk; returns (B, Hq, T, D).

    `mask` is a boolean (T, S) allow-mask, or None with `is_causal` saying whether T == S causal applies.
    PyTorch's SDPA picks a memory-efficient kernel, so no (T, S) score matrix is kept for long prompts.
    """
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
