"""Every Triton kernel against its PyTorch reference (engine/kernels/reference.py).

On CPU the kernels run under Triton's interpreter (conftest.py sets TRITON_INTERPRET=1): float32 only,
small odd shapes. On a CUDA machine the same cases also run in bfloat16.
"""

from __future__ import annotations

import pytest
import torch

from engine import kernels
from engine.kernels import reference
from engine.kernels.int8_kv import Int8KV, quantize_rows

ops = pytest.importorskip("engine.kernels.triton_ops", reason="triton is not installed (pip install triton)")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# The interpreter computes with numpy, which has no bfloat16 arithmetic: bf16 only on a real GPU.
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]
TOL = {torch.float32: dict(atol=3e-5, rtol=3e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 123), (2, 3, 64)])
def test_rms_norm_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = randn(*shape, dtype=dtype) * 3
    w = randn(shape[-1], dtype=dtype, seed=1)
    out = ops.rms_norm(x, w, 1e-5)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-5), **TOL[dtype])


def test_rms_norm_strided_rows_and_float32_weight() -> None:
    # A row-strided view (every other row), and a float32 weight promoting the output as in the reference.
    x = randn(10, 33)[::2]
    w = randn(33, seed=1)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6), **TOL[torch.float32])


def rotary_tables(seqlen: int, head_dim: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    # Code Llama's base: large angles, which is why the math is float32.
    inv = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(start, start + seqlen, dtype=torch.float64), inv)
    return ang.cos().float().to(DEVICE), ang.sin().float().to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "bsz,seqlen,n_q,n_k,head_dim",
    [(1, 5, 4, 4, 16), (2, 3, 8, 2, 64)],  # 1:1 and grouped-query 4:1
)
def test_rotary_matches_reference_and_keeps_inputs(
    bsz: int, seqlen: int, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype
) -> None:
    q = randn(bsz, seqlen, n_q, head_dim, dtype=dtype)
    k = randn(bsz, seqlen, n_k, head_dim, dtype=dtype, seed=1)
    q0, k0 = q.clone(), k.clone()
    cos, sin = rotary_tables(seqlen, head_dim, start=9000)
    q_out, k_out = ops.apply_rotary(q, k, cos, sin)
    q_ref, k_ref = reference.apply_rotary(q, k, cos, sin)
    torch.testing.assert_close(q_out, q_ref, **TOL[dtype])
    torch.testing.assert_close(k_out, k_ref, **TOL[dtype])
    assert torch.equal(q, q0) and torch.equal(k, k0), "apply_rotary must not overwrite its inputs"


def test_rotary_in_place_variant_and_strided_heads() -> None:
    # q and k as column slices of one fused projection (B, T, Hq + 2*Hk, D), rotated in place.
    fused = randn(1, 7, 6 + 2 * 3, 16)
    q, k = fused[:, :, :6], fused[:, :, 6:9]
    cos, sin = rotary_tables(7, 16)
    q_ref, k_ref = reference.apply_rotary(q, k, cos, sin)
    v_before = fused[:, :, 9:].clone()
    q_out, k_out = ops.apply_rotary_(q, k, cos, sin)
    assert q_out.data_ptr() == q.data_ptr()
    torch.testing.assert_close(fused[:, :, :6], q_ref, **TOL[torch.float32])
    torch.testing.assert_close(fused[:, :, 6:9], k_ref, **TOL[torch.float32])
    assert torch.equal(fused[:, :, 9:], v_before), "the V columns of the fused tensor were touched"


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_matches_reference(dtype: torch.dtype) -> None:
    gate, up = randn(5, 123, dtype=dtype) * 4, randn(5, 123, dtype=dtype, seed=1)
    torch.testing.assert_close(ops.silu_mul(gate, up), reference.silu_mul(gate, up), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv_len", [1, 17, 300])
@pytest.mark.parametrize("n_q,n_k,head_dim", [(8, 2, 64), (4, 4, 16)])
def test_decode_attention_matches_reference(
    kv_len: int, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype
) -> None:
    # k/v are views of a larger cache buffer (B, Hk, capacity, D), exactly as the model passes them.
    capacity = kv_len + 13
    k_buf = randn(1, n_k, capacity, head_dim, dtype=dtype, seed=1)
    v_buf = randn(1, n_k, capacity, head_dim, dtype=dtype, seed=2)
    q = randn(1, 1, n_q, head_dim, dtype=dtype).transpose(1, 2)  # (B, Hq, 1, D), strided like the model's
    k, v = k_buf[:, :, :kv_len], v_buf[:, :, :kv_len]
    out = ops.attention(q, k, v, None, False)
    assert out.shape == (1, n_q, 1, head_dim) and out.dtype == dtype
    torch.testing.assert_close(out, reference.attention(q, k, v, None, False), **TOL[dtype])


def test_decode_attention_length_on_device_ignores_the_rest_of_the_buffer() -> None:
    # The CUDA-graph path: whole buffers, the length read by the kernel; garbage past it must not leak in.
    bsz, n_q, n_k, d, capacity, length = 2, 6, 3, 32, 200, 77
    k_buf, v_buf = randn(bsz, n_k, capacity, d, seed=1), randn(bsz, n_k, capacity, d, seed=2)
    k_buf[:, :, length:] = float("nan")
    v_buf[:, :, length:] = float("inf")
    q = randn(bsz, n_q, 1, d)
    out = ops.decode_attention(q, k_buf, v_buf, length=torch.tensor([length], device=DEVICE), splits=5)
    expect = reference.attention(q, k_buf[:, :, :length], v_buf[:, :, :length], None, False)
    torch.testing.assert_close(out, expect, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [5, 200, 700])
def test_decode_attention_gives_the_same_bits_for_any_number_of_key_slices(length: int, dtype: torch.dtype) -> None:
    # A CUDA graph fixes the number of key slices for the cache's capacity; the eager step picks it for
    # the length so far. Greedy tokens must not depend on which ran, so neither may a single bit.
    bsz, n_q, n_k, d, capacity = 1, 4, 2, 32, 1024
    k_buf, v_buf = randn(bsz, n_k, capacity, d, dtype=dtype, seed=1), randn(bsz, n_k, capacity, d, dtype=dtype, seed=2)
    q = randn(bsz, n_q, 1, d, dtype=dtype, seed=3)
    eager_splits = ops.num_splits(bsz, n_k, length, torch.device(DEVICE))
    graph_splits = ops.num_splits(bsz, n_k, capacity, torch.device(DEVICE))
    assert graph_splits > eager_splits or length > 64 * graph_splits
    eager = ops.decode_attention(q, k_buf[:, :, :length], v_buf[:, :, :length])
    graph = ops.decode_attention(q, k_buf, v_buf, length=torch.tensor([length], device=DEVICE), splits=graph_splits)
    assert torch.equal(graph, eager), f"{graph_splits} slices differ from {eager_splits}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv_len,n_q,n_k,head_dim", [(1, 4, 4, 16), (70, 6, 3, 64), (333, 8, 1, 40)])
def test_int8_decode_attention_matches_reference(
    kv_len: int, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype
) -> None:
    # Views of an int8 cache's buffers (values and scales longer than the keys in use), as the model passes them.
    capacity = kv_len + 13
    k8 = Int8KV(*quantize_rows(randn(2, n_k, capacity, head_dim, seed=1) * 3))
    v8 = Int8KV(*quantize_rows(randn(2, n_k, capacity, head_dim, seed=2)))
    k = Int8KV(k8.values[:, :, :kv_len], k8.scales[:, :, :kv_len])
    v = Int8KV(v8.values[:, :, :kv_len], v8.scales[:, :, :kv_len])
    q = randn(2, n_q, 1, head_dim, dtype=dtype)
    out = ops.attention(q, k, v, None, False)
    assert out.shape == (2, n_q, 1, head_dim) and out.dtype == dtype
    torch.testing.assert_close(out, reference.attention(q, k, v, None, False), **TOL[dtype])
    # The CUDA-graph form: whole buffers, the length on the device.
    whole = ops.decode_attention(q, k8, v8, length=torch.tensor([kv_len], device=DEVICE), splits=3)
    torch.testing.assert_close(whole, out, **TOL[dtype])


def test_prefill_attention_goes_through_sdpa_with_mask() -> None:
    # A chunk of 3 queries at positions 5..7 over 8 keys, with the model's boolean allow-mask.
    q, k, v = randn(1, 4, 3, 16), randn(1, 2, 8, 16, seed=1), randn(1, 2, 8, 16, seed=2)
    mask = torch.arange(8, device=DEVICE)[None, :] <= torch.arange(5, 8, device=DEVICE)[:, None]
    torch.testing.assert_close(ops.attention(q, k, v, mask, False), reference.attention(q, k, v, mask, False))


def test_autograd_inputs_fall_back_to_the_reference() -> None:
    # The kernels are forward-only: training through them must still produce gradients.
    x = randn(3, 16).requires_grad_()
    w = randn(16, seed=1).requires_grad_()
    ops.rms_norm(x, w, 1e-5).sum().backward()
    assert x.grad is not None and w.grad is not None


def test_dispatch_point_selects_triton() -> None:
    x, w = randn(4, 40), randn(40, seed=1)
    try:
        kernels.use_backend("triton")
        out = kernels.rms_norm(x, w, 1e-5)
    finally:
        kernels.use_backend("auto")
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-5), **TOL[torch.float32])
