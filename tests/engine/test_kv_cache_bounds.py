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


def test_pool_holds_several_sequences_within_its_budget():
    """Returning to an earlier prompt reuses its cache while the caches fit the budget; between
    requests they never hold more than it, except a prompt longer than the whole budget, whose cache
    alone stays (the next keystroke needs it)."""
    args = tiny_args()
    model = random_model(args)
    one = KVCache(args, 512, "cpu", torch.float32).nbytes()  # a 512-position cache
    pool = CachePool(SimpleNamespace(args=args), torch.device("cpu"), torch.float32, 3 * one)
    prompts = {name: [(seed * 13 + 7 * i) % 500 + 3 for i in range(300)] for seed, name in enumerate("abcd")}

    def request(prompt: list[int]) -> int:
        cache = pool.acquire(prompt, len(prompt) + 8)
        try:
            return generate(model, cache, prompt, 8, set()).cached_tokens
        finally:
            pool.release()
            assert pool.nbytes() <= pool.budget or pool.caches == [cache]

    for name in "abc":
        assert request(prompts[name]) == 0
    assert request(prompts["a"] + [5, 6]) == len(prompts["a"])  # back to "a": its cache was kept
    assert len(pool.caches) == 3
    request(prompts["d"])  # a fourth does not fit: the least recently used ("b") goes
    assert request(prompts["b"]) == 0 and len(pool.caches) == 3
    huge = [(11 * i) % 500 + 4 for i in range(2000)]  # needs more than the whole budget
    request(huge)
    assert len(pool.caches) == 1 and pool.caches[0].tokens[: len(huge)] == huge  # it alone stays
    assert request(prompts["a"]) == 0 and pool.nbytes() <= pool.budget


def test_a_prompt_sharing_only_its_first_tokens_gets_its_own_cache():
    """A jump (in SPM every prompt starts with the same few tokens) must not take over the cache of the
    spot it left: coming back there reuses it."""
    args = tiny_args()
    model = random_model(args)
    pool = CachePool(SimpleNamespace(args=args), torch.device("cpu"), torch.float32, 2**30)
    here = [(7 * i) % 500 + 3 for i in range(300)]
    there = here[:5] + [(13 * i) % 500 + 3 for i in range(300)]
    for prompt in (here, there):
        generate(model, pool.acquire(prompt, len(prompt) + 8), prompt, 8, set())
    assert len(pool.caches) == 2
    back = here + [9]
    assert generate(model, pool.acquire(back, len(back) + 8), back, 8, set()).cached_tokens == len(here)


def test_a_new_prompt_copies_the_long_start_it_shares_with_a_cache_it_may_not_take():
    """Another spot of a file shares the prompt's start (in SPM its suffix) with the spot's cache, but
    less than half of what that cache holds: the new cache copies those positions instead of computing
    them again, the logits are the same, and the spot's own cache stays whole for a return."""
    args = tiny_args()
    model = random_model(args)
    pool = CachePool(SimpleNamespace(args=args), torch.device("cpu"), torch.float32, 2**30)
    here = [(7 * i) % 500 + 3 for i in range(600)]
    there = here[:200] + [(13 * i) % 500 + 3 for i in range(400)]
    generate(model, pool.acquire(here, len(here) + 8), here, 8, set())
    result = generate(model, pool.acquire(there, len(there) + 8), there, 8, set())
    assert result.cached_tokens == 200 and len(pool.caches) == 2
    fresh = KVCache(args, 700, "cpu", torch.float32)
    assert generate(model, fresh, there, 8, set()).tokens == result.tokens
    back = here + [9]
    assert generate(model, pool.acquire(back, len(back) + 8), back, 8, set()).cached_tokens == len(here)
