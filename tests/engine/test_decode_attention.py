"""The CPU decode path's attention (one query over the cache) against PyTorch's SDPA."""

import pytest
import torch
import torch.nn.functional as F

from engine.kernels import reference


@pytest.mark.parametrize(("n_heads", "n_kv", "keys"), [(5, 5, 1), (4, 2, 37), (8, 1, 513), (6, 3, 4100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_query_attention_matches_sdpa(n_heads: int, n_kv: int, keys: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(keys)
    q = torch.randn(2, n_heads, 1, 64, generator=gen).to(dtype)
    # The cache's buffers are longer than the keys in use: the views are not contiguous.
    k = torch.randn(2, n_kv, keys + 40, 64, generator=gen).to(dtype)[:, :, :keys]
    v = torch.randn(2, n_kv, keys + 40, 64, generator=gen).to(dtype)[:, :, :keys]
    got = reference.attention(q, k, v, None, False)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=n_heads != n_kv)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-2)
