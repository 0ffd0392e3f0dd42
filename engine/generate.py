"""Prefill, decode and sampling as free functions over token ids.

`generate` is token-level: the caller passes the prompt ids, a KV cache (possibly already holding a
prefix of the prompt), and a `should_stop(generated)` hook that covers cancellation and stop strings.
A `step` function may replace the one-token decode step (the local backend replays CUDA graphs).
With a `Speculation`, decode steps feed the next token together with a prompt-lookup draft of the ones
after it (engine/lookup.py) and keep the logits of every drafted position the model confirms.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from engine import cpu_step
from engine.backends.base import StopReason
from engine.cache import KVCache
from engine.lookup import PromptLookup, Speculation
from engine.model import Transformer
from engine.name_choice import Lean
from engine.native_step import NativeStep
from engine.prompt_copy import Mix

PREFILL_CHUNK = 1024  # tokens per prefill step: bounds the activations (and, off the CPU, the attention mask)

# One decode step: feed a token at the cache's next position, append it to `cache.tokens`, return the
# float32 logits (vocab,) of the position after (engine.generate.decode_step's contract).
DecodeFn = Callable[[KVCache, int], torch.Tensor]


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class GenerationResult:
    tokens: list[int]  # generated ids, stop token excluded
    # The backends' vocabulary: "eos" (a stop id; stop_token says which), "max_tokens", "cancelled" (the
    # stop hook said stop; a backend whose hook found a stop string reports "stop_string").
    stop_reason: StopReason
    stop_token: int | None = None
    cached_tokens: int = 0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_ms: float = 0.0  # after the first token
    forward_passes: int = 0  # decode passes after prefill (fewer than tokens when drafts were accepted)
    drafted_tokens: int = 0
    accepted_tokens: int = 0  # drafted tokens whose logits were used


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def cpu_run_length(n: int) -> int:
    """How many positions a prefill chunk of `n` tokens runs on CPU: a power of two up to 128, then
    a multiple of 128. oneDNN (PyTorch's CPU matmul for bfloat16) builds and keeps kernels for every
    distinct matrix shape, about 0.7 MB each per weight shape: prompts of every length from 1 to
    1024 new tokens made the server's memory grow for hours. These lengths are 15 shapes."""
    if n <= 128:
        return 1 << max(n - 1, 0).bit_length()
    return -(-n // 128) * 128


@torch.inference_mode()
def prefill(
    model: Transformer,
    cache: KVCache,
    tokens: Sequence[int],
    chunk_size: int = PREFILL_CHUNK,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor | None:
    """Append `tokens` to the cache; return float32 logits (vocab,) of the last one.

    Returns None if `should_stop` fired between chunks (the cache then holds what was done so far,
    which stays valid for reuse). On CPU each chunk is padded (its last token repeated) to
    `cpu_run_length`: the padding comes after the real tokens, so causal attention keeps it out of
    their results, and its keys and values lie past the cache's length, overwritten later.
    """
    assert tokens, "prefill needs at least one token"
    cache.ensure_capacity(cache.length + len(tokens))
    logits = None
    for i in range(0, len(tokens), chunk_size):
        if should_stop is not None and i > 0 and should_stop():
            return None
        hidden = _feed(model, cache, list(tokens[i : i + chunk_size]))
        logits = hidden[-1]
    assert logits is not None
    return model.output(logits).float()


def _feed(model: Transformer, cache: KVCache, chunk: list[int]) -> torch.Tensor:
    """Append `chunk` to the cache; return its final hidden states (len(chunk), dim). On CPU the run
    is padded to `cpu_run_length` (see `prefill`)."""
    pad = cpu_run_length(len(chunk)) - len(chunk) if cache.device.type == "cpu" else 0
    run = chunk + chunk[-1:] * pad
    cache.ensure_capacity(cache.length + len(run))
    x = torch.tensor([run], dtype=torch.long, device=cache.device)
    hidden = model(x, start_pos=cache.length, cache=cache, return_hidden=True)
    cache.tokens.extend(chunk)
    return hidden[0, : len(chunk)]


@torch.inference_mode()
def decode_step(model: Transformer, cache: KVCache, token: int, native: NativeStep | None = None) -> torch.Tensor:
    """Feed one token at the next position; return float32 logits (vocab,) for the position after.
    On CPU, engine/cpu_step.py computes the same logits with a fraction of the forward pass's overhead;
    `native` (the local backend's, engine/native_step.py), where it applies, the same to bfloat16
    precision in one native call."""
    if native is not None and native.applies(cache):
        return native.step(cache, token)
    if cpu_step.applies(cache):
        return cpu_step.step(model, cache, token)
    return forward_step(model, cache, token)


@torch.inference_mode()
def forward_step(model: Transformer, cache: KVCache, token: int) -> torch.Tensor:
    """decode_step through Transformer.forward, wherever it runs (what engine/cpu_step.py matches)."""
    cache.ensure_capacity(cache.length + 1)
    x = torch.tensor([[token]], dtype=torch.long, device=cache.device)
    logits = model(x, start_pos=cache.length, cache=cache)
    cache.tokens.append(token)
    return logits[0, -1].float()


@torch.inference_mode()
def verify_step(model: Transformer, cache: KVCache, tokens: list[int]) -> torch.Tensor:
    """Feed `tokens` (the next token, then drafted ones) at the next positions in one pass; return
    float32 logits (len(tokens), vocab): row i is what follows tokens[: i + 1]."""
    return model.output(_feed(model, cache, tokens)).float()


def sample(
    logits: torch.Tensor,
    sampling: Sampling,
    generator: torch.Generator | None,
    allowed: torch.Tensor | None = None,
) -> int:
    """Pick the next id from float32 logits (vocab,); `allowed` (ids) restricts the choice."""
    if allowed is not None:
        masked = torch.full_like(logits, float("-inf"))
        masked[allowed] = logits[allowed]
        logits = masked
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    # On the host: the generator is a CPU one (so a seed draws the same ids on every device), and
    # multinomial refuses a CPU generator for GPU probabilities.
    probs = torch.softmax(logits.cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (always at least the top id).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > sampling.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    model: Transformer,
    cache: KVCache,
    prompt: Sequence[int],
    max_new_tokens: int,
    stop_ids: set[int],
    sampling: Sampling | None = None,
    should_stop: Callable[[list[int]], bool] | None = None,
    constrain: Callable[[list[int]], torch.Tensor | None] | None = None,
    speculation: Speculation | None = None,
    step: DecodeFn | None = None,
    lean: Lean | None = None,
    mix: Mix | None = None,
) -> GenerationResult:
    """Generate after `prompt`, reusing whatever prefix of it `cache` already holds.

    `should_stop(generated)` runs after each new token (and between prefill chunks with the empty
    list): True ends generation with reason "cancelled". `constrain(generated)` may return the ids
    allowed for the next token (token healing), or None for no constraint.

    With `speculation`, each decode pass also feeds a drafted continuation; every token is still
    chosen by `sample` from the logits of its own position, so the output is the same as without
    (for sampling too: one draw per token from the same generator), only fewer passes run. The
    cache forgets the positions of drafts the chosen tokens did not follow.

    `step` runs every one-token decode pass (default: `decode_step`); passes that verify a draft
    always run the model's forward.

    `lean(generated)` may return (ids, amount): `amount` is added to those ids' logits for the next
    token (the names a completion leans toward, engine/name_choice.py), or None for no bias.

    `mix(generated, logits)` returns the logits the next token is chosen from (what followed the
    same tokens elsewhere in the prompt mixed in, engine/prompt_copy.py).
    """
    if step is None:
        step = functools.partial(decode_step, model)
    sampling = sampling or Sampling()
    generator = None
    if sampling.temperature > 0:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(sampling.seed if sampling.seed is not None else int(time.time_ns()))

    if should_stop is not None and should_stop([]):  # cancelled before it started: touch nothing
        return GenerationResult(tokens=[], stop_reason="cancelled")
    # Reuse the cached prefix, but always recompute at least the last prompt token for its logits.
    reuse = min(common_prefix_length(cache.tokens, prompt), len(prompt) - 1)
    cache.truncate(reuse)
    # Room for the whole answer now, so decode steps never reallocate.
    cache.ensure_capacity(len(prompt) + max_new_tokens)
    t0 = time.perf_counter()
    logits: torch.Tensor | None
    if len(prompt) - reuse == 1:
        # One new token (a warm keystroke: the rest of the prompt is cached) is a decode step, so the
        # served path replays its CUDA graph for it too: at 16K tokens a 7B model's eager step takes
        # 22 ms on an H200, the graph's 7 ms (benchmarks/RESULTS.md).
        logits = step(cache, prompt[-1])
    else:
        logits = prefill(
            model, cache, prompt[reuse:], should_stop=(lambda: should_stop([])) if should_stop else None
        )
    t_prefill = time.perf_counter()
    result = GenerationResult(tokens=[], stop_reason="max_tokens", cached_tokens=reuse)
    result.prefill_ms = 1000 * (t_prefill - t0)
    if logits is None:
        result.stop_reason = "cancelled"
        return result

    lookup = PromptLookup(prompt, max_new_tokens) if speculation else None
    generated: list[int] = []
    draft: list[int] = []  # drafted ids fed after the last chosen token, not yet confirmed
    ahead: list[torch.Tensor] = []  # ahead[i]: logits after draft[i]
    while len(generated) < max_new_tokens:
        allowed = constrain(generated) if constrain else None
        bias = lean(generated) if lean else None
        if bias is not None:
            ids, amount = bias
            logits = logits.index_add(0, ids.to(logits.device), torch.full((len(ids),), amount, device=logits.device))
        if mix is not None:
            logits = mix(generated, logits)
        token = sample(logits, sampling, generator, allowed)
        if not generated:
            result.first_token_ms = 1000 * (time.perf_counter() - t0)
        if token in stop_ids:
            result.stop_reason, result.stop_token = "eos", token
            break
        generated.append(token)
        if lookup is not None:
            lookup.append(token)
        if should_stop is not None and should_stop(generated):
            result.stop_reason = "cancelled"
            break
        if len(generated) == max_new_tokens:
            break
        if draft and token == draft[0]:  # the draft was right: its pass already computed what follows
            draft.pop(0)
            logits = ahead.pop(0)
            result.accepted_tokens += 1
            continue
        # Forget the drafts the chosen token did not follow: the cache holds the prompt and every
        # generated token but this one.
        cache.truncate(len(prompt) + len(generated) - 1)
        room = max_new_tokens - len(generated) - 1  # drafts past the last token would be wasted
        draft = lookup.draft(speculation, room) if lookup is not None and speculation else []
        result.forward_passes += 1
        result.drafted_tokens += len(draft)
        if draft:
            rows = verify_step(model, cache, [token, *draft])
            logits, ahead = rows[0], list(rows[1:])
        else:
            logits, ahead = step(cache, token), []
    cache.truncate(min(cache.length, len(prompt) + len(generated)))
    result.tokens = generated
    total_ms = 1000 * (time.perf_counter() - t0)
    result.decode_ms = max(total_ms - result.first_token_ms, 0.0)
    return result
