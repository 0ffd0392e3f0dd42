"""The one-token decode step on CPU compiled with torch.compile (Inductor), and the local backend's use of it.

Why: on CPU a small model's eager step costs per op, not per weight byte (benchmarks/RESULTS.md, issue 16:
a default-model step dispatches about 630 aten ops). Compiled, the step's elementwise ops (rotary, the
casts, residual adds, SiLU, the norms' scaling) become a few fused C++ loops and the matmuls direct calls.

Greedy output does not change: the compiled step gives the eager step's logits bit for bit
(tests/engine/test_compiled_decode.py). Three things make it so:
  - Inductor rounds every bfloat16 intermediate as eager does (`emulate_precision_casts`); by default
    it keeps fused intermediates in float32.
  - Its pattern matcher is off: it would replace the float32 one-query attention by SDPA.
  - The two reductions whose summation order Inductor would change (RMSNorm's mean of squares, the
    attention's matrix products and softmax) run as opaque ops that call the eager code. Inductor's
    own RMSNorm differed in the last bit about once in a thousand rows, its softmax more often, and
    either flips near-tied greedy tokens (6-7 of 8 completions identical without these ops).

One compile serves every position and cache capacity (dynamic shapes: the position is a symbolic int,
the cache buffers' length a symbolic size). It takes tens of seconds (less with Inductor's on-disk FX
graph cache warm), so the backend compiles in a background thread after the model loads, decodes
eagerly until the compiled step is ready, and decodes eagerly for good, with one logged warning, when
compiling fails (no C++ compiler, say). Steps the compiled step was not built for run eagerly too: an
int8 or other-dtype KV cache, the first two positions and a cache's last one (each would recompile), a model whose projections changed since (a LoRA adapter, engine/fused.py's stacking undone),
or a kernel backend forced by a test. Like the eager step, it runs under inference mode (no gradients).

Measured on the default model (benchmarks/decode_levers.py, benchmarks/RESULTS.md): 1.06-1.19x the eager
step at 1K tokens of context, none at 4K, where the eager attention (converting the whole bf16 cache to
float32 in every layer) is most of the step; with a float32 KV cache, 1.18-1.61x. Compiling costs 10-40
s of CPU and about 250 MB of resident memory (the compiler), so the server's `compileDecode` is off
unless asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from engine import generate, kernels
from engine.cache import KVCache
from engine.kernels import reference
from engine.model import RMSNorm, Transformer

log = logging.getLogger(__name__)

# Inductor options for an exact step (see the module's docstring).
COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"emulate_precision_casts": True, "pattern_matcher": False}
MIN_POSITION = 2  # decode steps at earlier positions run eagerly (0 and 1 would specialise the compile)
BUILD_ATTEMPTS = 3  # ServedCompile's tries when another thread's fail_on_recompile stance refused a build


@torch.library.custom_op("codellama::rms_norm_float", mutates_args=())
def _rms_norm_float(x: torch.Tensor, eps: float) -> torch.Tensor:
    """torch.rms_norm of a float32 x over its last dim, computed by ATen as the eager step does."""
    return torch.rms_norm(x, (x.shape[-1],), eps=eps)


@_rms_norm_float.register_fake
def _(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("codellama::one_query_attention", mutates_args=())
def _one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The eager step's one-query attention (engine/kernels/reference.py), as one opaque op."""
    return reference._one_query_attention(q, k, v)


@_one_query_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q)


def _norm(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """reference.rms_norm with its reduction in ATen."""
    return _rms_norm_float(x.float(), norm.eps).type_as(x) * norm.weight


def step_graph(model: Transformer, tokens: torch.Tensor, pos: int, keys: list[torch.Tensor],
               values: list[torch.Tensor], cos_table: torch.Tensor, sin_table: torch.Tensor) -> torch.Tensor:
    """What gets compiled: tokens (1, 1) at position `pos` -> logits (1, vocab) in the model's dtype.
    K/V are written into the layers' full-capacity buffers `keys[i]`/`values[i]` at `pos`; attention
    reads positions [0, pos]. Mirrors Transformer.forward for one token with a cache (the same ops)."""
    bsz = tokens.shape[0]
    cos, sin = cos_table[pos : pos + 1], sin_table[pos : pos + 1]
    h = model.tok_embeddings(tokens)
    for layer in model.layers:
        attn, ff = layer.attention, layer.feed_forward
        x = _norm(layer.attention_norm, h)
        q, k, v = attn.fused_qkv(x) if attn.fused_qkv is not None else (attn.wq(x), attn.wk(x), attn.wv(x))
        q = q.view(bsz, 1, attn.n_heads, attn.head_dim)
        k = k.view(bsz, 1, attn.n_kv_heads, attn.head_dim)
        v = v.view(bsz, 1, attn.n_kv_heads, attn.head_dim)
        q, k = kernels.apply_rotary(q, k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k_buf, v_buf = keys[attn.layer_id], values[attn.layer_id]
        k_buf[:, :, pos : pos + 1] = k
        v_buf[:, :, pos : pos + 1] = v
        out = _one_query_attention(q, k_buf[:, :, : pos + 1], v_buf[:, :, : pos + 1])
        h = h + attn.wo(out.transpose(1, 2).reshape(bsz, 1, -1))
        x = _norm(layer.ffn_norm, h)
        gate, up = ff.fused_gate_up(x) if ff.fused_gate_up is not None else (ff.w1(x), ff.w3(x))
        h = h + ff.w2(kernels.silu_mul(gate, up))
    return model.output(_norm(model.norm, h))[:, -1]


class CompileError(RuntimeError):
    """Compiling the decode step failed (the eager step still runs)."""


def _projection_state(model: Transformer) -> list[object]:
    """What the compiled step baked in about the projections: which module each is, its run-time
    adapter, and the stacked q/k/v and gate/up (engine/fused.py)."""
    state: list[object] = []
    for layer in model.layers:
        attn, ff = layer.attention, layer.feed_forward
        parts = (attn.wq, attn.wk, attn.wv, attn.wo, ff.w1, ff.w2, ff.w3)
        state += [attn.fused_qkv, ff.fused_gate_up, *parts, *(getattr(p, "lora", None) for p in parts)]
    return state


class CompiledStep:
    """engine.generate.decode_step's contract for one model and one KV cache dtype, compiled.

    `build()` compiles it; `applies(cache)` says whether a step on
    `cache` may take it (else decode eagerly); calling it runs one step."""

    def __init__(self, model: Transformer, kv_dtype: torch.dtype) -> None:
        self.model, self.kv_dtype = model, kv_dtype
        self._fn: Callable[..., torch.Tensor] | None = None
        self._state: list[object] = []

    def build(self) -> float:
        """Compile the step (blocking); its seconds. Raises CompileError."""
        start = time.perf_counter()
        model = self.model
        try:
            # Not inference tensors, as the backend's pool makes them (Dynamo guards on the difference).
            scratch = KVCache(model.args, 512, "cpu", self.kv_dtype)
            # One eager step first: it builds what layers make on first use (int4's CPU layout), so
            # tracing reads the model without changing it.
            generate.prefill(model, scratch, [1] * 8)
            generate.decode_step(model, scratch, 1)
            self._state = _projection_state(model)
            fn = torch.compile(step_graph, dynamic=True, options=COMPILE_OPTIONS)
            # Two steps at different positions and capacities: one compile serves both (any
            # specialisation would recompile here, not in a request).
            for capacity, pos in ((512, 9), (768, 600)):
                scratch.ensure_capacity(capacity)
                with torch.inference_mode():
                    cos, sin = model.rope(0, scratch.capacity, scratch.device)
                    fn(model, torch.tensor([[1]]), pos, scratch.k, scratch.v, cos, sin)
        except Exception as exc:
            raise CompileError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self._fn = fn
        return time.perf_counter() - start

    def applies(self, cache: KVCache) -> bool:
        # Room for the step and one more position: growing the cache here, under inference mode, would
        # make inference tensors, and the compile assumes the position is not the cache's last one (it
        # would recompile for that). engine.generate.generate reserves room for the whole answer and
        # never feeds the last token it samples, so decode steps stop two positions short of its end.
        return (self._fn is not None and cache.dtype == self.kv_dtype and cache.batch == 1
                and cache.device.type == "cpu" and MIN_POSITION <= cache.length < cache.capacity - 1
                and not cache.k[0].is_inference()
                and kernels.backend_name() == "auto"
                and all(a is b for a, b in zip(_projection_state(self.model), self._state, strict=True)))

    @torch.inference_mode()
    def __call__(self, cache: KVCache, token: int) -> torch.Tensor:
        assert self._fn is not None and cache.length < cache.capacity, "build() it, and leave it room to write"
        cos, sin = self.model.rope(0, cache.capacity, cache.device)
        logits = self._fn(self.model, torch.tensor([[token]]), cache.length, cache.k, cache.v, cos, sin)
        cache.tokens.append(token)
        return logits[0].float()


def compile_unavailable_reason(device: torch.device, kv_dtype: torch.dtype, mode: str,
                               adapter: bool, native: bool = False) -> str | None:
    """Why the backend's decode steps are not compiled (None: it compiles them)."""
    if mode == "off":
        return "turned off (setting compileDecode: off)"
    if native:
        return "the native step decodes, faster (engine/native_step.py)"
    if device.type != "cpu":
        return f"the model runs on {device.type.upper()} (the compiled step is for the CPU; CUDA has graphs)"
    if not kv_dtype.is_floating_point:
        return f"the KV cache is {str(kv_dtype).removeprefix('torch.')} (the compiled step reads a float cache)"
    if adapter:
        return "a LoRA adapter is applied"
    return None


class ServedCompile:
    """The local backend's compiled step: built in a background thread after the model loads; until it
    is ready (and for good if building fails) `step` returns None and the backend decodes eagerly.

    `build` replaces CompiledStep.build (tests hold or fail the compile with it)."""

    def __init__(self, model: Transformer, device: torch.device, kv_dtype: torch.dtype, mode: str = "auto",
                 adapter: bool = False, build: Callable[[CompiledStep], None] | None = None,
                 native: bool = False) -> None:
        # None: compiling or compiled
        self.reason = compile_unavailable_reason(device, kv_dtype, mode, adapter, native)
        self.compiled = CompiledStep(model, kv_dtype)
        self._build = build or CompiledStep.build
        self._ready = threading.Event()
        self.compile_s: float | None = None
        self.steps = 0  # decode steps that ran compiled
        self._thread: threading.Thread | None = None
        if self.reason is not None:
            log.info("compiled decode step: not used: %s", self.reason)
            self._ready.set()
        else:
            self._thread = threading.Thread(target=self._compile, name="compile-decode", daemon=True)
            self._thread.start()

    @property
    def state(self) -> str:
        """"compiled", "compiling" or "eager" (what codellama/status reports)."""
        if self.reason is not None:
            return "eager"
        return "compiled" if self._ready.is_set() else "compiling"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until compiling has ended (either way); True if it has."""
        return self._ready.wait(timeout)

    def _compile(self) -> None:
        start = time.perf_counter()
        try:
            for attempt in range(BUILD_ATTEMPTS):
                try:
                    self._build(self.compiled)
                    break
                except CompileError as exc:
                    # Another backend's request ran its compiled step meanwhile (see `step`): try again.
                    if not _refused_recompile(exc) or attempt == BUILD_ATTEMPTS - 1:
                        raise
        except Exception as exc:
            self.disable(f"compiling the decode step failed ({exc})")
        else:
            self.compile_s = time.perf_counter() - start
            log.info("compiled decode step: ready after %.1f s", self.compile_s)
        finally:
            self._ready.set()

    def disable(self, reason: str) -> None:
        """Decode eagerly from now on."""
        self.reason = reason
        log.warning("compiled decode step: decoding eagerly: %s", reason)

    def step(self, cache: KVCache, token: int) -> torch.Tensor | None:
        """The compiled step's logits, or None where the caller must decode eagerly."""
        if self.reason is not None or not self._ready.is_set() or not self.compiled.applies(cache):
            return None
        try:
            # A step the compile does not cover would recompile: seconds, in the middle of a request.
            # Dynamo refuses instead (before running anything), and this step and the rest run eagerly.
            with torch.compiler.set_stance("fail_on_recompile"):
                logits = self.compiled(cache, token)
        except RuntimeError as exc:
            if not _refused_recompile(exc):
                raise
            self.disable(f"a decode step needed another compile ({str(exc).splitlines()[-1].strip()})")
            return None
        self.steps += 1
        return logits



def _refused_recompile(exc: BaseException) -> bool:
    """Whether Dynamo refused to recompile because some thread had the "fail_on_recompile" stance on (the
    stance is process-wide)."""
    return "fail_on_recompile" in str(exc)
