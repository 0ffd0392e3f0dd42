"""The in-process backend: a loaded model, its tokenizer, and a pool of KV caches reused across requests."""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from engine import generate as generate_module
from engine import native_step
from engine.backends.base import (
    COMPILE_DECODE_MODES,
    DTYPE_NAMES,
    KV_CACHE_DTYPES,
    BackendError,
    BadCheckpoint,
    Completion,
    CompletionRequest,
    InstructCapability,
    InstructRequest,
    OnText,
    OutOfMemory,
    Placement,
    ShouldStop,
    StopReason,
    Timings,
)
from engine.cache import KVCache
from engine.checkpoints import CheckpointError, LoadedModel, load_model
from engine.compiled_decode import ServedCompile
from engine.config import ModelArgs
from engine.decode_graphs import ServedGraphs
from engine.generate import Sampling, common_prefix_length, generate, prefill
from engine.healing import TokenHealer
from engine.instruct import follows_instructions
from engine.lookup import Speculation
from engine.name_choice import Constraint, Lean, NameChoices
from engine.native_step import NativeStep
from engine.paths import default_model_dir
from engine.prompt_copy import MAX_VOCAB, Mix, WorkspaceSource, WorkspaceTokens, prompt_copy
from engine.prompts import infill_prompt, instruct_prompt, left_to_right_prompt
from engine.quant import DEFAULT_GROUP_SIZE, QuantizationError, QuantSpec, spec_for_mode


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path(
            "/proc/cpuinfo"
        ).read_text()
    except OSError:
        return False


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA and on CPUs with native bf16; float32 otherwise. Never fp16 on CPU by default."""
    if dtype in (None, "", "auto"):
        if device.type == "cuda" or cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPE_NAMES:
        raise BackendError(f"unknown dtype {dtype!r} (use auto, bfloat16, float32 or float16)")
    dt: torch.dtype = getattr(torch, DTYPE_NAMES[dtype])
    return dt


class QuantizationFallbackWarning(UserWarning):
    """int4 was asked for where it cannot run; the model is loaded with int8 weights instead."""


def resolve_quantization(mode: str | None, group_size: int, device: torch.device) -> QuantSpec | None:
    """The quantization to load with: int4 falls back to int8, with a warning, where it cannot run."""
    try:
        spec = spec_for_mode(mode, group_size)
    except QuantizationError as exc:
        raise BackendError(str(exc)) from exc
    if spec is not None and spec.bits == 4:
        from engine import kernels

        reason = kernels.int4_unavailable_reason(device, spec.group_size)
        if reason is not None:
            warnings.warn(f"int4 weights are not available here ({reason}); using int8 weights instead",
                          QuantizationFallbackWarning, stacklevel=2)
            return QuantSpec(8)
    return spec




# "auto" stores the keys and values of a small model with quantized weights as float32 on CPU when its
# decode steps run in PyTorch: at most this many bytes a token that way (the default model: 20 KiB; a 7B
# model: 1 MiB, which stays bfloat16). The eager step's attention works in float32 and converted the
# whole bfloat16 cache, in every layer, at every step: the default model's int8 step went from 3.8 to
# 3.3 ms at 1K tokens of context, 9.5 to 7.5 ms at 4K (benchmarks/decode_levers.py, "bfloat16 KV"). The
# values stored are the same bfloat16 numbers, so every logit is bit for bit what a bfloat16 cache
# gives; the pool's byte budget holds half the positions. Not for unquantized weights: they decode with
# speculation on CPU, whose verification passes read the cache once per drafted token either way, and a
# keystroke measured the same (112 ms p50 both ways, benchmarks/RESULTS.md) for twice the memory. Not
# where the native step decodes (engine/native_step.py): it converts as it reads, and reads half the
# bytes from a bfloat16 cache (0.8 against 1.0 ms a step at 1K, 1.6 against 4.5 ms at 4K).
AUTO_FLOAT32_KV_BYTES = 64 * 2**10
_KV_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
              "fp32": torch.float32, "int8": torch.int8}


def check_kv_dtype(kv_cache_dtype: str | None) -> None:
    """Raise BackendError for a KV cache dtype that is not one of KV_CACHE_DTYPES (before any loading)."""
    if kv_cache_dtype not in (None, "", "auto") and kv_cache_dtype not in _KV_DTYPES:
        raise BackendError(f"unknown KV cache dtype {kv_cache_dtype!r} (use {', '.join(KV_CACHE_DTYPES)})")


def resolve_kv_dtype(kv_cache_dtype: str | None, model_dtype: torch.dtype, device: torch.device | None = None,
                     args: ModelArgs | None = None, quantized: bool = False, native: bool = False) -> torch.dtype:
    """The KV cache's storage. "auto" (or None): float32 on CPU for a bfloat16 model with quantized
    weights whose float32 K/V fit AUTO_FLOAT32_KV_BYTES a token and whose steps do not run `native`ly,
    else the model's dtype; "int8" stores K/V as int8 with a scale per token and head (about half of
    bf16's bytes)."""
    check_kv_dtype(kv_cache_dtype)
    if kv_cache_dtype in (None, "", "auto"):
        small = args is not None and 2 * args.n_layers * args.kv_dim * 4 <= AUTO_FLOAT32_KV_BYTES
        on_cpu = device is not None and device.type == "cpu"
        eager_quantized = quantized and not native
        return torch.float32 if model_dtype == torch.bfloat16 and on_cpu and small and eager_quantized else model_dtype
    return _KV_DTYPES[kv_cache_dtype]


def decode_setup(loaded: LoadedModel, device: torch.device, dtype: torch.dtype,
                 kv_cache_dtype: str | None = None) -> tuple[NativeStep | None, torch.dtype]:
    """How the backend decodes `loaded`: the native step where it serves (engine/native_step.py: small
    models on CPU, one native call a step, 3-6x the eager step, more than speculation gains, so the
    backend does not speculate there), else None for the eager one; and the KV cache dtype that goes
    with it (resolve_kv_dtype)."""
    native = NativeStep(loaded.model) if native_step.serves(loaded.model, device) else None
    kv_dtype = resolve_kv_dtype(kv_cache_dtype, dtype, device, loaded.args, quantized=loaded.quantization is not None,
                                native=native is not None)
    return native, kv_dtype


WARM_CHUNK = 256  # tokens per prefill step while warming
# Added to the logits of the pieces that carry a completion toward CompletionRequest.favored_names
# (NameChoices.lean: while what it writes is on its way to one). Enough to turn the
# default model's `ValueError(` into the imported `ValidationError(`: on the cross-file benchmark's
# cursors before an imported name, exact match 11.6 -> 19.5 % with repository context (chosen over
# 1.0 and 3.0 on its prompts replayed offline); at 300 other expression starts in the same files it
# changed 3 suggestions and no exact match (benchmarks/RESULTS.md, session 15).
FAVORED_NAME_BONUS = 2.0


class CachePool:
    """KV caches of recent prompts (MAX_CACHES at most), so returning to a file or a spot finds its
    cache; picks the one sharing the longest prefix with a new prompt and evicts the least recently
    used when over the count or the memory budget. Between requests the caches held fit the budget,
    except the one used last when it alone needs more (a 7B model's 16K-token prompt takes 8 GB): it
    stays, since the next keystroke needs it, and all others go.

    A cache's capacity follows what recent requests needed: one grown for a long prompt (a bigger
    context budget, since lowered) shrinks once the last SHRINK_WINDOW requests needed less than
    half of it, so memory never stays at a past peak."""

    SHRINK_WINDOW = 32
    MAX_CACHES = 16
    # A cache serves a new prompt only when they share this much of what it holds: otherwise the new
    # prompt gets its own cache. (In SPM order every prompt starts with the same few tokens, BOS <PRE>
    # <SUF> and an indentation: a jump took the last spot's cache for those and threw the rest away.)
    MIN_SHARED = 0.5
    MIN_COPIED = 128  # shared positions worth copying into a new cache rather than recomputing

    def __init__(self, loaded: LoadedModel, device: torch.device, dtype: torch.dtype, budget_bytes: int) -> None:
        # dtype: the caches' storage (the model's dtype, or torch.int8)
        self.loaded, self.device, self.dtype, self.budget = loaded, device, dtype, budget_bytes
        self.caches: list[KVCache] = []  # most recently used last
        self._recent_needs: deque[int] = deque(maxlen=self.SHRINK_WINDOW)

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.caches)

    def acquire(self, prompt: list[int], capacity: int) -> KVCache:
        best, best_len = None, 0
        donor, donor_len = None, 0  # the longest match of all, however small a share of its cache
        for cache in self.caches:
            n = common_prefix_length(cache.tokens, prompt)
            if n > donor_len:
                donor, donor_len = cache, n
            if n > best_len and n >= self.MIN_SHARED * cache.length:
                best, best_len = cache, n
        if best is None:
            # Nothing shared: an empty cache (its request was cancelled before prefill) serves, else
            # a new one (the least recently used goes when the pool is full).
            best = next((c for c in self.caches if not c.tokens), None)
        if best is None:
            best = KVCache(self.loaded.args, capacity, self.device, self.dtype)
        else:
            self.caches.remove(best)
        if donor is not None and donor is not best and donor_len >= self.MIN_COPIED and not best.tokens:
            # A new prompt that shares a long start with a cache it may not take over (a file's other
            # spot: the same suffix in SPM, the same snippets and file head in PSM): copying those
            # positions costs a memory copy, recomputing them a prefill.
            best.copy_prefix(donor, donor_len)
        self.caches.append(best)  # most recently used last
        best.ensure_capacity(capacity)
        self._recent_needs.append(capacity)
        peak = max(self._recent_needs)
        if best.capacity > 2 * peak:
            best.shrink_to(peak)
        self._evict(keep=best)
        return best

    def _evict(self, keep: KVCache) -> None:
        while len(self.caches) > 1 and (len(self.caches) > self.MAX_CACHES or self.nbytes() > self.budget):
            victim = next(c for c in self.caches if c is not keep)
            self.caches.remove(victim)

    def release(self) -> None:
        """After a request: drop the least recently used caches until the rest fit the budget (the
        one just used always stays)."""
        while len(self.caches) > 1 and self.nbytes() > self.budget:
            self.caches.pop(0)

    def clear(self) -> None:
        self.caches.clear()


class _StopWatch:
    """The stop hook generate() calls after each step: stops for cancellation or a stop string, and
    streams the text so far to `on_text`. Afterwards `text` and `why` say where and why it stopped."""

    def __init__(self, text_of: Callable[[list[int]], str], stop_strings: list[str],
                 should_stop: ShouldStop | None, on_text: OnText | None) -> None:
        self.text_of, self.stop_strings = text_of, stop_strings
        self.should_stop, self.on_text = should_stop, on_text
        self.text = ""
        self.why: StopReason = "cancelled"

    def __call__(self, generated: list[int]) -> bool:
        if self.should_stop is not None and self.should_stop():
            self.why = "cancelled"
            return True
        if not generated:
            return False
        text = self.text_of(generated)
        for s in self.stop_strings:
            if s in text:
                self.text, self.why = text[: text.index(s)], "stop_string"
                return True
        self.text = text
        if self.on_text is not None:
            self.on_text(text)
        return False


class LocalBackend:
    """Implements engine.backends.base.Backend with the model in this process.

    Requests are served one at a time (a lock); the language server cancels stale ones through
    `should_stop`, which is checked between prefill chunks and decode steps.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        dtype: torch.dtype,
        cache_budget_mb: int = 512,
        adapter: str | Path | None = None,
        kv_dtype: torch.dtype | None = None,
        speculation: Speculation | None = None,
        cuda_graphs: bool = True,
        compile_decode: str = "off",
        native: NativeStep | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.device, self.dtype = device, dtype
        self.kv_dtype = kv_dtype or dtype  # the KV caches' storage: the model's dtype or torch.int8
        self.adapter = Path(adapter) if adapter else None
        self.pool = CachePool(loaded, device, self.kv_dtype, cache_budget_mb * 2**20)
        self.healer = TokenHealer(self.tok.piece_texts())
        self.line_end_ids = frozenset(i for i, text in enumerate(self.healer.texts) if text.endswith("\n"))
        self.indent_ids = frozenset(i for i, text in enumerate(self.healer.texts) if text and not text.strip(" \t"))
        self.name_choices = NameChoices(self.healer)
        # The workspace's files as tokens, for copying beyond the prompt (engine/prompt_copy.py)
        self.workspace_tokens = WorkspaceTokens(self.tok.encode_infill)
        self.lock = threading.Lock()
        self.on_state: Callable[[str], None] | None = None  # never called: a local model has no outage
        self.warnings: list[str] = []
        # Prompt lookup drafts for requests that allow them (None: never; see default_speculation).
        self.speculation = speculation
        # One-token decode steps replay CUDA graphs where they run (engine/decode_graphs.py); passes
        # that verify a draft run the model's forward.
        self.graphs = ServedGraphs(self.model, device, enabled=cuda_graphs, drafts=speculation is not None)
        # On CPU, one-token decode steps run compiled once a background compile is done
        # (engine/compiled_decode.py: the same logits; eager until then, or for good if it fails).
        self.compiled = ServedCompile(self.model, device, self.kv_dtype, compile_decode, adapter=adapter is not None,
                                      native=native is not None)
        # Or one native call a step (engine/native_step.py), where the backend was given one: int8 or
        # bfloat16 weights on CPU, decoding without speculation (whose verification passes would have to
        # reproduce one-token steps bit for bit, which the native step does not).
        self.native = native

    # ---- Backend properties -------------------------------------------------------------------

    @property
    def quantization(self) -> str:
        """The weights' quantization: "none", "int8" or "int4"."""
        spec = self.loaded.quantization
        return spec.name if spec is not None else "none"

    @property
    def description(self) -> str:
        name = self.loaded.path.name
        extra = f" + adapter {self.adapter.name}" if self.adapter else ""
        quant = "" if self.loaded.quantization is None else f", {self.quantization} weights"
        kv = f", {str(self.kv_dtype).removeprefix('torch.')} KV cache" if self.kv_dtype != self.dtype else ""
        return f"local: {name}{extra} ({self.device.type}, {str(self.dtype).removeprefix('torch.')}{quant}{kv})"

    @property
    def placement(self) -> Placement:
        return Placement(self.device.type, str(self.dtype).removeprefix("torch."), self.quantization,
                         str(self.kv_dtype).removeprefix("torch."), self.decode_step_kind)

    @property
    def decode_step_kind(self) -> str:
        """How one-token decode steps run now: "native", "compiled", "compiling" (eager until it is
        ready), "CUDA graphs" or "eager"."""
        if self.native is not None:
            return "native"
        if self.compiled.state != "eager":
            return self.compiled.state
        return "CUDA graphs" if self.graphs.active else "eager"

    @property
    def instruct_capability(self) -> InstructCapability:
        # What its checkpoint (and adapter) say about themselves; read again when their files change.
        return follows_instructions(self.loaded.path, self.adapter)

    @property
    def state(self) -> str:
        return "ready"

    @property
    def context_length(self) -> int:
        # Rotary has no hard limit; memory does. Report the trained length scaled as Code Llama
        # extrapolates (trained at 16K, usable to ~100K with base 1e6).
        trained = self.loaded.args.max_seq_len
        return trained * 6 if self.loaded.args.rope_theta >= 1e6 else trained

    @property
    def can_infill(self) -> bool:
        return self.tok.can_infill

    def cache_bytes(self) -> int:
        """Bytes held by the KV caches."""
        return self.pool.nbytes()

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode_infill(text))

    # ---- requests -----------------------------------------------------------------------------

    def build_prompt(self, request: CompletionRequest) -> tuple[list[int], str]:
        """The prompt ids and the text held back for token healing ('' when none)."""
        if not self.tok.can_infill:
            prompt = left_to_right_prompt(self.tok, request.prefix)
        else:
            prompt = infill_prompt(self.tok, request.prefix, request.suffix, request.fim_format)
        healed = ""
        if request.token_healing and request.prefix:
            # The prefix's tokens are the prompt's tail in SPM and end before <SUF> in PSM.
            at = len(prompt) - 1 if request.fim_format == "spm" or not self.tok.can_infill else prompt.index(
                self.tok.suffix_id  # type: ignore[arg-type]
            ) - 1
            text = self.healer.heal_text(prompt[at])
            if text and at > 2:
                healed = text
                prompt = prompt[:at] + prompt[at + 1 :]
        return prompt, healed

    def complete(
        self, request: CompletionRequest, should_stop: ShouldStop | None = None, on_text: OnText | None = None
    ) -> Completion:
        prompt, healed = self.build_prompt(request)
        stop_ids = self.tok.stop_ids()
        constrain: Constraint | None = None
        lean = None
        if request.name_choices:
            constrain = self.name_choices.constraint(healed, request.name_choices, stop_ids)
        elif healed:
            constrain = self.healer.constraint(healed)
        if request.favored_names and not request.name_choices:
            lean = self.name_choices.lean(healed, request.favored_names, FAVORED_NAME_BONUS)

        def text_of(ids: list[int]) -> str:
            text = self.tok.decode_infill(ids)
            return text[len(healed) :] if text.startswith(healed) else text

        mix = self._prompt_copy(prompt, request, bool(healed)) if self._copies(request) else None
        speculation = self.speculation if request.speculative else None
        with _out_of_memory_as_error():
            return self._run(prompt, request, stop_ids, text_of, should_stop, on_text, constrain, speculation, lean,
                             mix)

    def _prompt_copy(self, prompt: list[int], request: CompletionRequest, healing: bool) -> Mix:
        """What follows the text before the cursor elsewhere in the prompt or the workspace,
        mixed into each token's choice. The completion continues the prompt's tail in SPM order (and
        without infilling), the part before <SUF> in PSM."""
        before = prompt
        if self.tok.can_infill and request.fim_format == "psm":
            before = prompt[: prompt.index(self.tok.suffix_id)]  # type: ignore[arg-type]
        return prompt_copy(prompt, before, special=self.tok.special_ids(), workspace=self._workspace_source(request),
                           line_ends=self.line_end_ids, indents=self.indent_ids, healing=healing)

    def _copies(self, request: CompletionRequest) -> bool:
        return request.prompt_copy and self.tok.vocab_size <= MAX_VOCAB  # larger vocabularies: see MAX_VOCAB

    def _workspace_source(self, request: CompletionRequest) -> WorkspaceSource | None:
        files = request.workspace
        if files is None or not self._copies(request):
            return None
        return self.workspace_tokens.source(files.texts, files.generation, files.current, files.prepare)

    def instruct(
        self, request: InstructRequest, should_stop: ShouldStop | None = None, on_text: OnText | None = None
    ) -> Completion:
        prompt = instruct_prompt(self.tok, request.user, request.system)
        return self._run(prompt, request, {self.tok.eos_id}, self.tok.decode, should_stop, on_text, None,
                         self.speculation)

    def warm(self, request: CompletionRequest, should_stop: ShouldStop | None = None) -> None:
        prompt, _ = self.build_prompt(request)
        self._workspace_source(request)  # idle: catch up with the workspace's files too
        if not self.lock.acquire(blocking=False):
            return  # a real request is running; warming is only ever opportunistic
        try:
            cache = self._acquire(prompt, len(prompt) + request.max_new_tokens)
            reuse = common_prefix_length(cache.tokens, prompt)
            cache.truncate(reuse)
            if reuse < len(prompt):
                # Short chunks: a request arriving meanwhile waits for one chunk at most.
                prefill(self.model, cache, prompt[reuse:], chunk_size=WARM_CHUNK, should_stop=should_stop)
            # Warmed all the way and still idle: its graph too, if it has none yet.
            if cache.length == len(prompt) and not (should_stop is not None and should_stop()):
                self.graphs.prepare(cache)
            self._release()
        finally:
            self.lock.release()

    def _run(self, prompt: list[int], request: CompletionRequest | InstructRequest, stop_ids: set[int],
             text_of: Callable[[list[int]], str], should_stop: ShouldStop | None, on_text: OnText | None,
             constrain: Callable[[list[int]], torch.Tensor | None] | None,
             speculation: Speculation | None,
             lean: Lean | None = None, mix: Mix | None = None) -> Completion:
        limit = self.context_length
        max_new = max(0, min(request.max_new_tokens, limit - len(prompt)))
        if max_new == 0:
            return Completion("", "context_full", prompt_tokens=prompt)
        start = time.perf_counter()
        watch = _StopWatch(text_of, [s for s in request.stop if s], should_stop, on_text)
        sampling = Sampling(request.temperature, request.top_p, request.seed)
        with self.lock:
            cache = self._acquire(prompt, len(prompt) + max_new)
            try:
                result = generate(self.model, cache, prompt, max_new, stop_ids, sampling, watch, constrain,
                                  speculation, step=self._decode_step, lean=lean, mix=mix)
            finally:
                self._release()
        reason: StopReason = result.stop_reason
        if reason == "cancelled":
            reason, text = watch.why, watch.text  # the hook stopped it: cancelled, or a stop string
        else:
            text = text_of(result.tokens)
            if reason == "eos" and result.stop_token == self.tok.eot_id:
                reason = "eot"
        timings = Timings(
            prompt_tokens=len(prompt),
            cached_tokens=result.cached_tokens,
            prefill_ms=result.prefill_ms,
            first_token_ms=result.first_token_ms,
            decode_ms=result.decode_ms,
            generated_tokens=len(result.tokens),
            decode_passes=result.forward_passes,
            total_ms=1000 * (time.perf_counter() - start),
        )
        return Completion(text, reason, prompt_tokens=prompt, tokens=result.tokens, timings=timings)

    def _decode_step(self, cache: KVCache, token: int) -> torch.Tensor:
        """engine.generate.decode_step's contract: native or compiled where that applies, else a CUDA
        graph's replay or the eager step (ServedGraphs)."""
        if self.native is not None:  # looked up per call: tests inject faults there
            return generate_module.decode_step(self.model, cache, token, native=self.native)
        logits = self.compiled.step(cache, token)
        return logits if logits is not None else self.graphs.step(cache, token)

    def _acquire(self, prompt: list[int], positions: int) -> KVCache:
        """The pool's cache for `prompt` with room for `positions` (bucketed while CUDA graphs run, so a
        cache keeps its graph as it grows); the graphs of caches the pool evicted go with them."""
        cache = self.pool.acquire(prompt, self.graphs.capacity(positions))
        self.graphs.keep_only(self.pool.caches)
        return cache

    def _release(self) -> None:
        self.pool.release()
        self.graphs.keep_only(self.pool.caches)

    def close(self) -> None:
        self.graphs.clear()
        self.pool.clear()


def default_speculation(device: torch.device, dtype: torch.dtype) -> Speculation | None:
    """Prompt lookup where it measured faster with the same output (benchmarks/speculative.py): CPU in
    bfloat16, 2.0x decode tok/s on completions that copy, 1.3x on HumanEval single lines, every output
    identical (a verification pass computes each drafted position bit for bit as a one-token step). Off
    in float32 (1.46x on copies but 0.95x on HumanEval, and batched float32 matrix products differ from
    one-row ones in the last bits) and on CUDA until benchmarks/gpu_check.sh has measured it there."""
    return Speculation() if device.type == "cpu" and dtype == torch.bfloat16 else None


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's (a RuntimeError that says so)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextmanager
def _out_of_memory_as_error() -> Iterator[None]:
    """Out of memory during a request becomes OutOfMemory, which the language server explains."""
    try:
        yield
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(f"out of memory during a completion ({str(exc)[:200]})") from exc
        raise


def load_local_backend(
    model_dir: str | Path | None = None,
    device: str = "auto",
    dtype: str | None = None,
    adapter: str | Path | None = None,
    cache_budget_mb: int = 512,
    quantization: str | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    kv_cache_dtype: str | None = None,
    cuda_graphs: bool = True,
    compile_decode: str = "off",
) -> LocalBackend:
    """Load a model directory (default: the embedded model) into a ready backend.

    `quantization` ("none", "int8", "int4") quantizes the weights as they load (engine/quant.py); a
    checkpoint saved quantized loads quantized whatever it says. `kv_cache_dtype`: "auto", "bfloat16",
    "float32" or "int8" (see resolve_kv_dtype). `cuda_graphs`: decode steps replay CUDA graphs
    on a CUDA device (engine/decode_graphs.py); False decodes eagerly. `compile_decode`: "auto" compiles the
    CPU decode step in a background thread (engine/compiled_decode.py; tens of seconds of CPU, so worth it
    for a server, not a one-off completion), "off" decodes eagerly. Raises BackendError with a user-facing
    message for anything the user must fix.
    """
    path = Path(model_dir) if model_dir else default_model_dir()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    spec = resolve_quantization(quantization, group_size, dev)
    check_kv_dtype(kv_cache_dtype)
    if compile_decode not in COMPILE_DECODE_MODES:
        raise BackendError(f"unknown compileDecode {compile_decode!r} (use {' or '.join(COMPILE_DECODE_MODES)})")
    try:
        loaded = load_model(path, device=dev, dtype=dt, quantization=spec)
        if adapter:
            from engine.train.lora import apply_adapter

            apply_adapter(loaded.model, Path(adapter))
    except CheckpointError as exc:
        raise BadCheckpoint(str(exc)) from exc
    except FileNotFoundError as exc:
        raise BadCheckpoint(f"Model not found: {exc}") from exc
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(f"{path}: out of {dev.type.upper()} memory while loading the model") from exc
        raise
    native, kv_dt = decode_setup(loaded, dev, dt, kv_cache_dtype)
    # Speculation is verified bit for bit only with the model's own values in the cache (its dtype, or a
    # float32 cache holding its bfloat16 numbers), unquantized weights (an int8 cache or quantized
    # weights batch the verification differently) and eager one-token steps.
    exact = (kv_dt == dt or kv_dt == torch.float32) and loaded.quantization is None and native is None
    return LocalBackend(loaded, dev, dt, cache_budget_mb=cache_budget_mb, adapter=adapter, kv_dtype=kv_dt,
                        speculation=default_speculation(dev, dt) if exact else None, cuda_graphs=cuda_graphs,
                        compile_decode=compile_decode, native=native)
