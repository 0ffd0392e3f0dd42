"""Engine memory that a long session must not grow. The KV cache follows what requests need: it
grows for a long prompt and shrinks again once recent requests need far less (a context budget
lowered, a long file closed), keeping the tokens that still fit. CPU prefill runs few distinct
lengths (oneDNN keeps kernels per shape) without changing any result."""

from types import SimpleNamespace

import torch

from engine.backends.local import CachePool
from engine.cache import KVCache
from engine.generate import cpu_run_length, generate, prefill
from tests.tiny_models import random_model, tiny_args


def test_shrink_keeps_the_tokens_that_fit_and_frees_the_rest():
    args = tiny_args()
    model = random_model(args)
    prompt = list(range(3, 40))
    reference = generate(model, KVCache(args, 8, "cpu", torch.float32), prompt, 6, set()).tokens

    cache = KVCache(args, 8, "cpu", torch.float32)
    cache.ensure_capacity(3000)
    big = cache.nbytes()
    generate(model, cache, prompt, 6, set())
    cache.shrink_to(100)
    assert cache.capacity == 256 and cache.nbytes() * 10 < big
    assert cache.tokens[: len(prompt)] == prompt  # what was stored is still there
    again = generate(model, cache, prompt, 6, set())
    assert again.tokens == reference and again.cached_tokens == len(prompt) - 1


def test_pool_shrinks_a_cache_grown_for_a_past_peak():
    args = tiny_args()
    pool = CachePool(SimpleNamespace(args=args), torch.device("cpu"), torch.float32, 2**30)
    cache = pool.acquire([1, 2, 3], 8000)  # one long prompt (a big budget)
    assert cache.capacity >= 8000
    for _ in range(CachePool.SHRINK_WINDOW):  # then the budget is lowered
        cache = pool.acquire([1, 2, 3], 500)
    assert cache.capacity == 512 and pool.nbytes() == cache.nbytes()
    assert len(pool.caches) == 1


def test_pool_holds_a_bounded_number_of_caches():
    args = tiny_args()
    pool = CachePool(SimpleNamespace(args=args), torch.device("cpu"), torch.float32, 2**30)
    for first in range(20):  # prompts sharing nothing, each prefilled
        cache = pool.acquire([first + 3, 1, 2], 300)
        cache.tokens.extend([first + 3, 1, 2])
    assert len(pool.caches) <= CachePool.MAX_CACHES
    for _ in range(5):  # requests cancelled before prefill leave their cache empty: it is reused
        pool.acquire([99, 1], 300)
    assert len(pool.caches) <= CachePool.MAX_CACHES


def test_cpu_prefill_runs_few_distinct_lengths_and_padding_changes_nothing():
    lengths = {cpu_run_length(n) for n in range(1, 1025)}
    assert len(lengths) <= 15 and all(cpu_run_length(n) >= n for n in range(1, 1025))
    args = tiny_args()
    model = random_model(args)
    prompt = [(7 * i) % 500 + 3 for i in range(300)]
    with torch.inference_mode():
        full = model(torch.tensor([prompt]))[0].float()  # no cache, no padding
    cache = KVCache(args, 8, "cpu", torch.float32)
    for end in (37, 38, 171, 300):  # chunks of 37, 1, 133 and 129 new tokens, each padded
        logits = prefill(model, cache, prompt[cache.length : end])
        assert cache.tokens == prompt[:end]
        assert torch.allclose(logits, full[end - 1], atol=1e-4)
