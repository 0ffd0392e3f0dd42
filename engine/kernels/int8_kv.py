"""The int8 KV cache's numbers: rows quantized with one scale each, and attention that reads them.

A row is the `head_dim` values of one (batch, head, position). Quantization is symmetric absmax:
scale = max|x| / 127, values = round(x / scale), so x ~= values * scale with an error of at most
scale / 2 per element. Scales are float32: 4 bytes beside 64-128 int8 values, 3-6 % of the row.

`int8_attention` never builds a float copy of the whole cache: it walks the keys in chunks, turns
one chunk of int8 K and V into float32 at a time, and multiplies the scales into the scores
(q . k_int8 * k_scale) and the probabilities (p * v_scale) instead of into K and V. That is the decode
step's path (one query: `_one_query`, scores first, then values; several queries with a mask: an
online softmax over the chunks). A prefill chunk (many queries) instead dequantizes its layer's K/V once and
calls SDPA's fused kernel (see reference.attention): the conversion is paid once for up to 1,024
queries, and the chunked path was 10x slower there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Int8KV:
    """Keys or values of a cache: `values` (B, H, S, D) int8 and `scales` (B, H, S) float32."""

    values: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def dequantize(self, dtype: torch.dtype = torch.float32, chunk: int = 4096) -> torch.Tensor:
        """All of (B, H, S, D) in `dtype`, converted `chunk` positions at a time (so the float32
        intermediate stays small). Attention does this for a prefill chunk only, one layer at a time."""
        out = torch.empty(self.values.shape, dtype=dtype, device=self.values.device)
        for lo in range(0, self.values.shape[2], chunk):
            hi = lo + chunk
            out[:, :, lo:hi] = self.values[:, :, lo:hi].float() * self.scales[:, :, lo:hi, None]
        return out


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) -> int8 values (..., D) and float32 scales (...): x ~= values * scales[..., None]."""
    x32 = x.float()
    absmax = x32.abs().amax(-1)
    # |x| * 127 / absmax <= 127, so no clamp; an all-zero row gets scale 0 and values 0 (the floor on
    # absmax only avoids 0/0). Few ops: a decode step quantizes one row per head per layer.
    values = (x32 * (127.0 / absmax.clamp_min(1e-30))[..., None]).round_().to(torch.int8)
    return values, absmax / 127.0


# Keys per chunk. Measured on this machine (1 thread, one query, interleaved medians, ms per layer):
# 5 heads of 64 at 16K keys: bf16 (whole-cache float32 copy) 9.3, int8 chunks of 128/256/512/1024/2048
# 9.7/5.8/4.8/6.6/5.5; 32 heads of 128 at 4K keys: bf16 64, int8 19.9/17.7/22.1/33.4/58.5.
KEY_CHUNK = 512
# On CUDA every chunk costs a dozen kernel launches, so chunks are as large as this many bytes of
# float32 scores or keys allow (a 7B prefill chunk of 1,024 queries: 2,048 keys; a decode step: 16K).
# CUDA decode normally takes the Triton kernel instead; this path is the prefill after a cached prefix.
CUDA_CHUNK_BYTES = 256 * 2**20


def key_chunk(q_shape: tuple[int, ...], n_kv: int, cuda: bool) -> int:
    """Keys per chunk for queries of shape (B, Hq, T, D) over `n_kv` KV heads."""
    if not cuda:
        return KEY_CHUNK
    bsz, n_heads, t, d = q_shape
    per_key = 4 * bsz * max(n_heads * t, n_kv * d)  # float32 bytes of scores, or of dequantized keys, per key
    return max(KEY_CHUNK, CUDA_CHUNK_BYTES // per_key)


def int8_attention(
    q: torch.Tensor,
    k: Int8KV,
    v: Int8KV,
    mask: torch.Tensor | None,
    is_causal: bool,
    chunk: int | None = None,
) -> torch.Tensor:
    """Same contract as `reference.attention` with int8 K/V: q (B, Hq, T, D) -> (B, Hq, T, D).

    `mask` is a boolean (T, S) allow-mask; `is_causal` means query i sees keys <= i + (S - T).
    Online softmax over chunks of keys (`chunk` keys each; default `key_chunk`), in float32. Query heads
    are grouped over their KV head (head h uses KV head h // group), so grouped-query attention copies
    nothing.
    """
    bsz, n_heads, t, d = q.shape
    n_kv, s_len = k.values.shape[1], k.values.shape[2]
    chunk = chunk or key_chunk(tuple(q.shape), n_kv, q.is_cuda)
    group = n_heads // n_kv
    rows = group * t  # query rows per KV head, ordered (group, T)
    qg = q.reshape(bsz, n_kv, rows, d).float() * d**-0.5
    q_pos = torch.arange(s_len - t, s_len, device=q.device)[:, None] if is_causal else None
    if t == 1 and mask is None:
        return _one_query(qg, k, v, chunk).reshape(bsz, n_heads, t, d).to(q.dtype)
    if s_len <= chunk:  # one chunk: a plain softmax, no running maximum
        scores = (qg @ k.values.float().transpose(-1, -2)) * k.scales[:, :, None, :]
        allow = _allowed(mask, q_pos, 0, s_len, q.device)
        if allow is not None:
            scores.view(bsz, n_kv, group, t, s_len).masked_fill_(~allow, float("-inf"))
        out = (scores.softmax(-1) * v.scales[:, :, None, :]) @ v.values.float()
        return out.reshape(bsz, n_heads, t, d).to(q.dtype)
    m = torch.full((bsz, n_kv, rows, 1), float("-inf"), device=q.device)
    l_sum = torch.zeros((bsz, n_kv, rows, 1), device=q.device)
    acc = torch.zeros((bsz, n_kv, rows, d), device=q.device)
    for lo in range(0, s_len, chunk):
        hi = min(lo + chunk, s_len)
        scores = (qg @ k.values[:, :, lo:hi].float().transpose(-1, -2)) * k.scales[:, :, None, lo:hi]
        allow = _allowed(mask, q_pos, lo, hi, q.device)
        if allow is not None:
            scores.view(bsz, n_kv, group, t, hi - lo).masked_fill_(~allow, float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        # Rows with no allowed key so far keep m = -inf; shift them by 0 so exp gives 0, not NaN.
        shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(scores - shift)
        alpha = torch.exp(m - shift)
        l_sum = l_sum * alpha + p.sum(-1, keepdim=True)
        acc = acc * alpha + (p * v.scales[:, :, None, lo:hi]) @ v.values[:, :, lo:hi].float()
        m = m_new
    out = acc / l_sum.clamp_min(torch.finfo(torch.float32).tiny)
    return out.reshape(bsz, n_heads, t, d).to(q.dtype)


def _one_query(qg: torch.Tensor, k: Int8KV, v: Int8KV, chunk: int) -> torch.Tensor:
    """A decode step (qg (B, Hk, group, D), scaled): its scores are only S floats per head, so they are
    all computed first (one chunk of keys in float32 at a time), then one softmax, then the values
    chunk by chunk. Three ops a chunk instead of the online softmax's twenty: at 16K keys the op count,
    not the arithmetic, was what made the int8 decode slower than bf16."""
    s_len = k.values.shape[2]
    scores = torch.empty((*qg.shape[:3], s_len), device=qg.device)
    for lo in range(0, s_len, chunk):
        scores[..., lo : lo + chunk] = qg @ k.values[:, :, lo : lo + chunk].float().transpose(-1, -2)
    p = scores.mul_(k.scales[:, :, None, :]).softmax(-1).mul_(v.scales[:, :, None, :])
    out = p[..., :chunk] @ v.values[:, :, :chunk].float()
    for lo in range(chunk, s_len, chunk):
        out += p[..., lo : lo + chunk] @ v.values[:, :, lo : lo + chunk].float()
    return out


def _allowed(
    mask: torch.Tensor | None, q_pos: torch.Tensor | None, lo: int, hi: int, device: torch.device
) -> torch.Tensor | None:
    """The (T, hi - lo) allow-mask for keys [lo, hi), or None when every key is allowed."""
    if mask is not None:
        return mask[:, lo:hi]
    if q_pos is None:
        return None
    return torch.arange(lo, hi, device=device)[None, :] <= q_pos
