"""The CPU ops in their fewer-op forms give the same bits as the textbook formulas (Llama's own code):
greedy completions must not change when the ops are rewritten for speed."""

import pytest
import torch

from engine.kernels import reference


def textbook_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def textbook_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


@pytest.mark.parametrize("shape", [(1, 1, 320), (1, 1024, 320), (2, 37, 4096), (3, 5, 64)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rms_norm_matches_the_textbook_formula_bit_for_bit(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    weight = (torch.rand(shape[-1], generator=gen) + 0.5).to(dtype)
    assert torch.equal(reference.rms_norm(x, weight, 1e-5), textbook_rms_norm(x, weight, 1e-5))


@pytest.mark.parametrize(("seq", "heads", "kv_heads", "head_dim"), [(1, 5, 5, 64), (300, 4, 2, 64), (7, 32, 8, 128)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rotary_matches_the_textbook_formula_bit_for_bit(seq: int, heads: int, kv_heads: int, head_dim: int,
                                                         dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(seq * heads)
    q = torch.randn(2, seq, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(2, seq, kv_heads, head_dim, generator=gen).to(dtype)
    angles = torch.rand(seq, head_dim // 2, generator=gen) * 1000
    cos, sin = angles.cos(), angles.sin()
    got_q, got_k = reference.apply_rotary(q, k, cos, sin)
    assert torch.equal(got_q, textbook_rotary(q, cos, sin)) and torch.equal(got_k, textbook_rotary(k, cos, sin))


def test_rms_norm_and_rotary_train_like_the_textbook_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 4, 16, generator=gen, requires_grad=True)
    weight = torch.rand(16, generator=gen, requires_grad=True)
    angles = torch.rand(9, 8, generator=gen) * 10
    grads = []
    for norm, rotate in ((reference.rms_norm, lambda t: reference.apply_rotary(t, t, angles.cos(), angles.sin())[0]),
                         (textbook_rms_norm, lambda t: textbook_rotary(t, angles.cos(), angles.sin()))):
        (rotate(norm(x, weight, 1e-5)) ** 2).sum().backward()
        grads.append((x.grad.clone(), weight.grad.clone()))
        x.grad, weight.grad = None, None
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(("queries", "keys", "heads", "kv_heads"),
                         [(40, 40, 5, 5), (40, 300, 5, 5), (5, 300, 5, 5), (64, 200, 4, 2)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_causal_attention_of_a_chunk_after_cached_keys_matches_the_masked_formula(
        queries: int, keys: int, heads: int, kv_heads: int, dtype: torch.dtype) -> None:
    """A prompt chunk after a cached prefix: query i sees the keys up to its own position. CPU prefill
    merges an unmasked pass over the earlier keys with a causal one over the chunk's own (no mask);
    grouped-query heads and a few queries take the masked paths. All must give what an explicit mask gives."""
    gen = torch.Generator().manual_seed(queries + keys)
    q = torch.randn(1, heads, queries, 64, generator=gen).to(dtype)
    k = torch.randn(1, kv_heads, keys, 64, generator=gen).to(dtype)
    v = torch.randn(1, kv_heads, keys, 64, generator=gen).to(dtype)
    allowed = torch.arange(keys)[None, :] <= torch.arange(keys - queries, keys)[:, None]
    group = heads // kv_heads
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(group, 1), v.float().repeat_interleave(group, 1), attn_mask=allowed)
    got = reference.attention(q, k, v, None, is_causal=True)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)
