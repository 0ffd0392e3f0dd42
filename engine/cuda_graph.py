"""The decode step with a static cache layout, and its CUDA-graph capture.

`model.forward(tokens, start_pos: int, cache)` slices the cache and the rotary table with Python
ints, so a captured graph would freeze the position. `decode_step` does the same computation for
one token per sequence, but takes the position as a device tensor: it writes K/V with `index_copy_`
into the cache's full buffers and the attention kernel reads the length from the device. Its
kernel launches are then identical at every position, and `DecodeGraph` records them once and
replays them per token, with no host sync (the caller reads the sampled token when it wants it).

Usage, on CUDA, after the prompt was prefilled (engine.generate.prefill):

    graph = DecodeGraph(model, cache)   # one per cache, kept as long as the cache; recaptures as needed
    logits = graph.decode(token)        # drop-in for engine.generate.decode_step(model, cache, token)
    # or, keeping the sampled token on the GPU (no host sync at all):
    logits = graph.step(tokens, pos)    # tokens (B, 1) long on the GPU -> (B, vocab), a reused buffer
"""

from __future__ import annotations

import os

import torch

from engine import kernels
from engine.cache import KVCache
from engine.kernels import reference
from engine.model import Transformer


def _triton_ops():  # noqa: ANN202 - module or None
    try:
        from engine.kernels import triton_ops
    except ImportError:
        return None
    return triton_ops


def _static_attention(
    q: torch.Tensor, cache: KVCache, layer: int, length: torch.Tensor, splits: int | None
) -> torch.Tensor:
    """q (B, Hq, 1, D) over the first `length` positions of the cache's buffers for `layer`."""
    ops = _triton_ops()
    if ops is not None and (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        k_buf, v_buf = cache.view(layer)  # (B, Hk, capacity, D), bf16 or int8
        return ops.decode_attention(q, k_buf, v_buf, length=length, splits=splits)
    # Without Triton (CPU): slice on the host. Correct, but this path cannot be captured.
    k, v = cache.view(layer, int(length.item()))
    return reference.attention(q, k, v, None, False)


@torch.inference_mode()
def decode_step(
    model: Transformer,
    cache: KVCache,
    tokens: torch.Tensor,
    pos: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    splits: int | None = None,
) -> torch.Tensor:
    """One decode step: tokens (B, 1) at position `pos` (a (1,) long tensor) -> logits (B, vocab).

    Mirrors Transformer.forward for T=1 (tests check they agree). `rope` is the model's float32
    (cos, sin) table covering the cache capacity; K/V of the new token are written into `cache`.
    """
    bsz = tokens.shape[0]
    cos_table, sin_table = rope
    cos, sin = cos_table.index_select(0, pos), sin_table.index_select(0, pos)  # (1, D/2)
    length = pos + 1
    h = model.tok_embeddings(tokens)  # (B, 1, dim)
    for layer in model.layers:
        attn = layer.attention
        x = layer.attention_norm(h)
        q = attn.wq(x).view(bsz, 1, attn.n_heads, attn.head_dim)
        k = attn.wk(x).view(bsz, 1, attn.n_kv_heads, attn.head_dim)
        v = attn.wv(x).view(bsz, 1, attn.n_kv_heads, attn.head_dim)
        q, k = kernels.apply_rotary(q, k, cos, sin)
        cache.write_at(attn.layer_id, pos, k.transpose(1, 2), v.transpose(1, 2))
        out = _static_attention(q.transpose(1, 2), cache, attn.layer_id, length, splits)  # (B, Hq, 1, D)
        h = h + attn.wo(out.transpose(1, 2).reshape(bsz, 1, -1))
        h = h + layer.feed_forward(layer.ffn_norm(h))
    return model.output(model.norm(h))[:, -1]


class CaptureError(RuntimeError):
    """Capturing the decode step failed (the step itself may still run eagerly)."""


class DecodeGraph:
    """`decode_step` captured in a CUDA graph for one KVCache; replayed once per generated token.

    The graph holds the addresses of the cache buffers and the rotary table, so it is recaptured
    (about a second for 7B) when the cache grows or rope_theta changes. Grow the cache to
    prompt + max_new_tokens before decoding to capture once. It keeps its rotary table alive: the
    model replaces its own table when a longer one is needed, and the graph must not read freed memory.
    """

    def __init__(self, model: Transformer, cache: KVCache, warmup: int = 2) -> None:
        assert cache.device.type == "cuda", "CUDA graphs need the cache on a CUDA device"
        self.model, self.cache, self.warmup = model, cache, warmup
        self.tokens = torch.zeros((cache.batch, 1), dtype=torch.long, device=cache.device)
        self.pos = torch.zeros((1,), dtype=torch.long, device=cache.device)
        self.logits: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        self._key: tuple | None = None
        self.captures = 0

    def _layout(self) -> tuple:
        c = self.cache
        return (c.k[0].data_ptr(), c.capacity, self.model.args.rope_theta)

    @property
    def stale(self) -> bool:
        """True when the next step captures first (never captured, or the cache's buffers moved)."""
        return self.graph is None or self._key != self._layout()

    def _capture(self) -> None:
        """Capture the step for the inputs already in `tokens`/`pos` (its warm-up runs that very step,
        writing its K/V at `pos`, so they must be the step about to run). Raises CaptureError."""
        model, cache = self.model, self.cache
        ops = _triton_ops()
        splits = None
        if ops is not None:
            # Fixed for the graph's lifetime; each split's share of keys is computed on the device.
            splits = ops.num_splits(cache.batch, model.args.n_kv_heads, cache.capacity, cache.device)
        rope = model.rope(0, cache.capacity, cache.device)
        self.graph, self.logits, self._rope = None, None, rope

        def run() -> torch.Tensor:
            return decode_step(model, cache, self.tokens, self.pos, rope, splits)

        try:
            # Warm up on a side stream (compiles the kernels, sets up cuBLAS) as PyTorch requires. It
            # computes the real step for the current inputs, so the K/V it writes are the right ones.
            stream = torch.cuda.Stream(device=cache.device)
            stream.wait_stream(torch.cuda.current_stream(cache.device))
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    run()
            torch.cuda.current_stream(cache.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the language server captures on its request thread while other threads
            # may touch CUDA (status queries); only this thread's unsafe calls invalidate the capture.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), torch.inference_mode():
                logits = run()
        except Exception as exc:
            raise CaptureError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self.graph, self.logits, self._key = graph, logits, self._layout()
        self.captures += 1

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Write K/V for `tokens` (B, 1) at `pos`, return logits (B, vocab) (a reused buffer).

        Leaves `cache.tokens` alone; the caller keeps it in step (as with model.forward).
        """
        assert pos < self.cache.capacity, f"position {pos} is past the cache capacity {self.cache.capacity}"
        with torch.inference_mode():  # works whether or not the cache holds inference tensors
            self.tokens.copy_(tokens.view(self.tokens.shape), non_blocking=True)
            self.pos.fill_(pos)  # a kernel argument, not a host-to-device copy
            return self._replay()

    def decode(self, token: int) -> torch.Tensor:
        """Same contract as engine.generate.decode_step: feed `token` at the next position, append it
        to `cache.tokens`, return float32 logits (vocab,) for the position after (batch 1). Raises
        CaptureError, with the cache's tokens unchanged, when the step had to be captured and could
        not be (the eager step then computes it over again)."""
        cache = self.cache
        cache.ensure_capacity(cache.length + 1)  # a no-op when the generator reserved room up front
        with torch.inference_mode():
            self.tokens.fill_(token)
            self.pos.fill_(cache.length)
            logits = self._replay()
            out = logits[0].float()
            if out.data_ptr() == logits.data_ptr():  # float32 model: a copy, not the reused buffer
                out = out.clone()
        cache.tokens.append(token)
        return out

    def prepare(self) -> None:
        """Capture now (in idle time) if the next step would. The capture's warm-up writes K/V at the
        cache's next position, past what it holds: the next token's step overwrites them."""
        cache = self.cache
        if not self.stale or cache.length >= cache.capacity:
            return
        with torch.inference_mode():
            self.tokens.fill_(cache.tokens[-1] if cache.tokens else 0)
            self.pos.fill_(cache.length)
            self._capture()

    def _replay(self) -> torch.Tensor:
        if self.stale:
            self._capture()  # its warm-up already ran this step; replaying again is harmless
        assert self.graph is not None and self.logits is not None
        self.graph.replay()
        return self.logits
