"""Llama 2 / Code Llama in PyTorch: modules only. One definition serves inference and training.

Parameter names follow Meta's release (tok_embeddings, layers.N.attention.wq, feed_forward.w1, ...).
The rows of wq and wk are kept in the "rotate half" order Hugging Face checkpoints use; the loader
permutes Meta checkpoints into it (see checkpoints.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine import kernels
from engine.cache import KVCache, KVView
from engine.config import ModelArgs
from engine.fused import FusedProjections, fusable


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = args.n_heads
        assert args.n_kv_heads is not None
        self.n_kv_heads: int = args.n_kv_heads
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.fused_qkv: FusedProjections | None = None  # see Transformer.fuse_projections

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        self.fused_qkv = None  # a move or cast converts each projection on its own
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int,
                cache: KVCache | None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        projections = (self.wq, self.wk, self.wv)
        if self.fused_qkv is not None and self.fused_qkv.applies(x, projections):
            q, k, v = self.fused_qkv(x)
        else:
            q, k, v = (w(x) for w in projections)
        q = q.view(bsz, seqlen, self.n_heads, self.head_dim)
        k = k.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        v = v.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        q, k = kernels.apply_rotary(q, k, cos, sin)
        # (B, H, T, D) for attention
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        keys: KVView = k
        values: KVView = v
        if cache is not None:
            cached_k, cached_v = cache.write(self.layer_id, start_pos, k, v)
            if start_pos > 0:  # from position 0 the keys just computed are the whole sequence,
                keys, values = cached_k, cached_v  # unrounded when the cache stores int8
        # The queries are the last positions of the keys (the whole sequence, or a prompt chunk after a
        # cached prefix), each seeing the keys up to its own.
        out = kernels.attention(q, keys, values, None, is_causal=seqlen > 1)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up
        self.fused_gate_up: FusedProjections | None = None  # see Transformer.fuse_projections

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        self.fused_gate_up = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_gate_up is not None and self.fused_gate_up.applies(x, (self.w1, self.w3)):
            gate, up = self.fused_gate_up(x)
        else:
            gate, up = self.w1(x), self.w3(x)
        return self.w2(kernels.silu_mul(gate, up))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.attention = Attention(args, layer_id)
        assert args.hidden_dim is not None
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int,
                cache: KVCache | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        # nn.Embedding's own init on the meta device (where load_model builds) imports torch._dynamo:
        # over a minute on a slow machine, for values the checkpoint overwrites anyway.
        embedding = torch.empty(args.vocab_size, args.dim)
        if embedding.device.type != "meta":
            nn.init.normal_(embedding)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=embedding)
        # A ModuleList (so the blocks are registered), typed as the list of blocks it reads as.
        self.layers: list[TransformerBlock] = nn.ModuleList(  # type: ignore[assignment]
            TransformerBlock(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self._rope_cos: torch.Tensor | None = None  # (L, D/2) float32, grown on demand
        self._rope_sin: torch.Tensor | None = None
        self._rope_theta: float | None = None

    # ---- rotary table -------------------------------------------------------------------------

    def rope(self, start: int, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions [start, end), always float32 (base 1e6 needs the precision)."""
        cached = self._rope_cos
        if (
            cached is None
            or cached.shape[0] < end
            or cached.device != device
            or self._rope_theta != self.args.rope_theta
        ):
            # Grown by doubling: decoding past the table's end one position at a time must not
            # recompute it for every token.
            length = max(4096, 0 if cached is None else cached.shape[0])
            while length < end:
                length *= 2
            d = self.args.head_dim
            inv_freq = 1.0 / (
                self.args.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float64) / d)
            )
            angles = torch.outer(torch.arange(length, device=device, dtype=torch.float64), inv_freq)
            self._rope_cos, self._rope_sin = angles.cos().float(), angles.sin().float()
            self._rope_theta = self.args.rope_theta
        assert self._rope_cos is not None and self._rope_sin is not None
        return self._rope_cos[start:end], self._rope_sin[start:end]

    # ---- forward ------------------------------------------------------------------------------

    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """tokens (B, T) at positions [start_pos, start_pos+T) -> logits (B, T, vocab).

        With a cache, keys/values for these positions are written into it and attention covers
        [0, start_pos+T). With `return_hidden`, the final normalised hidden states (B, T, dim) are
        returned instead of logits (training computes its loss in chunks from them).
        """
        _, seqlen = tokens.shape
        h = self.tok_embeddings(tokens)
        cos, sin = self.rope(start_pos, start_pos + seqlen, tokens.device)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and cache is None:
                h = checkpoint(layer, h, cos, sin, start_pos, None, use_reentrant=False)
            else:
                h = layer(h, cos, sin, start_pos, cache)
        h = self.norm(h)
        return h if return_hidden else self.output(h)

    def fuse_projections(self) -> None:
        """Stack q/k/v and gate/up into one matmul each for one-token CPU decode steps (engine/fused.py:
        no weight is held twice, and greedy output does not change)."""
        dtype = self.tok_embeddings.weight.dtype
        for layer in self.layers:
            attn, ff = layer.attention, layer.feed_forward
            if fusable((attn.wq, attn.wk, attn.wv)):
                attn.fused_qkv = FusedProjections((attn.wq, attn.wk, attn.wv), dtype)
            if fusable((ff.w1, ff.w3)):
                ff.fused_gate_up = FusedProjections((ff.w1, ff.w3), dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights(model: Transformer, std: float = 0.02, seed: int | None = None) -> None:
    """Random initialisation for pretraining from scratch (GPT-2 style: scaled residual projections)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    residual_std = std / (2 * model.args.n_layers) ** 0.5
    for name, p in model.named_parameters():
        if p.dim() == 1:
            nn.init.ones_(p)
        elif name.endswith(("wo.weight", "w2.weight")):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * residual_std)
        else:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def logits_from_hidden(model: Transformer, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, model.output.weight)
