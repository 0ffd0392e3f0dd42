"""The static-layout decode step (what engine.cuda_graph captures) against the model's own forward.

On CPU the step runs eagerly (with the Triton decode kernel under the interpreter when triton is
installed); on a CUDA machine the captured graph itself is compared with the eager forward.
"""

from __future__ import annotations

import pytest
import torch

from engine.cache import KVCache
from engine.config import ModelArgs
from engine.cuda_graph import DecodeGraph, decode_step
from engine.model import Transformer, init_weights

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, multiple_of=32, rope_theta=1e6)


def tiny_model() -> Transformer:
    model = Transformer(ARGS)
    init_weights(model, seed=0)
    return model.to(DEVICE).eval()


def prefilled(
    model: Transformer, prompt: torch.Tensor, capacity: int = 64, kv_dtype: torch.dtype = torch.float32
) -> KVCache:
    cache = KVCache(ARGS, capacity, DEVICE, kv_dtype)
    with torch.no_grad():
        model(prompt, start_pos=0, cache=cache)
    cache.tokens = prompt[0].tolist()  # forward() leaves the bookkeeping to its caller, as the generator does
    return cache


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.int8], ids=["float-cache", "int8-cache"])
@pytest.mark.parametrize("interpret", [False, True], ids=["reference-attention", "triton-attention"])
def test_decode_step_matches_model_forward(
    interpret: bool, kv_dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    if interpret:
        pytest.importorskip("triton", reason="triton is not installed")
    elif not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU fallback: slice on the host
    model = tiny_model()
    prompt = torch.randint(0, ARGS.vocab_size, (1, 11), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    nxt = torch.tensor([[5]], device=DEVICE)
    eager_cache, static_cache = prefilled(model, prompt, kv_dtype=kv_dtype), prefilled(model, prompt, kv_dtype=kv_dtype)
    with torch.no_grad():
        expect = model(nxt, start_pos=11, cache=eager_cache)[:, -1]
    rope = model.rope(0, static_cache.capacity, DEVICE)
    got = decode_step(model, static_cache, nxt, torch.tensor([11], device=DEVICE), rope)
    assert got.shape == (1, ARGS.vocab_size)
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-4)
    # The new token's K/V landed at position 11 of the static buffers, like the eager write.
    torch.testing.assert_close(static_cache.k[1][:, :, :12], eager_cache.k[1][:, :, :12])
    for scales in ("k_scale", "v_scale"):  # int8: the scales too
        for static, eager in zip(getattr(static_cache, scales), getattr(eager_cache, scales), strict=True):
            torch.testing.assert_close(static[:, :, :12], eager[:, :, :12])


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.int8], ids=["float-cache", "int8-cache"])
def test_cuda_graph_decode_matches_eager_over_many_steps(kv_dtype: torch.dtype) -> None:
    model = tiny_model()
    prompt = torch.randint(0, ARGS.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    eager_cache, graph_cache = prefilled(model, prompt, 300, kv_dtype), prefilled(model, prompt, 300, kv_dtype)
    graph = DecodeGraph(model, graph_cache)
    tok = torch.tensor([[3]], device=DEVICE)
    for pos in range(9, 9 + 150):  # crosses several key blocks, so the device-side length matters
        with torch.no_grad():
            le = model(tok, start_pos=pos, cache=eager_cache)[:, -1]
        lg = graph.step(tok, pos)
        torch.testing.assert_close(lg, le, atol=1e-3, rtol=1e-3)
        for cache in (eager_cache, graph_cache):  # step() and forward() leave this to their caller
            cache.tokens.append(int(tok))
        tok = le.argmax(-1, keepdim=True)  # both paths are fed the same tokens
    assert graph.captures == 1, "the graph should be captured once for a cache that does not grow"
    # Growing the cache moves its buffers: the next step must recapture, not replay stale addresses.
    # (Growing keeps the positions `tokens` covers; on the GPU, fresh memory beyond them can hold NaNs.)
    graph_cache.ensure_capacity(600)
    eager_cache.ensure_capacity(600)
    with torch.no_grad():
        le = model(tok, start_pos=159, cache=eager_cache)[:, -1]
    torch.testing.assert_close(graph.step(tok, 159), le, atol=1e-3, rtol=1e-3)
    assert graph.captures == 2
