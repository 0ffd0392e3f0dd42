"""Triton weight-only quantized matmul for CUDA: y = x @ dequantize(W)^T, W in engine/quant.py's format.

One tiled kernel serves decode (a few rows: BLOCK_M 16, narrow N tiles so many programs share the
weight read) and prefill (BLOCK_M 64). Each program walks K in BLOCK_K steps: it loads the int8
weights, or the int4 bytes and splits them into their two nibbles (low = even column), and multiplies
with tl.dot on integer-valued weights, which bf16 holds exactly; the scales multiply the partial
products (per K step for int4, whose BLOCK_K divides the group; once at the end for int8's per-row
scales), so no dequantized weight is ever written.

Under `TRITON_INTERPRET=1` the kernel runs on CPU tensors (float32 activations: the interpreter has
no bf16 arithmetic); tests/engine/kernels/test_quant_triton.py compares it with the dequantize reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _quant_matmul_kernel(
    x_ptr, w_ptr, s_ptr, out_ptr,
    M, N, K, n_groups,
    stride_xm, stride_wn, stride_om,
    BITS: tl.constexpr, GROUP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :],
                    mask=m_ok[:, None] & (rk[None, :] < K), other=0.0)
        if BITS == 8:
            q = tl.load(w_ptr + rn[:, None].to(tl.int64) * stride_wn + rk[None, :],
                        mask=n_ok[:, None] & (rk[None, :] < K), other=0)
            acc += tl.dot(x, tl.trans(q.to(x.dtype)), input_precision=PRECISION)
        else:
            rb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            # Byte 0x88 is two zero weights: what a masked-off column must contribute.
            packed = tl.load(w_ptr + rn[:, None].to(tl.int64) * stride_wn + rb[None, :],
                             mask=n_ok[:, None] & (rb[None, :] < K // 2), other=0x88).to(tl.int32)
            low = (packed & 0xF) - 8
            high = (packed >> 4) - 8
            q = tl.reshape(tl.join(low, high), (BLOCK_N, BLOCK_K))  # low nibble = even column
            scale = tl.load(s_ptr + rn.to(tl.int64) * n_groups + k0 // GROUP, mask=n_ok, other=0.0)
            acc += tl.dot(x, tl.trans(q.to(x.dtype)), input_precision=PRECISION) * scale.to(tl.float32)[None, :]
    if BITS == 8:
        acc *= tl.load(s_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _blocks(rows: int, bits: int, group_size: int) -> tuple[int, int, int]:
    block_k = 64 if bits == 8 else min(64, group_size)
    if bits == 4 and group_size % block_k:
        block_k = 16 if group_size % 32 else 32
    if rows <= 16:
        return 16, 32, block_k  # decode: narrow N tiles, many programs streaming the weight
    return 64, 64, block_k


def quantized_matmul(
    x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """x [..., K] @ W^T -> [..., N], W given as engine/quant.py's (qweight, scales)."""
    k = x.shape[-1]
    n = qweight.shape[0]
    if bits == 4 and group_size % 16:
        raise ValueError(f"the Triton int4 kernel needs a group size that is a multiple of 16, not {group_size}")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    out = torch.empty(rows, n, device=x.device, dtype=x.dtype)
    block_m, block_n, block_k = _blocks(rows, bits, group_size)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
    n_groups = scales.shape[1] if bits == 4 else 1
    _quant_matmul_kernel[grid](
        x2, qweight, scales, out,
        rows, n, k, n_groups,
        x2.stride(0), qweight.stride(0), out.stride(0),
        BITS=bits, GROUP=group_size,
        # float32 activations: a true float32 product (the default would round them to tf32 on GPUs).
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return out.view(*x.shape[:-1], n)
