"""Triton versions of the model's hot ops, with the same signatures as `reference.py`.

Layering (Liger-Kernel style): `_*_kernel` (Triton) -> launcher (the public function, which checks
shapes, allocates outputs and picks block sizes). These kernels are forward-only: when autograd needs
a graph through an op (training on CUDA), the launcher hands the call to the reference instead.

Attention: a query of one token (decode) goes to a split-K "flash-decoding" kernel that reads each
KV head once for all the query heads of its group (no repeat of K/V). Longer queries (prefill) go to
PyTorch's SDPA, which picks FlashAttention for the causal case.

Under `TRITON_INTERPRET=1` every kernel also runs on CPU tensors (the tests use that).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from engine.kernels import reference
from engine.kernels.int8_kv import Int8KV

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_LOG2E = 1.4426950408889634


def _needs_autograd(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _out_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    return torch.promote_types(a.dtype, b.dtype)


# ---- RMSNorm ------------------------------------------------------------------------------------


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, x_row_stride, out_row_stride, n_cols, eps, BLOCK: tl.constexpr):
    # One program per row: y = (x * rsqrt(mean(x^2) + eps)) rounded to x's dtype, times weight.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=m, other=0.0)
    x32 = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x32 * x32, axis=0) / n_cols + eps)
    # Round to the input dtype before scaling, exactly as the reference does.
    normed = (x32 * rstd).to(x.dtype).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_row_stride + cols, (normed * w).to(out_ptr.dtype.element_ty), mask=m)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if _needs_autograd(x, weight):
        return reference.rms_norm(x, weight, eps)
    n = x.shape[-1]
    assert weight.shape == (n,), f"weight {tuple(weight.shape)} does not match last dim {n}"
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x2.shape, device=x.device, dtype=_out_dtype(x, weight))
    block = triton.next_power_of_2(n)
    num_warps = 8 if block >= 4096 else 4
    _rms_norm_kernel[(x2.shape[0],)](
        x2, weight.contiguous(), out, x2.stride(0), out.stride(0), n, eps, BLOCK=block, num_warps=num_warps
    )
    return out.view(x.shape)


# ---- rotary embedding ---------------------------------------------------------------------------


@triton.jit
def _rotate_heads(
    x_ptr, out_ptr, sxb, sxt, sxh, sob, sot, soh, b, t, n_heads, cos, sin, half,
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    # All heads of one token: pair i is (i, i + D/2) ("rotate half" row order), float32 math.
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    m = (heads < n_heads) & (cols < half)
    src = x_ptr + b * sxb + t * sxt + heads * sxh + cols
    x1 = tl.load(src, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=m, other=0.0).to(tl.float32)
    dst = out_ptr + b * sob + t * sot + heads * soh + cols
    ty = out_ptr.dtype.element_ty
    tl.store(dst, (x1 * cos - x2 * sin).to(ty), mask=m)
    tl.store(dst + half, (x2 * cos + x1 * sin).to(ty), mask=m)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr,
    sqb, sqt, sqh, skb, skt, skh, sqob, sqot, sqoh, skob, skot, skoh, s_cos,
    seqlen, n_q_heads, n_k_heads, half,
    BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    # One program per (batch, position): rotates the q heads and the k heads of that token.
    row = tl.program_id(0).to(tl.int64)
    b = row // seqlen
    t = row % seqlen
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    cos = tl.load(cos_ptr + t * s_cos + cols, mask=cols < half, other=0.0)
    sin = tl.load(sin_ptr + t * s_cos + cols, mask=cols < half, other=0.0)
    _rotate_heads(q_ptr, qo_ptr, sqb, sqt, sqh, sqob, sqot, sqoh, b, t, n_q_heads, cos, sin, half,
                  BLOCK_HQ, BLOCK_HALF)  # fmt: skip
    _rotate_heads(k_ptr, ko_ptr, skb, skt, skh, skob, skot, skoh, b, t, n_k_heads, cos, sin, half,
                  BLOCK_HK, BLOCK_HALF)  # fmt: skip


def _rotary_into(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_out: torch.Tensor,
    k_out: torch.Tensor,
) -> None:
    bsz, seqlen, n_q, d = q.shape
    n_k = k.shape[2]
    assert k.shape[:2] == (bsz, seqlen) and k.shape[3] == d, (
        f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree"
    )
    assert d % 2 == 0, f"head_dim {d} must be even"
    half = d // 2
    assert cos.shape == (seqlen, half) == sin.shape, (
        f"cos/sin {tuple(cos.shape)} should be ({seqlen}, {half})"
    )
    assert cos.dtype == torch.float32 and sin.dtype == torch.float32, "rotary tables must be float32"
    assert q.stride(-1) == k.stride(-1) == q_out.stride(-1) == k_out.stride(-1) == 1
    cos, sin = cos.contiguous(), sin.contiguous()
    _rotary_kernel[(bsz * seqlen,)](
        q, k, q_out, k_out, cos, sin,
        *q.stride()[:3], *k.stride()[:3], *q_out.stride()[:3], *k_out.stride()[:3], cos.stride(0),
        seqlen, n_q, n_k, half,
        BLOCK_HQ=triton.next_power_of_2(n_q), BLOCK_HK=triton.next_power_of_2(n_k),
        BLOCK_HALF=triton.next_power_of_2(half),
    )  # fmt: skip


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, T, Hq, D) and k (B, T, Hk, D); cos/sin float32 (T, D/2). Returns new tensors.

    Out of place on purpose: the same bytes move as in place, and callers' q/k stay intact.
    `apply_rotary_` is the in-place variant for callers that own their q/k.
    """
    if _needs_autograd(q, k):
        return reference.apply_rotary(q, k, cos, sin)
    q, k = _last_dim_contiguous(q), _last_dim_contiguous(k)
    q_out, k_out = (
        torch.empty_like(q, memory_format=torch.contiguous_format),
        torch.empty_like(k, memory_format=torch.contiguous_format),
    )
    _rotary_into(q, k, cos, sin, q_out, k_out)
    return q_out, k_out


def apply_rotary_(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-place rotary: overwrites q and k (their last dim must be contiguous) and returns them."""
    assert not _needs_autograd(q, k), "in-place rotary is for inference only"
    _rotary_into(q, k, cos, sin, q, k)
    return q, k


# ---- SwiGLU -------------------------------------------------------------------------------------


@triton.jit
def _silu_mul_kernel(g_ptr, u_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(g_ptr + offs, mask=m, other=0.0)
    u = tl.load(u_ptr + offs, mask=m, other=0.0).to(tl.float32)
    g32 = g.to(tl.float32)
    # silu rounded to the input dtype first, as F.silu(gate) * up does.
    act = (g32 * tl.sigmoid(g32)).to(g.dtype).to(tl.float32)
    tl.store(out_ptr + offs, (act * u).to(out_ptr.dtype.element_ty), mask=m)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if _needs_autograd(gate, up):
        return reference.silu_mul(gate, up)
    assert gate.shape == up.shape, f"gate {tuple(gate.shape)} and up {tuple(up.shape)} differ"
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty(gate.shape, device=gate.device, dtype=_out_dtype(gate, up))
    n = gate.numel()
    block = 1024
    _silu_mul_kernel[(triton.cdiv(n, block),)](gate, up, out, n, BLOCK=block)
    return out


# ---- decode attention (split-K flash decoding) --------------------------------------------------


@triton.jit(do_not_specialize=["len_arg"])  # one compiled kernel for every cache length
def _decode_partial_kernel(
    q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, len_arg, o_part_ptr, lse_part_ptr,
    sqb, sqh, skb, skh, sks, svb, svh, svs, sksb, sksh, svsb, svsh,
    n_kv_heads, group, head_dim, n_splits, qk_scale,
    LEN_IS_PTR: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_G: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INT8_KV: tl.constexpr,
):  # fmt: skip
    # Program (b * n_kv_heads + kv_head, split): the `group` query heads that share this KV head,
    # over one contiguous slice of the keys. Writes a normalised partial output and its log2-sum-exp.
    # INT8_KV: K/V are int8 with a float32 scale per position (ks_ptr/vs_ptr, strides sks*/svs* for
    # batch and head, 1 for position); each block is converted to q's dtype in registers and the
    # scales multiply the scores (k) and the probabilities (v), so the cache is read at 1 byte/element.
    pid_bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid_bh // n_kv_heads
    kvh = pid_bh % n_kv_heads
    if LEN_IS_PTR:
        length = tl.load(len_arg).to(tl.int32)  # static-cache decode: the length lives on the device
    else:
        length = len_arg
    # Split the keys into n_splits slices of whole blocks; trailing splits may be empty.
    chunk = tl.cdiv(tl.cdiv(length, n_splits), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_mask = g < group
    d_mask = d < head_dim
    q_heads = kvh * group + g  # (BLOCK_G,)
    q = tl.load(
        q_ptr + b * sqb + q_heads[:, None] * sqh + d[None, :],
        mask=g_mask[:, None] & d_mask[None, :],
        other=0.0,
    )  # (BLOCK_G, BLOCK_D)

    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    k_base = k_ptr + b * skb + kvh * skh
    v_base = v_ptr + b * svb + kvh * svh
    ks_base = ks_ptr + b * sksb + kvh * sksh
    vs_base = vs_ptr + b * svsb + kvh * svsh
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_mask = n < hi
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_base + n[:, None].to(tl.int64) * sks + d[None, :], mask=kv_mask, other=0.0)  # (N, D)
        if INT8_KV:
            k = k.to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (G, N), log2 units
        if INT8_KV:
            s = s * tl.load(ks_base + n, mask=n_mask, other=0.0)[None, :]
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None].to(tl.int64) * svs + d[None, :], mask=kv_mask, other=0.0)
        pv = p
        if INT8_KV:
            v = v.to(q.dtype)
            pv = p * tl.load(vs_base + n, mask=n_mask, other=0.0)[None, :]
        acc = acc * alpha[:, None] + tl.dot(pv.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    row = (b * n_kv_heads * group + q_heads) * n_splits + split  # index into (B, Hq, n_splits)
    tl.store(o_part_ptr + row[:, None] * head_dim + d[None, :], out, mask=g_mask[:, None] & d_mask[None, :])
    tl.store(lse_part_ptr + row, lse, mask=g_mask)


@triton.jit
def _decode_reduce_kernel(
    o_part_ptr, lse_part_ptr, out_ptr, sob, soh, n_q_heads, head_dim, n_splits,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # Program (b * n_q_heads + head): weight each split's output by its share of the softmax mass.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // n_q_heads
    h = pid % n_q_heads
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_mask = s < n_splits
    lse = tl.load(lse_part_ptr + pid * n_splits + s, mask=s_mask, other=float("-inf"))
    w = tl.exp2(lse - tl.max(lse, axis=0))  # empty splits have lse = -inf -> weight 0
    o = tl.load(
        o_part_ptr + (pid * n_splits + s[:, None]) * head_dim + d[None, :],
        mask=s_mask[:, None] & (d[None, :] < head_dim),
        other=0.0,
    )
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + b * sob + h * soh + d, out.to(out_ptr.dtype.element_ty), mask=d < head_dim)


_BLOCK_N = 64  # keys per inner step
_MIN_KEYS_PER_SPLIT = 64
# At most this many key slices. The reduction always runs over a block of this size (empty slices
# weigh 0), so its summation order does not depend on the number of slices: a CUDA graph fixes that
# number for the cache's capacity while the eager step picks it for the length so far, and both give
# the same bits (each slice holds the same keys either way: 64 per slice until they saturate).
_MAX_SPLITS = 128


@functools.lru_cache(maxsize=8)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few splits so the reduction is exercised


def num_splits(batch: int, n_kv_heads: int, max_keys: int, device: torch.device) -> int:
    """Enough (batch, kv head, split) programs to fill the GPU about four times over."""
    want = triton.cdiv(4 * _sm_count(device), batch * n_kv_heads)
    return max(1, min(want, triton.cdiv(max_keys, _MIN_KEYS_PER_SPLIT), _MAX_SPLITS))


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor | Int8KV,
    v: torch.Tensor | Int8KV,
    length: int | torch.Tensor | None = None,
    splits: int | None = None,
) -> torch.Tensor:
    """Attention of one query token over a KV cache, no mask needed (it is the newest position).

    q (B, Hq, 1, D); k/v (B, Hk, S, D) with any strides but a contiguous last dim (cache views), or
    Int8KV views of an int8 cache (their scales (B, Hk, S) contiguous along S).
    `length`: keys [0, length) are attended; an int, a 1-element int tensor on q's device (read by
    the kernel, so a captured CUDA graph can replay at every position), or None for all S.
    `splits`: number of key slices; fixed by the caller when the graph must not change.
    Returns (B, Hq, 1, D), a view of a (B, 1, Hq, D) contiguous tensor.
    """
    bsz, n_q, t, d = q.shape
    _, n_kv, s_len, _ = k.shape
    assert t == 1, f"decode attention takes one query token, got {t}"
    assert v.shape == k.shape and k.shape[0] == bsz and k.shape[3] == d, "q/k/v shapes disagree"
    assert n_q % n_kv == 0, f"{n_q} query heads are not a multiple of {n_kv} kv heads"
    int8_kv = isinstance(k, Int8KV)
    if isinstance(k, Int8KV) and isinstance(v, Int8KV):
        assert k.scales.stride(-1) == 1 and v.scales.stride(-1) == 1, "scales must be contiguous along S"
        k_scales, v_scales = k.scales, v.scales
        k_values, v_values = k.values, v.values
    else:
        assert isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor), "K and V must both be int8 or neither"
        k_scales, v_scales = q, q  # unused (INT8_KV is off); any tensor stands in for the pointers
        k_values, v_values = k, v
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k_values), _last_dim_contiguous(v_values)
    group = n_q // n_kv
    if splits is None:
        splits = num_splits(bsz, n_kv, s_len, q.device)
    assert 1 <= splits <= _MAX_SPLITS, f"{splits} key slices: between 1 and {_MAX_SPLITS}"
    len_is_ptr = isinstance(length, torch.Tensor)
    len_arg = length if length is not None else s_len
    o_part = torch.empty((bsz, n_q, splits, d), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((bsz, n_q, splits), device=q.device, dtype=torch.float32)
    block_d = max(16, triton.next_power_of_2(d))  # tl.dot needs every dimension >= 16
    _decode_partial_kernel[(bsz * n_kv, splits)](
        q, k, v, k_scales, v_scales, len_arg, o_part, lse_part,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        k_scales.stride(0), k_scales.stride(1), v_scales.stride(0), v_scales.stride(1),
        n_kv, group, d, splits, _LOG2E / d**0.5,
        LEN_IS_PTR=len_is_ptr, BLOCK_N=_BLOCK_N, BLOCK_D=block_d, BLOCK_G=max(16, triton.next_power_of_2(group)),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", INT8_KV=int8_kv,
        num_warps=4, num_stages=2,
    )  # fmt: skip
    out = torch.empty((bsz, 1, n_q, d), device=q.device, dtype=q.dtype)
    _decode_reduce_kernel[(bsz * n_q,)](
        o_part, lse_part, out, out.stride(0), out.stride(2), n_q, d, splits,
        BLOCK_S=_MAX_SPLITS, BLOCK_D=triton.next_power_of_2(d),
    )  # fmt: skip
    return out.transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor | Int8KV, v: torch.Tensor | Int8KV, mask: torch.Tensor | None,
              is_causal: bool) -> torch.Tensor:
    """Same contract as `reference.attention`: q (B, Hq, T, D), k/v (B, Hk, S, D) -> (B, Hq, T, D).

    An int8 cache (Int8KV) decodes in the split-K kernel too; its prefill goes to the reference's
    chunked int8 attention.
    """
    # One query token, no mask, and not causal (causal with T=1 < S would mean "key 0 only").
    if isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor) and k.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)  # a bf16 cache under a float32/float16 model
    decode = q.shape[2] == 1 and mask is None and (not is_causal or k.shape[2] == 1)
    if decode and (isinstance(k, Int8KV) or (isinstance(v, torch.Tensor) and not _needs_autograd(q, k, v))):
        return decode_attention(q, k, v)
    # Prefill: PyTorch's SDPA (FlashAttention for the causal case, memory-efficient with a mask).
    return reference.attention(q, k, v, mask, is_causal)
