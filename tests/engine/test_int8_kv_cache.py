"""The int8 KV cache: rows round-trip within half a quantization step, attention over int8 K/V matches
attention over the same values dequantized (decode, prefill after a prefix, grouped heads, chunks),
and the cache grows, shrinks and truncates like the bf16 one at about half its bytes."""

import pytest
import torch
import torch.nn.functional as F

from engine.cache import KVCache
from engine.generate import common_prefix_length, generate, prefill
from engine.kernels import reference
from engine.kernels.int8_kv import Int8KV, int8_attention, quantize_rows
from tests.tiny_models import random_model, tiny_args


def test_rows_round_trip_within_half_a_step_and_zero_rows_stay_zero():
    x = torch.randn(2, 3, 50, 64, generator=torch.Generator().manual_seed(0)) * 5
    x[0, 1, 7] = 0.0
    values, scales = quantize_rows(x)
    assert values.dtype == torch.int8 and scales.shape == (2, 3, 50)
    back = Int8KV(values, scales).dequantize()
    assert ((back - x).abs() <= scales[..., None] / 2 + 1e-6).all()
    assert values.abs().amax(-1).eq(127).sum() == 2 * 3 * 50 - 1  # absmax maps to +-127
    assert back[0, 1, 7].eq(0).all() and scales[0, 1, 7] == 0


def _int8(x: torch.Tensor) -> Int8KV:
    return Int8KV(*quantize_rows(x))


@pytest.mark.parametrize(("n_heads", "n_kv", "queries", "keys", "chunk"),
                         [(5, 5, 1, 1, 512), (4, 2, 1, 37, 8), (8, 1, 1, 513, 100), (6, 3, 7, 300, 64),
                          (4, 2, 5, 40, 512)])
def test_int8_attention_matches_sdpa_on_the_dequantized_cache(n_heads, n_kv, queries, keys, chunk):
    gen = torch.Generator().manual_seed(keys)
    q = torch.randn(2, n_heads, queries, 64, generator=gen)
    k8 = _int8(torch.randn(2, n_kv, keys, 64, generator=gen))
    v8 = _int8(torch.randn(2, n_kv, keys, 64, generator=gen))
    # Queries are the newest positions: query i sees keys <= keys - queries + i.
    mask = torch.arange(keys)[None, :] <= torch.arange(keys - queries, keys)[:, None]
    want = F.scaled_dot_product_attention(
        q, k8.dequantize(), v8.dequantize(), attn_mask=mask, enable_gqa=n_heads != n_kv
    )
    for got in (
        int8_attention(q, k8, v8, mask if queries > 1 else None, False, chunk=chunk),
        int8_attention(q, k8, v8, None, queries > 1, chunk=chunk),  # the same positions as is_causal
        reference.attention(q, k8, v8, mask, False),  # the model's entry point
    ):
        assert got.shape == q.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_int8_cache_stores_half_the_bytes_and_grows_shrinks_like_bf16():
    args = tiny_args()  # 2 layers, 2 kv heads of 16
    bf16 = KVCache(args, 300, "cpu", torch.bfloat16)
    int8 = KVCache(args, 300, "cpu", torch.int8)
    per_position = args.n_layers * 2 * args.n_kv_heads
    assert bf16.nbytes() == 512 * per_position * args.head_dim * 2
    assert int8.nbytes() == 512 * per_position * (args.head_dim + 4)  # int8 values + a float32 scale

    gen = torch.Generator().manual_seed(1)
    k = torch.randn(1, args.n_kv_heads, 40, args.head_dim, generator=gen)
    v = torch.randn(1, args.n_kv_heads, 40, args.head_dim, generator=gen)
    int8.write(1, 0, k, v)
    int8.tokens.extend(range(40))
    int8.ensure_capacity(2000)  # grows, keeping the stored rows and their scales
    assert int8.capacity == 2048
    kv, vv = int8.view(1, 40)
    torch.testing.assert_close(kv.dequantize(), k, atol=k.abs().max().item() / 127, rtol=0)
    torch.testing.assert_close(vv.dequantize(), v, atol=v.abs().max().item() / 127, rtol=0)
    int8.shrink_to(10)
    assert int8.capacity == 256 and int8.length == 40
    assert int8.nbytes() == 256 * per_position * (args.head_dim + 4)
    torch.testing.assert_close(int8.view(1, 40)[0].dequantize(), kv.dequantize())
    int8.truncate(5)
    assert int8.length == 5


def test_generation_with_an_int8_cache_follows_the_float_cache():
    args = tiny_args()
    model = random_model(args)
    prompt = [(11 * i) % 500 + 3 for i in range(90)]
    exact = prefill(model, KVCache(args, 8, "cpu", torch.float32), prompt[:60])
    cache = KVCache(args, 8, "cpu", torch.int8)  # small: prefill grows it
    int8 = prefill(model, cache, prompt[:60])
    assert torch.allclose(int8, exact)  # one chunk from position 0 attends to the unrounded keys
    # Later chunks and decode steps read the int8 cache: close, not equal.
    exact = prefill(model, KVCache(args, 8, "cpu", torch.float32), prompt)
    int8 = prefill(model, cache, prompt[60:])
    assert cache.tokens == prompt
    assert (int8 - exact).abs().max() < 0.05 * exact.abs().max()
    ref = generate(model, KVCache(args, 8, "cpu", torch.float32), prompt, 12, set()).tokens
    got = generate(model, KVCache(args, 8, "cpu", torch.int8), prompt, 12, set()).tokens
    assert common_prefix_length(ref, got) >= 8  # greedy tokens agree at least at the start



def test_key_chunks_are_small_on_cpu_and_bounded_by_bytes_on_cuda():
    from engine.kernels.int8_kv import KEY_CHUNK, key_chunk

    assert key_chunk((1, 32, 1024, 128), 32, cuda=False) == KEY_CHUNK
    # On CUDA (a launch per op per chunk), as many keys as 256 MiB of float32 scores or keys allow:
    assert key_chunk((1, 32, 1024, 128), 32, cuda=True) == 2048  # a 7B prefill chunk of 1,024 queries
    assert key_chunk((1, 32, 1, 128), 32, cuda=True) == 16384  # one query: bounded by the keys' copy
    assert key_chunk((1, 5, 1024, 64), 5, cuda=True) == 13107
