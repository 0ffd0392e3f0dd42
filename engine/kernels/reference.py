"""Plain PyTorch versions of every op the model calls: the CPU path and the reference kernels are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kernels.int8_kv import Int8KV, int8_attention


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in float32 as Llama does, then scale in the input dtype. torch.rms_norm is one op for
    # pow, mean, add, rsqrt and mul, with the same bits (tests/engine/test_kernels_reference.py).
    return torch.rms_norm(x.float(), (x.shape[-1],), eps=eps).type_as(x) * weight


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, T, Hq, D) and k (B, T, Hk, D) by position; cos/sin are float32 (T, D/2).

    Weights are kept in the "rotate half" row order (Hugging Face's), so pair i is (i, i + D/2):
    out = (x1 cos - x2 sin, x2 cos + x1 sin) = x * (cos, cos) + roll(x, D/2) * (-sin, sin), the same
    bits in half the ops (a decode step runs this in every layer).
    """
    cos2, sin2 = rotary_tables(cos, sin)
    cos2, sin2 = cos2[None, :, None, :], sin2[None, :, None, :]
    return rotate(q, cos2, sin2), rotate(k, cos2, sin2)


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, cos) and (-sin, sin) along the last dim: what `rotate` multiplies by."""
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def rotate(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """x * (cos, cos) + roll(x, D/2) * (-sin, sin) in float32, back in x's dtype (see apply_rotary)."""
    x32 = x.float()
    return (x32 * cos2 + x32.roll(x.shape[-1] // 2, dims=-1) * sin2).type_as(x)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def attention(q: torch.Tensor, k: torch.Tensor | Int8KV, v: torch.Tensor | Int8KV, mask: torch.Tensor | None,
              is_causal: bool) -> torch.Tensor:
    """q (B, Hq, T, D), k/v (B, Hk, S, D) with Hq a multiple of Hk; returns (B, Hq, T, D).

    `mask` is a boolean (T, S) allow-mask, or None. `is_causal` (with no mask): the T queries are the
    last T positions of the S keys, each seeing the keys up to its own (T == S: ordinary causal; T < S:
    a chunk of a prompt after a cached prefix).
    PyTorch's SDPA picks a memory-efficient kernel, so no (T, S) score matrix is kept for long prompts.
    An int8 cache (Int8KV): one query (a decode step) goes to `int8_attention`, which reads the int8
    cache a chunk of keys at a time; a chunk of queries (prefill after a cached prefix) dequantizes
    this layer's K/V to q's dtype once and takes SDPA's fused kernel. Measured here (1,024 queries
    over 4K keys, 5 heads of 64, 2 threads under load): SDPA 156 ms, the chunked int8 path 850-2,470 ms.
    """
    if isinstance(k, Int8KV) or isinstance(v, Int8KV):
        assert isinstance(k, Int8KV) and isinstance(v, Int8KV), "K and V must both be int8 or neither"
        if q.shape[2] == 1:
            return int8_attention(q, k, v, mask, is_causal)
        k, v = k.dequantize(q.dtype), v.dequantize(q.dtype)
    row_by_row = q.device.type == "cpu" and k.shape[2] <= ONE_QUERY_MAX_KEYS  # a query at a time, in float32
    if q.shape[2] == 1 and mask is None and row_by_row:
        return _one_query_attention(q, k, v)
    if mask is None and is_causal and q.shape[2] < k.shape[2]:  # a prompt chunk after cached keys
        if (q.device.type == "cpu" and q.shape[1] == k.shape[1] and not _needs_grad(q, k, v)
                and not (q.shape[2] <= FEW_QUERIES and row_by_row)):
            return _prefix_then_causal(q, k.to(q.dtype), v.to(q.dtype))
        mask, is_causal = causal_mask(q.shape[2], k.shape[2], q.device), False
    if mask is not None and q.shape[2] <= FEW_QUERIES and row_by_row:
        return _few_queries_attention(q, k, v, mask)  # in float32, whatever the cache stores
    if k.dtype != q.dtype:  # a cache of another dtype than the model's (float32 under bf16): SDPA needs one
        k, v = k.to(q.dtype), v.to(q.dtype)
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)


def causal_mask(queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """(queries, keys) allow-mask for the last `queries` of `keys` positions, each seeing up to itself."""
    q_pos = torch.arange(keys - queries, keys, device=device)
    return torch.arange(keys, device=device)[None, :] <= q_pos[:, None]


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _prefix_then_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bottom-right causal attention of a chunk of T queries over S > T keys, on CPU, without a mask:
    every query sees all S - T earlier keys (one unmasked pass) and the chunk's own keys causally (a
    causal pass over T x T), merged by their log-sum-exps. PyTorch's CPU flash kernel takes a boolean
    mask by converting it to an additive float one in every layer and scores every (query, key) pair;
    this skips both (an 8K prompt's prefill 2.4 -> 1.9 s on one thread, benchmarks/RESULTS.md)."""
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    cached = k.shape[2] - q.shape[2]
    out_before, lse_before = flash(q, k[:, :, :cached], v[:, :, :cached])[:2]
    out_own, lse_own = flash(q, k[:, :, cached:], v[:, :, cached:], is_causal=True)[:2]
    weight = torch.sigmoid(lse_before - lse_own).unsqueeze(-1)  # share of the earlier keys' mass
    return torch.lerp(out_own.float(), out_before.float(), weight).to(q.dtype)


# Measured here (5 heads of 64, bf16 cache, 2 threads, interleaved medians): 8.5x faster than SDPA at
# 2K keys, 3.3x at 4K and 8K, 1.6x at 16K; beyond that the float32 copies of K and V cost what they save.
ONE_QUERY_MAX_KEYS = 16384
# A pass over this few new tokens (a speculative decoding verification, a short keystroke prefill) runs
# each query as a decode step would.
FEW_QUERIES = 16


def _one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A decode step on CPU: one query per head over the whole cache, in float32.

    PyTorch's CPU flash kernel is built for blocks of queries: with a single one it took 1.2 ms per
    layer at 4K keys (5 heads of 64) where two float32 matrix-vector products take 0.3 ms. Query heads
    are grouped over their key/value head (head h uses kv head h // group), so grouped-query attention
    needs no copy of K or V.
    """
    return _one_query_float_attention(q, k.float(), v.float())


def _one_query_float_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    bsz, n_heads, _, head_dim = q.shape
    n_kv = k.shape[1]
    qg = q.reshape(bsz, n_kv, n_heads // n_kv, head_dim).float()
    if bsz == 1:  # three-dimensional products: the four-dimensional ones copied K and V (a slice of
        # the cache's buffers) first, for every query of a verification pass (the same bits either way)
        return grouped_attention(qg[0], k[0], v[0]).view(1, n_heads, 1, head_dim).to(q.dtype)
    scores = (qg @ k.transpose(-1, -2)) * head_dim**-0.5  # (B, Hk, group, S)
    out = scores.softmax(-1) @ v  # (B, Hk, group, D)
    return out.reshape(bsz, n_heads, 1, head_dim).to(q.dtype)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Float32 q (Hk, group, D) over float32 k/v (Hk, S, D): (Hk, group, D), query heads grouped over
    their key/value head."""
    scores = torch.bmm(q, k.transpose(1, 2)) * q.shape[-1] ** -0.5
    return torch.bmm(scores.softmax(-1), v)


def _few_queries_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A few queries, each over the keys its row of the causal `mask` allows (a prefix [0, n)), computed
    exactly as `_one_query_attention` computes a decode step: the logits a verification pass gives for
    drafted tokens are then bit for bit those of one-token steps, and greedy output does not change."""
    visible = mask.sum(-1).tolist()  # keys seen by each query; the model's masks are prefix-shaped
    k, v = k[:, :, : max(visible)].float(), v[:, :, : max(visible)].float()  # one float32 copy for all
    return torch.cat(
        [_one_query_float_attention(q[:, :, i : i + 1], k[:, :, :n], v[:, :, :n]) for i, n in enumerate(visible)],
        dim=2,
    )
