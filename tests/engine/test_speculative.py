"""Prompt-lookup speculative decoding gives exactly the tokens plain decoding gives, on the real default
model: greedy and seeded sampling, with stop ids, `should_stop`, and through the served path's stop
strings and streaming, while fewer decode passes run on text that copies from the prompt."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.backends.base import CompletionRequest
from engine.backends.local import load_local_backend
from engine.cache import KVCache
from engine.generate import Sampling, generate
from engine.lookup import PromptLookup, Speculation, find_last_occurrence
from engine.prompts import spm_prompt

COPYING = (  # the next lines repeat the loop above: drafts copied from it should be accepted
    "def add(a, b):\n    return a + b\n\n\n"
    "def total(values):\n    result = 0\n    for value in values:\n        result = add(result, value)\n"
    "    return result\n\n\n"
    "def total_of_squares(values):\n    result = 0\n    for value in values:\n"
)
NOT_COPYING = 'def is_palindrome(text: str) -> bool:\n    """Whether text reads the same backwards."""\n'
MIDDLE = ("import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n", "\n    return config\n")
CASES = [(COPYING, ""), (NOT_COPYING, ""), MIDDLE]


def test_lookup_drafts_what_followed_the_latest_occurrence_of_the_longest_ngram():
    ids = np.array([5, 6, 7, 1, 5, 6, 8, 2, 9, 6, 7, 3, 4, 5, 6])
    assert find_last_occurrence(ids, 2) == 4  # [5, 6] at 0 and 4: the latest
    assert find_last_occurrence(ids, 1) == 9  # [6] at 1, 5 and 9
    assert find_last_occurrence(ids, 3) is None  # [4, 5, 6] occurs only at the end
    lookup = PromptLookup([5, 6, 7, 1, 5, 6, 8, 2], room=2)
    lookup.append(9)
    lookup.append(5)
    lookup.append(6)  # ids grow past the room given: the buffer grows
    spec = Speculation(draft_tokens=3, max_ngram=3)
    assert lookup.draft(spec, limit=10) == [8, 2, 9]  # after the latest [5, 6], at most 3
    assert lookup.draft(spec, limit=1) == [8]
    assert PromptLookup([1, 2, 3], room=4).draft(spec, limit=5) == []  # nothing repeats


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def backend(request: pytest.FixtureRequest):
    backend = load_local_backend(device="cpu", dtype=request.param)
    backend.speculation = Speculation()  # on in both, whatever the default for the dtype
    return backend


def _fresh_cache(backend) -> KVCache:
    return KVCache(backend.loaded.args, 64, backend.device, backend.dtype)


def test_greedy_tokens_are_identical_and_copying_text_takes_fewer_passes(backend):
    stop_ids = backend.tok.stop_ids()
    accepted = 0
    for prefix, suffix in CASES:
        prompt = spm_prompt(backend.tok, prefix, suffix)
        plain = generate(backend.model, _fresh_cache(backend), prompt, 40, stop_ids)
        fast = generate(backend.model, _fresh_cache(backend), prompt, 40, stop_ids, speculation=Speculation())
        assert fast.tokens == plain.tokens and fast.stop_reason == plain.stop_reason
        accepted += fast.accepted_tokens
        if prefix is COPYING:
            assert fast.forward_passes < len(fast.tokens) - 1  # some passes confirmed several tokens
    assert accepted > 0


def test_should_stop_ends_at_the_same_token(backend):
    prompt = spm_prompt(backend.tok, COPYING, "")
    for stop_after in (1, 3, 9):
        seen: list[list[int]] = []

        def should_stop(generated: list[int], n: int = stop_after, seen: list = seen) -> bool:
            seen.append(list(generated))
            return len(generated) >= n

        plain = generate(backend.model, _fresh_cache(backend), prompt, 40, set(), should_stop=should_stop)
        calls_plain = list(seen)
        seen.clear()
        fast = generate(backend.model, _fresh_cache(backend), prompt, 40, set(), should_stop=should_stop,
                        speculation=Speculation())
        assert fast.tokens == plain.tokens and len(fast.tokens) == stop_after
        assert fast.stop_reason == "cancelled" and seen == calls_plain  # called with the same lists


def test_seeded_sampling_draws_the_same_tokens(backend):
    prompt = spm_prompt(backend.tok, COPYING, "")
    sampling = Sampling(temperature=0.8, top_p=0.95, seed=3)
    plain = generate(backend.model, _fresh_cache(backend), prompt, 32, set(), sampling)
    fast = generate(backend.model, _fresh_cache(backend), prompt, 32, set(), sampling, speculation=Speculation())
    assert fast.tokens == plain.tokens


def test_rejected_drafts_leave_nothing_in_the_cache(backend):
    """After a speculative generation the cache holds exactly the prompt and the generated tokens,
    with the keys and values one-token steps compute (bit for bit in bfloat16, where oneDNN's matrix
    products give each row the same bits whatever the number of rows; float32's differ in the last
    bits): the next request reuses it unchanged."""
    prompt = spm_prompt(backend.tok, *MIDDLE)
    plain_cache, fast_cache = _fresh_cache(backend), _fresh_cache(backend)
    generate(backend.model, plain_cache, prompt, 40, set())
    fast = generate(backend.model, fast_cache, prompt, 40, set(), speculation=Speculation())
    assert fast.drafted_tokens > fast.accepted_tokens  # some drafts were rejected
    assert fast_cache.tokens[: len(prompt)] == prompt
    assert fast_cache.tokens[len(prompt) :] == fast.tokens[: fast_cache.length - len(prompt)]
    common = min(plain_cache.length, fast_cache.length)
    tolerance = 0.0 if backend.dtype == torch.bfloat16 else 1e-4
    for layer in range(backend.loaded.args.n_layers):
        for plain_kv, fast_kv in ((plain_cache.k, fast_cache.k), (plain_cache.v, fast_cache.v)):
            assert torch.allclose(plain_kv[layer][:, :, :common], fast_kv[layer][:, :, :common], rtol=0,
                                  atol=tolerance)
    longer = prompt + fast.tokens[:20]
    again = generate(backend.model, fast_cache, longer, 16, set(), speculation=Speculation())
    assert again.cached_tokens == len(longer) - 1
    assert again.tokens == generate(backend.model, _fresh_cache(backend), longer, 16, set()).tokens


def test_served_completions_are_the_same_with_stop_strings_and_streaming(backend):
    requests = [
        CompletionRequest(prefix=COPYING, max_new_tokens=48, stop=["\n"]),
        CompletionRequest(prefix=COPYING, max_new_tokens=48),
        CompletionRequest(prefix=MIDDLE[0], suffix=MIDDLE[1], max_new_tokens=48, stop=["return"]),
        CompletionRequest(prefix=MIDDLE[0], suffix=MIDDLE[1], max_new_tokens=48, fim_format="psm"),
    ]
    for request in requests:
        answers = []
        for speculative in (False, True):
            streamed: list[str] = []
            completion = backend.complete(replace(request, speculative=speculative), on_text=streamed.append)
            answers.append((completion.text, completion.stop_reason, completion.tokens, streamed))
        assert answers[0] == answers[1]
    # Cancelled after the fourth streamed text: both stop there, with that text.
    for speculative in (False, True):
        streamed = []
        completion = backend.complete(CompletionRequest(prefix=COPYING, max_new_tokens=48, speculative=speculative),
                                      should_stop=lambda streamed=streamed: len(streamed) >= 4,
                                      on_text=streamed.append)
        assert completion.stop_reason == "cancelled" and completion.text == streamed[-1] and len(streamed) == 4
        answers.append(completion.text)
    assert answers[-1] == answers[-2]
